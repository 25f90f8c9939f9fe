//! A balancer's figures: [`BackendStats`] per backend and [`BalancerStats`] in total,
//! its own gRPC service `spectrum.balancer.v1.Balancer` that serves them, and
//! [`StatsClient`], the typed client that reads them from another process.
//!
//! Calls whose path starts with `/spectrum.balancer.v1.Balancer/` never reach a
//! node: the balancer answers them (unless [`BalancerConfig::serve_stats`] is off,
//! in which case they are proxied like any other call). Its one method, `Stats`,
//! returns the figures [`BalancerHandle::stats`] gives, for every backend, and the
//! balancer's totals. On the public port it answers only a caller presenting
//! [`BalancerConfig::stats_token`] (`UNAUTHENTICATED` otherwise; with no token set,
//! `PERMISSION_DENIED` unless [`BalancerConfig::open_stats`] is on); the admin
//! listener ([`BalancerConfig::admin_listen`]) serves it with `/metrics`, to anyone
//! who reaches that port.
//!
//! Call it with [`StatsClient`], which answers domain types (ids are [`NodeId`]s,
//! addresses [`SocketAddr`]s) that serialize with serde and print as a table:
//!
//! ```no_run
//! use spectrum_balancer::stats::StatsClient;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = StatsClient::connect("http://127.0.0.1:7100").await?.with_token("s3cret")?;
//! let stats = client.stats().await?;
//! for b in &stats.backends {
//!     println!("{} {} {} in_flight={} requests={}", b.id, b.addr, b.health, b.in_flight, b.requests);
//! }
//! println!("{stats}"); // the same figures as a table
//! # Ok(())
//! # }
//! ```
//!
//! A node answers the same call `UNIMPLEMENTED` ([`BalancerError::StatsCall`] with
//! [`tonic::Code::Unimplemented`]), which tells a client that the endpoint it talks
//! to is not a balancer.
//!
//! The generated protocol types stay public in [`proto`] for clients in other
//! languages and for interop; Rust code uses [`StatsClient`] and never needs them.
//!
//! [`BalancerConfig::serve_stats`]: crate::BalancerConfig::serve_stats
//! [`BalancerConfig::stats_token`]: crate::BalancerConfig::stats_token
//! [`BalancerConfig::open_stats`]: crate::BalancerConfig::open_stats
//! [`BalancerConfig::admin_listen`]: crate::BalancerConfig::admin_listen
//! [`BalancerHandle::stats`]: crate::BalancerHandle::stats

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;
use spectrum_core::NodeId;

use crate::error::BalancerError;
use crate::routing::{StrategyInForce, StrategySource};

mod client;
pub(crate) mod json;
pub(crate) mod service;

pub use client::StatsClient;
pub use json::JSON_PATH;
pub use service::BalancerStatsService;

/// The generated protocol types, server and client of `spectrum.balancer.v1`
/// (`proto/balancer.proto` in this crate), for interop. Rust code reads the figures
/// with [`StatsClient`] instead.
///
/// - [`BalancerClient`](proto::balancer_client::BalancerClient): calls `Stats` on a
///   balancer.
/// - [`BalancerServer`](proto::balancer_server::BalancerServer): the tonic server
///   the balancer answers with, over a [`BalancerStatsService`].
/// - [`StatsRequest`](proto::StatsRequest), [`StatsResponse`](proto::StatsResponse)
///   and [`BackendStats`](proto::BackendStats): the messages.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("spectrum.balancer.v1");
}

/// A backend's health in one word, as `spectrum status` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendHealth {
    /// It may take requests: health checks pass and it is not ejected.
    Healthy,
    /// It is passively ejected and still within its backoff.
    Ejected,
    /// Its health checks fail, have not passed yet, or it is back from an ejection
    /// and waiting for enough passing checks.
    Down,
}

impl BackendHealth {
    /// The health that the `healthy` and `ejected` flags of [`BackendStats`] say
    /// together; ejection wins.
    pub fn of(healthy: bool, ejected: bool) -> Self {
        if ejected {
            Self::Ejected
        } else if healthy {
            Self::Healthy
        } else {
            Self::Down
        }
    }

    /// `healthy`, `ejected` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Ejected => "ejected",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for BackendHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Figures for one backend, as [`BalancerHandle::stats`](crate::BalancerHandle::stats)
/// and [`StatsClient::stats`] report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackendStats {
    /// The node.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its weight.
    pub weight: u32,
    /// `healthy`, `ejected` or `down`: [`healthy`](Self::healthy) and
    /// [`ejected`](Self::ejected) in one word.
    pub health: BackendHealth,
    /// Whether it may take requests: health checks pass and it is not ejected.
    pub healthy: bool,
    /// Whether it is passively ejected (failed connections or `UNAVAILABLE` answers)
    /// and still within its backoff.
    pub ejected: bool,
    /// Whether it is draining (gets no new requests), by the operator or membership.
    pub draining: bool,
    /// Requests sent to it whose responses have not ended.
    pub in_flight: u64,
    /// Requests sent to it (attempts included).
    pub requests: u64,
    /// Failed requests and failed connection attempts.
    pub failures: u64,
    /// Requests that failed on it and were sent again to another backend.
    pub retries: u64,
    /// Moving average of its time to response headers, in microseconds.
    pub latency_ewma_us: u64,
}

/// A balancer's figures: every backend's, and the totals, as the `Stats` call
/// answers them, with the strategy in force.
///
/// It serializes with serde to the shape `spectrum status --json` prints under
/// `balancer` (the backends under `nodes`), and [`Display`](fmt::Display)s as the
/// table `spectrum status` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BalancerStats {
    /// Every configured backend, in configuration order.
    #[serde(rename = "nodes")]
    pub backends: Vec<BackendStats>,
    /// Requests received from clients (the balancer's own `Stats` answers and
    /// refused internal calls excluded).
    pub requests: u64,
    /// Attempts beyond the first one of a request.
    pub retries: u64,
    /// Failed requests not retried because the retry budget was spent.
    pub retry_budget_exhausted: u64,
    /// Requests answered by the balancer because no backend could take them.
    pub no_backend: u64,
    /// Requests refused because their body was over the limit.
    pub request_too_large: u64,
    /// Requests for an internal service
    /// ([`BalancerConfig::internal_paths`](crate::BalancerConfig::internal_paths)),
    /// refused by the balancer.
    pub internal_refused: u64,
    /// Requests sent to another node after a node refused them as not ready
    /// ([`refusal`](crate::refusal)), whether or not they were idempotent.
    pub not_ready_retries: u64,
    /// The strategy in force and where it comes from; `None` when a balancer
    /// that predates it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyInForce>,
}

impl fmt::Display for BalancerStats {
    /// A title line with the totals, then one line per backend under a header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BALANCER  ({}, {}, {} with no backend, {} too large)",
            counted(self.requests, "request", "requests"),
            counted(self.retries, "retry", "retries"),
            self.no_backend,
            self.request_too_large
        )?;
        if let Some(strategy) = &self.strategy {
            write!(f, "\nSTRATEGY  {strategy}")?;
        }
        write!(
            f,
            "\n{:<16} {:<22} {:<8} {:<8} {:>9} {:>9} {:>9} {:>8} {:>11}",
            "NODE",
            "ADDRESS",
            "HEALTH",
            "DRAINING",
            "IN FLIGHT",
            "REQUESTS",
            "FAILURES",
            "RETRIES",
            "LATENCY µs"
        )?;
        for b in &self.backends {
            write!(
                f,
                "\n{:<16} {:<22} {:<8} {:<8} {:>9} {:>9} {:>9} {:>8} {:>11}",
                b.id.as_str(),
                b.addr.to_string(),
                b.health,
                if b.draining { "yes" } else { "no" },
                b.in_flight,
                b.requests,
                b.failures,
                b.retries,
                b.latency_ewma_us
            )?;
        }
        Ok(())
    }
}

/// `n` and the noun in the number it takes: "1 request", "2 requests".
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl From<&BackendStats> for proto::BackendStats {
    fn from(s: &BackendStats) -> Self {
        proto::BackendStats {
            id: s.id.as_str().to_owned(),
            addr: s.addr.to_string(),
            weight: s.weight,
            healthy: s.healthy,
            ejected: s.ejected,
            draining: s.draining,
            in_flight: s.in_flight,
            requests: s.requests,
            failures: s.failures,
            retries: s.retries,
            latency_ewma_us: s.latency_ewma_us,
        }
    }
}

impl From<&BalancerStats> for proto::StatsResponse {
    fn from(s: &BalancerStats) -> Self {
        proto::StatsResponse {
            backends: s.backends.iter().map(proto::BackendStats::from).collect(),
            requests: s.requests,
            retries: s.retries,
            retry_budget_exhausted: s.retry_budget_exhausted,
            no_backend: s.no_backend,
            request_too_large: s.request_too_large,
            internal_refused: s.internal_refused,
            strategy: s.strategy.as_ref().map(proto::StrategyInForce::from),
            not_ready_retries: s.not_ready_retries,
        }
    }
}

impl From<&StrategyInForce> for proto::StrategyInForce {
    fn from(s: &StrategyInForce) -> Self {
        let source = match s.source {
            StrategySource::Configured => proto::StrategySource::Configured,
            StrategySource::Database => proto::StrategySource::Database,
        };
        proto::StrategyInForce {
            name: s.name.clone(),
            hash_key: s.hash_key.clone().unwrap_or_default(),
            has_load_factor: s.load_factor.is_some(),
            load_factor: s.load_factor.unwrap_or_default(),
            source: source as i32,
        }
    }
}

/// Reads the strategy of a `Stats` answer.
fn strategy_from_wire(s: proto::StrategyInForce) -> Result<StrategyInForce, BalancerError> {
    let source = match proto::StrategySource::try_from(s.source) {
        Ok(proto::StrategySource::Configured) => StrategySource::Configured,
        Ok(proto::StrategySource::Database) => StrategySource::Database,
        _ => {
            return Err(BalancerError::InvalidStatsAnswer {
                field: "strategy.source".into(),
                reason: format!("unknown source {}", s.source),
            });
        }
    };
    Ok(StrategyInForce {
        name: s.name,
        hash_key: (!s.hash_key.is_empty()).then_some(s.hash_key),
        load_factor: s.has_load_factor.then_some(s.load_factor),
        source,
    })
}

impl TryFrom<proto::StatsResponse> for BalancerStats {
    type Error = BalancerError;

    /// Reads a `Stats` answer.
    ///
    /// # Errors
    ///
    /// [`BalancerError::InvalidStatsAnswer`] naming the first backend field (as
    /// `backends[2].addr`) that is not a valid node id or `IP:PORT` address.
    fn try_from(wire: proto::StatsResponse) -> Result<Self, BalancerError> {
        let backends = wire
            .backends
            .into_iter()
            .enumerate()
            .map(|(i, b)| backend_from_wire(i, b))
            .collect::<Result<_, _>>()?;
        Ok(BalancerStats {
            backends,
            requests: wire.requests,
            retries: wire.retries,
            retry_budget_exhausted: wire.retry_budget_exhausted,
            no_backend: wire.no_backend,
            request_too_large: wire.request_too_large,
            internal_refused: wire.internal_refused,
            not_ready_retries: wire.not_ready_retries,
            strategy: wire.strategy.map(strategy_from_wire).transpose()?,
        })
    }
}

/// Reads backend number `index` of a `Stats` answer.
fn backend_from_wire(index: usize, b: proto::BackendStats) -> Result<BackendStats, BalancerError> {
    let invalid = |field: &str, reason: String| BalancerError::InvalidStatsAnswer {
        field: format!("backends[{index}].{field}"),
        reason,
    };
    let id = b.id.parse().map_err(|error| invalid("id", format!("{error}")))?;
    let addr = b.addr.parse().map_err(|error| invalid("addr", format!("{error}")))?;
    Ok(BackendStats {
        id,
        addr,
        weight: b.weight,
        health: BackendHealth::of(b.healthy, b.ejected),
        healthy: b.healthy,
        ejected: b.ejected,
        draining: b.draining,
        in_flight: b.in_flight,
        requests: b.requests,
        failures: b.failures,
        retries: b.retries,
        latency_ewma_us: b.latency_ewma_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str, healthy: bool, ejected: bool) -> BackendStats {
        BackendStats {
            id: id.parse().unwrap(),
            addr: "127.0.0.1:7001".parse().unwrap(),
            weight: 1,
            health: BackendHealth::of(healthy, ejected),
            healthy,
            ejected,
            draining: false,
            in_flight: 2,
            requests: 10,
            failures: 1,
            retries: 0,
            latency_ewma_us: 850,
        }
    }

    #[test]
    fn ejection_wins_over_health_in_one_word() {
        assert_eq!(BackendHealth::of(true, false), BackendHealth::Healthy);
        assert_eq!(BackendHealth::of(false, true), BackendHealth::Ejected);
        assert_eq!(BackendHealth::of(true, true), BackendHealth::Ejected);
        assert_eq!(BackendHealth::of(false, false), BackendHealth::Down);
        assert_eq!(format!("[{:<8}]", BackendHealth::Down), "[down    ]");
    }

    #[test]
    fn figures_survive_the_wire_both_ways() {
        let stats = BalancerStats {
            backends: vec![backend("node-1", true, false), backend("node-2", false, true)],
            requests: 12,
            retries: 3,
            retry_budget_exhausted: 1,
            no_backend: 2,
            request_too_large: 4,
            internal_refused: 5,
            not_ready_retries: 6,
            strategy: Some(StrategyInForce {
                name: "consistent_hash".into(),
                hash_key: Some("x-tenant".into()),
                load_factor: Some(1.5),
                source: StrategySource::Database,
            }),
        };
        let wire = proto::StatsResponse::from(&stats);
        assert_eq!(wire.backends[1].addr, "127.0.0.1:7001");
        assert_eq!(BalancerStats::try_from(wire).unwrap(), stats);
        let older = proto::StatsResponse { strategy: None, ..proto::StatsResponse::from(&stats) };
        assert_eq!(BalancerStats::try_from(older).unwrap().strategy, None, "an older balancer's answer");
        let mut unknown = proto::StatsResponse::from(&stats);
        unknown.strategy.as_mut().unwrap().source = 9;
        let error = BalancerStats::try_from(unknown).unwrap_err();
        assert!(error.to_string().contains("strategy.source"), "{error}");
    }

    #[test]
    fn a_bad_address_in_an_answer_is_named_by_its_field() {
        let mut wire = proto::StatsResponse::from(&BalancerStats {
            backends: vec![backend("node-1", true, false), backend("node-2", true, false)],
            ..BalancerStats::default()
        });
        wire.backends[1].addr = "nowhere".into();
        let error = BalancerStats::try_from(wire).unwrap_err();
        assert!(
            matches!(&error, BalancerError::InvalidStatsAnswer { field, .. } if field == "backends[1].addr"),
            "{error}"
        );
    }

    #[test]
    fn the_table_names_the_strategy_in_force_under_its_title() {
        let strategy = StrategyInForce {
            name: "round_robin".into(),
            hash_key: None,
            load_factor: None,
            source: StrategySource::Configured,
        };
        let stats = BalancerStats { strategy: Some(strategy), ..BalancerStats::default() };
        let table = stats.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[1], "STRATEGY  round_robin from the balancer's configuration", "{table}");
        assert!(lines[2].starts_with("NODE "), "{table}");
    }

    #[test]
    fn the_table_has_a_title_a_header_and_a_line_per_backend() {
        let stats = BalancerStats {
            backends: vec![backend("node-1", true, false), backend("node-2", false, false)],
            requests: 20,
            ..BalancerStats::default()
        };
        let table = stats.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert_eq!(lines[0], "BALANCER  (20 requests, 0 retries, 0 with no backend, 0 too large)");
        assert!(lines[1].starts_with("NODE             ADDRESS                HEALTH   DRAINING"), "{table}");
        assert!(lines[1].ends_with("LATENCY µs"), "{table}");
        assert_eq!(
            lines[3],
            "node-2           127.0.0.1:7001         down     no               2        10         1        0         850"
        );
        let one = BalancerStats { requests: 1, retries: 1, ..BalancerStats::default() }.to_string();
        assert!(one.starts_with("BALANCER  (1 request, 1 retry, 0 with"), "{one}");
    }
}
