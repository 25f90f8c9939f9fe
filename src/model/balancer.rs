//! What the database sets for every balancer (`spectrum balancer show`), and the
//! results of changing it.

use std::fmt;

use serde::Serialize;
use spectrum_balancer::strategy::StrategySpec;
use spectrum_core::NodeId;
use spectrum_replication::VersionToken;

use super::{WriteReceipt, as_text};

/// The strategy the database sets for every balancer, with the write that set it.
/// Its JSON is the spec's fields and `version`:
/// `{"name":"consistent_hash","hash_key":"x-tenant","version":"node-1:7"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategySetting {
    /// The strategy and its parameters.
    #[serde(flatten)]
    pub spec: StrategySpec,
    /// The write that set it.
    #[serde(serialize_with = "as_text")]
    pub version: VersionToken,
}

/// One node's weight as the database sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightSetting {
    /// The node.
    pub node: NodeId,
    /// Its weight (`0`: no requests while another node can take them).
    pub weight: u32,
    /// The write that set it.
    #[serde(serialize_with = "as_text")]
    pub version: VersionToken,
}

/// What the database sets for every balancer: a strategy (or none: each balancer
/// uses its own file's) and weights by node (any other node keeps its file's
/// weight, or 1). Its JSON is `{"strategy": {…} | null, "weights": [{…}, …]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BalancerSettings {
    /// The strategy, when one is set.
    pub strategy: Option<StrategySetting>,
    /// The weights set, by node id.
    pub weights: Vec<WeightSetting>,
}

impl fmt::Display for BalancerSettings {
    /// The strategy on one line, then the weights as a table (or a line saying
    /// there are none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.strategy {
            Some(s) => {
                writeln!(f, "STRATEGY  {} (version {}; overrides every balancer's file)", s.spec, s.version)?
            }
            None => writeln!(f, "STRATEGY  none set: each balancer uses its own file's [strategy]")?,
        }
        if self.weights.is_empty() {
            return writeln!(f, "WEIGHTS   none set: each balancer uses its file's weights (default 1)");
        }
        writeln!(f, "{:<24} {:>6}  VERSION", "NODE", "WEIGHT")?;
        for w in &self.weights {
            writeln!(f, "{:<24} {:>6}  {}", w.node.as_str(), w.weight, w.version)?;
        }
        Ok(())
    }
}

/// The balancers' strategy set or cleared. Its JSON is
/// `{"strategy": {…} | null, "write": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyWritten {
    /// The strategy set, or `None` when it was cleared.
    pub strategy: Option<StrategySpec>,
    /// The acknowledged write.
    pub write: WriteReceipt,
}

impl fmt::Display for StrategyWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.strategy {
            Some(spec) => write!(f, "balancer strategy set to {spec} ({})", self.write),
            None => {
                write!(f, "balancer strategy cleared: each balancer uses its own file's ({})", self.write)
            }
        }
    }
}

/// A node's weight set or cleared. Its JSON is
/// `{"node": "node-1", "weight": 3 | null, "write": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightWritten {
    /// The node.
    pub node: NodeId,
    /// The weight set, or `None` when it was cleared.
    pub weight: Option<u32>,
    /// The acknowledged write.
    pub write: WriteReceipt,
}

impl fmt::Display for WeightWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.weight {
            Some(w) => write!(f, "balancer weight of {} set to {w} ({})", self.node, self.write),
            None => {
                write!(f, "balancer weight of {} cleared: balancer files decide ({})", self.node, self.write)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use spectrum_balancer::strategy::StrategyName;

    use super::*;

    fn version(seq: u64) -> VersionToken {
        format!("node-1:{seq}").parse().unwrap()
    }

    #[test]
    fn settings_print_the_strategy_then_the_weights() {
        let empty = BalancerSettings::default();
        let text = empty.to_string();
        assert!(text.starts_with("STRATEGY  none set") && text.contains("WEIGHTS   none set"), "{text}");
        assert_eq!(
            serde_json::to_value(&empty).unwrap(),
            serde_json::json!({"strategy": null, "weights": []})
        );

        let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), None).unwrap();
        let set = BalancerSettings {
            strategy: Some(StrategySetting { spec, version: version(4) }),
            weights: vec![WeightSetting { node: "node-2".parse().unwrap(), weight: 0, version: version(5) }],
        };
        let text = set.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("STRATEGY  consistent_hash (hash_key x-tenant) (version node-1:4"),
            "{text}"
        );
        assert!(lines[1].starts_with("NODE") && lines[2].starts_with("node-2"), "{text}");
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(
            json["strategy"],
            serde_json::json!({"name": "consistent_hash", "hash_key": "x-tenant", "version": "node-1:4"})
        );
        assert_eq!(
            json["weights"][0],
            serde_json::json!({"node": "node-2", "weight": 0, "version": "node-1:5"})
        );
    }
}
