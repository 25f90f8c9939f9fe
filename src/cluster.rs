//! [`Cluster`]: nodes and a balancer in one process, for examples, tests and demos.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use spectrum_balancer::{BackendConfig, Balancer, BalancerConfig, BalancerHandle, BalancingStrategy};
use spectrum_core::{ClusterId, NodeId, PeerAddr, transport};
use spectrum_resources::ClusterKey;

use crate::auth::Token;
use crate::discovery::ManagementDiscovery;
use crate::error::NodeError;
use crate::node::{Node, NodeBuilder};

type Configure = Arc<dyn Fn(NodeBuilder) -> NodeBuilder + Send + Sync>;

/// How often the in-process balancer re-reads membership.
const DISCOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// How long a stopping node keeps serving once draining: two membership polls.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest [`ClusterBuilder::start`] waits for the balancer to see every node healthy
/// (it returns as soon as it does; a loaded machine starting many clusters at once
/// needs more than a few seconds).
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// What every node of an in-process cluster shares: how to build one.
#[derive(Clone)]
struct NodeTemplate {
    cluster: ClusterId,
    key: ClusterKey,
    configure: Configure,
    data_root: Option<PathBuf>,
    token: Option<Token>,
}

impl NodeTemplate {
    /// A builder for node `id` seeded with `seeds`: the cluster's key, drain grace
    /// and store, then the application's configuration.
    fn builder(&self, id: &NodeId, seeds: Vec<PeerAddr>) -> NodeBuilder {
        let builder = NodeBuilder::new(id.clone(), self.cluster.clone())
            .seeds(seeds)
            .cluster_key(self.key.clone())
            .drain_grace(DRAIN_GRACE);
        let builder = match &self.data_root {
            Some(root) => builder.data_dir(root.join(id.as_str())),
            None => builder.in_memory(),
        };
        let builder = match &self.token {
            Some(token) => builder.management_token(token.clone()),
            None => builder,
        };
        (self.configure)(builder)
    }
}

/// Builds a [`Cluster`].
pub struct ClusterBuilder {
    cluster: ClusterId,
    size: usize,
    configure: Configure,
    /// `None`: the balancer's default (round robin).
    strategy: Option<Arc<dyn BalancingStrategy>>,
    balancer: BalancerConfig,
    data_root: Option<PathBuf>,
    token: Option<Token>,
}

impl fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("cluster", &self.cluster)
            .field("size", &self.size)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl ClusterBuilder {
    /// How many nodes (default 3).
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// Configures every node's builder, for example to add the application's
    /// services: `.configure_nodes(|b| b.add_service_with(MyService::server))`.
    pub fn configure_nodes(mut self, f: impl Fn(NodeBuilder) -> NodeBuilder + Send + Sync + 'static) -> Self {
        self.configure = Arc::new(f);
        self
    }

    /// The balancing strategy (default round robin). The cluster's database can
    /// override it while the cluster runs (`balancer/strategy`, set with
    /// [`AdminClient::set_balancer_strategy`](crate::client::AdminClient::set_balancer_strategy)).
    pub fn strategy(mut self, strategy: Arc<dyn BalancingStrategy>) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Keeps each node's configuration database durably under `root/<node-id>/`
    /// (default: in memory, as befits tests and demos).
    pub fn data_dir(mut self, root: impl Into<PathBuf>) -> Self {
        self.data_root = Some(root.into());
        self
    }

    /// Gives every node `token` as its management token (the bootstrap admin), and
    /// the balancer's membership reads the same token (default: none, every
    /// management call is allowed).
    pub fn management_token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// The balancer's configuration (default: loopback, ephemeral port).
    pub fn balancer_config(mut self, config: BalancerConfig) -> Self {
        self.balancer = config;
        self
    }

    /// Binds every node on an ephemeral loopback port, starts them with each
    /// other as seeds and one fresh cluster key, then starts the balancer in front
    /// of them, following membership (so nodes can join, drain and leave) and the
    /// strategy and weights the database sets, and waits (up to 20 s) until it has
    /// seen every node healthy.
    ///
    /// # Errors
    ///
    /// [`NodeError`] when a node or the balancer cannot start.
    pub async fn start(self) -> Result<Cluster, NodeError> {
        if self.size == 0 {
            return Err(NodeError::Config {
                field: "size",
                reason: "a cluster needs at least one node".into(),
            });
        }
        let mut listeners = Vec::with_capacity(self.size);
        for _ in 0..self.size {
            listeners.push(transport::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?);
        }
        let addrs: Vec<PeerAddr> = listeners.iter().map(transport::Listener::addr).collect();
        let template = NodeTemplate {
            cluster: self.cluster.clone(),
            key: ClusterKey::generate(),
            configure: self.configure.clone(),
            data_root: self.data_root.clone(),
            token: self.token.clone(),
        };
        // Start every node at once: each pulls from the others on startup, so
        // they must all be serving.
        let starts = listeners.into_iter().enumerate().map(|(i, listener)| {
            let seeds: Vec<PeerAddr> =
                addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()).collect();
            let template = &template;
            async move {
                let id = NodeId::new(format!("node-{}", i + 1))?;
                template.builder(&id, seeds).listener(listener).start().await.map(Some)
            }
        });
        let nodes = futures::future::try_join_all(starts).await?;
        let backends = nodes
            .iter()
            .flatten()
            .map(|n| BackendConfig { id: n.id().clone(), addr: n.local_addr(), weight: 1 })
            .collect();
        let discovery = match &self.token {
            Some(token) => ManagementDiscovery::new(addrs.clone()).with_token(token.clone()),
            None => ManagementDiscovery::new(addrs.clone()),
        };
        let mut balancer = Balancer::builder(self.balancer)
            .backends(backends)
            .discovery(Arc::new(discovery), DISCOVERY_INTERVAL);
        if let Some(strategy) = self.strategy {
            balancer = balancer.strategy(strategy);
        }
        let balancer = balancer.start().await?;
        // Ready means the balancer lists every node (its membership discovery,
        // which reads one node's view, can briefly miss a member whose record has
        // not reached that node yet) and has seen each pass a health check, so
        // the first requests already spread over all of them.
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let ready = |balancer: &BalancerHandle| {
            let stats = balancer.stats();
            nodes.iter().flatten().all(|n| stats.iter().any(|b| b.id == *n.id() && b.healthy))
        };
        while !ready(&balancer) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let started = nodes.iter().flatten().map(|n| n.id().clone()).collect();
        Ok(Cluster { nodes, balancer, template, started })
    }
}

/// Nodes and a balancer running in this process.
pub struct Cluster {
    nodes: Vec<Option<Node>>,
    balancer: BalancerHandle,
    template: NodeTemplate,
    /// Every id a node of this cluster has run under (stopped ones included:
    /// membership still names them).
    started: std::collections::BTreeSet<NodeId>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster", &self.template.cluster)
            .field("nodes", &self.nodes)
            .field("balancer", &self.balancer.url())
            .finish()
    }
}

impl Cluster {
    /// A builder for a cluster named `cluster`.
    pub fn builder(cluster: ClusterId) -> ClusterBuilder {
        ClusterBuilder {
            cluster,
            size: 3,
            configure: Arc::new(|b| b),
            strategy: None,
            // Health, reflection and management reads are retried on another node
            // after a failure (see `config::DEFAULT_IDEMPOTENT`).
            balancer: BalancerConfig {
                idempotent: crate::config::default_idempotent(),
                ..BalancerConfig::default()
            },
            data_root: None,
            token: None,
        }
    }

    /// The cluster's id.
    pub fn id(&self) -> &ClusterId {
        &self.template.cluster
    }

    /// The balancer's address, typed (for [`AdminClient::connect`](crate::client::AdminClient::connect)).
    pub fn balancer_addr(&self) -> PeerAddr {
        PeerAddr::from(self.balancer.local_addr())
    }

    /// The balancer's address, `http://127.0.0.1:PORT`: clients use it as if the
    /// cluster were one server.
    pub fn balancer_url(&self) -> String {
        self.balancer.url()
    }

    /// The balancer.
    pub fn balancer(&self) -> &BalancerHandle {
        &self.balancer
    }

    /// The nodes still running, in start order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// The node with `id`, if it is running.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes().find(|n| n.id().as_str() == id)
    }

    /// Starts one more node (`node-N`, the lowest N no node of this cluster has
    /// run under, stopped ones included) that joins the running cluster: it is
    /// seeded with the running nodes, pulls their state, records itself in
    /// membership, and the balancer sends it traffic once it is healthy.
    /// Nothing else restarts.
    ///
    /// # Errors
    ///
    /// [`NodeError`] when the node cannot start.
    pub async fn add_node(&mut self) -> Result<&Node, NodeError> {
        let mut n = 1;
        let id = loop {
            let id = NodeId::new(format!("node-{n}"))?;
            if !self.started.contains(&id) {
                break id;
            }
            n += 1;
        };
        self.start_node(&id).await
    }

    /// Stops the node with `id`: it leaves the cluster cleanly (see
    /// [`Node::shutdown`]). Returns whether such a node was running.
    pub async fn stop_node(&mut self, id: &str) -> bool {
        let Some(slot) = self.nodes.iter_mut().find(|n| n.as_ref().is_some_and(|n| n.id().as_str() == id))
        else {
            return false;
        };
        if let Some(node) = slot.take() {
            node.shutdown().await;
        }
        true
    }

    /// Kills the node with `id` as a crash would (see [`Node::kill`]): it stays in
    /// membership as it was, unreachable. Returns whether such a node was running.
    pub async fn kill_node(&mut self, id: &str) -> bool {
        let Some(slot) = self.nodes.iter_mut().find(|n| n.as_ref().is_some_and(|n| n.id().as_str() == id))
        else {
            return false;
        };
        if let Some(node) = slot.take() {
            node.kill().await;
        }
        true
    }

    /// Starts a node with `id` (one that was stopped or killed) seeded with the
    /// running nodes.
    ///
    /// # Errors
    ///
    /// The node's start error, such as [`NodeError::Removed`] for a removed member.
    pub async fn start_node(&mut self, id: &NodeId) -> Result<&Node, NodeError> {
        let seeds: Vec<PeerAddr> = self.nodes().map(|n| n.addr().clone()).collect();
        let node = self.template.builder(id, seeds).start().await?;
        self.started.insert(id.clone());
        self.nodes.push(Some(node));
        Ok(self.nodes.last().and_then(Option::as_ref).expect("just pushed"))
    }

    /// Restarts the node with `id` in place: it leaves cleanly, then starts again
    /// under the same id (on a new port, seeded with the running nodes), pulls the
    /// cluster's state and rejoins; the balancer follows membership throughout.
    /// With [`ClusterBuilder::data_dir`] it reopens its durable store; in memory it
    /// starts empty and refills from its peers. In Raft mode a voter that starts
    /// empty has lost its Raft state and takes no part until it is removed and
    /// undrained ([`Admin`](crate::admin::Admin)'s node commands; see the README's
    /// "empty disk"), so restart Raft-mode nodes with a `data_dir`.
    ///
    /// # Errors
    ///
    /// [`NodeError::UnknownNode`] when no node `id` is running, or the node's start error.
    pub async fn restart_node(&mut self, id: &str) -> Result<&Node, NodeError> {
        let index = self
            .nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.id().as_str() == id))
            .ok_or_else(|| NodeError::UnknownNode { id: id.to_owned() })?;
        let Some(node) = self.nodes[index].take() else {
            return Err(NodeError::UnknownNode { id: id.to_owned() });
        };
        let id = node.id().clone();
        node.shutdown().await;
        let seeds: Vec<PeerAddr> = self.nodes().map(|n| n.addr().clone()).collect();
        let node = self.template.builder(&id, seeds).start().await?;
        Ok(&*self.nodes[index].insert(node))
    }

    /// Stops the balancer, then every node at once (no drain grace: nothing routes
    /// to them any more).
    pub async fn shutdown(self) {
        self.balancer.shutdown().await;
        futures::future::join_all(self.nodes.into_iter().flatten().map(Node::shutdown_without_drain)).await;
    }
}
