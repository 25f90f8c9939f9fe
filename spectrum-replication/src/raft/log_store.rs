//! The Raft log and vote. The vote, the purge mark, the state machine's
//! position and the current snapshot (see `state_machine`) are in a redb file
//! of their own (`raft.redb`); a node on disk keeps the entries in append-only
//! segment files beside it ([`WAL_DIR`], see `wal`), a node in memory in a
//! table of the same redb database. Every write is fsynced (redb's immediate
//! durability, or `fdatasync` of the segment) before openraft hears that it is
//! durable, with two exceptions: the leader's own entries on disk (below), and
//! a purge behind the log's end, which returns before its mark is on disk
//! (see [`Purging`]): until the mark is, a reopened log holds more than it
//! must, with no gap, and no segment file is deleted before it. A purge mark
//! does not run ahead of the state machine's saved position, from which a
//! restart replays the log: behind the log's end it waits for a later purge,
//! and past the end, where openraft purges as it hands a snapshot to the
//! state machine, the purge waits (at most [`INSTALL_WAIT`], during which the
//! Raft core waits too) for the snapshot's position to be saved, while the
//! Raft service counts the install in flight ([`InstallInFlight`]). A purge
//! past the end with no install counted (openraft's start-up tidying, below
//! the saved position) marks at once: the next append leaves a gap only its
//! mark explains.
//!
//! # The leader's own entries
//!
//! openraft 0.9 sends an entry to the followers only once the leader's
//! append has reported it durable, so a write would wait for two fsyncs one
//! after the other, the leader's and then a follower's. The Raft thesis
//! (Ongaro, §10.2.1) lets the leader write its log in parallel with
//! replicating it, and etcd's leader does: the entries the leader proposed in
//! the term it leads (their log id names it, and the last vote saved is its
//! own, committed) are written to the segment file and reported at once, and
//! synced by a background flush ([`Wal::append_unsynced`]) while they travel.
//! openraft may then count the leader's copy towards a commit before it is on
//! disk, so nothing that acts on a commit may run ahead of that flush:
//!
//! - the state machine applies an entry only once it is on disk here (it
//!   waits on [`LogStore::durable`]), and every answer to a client, every
//!   read index and every snapshot comes from applied entries;
//! - the leader tells its followers a commit index only once the entries up
//!   to it are on disk here (`network` waits for that a little, and meanwhile
//!   sends the last commit index that was), so no follower applies an entry
//!   a crash of the leader could still take back;
//! - before a vote that is not this node's own leadership is saved (it is
//!   stepping down, or voting for another), everything written is synced, so
//!   whatever it answers under another leader is about entries on disk.
//!
//! - a node that led before a restart must win an election again before it
//!   appends (`RaftDb::forget_leadership` un-commits its saved vote before
//!   openraft starts, which would otherwise resume leading from it): entries
//!   it wrote unsynced and lost in the crash may have reached followers, and
//!   it must not write other entries under the same log ids.
//!
//! A committed entry is thus on disk on a majority before anyone acts on it,
//! as Raft requires. Every other append (a follower's, or entries of another
//! term) is synced before it is reported.
//!
//! # Entries appended lately
//!
//! openraft reads back every entry it appends: to apply it (every node), and
//! to send it to each follower (the leader). The log keeps the entries it
//! appended last in memory, as appended ([`RecentEntries`], up to [`RECENT_ENTRIES`]
//! and [`RECENT_BYTES`]), and answers a read they cover from there rather
//! than reading the segment and decoding it again (a third of the leader's
//! log reads and decodes, 4 % of its CPU under 16 writers). A proposal
//! batch is shared, not copied, by each read. The kept entries are always a
//! run the log holds: an append that fails drops them all, a truncation or
//! a purge drops what it removes before removing it, so a read never finds
//! an entry the log no longer has (etcd's raft keeps its unstable and
//! recent entries in memory the same way).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use ::redb::backends::InMemoryBackend;
use ::redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, CommittedLeaderId, LogId, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote,
};
use tokio::sync::watch;

use super::codec::{Corrupt, decode_entry, encode_entry};
use super::wal::{Durable, Wal};
use super::{Entry, StorageError, TypeConfig};

/// The directory of the log's segment files, beside [`RAFT_FILE`](super::RAFT_FILE).
pub(crate) const WAL_DIR: &str = "raft-wal";
/// Reads of at most this many entries run on the caller's task (the segments
/// are in the page cache: the entries were just written); longer ones, a
/// lagging follower's catch-up, on a blocking thread.
const INLINE_READ: u64 = 64;

/// Most entries the log keeps in memory after appending them.
pub(crate) const RECENT_ENTRIES: usize = 4_096;
/// Most bytes (encoded) of the entries the log keeps in memory.
pub(crate) const RECENT_BYTES: usize = 16 << 20;

/// The entries appended last, a run of consecutive indexes the log holds
/// (see "Entries appended lately" above), with their encoded sizes.
#[derive(Debug, Default)]
pub(crate) struct RecentEntries {
    entries: std::collections::VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl RecentEntries {
    /// The first and last index kept.
    fn bounds(&self) -> Option<(u64, u64)> {
        Some((self.entries.front()?.0.log_id.index, self.entries.back()?.0.log_id.index))
    }

    /// Entries `from..to`, if every one of them is kept.
    fn read(&self, from: u64, to: u64) -> Option<Vec<Entry>> {
        let (first, last) = self.bounds()?;
        if from < first || to > last.saturating_add(1) {
            return None;
        }
        let start = usize::try_from(from - first).ok()?;
        let end = start + usize::try_from(to.saturating_sub(from)).ok()?;
        Some(self.entries.range(start..end).map(|(e, _)| e.clone()).collect())
    }

    /// Keeps `appended` (consecutive, with their encoded sizes), which follow
    /// what is kept or else replace it, then drops the oldest past the bounds.
    fn keep(&mut self, appended: Vec<(Entry, usize)>) {
        let Some(start) = appended.first().map(|(e, _)| e.log_id.index) else { return };
        self.drop_from(start);
        if self.bounds().is_some_and(|(_, last)| last.saturating_add(1) != start) {
            self.clear();
        }
        for (entry, size) in appended {
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > RECENT_ENTRIES || (self.bytes > RECENT_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    /// Drops the entries from index `from` on (a truncation).
    fn drop_from(&mut self, from: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= from) {
            self.pop_back();
        }
    }

    /// Drops the entries up to index `upto` (a purge).
    fn drop_through(&mut self, upto: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.log_id.index <= upto) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// Log entries by index (protobuf `RaftLogEntry`).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small JSON values by name: the vote, the last purged log id, the state
/// machine's position, the current snapshot's metadata; and the snapshot's bytes.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// The proposals the state machine decided lately (protobuf `RaftDecided`),
/// by running number; saved with its applied position (see `recent`).
const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_recent");

const VOTE: &str = "vote";
/// The incarnation of this Raft file (8 bytes, big-endian; see
/// [`RaftMember::incarnation`](super::RaftMember::incarnation)).
const INCARNATION: &str = "incarnation";
/// The horizon of the table of recent proposals (8 bytes, big-endian ms).
const RECENT_HORIZON: &str = "recent_horizon";
const PURGED: &str = "last_purged";
/// Where the state machine's position is kept (JSON `Position`, see
/// `state_machine`): a purge mark does not run ahead of it on disk (see the
/// module docs).
pub(crate) const APPLIED: &str = "sm_applied";
/// How long a purge past the log's end waits for the state machine to save
/// the position of a snapshot being installed (see [`LogStore::purge`]).
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The redb database holding Raft's durable state.
#[derive(Debug)]
pub(crate) struct RaftDb {
    db: Database,
    /// Snapshot installs in flight (see [`InstallInFlight`]).
    installs: std::sync::atomic::AtomicUsize,
}

/// Counts one snapshot install in flight on a [`RaftDb`] while it lives:
/// openraft purges the log past its end as it hands the snapshot to the state
/// machine, and that purge's mark waits for the state machine to save the
/// snapshot's position (see [`LogStore::purge`]).
pub(crate) struct InstallInFlight(Arc<RaftDb>);

impl InstallInFlight {
    /// Counts an install on `db` until dropped.
    pub(crate) fn new(db: Arc<RaftDb>) -> Self {
        db.installs.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(db)
    }
}

impl Drop for InstallInFlight {
    fn drop(&mut self) {
        self.0.installs.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// While a snapshot install is in flight on `db`, waits (polling the Raft
/// file, at most [`INSTALL_WAIT`]) until the state machine's saved position
/// covers `index`.
async fn wait_for_an_install(db: &Arc<RaftDb>, index: u64) -> Result<(), StorageError> {
    let deadline = tokio::time::Instant::now() + INSTALL_WAIT;
    while db.installs.load(std::sync::atomic::Ordering::Acquire) > 0 {
        let reader = db.clone();
        if blocking(move || reader.applied_on_disk()).await? >= index {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(write_err(Corrupt(format!(
                "purging the Raft log through {index}: the state machine did not save the position of the \
                 snapshot being installed within {INSTALL_WAIT:?} (did the install fail?)"
            ))));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A storage error reading Raft's state.
pub(crate) fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read(AnyError::new(&e)).into()
}

/// A storage error writing Raft's state.
pub(crate) fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write(AnyError::new(&e)).into()
}

impl RaftDb {
    /// Opens (or creates) the file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, ::redb::DatabaseError> {
        let mut builder = Builder::new();
        builder.set_check_integrity_on_open(true);
        Self::with_tables(builder.create(path)?)
    }

    /// A database kept in memory (for nodes whose store is in memory).
    pub(crate) fn in_memory() -> Result<Self, ::redb::DatabaseError> {
        Self::with_tables(Builder::new().create_with_backend(InMemoryBackend::new())?)
    }

    fn with_tables(db: Database) -> Result<Self, ::redb::DatabaseError> {
        let create = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let tx = db.begin_write()?;
            tx.open_table(LOG)?;
            tx.open_table(META)?;
            tx.open_table(RECENT)?;
            tx.commit()?;
            Ok(())
        };
        create().map_err(|e| {
            ::redb::DatabaseError::Storage(::redb::StorageError::Io(std::io::Error::other(e)))
        })?;
        Ok(Self { db, installs: std::sync::atomic::AtomicUsize::new(0) })
    }

    /// The incarnation of this file: drawn at random (never 0) and stored the
    /// first time it is asked for, the same ever after.
    ///
    /// # Errors
    ///
    /// The store's; a stored value that is not 8 bytes is a read error (a new
    /// number would make this node look like one that lost its state).
    pub(crate) fn incarnation(&self) -> Result<u64, StorageError> {
        if let Some(bytes) = self.get_meta(INCARNATION)? {
            return match <[u8; 8]>::try_from(bytes.as_slice()) {
                Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
                Err(_) => Err(read_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the raft file's incarnation is {} bytes, not 8", bytes.len()),
                ))),
            };
        }
        let incarnation = rand::random::<u64>().max(1);
        self.put_meta(&[(INCARNATION, &incarnation.to_be_bytes())])?;
        Ok(incarnation)
    }

    /// The value stored under `key` in the meta table.
    pub(crate) fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(META).map_err(read_err)?;
        Ok(table.get(key).map_err(read_err)?.map(|v| v.value().to_vec()))
    }

    /// Stores `values` in the meta table in one durable transaction.
    pub(crate) fn put_meta(&self, values: &[(&str, &[u8])]) -> Result<(), StorageError> {
        self.write_meta(values, None)
    }

    /// Stores `values` in the meta table and applies `rows` to the table of
    /// recent proposals, in one durable transaction.
    pub(crate) fn put_meta_and_recent(
        &self,
        values: &[(&str, &[u8])],
        rows: super::recent::Rows,
    ) -> Result<(), StorageError> {
        self.write_meta(values, Some(rows))
    }

    /// One durable transaction: `values` into the meta table, and `rows`, if
    /// any, into the table of recent proposals.
    fn write_meta(
        &self,
        values: &[(&str, &[u8])],
        rows: Option<super::recent::Rows>,
    ) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(META).map_err(write_err)?;
            for (k, v) in values {
                table.insert(*k, *v).map_err(write_err)?;
            }
            if let Some(rows) = rows {
                let mut recent = tx.open_table(RECENT).map_err(write_err)?;
                if rows.clear {
                    recent.retain(|_, _| false).map_err(write_err)?;
                } else {
                    recent.retain_in(..rows.drop_below, |_, _| false).map_err(write_err)?;
                }
                for (n, bytes) in &rows.insert {
                    recent.insert(*n, bytes.as_slice()).map_err(write_err)?;
                }
                table.insert(RECENT_HORIZON, rows.horizon_ms.to_be_bytes().as_slice()).map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
    }

    /// Every saved row of the table of recent proposals, by running number,
    /// and its horizon.
    pub(crate) fn recent_rows(&self) -> Result<super::recent::Saved, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(RECENT).map_err(read_err)?;
        let mut rows = Vec::new();
        for item in table.iter().map_err(read_err)? {
            let (n, v) = item.map_err(read_err)?;
            rows.push((n.value(), v.value().to_vec()));
        }
        let horizon = match tx.open_table(META).map_err(read_err)?.get(RECENT_HORIZON).map_err(read_err)? {
            None => 0,
            Some(v) => {
                let raw: [u8; 8] = v
                    .value()
                    .try_into()
                    .map_err(|_| read_err(Corrupt(format!("raft meta {RECENT_HORIZON}: not 8 bytes"))))?;
                u64::from_be_bytes(raw)
            }
        };
        Ok(super::recent::Saved { rows, horizon_ms: horizon })
    }

    /// Makes a node that led when it stopped win an election again before it
    /// leads: clears the "committed" mark of its saved vote for itself,
    /// keeping the term and the candidate (so it votes for nobody else in
    /// that term).
    ///
    /// openraft 0.9 resumes leadership at once from a committed vote of its
    /// own, with its commit index restored only as far as the applied
    /// position it finds. Its read index is then the greater of that and the
    /// first entry of its term, which can be behind writes it acknowledged
    /// before it stopped: a linearizable read could miss them. A new election
    /// appends a blank entry above every committed one, and reads wait for it.
    /// (etcd restarts every member as a follower.)
    pub(crate) fn forget_leadership(&self, me: u64) -> Result<(), StorageError> {
        let Some(mut vote) = self.get_json::<Vote<u64>>(VOTE)? else {
            return Ok(());
        };
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(me) {
            return Ok(());
        }
        vote.committed = false;
        let json = serde_json::to_vec(&vote).map_err(write_err)?;
        self.put_meta(&[(VOTE, &json)])
    }

    /// The index of the last entry the state machine's saved position
    /// covers (0 when none is saved).
    pub(crate) fn applied_on_disk(&self) -> Result<u64, StorageError> {
        /// The one field of the state machine's position read here.
        #[derive(serde::Deserialize)]
        struct Applied {
            last_applied: Option<LogId<u64>>,
        }
        Ok(self.get_json::<Applied>(APPLIED)?.and_then(|a| a.last_applied).map_or(0, |l| l.index))
    }

    /// A JSON value from the meta table.
    pub(crate) fn get_json<T: for<'de> serde::Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        match self.get_meta(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| read_err(Corrupt(format!("raft meta {key}: {e}")))),
        }
    }

    fn entries(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(LOG).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            out.push(decode_entry(v.value()).map_err(|e| read_err(Corrupt(format!("raft log: {e}"))))?);
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(LOG).map_err(read_err)?;
        match table.last().map_err(read_err)? {
            None => Ok(None),
            Some((_, v)) => {
                decode_entry(v.value()).map(Some).map_err(|e| read_err(Corrupt(format!("raft log: {e}"))))
            }
        }
    }

    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOG).map_err(write_err)?;
            for (index, bytes) in entries {
                table.insert(*index, bytes.as_slice()).map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
    }

    /// Removes the entries in `range`, and records `purged` as the last purged
    /// log id when given.
    fn remove(&self, range: (Bound<u64>, Bound<u64>), purged: Option<&[u8]>) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOG).map_err(write_err)?;
            table.retain_in::<u64, _>(range, |_, _| false).map_err(write_err)?;
            if let Some(purged) = purged {
                let mut meta = tx.open_table(META).map_err(write_err)?;
                meta.insert(PURGED, purged).map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
    }
}

/// Runs a blocking redb call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(write_err)?
}

/// Whether a follower's append, one write and one `fdatasync`, runs on the
/// task that waits for it, holding its worker thread, rather than on the
/// blocking pool: on a runtime of two workers or more, whose others serve the
/// node's other tasks meanwhile. The Raft core awaits the append either way,
/// and nothing else of Raft's runs meanwhile; what it saves is the hand-off to
/// a pool thread and the wake-up back, which under `bench_consensus`'s 16
/// writers took about 160 µs at p50 (360 µs at p90) on top of a 230 µs
/// `fdatasync`, on the path of every commit (the leader waits for a
/// follower's answer). Measured: sequential puts' p50 767 against 911 µs,
/// 16 writers' mean latency 3.67 against 3.86 ms. (`block_in_place` measured
/// worse than the pool: it moves the worker's queue to another thread at
/// every call.) On one worker (or a current-thread runtime, as the
/// simulation's) the pool keeps the node's other tasks running.
fn on_this_worker() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| {
        h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread && h.metrics().num_workers() >= 2
    })
}

/// Opens the log's segment files in `dir` ([`WAL_DIR`]), moving the entries
/// an earlier build kept in `db`'s log table there first (into a directory
/// of its own, renamed into place once synced, so a crash midway leaves the
/// table as it was), then emptying the table.
pub(crate) fn open_wal(db: &RaftDb, dir: &Path) -> Result<Wal, StorageError> {
    let purged = db.get_json::<LogId<u64>>(PURGED)?.map(|l| l.index);
    let path = dir.join(WAL_DIR);
    let in_table = db.last_entry()?.is_some();
    if !path.exists() && in_table {
        let staging = dir.join(format!("{WAL_DIR}.new"));
        let move_over = || -> std::io::Result<()> {
            if staging.exists() {
                std::fs::remove_dir_all(&staging)?;
            }
            let wal = Wal::open(&staging, purged)?;
            let entries = db.entries(Bound::Unbounded, Bound::Unbounded).map_err(std::io::Error::other)?;
            for chunk in entries.chunks(256) {
                let encoded: Vec<(u64, Vec<u8>)> =
                    chunk.iter().map(|e| (e.log_id.index, encode_entry(e))).collect();
                wal.append(&encoded)?;
            }
            drop(wal);
            std::fs::File::open(&staging)?.sync_all()?;
            std::fs::rename(&staging, &path)?;
            // (The staging log's lock file is no log's any more.)
            let _ = std::fs::remove_file(dir.join(format!("{WAL_DIR}.new.lock")));
            std::fs::File::open(dir)?.sync_all()
        };
        move_over().map_err(write_err)?;
        tracing::info!(dir = %path.display(), "moved the raft log from raft.redb to segment files");
    }
    let wal = Wal::open(&path, purged).map_err(read_err)?;
    if in_table {
        // Entries in both: a build that keeps the log in raft.redb ran on this
        // directory after this one had moved it. Its entries may be newer.
        let table_last = db.last_entry()?.map(|e| e.log_id.index);
        let wal_last = wal.bounds().map(|(_, last)| last).or(purged);
        if table_last > wal_last {
            return Err(read_err(Corrupt(format!(
                "raft.redb holds log entries up to {} beyond {} (up to {:?}): an earlier build ran on this \
                 data directory after this one; move {} aside to start from raft.redb's log",
                table_last.unwrap_or_default(),
                path.display(),
                wal_last,
                path.display()
            ))));
        }
        db.remove((Bound::Unbounded, Bound::Unbounded), None)?;
    }
    Ok(wal)
}

/// The Raft log and vote ([`RaftLogStorage`]): the vote and purge mark in a
/// [`RaftDb`], the entries in segment files or in its log table.
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    db: Arc<RaftDb>,
    wal: Option<Arc<Wal>>,
    /// This node's Raft id.
    me: u64,
    /// The leader id of the term this node leads, when the last vote saved
    /// is its own, committed: entries stamped with it are its own proposals
    /// (see "The leader's own entries" above).
    leading: Option<CommittedLeaderId<u64>>,
    /// The entries appended last, shared with the log's readers.
    recent: Arc<parking_lot::Mutex<RecentEntries>>,
    /// Purges behind the log's end, finished off the Raft core's path.
    purging: Arc<parking_lot::Mutex<Purging>>,
    /// Set when finishing a purge off the core's path failed: the next purge
    /// finishes on it, so that its error reaches openraft.
    purge_failed: Arc<std::sync::atomic::AtomicBool>,
    /// The last purge's log id, set once the log forgot its entries, before
    /// its mark is on disk: what the log reports as purged.
    forgotten: Arc<parking_lot::Mutex<Option<LogId<u64>>>>,
}

/// The disk's side of purges (see [`LogStore::purge`]): the mark written
/// last, and segment files the log forgot, each deleted once a mark at or
/// above the purge that forgot it is on disk. One purge at a time holds it,
/// so marks only rise and no file goes before a mark covers it.
#[derive(Debug, Default)]
struct Purging {
    /// The index of the last purge mark written durably by this log.
    marked: Option<u64>,
    /// Segment files forgotten and not deleted yet, each with the index of
    /// the purge that forgot it.
    unneeded: Vec<(std::path::PathBuf, u64)>,
}

impl Purging {
    /// Writes the purge mark `index` (its log id as JSON, `json`) durably,
    /// unless a mark at or above it was written or, for a purge behind the
    /// log's end (`past_end` false), the state machine's position on disk is
    /// behind it (then a later purge marks it), and deletes every forgotten
    /// file a mark now covers, `unneeded` (forgotten by this purge) among
    /// them. On an error, the files not deleted are kept for the next purge.
    fn mark_and_delete(
        &mut self,
        db: &RaftDb,
        wal: &Wal,
        index: u64,
        past_end: bool,
        json: &[u8],
        unneeded: Vec<std::path::PathBuf>,
    ) -> Result<(), StorageError> {
        self.unneeded.extend(unneeded.into_iter().map(|path| (path, index)));
        // A restart replays the log from the saved position: the entries
        // after it stay until that position passes them. (Past the log's
        // end the purge waited for an install's position before this, and
        // the mark cannot wait longer: the next append leaves a gap below it.)
        if self.marked.is_none_or(|m| m < index) && (past_end || db.applied_on_disk()? >= index) {
            db.put_meta(&[(PURGED, json)])?;
            self.marked = Some(index);
        }
        let Some(marked) = self.marked else { return Ok(()) };
        let covered: Vec<std::path::PathBuf> =
            self.unneeded.iter().filter(|(_, i)| *i <= marked).map(|(path, _)| path.clone()).collect();
        wal.delete_segments(&covered).map_err(|e| write_err(wal.in_log(e)))?;
        self.unneeded.retain(|(_, i)| *i > marked);
        Ok(())
    }
}

impl LogStore {
    /// The log kept in `db` (entries in its log table: a node in memory).
    pub(crate) fn new(db: Arc<RaftDb>) -> Self {
        Self {
            db,
            wal: None,
            me: 0,
            leading: None,
            recent: Arc::default(),
            purging: Arc::default(),
            purge_failed: Arc::default(),
            forgotten: Arc::default(),
        }
    }

    /// The log of node `me` kept in `db`, its entries in `wal` (a node on disk).
    pub(crate) fn with_wal(db: Arc<RaftDb>, wal: Wal, me: u64) -> Self {
        Self { wal: Some(Arc::new(wal)), me, ..Self::new(db) }
    }

    /// How far the log is on disk, for what must not act on an entry before
    /// it is; `None` when every append is synced before it is reported (a
    /// node in memory).
    pub(crate) fn durable(&self) -> Option<watch::Receiver<Durable>> {
        self.wal.as_ref().map(|wal| wal.durable())
    }
}

/// `(start, end)` as a half-open range of indexes.
fn half_open(start: Bound<u64>, end: Bound<u64>) -> (u64, u64) {
    let from = match start {
        Bound::Included(i) => i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match end {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

/// The entries of `wal` in `from..to`, decoded.
fn wal_entries(wal: &Wal, from: u64, to: u64) -> Result<Vec<Entry>, StorageError> {
    wal.read(from, to)
        .map_err(read_err)?
        .iter()
        .map(|bytes| decode_entry(bytes).map_err(|e| read_err(Corrupt(format!("raft log: {e}")))))
        .collect()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        let (from, to) = half_open(start, end);
        if let Some(kept) = self.recent.lock().read(from, to) {
            return Ok(kept);
        }
        match &self.wal {
            Some(wal) => {
                let held = wal.bounds().map_or(0, |(first, last)| {
                    to.min(last.saturating_add(1)).saturating_sub(from.max(first))
                });
                if held <= INLINE_READ {
                    return wal_entries(wal, from, to);
                }
                let wal = wal.clone();
                blocking(move || wal_entries(&wal, from, to)).await
            }
            None => {
                let db = self.db.clone();
                blocking(move || db.entries(start, end)).await
            }
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let wal = self.wal.clone();
        let forgotten = *self.forgotten.lock();
        blocking(move || {
            // A purge whose mark is not on disk yet counts.
            let marked: Option<LogId<u64>> = db.get_json(PURGED)?;
            let last_purged_log_id = marked.max(forgotten);
            let last_entry = match &wal {
                Some(wal) => match wal.bounds() {
                    Some((_, last)) => wal_entries(wal, last, last + 1)?.pop(),
                    None => None,
                },
                None => db.last_entry()?,
            };
            let last = last_entry.map(|e| e.log_id).or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id: last })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let wal = self.wal.clone();
        let json = serde_json::to_vec(vote).map_err(write_err)?;
        let own = (vote.is_committed() && vote.leader_id.node_id == self.me)
            .then(|| CommittedLeaderId::new(vote.leader_id.term, self.me));
        // Whatever this node says under another vote must be about entries on
        // disk: its own, written unsynced while it led, are synced first.
        self.leading = None;
        blocking(move || {
            if let Some(wal) = &wal {
                wal.sync_all().map_err(|e| write_err(wal.in_log(e)))?;
            }
            db.put_meta(&[(VOTE, &json)])
        })
        .await?;
        self.leading = own;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        let db = self.db.clone();
        blocking(move || db.get_json(VOTE)).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let own = self.leading.is_some()
            && entries.iter().all(|e| self.leading.as_ref() == Some(&e.log_id.leader_id));
        let encoded: Vec<(u64, Vec<u8>)> =
            entries.iter().map(|e| (e.log_id.index, encode_entry(e))).collect();
        let sizes: Vec<usize> = encoded.iter().map(|(_, bytes)| bytes.len()).collect();
        let result = match &self.wal {
            // This leader's own entries: written now (a write to the page
            // cache, on this task, unless a new segment must be made and the
            // full one synced first), reported at once, synced in the background.
            Some(wal) if own => {
                let written = if wal.starts_a_segment() {
                    let wal = wal.clone();
                    blocking(move || wal.append_unsynced(&encoded).map_err(|e| write_err(wal.in_log(e))))
                        .await
                } else {
                    wal.append_unsynced(&encoded).map_err(|e| write_err(wal.in_log(e)))
                };
                written.map(|start_a_flush| {
                    if start_a_flush {
                        let flusher = wal.clone();
                        tokio::task::spawn_blocking(move || flusher.flush());
                    }
                })
            }
            // A follower's append (or a new leader's of entries it did not
            // make): written and synced before it is reported, which is what
            // this node's Raft core waits for before it answers the leader.
            Some(wal) if on_this_worker() => wal.append(&encoded).map_err(|e| write_err(wal.in_log(e))),
            Some(wal) => {
                let wal = wal.clone();
                blocking(move || wal.append(&encoded).map_err(|e| write_err(wal.in_log(e)))).await
            }
            None => {
                let db = self.db.clone();
                blocking(move || db.append(&encoded)).await
            }
        };
        if let (Ok(()), Some(wal)) = (&result, &self.wal)
            && wal.zeros_due()
        {
            let wal = Arc::downgrade(wal);
            tokio::task::spawn_blocking(move || Wal::zero_ahead(&wal));
        }
        // Kept before openraft hears of the append, which it may read back at once.
        match &result {
            Ok(()) => self.recent.lock().keep(entries.into_iter().zip(sizes).collect()),
            Err(_) => self.recent.lock().clear(),
        }
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.recent.lock().drop_from(log_id.index);
        if let Some(wal) = &self.wal {
            let wal = wal.clone();
            return blocking(move || wal.truncate(log_id.index).map_err(write_err)).await;
        }
        let db = self.db.clone();
        blocking(move || db.remove((Bound::Included(log_id.index), Bound::Unbounded), None)).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let json = serde_json::to_vec(&log_id).map_err(write_err)?;
        self.recent.lock().drop_through(log_id.index);
        if let Some(wal) = &self.wal {
            // The mark first: once it is on disk, a reopened log skips what
            // the deleted segments held, whether or not they were deleted.
            // Behind the log's end, the purge returns once the log forgot the
            // entries, and the mark and the deletions follow on the blocking
            // pool: the Raft core awaits a purge, and a mark's commit (an
            // fsync of the Raft file) took 100 to 140 ms right after a
            // snapshot's. A crash before the mark is on disk leaves more log
            // than needed, gapless, and the files are deleted only after it.
            //
            // Past the log's end (openraft purges there after installing a
            // snapshot beyond the log, as the state machine installs it) the
            // next append would leave a gap that only the mark explains, so
            // the purge returns once the mark is down; and while an install
            // is in flight the mark waits for the state machine to save the
            // snapshot's position, or a restart would replay entries the
            // purge removed from a position before them.
            let past_end = wal.bounds().is_none_or(|(_, last)| log_id.index >= last);
            if past_end {
                wait_for_an_install(&db, log_id.index).await?;
            }
            let inline = past_end || self.purge_failed.swap(false, std::sync::atomic::Ordering::AcqRel);
            let unneeded = wal.forget_through(log_id.index);
            {
                let mut forgotten = self.forgotten.lock();
                *forgotten = (*forgotten).max(Some(log_id));
            }
            let (wal, purging) = (wal.clone(), self.purging.clone());
            let index = log_id.index;
            if inline {
                return blocking(move || {
                    purging.lock().mark_and_delete(&db, &wal, index, past_end, &json, unneeded)
                })
                .await;
            }
            let failed = self.purge_failed.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = purging.lock().mark_and_delete(&db, &wal, index, false, &json, unneeded) {
                    tracing::warn!(%error, index, "finishing a purge of the Raft log failed; the next purge tries again");
                    failed.store(true, std::sync::atomic::Ordering::Release);
                }
            });
            return Ok(());
        }
        blocking(move || db.remove((Bound::Unbounded, Bound::Included(log_id.index)), Some(&json))).await
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

    use super::super::Entry;
    use super::super::codec::encode_entry;
    use super::{PURGED, RECENT_ENTRIES, RaftDb, RecentEntries, VOTE, WAL_DIR, open_wal};

    /// Blank entries of term 1 at `indexes`, each counted as `size` bytes.
    fn kept(indexes: std::ops::RangeInclusive<u64>, size: usize) -> Vec<(Entry, usize)> {
        let leader = CommittedLeaderId::new(1, 1);
        indexes
            .map(|i| (Entry { log_id: LogId::new(leader, i), payload: EntryPayload::Blank }, size))
            .collect()
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|e| e.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_reads_they_cover_and_follow_truncation_and_purge() {
        let mut r = RecentEntries::default();
        assert_eq!(indexes(r.read(1, 2)), None, "nothing kept");
        r.keep(kept(5..=9, 10));
        assert_eq!(indexes(r.read(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(r.read(7, 9)), Some(vec![7, 8]));
        assert_eq!(indexes(r.read(7, 7)), Some(vec![]));
        assert_eq!(indexes(r.read(4, 8)), None, "4 is not kept: the log answers");
        assert_eq!(indexes(r.read(8, 11)), None, "10 is not kept");
        assert_eq!(indexes(r.read(5, u64::MAX)), None, "an open range goes to the log");
        // A truncation drops 8 on; an append from 8 follows it.
        r.drop_from(8);
        assert_eq!(r.bounds(), Some((5, 7)));
        r.keep(kept(8..=8, 10));
        assert_eq!(indexes(r.read(5, 9)), Some(vec![5, 6, 7, 8]));
        // An append over kept entries replaces them; one after a gap replaces all.
        r.keep(kept(7..=12, 10));
        assert_eq!((r.bounds(), r.bytes), (Some((5, 12)), 80));
        r.keep(kept(20..=21, 10));
        assert_eq!((r.bounds(), r.bytes), (Some((20, 21)), 20));
        r.drop_through(20);
        assert_eq!((r.bounds(), r.bytes), (Some((21, 21)), 10));
        r.clear();
        assert_eq!((r.bounds(), r.bytes), (None, 0));
    }

    #[test]
    fn recent_entries_are_bounded_by_count_and_bytes() {
        let mut r = RecentEntries::default();
        let n = RECENT_ENTRIES as u64;
        r.keep(kept(1..=n + 10, 1));
        assert_eq!(r.bounds(), Some((11, n + 10)));
        r.keep(kept(n + 11..=n + 12, super::RECENT_BYTES));
        assert_eq!(r.bounds(), Some((n + 12, n + 12)), "one entry over the bytes is still kept alone");
    }

    /// Blank entries of `leader` at `indexes`, encoded as the log keeps them.
    fn blank_entries(
        leader: CommittedLeaderId<u64>,
        indexes: std::ops::RangeInclusive<u64>,
    ) -> Vec<(u64, Vec<u8>)> {
        indexes
            .map(|i| {
                (i, encode_entry(&Entry { log_id: LogId::new(leader, i), payload: EntryPayload::Blank }))
            })
            .collect()
    }

    #[test]
    fn entries_an_earlier_build_kept_in_raft_redb_move_to_segment_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft.redb")).unwrap();
        let entries = blank_entries(CommittedLeaderId::new(2, 1), 3..=9);
        db.append(&entries).unwrap();
        let purged = serde_json::to_vec(&LogId::new(CommittedLeaderId::new(1, 1), 2)).unwrap();
        db.put_meta(&[(PURGED, &purged)]).unwrap();
        // A move a crash interrupted left a staging directory: it is redone.
        std::fs::create_dir_all(dir.path().join(format!("{WAL_DIR}.new"))).unwrap();

        let wal = open_wal(&db, dir.path()).unwrap();
        assert_eq!(wal.bounds(), Some((3, 9)));
        assert_eq!(wal.read(3, 10).unwrap(), entries.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>());
        assert!(db.entries(Bound::Unbounded, Bound::Unbounded).unwrap().is_empty(), "the table is emptied");
        assert!(!dir.path().join(format!("{WAL_DIR}.new")).exists());
        assert!(!dir.path().join(format!("{WAL_DIR}.new.lock")).exists());
        drop(wal);
        // Opened again, the files are the log.
        assert_eq!(open_wal(&db, dir.path()).unwrap().bounds(), Some((3, 9)));

        // An earlier build ran after the move and appended to the table: refused.
        let later =
            Entry { log_id: LogId::new(CommittedLeaderId::new(2, 1), 10), payload: EntryPayload::Blank };
        db.append(&[(10, encode_entry(&later))]).unwrap();
        let err = open_wal(&db, dir.path()).unwrap_err();
        assert!(err.to_string().contains("earlier build"), "{err}");
    }

    #[tokio::test]
    async fn only_the_leader_s_own_vote_skips_the_disk_and_any_other_vote_syncs_what_it_wrote() {
        use openraft::storage::RaftLogStorage;

        let (_dir, db, mut log) = log_on_disk(7);
        let durable = log.durable().unwrap();
        // Not committed, or another node's: appends are synced.
        for vote in [Vote::new(3, 7), Vote::new_committed(3, 8)] {
            log.save_vote(&vote).await.unwrap();
            assert_eq!(log.leading, None, "{vote}");
        }
        log.save_vote(&Vote::new_committed(4, 7)).await.unwrap();
        assert_eq!(log.leading, Some(CommittedLeaderId::new(4, 7)));
        assert_eq!(saved(&db), Vote::new_committed(4, 7));

        // As leader it wrote entries not yet on disk; then it steps down.
        let wal = log.wal.clone().unwrap();
        let own = blank_entries(CommittedLeaderId::new(4, 7), 1..=3);
        wal.append_unsynced(&own).unwrap();
        assert_eq!(durable.borrow().end, 1);
        log.save_vote(&Vote::new(5, 8)).await.unwrap();
        assert_eq!(durable.borrow().end, 4, "on disk before the new vote is");
        assert_eq!(log.leading, None);
    }

    fn saved(db: &RaftDb) -> Vote<u64> {
        db.get_json(VOTE).unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_purge_finishing_in_the_background_that_fails_makes_the_next_one_fail_to_its_caller() {
        use openraft::storage::RaftLogStorage;

        let (dir, db, mut log, leader) = log_applied_through(9);
        // A forgotten "segment" that cannot be deleted (a directory with a file in it).
        let stuck = dir.path().join("stuck");
        std::fs::create_dir(&stuck).unwrap();
        std::fs::write(stuck.join("inside"), b"x").unwrap();
        log.purging.lock().unneeded.push((stuck.clone(), 1));

        log.purge(LogId::new(leader, 2)).await.unwrap();
        within_5s(|| log.purge_failed.load(std::sync::atomic::Ordering::Acquire)).await;
        assert!(log.purge_failed.load(std::sync::atomic::Ordering::Acquire), "the failure is noted");
        assert_eq!(mark(&db), Some(2), "the mark went down before the deletion failed");
        // The next purge finishes inline, and its caller hears the error.
        let err = log.purge(LogId::new(leader, 4)).await.unwrap_err();
        assert!(err.to_string().contains("raft log"), "{err}");
        assert_eq!(mark(&db), Some(4));
        // Once the file can go, a purge deletes it and succeeds again.
        std::fs::remove_file(stuck.join("inside")).unwrap();
        std::fs::remove_dir(&stuck).unwrap();
        std::fs::write(&stuck, b"segment").unwrap();
        log.purge(LogId::new(leader, 5)).await.unwrap();
        within_5s(|| !stuck.exists()).await;
        assert!(!stuck.exists());
        assert!(!log.purge_failed.load(std::sync::atomic::Ordering::Acquire));
    }

    /// A log on disk of node `id` in a new temporary directory, with its Raft file.
    fn log_on_disk(id: u64) -> (tempfile::TempDir, std::sync::Arc<RaftDb>, super::LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(RaftDb::open(&dir.path().join("raft.redb")).unwrap());
        let wal = open_wal(&db, dir.path()).unwrap();
        let log = super::LogStore::with_wal(db.clone(), wal, id);
        (dir, db, log)
    }

    /// [`log_on_disk`] of node 1 holding blank entries 1 to `last` of term
    /// 1, all applied as the state machine's saved position says; and their
    /// leader id.
    fn log_applied_through(
        last: u64,
    ) -> (tempfile::TempDir, std::sync::Arc<RaftDb>, super::LogStore, CommittedLeaderId<u64>) {
        let (dir, db, log) = log_on_disk(1);
        let leader = CommittedLeaderId::new(1, 1);
        log.wal.clone().unwrap().append(&blank_entries(leader, 1..=last)).unwrap();
        save_applied(&db, LogId::new(leader, last));
        (dir, db, log, leader)
    }

    /// Waits, checking every 10 ms for at most 5 s, until `done` holds
    /// (the caller asserts what it waited for).
    async fn within_5s(done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Saves a state machine position at `applied`, as the state machine does.
    fn save_applied(db: &RaftDb, applied: LogId<u64>) {
        let json = serde_json::json!({ "last_applied": applied }).to_string();
        db.put_meta(&[(super::APPLIED, json.as_bytes())]).unwrap();
    }

    #[test]
    fn a_forgotten_segment_goes_once_a_mark_covers_its_purge_and_marks_wait_for_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft.redb")).unwrap();
        let wal = open_wal(&db, dir.path()).unwrap();
        let leader = CommittedLeaderId::new(1, 1);
        let files: Vec<std::path::PathBuf> =
            [100, 200].iter().map(|i| dir.path().join(format!("old-{i}"))).collect();
        for f in &files {
            std::fs::write(f, b"segment").unwrap();
        }
        let json = |i: u64| serde_json::to_vec(&LogId::new(leader, i)).unwrap();
        let mut purging = super::Purging::default();
        save_applied(&db, LogId::new(leader, 150));
        // The later purge finishes first, its mark ahead of the position:
        // not marked, and its file stays.
        purging.mark_and_delete(&db, &wal, 200, false, &json(200), vec![files[1].clone()]).unwrap();
        assert_eq!(mark(&db), None);
        // The earlier one marks 100 and deletes only what 100 covers.
        purging.mark_and_delete(&db, &wal, 100, false, &json(100), vec![files[0].clone()]).unwrap();
        assert_eq!(mark(&db), Some(100));
        assert!(!files[0].exists());
        assert!(files[1].exists(), "forgotten by the purge at 200, which no mark covers yet");
        // Once the position passes 200, the next purge marks and deletes it.
        save_applied(&db, LogId::new(leader, 260));
        purging.mark_and_delete(&db, &wal, 250, false, &json(250), Vec::new()).unwrap();
        assert_eq!(mark(&db), Some(250));
        assert!(!files[1].exists());
    }

    /// The purge mark's index, as saved.
    fn mark(db: &RaftDb) -> Option<u64> {
        db.get_json::<LogId<u64>>(PURGED).unwrap().map(|l| l.index)
    }

    #[tokio::test]
    async fn a_purge_behind_the_end_marks_later_one_past_it_before_returning_and_marks_only_rise() {
        use openraft::storage::RaftLogStorage;

        let (_dir, db, mut log, leader) = log_applied_through(5);

        // Behind the end: forgotten at once, marked off the caller's path.
        log.purge(LogId::new(leader, 3)).await.unwrap();
        assert_eq!(log.wal.as_ref().unwrap().bounds(), Some((4, 5)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(LogId::new(leader, 3)), "reported before it is marked");
        within_5s(|| mark(&db) == Some(3)).await;
        assert_eq!(mark(&db), Some(3), "the mark follows");

        // Past the end (a snapshot installed beyond the log): the next append
        // starts above a gap only the mark explains, so it is down on return,
        // and not before the state machine saved the installed position.
        let installing = super::InstallInFlight::new(db.clone());
        let purge = tokio::spawn(async move {
            log.purge(LogId::new(leader, 9)).await.unwrap();
            log
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!purge.is_finished(), "it waits for the installed position");
        assert_eq!(mark(&db), Some(3));
        save_applied(&db, LogId::new(leader, 9));
        let log = purge.await.unwrap();
        drop(installing);
        assert_eq!(mark(&db), Some(9));
        assert_eq!(log.wal.as_ref().unwrap().bounds(), None);

        // A purge finishing after a later one leaves the later mark.
        let older = serde_json::to_vec(&LogId::new(leader, 7)).unwrap();
        let wal = log.wal.clone().unwrap();
        log.purging.lock().mark_and_delete(&db, &wal, 7, false, &older, Vec::new()).unwrap();
        assert_eq!(mark(&db), Some(9));
    }

    #[test]
    fn a_node_that_led_must_win_an_election_again_and_keeps_its_term_and_candidate() {
        let db = RaftDb::in_memory().unwrap();
        db.forget_leadership(7).unwrap();
        assert!(db.get_json::<Vote<u64>>(VOTE).unwrap().is_none(), "nothing saved, nothing written");

        let led = Vote::new_committed(4, 7);
        db.put_meta(&[(VOTE, &serde_json::to_vec(&led).unwrap())]).unwrap();
        db.forget_leadership(7).unwrap();
        assert_eq!(saved(&db), Vote::new(4, 7));

        // A vote for another node, or one never committed, stays as it is.
        let followed = Vote::new_committed(5, 3);
        db.put_meta(&[(VOTE, &serde_json::to_vec(&followed).unwrap())]).unwrap();
        db.forget_leadership(7).unwrap();
        assert_eq!(saved(&db), followed);
    }
}
