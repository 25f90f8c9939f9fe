//! [`RaftReplicator`]: the consensus [`Replicator`], and how a node joins its
//! Raft group.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::metrics::WaitError;
use openraft::{ChangeMembers, Config, LogId, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use spectrum_core::channels::ChannelCache;
use spectrum_core::{ClusterId, Hlc, MemberState, NodeId, PeerAddr, TransportConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::batcher::Batcher;
use super::codec::{Applied, Proposal, ProposalId, to_json};
use super::forward::Forwarder;
use super::log_store::{LogStore, RaftDb, blocking, open_wal};
use super::lost_state::{LOST_STATE, LostStateGate, differ};
use super::memory_log::RaftMemoryLog;
use super::network::{Method, Network, Wire};
use super::service::RaftService;
use super::state_machine::{Saves, StateMachine};
use super::tombstones::DEFAULT_TOMBSTONE_KEEP;
use super::{Raft, RaftMember, SEQ_PER_ENTRY, raft_node_id, raft_origin};
use crate::credential::{AttachToken, MAX_TOKENS, PeerCredential};
use crate::error::{PeerFailure, ReplicationError, StoreError};
use crate::handshake::Handshake;
use crate::origin::Origin;
use crate::peers::{PeerTable, blank};
use crate::proto;
use crate::record::{DEFAULT_MAX_VALUE_BYTES, Record, VersionToken};
use crate::replicator::{AckLevel, AckReport, PeerStatus, Replicator};
use crate::store::ConfigStore;
use crate::transaction::{Committed, FailedCondition, Outcome, ReplicationMode, Transaction};

/// The file Raft's log, vote and snapshot are kept in, in the data directory.
pub const RAFT_FILE: &str = "raft.redb";

/// Why `inner`'s Raft stopped on an error (see [`RaftReplicator::stopped_on_error`]).
fn stopped_on_error(inner: &Inner) -> Option<String> {
    match &inner.raft.metrics().borrow().running_state {
        Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
        Err(fatal) => Some(fatal.to_string()),
    }
}

/// How a leader's refusal to take back a removed node reads (the node that
/// asked recognises it by these words).
pub(super) const REFUSED_AS_REMOVED: &str = "was removed from the cluster";
/// How a member that does not lead answers a join, before the leader's
/// address (the joiner asks there: the leader takes a join only from the
/// joining node itself).
const ASK_THE_LEADER: &str = "ask the leader at ";
/// How a leader's refusal of a node whose id a running member has reads
/// (recognised like [`REFUSED_AS_REMOVED`]: both stand until an operator acts).
pub(super) const ID_IN_USE: &str = "is in use by a running node";
/// How long a bootstrap or join attempt waits for one peer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Between two bootstrap or join attempts.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(250);
/// Between two attempts to find a leader for a write or a read index.
const LEADER_RETRY: Duration = Duration::from_millis(50);
/// How long a leader asked to add a member waits to confirm its leadership
/// and apply up to its read index before it reads the member's record.
const JOIN_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long past its deadline a write the leader committed may wait to be
/// applied here (a follower hears of a commit with the next append or
/// heartbeat): a committed write is not reported as failed for want of it.
const APPLY_GRACE: Duration = Duration::from_secs(1);

/// Timing and compaction of a Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats (default 100 ms).
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time between these starts
    /// an election (default 800 ms to 1.6 s: generous, for shared machines).
    pub election_timeout: (Duration, Duration),
    /// A snapshot is taken once this many entries were applied since the last
    /// (default 20,000; etcd's `--snapshot-count` is 100,000 in 3.4 and 10,000
    /// in 3.6). A snapshot copies the whole store and the recent proposal ids,
    /// then writes them durably: under 16 writers, at 5,000 entries, that was
    /// about 7 % of the three nodes' CPU. Between snapshots the log keeps every
    /// entry on disk (the log's files; in memory, 20 bytes each).
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot, for followers a
    /// little behind (default 1,000); older ones are purged, and a follower
    /// further behind installs the snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(800), Duration::from_millis(1600)),
            snapshot_every: 20_000,
            keep_behind_snapshot: 1_000,
        }
    }
}

impl RaftSettings {
    fn config(&self, cluster: &ClusterId) -> Result<Config, ReplicationError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        Config {
            cluster_name: cluster.to_string(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ReplicationError::Consensus { reason: format!("invalid raft settings: {e}") })
    }
}

/// Builds a [`RaftReplicator`].
#[derive(Debug)]
pub struct RaftReplicatorBuilder {
    store: Arc<dyn ConfigStore>,
    hlc: Arc<Hlc>,
    cluster: ClusterId,
    self_addr: PeerAddr,
    seeds: Vec<PeerAddr>,
    dir: Option<PathBuf>,
    memory_log: Option<RaftMemoryLog>,
    transport: TransportConfig,
    channels: Option<Arc<ChannelCache>>,
    credential: Option<PeerCredential>,
    previous: Vec<PeerCredential>,
    settings: RaftSettings,
    tombstone_keep: u64,
}

impl RaftReplicatorBuilder {
    /// Keeps a delete's tombstone until its log entry is `entries` behind the
    /// applied index (default [`DEFAULT_TOMBSTONE_KEEP`]), then collects it;
    /// see [`tombstones`](super::tombstones) for why that is safe in Raft mode.
    pub fn tombstone_keep(mut self, entries: u64) -> Self {
        self.tombstone_keep = entries;
        self
    }

    /// Addresses of other nodes: a node with no Raft state joins the group
    /// through them, or founds it with them (see [`RaftReplicator::start`]).
    pub fn seeds(mut self, seeds: Vec<PeerAddr>) -> Self {
        self.seeds = seeds;
        self
    }

    /// Keeps the log, vote and snapshot durably in `dir`: the entries in
    /// segment files under `raft-wal/`, the rest in [`RAFT_FILE`]; without it they are kept in memory (tests and demos only: a restart
    /// loses them).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Keeps the log, vote and snapshot in `log`, which the caller holds
    /// across replicators: a simulated node's disk (see [`RaftMemoryLog`]).
    /// Takes precedence over [`data_dir`](Self::data_dir).
    pub fn memory_log(mut self, log: RaftMemoryLog) -> Self {
        self.memory_log = Some(log);
        self
    }

    /// How to talk to peers (timeouts, message size limit, TLS); peer
    /// certificates are then demanded by [`RaftReplicator::service`].
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Calls peers on the node's shared channels (see
    /// [`AntiEntropyBuilder::channels`](crate::AntiEntropyBuilder::channels)).
    pub fn channels(mut self, channels: Arc<ChannelCache>) -> Self {
        self.channels = Some(channels);
        self
    }

    /// Authenticates Raft calls both ways with `credential`, as anti-entropy does.
    pub fn credential(mut self, credential: PeerCredential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// Also sends and accepts previous cluster keys' credentials (at most three).
    pub fn previous_credentials(mut self, previous: Vec<PeerCredential>) -> Self {
        self.previous = previous.into_iter().take(MAX_TOKENS - 1).collect();
        self
    }

    /// Timing and compaction (default [`RaftSettings::default`]).
    pub fn settings(mut self, settings: RaftSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Opens the log and starts the Raft node (it takes part in elections at
    /// once if it is a member; call [`RaftReplicator::start`] to join or found
    /// a group).
    ///
    /// # Errors
    ///
    /// [`ReplicationError::Store`] when the Raft file cannot be opened (it is
    /// in use, damaged, or the disk fails); [`ReplicationError::Consensus`]
    /// when openraft refuses to start.
    pub async fn build(self) -> Result<RaftReplicator, ReplicationError> {
        let id = raft_node_id(self.store.node_id());
        let wal_dir = if self.memory_log.is_none() { self.dir.clone() } else { None };
        let db = match self.memory_log {
            Some(log) => log.db,
            None => Arc::new(open_db(self.dir.as_ref()).await?),
        };
        let log = match wal_dir {
            Some(dir) => {
                let opener = db.clone();
                // openraft's storage error is its own type, large as it is.
                #[allow(clippy::result_large_err)]
                let wal =
                    blocking(move || open_wal(&opener, &dir)).await.map_err(ReplicationError::consensus)?;
                LogStore::with_wal(db.clone(), wal, id)
            }
            None => LogStore::new(db.clone()),
        };
        let origin = raft_origin(&self.cluster);
        let reader = db.clone();
        // openraft's storage error is its own type, large as it is.
        #[allow(clippy::result_large_err)]
        let incarnation =
            blocking(move || reader.incarnation()).await.map_err(ReplicationError::consensus)?;
        let me = RaftMember {
            id: self.store.node_id().to_string(),
            addr: self.self_addr.to_string(),
            incarnation,
        };
        let config = Arc::new(self.settings.config(&self.cluster)?);
        let peers = PeerTable::new();
        let handshake = Handshake::new(self.cluster.clone(), self.store.origin().clone(), self.hlc.clone())
            .with_addr(self.self_addr.clone())
            .with_peer_table(peers.clone())
            .taking_hybrid_stamps_ahead();
        let attach = AttachToken(
            self.credential.iter().chain(&self.previous).map(|c| c.token(&self.cluster).value()).collect(),
        );
        let peer_tls = self.transport.tls.is_some();
        let channels = self.channels.unwrap_or_else(|| Arc::new(ChannelCache::new(self.transport)));
        let wire = Wire { channels, attach, handshake };
        let durable = log.durable();
        let sm = StateMachine::open(self.store.clone(), db.clone(), origin.clone())
            .map_err(ReplicationError::consensus)?
            .wait_for_disk(durable.clone());
        let saves = sm.saves();
        // Needed for safety as well as liveness: see `log_store`, "The
        // leader's own entries".
        let forget = db.clone();
        // openraft's storage error is its own type, large as it is.
        #[allow(clippy::result_large_err)]
        let forgot = blocking(move || forget.forget_leadership(id)).await;
        forgot.map_err(ReplicationError::consensus)?;
        let raft = Raft::new(
            id,
            config,
            Network { wire: wire.clone(), durable, without_stream: Arc::default() },
            log,
            sm,
        )
        .await
        .map_err(ReplicationError::consensus)?;
        let holds_a_group = raft.is_initialized().await.map_err(ReplicationError::consensus)?;
        let batcher = Batcher::start(raft.clone());
        let mut seeds = self.seeds;
        seeds.sort();
        seeds.dedup();
        seeds.retain(|s| *s != self.self_addr);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            raft,
            db: Arc::downgrade(&db),
            batcher,
            forwarder: Forwarder::new(wire.clone(), stop.subscribe()),
            wire,
            me,
            id,
            node: self.store.node_id().clone(),
            store: Arc::downgrade(&self.store),
            left: AtomicBool::new(false),
            join_refused: Mutex::new(None),
            // A node without seeds has no group to ask: it founds its own.
            lost_state: LostStateGate::new(holds_a_group || seeds.is_empty()),
            probe_errors: Mutex::new(Vec::new()),
            joined: AtomicBool::new(false),
            seeds,
            hlc: self.hlc,
            origin,
            cluster: self.cluster,
            peers,
            peer_tls,
            credential: self.credential,
            previous: self.previous,
            stop,
            tombstone_keep: self.tombstone_keep,
            saves,
        });
        let sweeper = inner.clone();
        tokio::spawn(async move { sweeper.sweep_tombstones().await });
        let prober = inner.clone();
        tokio::spawn(async move { prober.keep_in_touch().await });
        Ok(RaftReplicator { inner })
    }
}

/// Opens the Raft file in `dir`, or an in-memory one, waiting (up to 5 s)
/// while a previous incarnation of this node in the same process still holds it.
async fn open_db(dir: Option<&PathBuf>) -> Result<RaftDb, ReplicationError> {
    let Some(dir) = dir else {
        return RaftDb::in_memory().map_err(|e| storage_error("an in-memory raft log", e));
    };
    let path = dir.join(RAFT_FILE);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = path.clone();
        let opened = tokio::task::spawn_blocking(move || RaftDb::open(&p))
            .await
            .map_err(|e| ReplicationError::Consensus { reason: format!("opening the raft log: {e}") })?;
        match opened {
            Err(::redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(::redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse { path: path.display().to_string() }.into());
            }
            other => return other.map_err(|e| storage_error(&path.display().to_string(), e)),
        }
    }
}

fn storage_error(subject: &str, e: ::redb::DatabaseError) -> ReplicationError {
    StoreError::Storage { subject: subject.to_owned(), verb: "open", source: Box::new(e) }.into()
}

/// A forwarded write that the leader at `addr` may have taken before `e`.
fn unknown_outcome(addr: &PeerAddr, e: &dyn std::fmt::Display) -> ReplicationError {
    ReplicationError::Consensus {
        reason: format!(
            "the write was forwarded to the leader at {addr}, which may have committed it before {e}: its \
             outcome is unknown (read the key to find out)"
        ),
    }
}

/// A write this node's Raft may have appended before it stopped with `e`.
fn stopped_with_the_write(e: &dyn std::fmt::Display) -> ReplicationError {
    ReplicationError::Consensus {
        reason: format!(
            "this node's Raft stopped ({e}) with the write perhaps in its log, which the next leader may \
             commit: its outcome is unknown (read the key to find out)"
        ),
    }
}

/// A write the leader committed at `index` that this node did not apply in
/// time (`e`): it took effect, and must not be sent again as if it failed.
fn committed_not_applied(index: u64, e: &dyn std::fmt::Display) -> ReplicationError {
    ReplicationError::Consensus {
        reason: format!(
            "the write was committed (log index {index}) but this node has not applied it yet ({e}): it \
             took effect; do not send it again (read the key through another node to see it)"
        ),
    }
}

/// A write proposed and not committed before its deadline.
fn not_committed_in_time() -> ReplicationError {
    ReplicationError::Consensus {
        reason: "the write was proposed but not committed in time: its outcome is unknown (read the key to \
                 find out)"
            .into(),
    }
}

/// A forwarded write the leader at `addr` may have taken before `e`: noted
/// (it is proposed again, under its id), and the error to give if no later
/// attempt is answered.
fn maybe_taken(addr: &PeerAddr, e: &dyn std::fmt::Display) -> ReplicationError {
    debug!(peer = %addr, error = %e, "a forwarded write may have been taken; proposing it again");
    unknown_outcome(addr, e)
}

/// The consensus [`Replicator`] (Raft, on openraft). See the [module docs](super).
///
/// Clones share one Raft node.
#[derive(Debug, Clone)]
pub struct RaftReplicator {
    pub(super) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) raft: Raft,
    /// The Raft file (vote, purge mark, position, snapshot); weak, as `store`.
    pub(crate) db: Weak<RaftDb>,
    /// This node's proposals, and those forwarded to it, packed into entries.
    pub(crate) batcher: Batcher,
    pub(crate) wire: Wire,
    /// This node's streams of proposals to the leader.
    forwarder: Forwarder,
    pub(crate) me: RaftMember,
    pub(crate) id: u64,
    /// This node's id.
    pub(crate) node: NodeId,
    /// The node's store (the state machine's), for its own membership record
    /// and tombstone collection; weak, so that a stopped node's file is
    /// released even while a handle on its replicator lives on.
    pub(crate) store: Weak<dyn ConfigStore>,
    /// Set once this node [left](RaftReplicator::leave) the group: it then
    /// refuses writes and consistent reads.
    pub(crate) left: AtomicBool,
    /// Why the group last refused to take this node (back), until it does.
    pub(super) join_refused: Mutex<Option<String>>,
    /// Whether this node may answer Vote, AppendEntries and InstallSnapshot
    /// (see `lost_state`).
    pub(super) lost_state: LostStateGate,
    /// What the seeds that failed this node's last probe said (`addr: error`):
    /// a seed that refuses its credential (another cluster's key) or its
    /// certificate answers, just not as a member would.
    probe_errors: Mutex<Vec<String>>,
    /// Set once this node's start found it a member (see [`RaftReplicator::start`]).
    pub(super) joined: AtomicBool,
    seeds: Vec<PeerAddr>,
    hlc: Arc<Hlc>,
    pub(crate) origin: Origin,
    pub(crate) cluster: ClusterId,
    pub(crate) peers: PeerTable,
    pub(crate) peer_tls: bool,
    pub(crate) credential: Option<PeerCredential>,
    pub(crate) previous: Vec<PeerCredential>,
    pub(crate) stop: watch::Sender<bool>,
    /// Entries a tombstone outlives (see [`tombstones`](super::tombstones)).
    pub(crate) tombstone_keep: u64,
    /// The state machine's saves of its position, which a shutdown waits for.
    saves: Saves,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftReplicator").field("me", &self.me).field("id", &self.id).finish_non_exhaustive()
    }
}

/// What the group records of a node whose Raft file holds no group.
enum RecordedVoter {
    /// Not a voter under another incarnation (or recorded before incarnations).
    No,
    /// A voter at this node's address under another incarnation: this node
    /// lost its Raft state, and the reason says what to do.
    LostState(String),
    /// A voter under another incarnation at another address.
    Elsewhere,
}

/// What a node says about itself to a bootstrapping peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProbeAnswer {
    pub(crate) member: RaftMember,
    pub(crate) initialized: bool,
    /// The group configuration the answering node follows (absent from the
    /// answers of nodes older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<GroupView>,
    /// Whether the answering node answers Vote, AppendEntries and
    /// InstallSnapshot (see `lost_state`; absent, from older nodes: it does).
    #[serde(default = "takes_part_by_default")]
    pub(crate) takes_part: bool,
}

fn takes_part_by_default() -> bool {
    true
}

/// One node's view of its Raft group's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupView {
    /// The index of the log entry that set the configuration (0: none yet).
    pub(crate) index: u64,
    /// The node ids in it, voters and learners.
    pub(crate) members: Vec<String>,
    /// Its voters as recorded (absent from the answers of nodes older than
    /// this field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) voters: Vec<RaftMember>,
}

impl GroupView {
    /// Whether this view shows `node` out of the group, given `node`'s own
    /// configuration (set at `index`, listing `node` or not): it leaves `node`
    /// out, and is newer than `node`'s own (the group changed without `node`
    /// while it was away: configurations follow one another in the log, so a
    /// later entry means a later change) or `node`'s own leaves it out too (it
    /// saw its removal through, as a removed leader does).
    pub(super) fn excludes(&self, node: &str, index: u64, listed_by_own: bool) -> bool {
        !self.members.iter().any(|m| m == node) && (self.index > index || !listed_by_own)
    }

    /// Whether this view has `node` as a learner only. Every member is a
    /// voter once its join completes, so a learner left so (the join's
    /// second step, from learner to voter, failed: a CI run left a node taken
    /// back after a removal a learner for good) asks to join again. `false`
    /// for views of older nodes, which list no voters.
    pub(super) fn has_as_learner_only(&self, node: &str) -> bool {
        !self.voters.is_empty() && self.members.iter().any(|m| m == node) && !self.has_as_voter(node)
    }

    /// Whether this view lists `node` among its voters (`false` for views of
    /// older nodes, which list none).
    pub(super) fn has_as_voter(&self, node: &str) -> bool {
        self.voters.iter().any(|v| v.id == node)
    }
}

/// The leader's refusal to take back a node an operator removed, when
/// `error` is one (the answer crosses the wire as text, in the join answer
/// older nodes send too).
pub(super) fn refused_as_removed(error: &ReplicationError) -> Option<&str> {
    match error {
        ReplicationError::Consensus { reason }
            if reason.contains(REFUSED_AS_REMOVED)
                || reason.contains(ID_IN_USE)
                || reason.contains(LOST_STATE) =>
        {
            Some(reason)
        }
        _ => None,
    }
}

/// A client write's answer from the leader.
pub(crate) type ForwardAnswer = super::batcher::Answer;
/// A read index's answer from the leader.
pub(crate) type ReadIndexAnswer =
    Result<Option<LogId<u64>>, RaftError<u64, CheckIsLeaderError<u64, RaftMember>>>;

impl RaftReplicator {
    /// Starts building the Raft replicator of the node whose copy is `store`,
    /// stamping with `hlc`, of `cluster`, reached at `self_addr`.
    pub fn builder(
        store: Arc<dyn ConfigStore>,
        hlc: Arc<Hlc>,
        cluster: ClusterId,
        self_addr: PeerAddr,
    ) -> RaftReplicatorBuilder {
        RaftReplicatorBuilder {
            store,
            hlc,
            cluster,
            self_addr,
            seeds: Vec::new(),
            dir: None,
            memory_log: None,
            transport: TransportConfig::default(),
            channels: None,
            credential: None,
            previous: Vec::new(),
            settings: RaftSettings::default(),
            tombstone_keep: DEFAULT_TOMBSTONE_KEEP,
        }
    }

    /// The server side, to serve beside the node's other services with
    /// [`RaftService::into_server`].
    pub fn service(&self) -> RaftService {
        RaftService::new(self.inner.clone())
    }

    /// The table of peers this node's Raft calls have talked to.
    pub fn peer_table(&self) -> &PeerTable {
        &self.inner.peers
    }

    /// Joins the Raft group in the background, unless this node is a member
    /// already (its log says so): through any seed that belongs to a group
    /// (the leader adds it as a learner, then as a voter); or, when no seed
    /// belongs to one yet, every seed answered and this node's id is the
    /// smallest, by founding the group with itself and every seed as voters.
    /// A node with no seeds founds a group of one. Resolves `true` once it is
    /// a member.
    pub fn start(&self) -> JoinHandle<bool> {
        let inner = self.inner.clone();
        let mut stop = inner.stop.subscribe();
        tokio::spawn(async move {
            let mut refusals: u32 = 0;
            let mut failures: u32 = 0;
            loop {
                match inner.try_join().await {
                    Ok(true) => {
                        inner.in_the_group();
                        inner.joined.store(true, Ordering::Release);
                        return true;
                    }
                    Ok(false) => {
                        if failures % 240 == 20 {
                            let seeds: Vec<String> = inner.seeds.iter().map(ToString::to_string).collect();
                            let errors = inner.probe_errors.lock().clone();
                            warn!(node = %inner.me.id, ?seeds, ?errors, "not in the raft group yet: no seed answered as a member of a group, and the group cannot be founded until every seed answers");
                        }
                        failures += 1;
                    }
                    Err(e) => match refused_as_removed(&e) {
                        // Another running node has this id: this process must
                        // never join, not even once that node stops (it would
                        // take its voter seat with an empty log).
                        Some(reason) if reason.contains(ID_IN_USE) => {
                            error!(node = %inner.me.id, %reason, "the raft group refuses this node; it will not ask again (stop this process)");
                            *inner.join_refused.lock() = Some(reason.to_owned());
                            return false;
                        }
                        Some(reason) => {
                            // Said once a minute: a removed node waits here until undrained.
                            if refusals % 240 == 0 && reason.contains(LOST_STATE) {
                                error!(node = %inner.me.id, %reason, "this node takes no part in the raft group");
                            } else if refusals % 240 == 0 {
                                warn!(node = %inner.me.id, %reason, "the raft group refuses this node");
                            }
                            refusals += 1;
                            *inner.join_refused.lock() = Some(reason.to_owned());
                        }
                        None => {
                            // Said after about 5 s, then once a minute: a node
                            // whose seeds do not answer, or refuse it (another
                            // cluster's key), would otherwise be silent.
                            if failures % 240 == 20 {
                                warn!(node = %inner.me.id, error = %e, hint = e.mode_hint(), "not in the raft group yet: joining keeps failing");
                            } else {
                                debug!(error = %e, "raft bootstrap attempt failed");
                            }
                            failures += 1;
                        }
                    },
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return false,
                    () = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
                }
            }
        })
    }

    /// Waits up to `timeout` until this node is a member of an initialized
    /// group that has a leader; whether it is.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        let mut metrics = self.inner.raft.metrics();
        tokio::time::timeout(timeout, metrics.wait_for(|m| m.current_leader.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The node id of the current leader, as this node knows it.
    pub fn leader(&self) -> Option<String> {
        let m = self.inner.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.nodes().find(|(id, _)| **id == leader).map(|(_, n)| n.id.clone())
    }

    /// Why the group refuses to take this node (back), while it does: an
    /// operator removed it while it was down, and has not undrained it since.
    /// `None` once it is a member, and while it is still finding out.
    pub fn join_refused(&self) -> Option<String> {
        self.inner.join_refused.lock().clone()
    }

    /// Why this node's Raft stopped on an error, if it did: openraft stops a
    /// node whose log or state machine cannot be written (a full disk), for
    /// good; it takes no further part in the group until it is restarted.
    /// `None` while it runs, and after a clean shutdown.
    pub fn stopped_on_error(&self) -> Option<String> {
        stopped_on_error(&self.inner)
    }

    /// [`stopped_on_error`](Self::stopped_on_error) as a function that does
    /// not keep this node alive (it answers `None` once the node is dropped):
    /// for a readiness check held by what the node holds.
    pub fn stopped_on_error_probe(&self) -> impl Fn() -> Option<String> + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        move || stopped_on_error(&*inner.upgrade()?)
    }

    /// What the seeds answered this node's last probes with, when they
    /// answered with errors (`ADDR: error`, one per seed; empty when each
    /// answered): why a node that is not in the group yet stays out, such as
    /// seeds of another cluster, or with another cluster key. A function that
    /// does not keep this node alive (empty once the node is dropped), as
    /// [`stopped_on_error_probe`](Self::stopped_on_error_probe).
    pub fn probe_errors_probe(&self) -> impl Fn() -> Vec<String> + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        move || inner.upgrade().map(|inner| inner.probe_errors.lock().clone()).unwrap_or_default()
    }

    /// The incarnation of this node's Raft file: a number drawn when the file
    /// was created empty (never 0), which the group records with the member
    /// ([`RaftMember::incarnation`]). A node back on an empty disk has a new
    /// one, and takes no part until it is removed and joins anew.
    pub fn incarnation(&self) -> u64 {
        self.inner.me.incarnation
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The node ids of the voters, as this node knows them.
    pub fn voters(&self) -> Vec<String> {
        let m = self.inner.raft.metrics().borrow().clone();
        let voters: BTreeSet<u64> = m.membership_config.voter_ids().collect();
        m.membership_config.nodes().filter(|(id, _)| voters.contains(id)).map(|(_, n)| n.id.clone()).collect()
    }

    /// The index of the last entry this node applied.
    pub fn applied_index(&self) -> u64 {
        self.inner.raft.metrics().borrow().last_applied.map_or(0, |l| l.index)
    }

    /// The index of the last snapshot this node holds.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow().snapshot.map(|l| l.index)
    }

    /// Takes a snapshot now (normally taken every
    /// [`snapshot_every`](RaftSettings::snapshot_every) entries).
    ///
    /// # Errors
    ///
    /// [`ReplicationError::Consensus`] when the Raft node has stopped.
    pub async fn trigger_snapshot(&self) -> Result<(), ReplicationError> {
        self.inner.raft.trigger().snapshot().await.map_err(ReplicationError::consensus)
    }

    /// Stops the Raft node (and the join task), syncs the store (so what was
    /// applied is on its disk, not only in the log) and releases its files.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        if let Err(e) = self.inner.raft.shutdown().await {
            debug!(error = %e, "raft did not shut down cleanly");
        }
        // A save of the applied position may still be running on its own task.
        self.inner.saves.idle().await;
        // What was applied is on the store's disk, not only in the log.
        if let Some(store) = self.inner.store.upgrade()
            && let Err(e) = store.sync().await
        {
            warn!(error = %e, "the store could not be synced at shutdown");
        }
    }
}

impl Inner {
    /// [`ReplicationError::NotAMember`] once this node left the group.
    fn refuse_if_left(&self) -> Result<(), ReplicationError> {
        if self.left.load(Ordering::Acquire) {
            return Err(ReplicationError::NotAMember { node: self.node.clone() });
        }
        Ok(())
    }

    /// One attempt to become a member; whether this node is one.
    async fn try_join(&self) -> Result<bool, ReplicationError> {
        let initialized = self.raft.is_initialized().await.map_err(ReplicationError::consensus)?;
        // A node that left asks an initialized seed to take it back, whatever
        // its own (possibly stale) copy of the membership says.
        let left = initialized && self.recorded_as_left().await;
        // Probing the seeds first also tells them where this node is now, and
        // this node where they are (see `Wire::resolve`).
        let probes = self.seeds.iter().map(|addr| async move {
            let call = proto::RaftCall::default();
            (addr, self.wire.call_json::<ProbeAnswer>(addr, Method::Probe, call, PROBE_TIMEOUT).await)
        });
        let answers = futures::future::join_all(probes).await;
        *self.probe_errors.lock() =
            answers.iter().filter_map(|(addr, a)| a.as_ref().err().map(|e| format!("{addr}: {e}"))).collect();
        let members: Vec<&PeerAddr> = answers
            .iter()
            .filter(|(_, a)| a.as_ref().is_ok_and(|a| a.initialized))
            .map(|(addr, _)| *addr)
            .collect();
        // A node removed (or that left) while it was down still finds itself in
        // the configuration its own log holds; a member's newer one tells.
        // So does its own, when it saw its removal through (a removed leader
        // commits it): only a leader can take it back then, and its own Raft
        // node, which knows of none, must not be asked.
        if !initialized {
            match self.recorded_voter(&answers) {
                RecordedVoter::LostState(reason) => {
                    self.lost_state.shut();
                    return Err(ReplicationError::Consensus { reason });
                }
                // The leader judges, and refuses either way: another process
                // running under this id there, or this node moved and lost its
                // state. Until then it answers no vote or entry.
                RecordedVoter::Elsewhere => {}
                // A new node (a member of the group answered without a
                // record of it as a voter), or a group being founded (every
                // seed answered, none in a group yet): it may answer votes and
                // entries, and joins as usual. (Calls from a group that
                // records it under another incarnation are refused anyway.)
                RecordedVoter::No => {
                    let group_seen = answers.iter().any(|(_, a)| a.as_ref().is_ok_and(|a| a.initialized));
                    let founding = !answers.is_empty()
                        && answers.iter().all(|(_, a)| a.as_ref().is_ok_and(|a| !a.initialized));
                    if group_seen || founding {
                        self.lost_state.open();
                    }
                }
            }
        }
        let (own_index, listed) = self.own_configuration();
        let excluded = initialized
            && (!listed
                || answers
                    .iter()
                    .filter_map(|(_, a)| a.as_ref().ok()?.group.as_ref())
                    .any(|group| group.excludes(&self.me.id, own_index, listed)));
        if initialized && !left && !excluded && self.known_at_own_address() && self.is_voter() {
            return Ok(true);
        }
        if left || excluded || (!initialized && !members.is_empty()) {
            if excluded {
                debug!(node = %self.me.id, "the raft group changed without this node while it was away; asking to join again");
                // Its campaigns would only raise terms the group must then
                // catch up with (a leader steps down on seeing one).
                self.raft.runtime_config().elect(false);
            }
            return self.join_through(&members).await;
        }
        if initialized {
            // A member restarted at another address has the leader record it,
            // and one left a learner (its promotion failed) has it promoted.
            return match self.add_member(self.me.clone()).await {
                Ok(()) => Ok(true),
                Err(reason) => Err(ReplicationError::Consensus { reason }),
            };
        }
        if self.seeds.is_empty() {
            return self.found(BTreeMap::new()).await;
        }
        let mut others = BTreeMap::new();
        let mut all_answered = true;
        for (addr, answer) in answers {
            match answer {
                Ok(a) => {
                    others.insert(
                        raft_node_id(&a.member.id.parse().map_err(ReplicationError::consensus)?),
                        a.member,
                    );
                }
                Err(e) => {
                    debug!(peer = %addr, error = %e, "bootstrap probe failed");
                    all_answered = false;
                }
            }
        }
        if all_answered && others.values().all(|m| self.me.id < m.id) {
            return self.found(others).await;
        }
        Ok(false)
    }

    /// Whether the membership this node holds has it at its current address
    /// (and incarnation: a record from before incarnations gets this node's).
    fn known_at_own_address(&self) -> bool {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.nodes().any(|(id, n)| *id == self.id && *n == self.me)
    }

    /// What the seeds' groups record of this node, whose Raft file holds no
    /// group, as a voter (see `lost_state`).
    fn recorded_voter(
        &self,
        answers: &[(&PeerAddr, Result<ProbeAnswer, ReplicationError>)],
    ) -> RecordedVoter {
        let Some((seed, recorded)) = answers.iter().find_map(|(addr, answer)| {
            let answer = answer.as_ref().ok().filter(|a| a.initialized)?;
            let voter = answer.group.as_ref()?.voters.iter().find(|v| v.id == self.me.id)?;
            differ(voter.incarnation, self.me.incarnation).then_some((addr, voter))
        }) else {
            return RecordedVoter::No;
        };
        if recorded.addr != self.me.addr {
            return RecordedVoter::Elsewhere;
        }
        let node = &self.me.id;
        RecordedVoter::LostState(format!(
            "node {node} {LOST_STATE}: the group ({seed} answered) has it as a voter whose Raft file is \
             incarnation {:016x}, and this node's Raft file is a new one ({:016x}: a new disk or an emptied \
             data_dir). A voter that forgot its votes and log could help elect two leaders or lose \
             committed writes, so it answers no vote or entry until it joins anew: run `spectrum node \
             remove {node}` and then `spectrum node undrain {node}` through another node, and it joins \
             again as a new member, copying the log",
            recorded.incarnation, self.me.incarnation
        ))
    }

    /// The index of the entry that set the configuration this node holds
    /// (0: none), and whether that configuration lists this node.
    pub(super) fn own_configuration(&self) -> (u64, bool) {
        let own = self.raft.metrics().borrow().membership_config.clone();
        (own.log_id().map_or(0, |l| l.index), own.nodes().any(|(id, _)| *id == self.id))
    }

    /// This node is a member again: no refusal to report, and it stands for
    /// election.
    pub(super) fn in_the_group(&self) {
        self.lost_state.open();
        self.join_refused.lock().take();
        self.raft.runtime_config().elect(true);
    }

    /// Whether the configuration this node holds has it as a voter (every
    /// member is one once its join completes).
    pub(super) fn is_voter(&self) -> bool {
        self.raft.metrics().borrow().membership_config.voter_ids().any(|v| v == self.id)
    }

    /// Founds the group with this node and `others` as voters.
    async fn found(&self, others: BTreeMap<u64, RaftMember>) -> Result<bool, ReplicationError> {
        let mut members = others;
        members.insert(self.id, self.me.clone());
        info!(node = %self.me.id, voters = members.len(), "founding the raft group");
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            // Someone else's leader reached us first: we are a member.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(true),
            Err(e) => Err(ReplicationError::consensus(e)),
        }
    }

    /// Asks each of `members` in turn to add this node to its group, until
    /// one does: only the leader can (a follower may not ask on another
    /// node's behalf), and a probe does not say which one leads.
    pub(super) async fn join_through(&self, members: &[&PeerAddr]) -> Result<bool, ReplicationError> {
        let mut last = None;
        for addr in members {
            match self.ask_to_join(addr).await {
                Ok(joined) => return Ok(joined),
                // The leader's word: the others would only say they are not it.
                Err(e) if refused_as_removed(&e).is_some() => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        last.map_or(Ok(false), Err)
    }

    /// Asks the member at `addr` to add this node to its group.
    async fn ask_to_join(&self, addr: &PeerAddr) -> Result<bool, ReplicationError> {
        let consensus = |reason| ReplicationError::Consensus { reason };
        match self.join_call(addr).await? {
            Ok(()) => Ok(true),
            // A member that does not lead names the leader: asked once more, there.
            Err(reason) => {
                match reason.split_once(ASK_THE_LEADER).and_then(|(_, a)| a.parse::<PeerAddr>().ok()) {
                    Some(leader) => self.join_call(&leader).await?.map(|()| true).map_err(consensus),
                    None => Err(consensus(reason)),
                }
            }
        }
    }

    /// One Join call to `addr`: its answer, or why there was none.
    async fn join_call(&self, addr: &PeerAddr) -> Result<Result<(), String>, ReplicationError> {
        let call = proto::RaftCall { json: to_json(&self.me), ..proto::RaftCall::default() };
        let answer: Result<(), String> =
            self.wire.call_json(addr, Method::Join, call, Duration::from_secs(30)).await?;
        if answer.is_ok() {
            info!(node = %self.me.id, via = %addr, "joined the raft group");
        }
        Ok(answer)
    }

    /// Adds `member` to the group: on the leader, as a learner (waiting until
    /// it has caught up), then as a voter; elsewhere, by asking the leader.
    ///
    /// The leader refuses a node whose membership record says an operator
    /// removed it, until an operator undrains it (`spectrum node undrain`).
    /// It reads that record at a read index: a leader elected a moment ago
    /// may not have applied yet what its predecessor committed (the removal
    /// among it), and must not take the node back on a stale copy.
    pub(crate) async fn add_member(&self, member: RaftMember) -> Result<(), String> {
        let node: NodeId = member.id.parse().map_err(|e: spectrum_core::InvalidId| e.to_string())?;
        let id = raft_node_id(&node);
        match tokio::time::timeout(JOIN_READ_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                return self.join_via(f, member).await;
            }
            Ok(Err(e)) => {
                return Err(format!("the leader could not confirm its copy is current ({e}); retry"));
            }
            Err(_) => {
                return Err(format!("the leader's copy was not current within {JOIN_READ_TIMEOUT:?}; retry"));
            }
        }
        if self.recorded_state(&node).await == Some(MemberState::Removed) {
            return Err(format!(
                "node {node} {REFUSED_AS_REMOVED}; run `spectrum node undrain {node}` through another \
                 node to let it return"
            ));
        }
        // A member back at another address, unless its old address still
        // answers with its id: then two processes claim one id, and taking
        // the newcomer would put the running one out.
        let known = self.raft.metrics().borrow().membership_config.clone();
        let old = known.nodes().find(|(n, k)| **n == id && k.addr != member.addr).map(|(_, k)| k.clone());
        if let Some(addr) = old.and_then(|k| k.addr.parse::<PeerAddr>().ok()) {
            let call = proto::RaftCall::default();
            let answer = self.wire.call_json::<ProbeAnswer>(&addr, Method::Probe, call, PROBE_TIMEOUT).await;
            if answer.is_ok_and(|a| a.member.id == member.id) {
                return Err(format!(
                    "node id {node} {ID_IN_USE} at {addr}; give the new node another id, or stop that one first"
                ));
            }
        }
        // The leader's own check of what the joiner checks itself (see
        // `lost_state`): a voter back with a new Raft file must first be
        // removed, then let return.
        let recorded =
            known.membership().get_node(&id).filter(|_| known.voter_ids().any(|v| v == id)).cloned();
        if let Some(recorded) = recorded.filter(|r| differ(r.incarnation, member.incarnation)) {
            return Err(format!(
                "node {node} {LOST_STATE}: it is a voter whose Raft file is incarnation {:016x}, and it asks \
                 with a new one ({:016x}); run `spectrum node remove {node}` and then `spectrum node \
                 undrain {node}` through another node, and it joins again as a new member",
                recorded.incarnation, member.incarnation
            ));
        }
        // A learner back with a new Raft file (a voter's was refused above):
        // taken out and added again, so the leader forgets what it had
        // replicated to it (a learner has no vote to keep).
        let stale_learner =
            known.membership().get_node(&id).is_some_and(|r| differ(r.incarnation, member.incarnation));
        if stale_learner {
            let out = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
            match self.raft.change_membership(out, false).await {
                Ok(_) => {
                    info!(node = %node, "a learner back with a new raft file: taken out to be added anew")
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return self.join_via(f, member).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let member = match known.membership().get_node(&id) {
            // A joiner from before incarnations keeps the record's.
            Some(r) if member.incarnation == 0 && !stale_learner => {
                RaftMember { incarnation: r.incarnation, ..member }
            }
            _ => member,
        };
        match self.raft.add_learner(id, member.clone(), true).await {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                return self.join_via(f, member).await;
            }
            Err(e) => return Err(e.to_string()),
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let moved = |known: &RaftMember| {
            // (A record from before incarnations, 0, gets the joiner's.)
            known.addr != member.addr || (member.incarnation != 0 && known.incarnation != member.incarnation)
        };
        if membership.nodes().any(|(n, known)| *n == id && moved(known)) {
            // A member back at another address, or recorded before
            // incarnations (a joiner from before them keeps the record's).
            let moved = ChangeMembers::SetNodes(BTreeMap::from([(id, member.clone())]));
            if let Err(e) = self.raft.change_membership(moved, true).await {
                return Err(e.to_string());
            }
        }
        if membership.voter_ids().any(|v| v == id) {
            return Ok(());
        }
        match self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => self.join_via(f, member).await,
            Err(e) => Err(e.to_string()),
        }
    }

    async fn join_via(&self, f: ForwardToLeader<u64, RaftMember>, member: RaftMember) -> Result<(), String> {
        let Some(addr) = f.leader_node.and_then(|n| self.wire.resolve(&n)) else {
            return Err("no leader is known yet; retry".into());
        };
        if member.id != self.me.id {
            // The leader takes a join only from the node itself (its header
            // must name the member): the joiner is told where to ask.
            return Err(format!("this node does not lead; {ASK_THE_LEADER}{addr}"));
        }
        let call = proto::RaftCall { json: to_json(&member), ..proto::RaftCall::default() };
        match self
            .wire
            .call_json::<Result<(), String>>(&addr, Method::Join, call, Duration::from_secs(30))
            .await
        {
            Ok(answer) => answer,
            Err(e) => Err(e.to_string()),
        }
    }

    /// This node's answer to a bootstrap probe.
    pub(crate) async fn probe(&self) -> ProbeAnswer {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let group = GroupView {
            index: membership.log_id().map_or(0, |l| l.index),
            members: membership.nodes().map(|(_, n)| n.id.clone()).collect(),
            voters: membership
                .voter_ids()
                .filter_map(|id| membership.membership().get_node(&id).cloned())
                .collect(),
        };
        ProbeAnswer {
            member: self.me.clone(),
            initialized: self.raft.is_initialized().await.unwrap_or(false),
            group: Some(group),
            takes_part: self.lost_state.is_open(),
        }
    }

    /// Proposes `proposal` through this node's queue (see `batcher`): decided
    /// when this node leads, `ForwardToLeader` otherwise.
    pub(crate) async fn submit(&self, proposal: Proposal) -> ForwardAnswer {
        match self.batcher.propose(proposal).await {
            Some(answer) => answer,
            None => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
        }
    }

    /// Commits `proposal` on the leader, this node or another, and waits until
    /// this node has applied it.
    ///
    /// A forwarded attempt can end without saying whether the leader took it:
    /// the connection broke after the call was sent, no answer came in time,
    /// the leader's Raft stopped with the proposal queued or appended (and the
    /// next leader may commit that entry), or it answered that it is not the
    /// leader (openraft says so too for an entry a new leader overwrote, which
    /// may live on in another node's log and commit). Such an attempt is made again,
    /// to whichever node leads by then, until the deadline: every attempt
    /// carries the proposal's id, and the state machine decides an id once
    /// and answers a retry with the first decision (see `recent`). Only when
    /// the deadline passes after such an attempt is the outcome unknown. A
    /// write the leader committed is waited for here up to [`APPLY_GRACE`]
    /// past the deadline, then reported as committed and not yet applied here,
    /// never as failed.
    async fn propose(
        &self,
        proposal: Proposal,
        deadline: Instant,
    ) -> Result<(u64, Applied), ReplicationError> {
        // The last attempt the leader may have taken, as the error to give if
        // no later one is answered.
        let mut unsure: Option<ReplicationError> = None;
        // A follower that knows the leader forwards at once: its own Raft would
        // only refuse with the same answer, a few task hops later. Later
        // attempts ask it, as its view may be stale.
        let mut known = self.other_leader();
        loop {
            let leader = match known.take() {
                Some(leader) => Some(leader),
                None => match self.submit_until(proposal.clone(), deadline).await {
                    Some(Ok(done)) => return Ok((done.index, done.applied)),
                    Some(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => f.leader_node,
                    // This node's Raft stopped with the write perhaps appended
                    // (a failed fsync, say), and the next leader may commit it.
                    Some(Err(e @ RaftError::Fatal(_))) => {
                        return Err(unsure.unwrap_or_else(|| stopped_with_the_write(&e)));
                    }
                    Some(Err(e)) => return Err(unsure.unwrap_or_else(|| ReplicationError::consensus(e))),
                    None => return Err(unsure.unwrap_or_else(not_committed_in_time)),
                },
            };
            if let Some(addr) = leader.and_then(|n| self.wire.resolve(&n)) {
                let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                match self.forwarder.forward(&addr, &proposal, left).await {
                    Ok(Ok(done)) => {
                        // Committed: a slow apply here is waited for a little
                        // past the deadline, and reported as what it is.
                        let grace = deadline.max(Instant::now()) + APPLY_GRACE;
                        if let Err(e) = self.wait_applied(done.index, grace).await {
                            return Err(committed_not_applied(done.index, &e));
                        }
                        return Ok((done.index, done.applied));
                    }
                    // Not the leader, or it dropped the entry when a new leader
                    // overwrote it: openraft answers both alike, and an entry
                    // overwritten on one node may live on another and commit
                    // (five nodes or more), so the write may have been taken.
                    Ok(Err(e @ RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                        unsure = Some(maybe_taken(&addr, &e));
                    }
                    // It could not be dialled: the write was not taken.
                    Err(ReplicationError::Peer { failure: PeerFailure::Unreachable { .. }, .. }) => {}
                    // Its Raft stopped with the write perhaps appended.
                    Ok(Err(e @ RaftError::Fatal(_))) => unsure = Some(maybe_taken(&addr, &e)),
                    // The call went and its answer did not come back.
                    Err(e) if e.retryable() => unsure = Some(maybe_taken(&addr, &e)),
                    // The leader refused the call itself (its header: another
                    // cluster, a skewed clock, no credential): not taken.
                    Err(e @ ReplicationError::Peer { failure: PeerFailure::Refused { .. }, .. }) => {
                        return Err(unsure.unwrap_or(e));
                    }
                    // An answer came back that this node would not admit
                    // (malformed, another cluster, a skewed clock): the
                    // leader may have taken the write.
                    Err(e) => return Err(unknown_outcome(&addr, &e)),
                    Ok(Err(e)) => return Err(unsure.unwrap_or_else(|| ReplicationError::consensus(e))),
                }
            }
            if Instant::now() + LEADER_RETRY > deadline {
                return Err(unsure.unwrap_or_else(|| ReplicationError::Consensus {
                    reason: "no leader answered in time".into(),
                }));
            }
            tokio::time::sleep(LEADER_RETRY).await;
        }
    }

    /// [`submit`](Self::submit), waiting until `deadline` (`None` after it).
    /// A leader that lost its majority waits for it without end: the write's
    /// deadline bounds that wait too (the entry may have been appended, so its
    /// outcome is then unknown).
    async fn submit_until(&self, proposal: Proposal, deadline: Instant) -> Option<ForwardAnswer> {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, self.submit(proposal)).await.ok()
    }

    /// The leader this node knows of, when it is another node.
    fn other_leader(&self) -> Option<RaftMember> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader.filter(|id| *id != m.id)?;
        m.membership_config.membership().get_node(&leader).cloned()
    }

    /// Waits until this node has applied the entry at `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ReplicationError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let waited = self.raft.wait(Some(left)).applied_index_at_least(Some(index), "applied here").await;
        // openraft's timeout error carries its whole metrics summary: the
        // caller gets what it needs instead.
        waited.map(|_| ()).map_err(|e| {
            let applied = self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
            let reason = match e {
                WaitError::Timeout(..) => {
                    format!("entry {index} not applied here within {left:?} (applied up to {applied})")
                }
                WaitError::ShuttingDown => format!("entry {index} not applied here: the node is stopping"),
            };
            ReplicationError::Consensus { reason }
        })
    }

    /// The read index the leader confirms with a majority.
    async fn read_index(&self, deadline: Instant) -> Result<u64, ReplicationError> {
        let late = || ReplicationError::Consensus {
            reason:
                "no leader confirmed a read index in time: no majority of the voters answered (are most of \
                     them down?)"
                    .into(),
        };
        loop {
            // openraft's own wait for a leader's majority is not ours: bounded here.
            let Ok(asked) = tokio::time::timeout_at(deadline, self.raft.get_read_log_id()).await else {
                return Err(late());
            };
            let leader = match asked {
                Ok((read, _)) => return Ok(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => f.leader_node,
                // A majority did not answer the leader's heartbeat in time (a
                // slow or loaded network): asking again is safe.
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                    debug!(error = %e, "read index not confirmed yet; retrying");
                    None
                }
                Err(e) => return Err(ReplicationError::consensus(e)),
            };
            if let Some(addr) = leader.and_then(|n| self.wire.resolve(&n)) {
                let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                let call = proto::RaftCall::default();
                match self.wire.call_json::<ReadIndexAnswer>(&addr, Method::ReadIndex, call, left).await {
                    Ok(Ok(read)) => return Ok(read.map_or(0, |l| l.index)),
                    // A read index is safe to ask again, whatever went wrong.
                    // (The leader's answer is a forward, a quorum not reached, or a
                    // stopped node: each is worth asking again.)
                    Ok(Err(_)) | Err(ReplicationError::Peer { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() + LEADER_RETRY > deadline {
                return Err(late());
            }
            tokio::time::sleep(LEADER_RETRY).await;
        }
    }

    /// Voters, and how many make a majority.
    fn quorum(&self) -> (usize, usize) {
        let voters = self.raft.metrics().borrow().membership_config.voter_ids().count().max(1);
        (voters / 2 + 1, voters)
    }

    /// What a committed proposal with `writes` writes became.
    fn outcome(&self, index: u64, applied: Applied, writes: usize) -> Result<Outcome, ReplicationError> {
        match applied {
            // A retry's answer is its first decision's, from that entry.
            Applied::Written { first } if first / SEQ_PER_ENTRY <= index => Ok(Outcome::Applied {
                versions: (0..writes as u64)
                    .map(|j| VersionToken { origin: self.origin.clone(), seq: first + j })
                    .collect(),
            }),
            Applied::Written { first } => Err(ReplicationError::Consensus {
                reason: format!("entry {index} answered with write number {first}, of a later entry"),
            }),
            Applied::Failed { index: i, key, current } => Ok(Outcome::ConditionFailed(FailedCondition {
                index: i,
                key,
                current: current.and_then(|c| c.parse().ok()),
            })),
            Applied::Invalid { reason } => Err(ReplicationError::Consensus { reason }),
            Applied::Unknown { reason } => Err(ReplicationError::Consensus {
                reason: format!("the write's outcome is unknown: {reason} (read the key to find out)"),
            }),
            Applied::Nothing => {
                Err(ReplicationError::Consensus { reason: format!("entry {index} is not a write") })
            }
        }
    }
}

#[async_trait]
impl Replicator for RaftReplicator {
    /// Refuses: in Raft mode every write goes through [`commit`](Replicator::commit);
    /// records applied to the store directly would bypass the log.
    async fn replicate(
        &self,
        records: Vec<Record>,
        ack: AckLevel,
        timeout: Duration,
    ) -> Result<AckReport, ReplicationError> {
        let _ = (ack, timeout);
        if records.is_empty() {
            let (acked, members) = self.inner.quorum();
            return Ok(AckReport { acked, members });
        }
        Err(ReplicationError::Consensus {
            reason: "in Raft mode writes are committed through the log, not replicated after a local apply"
                .into(),
        })
    }

    /// Nothing to do: the leader replicates continuously.
    async fn sync_round(&self) -> Result<(), ReplicationError> {
        Ok(())
    }

    /// The members of the group other than this node (a node removed from it,
    /// or an address a member moved from, is no peer any more).
    fn peers(&self) -> Vec<PeerStatus> {
        let m = self.inner.raft.metrics().borrow().clone();
        let members = self.inner.member_addrs();
        let mut out = self.inner.peers.snapshot();
        out.retain(|p| members.contains(&p.addr));
        let matched = m.replication.clone().unwrap_or_default();
        let last = m.last_log_index.unwrap_or(0);
        for (id, node) in m.membership_config.nodes() {
            if *id == self.inner.id {
                continue;
            }
            let Ok(addr) = node.addr.parse::<PeerAddr>() else { continue };
            if !out.iter().any(|p| p.addr == addr) {
                out.push(blank(addr.clone()));
            }
            if let (Some(p), Some(done)) = (out.iter_mut().find(|p| p.addr == addr), matched.get(id)) {
                p.lag = last.saturating_sub(done.map_or(0, |l| l.index));
            }
        }
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }

    fn mode(&self) -> ReplicationMode {
        ReplicationMode::Raft
    }

    fn consensus_status(&self) -> Option<crate::replicator::ConsensusStatus> {
        Some(self.status())
    }

    async fn commit(&self, txn: Transaction, timeout: Duration) -> Result<Committed, ReplicationError> {
        self.inner.refuse_if_left()?;
        txn.writes.validate(DEFAULT_MAX_VALUE_BYTES)?;
        let writes = txn.writes.writes.len();
        if writes as u64 >= SEQ_PER_ENTRY {
            return Err(ReplicationError::Consensus {
                reason: format!("a transaction holds at most {} writes", SEQ_PER_ENTRY - 1),
            });
        }
        let deadline = Instant::now() + timeout;
        // One id for every attempt at this write, so it is decided once: the
        // client's, when it named one, so that its own retries share it too.
        let mut txn = txn;
        txn.request_id.get_or_insert_with(|| ProposalId::random().0);
        let proposal = Proposal { stamp: self.inner.hlc.now(), txn };
        let (index, applied) = self.inner.propose(proposal, deadline).await?;
        let outcome = self.inner.outcome(index, applied, writes)?;
        let (acked, members) = self.inner.quorum();
        Ok(Committed { index, outcome, acked, members })
    }

    /// Removes `node` from the voters and from the group (a joint-consensus
    /// membership change through the log), once the leader has checked that
    /// the group keeps a reachable majority (see
    /// [`leave`](RaftReplicator::leave) for the check).
    async fn check_removal(&self, node: &spectrum_core::NodeId) -> Result<(), ReplicationError> {
        self.inner
            .removal_precheck(node)
            .await
            .map_err(|reason| ReplicationError::Consensus { reason: format!("removing {node}: {reason}") })
    }

    async fn remove_member(
        &self,
        node: &spectrum_core::NodeId,
        timeout: Duration,
    ) -> Result<(), ReplicationError> {
        self.inner
            .remove_voter(node, timeout)
            .await
            .map_err(|reason| ReplicationError::Consensus { reason: format!("removing {node}: {reason}") })
    }

    async fn linearizable_barrier(&self, timeout: Duration) -> Result<(), ReplicationError> {
        self.inner.refuse_if_left()?;
        let deadline = Instant::now() + timeout;
        let index = self.inner.read_index(deadline).await?;
        self.inner.wait_applied(index, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(index: u64, members: &[&str]) -> GroupView {
        GroupView { index, members: members.iter().map(|m| (*m).to_string()).collect(), voters: Vec::new() }
    }

    #[test]
    fn only_a_newer_configuration_without_the_node_excludes_it() {
        let without = view(7, &["node-1", "node-2"]);
        assert!(without.excludes("node-3", 4, true), "newer, and without it");
        assert!(!without.excludes("node-3", 7, true), "not newer than its own");
        assert!(!without.excludes("node-3", 9, true), "older than its own");
        assert!(!view(7, &["node-1", "node-2", "node-3"]).excludes("node-3", 4, true), "newer, with it");
    }

    #[test]
    fn a_view_that_has_the_node_as_a_learner_only_says_so() {
        let voter =
            |id: &str| RaftMember { id: id.into(), addr: format!("http://{id}:7100"), incarnation: 1 };
        let with_voters = |voters: &[&str]| GroupView {
            voters: voters.iter().map(|v| voter(v)).collect(),
            ..view(9, &["node-1", "node-2", "node-3"])
        };
        assert!(with_voters(&["node-1", "node-2"]).has_as_learner_only("node-3"), "a learner");
        assert!(!with_voters(&["node-1", "node-2", "node-3"]).has_as_learner_only("node-3"), "a voter");
        assert!(!with_voters(&["node-1", "node-2"]).has_as_learner_only("node-4"), "not a member");
        assert!(
            !view(9, &["node-1", "node-3"]).has_as_learner_only("node-3"),
            "an older node lists no voters"
        );
    }

    #[test]
    fn a_probe_answer_without_a_group_view_still_reads() {
        // As nodes before the field answer.
        let old = r#"{"member":{"id":"node-1","addr":"http://127.0.0.1:7101"},"initialized":true}"#;
        let answer: ProbeAnswer = serde_json::from_str(old).unwrap();
        assert!(answer.initialized && answer.group.is_none());
        let new = ProbeAnswer { group: Some(view(3, &["node-1"])), ..answer };
        let back: ProbeAnswer = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back.group, Some(view(3, &["node-1"])));
    }
}
