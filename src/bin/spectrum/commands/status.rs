//! `spectrum status`: the answering node's view of the cluster and, when the
//! endpoint is a balancer, the balancer's own figures for each node.

use std::fmt;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use spectrum::auth::Token;
use spectrum::balancer::BalancerError;
use spectrum::balancer::stats::{BalancerStats, StatsClient};
use spectrum::client::AdminClient;
use spectrum::model::NodeStatus;
use tonic::transport::Channel;

use crate::output::emit;

/// How long `status` waits for the balancer's own figures before leaving them out.
const BALANCER_STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's status, plus `"balancer"` (and the `BALANCER` table) when the
/// endpoint is one, or `"balancer_error"` when it is one that did not give its
/// figures.
#[derive(Serialize)]
struct ClusterStatus {
    #[serde(flatten)]
    node: NodeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    balancer: Option<BalancerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    balancer_error: Option<String>,
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.node)?;
        if let Some(stats) = &self.balancer {
            write!(f, "\n{stats}\n")?;
        }
        if let Some(error) = &self.balancer_error {
            write!(f, "\nBALANCER  figures not shown: {error}\n")?;
        }
        Ok(())
    }
}

/// Prints the status. The balancer's `Stats` is called with `token` (the balancer
/// requires its token on its public port); a node answers it `UNIMPLEMENTED`, and
/// then the table is left out. Any other failure, or no answer within 5 s, is
/// said in its place.
pub(super) async fn run(
    client: &AdminClient,
    channel: Channel,
    token: Option<&Token>,
    json: bool,
) -> Result<()> {
    let node = client.status().await?;
    let mut stats = StatsClient::new(channel);
    if let Some(token) = token {
        stats = stats.with_token(token.expose())?;
    }
    let (balancer, balancer_error) = match tokio::time::timeout(BALANCER_STATS_TIMEOUT, stats.stats()).await {
        Ok(Ok(stats)) => (Some(stats), None),
        Ok(Err(BalancerError::StatsCall { code: tonic::Code::Unimplemented, .. })) => (None, None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(_) => (None, Some(format!("no answer within {BALANCER_STATS_TIMEOUT:?}"))),
    };
    emit(&ClusterStatus { node, balancer, balancer_error }, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeStatus {
        NodeStatus {
            cluster: "east".into(),
            node: "node-1".parse().unwrap(),
            addr: "http://127.0.0.1:7101".into(),
            version: "0.1.0".into(),
            replication: spectrum::model::ReplicationInfo { mode: "lww".into(), raft: None },
            keys: 0,
            tombstones: 0,
            conflicts: 0,
            digest: Default::default(),
            members: vec![],
            peers: vec![],
            resources: vec![],
            clock_fenced: None,
            out_of_cluster: None,
        }
    }

    #[test]
    fn a_node_has_no_balancer_key_and_no_balancer_table() {
        let status = ClusterStatus { node: node(), balancer: None, balancer_error: None };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["cluster"], "east");
        assert!(json.get("balancer").is_none(), "{json}");
        assert_eq!(status.to_string(), status.node.to_string());
    }

    #[test]
    fn a_balancer_adds_its_table_after_a_blank_line() {
        let status =
            ClusterStatus { node: node(), balancer: Some(BalancerStats::default()), balancer_error: None };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["balancer"]["nodes"], serde_json::json!([]));
        let text = status.to_string();
        assert!(text.contains("\n\nBALANCER  (0 requests"), "{text}");
        assert!(text.ends_with("LATENCY µs\n"), "{text}");
    }

    #[test]
    fn a_balancer_that_refuses_its_figures_says_why_in_their_place() {
        let error = "the balancer's Stats call failed: Unauthenticated: missing bearer token".to_owned();
        let status = ClusterStatus { node: node(), balancer: None, balancer_error: Some(error.clone()) };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["balancer_error"], error.as_str(), "{json}");
        assert!(json.get("balancer").is_none(), "{json}");
        assert!(status.to_string().ends_with(&format!("\n\nBALANCER  figures not shown: {error}\n")));
    }
}
