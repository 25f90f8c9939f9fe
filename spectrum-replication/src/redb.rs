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
//! The one exception is [`merge_deferred`](ConfigStore::merge_deferred), for a
//! caller that can replay what a crash loses (Raft mode's state machine): it
//! commits with redb's [`Durability::None`], without fsync, and the change is
//! durable once [`sync`](ConfigStore::sync) (an empty commit with fsync) or any
//! other write has committed after it. A crash before that rolls the file back
//! to its last durable commit: a prefix of the changes, in commit order.
//!
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
//! Writes run on Tokio's blocking pool ([`tokio::task::spawn_blocking`]): a commit
//! waits for the disk. They are also cancel-safe: a write whose caller gives up
//! still finishes (or fails) as a whole. Reads only touch memory.
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
//! before a restart or a `kill -9`. A format-2 file is upgraded in place on first
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
use std::sync::Arc;

use ::redb::{Builder, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use spectrum_core::{Hlc, NodeId, Timestamp};
use tokio::sync::broadcast;
use tracing::{debug, info, trace, warn};

use crate::changelog::{ChangeLogLimits, FeedHead};
use crate::conflict::Conflict;
use crate::error::StoreError;
use crate::origin::{InvalidOrigin, Origin};
use crate::proto;
use crate::record::{
    ChangeBatch, DEFAULT_MAX_VALUE_BYTES, Delta, MergeReport, Record, Snapshot, VersionVector, WriteBatch,
};
use crate::redb_log::{self, CHANGES, corrupt, storage};
use crate::state::{Changes, Parts, State, check_record};
use crate::store::{ConfigStore, FEED_CAPACITY};
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
    /// Serialises writers: planning, committing to disk and applying in memory.
    writer: Mutex<()>,
    feed: broadcast::Sender<Record>,
    /// What the durable change log keeps (see [`changelog`](crate::changelog)).
    limits: RwLock<ChangeLogLimits>,
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
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Ok(Self {
            origin,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            shared: Arc::new(Shared {
                db: Mutex::new(Some(Arc::new(db))),
                path,
                hlc,
                state: RwLock::new(state),
                writer: Mutex::new(()),
                feed,
                limits: RwLock::new(ChangeLogLimits::default()),
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

    /// Plans with `plan`, commits to disk, then to memory, on the blocking pool.
    async fn write<T, P>(&self, plan: P) -> Result<T, StoreError>
    where
        T: Send + 'static,
        P: FnOnce(&State, &Hlc) -> (Changes, T) + Send + 'static,
    {
        self.write_with(Durability::Immediate, plan).await
    }

    /// [`write`](Self::write), committed with `durability`.
    async fn write_with<T, P>(&self, durability: Durability, plan: P) -> Result<T, StoreError>
    where
        T: Send + 'static,
        P: FnOnce(&State, &Hlc) -> (Changes, T) + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.write(durability, plan))
            .await
            .map_err(storage(self.shared.path.display().to_string(), "finish a write to"))?
    }
}

impl Shared {
    fn write<T>(
        &self,
        durability: Durability,
        plan: impl FnOnce(&State, &Hlc) -> (Changes, T),
    ) -> Result<T, StoreError> {
        let _writer = self.writer.lock();
        // Readers of the change log take the file while a commit runs.
        let open = self.ensure_open(&mut self.db.lock())?.clone();
        let (changes, out) = plan(&self.state.read(), &self.hlc);
        if changes.is_empty() {
            return Ok(out);
        }
        if let Err(e) = self.persist(&open, &changes, durability) {
            self.close(&mut self.db.lock(), &e);
            return Err(e);
        }
        self.state.write().commit(&changes);
        for c in &changes.feed {
            if let Some(r) = &c.record {
                let _ = self.feed.send(r.clone());
            }
        }
        Ok(out)
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
        let mut db = self.db.lock();
        let open = self.ensure_open(&mut db)?;
        let proved = self.probe_room(open, probe_bytes).and_then(|()| {
            let head = Changes { head: self.state.read().head(), ..Changes::default() };
            self.persist(open, &head, Durability::Immediate)
        });
        if let Err(e) = proved {
            self.close(&mut db, &e);
            return Err(e);
        }
        Ok(())
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
            let mut state = self.state.write();
            if on_disk.vv() != state.vv() || on_disk.head() != state.head() || on_disk.len() != state.len() {
                warn!(path = %shown, "the file holds changes memory lacks (a commit reported failure but reached the disk); reloading from it");
                *state = on_disk;
            }
            info!(path = %shown, "store file opened again after a failure");
            *db = Some(Arc::new(reopened));
        }
        db.as_ref().ok_or_else(|| corrupt(self.path.display().to_string(), "not open"))
    }

    /// Commits an empty transaction with immediate durability, which makes
    /// every earlier non-durable commit durable too (redb's contract for
    /// [`Durability::None`]).
    fn sync(&self) -> Result<(), StoreError> {
        let _writer = self.writer.lock();
        let open = self.ensure_open(&mut self.db.lock())?.clone();
        let shown = self.path.display().to_string();
        let synced = open
            .begin_write()
            .map_err(storage(&shown, "begin a write to"))
            .and_then(|tx| tx.commit().map_err(storage(&shown, "sync")));
        if let Err(e) = synced {
            self.close(&mut self.db.lock(), &e);
            return Err(e);
        }
        trace!(path = %shown, "synced");
        Ok(())
    }

    /// Writes `changes` and the clock's high-water mark in one transaction,
    /// committed with `durability` (immediate: fsync before returning).
    fn persist(&self, db: &Database, changes: &Changes, durability: Durability) -> Result<(), StoreError> {
        let shown = self.path.display().to_string();
        let mut tx = db.begin_write().map_err(storage(&shown, "begin a write to"))?;
        tx.set_durability(durability).map_err(storage(&shown, "set the durability of a write to"))?;
        {
            let table = |name: &str| format!("{shown}: table {name}");
            let mut records = tx.open_table(RECORDS).map_err(storage(table("records"), "open"))?;
            for c in &changes.feed {
                match &c.record {
                    Some(r) => {
                        let bytes = proto::Record::from(r).encode_to_vec();
                        records
                            .insert(c.key.as_str(), bytes.as_slice())
                            .map_err(storage(format!("{}, key {:?}", table("records"), c.key), "write"))?;
                    }
                    None => {
                        records
                            .remove(c.key.as_str())
                            .map_err(storage(format!("{}, key {:?}", table("records"), c.key), "remove"))?;
                    }
                }
            }
            // Tables this commit leaves alone are not opened: an open table
            // costs its root's bookkeeping at commit.
            if !changes.losers.is_empty() {
                let mut losers = tx.open_table(LOSERS).map_err(storage(table("conflict_losers"), "open"))?;
                for (key, list) in &changes.losers {
                    let at = || format!("{}, key {key:?}", table("conflict_losers"));
                    if list.is_empty() {
                        losers.remove(key.as_str()).map_err(storage(at(), "remove"))?;
                    } else {
                        let bytes = proto::RecordList { records: records_to_wire(list) }.encode_to_vec();
                        losers.insert(key.as_str(), bytes.as_slice()).map_err(storage(at(), "write"))?;
                    }
                }
            }
            if !changes.vv.is_empty() {
                let mut vv = tx.open_table(VV).map_err(storage(table("version_vector"), "open"))?;
                for (origin, &seq) in &changes.vv {
                    vv.insert(origin.to_string().as_str(), seq)
                        .map_err(storage(table("version_vector"), "write"))?;
                }
            }
            if !changes.pending.is_empty() {
                let mut pending = tx.open_table(PENDING).map_err(storage(table("pending"), "open"))?;
                for (origin, set) in &changes.pending {
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
            if !changes.gc_floor.is_empty() {
                let mut floor = tx.open_table(FLOOR).map_err(storage(table("gc_floor"), "open"))?;
                for (origin, &seq) in &changes.gc_floor {
                    floor
                        .insert(origin.to_string().as_str(), seq)
                        .map_err(storage(table("gc_floor"), "write"))?;
                }
            }
            let limits = *self.limits.read();
            redb_log::append(&tx, &shown, &changes.feed, changes.head, self.hlc.physical_now_ms(), &limits)?;
            let mut meta = tx.open_table(META).map_err(storage(table("meta"), "open"))?;
            meta.insert(META_HEAD, changes.head.to_be_bytes().as_slice())
                .map_err(storage(table("meta"), "write"))?;
            let high = encode_stamp(self.hlc.last());
            meta.insert(META_HLC, high.as_slice()).map_err(storage(table("meta"), "write"))?;
        }
        tx.commit().map_err(storage(&shown, "commit a write to"))?;
        trace!(path = %shown, changes = changes.feed.len(), "committed");
        Ok(())
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

/// The change-feed head saved in `meta`, as a read transaction sees it.
fn read_head(tx: &::redb::ReadTransaction, shown: &str) -> Result<u64, StoreError> {
    let subject = format!("{shown}: table meta");
    let table = tx.open_table(META).map_err(storage(&subject, "open"))?;
    match table.get(META_HEAD).map_err(storage(&subject, "read"))? {
        None => Ok(0),
        Some(v) => decode_u64(v.value())
            .ok_or_else(|| corrupt(format!("{subject}, key {META_HEAD:?}"), "not an 8-byte number")),
    }
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

    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError> {
        batch.validate(self.max_value_bytes)?;
        let me = self.origin.clone();
        let out = self.write(move |st, hlc| st.plan_apply(&me, hlc, batch)).await?;
        trace!(origin = %self.origin, writes = out.len(), "applied local batch");
        Ok(out)
    }

    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError> {
        for r in &records {
            check_record(r, self.max_value_bytes)?;
        }
        let covers = covers.clone();
        let report = self.write(move |st, _| st.plan_merge(records, &covers)).await?;
        trace!(origin = %self.origin, applied = report.applied, ignored = report.ignored, "merged remote records");
        Ok(report)
    }

    /// Commits with redb's [`Durability::None`]: no fsync; the next
    /// [`sync`](ConfigStore::sync), or any other write, which all commit with
    /// fsync, makes it durable. A crash before that rolls the file back to its
    /// last durable commit (see [the module docs](crate::redb)).
    async fn merge_deferred(
        &self,
        records: Vec<Record>,
        covers: &VersionVector,
    ) -> Result<MergeReport, StoreError> {
        for r in &records {
            check_record(r, self.max_value_bytes)?;
        }
        let covers = covers.clone();
        let report = self.write_with(Durability::None, move |st, _| st.plan_merge(records, &covers)).await?;
        trace!(origin = %self.origin, applied = report.applied, "merged records, durable at the next sync");
        Ok(report)
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.sync())
            .await
            .map_err(storage(self.shared.path.display().to_string(), "finish a sync of"))?
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
        let db = self.shared.open_db()?;
        let shown = self.shared.path.display().to_string();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            redb_log::changes_since(&db, &shown, |tx| read_head(tx, &shown), &prefix, from, limit)
        })
        .await
        .map_err(storage(self.shared.path.display().to_string(), "finish a read of"))?
    }

    async fn feed_head(&self) -> Result<FeedHead, StoreError> {
        let (position, digest) = {
            let st = self.shared.state.read();
            (st.head(), st.vv().clone())
        };
        let db = self.shared.open_db()?;
        let shown = self.shared.path.display().to_string();
        let oldest = tokio::task::spawn_blocking(move || redb_log::oldest_in(&db, &shown, position))
            .await
            .map_err(storage(self.shared.path.display().to_string(), "finish a read of"))??;
        Ok(FeedHead { position, oldest: oldest.min(position), digest })
    }

    async fn recover(&self) -> Result<bool, StoreError> {
        let (shared, probe_bytes) = (self.shared.clone(), self.max_value_bytes / 2);
        tokio::task::spawn_blocking(move || shared.recover(probe_bytes))
            .await
            .map_err(storage(self.shared.path.display().to_string(), "finish recovering"))??;
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

    fn hlc() -> Arc<Hlc> {
        Arc::new(Hlc::system())
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
