//! The balancer's figures as JSON, answered by the balancer itself at
//! [`JSON_PATH`] on its public port for the Management Console (which is served
//! by the nodes, and reached through the balancer).
//!
//! `GET /api/v1/balancer/stats` answers:
//!
//! ```json
//! {
//!   "balancer": true,
//!   "sampled_at_unix_ms": 1764650000000,
//!   "strategy": {"name": "round_robin", "source": "configured"},
//!   "requests_total": 1200, "retries_total": 3, "no_backend_total": 0,
//!   "not_ready_retries_total": 1,
//!   "backends": [
//!     {"id": "node-1", "address": "127.0.0.1:7001", "health": "healthy",
//!      "healthy": true, "ejected": false, "draining": false, "weight": 1,
//!      "requests_total": 400, "failures_total": 1, "retries_total": 1,
//!      "in_flight": 2, "latency_ewma_us": 310}
//!   ]
//! }
//! ```
//!
//! Counters (`*_total`) only grow while the balancer runs, so a reader takes
//! rates from two samples (`sampled_at_unix_ms` gives the interval); latency is
//! the moving average of the time to response headers, in microseconds. Nothing
//! secret is in it: node ids, addresses and figures, as `spectrum status` shows.
//!
//! Nodes never serve this path (they answer it `404`), which is how the console
//! tells that it was not reached through a balancer.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{BackendHealth, BalancerStats};
use crate::routing::StrategyInForce;

/// Where the balancer answers its figures as JSON, on its public port.
pub const JSON_PATH: &str = "/api/v1/balancer/stats";

/// The JSON document (see the module docs).
#[derive(Debug, Serialize)]
struct Document<'a> {
    /// Always `true`: the answer comes from a balancer.
    balancer: bool,
    sampled_at_unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<&'a StrategyInForce>,
    requests_total: u64,
    retries_total: u64,
    retry_budget_exhausted_total: u64,
    no_backend_total: u64,
    request_too_large_total: u64,
    internal_refused_total: u64,
    not_ready_retries_total: u64,
    backends: Vec<Backend<'a>>,
}

/// One backend in the JSON document.
#[derive(Debug, Serialize)]
struct Backend<'a> {
    id: &'a str,
    address: String,
    health: BackendHealth,
    healthy: bool,
    ejected: bool,
    draining: bool,
    weight: u32,
    requests_total: u64,
    failures_total: u64,
    retries_total: u64,
    in_flight: u64,
    latency_ewma_us: u64,
}

/// `stats` as the JSON document [`JSON_PATH`] answers, newline-terminated.
pub(crate) fn render(stats: &BalancerStats) -> Vec<u8> {
    let sampled_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let document = Document {
        balancer: true,
        sampled_at_unix_ms,
        strategy: stats.strategy.as_ref(),
        requests_total: stats.requests,
        retries_total: stats.retries,
        retry_budget_exhausted_total: stats.retry_budget_exhausted,
        no_backend_total: stats.no_backend,
        request_too_large_total: stats.request_too_large,
        internal_refused_total: stats.internal_refused,
        not_ready_retries_total: stats.not_ready_retries,
        backends: stats
            .backends
            .iter()
            .map(|b| Backend {
                id: b.id.as_str(),
                address: b.addr.to_string(),
                health: b.health,
                healthy: b.healthy,
                ejected: b.ejected,
                draining: b.draining,
                weight: b.weight,
                requests_total: b.requests,
                failures_total: b.failures,
                retries_total: b.retries,
                in_flight: b.in_flight,
                latency_ewma_us: b.latency_ewma_us,
            })
            .collect(),
    };
    // Serializing plain numbers, strings and booleans cannot fail.
    let mut body = serde_json::to_vec(&document).unwrap_or_default();
    body.push(b'\n');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::StrategySource;
    use crate::stats::BackendStats;

    #[test]
    fn the_document_names_units_and_totals_in_its_fields() {
        let stats = BalancerStats {
            backends: vec![BackendStats {
                id: "node-1".parse().unwrap(),
                addr: "127.0.0.1:7001".parse().unwrap(),
                weight: 2,
                health: BackendHealth::Healthy,
                healthy: true,
                ejected: false,
                draining: false,
                in_flight: 3,
                requests: 40,
                failures: 1,
                retries: 0,
                latency_ewma_us: 250,
            }],
            requests: 41,
            not_ready_retries: 2,
            strategy: Some(StrategyInForce {
                name: "round_robin".into(),
                hash_key: None,
                load_factor: None,
                source: StrategySource::Database,
            }),
            ..BalancerStats::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&render(&stats)).unwrap();
        assert_eq!(json["balancer"], true);
        assert_eq!(json["not_ready_retries_total"], 2);
        assert_eq!(json["requests_total"], 41);
        assert_eq!(json["strategy"]["name"], "round_robin");
        assert_eq!(json["strategy"]["source"], "database");
        let b = &json["backends"][0];
        assert_eq!(b["id"], "node-1");
        assert_eq!(b["address"], "127.0.0.1:7001");
        assert_eq!(b["health"], "healthy");
        assert_eq!((b["requests_total"].as_u64(), b["failures_total"].as_u64()), (Some(40), Some(1)));
        assert_eq!((b["in_flight"].as_u64(), b["latency_ewma_us"].as_u64()), (Some(3), Some(250)));
        assert!(json["sampled_at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
}
