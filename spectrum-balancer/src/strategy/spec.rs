//! [`StrategySpec`]: a reference strategy named, with its parameters, validated
//! once: what a balancer file's `[strategy]` and the cluster database's
//! `balancer/strategy` record both hold, so the two are checked by one set of rules.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    BalancingStrategy, ConsistentHash, DEFAULT_LOAD_FACTOR, LeastRequests, PeakEwma, Random, RoundRobin,
    WeightedRoundRobin,
};
use crate::error::BalancerError;

/// The `hash_key` that takes the client's IP address as the affinity key.
pub const CLIENT_ADDRESS: &str = "client_address";

/// A reference strategy, by the name files, the database and the command use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StrategyName {
    /// [`RoundRobin`].
    RoundRobin,
    /// [`WeightedRoundRobin`], by each backend's weight.
    WeightedRoundRobin,
    /// [`Random`].
    Random,
    /// [`LeastRequests`] (power of two choices).
    LeastRequests,
    /// [`PeakEwma`] (latency-aware).
    PeakEwma,
    /// [`ConsistentHash`] with bounded loads.
    ConsistentHash,
}

impl StrategyName {
    /// Every name, in the order they are listed to people.
    pub const ALL: [StrategyName; 6] = [
        StrategyName::RoundRobin,
        StrategyName::WeightedRoundRobin,
        StrategyName::Random,
        StrategyName::LeastRequests,
        StrategyName::PeakEwma,
        StrategyName::ConsistentHash,
    ];

    /// The snake-case name (`round_robin`, `consistent_hash`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::RoundRobin => "round_robin",
            StrategyName::WeightedRoundRobin => "weighted_round_robin",
            StrategyName::Random => "random",
            StrategyName::LeastRequests => "least_requests",
            StrategyName::PeakEwma => "peak_ewma",
            StrategyName::ConsistentHash => "consistent_hash",
        }
    }
}

impl fmt::Display for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StrategyName {
    type Err = BalancerError;

    /// # Errors
    ///
    /// [`BalancerError::InvalidStrategy`] on `name`, listing the known names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StrategyName::ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = StrategyName::ALL.iter().map(|n| n.as_str()).collect();
            invalid(
                "name",
                format!(
                    "unknown strategy {:?}: expected one of {}",
                    s.chars().take(40).collect::<String>(),
                    known.join(", ")
                ),
            )
        })
    }
}

/// Where a request's affinity key comes from (for [`ConsistentHash`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashKey {
    /// The value of this header (or gRPC metadata entry), lower-case.
    Header(http::HeaderName),
    /// The client's IP address ([`CLIENT_ADDRESS`]).
    ClientAddress,
}

impl HashKey {
    /// The key as written in files and the database: the header's name, or
    /// [`CLIENT_ADDRESS`].
    pub fn as_str(&self) -> &str {
        match self {
            HashKey::Header(name) => name.as_str(),
            HashKey::ClientAddress => CLIENT_ADDRESS,
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HashKey {
    type Err = BalancerError;

    /// [`CLIENT_ADDRESS`], or a header name in any case.
    ///
    /// # Errors
    ///
    /// [`BalancerError::InvalidStrategy`] on `hash_key` when it is not a valid
    /// header name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == CLIENT_ADDRESS {
            return Ok(HashKey::ClientAddress);
        }
        http::HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())
            .map(HashKey::Header)
            .map_err(|_| invalid("hash_key", "not a valid header or metadata key".into()))
    }
}

fn invalid(field: &'static str, reason: String) -> BalancerError {
    BalancerError::InvalidStrategy { field, reason }
}

/// A reference strategy with its parameters, checked when it is made: a spec that
/// exists is one a balancer can run. It serializes as
/// `{"name":"consistent_hash","hash_key":"x-tenant","load_factor":1.5}` (parameters
/// left out when unset), and deserializing checks it the same way.
///
/// ```
/// use spectrum_balancer::strategy::{StrategyName, StrategySpec};
///
/// let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("X-Tenant"), Some(1.5))?;
/// assert_eq!(spec.hash_key().map(|k| k.as_str()), Some("x-tenant"));
/// assert_eq!(spec.to_string(), "consistent_hash (hash_key x-tenant, load_factor 1.5)");
/// let strategy = spec.build(); // a fresh `ConsistentHash`
/// # let _ = strategy;
///
/// let err = StrategySpec::new(StrategyName::Random, None, Some(2.0)).unwrap_err();
/// assert!(err.to_string().contains("load_factor"));
/// # Ok::<(), spectrum_balancer::BalancerError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSpec", into = "RawSpec")]
pub struct StrategySpec {
    name: StrategyName,
    hash_key: Option<HashKey>,
    load_factor: Option<f64>,
}

impl StrategySpec {
    /// A spec for `name` with no parameters.
    pub fn named(name: StrategyName) -> Self {
        Self { name, hash_key: None, load_factor: None }
    }

    /// A spec for `name` with its parameters: `hash_key` (any strategy; the header
    /// whose value is the affinity key, or [`CLIENT_ADDRESS`]) and `load_factor`
    /// (`consistent_hash` only; at least 1 and finite).
    ///
    /// # Errors
    ///
    /// [`BalancerError::InvalidStrategy`] naming the field (`hash_key`,
    /// `load_factor`) and what is wrong with it.
    pub fn new(
        name: StrategyName,
        hash_key: Option<&str>,
        load_factor: Option<f64>,
    ) -> Result<Self, BalancerError> {
        let hash_key = hash_key.map(str::parse).transpose()?;
        match (name, load_factor) {
            (StrategyName::ConsistentHash, Some(f)) if !(f >= 1.0 && f.is_finite()) => {
                Err(invalid("load_factor", "must be a number of at least 1".into()))
            }
            (StrategyName::ConsistentHash, _) | (_, None) => Ok(Self { name, hash_key, load_factor }),
            (_, Some(_)) => Err(invalid("load_factor", "applies to consistent_hash only".into())),
        }
    }

    /// Which strategy.
    pub fn name(&self) -> StrategyName {
        self.name
    }

    /// Where requests' affinity key comes from, if the spec sets it.
    pub fn hash_key(&self) -> Option<&HashKey> {
        self.hash_key.as_ref()
    }

    /// `consistent_hash`'s load factor, if the spec sets it (the strategy then
    /// uses [`DEFAULT_LOAD_FACTOR`]).
    pub fn load_factor(&self) -> Option<f64> {
        self.load_factor
    }

    /// A fresh strategy of this spec (its own counters and caches; per-backend load
    /// figures live in the balancer, not in the strategy).
    pub fn build(&self) -> Arc<dyn BalancingStrategy> {
        match self.name {
            StrategyName::RoundRobin => Arc::new(RoundRobin::new()),
            StrategyName::WeightedRoundRobin => Arc::new(WeightedRoundRobin::new()),
            StrategyName::Random => Arc::new(Random::new()),
            StrategyName::LeastRequests => Arc::new(LeastRequests::new()),
            StrategyName::PeakEwma => Arc::new(PeakEwma::new()),
            StrategyName::ConsistentHash => {
                Arc::new(ConsistentHash::new().load_factor(self.load_factor.unwrap_or(DEFAULT_LOAD_FACTOR)))
            }
        }
    }
}

impl fmt::Display for StrategySpec {
    /// The name, then the parameters that are set: `consistent_hash (hash_key
    /// x-tenant, load_factor 1.5)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name.as_str())?;
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
        Ok(())
    }
}

/// The serialized form of a [`StrategySpec`], before it is checked.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: StrategyName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    load_factor: Option<f64>,
}

impl TryFrom<RawSpec> for StrategySpec {
    type Error = BalancerError;
    fn try_from(raw: RawSpec) -> Result<Self, Self::Error> {
        StrategySpec::new(raw.name, raw.hash_key.as_deref(), raw.load_factor)
    }
}

impl From<StrategySpec> for RawSpec {
    fn from(spec: StrategySpec) -> Self {
        RawSpec {
            name: spec.name,
            hash_key: spec.hash_key.map(|k| k.as_str().to_owned()),
            load_factor: spec.load_factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_an_unknown_one_is_refused_listing_them() {
        for name in StrategyName::ALL {
            assert_eq!(name.as_str().parse::<StrategyName>().unwrap(), name);
            let built = format!("{:?}", StrategySpec::named(name).build()).to_ascii_lowercase();
            assert!(built.starts_with(&name.as_str().replace('_', "")), "{name}: {built}");
        }
        let err = "fastest".parse::<StrategyName>().unwrap_err().to_string();
        assert!(err.contains("name") && err.contains("fastest") && err.contains("peak_ewma"), "{err}");
    }

    #[test]
    fn parameters_are_checked_naming_the_field() {
        for (name, key, factor, field) in [
            (StrategyName::ConsistentHash, None, Some(0.5), "load_factor"),
            (StrategyName::ConsistentHash, None, Some(f64::INFINITY), "load_factor"),
            (StrategyName::ConsistentHash, None, Some(f64::NAN), "load_factor"),
            (StrategyName::Random, None, Some(2.0), "load_factor"),
            (StrategyName::Random, Some("bad key"), None, "hash_key"),
        ] {
            let err = StrategySpec::new(name, key, factor).unwrap_err();
            assert!(
                matches!(&err, BalancerError::InvalidStrategy { field: f, .. } if *f == field),
                "{name} {key:?} {factor:?}: {err}"
            );
        }
        let by_client = StrategySpec::new(StrategyName::ConsistentHash, Some(CLIENT_ADDRESS), None).unwrap();
        assert_eq!(by_client.hash_key(), Some(&HashKey::ClientAddress));
    }

    #[test]
    fn a_spec_serializes_without_unset_parameters_and_is_checked_when_read() {
        let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("X-Tenant"), Some(2.0)).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"name":"consistent_hash","hash_key":"x-tenant","load_factor":2.0}"#);
        assert_eq!(serde_json::from_str::<StrategySpec>(&json).unwrap(), spec);
        let plain = serde_json::to_string(&StrategySpec::named(StrategyName::Random)).unwrap();
        assert_eq!(plain, r#"{"name":"random"}"#);
        for bad in [
            r#"{"name":"random","load_factor":2.0}"#,
            r#"{"name":"fastest"}"#,
            r#"{"name":"random","colour":"red"}"#,
            r#"{"hash_key":"x"}"#,
        ] {
            assert!(serde_json::from_str::<StrategySpec>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spec_prints_its_name_and_the_parameters_it_sets() {
        assert_eq!(StrategySpec::named(StrategyName::PeakEwma).to_string(), "peak_ewma");
        let keyed = StrategySpec::new(StrategyName::Random, Some("client_address"), None).unwrap();
        assert_eq!(keyed.to_string(), "random (hash_key client_address)");
    }
}
