//! The strategy and weights in force: those the balancer was configured with, or
//! those the cluster's database sets ([`BalancingSettings`], read by
//! [`Discovery::settings`](crate::Discovery::settings)), which override them.
//!
//! A [`Routing`] is the strategy with where requests' affinity key comes from; the
//! pool's snapshot holds one, so a request picks, fails over and reports its
//! outcome with one strategy even while another one takes over. Swapping it is
//! one pointer in the next snapshot: nothing waits, nothing fails.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use spectrum_core::NodeId;

use crate::config::{BackendConfig, BalancerConfig};
use crate::discovery::BalancingSettings;
use crate::strategy::{BalancingStrategy, HashKey, StrategySpec};

/// Where the strategy in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StrategySource {
    /// The balancer's own configuration: the strategy given to
    /// [`BalancerBuilder`](crate::BalancerBuilder) (for `spectrum balancer`, its
    /// file's `[strategy]`).
    Configured,
    /// The cluster's configuration database (`balancer/strategy`), which overrides
    /// the balancer's own while it is set.
    Database,
}

impl StrategySource {
    /// `configured` or `database`.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategySource::Configured => "configured",
            StrategySource::Database => "database",
        }
    }
}

impl fmt::Display for StrategySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The strategy a balancer uses now, and where it comes from, as
/// [`BalancerHandle::strategy`](crate::BalancerHandle::strategy) and `Stats`
/// report it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StrategyInForce {
    /// The reference strategy's name (`round_robin`, `consistent_hash`, …), or the
    /// type name of a strategy given in code (`FewestInFlight`).
    pub name: String,
    /// Where requests' affinity key comes from: a header name or `client_address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    /// `consistent_hash`'s load factor, when one was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_factor: Option<f64>,
    /// Where it comes from.
    pub source: StrategySource,
}

impl fmt::Display for StrategyInForce {
    /// `consistent_hash (hash_key x-tenant, load_factor 1.5) from the database`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        let mut params = Vec::new();
        if let Some(key) = &self.hash_key {
            params.push(format!("hash_key {key}"));
        }
        if let Some(factor) = self.load_factor {
            params.push(format!("load_factor {factor}"));
        }
        if !params.is_empty() {
            write!(f, " ({})", params.join(", "))?;
        }
        match self.source {
            StrategySource::Configured => f.write_str(" from the balancer's configuration"),
            StrategySource::Database => f.write_str(" from the database"),
        }
    }
}

/// A strategy with where requests' affinity key comes from: what requests read.
pub(crate) struct Routing {
    pub(crate) strategy: Arc<dyn BalancingStrategy>,
    pub(crate) affinity: Option<HashKey>,
    /// The spec it was built from; `None` for a strategy given in code.
    spec: Option<StrategySpec>,
    source: StrategySource,
}

impl fmt::Debug for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routing")
            .field("strategy", &self.strategy)
            .field("affinity", &self.affinity)
            .field("source", &self.source)
            .finish()
    }
}

impl Routing {
    /// The balancer's own strategy: `spec`'s (whose hash key wins over the
    /// configuration's affinity settings), or `strategy` given in code.
    pub(crate) fn configured(
        config: &BalancerConfig,
        strategy: Arc<dyn BalancingStrategy>,
        spec: Option<StrategySpec>,
    ) -> Self {
        let from_config = match (&config.affinity_header, config.affinity_client_address) {
            (Some(name), _) => Some(HashKey::Header(name.clone())),
            (None, true) => Some(HashKey::ClientAddress),
            (None, false) => None,
        };
        let affinity = spec.as_ref().and_then(|s| s.hash_key().cloned()).or(from_config);
        Self { strategy, affinity, spec, source: StrategySource::Configured }
    }

    /// The database's strategy: a fresh one built from `spec`, whose hash key (or
    /// none) replaces the configuration's.
    fn database(spec: StrategySpec) -> Self {
        Self {
            strategy: spec.build(),
            affinity: spec.hash_key().cloned(),
            spec: Some(spec),
            source: StrategySource::Database,
        }
    }

    /// What [`StrategyInForce`] says of it.
    pub(crate) fn in_force(&self) -> StrategyInForce {
        let name = match &self.spec {
            Some(spec) => spec.name().as_str().to_owned(),
            None => type_name(&*self.strategy),
        };
        StrategyInForce {
            name,
            hash_key: self.affinity.as_ref().map(|k| k.as_str().to_owned()),
            load_factor: self.spec.as_ref().and_then(StrategySpec::load_factor),
            source: self.source,
        }
    }
}

/// The type name a strategy's `Debug` output starts with (`RoundRobin { … }`).
fn type_name(strategy: &dyn BalancingStrategy) -> String {
    let debug = format!("{strategy:?}");
    let name: String = debug.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    if name.is_empty() { "custom".to_owned() } else { name }
}

/// Which parts of the settings in force a [`Settings::follow`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Changed {
    pub(crate) strategy: bool,
    pub(crate) weights: bool,
}

/// The strategy and weights the balancer was configured with, and those the
/// database overrides them with.
#[derive(Debug)]
pub(crate) struct Settings {
    configured: Arc<Routing>,
    database: Option<Arc<Routing>>,
    /// Weights given with the backend list by hand (`set_backends`).
    configured_weights: HashMap<NodeId, u32>,
    /// Weights the database sets, by node.
    database_weights: BTreeMap<NodeId, u32>,
}

impl Settings {
    pub(crate) fn new(configured: Routing) -> Self {
        Self {
            configured: Arc::new(configured),
            database: None,
            configured_weights: HashMap::new(),
            database_weights: BTreeMap::new(),
        }
    }

    /// The routing in force: the database's while it sets one.
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.database.as_ref().unwrap_or(&self.configured).clone()
    }

    /// Remembers the weights of a backend list given by hand (they apply where the
    /// database sets none, and to those backends when membership adds them back).
    pub(crate) fn configure_weights(&mut self, configs: &[BackendConfig]) {
        self.configured_weights = configs.iter().map(|c| (c.id.clone(), c.weight)).collect();
    }

    /// Backend `id`'s weight: the database's, else the one given by hand, else 1.
    pub(crate) fn weight_of(&self, id: &NodeId) -> u32 {
        self.database_weights.get(id).or_else(|| self.configured_weights.get(id)).copied().unwrap_or(1)
    }

    /// Follows what the database says: its strategy replaces the configured one
    /// while it is set (an unchanged spec keeps the running strategy and its
    /// state), and its weights override the configured ones.
    pub(crate) fn follow(&mut self, settings: &BalancingSettings) -> Changed {
        let strategy = match (&settings.strategy, &self.database) {
            (None, None) => false,
            (Some(spec), Some(current)) if current.spec.as_ref() == Some(spec) => false,
            (None, Some(_)) => {
                self.database = None;
                true
            }
            (Some(spec), _) => {
                self.database = Some(Arc::new(Routing::database(spec.clone())));
                true
            }
        };
        let weights = settings.weights != self.database_weights;
        if weights {
            self.database_weights = settings.weights.clone();
        }
        Changed { strategy, weights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{RoundRobin, StrategyName};

    fn settings() -> Settings {
        let config = BalancerConfig {
            affinity_header: Some(http::HeaderName::from_static("x-user")),
            ..BalancerConfig::default()
        };
        Settings::new(Routing::configured(&config, Arc::new(RoundRobin::new()), None))
    }

    fn database(spec: Option<StrategySpec>, weights: &[(&str, u32)]) -> BalancingSettings {
        let weights = weights.iter().map(|(id, w)| (id.parse().unwrap(), *w)).collect();
        BalancingSettings { strategy: spec, weights }
    }

    #[test]
    fn the_database_strategy_overrides_the_configured_one_until_cleared() {
        let mut s = settings();
        let own = s.routing().in_force();
        assert_eq!((own.name.as_str(), own.source), ("RoundRobin", StrategySource::Configured));
        assert_eq!(own.hash_key.as_deref(), Some("x-user"));

        let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), Some(2.0)).unwrap();
        assert_eq!(s.follow(&database(Some(spec.clone()), &[])), Changed { strategy: true, weights: false });
        let running = s.routing();
        let db = running.in_force();
        assert_eq!((db.name.as_str(), db.source), ("consistent_hash", StrategySource::Database));
        assert_eq!((db.hash_key.as_deref(), db.load_factor), (Some("x-tenant"), Some(2.0)));
        assert_eq!(db.to_string(), "consistent_hash (hash_key x-tenant, load_factor 2) from the database");

        assert_eq!(s.follow(&database(Some(spec), &[])), Changed::default(), "the same spec changes nothing");
        assert!(Arc::ptr_eq(&running, &s.routing()), "and keeps the running strategy");

        let plain = database(Some(StrategySpec::named(StrategyName::Random)), &[]);
        assert!(s.follow(&plain).strategy);
        assert_eq!(s.routing().in_force().hash_key, None, "the database's spec replaces the key too");

        assert!(s.follow(&database(None, &[])).strategy);
        assert_eq!(s.routing().in_force(), own, "cleared: back to the configured strategy");
    }

    #[test]
    fn database_weights_override_configured_ones_and_clearing_returns_to_them() {
        let mut s = settings();
        let n1: NodeId = "n1".parse().unwrap();
        let n2: NodeId = "n2".parse().unwrap();
        let mut b1 = BackendConfig::new(n1.clone(), "127.0.0.1:1".parse().unwrap());
        b1.weight = 5;
        s.configure_weights(&[b1]);
        assert_eq!((s.weight_of(&n1), s.weight_of(&n2)), (5, 1));
        assert_eq!(
            s.follow(&database(None, &[("n1", 0), ("n2", 3)])),
            Changed { strategy: false, weights: true }
        );
        assert_eq!((s.weight_of(&n1), s.weight_of(&n2)), (0, 3));
        assert!(!s.follow(&database(None, &[("n1", 0), ("n2", 3)])).weights);
        assert!(s.follow(&database(None, &[])).weights);
        assert_eq!((s.weight_of(&n1), s.weight_of(&n2)), (5, 1));
    }
}
