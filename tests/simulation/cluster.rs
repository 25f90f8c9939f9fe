//! The simulated cluster: each node is a turmoil host running the real
//! `ReplicationService` (a tonic server on turmoil's listener) and an
//! `AntiEntropy` replicator whose channels dial through turmoil's TCP, over a
//! store and a clock that survive the host's crashes.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::executor::block_on;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spectrum_core::{ChannelConnector, Clock, ClusterId, Hlc, NodeId, PeerAddr, TransportConfig};
use spectrum_replication::{
    AckLevel, AntiEntropy, ConfigStore, MemoryStore, Origin, PeerCredential, Record, Replicator,
    VersionToken, VersionVector, WriteBatch, horizon::FirstWrite,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Endpoint, Uri};

use crate::hosts::Hosts;

/// The port every node serves replication on.
const PORT: u16 = 7000;
/// Physical time at the start of every simulation (ms since the Unix epoch).
const EPOCH_MS: u64 = 1_750_000_000_000;
/// Simulated time per step.
const TICK: Duration = Duration::from_millis(1);
/// Mean time between anti-entropy rounds.
const SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// How long a write waits for its acknowledgement level.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a node looks for client writes.
const MAILBOX_POLL: Duration = Duration::from_millis(5);
/// Largest clock offset given to a node (well within the HLC's 500 ms bound).
const MAX_SKEW_MS: i64 = 100;

/// A client's write, carried out on one node: applied to its store, then
/// replicated at `ack`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientWrite {
    /// The key.
    pub(crate) key: String,
    /// The value, or `None` for a delete.
    pub(crate) value: Option<String>,
    /// How many nodes must hold it before the node answers.
    pub(crate) ack: AckLevel,
}

impl ClientWrite {
    /// Puts `key = value`.
    pub(crate) fn put(key: &str, value: &str, ack: AckLevel) -> Self {
        Self { key: key.into(), value: Some(value.into()), ack }
    }

    /// Deletes `key`.
    pub(crate) fn delete(key: &str, ack: AckLevel) -> Self {
        Self { key: key.into(), value: None, ack }
    }
}

/// One line of a run's trace. Two runs of the same seed have equal traces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// The script changed the cluster (a partition, a crash, …).
    Script { at_ms: u64, what: String },
    /// A node applied a client's write to its store.
    Applied { at_ms: u64, node: usize, record: Record },
    /// A node answered a client's write (its record is `version`): how many
    /// nodes held it, or why the level was not met.
    Answered { at_ms: u64, node: usize, version: VersionToken, ack: AckLevel, outcome: Result<usize, String> },
}

/// One node's final copy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replica {
    /// The node's digest.
    pub(crate) digest: VersionVector,
    /// Every record, tombstones included, in key order.
    pub(crate) records: Vec<Record>,
    /// Its open conflicts (writes to one key that did not see each other).
    pub(crate) conflicts: Vec<spectrum_replication::Conflict>,
}

impl Replica {
    /// The records that hold a value (tombstones may be collected at different
    /// times on different nodes, so only these must be identical).
    pub(crate) fn live(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| !r.is_tombstone()).collect()
    }
}

/// Physical time on a simulated host: the simulation's elapsed time after a
/// fixed epoch, plus the node's fixed skew, so every stamp follows from the seed.
#[derive(Debug)]
pub(crate) struct SimClock {
    /// The node's offset from simulated time (changed by [`Cluster::set_clock_offset`]).
    pub(crate) skew_ms: AtomicI64,
    /// The last reading, for calls made outside a host (none are expected).
    pub(crate) last: AtomicU64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        match turmoil::sim_elapsed() {
            Some(elapsed) => {
                let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                let now =
                    EPOCH_MS.saturating_add(ms).saturating_add_signed(self.skew_ms.load(Ordering::Relaxed));
                self.last.store(now, Ordering::Relaxed);
                now
            }
            None => self.last.load(Ordering::Relaxed),
        }
    }
}

/// What a node keeps across a crash: its store and its clock, as the durable
/// store does (`RedbStore` commits every write, and the HLC high-water mark,
/// before acknowledging; `tests/durability` proves that with `kill -9`).
#[derive(Debug, Clone)]
struct Disk {
    store: Arc<MemoryStore>,
    hlc: Arc<Hlc>,
    /// Whether it replaced a lost one: its store's first write then waits for
    /// [`FirstWrite`], as a `Node`'s does.
    replaced: bool,
}

impl Disk {
    /// An empty store writing under `origin`, stamping with a new HLC over `clock`.
    fn blank(origin: Origin, clock: Arc<SimClock>, replaced: bool) -> Self {
        let hlc = Arc::new(Hlc::new(clock));
        Self { store: Arc::new(MemoryStore::for_origin(origin, hlc.clone())), hlc, replaced }
    }
}

/// The origin of the `disk`-th store (0 for the first) of node `index` named
/// `id`: a new incarnation per store, as a real store draws at random, but
/// drawn from the seed so that a run replays.
pub(crate) fn origin_of(seed: u64, index: usize, id: NodeId, disk: u64) -> Origin {
    let mut rng = StdRng::seed_from_u64(seed ^ ((index as u64) << 40) ^ disk.rotate_left(20) ^ 0x0d15_c0de);
    Origin::new(id, rng.random_range(1..=u64::MAX))
}

/// A node's disk, shared by its host (which boots from it) and the driver
/// (which reads it, or replaces it).
type SharedDisk = Arc<Mutex<Disk>>;

/// Client writes waiting for a node, and how many it has applied but not yet
/// answered.
#[derive(Debug, Default)]
struct Mailbox {
    queue: VecDeque<ClientWrite>,
    unanswered: usize,
}

type Journal = Arc<Mutex<Vec<Event>>>;

fn record(journal: &Journal, event: Event) {
    journal.lock().push(event);
}

/// Simulated milliseconds since the start of the run.
fn sim_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Everything a node's software needs, kept by its host factory across boots.
#[derive(Debug)]
struct NodeHost {
    index: usize,
    addr: PeerAddr,
    seeds: Vec<PeerAddr>,
    disk: SharedDisk,
    mailbox: Arc<Mutex<Mailbox>>,
    journal: Journal,
    seed: u64,
    boots: Cell<u64>,
}

/// What the driver keeps of a node.
#[derive(Debug)]
struct NodeHandle {
    name: String,
    clock: Arc<SimClock>,
    disk: SharedDisk,
    /// How many times its disk was replaced by an empty one.
    wipes: u64,
    mailbox: Arc<Mutex<Mailbox>>,
}

/// A turmoil simulation of `n` nodes, driven step by step by a script.
pub(crate) struct Cluster {
    seed: u64,
    sim: turmoil::Sim<'static>,
    nodes: Vec<NodeHandle>,
    journal: Journal,
}

impl Cluster {
    /// `n` nodes named `n1`, `n2`, …, each seeded with every other; the seed
    /// fixes the network's latencies, the nodes' clock offsets and every
    /// replicator's choices.
    pub(crate) fn new(seed: u64, n: usize) -> Self {
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .tick_duration(TICK)
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(20))
            .build();
        let mut rng = StdRng::seed_from_u64(seed);
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let addrs: Vec<PeerAddr> = names
            .iter()
            .map(|name| format!("http://{name}:{PORT}").parse().expect("a valid address"))
            .collect();
        let journal = Journal::default();
        let mut nodes = Vec::with_capacity(n);
        for (index, name) in names.iter().enumerate() {
            let skew_ms = rng.random_range(-MAX_SKEW_MS..=MAX_SKEW_MS);
            let clock = Arc::new(SimClock { skew_ms: AtomicI64::new(skew_ms), last: AtomicU64::new(0) });
            let id: NodeId = name.parse().expect("a valid node id");
            let disk = Arc::new(Mutex::new(Disk::blank(origin_of(seed, index, id, 0), clock.clone(), false)));
            let mailbox = Arc::new(Mutex::new(Mailbox::default()));
            let host = Rc::new(NodeHost {
                index,
                addr: addrs[index].clone(),
                seeds: addrs.clone(),
                disk: disk.clone(),
                mailbox: mailbox.clone(),
                journal: journal.clone(),
                seed,
                boots: Cell::new(0),
            });
            sim.host(name.as_str(), move || run_node(host.clone()));
            nodes.push(NodeHandle { name: name.clone(), clock, disk, wipes: 0, mailbox });
        }
        Self { seed, sim, nodes, journal }
    }

    /// The seed the cluster was built with.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Sets `node`'s physical clock `offset_ms` away from simulated time (a clock
    /// set wrong, or corrected), far beyond the allowed offset if asked.
    pub(crate) fn set_clock_offset(&mut self, node: usize, offset_ms: i64) {
        self.note(format!("clock of {} off by {offset_ms} ms", self.nodes[node].name));
        self.nodes[node].clock.skew_ms.store(offset_ms, Ordering::Relaxed);
    }

    /// Hands `write` to `node` (it is carried out when the node next looks).
    pub(crate) fn write(&mut self, node: usize, write: ClientWrite) {
        self.nodes[node].mailbox.lock().queue.push_back(write);
    }

    /// Kills a node's software at once, mid-request if need be.
    pub(crate) fn crash(&mut self, node: usize) {
        self.note(format!("crash {}", self.nodes[node].name));
        self.sim.crash(self.nodes[node].name.as_str());
    }

    /// Starts a crashed node again over an empty store (its disk was lost and
    /// replaced), with the same node id, a new clock, and so a new origin.
    pub(crate) fn restart_empty(&mut self, node: usize) {
        let seed = self.seed;
        let handle = &mut self.nodes[node];
        handle.wipes += 1;
        let id: NodeId = handle.name.parse().expect("a valid node id");
        let origin = origin_of(seed, node, id, handle.wipes);
        *handle.disk.lock() = Disk::blank(origin, handle.clock.clone(), true);
        let handle = &self.nodes[node];
        self.note(format!("restart {} with an empty store", handle.name));
        self.sim.bounce(handle.name.as_str());
    }

    /// Runs until every node is idle and every copy is identical, checking every
    /// 50 ms of simulated time; returns when that happened, or `None` when
    /// `limit` passed first.
    pub(crate) fn run_until_converged(&mut self, limit: Duration) -> Option<Duration> {
        let until = self.sim.elapsed() + limit;
        loop {
            if self.converged() {
                let at = self.sim.elapsed();
                self.note("converged".into());
                return Some(at);
            }
            if self.sim.elapsed() >= until {
                return None;
            }
            self.run_for(Duration::from_millis(50));
        }
    }

    fn converged(&mut self) -> bool {
        let idle = (0..self.len()).all(|node| {
            let mailbox = self.nodes[node].mailbox.lock();
            mailbox.queue.is_empty() && mailbox.unanswered == 0
        });
        let running = (0..self.len()).all(|node| self.is_running(node));
        if !idle || !running {
            return false;
        }
        let replicas = self.replicas();
        // Conflict losers are compared in every run, a lost disk included.
        replicas.windows(2).all(|w| {
            w[0].digest == w[1].digest && w[0].live() == w[1].live() && w[0].conflicts == w[1].conflicts
        })
    }

    /// Every node's copy as it is now.
    pub(crate) fn replicas(&self) -> Vec<Replica> {
        self.nodes
            .iter()
            .map(|node| {
                let store = node.disk.lock().store.clone();
                Replica {
                    digest: block_on(store.digest()).expect("a memory store reads"),
                    records: block_on(store.scan("")).expect("a memory store reads"),
                    conflicts: block_on(store.conflicts("")).expect("a memory store reads"),
                }
            })
            .collect()
    }

    /// Every node's record for `key`, tombstone included.
    pub(crate) fn get(&self, key: &str) -> Vec<Option<Record>> {
        self.nodes
            .iter()
            .map(|node| block_on(node.disk.lock().store.clone().get(key)).expect("a memory store reads"))
            .collect()
    }

    /// The trace so far.
    pub(crate) fn trace(&self) -> Vec<Event> {
        self.journal.lock().clone()
    }

    /// Simulated time so far.
    pub(crate) fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }
}

impl Hosts for Cluster {
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
        let at_ms = u64::try_from(self.sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        record(&self.journal, Event::Script { at_ms, what });
    }
}

/// How every node talks to its peers: short timeouts (a partition shows up as
/// silence), and every channel dialled through turmoil's simulated TCP.
pub(crate) fn sim_transport() -> TransportConfig {
    let config = TransportConfig {
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Some(Duration::from_secs(1)),
        ..TransportConfig::default()
    };
    config.with_connector(ChannelConnector::new(|endpoint: Endpoint| {
        endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(PORT);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }))
    }))
}

/// A replicator seed per node and boot, so a restarted node does not replay
/// the choices of its previous life.
fn replicator_seed(seed: u64, index: usize, boot: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed ^ ((index as u64) << 32) ^ boot.rotate_left(48));
    rng.random()
}

/// A node's software: serve replication, run anti-entropy rounds, and carry out
/// client writes, until the host is crashed.
async fn run_node(host: Rc<NodeHost>) -> turmoil::Result {
    let boot = host.boots.get();
    host.boots.set(boot + 1);
    host.mailbox.lock().unanswered = 0;
    let disk = host.disk.lock().clone();
    let transport = sim_transport();
    let cluster: ClusterId = "simulation".parse()?;
    let replicator = AntiEntropy::builder(disk.store.clone(), disk.hlc.clone(), cluster, host.addr.clone())
        .seeds(host.seeds.clone())
        .interval(SYNC_INTERVAL)
        .transport(transport.clone())
        .rng_seed(replicator_seed(host.seed, host.index, boot))
        // Every call carries the peer token and every service requires it, as on a real node.
        .credential(PeerCredential::from_bytes([0x5e; 32]))
        .build();
    let listener = turmoil::net::TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| SimConn(stream));
        Some((conn, listener))
    });
    let server = transport
        .server()?
        .add_service(replicator.service().into_server(transport.max_message_bytes))
        .serve_with_incoming(incoming);
    let _rounds = replicator.start();
    // A store on a replaced disk that has not written yet makes its first write
    // only once its clock is past the uncertainty of every stamp issued before it
    // began, as a `Node` does (see `horizon::FirstWrite`); a first disk has no
    // predecessor whose tombstones it could meet, so it is left to write at once.
    let fresh = disk.store.digest().await?.get(disk.store.origin()) == 0;
    let first_write = (disk.replaced && fresh).then(|| FirstWrite::from_now(&disk.hlc));
    tokio::select! {
        biased;
        served = server => served?,
        () = carry_out_writes(&host, &disk, first_write, replicator.clone()) => {}
    }
    Ok(())
}

/// Takes client writes from the mailbox in order, applies each, and replicates
/// it in a task of its own (a write waiting for every node does not hold the
/// next one back, as concurrent clients would not be).
async fn carry_out_writes(
    host: &NodeHost,
    disk: &Disk,
    first_write: Option<FirstWrite>,
    replicator: AntiEntropy,
) {
    let store = &disk.store;
    loop {
        if host.mailbox.lock().queue.is_empty() {
            tokio::time::sleep(MAILBOX_POLL).await;
            continue;
        }
        if let Some(first) = first_write {
            first.wait(&disk.hlc).await;
        }
        let Some(write) = host.mailbox.lock().queue.pop_front() else {
            continue;
        };
        let batch = match &write.value {
            Some(value) => WriteBatch::new().put(write.key.clone(), value.clone()),
            None => WriteBatch::new().delete(write.key.clone()),
        };
        let records = store.apply(batch).await.expect("a valid write applies");
        for record in &records {
            self::record(
                &host.journal,
                Event::Applied { at_ms: sim_ms(), node: host.index, record: record.clone() },
            );
        }
        let version = records.last().map(Record::token).expect("a batch of one write");
        host.mailbox.lock().unanswered += 1;
        let node = host.index;
        let (journal, mailbox, replicator) = (host.journal.clone(), host.mailbox.clone(), replicator.clone());
        tokio::task::spawn_local(async move {
            let outcome = replicator
                .replicate(records, write.ack, ACK_TIMEOUT)
                .await
                .map(|report| report.acked)
                .map_err(|e| e.to_string());
            record(&journal, Event::Answered { at_ms: sim_ms(), node, version, ack: write.ack, outcome });
            mailbox.lock().unanswered -= 1;
        });
    }
}

/// A simulated TCP connection accepted by a node's server (tonic asks each
/// connection what it is connected to).
#[derive(Debug)]
pub(crate) struct SimConn(pub(crate) turmoil::net::TcpStream);

impl Connected for SimConn {
    type ConnectInfo = Option<SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.peer_addr().ok()
    }
}

impl AsyncRead for SimConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The records every node should hold at the end: per key, the greatest of all
/// applied writes under last-writer-wins (every applied write survives, since
/// stores survive crashes).
pub(crate) fn last_writer_wins(trace: &[Event]) -> BTreeMap<String, Record> {
    let mut model: BTreeMap<String, Record> = BTreeMap::new();
    for event in trace {
        if let Event::Applied { record, .. } = event {
            match model.get(&record.key) {
                Some(current) if !record.wins_over(current) => {}
                _ => {
                    model.insert(record.key.clone(), record.clone());
                }
            }
        }
    }
    model
}
