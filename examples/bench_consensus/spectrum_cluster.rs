//! Three `spectrum node` processes from generated node files, on 127.0.0.1, .2
//! and .3, each with its own data directory (the durable redb store, fsync per
//! commit).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use spectrum::auth::Token;
use spectrum::client::{AckLevel, AdminClient};

use crate::processes::{BoxError, Processes, free_addr, member_ip, spawn_spectrum};

/// The management token of the benchmark's clusters.
const TOKEN: &str = "bench-token";
/// How long a node may take to print its first line, and the cluster to take writes.
const STARTUP: Duration = Duration::from_secs(30);

/// A running Spectrum cluster: a client per node.
pub(crate) struct SpectrumCluster {
    pub(crate) nodes: Vec<AdminClient>,
}

impl SpectrumCluster {
    /// The node the sequential shapes go to: in Raft mode the leader, as
    /// every node's status names it (so Spectrum, like etcd, pays no
    /// forwarding hop); in last-writer-wins mode, where every node takes
    /// writes alike, the first.
    pub(crate) async fn preferred(&self) -> Result<usize, BoxError> {
        let status = self.nodes[0].status().await?;
        let Some(raft) = status.replication.raft else { return Ok(0) };
        let leader = raft.leader.ok_or("the Raft group has no leader")?;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.status().await?.node.as_str() == leader {
                return Ok(i);
            }
        }
        Err(format!("the Raft leader {leader} is not one of the three nodes").into())
    }
}

/// Starts three nodes of cluster `name` whose node files carry `settings` (extra
/// TOML lines, the same on every node) besides the usual ones; returns once a
/// write through each node is acknowledged by all three.
pub(crate) async fn start(
    bin: &Path,
    dir: &Path,
    name: &str,
    settings: &str,
    processes: &mut Processes,
) -> Result<SpectrumCluster, BoxError> {
    let addrs: Vec<SocketAddr> = (0..3).map(|i| free_addr(member_ip(i))).collect::<Result<_, _>>()?;
    let key = spectrum::resources::ClusterKey::generate().to_hex();
    for i in 0..3 {
        let id = format!("node-{}", i + 1);
        let seeds: Vec<String> =
            (0..3).filter(|&j| j != i).map(|j| format!("\"http://{}\"", addrs[j])).collect();
        let base = dir.join(format!("{name}-{id}"));
        let text = format!(
            "id = \"{id}\"\ncluster = \"bench-{name}\"\nlisten = \"{}\"\nseeds = [{}]\n\
             token = \"{TOKEN}\"\ncluster_key = \"{key}\"\nsync_interval_ms = 1000\ndata_dir = {:?}\n{settings}",
            addrs[i],
            seeds.join(", "),
            base.display().to_string()
        );
        spawn_spectrum(bin, "node", &base, &text, processes, STARTUP)?;
    }
    let token = Token::new(TOKEN)?;
    let mut nodes = Vec::new();
    for addr in &addrs {
        nodes.push(AdminClient::connect(&format!("http://{addr}").parse()?, Some(token.clone())).await?);
    }
    wait_ready(dir, &nodes, processes).await?;
    Ok(SpectrumCluster { nodes })
}

/// Waits until a put through every node is acknowledged by all three.
async fn wait_ready(dir: &Path, nodes: &[AdminClient], processes: &mut Processes) -> Result<(), BoxError> {
    let deadline = Instant::now() + STARTUP;
    let mut last = String::new();
    for node in nodes {
        loop {
            processes.all_running().map_err(|e| format!("{e}; logs in {}", dir.display()))?;
            if Instant::now() > deadline {
                return Err(format!(
                    "the Spectrum cluster never took writes ({last}); logs in {}",
                    dir.display()
                )
                .into());
            }
            match node.put("settings/bench/ready", b"1".to_vec(), AckLevel::All).await {
                Ok(_) => break,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
