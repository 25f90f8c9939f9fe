//! The Raft log and vote, durable in a redb file of their own (`raft.redb`),
//! which also keeps the state machine's position and the current snapshot
//! (see `state_machine`). Every write commits with fsync (redb's immediate
//! durability) before openraft hears that it is durable. The store also keeps
//! the end of the log in memory (the last log id, and the latest
//! [`TAIL_ENTRIES`] entries appended), for openraft's readers and for the
//! leader's early replication (`parallel_append`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use ::redb::backends::InMemoryBackend;
use ::redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogId, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};

use parking_lot::Mutex;

use super::codec::{Corrupt, decode_entry, encode_entry};
use super::parallel_append::ParallelAppend;
use super::{Entry, StorageError, TypeConfig};

/// Log entries by index (protobuf `RaftLogEntry`).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small JSON values by name: the vote, the last purged log id, the state
/// machine's position, the current snapshot's metadata; and the snapshot's bytes.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const PURGED: &str = "last_purged";

/// The redb database holding Raft's durable state.
#[derive(Debug)]
pub(crate) struct RaftDb {
    db: Database,
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
            tx.commit()?;
            Ok(())
        };
        create().map_err(|e| {
            ::redb::DatabaseError::Storage(::redb::StorageError::Io(std::io::Error::other(e)))
        })?;
        Ok(Self { db })
    }

    /// The value stored under `key` in the meta table.
    pub(crate) fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(META).map_err(read_err)?;
        Ok(table.get(key).map_err(read_err)?.map(|v| v.value().to_vec()))
    }

    /// Stores `values` in the meta table in one durable transaction.
    pub(crate) fn put_meta(&self, values: &[(&str, &[u8])]) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(META).map_err(write_err)?;
            for (k, v) in values {
                table.insert(*k, *v).map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
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

/// Entries kept in memory at the end of the log, to serve openraft's readers
/// (the replication streams and the state machine, which read what was just
/// appended) without a read transaction on a blocking thread.
const TAIL_ENTRIES: usize = 256;

/// The Raft log and vote ([`RaftLogStorage`]), over a [`RaftDb`].
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    db: Arc<RaftDb>,
    /// The leader's new entries go to its peers before its fsync.
    parallel: Arc<ParallelAppend>,
    /// The end of the log, kept by every change of it (all of which go
    /// through this store; readers share it).
    tail: Arc<Mutex<Tail>>,
}

/// What the store knows of the end of its log.
#[derive(Debug, Default)]
struct Tail {
    /// The id of the last entry (or the last purged one when the log is
    /// empty): `None` when not known (at start, and since a truncation);
    /// `Some(None)` for a log that never had an entry.
    last: Option<Option<LogId<u64>>>,
    /// The latest entries durably appended, by index: consecutive, ending at
    /// the log's last entry, at most [`TAIL_ENTRIES`].
    entries: BTreeMap<u64, Entry>,
}

impl Tail {
    /// The entries from `lo` up to `hi` (exclusive; `None`: to the end), if
    /// the tail holds all of them.
    fn serve(&self, lo: u64, hi: Option<u64>) -> Option<Vec<Entry>> {
        let (&first, _) = self.entries.first_key_value()?;
        if lo < first {
            return None;
        }
        let hi = hi.unwrap_or(u64::MAX);
        if hi <= lo {
            return Some(Vec::new());
        }
        Some(self.entries.range(lo..hi).map(|(_, e)| e.clone()).collect())
    }

    /// `entries` were appended durably.
    fn appended(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        if self.entries.last_key_value().is_some_and(|(&i, _)| i + 1 != first.log_id.index) {
            self.entries.clear();
        }
        for e in entries {
            self.entries.insert(e.log_id.index, e.clone());
        }
        while self.entries.len() > TAIL_ENTRIES {
            self.entries.pop_first();
        }
    }
}

impl LogStore {
    /// The log kept in `db`, whose leader appends replicate early through `parallel`.
    pub(crate) fn new(db: Arc<RaftDb>, parallel: Arc<ParallelAppend>) -> Self {
        Self { db, parallel, tail: Arc::new(Mutex::new(Tail::default())) }
    }
}

/// The id of the last entry in `db`'s log, else the last purged one.
fn last_log_id(db: &RaftDb) -> Result<Option<LogId<u64>>, StorageError> {
    let last_purged_log_id: Option<LogId<u64>> = db.get_json(PURGED)?;
    Ok(db.last_entry()?.map(|e| e.log_id).or(last_purged_log_id))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        let lo = match start {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let hi = match end {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = self.tail.lock().serve(lo, hi) {
            return Ok(entries);
        }
        let db = self.db.clone();
        blocking(move || db.entries(start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let state = blocking(move || {
            let last_purged_log_id: Option<LogId<u64>> = db.get_json(PURGED)?;
            let last = db.last_entry()?.map(|e| e.log_id).or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id: last })
        })
        .await?;
        self.tail.lock().last = Some(state.last_log_id);
        Ok(state)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let json = serde_json::to_vec(vote).map_err(write_err)?;
        blocking(move || db.put_meta(&[(VOTE, &json)])).await
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
        let encoded: Vec<(u64, Vec<u8>)> =
            entries.iter().map(|e| (e.log_id.index, encode_entry(e))).collect();
        let known = self.tail.lock().last;
        let prev = match known {
            Some(prev) => prev,
            None => {
                let db = self.db.clone();
                blocking(move || last_log_id(&db)).await?
            }
        };
        self.parallel.send(prev, &entries);
        self.tail.lock().last = entries.last().map(|e| Some(e.log_id)).or(Some(prev));
        let db = self.db.clone();
        let result = blocking(move || db.append(&encoded)).await;
        match &result {
            Ok(()) => {
                self.tail.lock().appended(&entries);
                callback.log_io_completed(Ok(()))
            }
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let db = self.db.clone();
        {
            let mut tail = self.tail.lock();
            tail.last = None;
            tail.entries.split_off(&log_id.index);
        }
        blocking(move || db.remove((Bound::Included(log_id.index), Bound::Unbounded), None)).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let json = serde_json::to_vec(&log_id).map_err(write_err)?;
        {
            let mut tail = self.tail.lock();
            tail.entries = tail.entries.split_off(&log_id.index.saturating_add(1));
            // A purge past the last entry empties the log: the purged id is its last.
            if let Some(known) = tail.last
                && known.is_none_or(|l| l.index <= log_id.index)
            {
                tail.last = Some(Some(log_id));
            }
        }
        blocking(move || db.remove((Bound::Unbounded, Bound::Included(log_id.index)), Some(&json))).await
    }
}
