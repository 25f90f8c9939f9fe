//! [`RedbStore`]: the durable [`ConfigStore`], on a redb file.
//!
//! # How it stays durable
//!
//! The whole state is held in memory (loaded when the file is opened) and serves
//! every read. Every change (a local batch, a merge, a restored snapshot, a
//! tombstone collection) runs the same state machine as
//! [`MemoryStore`](crate::MemoryStore), but its result is first written to the
//! file in one redb write transaction, committed with immediate durability
//! (fsync), and only then applied in memory and acknowledged. So:
//!
//! - an acknowledged write is on disk and survives `kill -9` or a power cut;
//! - a batch is all or nothing, on disk as in memory;
//! - a failed commit changes nothing (the error is returned and memory is left
//!   as it was).
//!
//! Local batches ([`apply`](ConfigStore::apply)) and merges
//! ([`merge`](ConfigStore::merge)) that arrive while another write is being
//! committed are committed together, in one transaction and one fsync (group
//! commit, as LevelDB's write path; see `group_commit.rs`): each is planned on
//! top of those before it in the group, none is visible in memory before the
//! transaction is on disk, and each caller is answered once it is. A failed
//! commit fails every write of its group alike (each told the same storage
//! error, its I/O kind kept), and changes nothing. So
//! concurrent writers cost one fsync per group rather than one each, and no
//! node ever shows (and so replicates) a write a crash could still take back,
//! which would reuse its sequence number.
//!
//! The one exception is [`merge_deferred`](ConfigStore::merge_deferred), for a
//! caller that can replay what a crash loses (Raft mode's state machine): its
//! change is applied in memory at once, without touching the file, and queued;
//! the queue is written **behind** it, in one redb transaction committed with
//! [`Durability::None`] (no fsync), [`FLUSH_AFTER`] later or as soon as it holds
//! [`MAX_BEHIND_RECORDS`] records, before any other write's change and before a
//! read of the change log. It is durable once [`sync`](ConfigStore::sync) (which
//! writes the queue with fsync) or any other write has committed after it. A
//! crash before that rolls the file back to its last durable commit: a prefix of
//! the changes, in the order they were made. This is etcd's backend batch
//! transaction (applied entries go to bbolt in memory and are committed every
//! 100 ms), the Raft log being the truth in both. A failed write of the queue
//! loses it: from then on `merge_deferred` and `sync` fail (the caller must
//! replay from its own log: restart), and the next write opens the file again,
//! which rolls memory back to the file.

//! # When the disk fails
//!
//! A commit that fails (a full disk, an I/O error) is returned as
//! [`StoreError::Storage`] naming the file, and the file is closed: redb refuses
//! every later transaction on a database that saw an I/O error ("re-open the
//! database"). The next write, or [`ConfigStore::recover`] (which a node calls
//! with backoff while its store cannot write), opens the file again, which rolls
//! it back to its last committed transaction, that is, to exactly what memory
//! holds. Should the file hold more than memory (a commit that reported failure
//! yet reached the disk), the file wins and memory is reloaded from it, so no
//! sequence number is ever reused. `recover` then proves the disk takes writes by
//! committing the clock's high-water mark. Nothing acknowledged is lost: a write
//! is acknowledged only once committed.
//!
//! Each transaction also stores the HLC high-water mark (the greatest stamp the
//! clock had issued or observed); opening the file restores the clock to it, so
//! a restarted node never issues a smaller stamp than before.
//!
//! # Blocking
//!
//! Commits run on Tokio's blocking pool ([`tokio::task::spawn_blocking`]): a commit
//! waits for the disk. Local batches and merges are committed by one thread of
//! it at a time, group after group, while their writers await their answers
//! without holding a thread. Writes are cancel-safe: a write whose caller gives
//! up still finishes (or fails) as a whole, unless every handle to the store is
//! dropped, or the runtime's blocking pool shuts down, before its group is
//! taken (then it is dropped, never acknowledged).
//! Reads only touch memory.
//! [`RedbStore::open`] is synchronous and reads the whole file; call it at start-up.
//!
//! # Format
//!
//! Records are stored as the protobuf `Record` message of the replication
//! protocol (one evolvable schema for the wire and the disk), keyed by key, so
//! a change to the wire format is a change to the disk format: keep it
//! backward compatible (new fields optional, no renumbering), or existing files
//! no longer open. The
//! conflict losers of each key (a `RecordList`; a file without the table
//! has none), version vector, pending sequence numbers, tombstone floor, change-feed head,
//! HLC high-water mark, owning node id and origin live in tables of their own.
//! Every row is validated when the file is opened: a damaged row is a
//! [`StoreError::Storage`] naming the table and key, never a panic.
//!
//! The change log (`change_log`, format 3; see `redb_log.rs` and
//! [`changelog`](crate::changelog)) holds one row per feed entry, written and
//! compacted in the transaction of the change it describes, so
//! [`changes_since`](ConfigStore::changes_since) resumes from a position issued
//! before a restart or a `kill -9`. It reads the file only for positions the
//! file holds: changes still queued to be written behind are read from
//! memory, and the log's head and oldest position are kept in memory, so a
//! watcher that keeps up never touches the file. A format-2 file is upgraded in place on first
//! open (its log starts empty at its feed head); builds that read only format 2
//! refuse a format-3 file, naming the version, so none can commit without logging.
//!
//! # Origin
//!
//! A new file gets a fresh [`Origin`] (its node id and a random incarnation),
//! saved with it in the same transaction that creates it; every later open
//! finds it, so the sequence of local writes continues across restarts. A file
//! that is lost and created again gets a new one, so a node restarted on an
//! empty disk never reuses a sequence number its peers hold. A file written
//! before incarnations existed (format 1) has none: it keeps writing under its
//! bare node id, which its records already name, and is upgraded to the
//! current format (which older builds refuse to open, naming the version) on
//! first open.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use ::redb::{Builder, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use spectrum_core::{Hlc, NodeId, Timestamp};
use tokio::sync::broadcast;
use tracing::{debug, info, trace, warn};

use crate::changelog::{ChangeLogLimits, FeedHead, check_from, page};
use crate::conflict::Conflict;
use crate::error::StoreError;
use crate::feed::Feeds;
use crate::group_commit::{Committer, Enqueued, GroupCommit};
use crate::origin::{InvalidOrigin, Origin};
use crate::proto;
use crate::record::{
    Change, ChangeBatch, DEFAULT_MAX_VALUE_BYTES, Delta, MergeReport, Record, Snapshot, VersionToken,
    VersionVector, Write, WriteBatch,
};
use crate::redb_log::{self, CHANGES, corrupt, storage};
use crate::state::{Changes, Parts, State, check_record};
use crate::store::ConfigStore;
use crate::wire::{records_from_wire, records_to_wire};

/// key → protobuf `Record`.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// key → protobuf `RecordList`: the key's conflict losers (see
/// [`conflict`](crate::conflict)); no row when it has none.
const LOSERS: TableDefinition<&str, &[u8]> = TableDefinition::new("conflict_losers");
/// origin → highest contiguous sequence number seen.
const VV: TableDefinition<&str, u64> = TableDefinition::new("version_vector");
/// origin → sequence numbers seen above a gap (big-endian u64s, ascending).
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
/// origin → highest sequence number of a collected tombstone.
const FLOOR: TableDefinition<&str, u64> = TableDefinition::new("gc_floor");
/// Named values: see the `META_*` keys.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// A scratch row [`RedbStore`]'s `recover` writes and removes again, to prove
/// the file has room for the largest value the store accepts.
const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("recovery_probe");

const META_FORMAT: &str = "format";
const META_NODE: &str = "node_id";
/// The origin the store's local writes are numbered under (its text form).
const META_ORIGIN: &str = "origin";
const META_HLC: &str = "hlc_high_water";
const META_HEAD: &str = "change_head";

/// The file format this code writes: format 2 and the durable change log
/// (table `change_log`). Builds that know only format 2 refuse it, so none of
/// them can commit changes without logging them.
const FORMAT_VERSION: u64 = 3;
/// The format before the durable change log: the store's origin saved in
/// `meta`, and origins that may carry an incarnation (`n1~3f09c2d4a1b87e65`) in
/// records and in the per-origin tables. This code opens it and upgrades it in
/// place; its log starts empty, at the file's feed head.
const FORMAT_ORIGINS: u64 = 2;
/// The format before store incarnations, whose origins are bare node ids. This
/// code opens it and upgrades it in place: the store keeps writing under its
/// node id (the legacy origin), which its records already name.
const FORMAT_LEGACY: u64 = 1;

/// Cache redb keeps of the file (the state is in memory anyway).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// How long a change of [`merge_deferred`](ConfigStore::merge_deferred) waits
/// in memory before the queue is written to the file (see [the module
/// docs](crate::redb)): changes made meanwhile share its transaction. 100 ms,
/// etcd's backend batch interval: once the file holds tens of megabytes, a
/// transaction's cost is mostly the B-tree pages it copies, which ten times
/// fewer transactions share (16 writers on a three-node Raft cluster: about
/// 1,950 puts/s against 1,650 with 10 ms, once the audit log was full).
pub const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(100);
/// Records the deferred queue holds at most: the change that fills it writes
/// the queue before it returns, so a writer faster than the disk waits for it.
pub const MAX_BEHIND_RECORDS: usize = 4096;
/// Most writes (local batches and merges) committed in one group.
const MAX_GROUP_WRITES: usize = 256;
/// Most bytes (keys and values) of the writes committed in one group, but for
/// its first write, which always goes.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// A write committed in a group (see [the module docs](crate::redb)).
enum GroupOp {
    /// A validated local batch, written under `me`.
    Apply { me: Origin, batch: WriteBatch },
    /// Checked remote records and their sender's word.
    Merge { records: Vec<Record>, covers: VersionVector },
}

/// A group write's answer.
enum GroupOut {
    Applied(Vec<Record>),
    Merged(MergeReport),
}

impl GroupOp {
    /// Bytes of keys and values it writes, roughly.
    fn weight(&self) -> usize {
        let record = |r: &Record| r.key.len() + r.value.as_ref().map_or(0, |v| v.len());
        let write = |w: &Write| match w {
            Write::Put { key, value } => key.len() + value.len(),
            Write::Delete { key } => key.len(),
        };
        match self {
            GroupOp::Apply { batch, .. } => batch.writes.iter().map(write).sum(),
            GroupOp::Merge { records, .. } => records.iter().map(record).sum(),
        }
    }
}

/// A [`ConfigStore`] that persists every change to a redb file before
/// acknowledging it. See the [module docs](crate::redb).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use spectrum_core::Hlc;
/// use spectrum_replication::{ConfigStore, RedbStore, WriteBatch};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("config.redb");
/// let store = RedbStore::open(&path, "n1".parse()?, Arc::new(Hlc::system()))?;
/// store.apply(WriteBatch::new().put("settings/color", "blue")).await?;
/// drop(store);
///
/// // A restart finds every acknowledged write.
/// let store = RedbStore::open(&path, "n1".parse()?, Arc::new(Hlc::system()))?;
/// let got = store.get("settings/color").await?.expect("durable");
/// assert_eq!(got.value.as_deref(), Some(&b"blue"[..]));
/// // A file belongs to one node, and keeps its origin across restarts.
/// assert_eq!(got.origin, *store.origin());
/// drop(store);
/// assert!(RedbStore::open(&path, "n2".parse()?, Arc::new(Hlc::system())).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct RedbStore {
    origin: Origin,
    max_value_bytes: usize,
    shared: Arc<Shared>,
}

/// What writes share with the blocking pool.
struct Shared {
    /// The open file; `None` after a failed commit, until it is opened again.
    db: Mutex<Option<Arc<Database>>>,
    path: PathBuf,
    hlc: Arc<Hlc>,
    state: RwLock<State>,
    /// Serialises writers: planning and applying in memory (and committing
    /// to disk, but for deferred changes). Taken before `disk`.
    writer: Mutex<()>,
    /// Serialises transactions on the file, from taking the deferred queue to
    /// the commit, so the queue reaches the file in order. Taken before `behind`.
    disk: Mutex<()>,
    /// Deferred changes applied in memory, not yet written to the file.
    behind: Mutex<Behind>,
    feed: Feeds,
    /// What the durable change log keeps (see [`changelog`](crate::changelog)).
    limits: RwLock<ChangeLogLimits>,
    /// Local batches and merges waiting to be committed in a group.
    group: Arc<GroupCommit<GroupOp, GroupOut, StoreError>>,
}

/// The write-behind queue of [`merge_deferred`](ConfigStore::merge_deferred),
/// and where the file's change log stands.
struct Behind {
    /// The changes not on the file yet, in the order they were applied in
    /// memory. Those being written stay until their commit returns, so the
    /// change log always reads as the file's, then these.
    changes: Vec<Arc<Changes>>,
    /// How many records they hold.
    records: usize,
    /// Whether a write of the queue is scheduled.
    scheduled: bool,
    /// Why deferred changes were lost (a failed write of the queue, or the
    /// file reopened and reloaded with changes queued): every later deferred
    /// merge and sync fails with it.
    lost: Option<String>,
    /// The last feed position in the file's change log.
    file_head: u64,
    /// The oldest position the file's change log resumes from.
    file_oldest: u64,
    /// Whether deferred changes were committed without fsync since the last
    /// commit with it: a failed commit (redb then drops them) or a reopened
    /// file loses them too.
    unsynced: bool,
}

impl Behind {
    fn new(file_head: u64, file_oldest: u64) -> Self {
        Self {
            changes: Vec::new(),
            records: 0,
            scheduled: false,
            lost: None,
            file_head,
            file_oldest,
            unsynced: false,
        }
    }

    /// The last feed position, counting the queue.
    fn head(&self) -> u64 {
        self.changes.last().map_or(self.file_head, |c| c.head)
    }

    /// What to write: the whole queue, which stays queued until written.
    fn queued_for_write(&mut self) -> Vec<Arc<Changes>> {
        self.scheduled = false;
        self.changes.clone()
    }

    /// The first `n` queued changes are on the file; its log is now `log`
    /// (head, oldest) when the commit changed it.
    fn written(&mut self, n: usize, log: Option<(u64, u64)>) {
        for c in self.changes.drain(..n) {
            self.records -= c.feed.len();
        }
        if let Some((head, oldest)) = log {
            (self.file_head, self.file_oldest) = (head, oldest);
        }
    }

    /// Records that `lost` deferred changes were lost, for `why`, and drops
    /// the queue: it was planned on top of them.
    fn lose(&mut self, lost: usize, why: String) {
        let queued = std::mem::take(&mut self.changes).len();
        (self.records, self.scheduled) = (0, false);
        warn!(lost = lost.max(queued), %why, "deferred store changes lost; the caller must replay them");
        self.lost.get_or_insert(why);
    }
}

/// What a deferred merge leaves to do.
enum Flush {
    /// Nothing: a write of the queue is scheduled already.
    Later,
    /// Schedule a write of the queue in [`FLUSH_AFTER`].
    Schedule,
    /// Write the queue now: it is full.
    Now,
}

impl RedbStore {
    /// Opens (creating it when missing) the store file at `path` for node
    /// `node_id`, loads it, and raises `hlc` to the persisted high-water mark.
    /// A new file writes under a fresh [`Origin`]; an existing one under the
    /// origin saved in it (see [Origin](crate::redb#origin)).
    ///
    /// # Errors
    ///
    /// [`StoreError::NodeMismatch`] when the file was written by another node;
    /// [`StoreError::Storage`] when it cannot be opened or created, is not a
    /// store file, or holds a damaged row (the error names the table and key).
    pub fn open(path: impl AsRef<Path>, node_id: NodeId, hlc: Arc<Hlc>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let db = open_db(&path)?;
        let origin = claim(&db, &shown, &node_id)?;
        let (parts, high_water) = load(&db, &shown)?;
        let state =
            State::from_parts(parts).map_err(|why| corrupt(format!("{shown}: table records"), why))?;
        let floor = high_water.max(state.max_stamp().unwrap_or(Timestamp::ZERO));
        hlc.restore(floor);
        debug!(%origin, path = %shown, records = state.len(), hlc = %floor, "opened durable store");
        let behind = Behind::new(state.head(), redb_log::oldest_in(&db, &shown, state.head())?);
        Ok(Self {
            origin,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            shared: Arc::new(Shared {
                db: Mutex::new(Some(Arc::new(db))),
                path,
                hlc,
                state: RwLock::new(state),
                writer: Mutex::new(()),
                disk: Mutex::new(()),
                behind: Mutex::new(behind),
                feed: Feeds::default(),
                limits: RwLock::new(ChangeLogLimits::default()),
                group: Arc::new(GroupCommit::new(MAX_GROUP_WRITES, MAX_GROUP_BYTES)),
            }),
        })
    }

    /// Sets the largest value accepted, in bytes (default
    /// [`DEFAULT_MAX_VALUE_BYTES`]). It applies to local writes and to merged
    /// records alike.
    pub fn with_max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// Sets how many changes [`changes_since`](ConfigStore::changes_since) can
    /// reach back (default [`DEFAULT_CHANGE_LOG_ENTRIES`](crate::DEFAULT_CHANGE_LOG_ENTRIES);
    /// at least one), keeping the age limit.
    pub fn with_change_log_capacity(self, capacity: usize) -> Self {
        let limits = self.shared.limits.read().max_entries(capacity);
        self.with_change_log(limits)
    }

    /// Sets what the durable change log keeps (default: [`ChangeLogLimits::default`]).
    /// Changes beyond the limits leave the log with the next commits.
    pub fn with_change_log(self, limits: ChangeLogLimits) -> Self {
        *self.shared.limits.write() = limits;
        self
    }

    /// What the durable change log keeps.
    pub fn change_log_limits(&self) -> ChangeLogLimits {
        *self.shared.limits.read()
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The clock stamping local writes.
    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.shared.hlc
    }

    /// How many records (tombstones included) are stored.
    pub fn len(&self) -> usize {
        self.shared.state.read().len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Plans with `plan`, commits to disk (with fsync), then to memory, on the blocking pool.
    async fn write<T, P>(&self, plan: P) -> Result<T, StoreError>
    where
        T: Send + 'static,
        P: FnOnce(&State, &Hlc) -> (Changes, T) + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.write(plan))
            .await
            .map_err(storage(self.shared.path.display().to_string(), "finish a write to"))?
    }

    /// Commits `op` in a group (see [the module docs](crate::redb)): waits for
    /// its answer, and, when no leader is running (committing, or waiting for
    /// the writer lock or a thread), first starts the blocking pool's thread
    /// that commits groups until none is queued.
    async fn write_grouped(&self, op: GroupOp) -> Result<GroupOut, StoreError> {
        let weight = op.weight();
        let Enqueued { answer, leader } = self.shared.group.enqueue(op, weight);
        if let Some(leader) = leader {
            // Holds the store only while it commits (see `Leader::lead`).
            let shared = Arc::downgrade(&self.shared);
            // Not awaited: the writers await their answers, this one's included.
            drop(tokio::task::spawn_blocking(move || leader.lead(&shared)));
        }
        answer.await.unwrap_or_else(|_| {
            let why = std::io::Error::other(
                "the commit of this write's group was interrupted or never ran; the write may have been committed",
            );
            Err(storage(self.shared.path.display().to_string(), "finish a write to")(why))
        })
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        verb: &'static str,
        f: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(storage(self.shared.path.display().to_string(), verb))?
    }
}

impl Committer<GroupOp, GroupOut, StoreError> for Shared {
    fn writer(&self) -> &Mutex<()> {
        &self.writer
    }

    fn commit(&self, ops: Vec<GroupOp>) -> Vec<Result<GroupOut, StoreError>> {
        self.commit_group(ops)
    }
}

/// Closes the store's file when dropped while unwinding (see
/// [`Shared::commit_group`]).
struct CloseOnUnwind<'a>(&'a Shared);

impl Drop for CloseOnUnwind<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let why = std::io::Error::other("committing a group panicked");
        let error = storage(self.0.path.display().to_string(), "apply a committed write of")(why);
        self.0.close(&mut self.0.db.lock(), &error);
    }
}

/// The failure `e` of a group's commit, as each of its `count` writes is told
/// it. A storage failure becomes, for every write, a [`StoreError::Storage`]
/// with the same subject, verb and message, whose source is an I/O error of
/// the underlying kind (so a full disk reads as
/// [`StorageFull`](std::io::ErrorKind::StorageFull), which redb's errors do not
/// expose as a source) wrapping [`SharedFailure`], which holds the original.
/// Any other failure goes to the first write as it is, and its message to the
/// others.
fn shared_failure(e: StoreError, path: &Path, count: usize) -> Vec<StoreError> {
    match e {
        StoreError::Storage { subject, verb, source } => {
            let kind = io_kind(&*source).unwrap_or(std::io::ErrorKind::Other);
            let original: Arc<dyn std::error::Error + Send + Sync> = Arc::from(source);
            (0..count)
                .map(|_| StoreError::Storage {
                    subject: subject.clone(),
                    verb,
                    source: Box::new(std::io::Error::new(kind, SharedFailure(original.clone()))),
                })
                .collect()
        }
        other => {
            let message = other.to_string();
            let copy = || StoreError::Storage {
                subject: path.display().to_string(),
                verb: "commit a write to",
                source: Box::new(std::io::Error::other(message.clone())),
            };
            std::iter::once(other).chain((1..count).map(|_| copy())).collect()
        }
    }
}

/// A storage failure shared by the writes of a failed group: shown as the
/// original, which it holds (reach it with [`std::io::Error::get_ref`]).
#[derive(Debug)]
pub struct SharedFailure(pub Arc<dyn std::error::Error + Send + Sync>);

impl fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The kind of the first I/O error in `e`'s chain, looking into redb's
/// errors too (they name no source).
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    use ::redb::{CommitError, DatabaseError, StorageError, TableError, TransactionError};
    let of_storage = |s: &StorageError| match s {
        StorageError::Io(io) => Some(io.kind()),
        _ => None,
    };
    let mut cause = Some(e);
    while let Some(c) = cause {
        let kind = if let Some(io) = c.downcast_ref::<std::io::Error>() {
            Some(io.kind())
        } else if let Some(s) = c.downcast_ref::<StorageError>() {
            of_storage(s)
        } else if let Some(CommitError::Storage(s)) = c.downcast_ref::<CommitError>() {
            of_storage(s)
        } else if let Some(TransactionError::Storage(s)) = c.downcast_ref::<TransactionError>() {
            of_storage(s)
        } else if let Some(TableError::Storage(s)) = c.downcast_ref::<TableError>() {
            of_storage(s)
        } else if let Some(DatabaseError::Storage(s)) = c.downcast_ref::<DatabaseError>() {
            of_storage(s)
        } else {
            None
        };
        if kind.is_some() {
            return kind;
        }
        cause = c.source();
    }
    None
}

/// Writes `shared`'s deferred queue [`FLUSH_AFTER`] from now, unless the
/// store is dropped first.
fn schedule_flush(shared: Weak<Shared>) {
    tokio::spawn(async move {
        tokio::time::sleep(FLUSH_AFTER).await;
        let Some(shared) = shared.upgrade() else { return };
        let written = tokio::task::spawn_blocking(move || shared.flush(Durability::None)).await;
        if let Ok(Err(error)) = written {
            warn!(%error, "writing deferred store changes failed");
        }
    });
}

impl Shared {
    /// Plans with `plan`, then commits the deferred queue and the plan's
    /// changes in one transaction with fsync, then the changes to memory.
    fn write<T>(&self, plan: impl FnOnce(&State, &Hlc) -> (Changes, T)) -> Result<T, StoreError> {
        let _writer = self.writer.lock();
        let _disk = self.disk.lock();
        // Readers of the change log take the file while a commit runs.
        let open = self.ensure_open(&mut self.db.lock())?.clone();
        let (changes, out) = plan(&self.state.read(), &self.hlc);
        if changes.is_empty() {
            return Ok(out);
        }
        // Deferred changes are in memory before these: on the file too.
        self.commit_queue(&open, Some(&changes), Durability::Immediate)?;
        self.state.write().commit(&changes);
        self.publish(&changes);
        Ok(out)
    }

    /// Plans `ops` one after the other in one draft, commits the changes of
    /// them all in one transaction with fsync (after the deferred queue), then
    /// to memory; one answer per operation, in order. The caller holds
    /// `writer`. A failure answers every operation with it.
    fn commit_group(&self, ops: Vec<GroupOp>) -> Vec<Result<GroupOut, StoreError>> {
        let count = ops.len();
        let failed = |e: StoreError| -> Vec<Result<GroupOut, StoreError>> {
            shared_failure(e, &self.path, count).into_iter().map(Err).collect()
        };
        let _disk = self.disk.lock();
        let open = match self.ensure_open(&mut self.db.lock()) {
            Ok(open) => open.clone(),
            Err(e) => return failed(e),
        };
        let (changes, outs) = {
            let state = self.state.read();
            let mut draft = state.draft();
            let outs: Vec<GroupOut> = ops
                .into_iter()
                .map(|op| match op {
                    GroupOp::Apply { me, batch } => GroupOut::Applied(draft.apply(&me, &self.hlc, batch)),
                    GroupOp::Merge { records, covers } => GroupOut::Merged(draft.merge(records, &covers)),
                })
                .collect();
            (draft.finish(), outs)
        };
        if !changes.is_empty() {
            // Should anything panic from the commit on, the file is closed, so
            // the next write opens it again and memory is reloaded from it
            // (never planning on a state behind the file's).
            let _reload_if_unwinding = CloseOnUnwind(self);
            // Deferred changes are in memory before these: on the file too.
            if let Err(e) = self.commit_queue(&open, Some(&changes), Durability::Immediate) {
                return failed(e);
            }
            self.state.write().commit(&changes);
            self.publish(&changes);
        }
        outs.into_iter().map(Ok).collect()
    }

    /// Sends the records `changes` stored to the live feed.
    fn publish(&self, changes: &Changes) {
        self.feed.publish(changes.feed.iter().filter_map(|c| c.record.as_ref()));
    }

    /// Merges `records` in memory and queues the change for the file (see
    /// [the module docs](crate::redb)). The caller holds `writer`, and the
    /// file is open.
    fn defer(
        &self,
        records: Vec<Record>,
        covers: &VersionVector,
    ) -> Result<(MergeReport, Flush), StoreError> {
        self.refuse_if_lost()?;
        let (changes, report) = self.state.read().plan_merge(records, covers);
        if changes.is_empty() {
            return Ok((report, Flush::Later));
        }
        let changes = Arc::new(changes);
        let flush = {
            // In memory and queued at once: the feed's head in memory is never
            // ahead of the change log's (the file's, then the queue).
            let mut state = self.state.write();
            let mut behind = self.behind.lock();
            // A write of the queue failed since the check above: this change,
            // planned on top of the lost ones, is not made.
            if let Some(why) = &behind.lost {
                return Err(self.lost_error(why));
            }
            state.commit(&changes);
            behind.records += changes.feed.len();
            behind.changes.push(changes.clone());
            if behind.records >= MAX_BEHIND_RECORDS {
                Flush::Now
            } else if std::mem::replace(&mut behind.scheduled, true) {
                Flush::Later
            } else {
                Flush::Schedule
            }
        };
        self.publish(&changes);
        Ok((report, flush))
    }

    /// [`defer`](Self::defer), waiting for the writer and opening the file
    /// again if a failure closed it.
    fn defer_blocking(
        &self,
        records: Vec<Record>,
        covers: &VersionVector,
    ) -> Result<(MergeReport, Flush), StoreError> {
        let _writer = self.writer.lock();
        {
            let _disk = self.disk.lock();
            self.ensure_open(&mut self.db.lock())?;
        }
        self.defer(records, covers)
    }

    /// Writes the deferred queue to the file in one transaction committed
    /// with `durability`. With [`Durability::Immediate`] and an empty queue it
    /// commits an empty transaction, which makes every earlier non-durable
    /// commit durable too (redb's contract for [`Durability::None`]).
    fn flush(&self, durability: Durability) -> Result<(), StoreError> {
        let disk = self.disk.lock();
        let open = self.db.lock().clone();
        let open = match open {
            Some(open) => open,
            None => {
                // Opening the file again may reload memory: that needs the writer,
                // which is taken before `disk`.
                drop(disk);
                let _writer = self.writer.lock();
                let _disk = self.disk.lock();
                let open = self.ensure_open(&mut self.db.lock())?.clone();
                return self.flush_on(&open, durability);
            }
        };
        self.flush_on(&open, durability)
    }

    /// [`flush`](Self::flush) on `open`, `disk` held.
    fn flush_on(&self, open: &Database, durability: Durability) -> Result<(), StoreError> {
        self.refuse_if_lost()?;
        self.commit_queue(open, None, durability)
    }

    /// The error of every deferred merge and sync once deferred changes were lost.
    fn refuse_if_lost(&self) -> Result<(), StoreError> {
        match &self.behind.lock().lost {
            Some(why) => Err(self.lost_error(why)),
            None => Ok(()),
        }
    }

    fn lost_error(&self, why: &str) -> StoreError {
        StoreError::Storage {
            subject: self.path.display().to_string(),
            verb: "keep deferred changes in",
            source: Box::new(std::io::Error::other(format!(
                "changes merged without fsync were lost ({why}); they must be merged again from \
                 their source (a Raft node replays its log when restarted)"
            ))),
        }
    }

    /// Commits the deferred queue, then `extra`, in one transaction (nothing
    /// when both are empty and `durability` is [`Durability::None`]), then
    /// takes the queue's changes off it; on failure see [`fail`](Self::fail).
    fn commit_queue(
        &self,
        open: &Database,
        extra: Option<&Changes>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let queued = self.behind.lock().queued_for_write();
        if queued.is_empty() && extra.is_none() && matches!(durability, Durability::None) {
            return Ok(());
        }
        let batch: Vec<&Changes> = queued.iter().map(|c| &**c).chain(extra).collect();
        match self.persist(open, &batch, durability) {
            Ok(log) => {
                let mut behind = self.behind.lock();
                behind.written(queued.len(), log);
                match durability {
                    Durability::None => behind.unsynced |= !queued.is_empty(),
                    _ => behind.unsynced = false,
                }
                Ok(())
            }
            Err(e) => Err(self.fail(queued.len(), e)),
        }
    }

    /// After a failed commit that carried `deferred` queued changes: records
    /// them, and any deferred change committed without fsync (redb drops those
    /// too), as lost; closes the file. Returns `e`.
    fn fail(&self, deferred: usize, e: StoreError) -> StoreError {
        {
            let mut behind = self.behind.lock();
            if deferred > 0 || behind.unsynced {
                behind.lose(deferred, e.to_string());
            }
        }
        self.close(&mut self.db.lock(), &e);
        e
    }

    /// The open file, for reading the change log; an error while a failure keeps it closed.
    fn open_db(&self) -> Result<Arc<Database>, StoreError> {
        self.db.lock().clone().ok_or_else(|| {
            corrupt(
                self.path.display().to_string(),
                "closed after a failed write; it opens again with the next write",
            )
        })
    }

    /// Opens the file again if a failure closed it, and proves it takes a commit.
    /// Proves the file writable again: it takes a write of `probe_bytes` (half
    /// the largest value the store accepts), committed and then
    /// removed, and a commit of the store's own metadata. A commit of a few
    /// bytes alone is no proof: on a full disk it can fit in pages a failed
    /// write released, and the node would turn ready only to refuse the next
    /// real write.
    fn recover(&self, probe_bytes: usize) -> Result<(), StoreError> {
        let _writer = self.writer.lock();
        let _disk = self.disk.lock();
        let open = self.ensure_open(&mut self.db.lock())?.clone();
        if let Err(e) = self.probe_room(&open, probe_bytes) {
            return Err(self.fail(0, e));
        }
        let head = Changes { head: self.state.read().head(), ..Changes::default() };
        self.commit_queue(&open, Some(&head), Durability::Immediate)
    }

    /// Commits `bytes` bytes to the scratch table, then commits their removal.
    fn probe_room(&self, db: &Database, bytes: usize) -> Result<(), StoreError> {
        let shown = self.path.display().to_string();
        let filler = vec![0u8; bytes];
        for keep in [true, false] {
            let tx = db.begin_write().map_err(storage(&shown, "begin a write to"))?;
            {
                let subject = format!("{shown}: table recovery_probe");
                let mut table = tx.open_table(PROBE).map_err(storage(subject.as_str(), "open"))?;
                let written = if keep {
                    table.insert("probe", filler.as_slice()).map(|_| ())
                } else {
                    table.remove("probe").map(|_| ())
                };
                written.map_err(storage(subject.as_str(), "write"))?;
            }
            tx.commit().map_err(storage(&shown, "commit to"))?;
        }
        Ok(())
    }

    /// Drops the database after a failed commit (releasing the file), so the
    /// next write opens it again.
    fn close(&self, db: &mut Option<Arc<Database>>, error: &StoreError) {
        if db.take().is_some() {
            warn!(path = %self.path.display(), %error, "store write failed; closing the file to open it again");
        }
    }

    /// The open database, opening the file again (and reconciling memory with
    /// it) when a failure closed it.
    fn ensure_open<'a>(&self, db: &'a mut Option<Arc<Database>>) -> Result<&'a Arc<Database>, StoreError> {
        if db.is_none() {
            let shown = self.path.display().to_string();
            let reopened = open_db(&self.path)?;
            let (parts, high_water) = load(&reopened, &shown)?;
            let on_disk =
                State::from_parts(parts).map_err(|why| corrupt(format!("{shown}: table records"), why))?;
            self.hlc.restore(high_water.max(on_disk.max_stamp().unwrap_or(Timestamp::ZERO)));
            let file_head = on_disk.head();
            let file_oldest = redb_log::oldest_in(&reopened, &shown, file_head)?;
            let mut state = self.state.write();
            let mut behind = self.behind.lock();
            (behind.file_head, behind.file_oldest) = (file_head, file_oldest);
            if !behind.changes.is_empty() || behind.unsynced {
                let queued = behind.changes.len();
                behind.lose(0, format!("reopened with {queued} queued changes, or unsynced ones"));
                *state = on_disk;
            } else if on_disk.vv() != state.vv()
                || on_disk.head() != state.head()
                || on_disk.len() != state.len()
            {
                warn!(path = %shown, "the file differs from memory (a commit reported failure but reached the disk, or changes merged without fsync were lost); reloading from it");
                *state = on_disk;
            }
            info!(path = %shown, "store file opened again after a failure");
            *db = Some(Arc::new(reopened));
        }
        db.as_ref().ok_or_else(|| corrupt(self.path.display().to_string(), "not open"))
    }

    /// Writes `batch` (changes in the order they were made) and the clock's
    /// high-water mark in one transaction, committed with `durability`
    /// (immediate: fsync before returning). An empty batch commits an empty
    /// transaction. Returns the change log's head and oldest position
    /// afterwards (`None` for an empty batch).
    fn persist(
        &self,
        db: &Database,
        batch: &[&Changes],
        durability: Durability,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let shown = self.path.display().to_string();
        let mut tx = db.begin_write().map_err(storage(&shown, "begin a write to"))?;
        tx.set_durability(durability).map_err(storage(&shown, "set the durability of a write to"))?;
        let mut log = None;
        if let Some(last) = batch.last() {
            let table = |name: &str| format!("{shown}: table {name}");
            // Each record as stored, in feed order: the change log's rows
            // reuse these bytes.
            let mut encoded = Vec::with_capacity(batch.iter().map(|c| c.feed.len()).sum());
            {
                let mut records = tx.open_table(RECORDS).map_err(storage(table("records"), "open"))?;
                for c in batch.iter().flat_map(|changes| &changes.feed) {
                    let at = || format!("{}, key {:?}", table("records"), c.key);
                    match &c.record {
                        Some(r) => {
                            let bytes = proto::Record::from(r).encode_to_vec();
                            records
                                .insert(c.key.as_str(), bytes.as_slice())
                                .map_err(storage(at(), "write"))?;
                            encoded.push(Some(bytes));
                        }
                        None => {
                            records.remove(c.key.as_str()).map_err(storage(at(), "remove"))?;
                            encoded.push(None);
                        }
                    }
                }
            }
            // Tables this commit leaves alone are not opened: an open table
            // costs its root's bookkeeping at commit.
            if batch.iter().any(|c| !c.losers.is_empty()) {
                let mut losers = tx.open_table(LOSERS).map_err(storage(table("conflict_losers"), "open"))?;
                for (key, list) in batch.iter().flat_map(|c| &c.losers) {
                    let at = || format!("{}, key {key:?}", table("conflict_losers"));
                    if list.is_empty() {
                        losers.remove(key.as_str()).map_err(storage(at(), "remove"))?;
                    } else {
                        let bytes = proto::RecordList { records: records_to_wire(list) }.encode_to_vec();
                        losers.insert(key.as_str(), bytes.as_slice()).map_err(storage(at(), "write"))?;
                    }
                }
            }
            if batch.iter().any(|c| !c.vv.is_empty()) {
                let mut vv = tx.open_table(VV).map_err(storage(table("version_vector"), "open"))?;
                for (origin, &seq) in batch.iter().flat_map(|c| &c.vv) {
                    vv.insert(origin.to_string().as_str(), seq)
                        .map_err(storage(table("version_vector"), "write"))?;
                }
            }
            if batch.iter().any(|c| !c.pending.is_empty()) {
                let mut pending = tx.open_table(PENDING).map_err(storage(table("pending"), "open"))?;
                for (origin, set) in batch.iter().flat_map(|c| &c.pending) {
                    if set.is_empty() {
                        pending
                            .remove(origin.to_string().as_str())
                            .map_err(storage(table("pending"), "remove"))?;
                    } else {
                        let bytes: Vec<u8> = set.iter().flat_map(|s| s.to_be_bytes()).collect();
                        pending
                            .insert(origin.to_string().as_str(), bytes.as_slice())
                            .map_err(storage(table("pending"), "write"))?;
                    }
                }
            }
            if batch.iter().any(|c| !c.gc_floor.is_empty()) {
                let mut floor = tx.open_table(FLOOR).map_err(storage(table("gc_floor"), "open"))?;
                for (origin, &seq) in batch.iter().flat_map(|c| &c.gc_floor) {
                    floor
                        .insert(origin.to_string().as_str(), seq)
                        .map_err(storage(table("gc_floor"), "write"))?;
                }
            }
            let limits = *self.limits.read();
            let feed = batch.iter().flat_map(|c| &c.feed).zip(encoded);
            let oldest = redb_log::append(&tx, &shown, feed, last.head, self.hlc.physical_now_ms(), &limits)?;
            log = Some((last.head, oldest));
            let mut meta = tx.open_table(META).map_err(storage(table("meta"), "open"))?;
            meta.insert(META_HEAD, last.head.to_be_bytes().as_slice())
                .map_err(storage(table("meta"), "write"))?;
            let high = encode_stamp(self.hlc.last());
            meta.insert(META_HLC, high.as_slice()).map_err(storage(table("meta"), "write"))?;
        }
        tx.commit().map_err(storage(&shown, "commit a write to"))?;
        trace!(path = %shown, changes = batch.len(), ?durability, "committed");
        Ok(log)
    }
}

impl Drop for Shared {
    /// Writes what is still queued (without fsync), as the last write of a
    /// store closed cleanly; nothing is promised durable by it.
    fn drop(&mut self) {
        let open = self.db.get_mut().clone();
        if let Some(open) = open
            && !self.behind.get_mut().changes.is_empty()
            && let Err(error) = self.flush_on(&open, Durability::None)
        {
            warn!(%error, "writing deferred store changes at close failed");
        }
    }
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    let shown = path.display().to_string();
    let mut builder = Builder::new();
    // Verify every page on open: a damaged file is an error, not a panic.
    builder.set_check_integrity_on_open(true).set_cache_size(CACHE_BYTES);
    // redb reports what it recognises as damage; guard against anything else a
    // mangled file might trigger while being opened.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path))) {
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError::InUse { path: shown }),
        Ok(res) => res.map_err(storage(shown, "open")),
        Err(_) => Err(corrupt(shown, "the file is damaged or is not a redb store")),
    }
}

/// Creates the tables, records `node_id` as the owner of a new file or checks
/// it against the owner of an existing one, and returns the origin the store
/// writes under: a fresh one for a new file, the saved one for an existing
/// file, the node id itself (the legacy origin) for a file of the format before
/// incarnations, which is upgraded in place.
fn claim(db: &Database, shown: &str, node_id: &NodeId) -> Result<Origin, StoreError> {
    let tx = db.begin_write().map_err(storage(shown, "begin a write to"))?;
    let origin = {
        let meta_subject = format!("{shown}: table meta");
        tx.open_table(RECORDS).map_err(storage(format!("{shown}: table records"), "create"))?;
        tx.open_table(LOSERS).map_err(storage(format!("{shown}: table conflict_losers"), "create"))?;
        tx.open_table(VV).map_err(storage(format!("{shown}: table version_vector"), "create"))?;
        tx.open_table(PENDING).map_err(storage(format!("{shown}: table pending"), "create"))?;
        tx.open_table(FLOOR).map_err(storage(format!("{shown}: table gc_floor"), "create"))?;
        tx.open_table(CHANGES).map_err(storage(format!("{shown}: table change_log"), "create"))?;
        let mut meta = tx.open_table(META).map_err(storage(&meta_subject, "create"))?;
        let read = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta.get(key).map_err(storage(&meta_subject, "read"))?.map(|v| v.value().to_vec()))
        };
        let format = read(META_FORMAT)?;
        let owner = read(META_NODE)?;
        let saved = read(META_ORIGIN)?;
        check_owner(shown, owner.as_deref(), node_id)?;
        let origin = match &format {
            None => Origin::fresh(node_id.clone()),
            Some(v) => {
                let subject = format!("{meta_subject}, key {META_FORMAT:?}");
                match decode_u64(v).ok_or_else(|| corrupt(&subject, "not an 8-byte number"))? {
                    FORMAT_LEGACY => Origin::legacy(node_id.clone()),
                    FORMAT_ORIGINS | FORMAT_VERSION => {
                        saved_origin(&meta_subject, saved.as_deref(), node_id)?
                    }
                    version => {
                        return Err(corrupt(
                            subject,
                            format!(
                                "format version {version}; this build reads versions {FORMAT_LEGACY} to {FORMAT_VERSION}"
                            ),
                        ));
                    }
                }
            }
        };
        if owner.is_none() {
            meta.insert(META_NODE, node_id.as_str().as_bytes()).map_err(storage(&meta_subject, "write"))?;
        }
        if saved.is_none() {
            meta.insert(META_ORIGIN, origin.to_string().as_bytes())
                .map_err(storage(&meta_subject, "write"))?;
        }
        if format.as_deref().and_then(decode_u64) != Some(FORMAT_VERSION) {
            meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())
                .map_err(storage(&meta_subject, "write"))?;
        }
        origin
    };
    tx.commit().map_err(storage(shown, "commit a write to"))?;
    Ok(origin)
}

/// Checks the owner recorded in a file (if any) against `node_id`.
fn check_owner(shown: &str, owner: Option<&[u8]>, node_id: &NodeId) -> Result<(), StoreError> {
    match owner {
        Some(stored) if stored != node_id.as_str().as_bytes() => Err(StoreError::NodeMismatch {
            path: shown.to_owned(),
            stored: String::from_utf8_lossy(stored).into_owned(),
            requested: node_id.clone(),
        }),
        _ => Ok(()),
    }
}

/// The origin a file of the current format saved: present, well formed, and
/// of `node_id`.
fn saved_origin(meta_subject: &str, saved: Option<&[u8]>, node_id: &NodeId) -> Result<Origin, StoreError> {
    let subject = format!("{meta_subject}, key {META_ORIGIN:?}");
    let saved = saved.ok_or_else(|| corrupt(&subject, "missing"))?;
    let text = std::str::from_utf8(saved).map_err(|_| corrupt(&subject, "not UTF-8"))?;
    let origin: Origin = text.parse().map_err(|e: InvalidOrigin| corrupt(&subject, e.to_string()))?;
    if origin.node() != node_id {
        return Err(corrupt(subject, format!("origin {origin} is not of node {node_id}")));
    }
    Ok(origin)
}

/// Reads and validates every row.
fn load(db: &Database, shown: &str) -> Result<(Parts, Timestamp), StoreError> {
    let tx = db.begin_read().map_err(storage(shown, "begin a read of"))?;
    let mut parts = Parts::default();

    let subject = format!("{shown}: table records");
    let table = tx.open_table(RECORDS).map_err(storage(&subject, "open"))?;
    for row in table.iter().map_err(storage(&subject, "read"))? {
        let (k, v) = row.map_err(storage(&subject, "read"))?;
        let key = k.value();
        let at = format!("{subject}, key {key:?}");
        let wire = proto::Record::decode(v.value()).map_err(storage(&at, "decode"))?;
        let rec = Record::try_from(wire).map_err(storage(&at, "decode"))?;
        if rec.key != key {
            return Err(corrupt(at, format!("the row holds the record of key {:?}", rec.key)));
        }
        parts.records.push(rec);
    }

    let subject = format!("{shown}: table conflict_losers");
    let table = tx.open_table(LOSERS).map_err(storage(&subject, "open"))?;
    for row in table.iter().map_err(storage(&subject, "read"))? {
        let (k, v) = row.map_err(storage(&subject, "read"))?;
        let key = k.value();
        let at = format!("{subject}, key {key:?}");
        let wire = proto::RecordList::decode(v.value()).map_err(storage(&at, "decode"))?;
        for rec in records_from_wire(wire.records).map_err(storage(&at, "decode"))? {
            if rec.key != key {
                return Err(corrupt(at, format!("the row holds a record of key {:?}", rec.key)));
            }
            parts.losers.push(rec);
        }
    }

    let subject = format!("{shown}: table version_vector");
    let table = tx.open_table(VV).map_err(storage(&subject, "open"))?;
    for row in table.iter().map_err(storage(&subject, "read"))? {
        let (k, v) = row.map_err(storage(&subject, "read"))?;
        let origin = origin_at(&subject, k.value())?;
        parts.vv.raise(&origin, v.value());
    }

    let subject = format!("{shown}: table pending");
    let table = tx.open_table(PENDING).map_err(storage(&subject, "open"))?;
    for row in table.iter().map_err(storage(&subject, "read"))? {
        let (k, v) = row.map_err(storage(&subject, "read"))?;
        let origin = origin_at(&subject, k.value())?;
        let bytes = v.value();
        if bytes.len() % 8 != 0 {
            return Err(corrupt(format!("{subject}, key {:?}", k.value()), "length is not a multiple of 8"));
        }
        let set: BTreeSet<u64> = bytes.chunks_exact(8).filter_map(decode_u64).collect();
        parts.pending.insert(origin, set);
    }

    let subject = format!("{shown}: table gc_floor");
    let table = tx.open_table(FLOOR).map_err(storage(&subject, "open"))?;
    for row in table.iter().map_err(storage(&subject, "read"))? {
        let (k, v) = row.map_err(storage(&subject, "read"))?;
        let origin = origin_at(&subject, k.value())?;
        parts.gc_floor.raise(&origin, v.value());
    }

    let subject = format!("{shown}: table meta");
    let table = tx.open_table(META).map_err(storage(&subject, "open"))?;
    let meta: BTreeMap<String, Vec<u8>> = table
        .iter()
        .map_err(storage(&subject, "read"))?
        .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
        .collect::<Result<_, _>>()
        .map_err(storage(&subject, "read"))?;
    parts.head = match meta.get(META_HEAD) {
        None => 0,
        Some(v) => decode_u64(v)
            .ok_or_else(|| corrupt(format!("{subject}, key {META_HEAD:?}"), "not an 8-byte number"))?,
    };
    let high_water = match meta.get(META_HLC) {
        None => Timestamp::ZERO,
        Some(v) => decode_stamp(v)
            .ok_or_else(|| corrupt(format!("{subject}, key {META_HLC:?}"), "not a 12-byte stamp"))?,
    };
    Ok((parts, high_water))
}

fn origin_at(subject: &str, key: &str) -> Result<Origin, StoreError> {
    key.parse().map_err(|e: InvalidOrigin| corrupt(format!("{subject}, key {key:?}"), e.to_string()))
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn encode_stamp(t: Timestamp) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&t.wall_ms.to_be_bytes());
    out[8..].copy_from_slice(&t.logical.to_be_bytes());
    out
}

fn decode_stamp(bytes: &[u8]) -> Option<Timestamp> {
    if bytes.len() != 12 {
        return None;
    }
    let wall = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let logical = u32::from_be_bytes(bytes[8..].try_into().ok()?);
    Some(Timestamp::new(wall, logical))
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.state.read();
        f.debug_struct("RedbStore")
            .field("origin", &self.origin)
            .field("path", &self.shared.path)
            .field("records", &st.len())
            .field("digest", st.vv())
            .field("max_value_bytes", &self.max_value_bytes)
            .finish()
    }
}

#[async_trait]
impl ConfigStore for RedbStore {
    fn origin(&self) -> &Origin {
        &self.origin
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.shared.state.read().get(key))
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        Ok(self.shared.state.read().scan(prefix))
    }

    async fn live_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.shared.state.read().live_keys(prefix))
    }

    async fn live_version(&self, key: &str) -> Result<Option<VersionToken>, StoreError> {
        Ok(self.shared.state.read().live_version(key))
    }

    async fn live_versions(&self, keys: &[&str]) -> Result<Vec<Option<VersionToken>>, StoreError> {
        let state = self.shared.state.read();
        Ok(keys.iter().map(|key| state.live_version(key)).collect())
    }

    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError> {
        batch.validate(self.max_value_bytes)?;
        let op = GroupOp::Apply { me: self.origin.clone(), batch };
        let GroupOut::Applied(out) = self.write_grouped(op).await? else {
            unreachable!("a local batch is answered with its records")
        };
        trace!(origin = %self.origin, writes = out.len(), "applied local batch");
        Ok(out)
    }

    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError> {
        for r in &records {
            check_record(r, self.max_value_bytes)?;
        }
        let op = GroupOp::Merge { records, covers: covers.clone() };
        let GroupOut::Merged(report) = self.write_grouped(op).await? else {
            unreachable!("a merge is answered with its report")
        };
        trace!(origin = %self.origin, applied = report.applied, ignored = report.ignored, "merged remote records");
        Ok(report)
    }

    /// Merges in memory at once and writes the change to the file behind it,
    /// without fsync (see [the module docs](crate::redb)): the next
    /// [`sync`](ConfigStore::sync), or any other write, which all commit with
    /// fsync, makes it durable.
    ///
    /// # Errors
    ///
    /// As [`merge`](ConfigStore::merge); also [`StoreError::Storage`] once a
    /// write of deferred changes failed (they are lost: merge them again, as
    /// after a crash).
    async fn merge_deferred(
        &self,
        records: Vec<Record>,
        covers: &VersionVector,
    ) -> Result<MergeReport, StoreError> {
        for r in &records {
            check_record(r, self.max_value_bytes)?;
        }
        let covers = covers.clone();
        // At once, on this thread, unless another writer holds the store (it
        // may be waiting for the disk) or a failure closed the file.
        let mut records = Some(records);
        let fast = match self.shared.writer.try_lock() {
            Some(_writer) if self.shared.db.lock().is_some() => {
                records.take().map(|records| self.shared.defer(records, &covers))
            }
            _ => None,
        };
        let report = match (fast, records) {
            (Some(done), _) => {
                let (report, flush) = done?;
                match flush {
                    Flush::Later => {}
                    Flush::Schedule => schedule_flush(Arc::downgrade(&self.shared)),
                    // On the blocking pool, which runs it to its end even if
                    // this caller stops waiting.
                    Flush::Now => {
                        self.blocking("finish a write to", |shared| shared.flush(Durability::None)).await?
                    }
                }
                report
            }
            (None, Some(records)) => {
                // The write behind is planned on the blocking pool too: a
                // caller that stops waiting cannot leave the queue unwritten.
                let weak = Arc::downgrade(&self.shared);
                self.blocking("finish a merge into", move |shared| {
                    let (report, flush) = shared.defer_blocking(records, &covers)?;
                    match flush {
                        Flush::Later => {}
                        Flush::Schedule => schedule_flush(weak),
                        Flush::Now => shared.flush(Durability::None)?,
                    }
                    Ok(report)
                })
                .await?
            }
            (None, None) => unreachable!("the records go to exactly one path"),
        };
        trace!(origin = %self.origin, applied = report.applied, "merged records, durable at the next sync");
        Ok(report)
    }

    /// Writes the deferred changes and commits with fsync.
    async fn sync(&self) -> Result<(), StoreError> {
        self.blocking("finish a sync of", |shared| shared.flush(Durability::Immediate)).await
    }

    async fn digest(&self) -> Result<VersionVector, StoreError> {
        Ok(self.shared.state.read().vv().clone())
    }

    async fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError> {
        self.shared.state.read().delta(since, budget_bytes)
    }

    fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.shared.feed.subscribe()
    }

    fn subscribe_prefix(&self, prefix: &str) -> broadcast::Receiver<Record> {
        self.shared.feed.subscribe_prefix(prefix)
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(self.shared.state.read().snapshot())
    }

    async fn conflicts(&self, prefix: &str) -> Result<Vec<Conflict>, StoreError> {
        Ok(self.shared.state.read().conflicts(prefix))
    }

    async fn restore(&self, snapshot: Snapshot) -> Result<MergeReport, StoreError> {
        for r in snapshot.records.iter().chain(&snapshot.conflicts) {
            check_record(r, self.max_value_bytes)?;
        }
        let report = self.write(move |st, hlc| st.plan_restore(snapshot, hlc)).await?;
        trace!(origin = %self.origin, applied = report.applied, "restored a snapshot");
        Ok(report)
    }

    async fn changes_since(&self, prefix: &str, from: u64, limit: usize) -> Result<ChangeBatch, StoreError> {
        let (tail, file_head, tail_head) = {
            let behind = self.shared.behind.lock();
            let head = behind.head();
            let queued = behind.changes.iter().flat_map(|c| &c.feed).filter(|c| c.index > from);
            if from >= behind.file_head {
                // Every change after `from` is in memory: the file is not read.
                check_from(from, head, behind.file_oldest)?;
                // A change of another prefix only counts: its record is not copied.
                let light = |c: &Change| match c.key.starts_with(prefix) {
                    true => c.clone(),
                    false => {
                        Change { index: c.index, key: String::new(), record: None, dropped_tombstone: false }
                    }
                };
                return page(queued.map(|c| Ok(light(c))), prefix, limit, head);
            }
            (queued.cloned().collect::<Vec<_>>(), behind.file_head, head)
        };
        let prefix = prefix.to_owned();
        self.blocking("finish a read of", move |shared| {
            let db = shared.open_db()?;
            let shown = shared.path.display().to_string();
            let tx = db.begin_read().map_err(storage(&shown, "begin a read of"))?;
            redb_log::changes_since(&tx, &shown, file_head, tail, tail_head, &prefix, from, limit)
        })
        .await
    }

    async fn feed_head(&self) -> Result<FeedHead, StoreError> {
        let (position, digest) = {
            let st = self.shared.state.read();
            (st.head(), st.vv().clone())
        };
        let oldest = self.shared.behind.lock().file_oldest;
        Ok(FeedHead { position, oldest: oldest.min(position), digest })
    }

    async fn recover(&self) -> Result<bool, StoreError> {
        let probe_bytes = self.max_value_bytes / 2;
        self.blocking("finish recovering", move |shared| shared.recover(probe_bytes)).await?;
        Ok(true)
    }

    async fn collect_tombstones(&self, horizon: &VersionVector) -> Result<usize, StoreError> {
        let horizon = horizon.clone();
        let count = self.write(move |st, hlc| st.plan_collect(&horizon, hlc)).await?;
        if count > 0 {
            debug!(origin = %self.origin, collected = count, "collected tombstones");
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::record::WriteBatch;

    #[tokio::test]
    async fn a_deferred_merge_is_read_at_once_and_on_disk_once_synced_and_a_crash_before_loses_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (path, copy) = (dir.path().join("config.redb"), dir.path().join("crashed.redb"));
        let source = MemoryStore::new("n2".parse().unwrap(), hlc());
        let first = source.apply(WriteBatch::new().put("settings/a", "1")).await.unwrap();
        let later =
            source.apply(WriteBatch::new().put("settings/b", "2").put("settings/c", "3")).await.unwrap();
        let store = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        store.merge(first, &VersionVector::default()).await.unwrap();
        let report = store.merge_deferred(later, &VersionVector::default()).await.unwrap();
        assert_eq!(report.applied, 2);
        assert!(store.get("settings/c").await.unwrap().is_some(), "read at once");
        // What `kill -9` would leave now: the file as the kernel holds it.
        std::fs::copy(&path, &copy).unwrap();
        let crashed = RedbStore::open(&copy, "n1".parse().unwrap(), hlc()).unwrap();
        let keys: Vec<String> = crashed.scan("").await.unwrap().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, vec!["settings/a"], "the unsynced merge is lost whole");
        drop(crashed);
        store.sync().await.unwrap();
        std::fs::copy(&path, &copy).unwrap();
        let synced = RedbStore::open(&copy, "n1".parse().unwrap(), hlc()).unwrap();
        assert_eq!(synced.scan("").await.unwrap(), store.scan("").await.unwrap());
        assert_eq!(synced.digest().await.unwrap(), store.digest().await.unwrap());
    }

    /// `count` records of another node, each in a batch of its own.
    async fn remote_batches(count: usize) -> Vec<Vec<Record>> {
        let source = MemoryStore::new("n2".parse().unwrap(), hlc());
        let mut out = Vec::new();
        for i in 0..count {
            out.push(source.apply(WriteBatch::new().put(format!("settings/k{i}"), "v")).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn deferred_merges_are_written_behind_in_one_transaction_and_the_change_log_reads_them_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("config.redb"), "n1".parse().unwrap(), hlc()).unwrap();
        store.apply(WriteBatch::new().put("settings/local", "x")).await.unwrap();
        for batch in remote_batches(3).await {
            store.merge_deferred(batch, &VersionVector::default()).await.unwrap();
        }
        assert_eq!(store.shared.behind.lock().changes.len(), 3, "queued, not yet on the file");
        // The change log answers from the file, then the queue, in order.
        let page = store.changes_since("", 0, 100).await.unwrap();
        let indexes: Vec<u64> = page.changes.iter().map(|c| c.index).collect();
        assert_eq!((indexes, page.position), (vec![1, 2, 3, 4], 4));
        let page = store.changes_since("", 0, 2).await.unwrap();
        assert_eq!((page.changes.len(), page.position), (2, 2), "a page ends where the limit stops it");
        // From the queue alone.
        let page = store.changes_since("settings/k1", 1, 100).await.unwrap();
        assert_eq!(page.changes.len(), 1);
        assert_eq!((page.changes[0].index, page.position), (3, 4));
        assert_eq!(page.changes[0].record.as_ref().map(|r| r.key.as_str()), Some("settings/k1"));
        let page = store.changes_since("settings/k", 2, 1).await.unwrap();
        assert_eq!((page.changes[0].index, page.position), (3, 3));
        assert!(matches!(store.changes_since("", 5, 1).await, Err(StoreError::FeedAhead { .. })));
        assert_eq!(store.feed_head().await.unwrap().position, 4);
        assert_eq!(store.shared.behind.lock().changes.len(), 3, "a read of the log writes nothing");
        // The queue is written once, FLUSH_AFTER after its first change.
        for _ in 0..200 {
            if store.shared.behind.lock().changes.is_empty() {
                break;
            }
            tokio::time::sleep(FLUSH_AFTER).await;
        }
        assert!(store.shared.behind.lock().changes.is_empty(), "written behind");
        let page = store.changes_since("", 1, 100).await.unwrap();
        assert_eq!(page.changes.iter().map(|c| c.index).collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    // The test holds the store's writer across the merge on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_deferred_merge_whose_caller_stops_waiting_is_still_written_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("config.redb"), "n1".parse().unwrap(), hlc()).unwrap();
        let batch = remote_batches(1).await.remove(0);
        // Another writer holds the store: the merge takes the blocking pool's
        // path, and its caller gives up while it waits there.
        let covers = VersionVector::default();
        let writer = store.shared.writer.lock();
        let merge = store.merge_deferred(batch, &covers);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), merge).await.is_err());
        drop(writer);
        for _ in 0..200 {
            if store.get("settings/k0").await.unwrap().is_some()
                && store.shared.behind.lock().changes.is_empty()
            {
                break;
            }
            tokio::time::sleep(FLUSH_AFTER).await;
        }
        assert!(store.get("settings/k0").await.unwrap().is_some(), "the merge finished without its caller");
        assert!(store.shared.behind.lock().changes.is_empty(), "and was written behind");
    }

    #[tokio::test]
    async fn a_durable_write_takes_the_deferred_changes_before_it_to_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (path, copy) = (dir.path().join("config.redb"), dir.path().join("crashed.redb"));
        let store = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        for batch in remote_batches(2).await {
            store.merge_deferred(batch, &VersionVector::default()).await.unwrap();
        }
        store.apply(WriteBatch::new().put("settings/local", "x")).await.unwrap();
        assert!(store.shared.behind.lock().changes.is_empty());
        // What `kill -9` would leave now.
        std::fs::copy(&path, &copy).unwrap();
        let crashed = RedbStore::open(&copy, "n1".parse().unwrap(), hlc()).unwrap();
        assert_eq!(crashed.scan("").await.unwrap(), store.scan("").await.unwrap());
        assert_eq!(crashed.feed_head().await.unwrap().position, 3);
    }

    #[tokio::test]
    async fn a_full_queue_is_written_before_the_merge_that_filled_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("config.redb"), "n1".parse().unwrap(), hlc()).unwrap();
        let source = MemoryStore::new("n2".parse().unwrap(), hlc());
        let mut batch = WriteBatch::new();
        for i in 0..MAX_BEHIND_RECORDS {
            batch = batch.put(format!("settings/k{i}"), "v");
        }
        let records = source.apply(batch).await.unwrap();
        store.merge_deferred(records, &VersionVector::default()).await.unwrap();
        assert!(store.shared.behind.lock().changes.is_empty());
        assert_eq!(store.len(), MAX_BEHIND_RECORDS);
    }

    #[tokio::test]
    async fn once_deferred_changes_are_lost_deferred_merges_and_syncs_fail_and_a_write_reloads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("config.redb"), "n1".parse().unwrap(), hlc()).unwrap();
        let mut batches = remote_batches(2).await.into_iter();
        store.merge_deferred(batches.next().unwrap(), &VersionVector::default()).await.unwrap();
        // What a failed write of the queue does: the queue is lost, the file closed.
        store.shared.behind.lock().lose(1, "injected".into());
        let error = StoreError::Storage { subject: "test".into(), verb: "write", source: "injected".into() };
        store.shared.close(&mut store.shared.db.lock(), &error);
        let refused = store.merge_deferred(batches.next().unwrap(), &VersionVector::default()).await;
        assert!(refused.unwrap_err().to_string().contains("were lost (injected)"));
        assert!(store.sync().await.is_err(), "a sync vouches for nothing lost");
        // The merge opened the file again: memory is what the file holds.
        assert_eq!(store.len(), 0);
        store.apply(WriteBatch::new().put("settings/local", "x")).await.unwrap();
        let keys: Vec<String> = store.scan("").await.unwrap().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, vec!["settings/local"]);
        assert!(store.sync().await.is_err(), "still refused: the caller must replay");
    }

    #[tokio::test]
    async fn deferred_changes_written_without_fsync_are_lost_with_a_failed_commit_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("config.redb"), "n1".parse().unwrap(), hlc()).unwrap();
        let batch = remote_batches(1).await.remove(0);
        store.merge_deferred(batch, &VersionVector::default()).await.unwrap();
        store.shared.flush(Durability::None).unwrap();
        assert!(store.shared.behind.lock().unsynced, "on the file, not on disk");
        // A durable commit that failed closes the file; redb drops what was not synced.
        let error = StoreError::Storage { subject: "test".into(), verb: "write", source: "injected".into() };
        store.shared.close(&mut store.shared.db.lock(), &error);
        // The next write opens the file again: the deferred change counts as lost.
        store.apply(WriteBatch::new().put("settings/local", "x")).await.unwrap();
        assert!(store.sync().await.is_err(), "a sync vouches for nothing lost");
        // Once synced, nothing deferred is at risk.
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("config.redb"), "n1".parse().unwrap(), hlc()).unwrap();
        let batch = remote_batches(1).await.remove(0);
        store.merge_deferred(batch, &VersionVector::default()).await.unwrap();
        store.sync().await.unwrap();
        assert!(!store.shared.behind.lock().unsynced);
    }

    fn hlc() -> Arc<Hlc> {
        Arc::new(Hlc::system())
    }

    /// Waits (bounded) until `count` writes are queued on `store` (behind a
    /// writer lock the test holds).
    async fn until_queued(store: &RedbStore, count: usize) {
        for _ in 0..5000 {
            if store.shared.group.queued() == count {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        panic!("{} writes queued, not {count}", store.shared.group.queued());
    }

    /// A group that writes one key several times, a merged remote record
    /// among them, ends as committing its writes one by one would: a delete
    /// then a put leaves the put; a local write after a merged record of its
    /// key stamped an hour ahead of this clock supersedes it, no conflict; the
    /// change feed lists every change in order, at contiguous positions, on
    /// disk as in memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock, reason = "the test holds the writer while writes queue behind it")]
    async fn a_group_writing_one_key_several_times_ends_as_one_by_one_would() {
        use spectrum_core::hlc::ManualClock;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.redb");
        let store = Arc::new(RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap());
        store.apply(WriteBatch::new().put("settings/gone", "x")).await.unwrap();
        let from = store.feed_head().await.unwrap().position;
        let ahead = Arc::new(ManualClock::new(Hlc::system().physical_now_ms() + 3_600_000));
        let peer = MemoryStore::new("n2".parse().unwrap(), Arc::new(Hlc::new(ahead)));
        let remote = peer.apply(WriteBatch::new().put("settings/shared", "remote")).await.unwrap();
        let remote_stamp = remote[0].stamp;

        let held = store.shared.writer.lock();
        let mut writes = tokio::task::JoinSet::new();
        // Queued in this order: each waits until the one before is queued.
        let steps: Vec<Option<WriteBatch>> = vec![
            Some(WriteBatch::new().delete("settings/gone")),
            None, // the merge of `remote`
            Some(WriteBatch::new().put("settings/gone", "back")),
            Some(WriteBatch::new().put("settings/shared", "local")),
        ];
        let mut remote = Some(remote);
        for (i, step) in steps.into_iter().enumerate() {
            let writing = store.clone();
            match step {
                Some(batch) => writes.spawn(async move { writing.apply(batch).await.map(|_| ()) }),
                None => {
                    let records = remote.take().unwrap();
                    writes.spawn(async move {
                        writing.merge(records, &VersionVector::default()).await.map(|_| ())
                    })
                }
            };
            until_queued(&store, i + 1).await;
        }
        let groups_before = store.shared.group.groups();
        drop(held);
        while let Some(done) = writes.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(store.shared.group.groups() - groups_before, 1, "the four writes were one group");

        let value =
            |r: Option<Record>| r.and_then(|r| r.value).map(|v| String::from_utf8(v.to_vec()).unwrap());
        assert_eq!(value(store.get("settings/gone").await.unwrap()).as_deref(), Some("back"));
        let shared = store.get("settings/shared").await.unwrap().unwrap();
        assert_eq!(value(Some(shared.clone())).as_deref(), Some("local"), "the later local write wins");
        assert_eq!(shared.origin, *store.origin());
        assert!(shared.stamp > remote_stamp, "stamped after the record it replaced, clock ahead or not");
        assert!(store.conflicts("settings/").await.unwrap().is_empty(), "it saw the merged record");
        let feed = store.changes_since("settings/", from, 100).await.unwrap();
        let keys: Vec<(&str, bool)> = feed
            .changes
            .iter()
            .map(|c| (c.key.as_str(), c.record.as_ref().is_some_and(|r| r.is_tombstone())))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("settings/gone", true),
                ("settings/shared", false),
                ("settings/gone", false),
                ("settings/shared", false)
            ]
        );
        let positions: Vec<u64> = feed.changes.iter().map(|c| c.index).collect();
        assert_eq!(positions, (from + 1..=from + 4).collect::<Vec<_>>());

        let before = store.scan("").await.unwrap();
        drop(store);
        let reopened = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        assert_eq!(reopened.scan("").await.unwrap(), before);
        assert_eq!(reopened.changes_since("settings/", from, 100).await.unwrap().changes, feed.changes);
    }

    /// Local batches and merges that queue while another write holds the store
    /// are committed in one group: each planned on those before it (one
    /// sequence of numbers, a later write of a key superseding an earlier
    /// one), none visible before the group is on disk, and all of it there
    /// after a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock, reason = "the test holds the writer while writes queue behind it")]
    async fn writes_queued_behind_a_commit_are_committed_as_one_group_each_on_the_ones_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.redb");
        let store = Arc::new(RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap());
        let source = MemoryStore::new("n2".parse().unwrap(), hlc());
        let remote = source.apply(WriteBatch::new().put("settings/remote", "r")).await.unwrap();
        let groups_before = store.shared.group.groups();
        let held = store.shared.writer.lock();
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..6 {
            let store = store.clone();
            writes.spawn(async move {
                let batch = WriteBatch::new()
                    .put("settings/shared", format!("v{i}"))
                    .put(format!("settings/k{i}"), "x");
                store.apply(batch).await.map(|_| ())
            });
        }
        let merging = store.clone();
        let merged = remote.len();
        writes.spawn(async move { merging.merge(remote, &VersionVector::default()).await.map(|_| ()) });
        until_queued(&store, 7).await;
        assert!(store.get("settings/shared").await.unwrap().is_none(), "nothing visible before the commit");
        drop(held);
        while let Some(done) = writes.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(store.shared.group.groups() - groups_before, 1, "one group, one transaction");

        let mine = store.origin().clone();
        let seqs: BTreeSet<u64> = store
            .scan("settings/k")
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.origin == mine)
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs.len(), 6, "six distinct numbers for six batches: {seqs:?}");
        assert_eq!(store.digest().await.unwrap().get(&mine), 12, "numbers 1..=12, without a gap");
        let shared = store.get("settings/shared").await.unwrap().unwrap();
        assert!(store.conflicts("settings/").await.unwrap().is_empty(), "each write saw the one before");
        let before: Vec<Record> = store.scan("").await.unwrap();
        assert_eq!(before.len(), 1 + 6 + merged);

        drop(store);
        let reopened = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        assert_eq!(reopened.scan("").await.unwrap(), before, "the whole group is on disk");
        assert_eq!(reopened.get("settings/shared").await.unwrap(), Some(shared));
    }

    /// Writes a file as the format before incarnations did: format 1, no
    /// origin, and records numbered under the bare node id.
    fn write_format_1(path: &Path, node: &str) {
        let db = open_db(path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx.open_table(META).unwrap();
            meta.insert(META_FORMAT, FORMAT_LEGACY.to_be_bytes().as_slice()).unwrap();
            meta.insert(META_NODE, node.as_bytes()).unwrap();
            let rec = Record {
                key: "settings/mode".into(),
                value: Some("fast".into()),
                stamp: Timestamp::new(1_000, 0),
                origin: node.parse().unwrap(),
                seq: 1,
                lineage: Default::default(),
            };
            let bytes = proto::Record::from(&rec).encode_to_vec();
            tx.open_table(RECORDS).unwrap().insert(rec.key.as_str(), bytes.as_slice()).unwrap();
            tx.open_table(VV).unwrap().insert(node, 1).unwrap();
        }
        tx.commit().unwrap();
    }

    #[tokio::test]
    async fn a_file_from_before_incarnations_keeps_writing_under_its_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        write_format_1(&path, "n1");
        let store = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        assert!(store.origin().is_legacy(), "{:?}", store.origin());
        assert!(store.get("settings/mode").await.unwrap().is_some(), "its records stay valid");
        let w = store.apply(WriteBatch::new().put("k", "v")).await.unwrap();
        assert_eq!((w[0].origin.to_string(), w[0].seq), ("n1".to_owned(), 2), "numbering continues");
        drop(store);
        let store = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        assert!(store.origin().is_legacy(), "and keeps doing so once upgraded");
        drop(store);
        let db = open_db(&path).unwrap();
        let tx = db.begin_read().unwrap();
        let format = tx.open_table(META).unwrap().get(META_FORMAT).unwrap().map(|v| v.value().to_vec());
        assert_eq!(format.as_deref().and_then(decode_u64), Some(FORMAT_VERSION), "upgraded in place");
    }

    #[tokio::test]
    async fn a_file_from_before_the_durable_log_opens_and_its_log_starts_at_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.redb");
        let store = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        store.apply(WriteBatch::new().put("a", "1").put("b", "2")).await.unwrap();
        let origin = store.origin().clone();
        drop(store);
        // Make it a format-2 file: no change log, format 2.
        let db = open_db(&path).unwrap();
        let tx = db.begin_write().unwrap();
        assert!(tx.delete_table(CHANGES).unwrap());
        tx.open_table(META).unwrap().insert(META_FORMAT, FORMAT_ORIGINS.to_be_bytes().as_slice()).unwrap();
        tx.commit().unwrap();
        drop(db);

        let store = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        assert_eq!(store.origin(), &origin, "it keeps its origin");
        assert_eq!(store.scan("").await.unwrap().len(), 2, "and its records");
        let head = store.feed_head().await.unwrap();
        assert_eq!((head.position, head.oldest), (2, 2), "the log starts empty at the head");
        let e = store.changes_since("", 0, 10).await.unwrap_err();
        assert!(matches!(e, StoreError::FeedCompacted { from: 0, oldest: 2 }), "{e}");
        store.apply(WriteBatch::new().put("c", "3")).await.unwrap();
        drop(store);
        let store = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap();
        let page = store.changes_since("", 2, 10).await.unwrap();
        assert_eq!(page.changes.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["c"], "then logs");
        drop(store);
        let db = open_db(&path).unwrap();
        let tx = db.begin_read().unwrap();
        let format = tx.open_table(META).unwrap().get(META_FORMAT).unwrap().map(|v| v.value().to_vec());
        assert_eq!(format.as_deref().and_then(decode_u64), Some(FORMAT_VERSION), "upgraded in place");
    }

    #[test]
    fn a_file_of_a_newer_format_is_refused_naming_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v9.redb");
        drop(RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap());
        let db = open_db(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META).unwrap().insert(META_FORMAT, 9u64.to_be_bytes().as_slice()).unwrap();
        tx.commit().unwrap();
        drop(db);
        let err = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap_err();
        assert!(err.to_string().contains("format version 9"), "{err}");
    }

    #[test]
    fn a_new_file_gets_a_fresh_origin_that_it_keeps_and_a_recreated_one_gets_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.redb");
        let first = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap().origin().clone();
        assert!(!first.is_legacy());
        assert_eq!(first.node().as_str(), "n1");
        let again = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap().origin().clone();
        assert_eq!(again, first, "a reopened file keeps its origin");
        std::fs::remove_file(&path).unwrap();
        let lost = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap().origin().clone();
        assert_ne!(lost, first, "an empty disk is a new incarnation");
    }

    #[test]
    fn a_saved_origin_that_is_missing_damaged_or_of_another_node_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (i, saved) in [None, Some(&b"n1~xyz"[..]), Some(&b"n2~0000000000000001"[..]), Some(&[0xff][..])]
            .into_iter()
            .enumerate()
        {
            let path = dir.path().join(format!("{i}.redb"));
            drop(RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap());
            let db = open_db(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut meta = tx.open_table(META).unwrap();
                match saved {
                    None => drop(meta.remove(META_ORIGIN).unwrap()),
                    Some(bytes) => drop(meta.insert(META_ORIGIN, bytes).unwrap()),
                }
            }
            tx.commit().unwrap();
            drop(db);
            let err = RedbStore::open(&path, "n1".parse().unwrap(), hlc()).unwrap_err();
            assert!(err.to_string().contains("\"origin\""), "{saved:?}: {err}");
        }
    }

    #[test]
    fn stamps_round_trip_and_bad_lengths_are_refused() {
        let t = Timestamp::new(1_234_567, 89);
        assert_eq!(decode_stamp(&encode_stamp(t)), Some(t));
        assert_eq!(decode_stamp(&[0; 11]), None);
        assert_eq!(decode_u64(&[0; 7]), None);
    }
}
