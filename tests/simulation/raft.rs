//! The simulated cluster in Raft mode: each node is a turmoil host running the
//! real `RaftReplicator` (openraft, its log and state machine on redb's
//! in-memory backend through [`RaftMemoryLog`], over a `MemoryStore`) and its
//! gRPC `RaftService` on turmoil's listener, dialling its peers through
//! turmoil's TCP. A node's store, clock and Raft log survive its crashes, as
//! `raft.redb` and the durable store do.
//!
//! Clients are sequential: each has at most one operation in flight, sent to
//! a node of the script's choosing (as the balancer would), which carries it
//! out as the management service does: a write or compare-and-set is a
//! [`Transaction`] committed through the log (forwarded to the leader), a
//! consistent read is a read-index barrier and then a read of the local copy.
//! Every operation is recorded in a [`History`] with its invocation and
//! completion in simulated microseconds, or left of unknown outcome when it
//! failed, timed out or its node crashed under it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use futures::executor::block_on;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spectrum_core::{ClusterId, Hlc, NodeId, PeerAddr};
use spectrum_replication::linearizability::{Command, Completion, History, Operation, Response};
use spectrum_replication::{
    Condition, ConfigStore, MemoryStore, Outcome, PeerCredential, RaftMemoryLog, RaftReplicator,
    RaftSettings, Replicator, StoreError, Transaction, VersionToken, WriteBatch,
};

use crate::cluster::{Replica, SimClock, SimConn, origin_of, sim_transport};
use crate::hosts::Hosts;

/// The port every node serves Raft on.
const PORT: u16 = 7000;
/// Simulated time per step.
const TICK: Duration = Duration::from_millis(1);
/// How long a client waits for an operation before giving up on it (its
/// outcome is then unknown).
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a node looks for client operations.
const MAILBOX_POLL: Duration = Duration::from_millis(2);
/// Largest clock offset given to a node (well within the HLC's 500 ms bound).
const MAX_SKEW_MS: i64 = 100;

/// Raft timing in the simulation: as a real node's, faster elections, and a
/// snapshot every 40 entries with 8 kept behind it, so that runs compact the
/// log and a node back from a long outage installs a snapshot.
fn settings() -> RaftSettings {
    RaftSettings {
        heartbeat: Duration::from_millis(100),
        election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
        snapshot_every: 40,
        keep_behind_snapshot: 8,
    }
}

/// What a client asks of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientOp {
    /// Put `value` at `key`, whatever it held.
    Put { key: String, value: String },
    /// Delete `key`, whatever it held.
    Delete { key: String },
    /// Put `new` at `key` if it holds the write `expected` (its value and
    /// version, as the client last saw them: `--if-version`), or if it is
    /// absent when `expected` is `None` (`--if-absent`).
    Cas { key: String, expected: Option<(String, VersionToken)>, new: String },
    /// Read `key` linearizably (`--consistent`).
    Read { key: String },
}

impl ClientOp {
    fn key(&self) -> &str {
        match self {
            ClientOp::Put { key, .. }
            | ClientOp::Delete { key }
            | ClientOp::Cas { key, .. }
            | ClientOp::Read { key } => key,
        }
    }

    /// The register operation it is: every value written is unique, so "the
    /// key holds version V" is "the key holds the value written as V".
    fn command(&self) -> Command {
        match self {
            ClientOp::Put { value, .. } => Command::Write { value: value.clone() },
            ClientOp::Delete { .. } => Command::Delete,
            ClientOp::Cas { expected, new, .. } => Command::CompareAndSet {
                expected: expected.as_ref().map(|(value, _)| value.clone()),
                new: new.clone(),
            },
            ClientOp::Read { .. } => Command::Read,
        }
    }
}

/// What a client knows: whether it waits for an answer (and from which
/// node), and the last value and version it saw of each key.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientState {
    /// The node carrying out its operation in flight.
    pub(crate) busy_on: Option<usize>,
    /// What it last saw at each key: a value and its version, or absent.
    pub(crate) seen: BTreeMap<String, Option<(String, VersionToken)>>,
}

/// The history and the clients, shared by the driver and every host.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Every operation invoked so far.
    pub(crate) operations: Vec<Operation>,
    /// The clients.
    pub(crate) clients: Vec<ClientState>,
    /// Script notes and node events, for a failure's message.
    pub(crate) notes: Vec<String>,
    /// Which nodes said they were the leader when they last looked (a few
    /// milliseconds ago at most, while they run).
    pub(crate) leaders: Vec<bool>,
}

type SharedState = Arc<Mutex<Shared>>;

/// A client's operation waiting for a node.
#[derive(Debug)]
struct Queued {
    client: usize,
    op: ClientOp,
}

/// What a node keeps across a crash: its store, its clock and its Raft log.
#[derive(Debug, Clone)]
struct Disk {
    store: Arc<MemoryStore>,
    hlc: Arc<Hlc>,
    log: RaftMemoryLog,
}

/// Everything a node's software needs, kept by its host factory across boots.
#[derive(Debug)]
struct NodeHost {
    addr: PeerAddr,
    seeds: Vec<PeerAddr>,
    disk: Disk,
    mailbox: Arc<Mutex<VecDeque<Queued>>>,
    shared: SharedState,
    index: usize,
}

/// What the driver keeps of a node.
#[derive(Debug)]
struct NodeHandle {
    name: String,
    store: Arc<MemoryStore>,
    mailbox: Arc<Mutex<VecDeque<Queued>>>,
}

/// Simulated microseconds since the start of the run.
fn sim_us() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A turmoil simulation of `n` nodes in Raft mode and their clients.
pub(crate) struct RaftCluster {
    seed: u64,
    sim: turmoil::Sim<'static>,
    nodes: Vec<NodeHandle>,
    shared: SharedState,
}

impl RaftCluster {
    /// `n` nodes named `n1`, `n2`, … (each seeded with every other, so they
    /// found the group together) and `clients` clients.
    pub(crate) fn new(seed: u64, n: usize, clients: usize) -> Self {
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .tick_duration(TICK)
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(10))
            .build();
        let mut rng = StdRng::seed_from_u64(seed);
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let addrs: Vec<PeerAddr> = names
            .iter()
            .map(|name| format!("http://{name}:{PORT}").parse().expect("a valid address"))
            .collect();
        let shared = SharedState::default();
        shared.lock().clients = vec![ClientState::default(); clients];
        shared.lock().leaders = vec![false; n];
        let mut nodes = Vec::with_capacity(n);
        for (index, name) in names.iter().enumerate() {
            let skew_ms = rng.random_range(-MAX_SKEW_MS..=MAX_SKEW_MS);
            let clock = Arc::new(SimClock { skew_ms: AtomicI64::new(skew_ms), last: AtomicU64::new(0) });
            let id: NodeId = name.parse().expect("a valid node id");
            let hlc = Arc::new(Hlc::new(clock));
            let store = Arc::new(MemoryStore::for_origin(origin_of(seed, index, id, 0), hlc.clone()));
            let log = RaftMemoryLog::new().expect("an in-memory raft log");
            let mailbox = Arc::new(Mutex::new(VecDeque::new()));
            let host = Rc::new(NodeHost {
                addr: addrs[index].clone(),
                seeds: addrs.clone(),
                disk: Disk { store: store.clone(), hlc, log },
                mailbox: mailbox.clone(),
                shared: shared.clone(),
                index,
            });
            sim.host(name.as_str(), move || run_node(host.clone()));
            nodes.push(NodeHandle { name: name.clone(), store, mailbox });
        }
        Self { seed, sim, nodes, shared }
    }

    /// The seed the cluster was built with.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether `client` waits for an answer.
    pub(crate) fn is_busy(&self, client: usize) -> bool {
        self.shared.lock().clients[client].busy_on.is_some()
    }

    /// What `client` last saw at `key` (`None` when it never looked, or saw it absent).
    pub(crate) fn seen(&self, client: usize, key: &str) -> Option<(String, VersionToken)> {
        self.shared.lock().clients[client].seen.get(key).cloned().flatten()
    }

    /// `client` sends `op` to `node`.
    pub(crate) fn send(&mut self, client: usize, node: usize, op: ClientOp) {
        self.shared.lock().clients[client].busy_on = Some(node);
        self.nodes[node].mailbox.lock().push_back(Queued { client, op });
    }

    /// The running node that says it is the leader, if one does.
    pub(crate) fn leader(&mut self) -> Option<usize> {
        let leaders = self.shared.lock().leaders.clone();
        (0..self.len()).find(|&node| leaders[node] && self.is_running(node))
    }

    /// Kills a node's software at once, mid-operation if need be: operations
    /// it was carrying out stay of unknown outcome, those it had not started
    /// are dropped (never invoked), and their clients are free again.
    pub(crate) fn crash(&mut self, node: usize) {
        self.note(format!("crash {}", self.nodes[node].name));
        self.sim.crash(self.nodes[node].name.as_str());
        self.nodes[node].mailbox.lock().clear();
        self.shared.lock().leaders[node] = false;
        for client in &mut self.shared.lock().clients {
            if client.busy_on == Some(node) {
                client.busy_on = None;
            }
        }
    }

    /// Runs until `done` holds, checking every 10 ms of simulated time; whether
    /// it held within `limit`.
    pub(crate) fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let until = self.sim.elapsed() + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.sim.elapsed() >= until {
                return false;
            }
            self.run_for(Duration::from_millis(10));
        }
    }

    /// Every node's copy as it is now.
    pub(crate) fn replicas(&self) -> Vec<Replica> {
        self.nodes
            .iter()
            .map(|node| Replica {
                digest: block_on(node.store.digest()).expect("a memory store reads"),
                records: block_on(node.store.scan("")).expect("a memory store reads"),
                conflicts: block_on(node.store.conflicts("")).expect("a memory store reads"),
            })
            .collect()
    }

    /// Every value each node's store recorded a write of, with the sequence
    /// numbers of the writes (from each store's change feed, as far back as it
    /// reaches): a value written by one client operation must have one.
    pub(crate) fn applied_values(&self) -> BTreeMap<(String, String), BTreeSet<u64>> {
        let mut applied: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        for node in &self.nodes {
            let mut from = 0;
            for _ in 0..10_000 {
                let batch = match block_on(node.store.changes_since("", from, 1_000)) {
                    Ok(batch) => batch,
                    Err(StoreError::FeedCompacted { oldest, .. }) if oldest > from => {
                        from = oldest;
                        continue;
                    }
                    Err(e) => panic!("{}'s change feed: {e}", node.name),
                };
                for record in batch.changes.into_iter().filter_map(|c| c.record) {
                    if let Some(value) = &record.value {
                        let value = String::from_utf8_lossy(value).into_owned();
                        applied.entry((record.key.clone(), value)).or_default().insert(record.seq);
                    }
                }
                if batch.position == from {
                    break;
                }
                from = batch.position;
            }
        }
        applied
    }

    /// The history so far (operations in flight are of unknown outcome).
    pub(crate) fn history(&self) -> History {
        History::new(self.shared.lock().operations.clone()).expect("the recorded history is well formed")
    }

    /// The operations recorded so far.
    pub(crate) fn operations(&self) -> Vec<Operation> {
        self.shared.lock().operations.clone()
    }

    /// The script's notes so far.
    pub(crate) fn notes(&self) -> Vec<String> {
        self.shared.lock().notes.clone()
    }

    /// Simulated time so far.
    pub(crate) fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }
}

impl Hosts for RaftCluster {
    fn sim(&mut self) -> &mut turmoil::Sim<'static> {
        &mut self.sim
    }

    fn host(&self, node: usize) -> String {
        self.nodes[node].name.clone()
    }

    fn len(&self) -> usize {
        self.nodes.len()
    }

    fn note(&self, what: String) {
        let at_ms = self.sim.elapsed().as_millis();
        self.shared.lock().notes.push(format!("{at_ms} ms: {what}"));
    }
}

/// A node's software: serve Raft, join or found the group, and carry out
/// client operations, until the host is crashed.
async fn run_node(host: Rc<NodeHost>) -> turmoil::Result {
    let transport = sim_transport();
    let cluster: ClusterId = "simulation".parse()?;
    let store: Arc<dyn ConfigStore> = host.disk.store.clone();
    let replicator =
        RaftReplicator::builder(store.clone(), host.disk.hlc.clone(), cluster, host.addr.clone())
            .seeds(host.seeds.clone())
            .transport(transport.clone())
            .credential(PeerCredential::from_bytes([0x5e; 32]))
            .settings(settings())
            .memory_log(host.disk.log.clone())
            .build()
            .await?;
    let listener = turmoil::net::TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| SimConn(stream));
        Some((conn, listener))
    });
    let server = transport
        .server()?
        .add_service(replicator.service().into_server(transport.max_message_bytes))
        .serve_with_incoming(incoming);
    let _joining = replicator.start();
    tokio::select! {
        biased;
        served = server => served?,
        () = carry_out_operations(&host, store, replicator) => {}
    }
    Ok(())
}

/// Takes client operations from the mailbox and carries out each in a task
/// of its own.
async fn carry_out_operations(host: &NodeHost, store: Arc<dyn ConfigStore>, replicator: RaftReplicator) {
    loop {
        host.shared.lock().leaders[host.index] = replicator.is_leader();
        let Some(Queued { client, op }) = host.mailbox.lock().pop_front() else {
            tokio::time::sleep(MAILBOX_POLL).await;
            continue;
        };
        let id = {
            let mut shared = host.shared.lock();
            let id = shared.operations.len() as u64;
            let invoked = Operation::pending(id, op.key(), op.command(), sim_us()).by(client as u64);
            shared.operations.push(invoked);
            id
        };
        let (shared, store, replicator) = (host.shared.clone(), store.clone(), replicator.clone());
        tokio::task::spawn_local(async move {
            let answer = carry_out(&op, store.as_ref(), &replicator).await;
            let at = sim_us();
            let mut shared = shared.lock();
            if let Some(answer) = answer {
                if let Some(seen) = answer.seen {
                    shared.clients[client].seen.insert(op.key().to_owned(), seen);
                }
                let operation = &mut shared.operations[id as usize];
                operation.completion = Some(Completion { at, response: answer.response });
            }
            shared.clients[client].busy_on = None;
        });
    }
}

/// A client's answer, and what it tells the client about its key.
struct Answer {
    response: Response,
    /// The key's value and version after the operation, when it tells them.
    seen: Option<Option<(String, VersionToken)>>,
}

/// Carries out `op` as the management service does; `None` when its outcome
/// is unknown (it failed, or did not finish within [`OP_TIMEOUT`]).
async fn carry_out(op: &ClientOp, store: &dyn ConfigStore, replicator: &RaftReplicator) -> Option<Answer> {
    let txn = match op {
        ClientOp::Read { key } => {
            replicator.linearizable_barrier(OP_TIMEOUT).await.ok()?;
            let live = store.get(key).await.ok()?.filter(|r| !r.is_tombstone());
            let seen = live.map(|r| {
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
                (value, r.token())
            });
            let response = Response::Read(seen.as_ref().map(|(v, _)| v.clone()));
            return Some(Answer { response, seen: Some(seen) });
        }
        ClientOp::Put { key, value } => Transaction::new(WriteBatch::new().put(key.clone(), value.clone())),
        ClientOp::Delete { key } => Transaction::new(WriteBatch::new().delete(key.clone())),
        ClientOp::Cas { key, expected, new } => {
            let condition = match expected {
                Some((_, version)) => Condition::version(key.clone(), version.clone()),
                None => Condition::absent(key.clone()),
            };
            Transaction::new(WriteBatch::new().put(key.clone(), new.clone())).when(condition)
        }
    };
    let committed = replicator.commit(txn, OP_TIMEOUT).await.ok()?;
    match committed.outcome {
        Outcome::ConditionFailed(_) => Some(Answer { response: Response::Failed, seen: None }),
        Outcome::Applied { versions } => {
            let seen = match op {
                ClientOp::Put { value: new, .. } | ClientOp::Cas { new, .. } => {
                    versions.into_iter().next().map(|v| (new.clone(), v))
                }
                _ => None,
            };
            Some(Answer { response: Response::Ok, seen: Some(seen) })
        }
        // `Outcome` is non-exhaustive: an outcome this test does not know is unknown.
        _ => None,
    }
}
