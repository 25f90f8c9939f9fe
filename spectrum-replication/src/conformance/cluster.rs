//! [`TestCluster`]: real replicators on loopback gRPC, each over a durable
//! store of its own, that a test stops, restarts, grows and shrinks; and the
//! [`ReplicatorMaker`]s of the two reference replicators.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use spectrum_core::transport::bind;
use spectrum_core::{ClusterId, Hlc, Member, MemberState, NodeId, PeerAddr, TransportConfig};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::service::Routes;

use crate::credential::PeerCredential;
use crate::error::{ReplicationError, StoreError};
use crate::record::{VersionToken, WriteBatch};
use crate::replicator::{AckLevel, Replicator};
use crate::store::ConfigStore;
use crate::transaction::{Outcome, ReplicationMode, Transaction};
use crate::{AntiEntropy, RaftReplicator, RaftSettings, RedbStore};

/// How long the harness waits for anything (a leader, a write, convergence).
pub const WAIT: Duration = Duration::from_secs(20);

/// Between two attempts of something the harness waits for.
const POLL: Duration = Duration::from_millis(50);

/// Largest gRPC message the test nodes accept.
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// What a [`ReplicatorMaker`] is given to start one node's replicator.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node's store (durable: a restart reopens the same file).
    pub store: Arc<dyn ConfigStore>,
    /// The node's clock.
    pub hlc: Arc<Hlc>,
    /// The cluster.
    pub cluster: ClusterId,
    /// The address the node is served at.
    pub addr: PeerAddr,
    /// Every other node's address.
    pub seeds: Vec<PeerAddr>,
    /// A directory of the node's own that survives its restarts.
    pub dir: PathBuf,
    /// The peer credential every node of the cluster shares.
    pub credential: PeerCredential,
}

/// One node's replicator, started by a [`ReplicatorMaker`].
pub struct StartedNode {
    /// The replicator writes go through.
    pub replicator: Arc<dyn Replicator>,
    /// Its gRPC service(s), which the harness serves at the node's address.
    pub routes: Routes,
    /// Stops the replicator's background work and releases its files.
    pub stop: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>,
}

impl fmt::Debug for StartedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartedNode").field("replicator", &self.replicator).finish_non_exhaustive()
    }
}

/// Starts one node's replicator of the kind under test: what a
/// [`Replicator`] implementation supplies to run the conformance suite.
#[async_trait]
pub trait ReplicatorMaker: Send + Sync {
    /// Builds and starts the replicator of the node `spec` describes (joining
    /// the others in the background, if it needs to).
    ///
    /// # Errors
    ///
    /// Whatever keeps the replicator from starting.
    async fn start(&self, spec: NodeSpec) -> Result<StartedNode, ReplicationError>;
}

/// [`AntiEntropy`] (last-writer-wins) with rounds every 100 ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct AntiEntropyMaker;

#[async_trait]
impl ReplicatorMaker for AntiEntropyMaker {
    async fn start(&self, spec: NodeSpec) -> Result<StartedNode, ReplicationError> {
        let ae = AntiEntropy::builder(spec.store, spec.hlc, spec.cluster, spec.addr)
            .seeds(spec.seeds)
            .interval(Duration::from_millis(100))
            .credential(spec.credential)
            .build();
        let routes = Routes::new(ae.service().into_server(MAX_MESSAGE_BYTES));
        let rounds = ae.start();
        Ok(StartedNode {
            replicator: Arc::new(ae),
            routes,
            stop: Box::new(move || Box::pin(rounds.shutdown())),
        })
    }
}

/// [`RaftReplicator`] with fast elections and a snapshot every 20 entries
/// (so a restarted node catches up by snapshot as often as by log).
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftMaker;

/// The Raft timing of [`RaftMaker`].
pub fn fast_raft_settings() -> RaftSettings {
    RaftSettings {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
        snapshot_every: 20,
        keep_behind_snapshot: 0,
    }
}

#[async_trait]
impl ReplicatorMaker for RaftMaker {
    async fn start(&self, spec: NodeSpec) -> Result<StartedNode, ReplicationError> {
        let raft = RaftReplicator::builder(spec.store, spec.hlc, spec.cluster, spec.addr)
            .seeds(spec.seeds)
            .data_dir(&spec.dir)
            .credential(spec.credential)
            .settings(fast_raft_settings())
            .build()
            .await?;
        let routes = Routes::new(raft.service().into_server(MAX_MESSAGE_BYTES));
        drop(raft.start());
        let stopping = raft.clone();
        Ok(StartedNode {
            replicator: Arc::new(raft),
            routes,
            stop: Box::new(move || Box::pin(async move { stopping.shutdown().await })),
        })
    }
}

/// A node of a [`TestCluster`].
struct Slot {
    id: NodeId,
    addr: PeerAddr,
    running: Option<Running>,
}

struct Running {
    store: Arc<dyn ConfigStore>,
    replicator: Arc<dyn Replicator>,
    server: JoinHandle<()>,
    closing: tokio::sync::oneshot::Sender<()>,
    stop: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>,
}

/// Nodes `n1`, `n2`, … of one cluster on loopback, each a durable store in
/// its own directory with a replicator from `M` served over gRPC.
///
/// Writes go through the replicator's declared [mode](Replicator::mode):
/// applied locally then [replicated](Replicator::replicate) in last-writer-wins
/// mode, [committed](Replicator::commit) in Raft mode.
pub struct TestCluster<M> {
    maker: M,
    dir: PathBuf,
    cluster: ClusterId,
    credential: [u8; 32],
    nodes: Vec<Slot>,
}

impl<M> fmt::Debug for TestCluster<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster").field("dir", &self.dir).field("nodes", &self.nodes.len()).finish()
    }
}

fn harness_error(what: impl fmt::Display) -> ReplicationError {
    ReplicationError::Consensus { reason: format!("test harness: {what}") }
}

impl<M: ReplicatorMaker> TestCluster<M> {
    /// Starts `n` nodes in `dir` (each seeded with all the others) and waits
    /// until each has recorded itself as an active member.
    ///
    /// # Errors
    ///
    /// A node that cannot start, or membership not recorded within [`WAIT`].
    pub async fn start(maker: M, dir: &Path, n: usize) -> Result<Self, ReplicationError> {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(bind(loopback()).await.map_err(harness_error)?);
        }
        let nodes = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Ok(Slot { id: node_id(i + 1)?, addr: l.addr(), running: None }))
            .collect::<Result<Vec<_>, ReplicationError>>()?;
        let cluster = "conformance".parse().map_err(harness_error)?;
        let mut me = Self { maker, dir: dir.to_owned(), cluster, credential: [5; 32], nodes };
        for (i, listener) in listeners.into_iter().enumerate() {
            me.run(i, listener).await?;
        }
        for i in 0..n {
            me.record_member(i, MemberState::Active).await?;
        }
        Ok(me)
    }

    /// Starts the replicator of node `i` and serves it on `listener`.
    async fn run(
        &mut self,
        i: usize,
        listener: spectrum_core::transport::Listener,
    ) -> Result<(), ReplicationError> {
        let (id, addr) = (self.nodes[i].id.clone(), self.nodes[i].addr.clone());
        let dir = self.dir.join(id.as_str());
        std::fs::create_dir_all(&dir).map_err(harness_error)?;
        let hlc = Arc::new(Hlc::system());
        let store: Arc<dyn ConfigStore> = Arc::new(open_store(&dir, &id, &hlc).await?);
        let seeds = self.nodes.iter().filter(|s| s.addr != addr).map(|s| s.addr.clone()).collect();
        let spec = NodeSpec {
            store: store.clone(),
            hlc,
            cluster: self.cluster.clone(),
            addr,
            seeds,
            dir,
            credential: PeerCredential::from_bytes(self.credential),
        };
        let started = self.maker.start(spec).await?;
        let (closing, closed) = tokio::sync::oneshot::channel::<()>();
        // Stopped gracefully: open connections are closed too (GOAWAY), so
        // peers dial the next incarnation instead of talking to this one.
        let server = TransportConfig::default()
            .server()
            .map_err(harness_error)?
            .add_routes(started.routes)
            .serve_with_incoming_shutdown(listener.incoming, async move {
                let _ = closed.await;
            });
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        self.nodes[i].running =
            Some(Running { store, replicator: started.replicator, server, closing, stop: started.stop });
        Ok(())
    }

    /// How many nodes the cluster has had (running or stopped).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s id (`n{i+1}`).
    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> &PeerAddr {
        &self.nodes[i].addr
    }

    /// Node `i`'s store.
    ///
    /// # Panics
    ///
    /// When node `i` is stopped (a test's mistake).
    pub fn store(&self, i: usize) -> &Arc<dyn ConfigStore> {
        &self.running(i).store
    }

    /// Node `i`'s replicator.
    ///
    /// # Panics
    ///
    /// When node `i` is stopped (a test's mistake).
    pub fn replicator(&self, i: usize) -> &Arc<dyn Replicator> {
        &self.running(i).replicator
    }

    fn running(&self, i: usize) -> &Running {
        match &self.nodes[i].running {
            Some(r) => r,
            None => panic!("node {} is stopped", self.nodes[i].id),
        }
    }

    /// The indexes of the running nodes.
    pub fn up(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].running.is_some()).collect()
    }

    /// Writes `batch` on node `i` at `ack` (last-writer-wins) or through
    /// consensus (Raft), returning the version of each write.
    ///
    /// # Errors
    ///
    /// The store's or the replicator's refusal; in Raft mode a failed
    /// condition cannot happen (the batch has none).
    pub async fn write(
        &self,
        i: usize,
        batch: WriteBatch,
        ack: AckLevel,
    ) -> Result<Vec<VersionToken>, ReplicationError> {
        let node = self.running(i);
        if node.replicator.mode() == ReplicationMode::Raft {
            let committed = node.replicator.commit(Transaction::new(batch), WAIT).await?;
            return match committed.outcome {
                Outcome::Applied { versions } => Ok(versions),
                other => Err(harness_error(format!("an unconditional write was not applied: {other:?}"))),
            };
        }
        let records = node.store.apply(batch).await?;
        let versions = records.iter().map(|r| r.token()).collect();
        node.replicator.replicate(records, ack, WAIT).await?;
        Ok(versions)
    }

    /// Records node `i` in the membership namespace in `state`, written on
    /// node `i` itself (as a node records itself), retrying until a write
    /// is taken (in Raft mode, until a leader is elected) within [`WAIT`].
    ///
    /// # Errors
    ///
    /// The last refusal, when none was taken in time.
    pub async fn record_member(&self, i: usize, state: MemberState) -> Result<(), ReplicationError> {
        self.record_member_on(i, i, state).await
    }

    /// Records node `member` in `state`, written on node `on` (an operator's
    /// change), retrying as [`record_member`](Self::record_member) does.
    ///
    /// # Errors
    ///
    /// The last refusal, when none was taken in time.
    pub async fn record_member_on(
        &self,
        on: usize,
        member: usize,
        state: MemberState,
    ) -> Result<(), ReplicationError> {
        let m = Member::new(self.nodes[member].id.clone(), self.nodes[member].addr.clone(), state);
        let deadline = Instant::now() + WAIT;
        loop {
            let batch = WriteBatch::new().put(m.record_key(), m.to_record_value());
            match self.write(on, batch, AckLevel::Local).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() + POLL > deadline => return Err(e),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Brings every running node up to date (anti-entropy rounds, or a
    /// linearizable barrier) until their stores hold the same records and
    /// digests; whether they did within [`WAIT`].
    pub async fn converge(&self) -> bool {
        self.converge_among(&self.up()).await
    }

    /// Like [`converge`](Self::converge), among nodes `among` only (say,
    /// without one that left the group).
    pub async fn converge_among(&self, among: &[usize]) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            for &i in among {
                let r = self.replicator(i);
                let _ = match r.mode() {
                    ReplicationMode::Raft => r.linearizable_barrier(POLL * 20).await,
                    _ => r.sync_round().await,
                };
            }
            if self.converged(among).await {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
        false
    }

    /// Whether the stores of `among` hold the same records and digest.
    async fn converged(&self, among: &[usize]) -> bool {
        let mut first = None;
        for &i in among {
            let (Ok(records), Ok(digest)) = (self.store(i).scan("").await, self.store(i).digest().await)
            else {
                return false;
            };
            match &first {
                None => first = Some((records, digest)),
                Some(f) if *f != (records, digest) => return false,
                Some(_) => {}
            }
        }
        true
    }

    /// Stops node `i` (its replicator, then its server); its files stay.
    pub async fn stop(&mut self, i: usize) {
        if let Some(r) = self.nodes[i].running.take() {
            (r.stop)().await;
            let _ = r.closing.send(());
            let mut server = r.server;
            if tokio::time::timeout(Duration::from_secs(5), &mut server).await.is_err() {
                server.abort();
            }
        }
    }

    /// Starts stopped node `i` again at the same address over the same files.
    ///
    /// # Errors
    ///
    /// The address cannot be bound again, or the node cannot start.
    pub async fn restart(&mut self, i: usize) -> Result<(), ReplicationError> {
        self.stop(i).await;
        let addr = self.nodes[i]
            .addr
            .socket_addr()
            .ok_or_else(|| harness_error(format!("{} is no socket address", self.nodes[i].addr)))?;
        let listener = bind(addr).await.map_err(harness_error)?;
        self.run(i, listener).await
    }

    /// Adds a node seeded with every other, records it as an active member
    /// (on itself) and returns its index.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn add(&mut self) -> Result<usize, ReplicationError> {
        let listener = bind(loopback()).await.map_err(harness_error)?;
        let i = self.nodes.len();
        self.nodes.push(Slot { id: node_id(i + 1)?, addr: listener.addr(), running: None });
        self.run(i, listener).await?;
        self.record_member(i, MemberState::Active).await?;
        Ok(i)
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

fn node_id(n: usize) -> Result<NodeId, ReplicationError> {
    NodeId::new(format!("n{n}")).map_err(harness_error)
}

/// Opens node `id`'s store in `dir`, waiting (up to [`WAIT`]) while a
/// stopped incarnation still releases it.
pub(super) async fn open_store(
    dir: &Path,
    id: &NodeId,
    hlc: &Arc<Hlc>,
) -> Result<RedbStore, ReplicationError> {
    let deadline = Instant::now() + WAIT;
    loop {
        match RedbStore::open(dir.join("store.redb"), id.clone(), hlc.clone()) {
            Err(StoreError::InUse { .. }) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            other => return Ok(other?),
        }
    }
}
