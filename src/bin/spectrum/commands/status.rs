//! `spectrum status`: the answering node's view of the cluster and, when the
//! endpoint is a balancer, the balancer's own figures for each node.

use std::fmt;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use spectrum::balancer::stats::{BalancerStats, StatsClient};
use spectrum::client::AdminClient;
use spectrum::model::NodeStatus;
use tonic::transport::Channel;

use crate::output::emit;

/// How long `status` waits for the balancer's own figures before leaving them out.
const BALANCER_STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's status, plus `"balancer"` (and the `BALANCER` table) when the
/// endpoint is one.
#[derive(Serialize)]
struct ClusterStatus {
    #[serde(flatten)]
    node: NodeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    balancer: Option<BalancerStats>,
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.node)?;
        if let Some(stats) = &self.balancer {
            write!(f, "\n{stats}\n")?;
        }
        Ok(())
    }
}

/// Prints the status. The balancer's `Stats` needs no token; a node answers it
/// `UNIMPLEMENTED`, and then (or on any failure or timeout) the table is left out.
pub(super) async fn run(client: &AdminClient, channel: Channel, json: bool) -> Result<()> {
    let node = client.status().await?;
    let balancer = match tokio::time::timeout(BALANCER_STATS_TIMEOUT, StatsClient::new(channel).stats()).await
    {
        Ok(Ok(stats)) => Some(stats),
        _ => None,
    };
    emit(&ClusterStatus { node, balancer }, json)
}
