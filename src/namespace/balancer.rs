//! `balancer/`: the strategy and weights every balancer of the cluster follows
//! ([`BalancerSetting`], named by a [`BalancerKey`]).
//!
//! | key | value (JSON) |
//! |---|---|
//! | `balancer/strategy` | `{"strategy":{"name":"consistent_hash","hash_key":"x-tenant","load_factor":1.5}}` |
//! | `balancer/weight/<node-id>` | `{"weight":3}` |
//!
//! Written only by the balancer operations (`spectrum balancer set-strategy`,
//! `clear-strategy`, `set-weight`, `clear-weight`), never through a raw `Put`;
//! read by every balancer that follows membership, which applies them within one
//! discovery interval. They override each balancer's own file: see
//! [`BalancingSettings`](spectrum_balancer::BalancingSettings) for precedence.

use serde::{Deserialize, Serialize};
use spectrum_balancer::strategy::StrategySpec;
use spectrum_core::NodeId;

use super::{Namespace, NamespaceValue, ValueError};

/// The name of the strategy record in `balancer/`.
pub const STRATEGY_NAME: &str = "strategy";

/// The prefix of weight records' names in `balancer/` (`weight/<node-id>`).
pub const WEIGHT_PREFIX: &str = "weight/";

/// A value of the `balancer/` namespace: a strategy, or one node's weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BalancerSetting {
    /// At `balancer/strategy`: the strategy every balancer uses, replacing its
    /// file's `[strategy]` (hash key and load factor included).
    Strategy(StrategySpec),
    /// At `balancer/weight/<node-id>`: that node's weight, replacing the one in
    /// balancer files (`0`: no requests while another node can take them).
    Weight(u32),
}

impl BalancerSetting {
    /// The stored form (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a name in `balancer/` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BalancerKey {
    /// `strategy`.
    Strategy,
    /// `weight/<node-id>`.
    Weight(NodeId),
}

impl BalancerKey {
    /// Reads a name within `balancer/`.
    ///
    /// # Errors
    ///
    /// [`ValueError`] for a name that is neither `strategy` nor `weight/<node-id>`
    /// with a valid node id.
    pub fn parse(name: &str) -> Result<Self, ValueError> {
        if name == STRATEGY_NAME {
            return Ok(BalancerKey::Strategy);
        }
        match name.strip_prefix(WEIGHT_PREFIX) {
            Some(node) => node
                .parse()
                .map(BalancerKey::Weight)
                .map_err(|e| ValueError::new(format!("balancer weight for an invalid node id: {e}"))),
            None => Err(ValueError::new(format!(
                "balancer/ holds `strategy` and `weight/<node-id>` only, not {:?}",
                name.chars().take(80).collect::<String>()
            ))),
        }
    }

    /// The whole key, namespace included (`balancer/weight/node-1`).
    pub fn key(&self) -> String {
        match self {
            BalancerKey::Strategy => Namespace::Balancer.key(STRATEGY_NAME),
            BalancerKey::Weight(node) => Namespace::Balancer.key(&format!("{WEIGHT_PREFIX}{node}")),
        }
    }
}

impl NamespaceValue for BalancerSetting {
    const NAMESPACE: Namespace = Namespace::Balancer;

    /// Names the field at fault: `strategy.load_factor: …`, `weight: …`.
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        let invalid = |reason: String| ValueError::new(format!("balancer setting: {reason}"));
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let fields = value.as_object().filter(|o| o.len() == 1);
        let Some((field, inner)) = fields.and_then(|o| o.iter().next()) else {
            return Err(invalid("expected one field, `strategy` or `weight`".into()));
        };
        match field.as_str() {
            "strategy" => StrategySpec::deserialize(inner)
                .map(BalancerSetting::Strategy)
                .map_err(|e| invalid(format!("strategy: {e}"))),
            "weight" => inner
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .map(BalancerSetting::Weight)
                .ok_or_else(|| invalid(format!("weight: must be a whole number from 0 to {}", u32::MAX))),
            other => Err(invalid(format!(
                "unknown field {:?}: expected `strategy` or `weight`",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), ValueError> {
        match (BalancerKey::parse(name)?, self) {
            (BalancerKey::Strategy, BalancerSetting::Strategy(_))
            | (BalancerKey::Weight(_), BalancerSetting::Weight(_)) => Ok(()),
            (BalancerKey::Strategy, _) => Err(ValueError::new("balancer/strategy must hold a strategy")),
            (BalancerKey::Weight(_), _) => {
                Err(ValueError::new("balancer/weight/<node-id> must hold a weight"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use spectrum_balancer::strategy::StrategyName;

    use super::*;

    #[test]
    fn strategies_and_weights_round_trip_under_their_own_names() {
        let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), Some(1.5)).unwrap();
        let strategy = BalancerSetting::Strategy(spec);
        let bytes = strategy.encode();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"strategy":{"name":"consistent_hash","hash_key":"x-tenant","load_factor":1.5}}"#
        );
        assert_eq!(BalancerSetting::decode(&bytes).unwrap(), strategy);
        assert!(strategy.check_name("strategy").is_ok());
        let weight = BalancerSetting::Weight(3);
        assert_eq!(weight.encode(), br#"{"weight":3}"#);
        assert!(weight.check_name("weight/node-1").is_ok());
        assert_eq!(BalancerKey::Weight("node-1".parse().unwrap()).key(), "balancer/weight/node-1");
        assert_eq!(BalancerKey::Strategy.key(), "balancer/strategy");
    }

    #[test]
    fn a_value_under_the_wrong_name_or_an_invalid_one_is_refused_naming_it() {
        let weight = BalancerSetting::Weight(1);
        assert!(weight.check_name("strategy").unwrap_err().reason.contains("must hold a strategy"));
        let strategy = BalancerSetting::Strategy(StrategySpec::named(StrategyName::Random));
        assert!(strategy.check_name("weight/n1").unwrap_err().reason.contains("must hold a weight"));
        assert!(weight.check_name("colour").unwrap_err().reason.contains("strategy"));
        assert!(weight.check_name("weight/bad id").unwrap_err().reason.contains("node id"));
        for (bad, needle) in [
            (&br#"{"strategy":{"name":"fastest"}}"#[..], "fastest"),
            (br#"{"strategy":{"name":"random","load_factor":2.0}}"#, "load_factor"),
            (br#"{"weight":-1}"#, "weight"),
            (br#"{"weight":1,"extra":2}"#, "one field"),
            (br#"{"colour":1}"#, "colour"),
            (br#"{"weight":4294967296}"#, "weight"),
            (b"not json", "balancer setting"),
        ] {
            let err = BalancerSetting::decode(bad).unwrap_err();
            assert!(err.reason.contains(needle), "{}: {err}", String::from_utf8_lossy(bad));
        }
    }
}
