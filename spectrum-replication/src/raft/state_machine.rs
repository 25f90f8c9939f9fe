//! The Raft state machine: the node's [`ConfigStore`], fed with committed log
//! entries (see the [module docs](super)).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StoredMembership};
use prost::Message;
use serde::{Deserialize, Serialize};
use spectrum_core::Timestamp;
use tokio::sync::watch;

use super::codec::{Answers, Applied, Corrupt, Proposal};
use super::log_store::{APPLIED, RaftDb, blocking, read_err, write_err};
use super::recent::{Mark, Recent, Seen};
use super::wal::Durable;
use super::{Entry, RaftMember, SEQ_PER_ENTRY, StorageError, TypeConfig};
use crate::origin::Origin;
use crate::proto;
use crate::record::{DEFAULT_MAX_VALUE_BYTES, Record, VersionToken, VersionVector, Write};
use crate::store::ConfigStore;
use crate::wire::records_from_wire;

/// The current snapshot's metadata (JSON) and bytes (protobuf `RaftSnapshot`).
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

/// A save of the applied position (after a [`ConfigStore::sync`]) starts once
/// this many entries were applied since the last one started...
const SAVE_EVERY_ENTRIES: u64 = 1_000;
/// ... or once this long has passed since, when an entry is applied.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// How far the state machine has applied the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Position {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, RaftMember>,
    /// The stamp of the last record applied: the next entry's records are
    /// stamped above it (wall ms, logical).
    last_stamp: (u64, u32),
}

impl Position {
    fn last_stamp(&self) -> Timestamp {
        Timestamp::new(self.last_stamp.0, self.last_stamp.1)
    }
}

/// The stamp right after `t`.
fn successor(t: Timestamp) -> Timestamp {
    match t.logical.checked_add(1) {
        Some(logical) => Timestamp::new(t.wall_ms, logical),
        None => Timestamp::new(t.wall_ms.saturating_add(1), 0),
    }
}

/// The state machine over a node's store.
///
/// # Durability
///
/// Entries are merged into the store with
/// [`merge_deferred`](ConfigStore::merge_deferred): no fsync of the store per
/// batch, because the Raft log, fsynced on a majority before an entry commits,
/// is the truth. The one rule is that the saved applied position is never
/// durable ahead of the store: it is saved only right after a
/// [`sync`](ConfigStore::sync) of the store, every [`SAVE_EVERY_ENTRIES`]
/// entries or [`SAVE_EVERY`], and always before a snapshot is built (the log
/// is purged only behind a snapshot, so every entry the saved position does
/// not cover is still in the log).
///
/// Those periodic saves run off the apply path ([`Saves`]): the position and
/// the recent proposals are taken when the save starts, after the entries they
/// cover were merged, so the store's sync that the save begins with makes
/// those entries durable, and applying goes on meanwhile. Made inline, its
/// two fsyncs (the store's, then the Raft file's) stopped every apply once a
/// second: under `bench_consensus`'s 16 writers no put came back for 24 to 35
/// ms, every 0.9 to 1 s, and about 100 puts a round took over 20 ms; off the
/// path, no such gap, and 17 puts a round over 20 ms.
///
/// After a crash the store holds at least what the saved position covers,
/// and may hold more (a sync, or a durable write such as a tombstone sweep,
/// made later entries durable before the position was saved). openraft
/// applies the committed entries after the saved position again. Those the
/// store already holds (their write numbers are in its digest) are not
/// decided again: their conditions would be read against a store that is
/// ahead of them, and a different decision would leak, through the writes
/// seen by the next entries, into entries the store lost. Only their stamps
/// and proposal ids are replayed. The entries the store lost are decided
/// again against exactly the store they were first decided against, so they
/// write the same records. Every answer to a client was already given by the
/// node that applied the entry first.
///
/// # Entries not yet on disk
///
/// On the leader, openraft may report an entry committed before the leader's
/// own copy is on disk (see `log_store`, "The leader's own entries"): an
/// entry is applied only once the log says it is on disk here
/// ([`wait_for_disk`](Self::wait_for_disk)).
#[derive(Debug)]
pub(crate) struct StateMachine {
    store: Arc<dyn ConfigStore>,
    db: Arc<RaftDb>,
    origin: Origin,
    position: Position,
    /// The proposals decided lately, by id (see `recent`): part of the
    /// replicated state, saved with `position`.
    recent: Recent,
    /// The last write number of the Raft origin that the store held when
    /// this node started (read at the first apply): entries at or below it
    /// are replays of entries applied before a crash (see `replayed`).
    held_at_start: Option<u64>,
    snapshots_built: u64,
    /// Entries applied since the position was last saved.
    unsaved: u64,
    /// When the position was last saved.
    saved_at: Instant,
    /// How long the position may go unsaved ([`SAVE_EVERY`]).
    save_every: Duration,
    /// How far the log is on disk, when appends may be reported before they
    /// are (a node on disk).
    durable: Option<watch::Receiver<Durable>>,
    /// The save running off the apply path, if any.
    saving: Option<Saving>,
    /// Held by a save while it runs; shared with the replicator, whose
    /// shutdown waits for it.
    saves: Saves,
}

/// The periodic saves of a state machine's position: at most one runs at a
/// time, on a task of its own. [`idle`](Self::idle) waits until none runs, so
/// that a node shutting down has let go of its files.
#[derive(Debug, Clone, Default)]
pub(crate) struct Saves(Arc<tokio::sync::Mutex<()>>);

impl Saves {
    /// Waits for the save running, if any, to end.
    pub(crate) async fn idle(&self) {
        drop(self.0.lock().await);
    }
}

/// A save running off the apply path, and the rows of recent proposals it
/// commits (noted as saved once it succeeded).
#[derive(Debug)]
struct Saving {
    task: tokio::task::JoinHandle<Result<(), StorageError>>,
    rows: Mark,
}

impl StateMachine {
    /// The state machine applying to `store`, writing under `origin`, keeping
    /// its position in `db`.
    pub(crate) fn open(
        store: Arc<dyn ConfigStore>,
        db: Arc<RaftDb>,
        origin: Origin,
    ) -> Result<Self, StorageError> {
        let position = db.get_json(APPLIED)?.unwrap_or_default();
        let recent = Recent::from_saved(db.recent_rows()?)
            .map_err(|e| read_err(Corrupt(format!("raft recent proposals: {e}"))))?;
        Ok(Self {
            store,
            db,
            origin,
            position,
            recent,
            held_at_start: None,
            snapshots_built: 0,
            unsaved: 0,
            saved_at: Instant::now(),
            save_every: SAVE_EVERY,
            durable: None,
            saving: None,
            saves: Saves::default(),
        })
    }

    /// The handle through which a shutdown waits for a save running.
    pub(crate) fn saves(&self) -> Saves {
        self.saves.clone()
    }

    /// Applies an entry only once `durable` (the log's, see
    /// [`LogStore::durable`](super::log_store::LogStore::durable)) says it is
    /// on disk; `None` when every append is on disk when reported.
    pub(crate) fn wait_for_disk(mut self, durable: Option<watch::Receiver<Durable>>) -> Self {
        self.durable = durable;
        self
    }

    /// Saves the position only every `every` (or [`SAVE_EVERY_ENTRIES`]), so
    /// a test can crash with applies unsaved.
    #[cfg(test)]
    fn save_every(mut self, every: Duration) -> Self {
        self.save_every = every;
        self
    }

    /// Makes the store durable, then saves the applied position and the
    /// recent proposals at it (durably, in one transaction): the position
    /// never gets ahead of the store on disk. Waits for a save running first.
    async fn save_position(&mut self) -> Result<(), StorageError> {
        self.finish_saving().await?;
        self.unsaved = 0;
        self.saved_at = Instant::now();
        let (save, rows) = self.save()?;
        save.await?;
        self.recent.saved(rows);
        Ok(())
    }

    /// The save of the position and recent proposals as they are now, to
    /// run: a sync of the store (every merge made so far, so every entry the
    /// position covers, is durable after it), then one durable transaction of
    /// the Raft file. With the rows it commits.
    fn save(
        &self,
    ) -> Result<
        (impl std::future::Future<Output = Result<(), StorageError>> + Send + 'static, Mark),
        StorageError,
    > {
        let json = serde_json::to_vec(&self.position).map_err(write_err)?;
        let rows = self.recent.rows();
        let mark = rows.mark();
        let (store, db) = (self.store.clone(), self.db.clone());
        let save = async move {
            store.sync().await.map_err(write_err)?;
            blocking(move || db.put_meta_and_recent(&[(APPLIED, &json)], rows)).await
        };
        Ok((save, mark))
    }

    /// Starts a save off the apply path when one is due and none runs (one
    /// that ended is noted first; its failure is this apply's).
    async fn save_in_background_if_due(&mut self) -> Result<(), StorageError> {
        // Awaited, not polled once: a finished task's handle still answers
        // Pending while this task's cooperative budget is spent.
        if self.saving.as_ref().is_some_and(|s| s.task.is_finished()) {
            self.finish_saving().await?;
        }
        let due = self.unsaved >= SAVE_EVERY_ENTRIES || self.saved_at.elapsed() >= self.save_every;
        if !due || self.saving.is_some() {
            return Ok(());
        }
        // Held by a shutdown waiting for saves to end: none starts while it
        // waits. (One may start after it, as applies queued before the
        // shutdown finish; it syncs the store before it saves, as any does.)
        let Ok(running) = self.saves.0.clone().try_lock_owned() else {
            return Ok(());
        };
        let (save, rows) = self.save()?;
        let task = tokio::spawn(async move {
            let _running = running;
            save.await
        });
        self.saving = Some(Saving { task, rows });
        self.unsaved = 0;
        self.saved_at = Instant::now();
        Ok(())
    }

    /// Waits for the save running, if any, and notes how it ended: its rows
    /// saved, or its failure returned.
    async fn finish_saving(&mut self) -> Result<(), StorageError> {
        let Some(saving) = self.saving.take() else { return Ok(()) };
        saving.task.await.map_err(|e| {
            write_err(std::io::Error::other(format!("a save of the applied position: {e}")))
        })??;
        self.recent.saved(saving.rows);
        Ok(())
    }

    /// The live versions, in the store, of every key that the entries to be
    /// decided (those above `held_at_start`, see `replayed`) write or set a
    /// condition on, read in one call: the map [`decide`](Self::decide) starts
    /// from and notes each decided write in. The store changes only through
    /// this state machine between here and the batch's merge (a tombstone
    /// sweep drops only tombstones, whose live version is none), so these are
    /// the versions a lookup at each decision would find.
    async fn live_versions(
        &self,
        entries: &[Entry],
        held_at_start: u64,
    ) -> Result<HashMap<String, Option<VersionToken>>, StorageError> {
        let mut keys: Vec<&str> = Vec::new();
        for entry in entries {
            if let EntryPayload::Normal(batch) = &entry.payload
                && entry.log_id.index * SEQ_PER_ENTRY + SEQ_PER_ENTRY - 1 > held_at_start
            {
                for p in batch.proposals.iter() {
                    keys.extend(p.txn.conditions.iter().map(|c| c.key()));
                    keys.extend(p.txn.writes.writes.iter().map(|w| w.key()));
                }
            }
        }
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        keys.sort_unstable();
        keys.dedup();
        let versions = self.store.live_versions(&keys).await.map_err(read_err)?;
        Ok(keys.into_iter().map(str::to_owned).zip(versions).collect())
    }

    /// The live version `key` holds, seen through the writes of this batch
    /// not yet merged (`pending`, which [`live_versions`](Self::live_versions)
    /// filled with the store's versions first). Every key a decision asks
    /// about is one the prefetch read; the store is asked only should a key
    /// ever escape it (a new kind of condition), so a miss costs a lookup,
    /// never a wrong decision.
    async fn live_version(
        &self,
        key: &str,
        pending: &HashMap<String, Option<VersionToken>>,
    ) -> Result<Option<VersionToken>, StorageError> {
        if let Some(v) = pending.get(key) {
            return Ok(v.clone());
        }
        self.store.live_version(key).await.map_err(read_err)
    }

    /// Decides one proposal of the entry at log `index`, whose first write
    /// would be number `index × SEQ_PER_ENTRY + *offset`: its records (pushed to
    /// `records`, noted in `pending`) and its answer. A written proposal
    /// advances `offset` past its writes; the writes of one entry never reach
    /// the next entry's numbers (a proposal that would is refused as invalid).
    /// A proposal whose id was decided lately (a retry) is not decided again:
    /// it gets the first decision's answer.
    async fn decide(
        &mut self,
        index: u64,
        offset: &mut u64,
        p: Proposal,
        pending: &mut HashMap<String, Option<VersionToken>>,
        records: &mut Vec<Record>,
    ) -> Result<Applied, StorageError> {
        let base = self.stamp(&p);
        let Some(id) = p.id() else {
            return self.decide_txn(index, offset, base, p, pending, records).await;
        };
        self.recent.expire(base.wall_ms);
        if let Some(seen) = self.recent.get(&id) {
            tracing::debug!(%id, index, first = seen.index, "a retried proposal: answered with its first decision");
            return Ok(seen.applied.clone());
        }
        let applied = if self.recent.may_have_forgotten(p.stamp.wall_ms) {
            Applied::Unknown {
                reason: format!(
                    "the proposal is stamped {} ms, no later than a proposal id this cluster no longer \
                     remembers, so it may be a retry of a write decided already; it was not decided again",
                    p.stamp.wall_ms
                ),
            }
        } else {
            self.decide_txn(index, offset, base, p, pending, records).await?
        };
        self.recent.note(id, Seen { index, applied: applied.clone(), wall_ms: base.wall_ms });
        Ok(applied)
    }

    /// Replays an entry whose writes the store already held when this node
    /// started: it was applied before a crash, and the store was made durable
    /// past it (by a sync or a durable write such as a tombstone sweep)
    /// before the applied position was saved. Its decisions cannot be made
    /// again against that store, which is ahead of the entry (a condition
    /// that held then may not now), and need not be: its records are there.
    /// So it advances the stamps as a decision would, and notes its ids with
    /// [`Applied::Unknown`] (this node did not keep its answers; the ids are
    /// those every replica notes).
    fn replayed(&mut self, index: u64, batch: super::codec::Batch) -> Answers {
        let reason = "decided before this node restarted; its answer was not kept";
        batch
            .into_proposals()
            .into_iter()
            .map(|p| {
                let base = self.stamp(&p);
                let applied = Applied::Unknown { reason: reason.into() };
                if let Some(id) = p.id() {
                    self.recent.expire(base.wall_ms);
                    self.recent.note(id, Seen { index, applied: applied.clone(), wall_ms: base.wall_ms });
                }
                applied
            })
            .collect()
    }

    /// The stamp `p`'s records are stamped from, advancing the last stamp
    /// past its writes. It advances with every proposal, whatever its
    /// outcome, so a replay computes the same stamps.
    fn stamp(&mut self, p: &Proposal) -> Timestamp {
        let base = p.stamp.max(successor(self.position.last_stamp()));
        let count = u32::try_from(p.txn.writes.writes.len()).unwrap_or(u32::MAX);
        let last = Timestamp::new(base.wall_ms, base.logical.saturating_add(count));
        self.position.last_stamp = (last.wall_ms, last.logical);
        base
    }

    /// Decides a proposal seen for the first time, its records stamped from
    /// `base` (see [`decide`](Self::decide)).
    async fn decide_txn(
        &mut self,
        index: u64,
        offset: &mut u64,
        base: Timestamp,
        p: Proposal,
        pending: &mut HashMap<String, Option<VersionToken>>,
        records: &mut Vec<Record>,
    ) -> Result<Applied, StorageError> {
        if let Err(e) = p.txn.writes.validate(DEFAULT_MAX_VALUE_BYTES) {
            return Ok(Applied::Invalid { reason: e.to_string() });
        }
        if p.txn.writes.writes.len() as u64 >= SEQ_PER_ENTRY {
            return Ok(Applied::Invalid {
                reason: format!("a transaction holds at most {} writes", SEQ_PER_ENTRY - 1),
            });
        }
        let first = *offset;
        if first + p.txn.writes.writes.len() as u64 >= SEQ_PER_ENTRY {
            return Ok(Applied::Invalid {
                reason: format!("a log entry holds at most {} writes", SEQ_PER_ENTRY - 1),
            });
        }
        for (i, c) in p.txn.conditions.iter().enumerate() {
            let current = self.live_version(c.key(), pending).await?;
            let holds = match c {
                crate::transaction::Condition::Absent { .. } => current.is_none(),
                crate::transaction::Condition::Version { version, .. } => current.as_ref() == Some(version),
            };
            if !holds {
                let current = current.map(|v| v.to_string());
                return Ok(Applied::Failed { index: i, key: c.key().to_owned(), current });
            }
        }
        for (j, w) in p.txn.writes.writes.into_iter().enumerate() {
            let j32 = u32::try_from(j).unwrap_or(u32::MAX);
            let stamp = Timestamp::new(base.wall_ms, base.logical.saturating_add(j32));
            let seq = index * SEQ_PER_ENTRY + first + j as u64;
            let (key, value) = match w {
                Write::Put { key, value } => (key, Some(value)),
                Write::Delete { key } => (key, None),
            };
            // Every entry saw every earlier one: the lineage says so, so a Raft
            // write never looks like a conflict with what it replaced.
            let replaces = self.live_version(&key, pending).await?;
            let mut context = crate::record::VersionVector::default();
            context.raise(&self.origin, seq.saturating_sub(1));
            let lineage = crate::record::Lineage { replaces, context };
            let record = Record { key, value, stamp, origin: self.origin.clone(), seq, lineage };
            let version = (!record.is_tombstone()).then(|| record.token());
            match pending.get_mut(record.key.as_str()) {
                Some(slot) => *slot = version,
                None => {
                    pending.insert(record.key.clone(), version);
                }
            }
            records.push(record);
            *offset += 1;
        }
        Ok(Applied::Written { first: index * SEQ_PER_ENTRY + first })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, RaftMember>), StorageError> {
        Ok((self.position.last_applied, self.position.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answers>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let held_at_start = match self.held_at_start {
            Some(held) => held,
            None => {
                let held = self.store.digest().await.map_err(read_err)?.get(&self.origin);
                *self.held_at_start.insert(held)
            }
        };
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (&mut self.durable, entries.last()) {
            Durable::wait_for(durable, last.log_id.index)
                .await
                .map_err(|e| write_err(std::io::Error::other(e)))?;
        }
        let mut answers = Vec::new();
        let mut pending = self.live_versions(&entries, held_at_start).await?;
        let mut records = Vec::new();
        let mut covered = None;
        for entry in entries {
            self.unsaved += 1;
            self.position.last_applied = Some(entry.log_id);
            let answer = match entry.payload {
                EntryPayload::Blank => Answers::new(),
                EntryPayload::Membership(m) => {
                    self.position.membership = StoredMembership::new(Some(entry.log_id), m);
                    Answers::new()
                }
                EntryPayload::Normal(batch)
                    if entry.log_id.index * SEQ_PER_ENTRY + SEQ_PER_ENTRY - 1 <= held_at_start =>
                {
                    self.replayed(entry.log_id.index, batch)
                }
                EntryPayload::Normal(batch) => {
                    let index = entry.log_id.index;
                    covered = Some(index * SEQ_PER_ENTRY + SEQ_PER_ENTRY - 1);
                    let mut offset = 0;
                    let mut answer = Answers::with_capacity(batch.proposals.len());
                    for p in batch.into_proposals() {
                        answer.push(self.decide(index, &mut offset, p, &mut pending, &mut records).await?);
                    }
                    answer
                }
            };
            answers.push(answer);
        }
        if let Some(covered) = covered {
            let mut covers = VersionVector::default();
            covers.raise(&self.origin, covered);
            // Idempotent: records an earlier run of these entries stored are
            // covered already, and ignored. Durable at the next `save_position`.
            self.store.merge_deferred(records, &covers).await.map_err(write_err)?;
        }
        self.save_in_background_if_due().await?;
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        // The log is purged behind the snapshot: first make sure a restart
        // needs none of the purged entries.
        let saved = self.save_position().await;
        // Taken here, between two applies, so the copy is exactly the state at
        // `last_applied`.
        let copy = match saved {
            Ok(()) => self.store.snapshot().await.map_err(read_err),
            Err(e) => Err(e),
        };
        SnapshotBuilder {
            db: self.db.clone(),
            position: self.position.clone(),
            // A copy, encoded by the build off the apply path: encoding the
            // table (up to 65,536 answers as JSON) took 22 to 48 ms per node
            // in a bench run, a copy a few.
            recent: self.recent.clone(),
            copy,
            number: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, RaftMember>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        // The save running is of the table and position this replaces.
        self.finish_saving().await?;
        let data = snapshot.into_inner();
        let decoded = proto::RaftSnapshot::decode(data.as_slice())
            .map_err(|e| read_err(Corrupt(format!("raft snapshot: {e}"))))?;
        let last_stamp: Timestamp = decoded.last_stamp.unwrap_or_default().into();
        let records = records_from_wire(decoded.records).map_err(|e| read_err(Corrupt(e.to_string())))?;
        let digest = decoded
            .digest
            .unwrap_or_default()
            .try_into()
            .map_err(|e: crate::wire::InvalidMessage| read_err(Corrupt(e.to_string())))?;
        let gc_floor = decoded
            .gc_floor
            .unwrap_or_default()
            .try_into()
            .map_err(|e: crate::wire::InvalidMessage| read_err(Corrupt(e.to_string())))?;
        // A snapshot from a build before proposal ids has none: an empty table.
        let recent = Recent::from_proto(decoded.decided, decoded.decided_horizon_ms)
            .map_err(|e| read_err(Corrupt(format!("raft snapshot: {e}"))))?;
        self.store
            .restore(crate::record::Snapshot {
                records,
                digest,
                gc_floor,
                position: 0,
                conflicts: Vec::new(),
            })
            .await
            .map_err(write_err)?;
        self.position = Position {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            last_stamp: (last_stamp.wall_ms, last_stamp.logical),
        };
        self.recent = recent;
        // Every entry after the snapshot is new to this store.
        self.held_at_start = Some(0);
        // Deferred merges made before the restore are durable with it too.
        self.store.sync().await.map_err(write_err)?;
        let meta_json = serde_json::to_vec(meta).map_err(write_err)?;
        let position = serde_json::to_vec(&self.position).map_err(write_err)?;
        let rows = self.recent.rows();
        let mark = rows.mark();
        let db = self.db.clone();
        blocking(move || {
            db.put_meta_and_recent(
                &[(APPLIED, &position), (SNAPSHOT_META, &meta_json), (SNAPSHOT_DATA, &data)],
                rows,
            )
        })
        .await?;
        self.recent.saved(mark);
        self.unsaved = 0;
        self.saved_at = Instant::now();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let Some(meta) = db.get_json::<SnapshotMeta<u64, RaftMember>>(SNAPSHOT_META)? else {
                return Ok(None);
            };
            let data = db.get_meta(SNAPSHOT_DATA)?.unwrap_or_default();
            Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
        })
        .await
    }
}

/// Builds a snapshot from a copy of the store taken between two applies.
#[derive(Debug)]
pub(crate) struct SnapshotBuilder {
    db: Arc<RaftDb>,
    position: Position,
    /// The recent proposals at `position`.
    recent: Recent,
    copy: Result<crate::record::Snapshot, StorageError>,
    number: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let copy = match std::mem::replace(&mut self.copy, Ok(crate::record::Snapshot::default())) {
            Ok(copy) => copy,
            Err(e) => return Err(e),
        };
        let (decided, decided_horizon_ms) = std::mem::take(&mut self.recent).to_proto();
        let data = proto::RaftSnapshot {
            records: copy.records.iter().map(proto::Record::from).collect(),
            digest: Some((&copy.digest).into()),
            gc_floor: Some((&copy.gc_floor).into()),
            last_stamp: Some(self.position.last_stamp().into()),
            decided,
            decided_horizon_ms,
        }
        .encode_to_vec();
        let last = self.position.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.position.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index),
                self.number
            ),
        };
        let meta_json = serde_json::to_vec(&meta).map_err(write_err)?;
        let db = self.db.clone();
        let stored = data.clone();
        blocking(move || db.put_meta(&[(SNAPSHOT_META, &meta_json), (SNAPSHOT_DATA, &stored)])).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::path::Path;
    use std::time::Duration;

    use openraft::RaftSnapshotBuilder;
    use openraft::storage::RaftStateMachine;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use spectrum_core::{Hlc, Timestamp};

    use super::super::codec::{Applied, Batch, Proposal};
    use super::super::log_store::{LogStore, RaftDb, open_wal, read_err};
    use super::super::{Entry, SEQ_PER_ENTRY, StorageError, TypeConfig, raft_origin};
    use super::StateMachine;
    use crate::transaction::{Condition, Transaction};
    use crate::{ConfigStore, MemoryStore, RedbStore, WriteBatch};

    /// A log (segment files and a fresh redb file) and state machine, over a
    /// fresh store.
    struct OnDisk;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(read_err)?;
            let db = Arc::new(RaftDb::open(&dir.path().join("raft.redb")).map_err(read_err)?);
            let wal = open_wal(&db, dir.path())?;
            let store = Arc::new(MemoryStore::new("n1".parse().unwrap(), Arc::new(Hlc::system())));
            let sm = StateMachine::open(store, db.clone(), raft_origin(&"c".parse().unwrap()))?;
            Ok((dir, LogStore::with_wal(db, wal, 1), sm))
        }
    }

    /// The same with the entries in redb's log table, in memory (a simulated node).
    struct InMemory;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for InMemory {
        async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError> {
            let db = Arc::new(RaftDb::in_memory().map_err(read_err)?);
            let store = Arc::new(MemoryStore::new("n1".parse().unwrap(), Arc::new(Hlc::system())));
            let sm = StateMachine::open(store, db.clone(), raft_origin(&"c".parse().unwrap()))?;
            Ok(((), LogStore::new(db), sm))
        }
    }

    type OnDiskSuite = Suite<TypeConfig, LogStore, StateMachine, OnDisk, tempfile::TempDir>;

    /// openraft's storage suite, each case on a fresh log, but for
    /// `get_initial_state_membership_from_log_and_sm`: it appends entry 1 to a
    /// log purged up to 2 (openraft purges a log that is behind its state
    /// machine), which the segment files refuse (a log never goes back below
    /// its purge mark; redb's table, a map, takes it: see the in-memory run).
    #[tokio::test(flavor = "multi_thread")]
    async fn the_log_on_disk_and_state_machine_pass_openraft_s_storage_suite() {
        macro_rules! each {
            ($($case:ident),* $(,)?) => {$(
                let (_dir, store, sm) = OnDisk.build().await.unwrap();
                if let Err(e) = OnDiskSuite::$case(store, sm).await {
                    panic!("{}: {e}", stringify!($case));
                }
            )*};
        }
        each!(
            last_membership_in_log_initial,
            last_membership_in_log,
            last_membership_in_log_multi_step,
            get_membership_initial,
            get_membership_from_log_and_empty_sm,
            get_membership_from_empty_log_and_sm,
            get_membership_from_log_le_sm_last_applied,
            get_membership_from_log_gt_sm_last_applied_1,
            get_membership_from_log_gt_sm_last_applied_2,
            get_initial_state_without_init,
            get_initial_state_with_state,
            get_initial_state_last_log_gt_sm,
            get_initial_state_last_log_lt_sm,
            get_initial_state_log_ids,
            get_initial_state_re_apply_committed,
            save_vote,
            get_log_entries,
            limited_get_log_entries,
            try_get_log_entry,
            initial_logs,
            get_log_state,
            get_log_id,
            last_id_in_log,
            last_applied_state,
            purge_logs_upto_0,
            purge_logs_upto_5,
            purge_logs_upto_20,
            delete_logs_since_11,
            delete_logs_since_0,
            append_to_log,
            snapshot_meta,
            apply_single,
            apply_multiple,
        );
        OnDiskSuite::transfer_snapshot(&OnDisk).await.unwrap();
    }

    #[test]
    fn the_log_in_memory_passes_openraft_s_storage_suite() {
        Suite::test_all(InMemory).unwrap();
    }

    /// Entry `index` of term 1, proposing `proposals`.
    fn entry(index: u64, proposals: Vec<Transaction>) -> Entry {
        let proposals = proposals
            .into_iter()
            .map(|txn| Proposal { stamp: Timestamp::new(1_000 + index, 0), txn })
            .collect();
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch::new(proposals)),
        }
    }

    fn put(key: &str, value: &str) -> Transaction {
        Transaction::new(WriteBatch::new().put(key.to_owned(), value.to_owned()))
    }

    /// A redb store and Raft file in `dir`, and their state machine.
    fn open(dir: &Path) -> (Arc<RedbStore>, StateMachine) {
        let store = Arc::new(
            RedbStore::open(dir.join("config.redb"), "n1".parse().unwrap(), Arc::new(Hlc::system())).unwrap(),
        );
        let db = Arc::new(RaftDb::open(&dir.join("raft.redb")).unwrap());
        let sm = StateMachine::open(store.clone(), db, raft_origin(&"c".parse().unwrap())).unwrap();
        (store, sm.save_every(Duration::from_secs(3_600)))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn applies_a_crash_loses_are_replayed_from_the_log_and_end_with_every_acknowledged_write() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut sm) = open(dir.path());
        let entries: Vec<Entry> =
            (1..=20).map(|i| entry(i, vec![put(&format!("settings/k{i}"), &format!("v{i}"))])).collect();
        sm.apply(entries[..5].to_vec()).await.unwrap();
        // A snapshot saves the position (after a store sync): entry 5.
        let _ = sm.get_snapshot_builder().await;
        let answers = sm.apply(entries[5..].to_vec()).await.unwrap();
        assert!(answers.iter().all(|a| matches!(a.as_slice(), [Applied::Written { .. }])), "{answers:?}");
        let acknowledged = store.scan("settings/").await.unwrap();
        assert_eq!(acknowledged.len(), 20);

        // What `kill -9` leaves on disk now: the files as the kernel holds them.
        let crashed = crash_copy(dir.path());
        drop((sm, store));
        let (store, mut sm) = open(crashed.path());
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(5), "the saved position is the last synced one");
        let survived = store.scan("settings/").await.unwrap();
        assert!(survived.len() < 20, "the unsynced applies were lost: {} of 20 survived", survived.len());
        assert!(survived.len() >= 5, "what the saved position covers survived: {} of 20", survived.len());

        // openraft applies the committed entries after the saved position again.
        sm.apply(entries[5..].to_vec()).await.unwrap();
        assert_eq!(store.scan("settings/").await.unwrap(), acknowledged);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn saves_off_the_apply_path_never_leave_the_position_ahead_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, sm) = open(dir.path());
        // A save is due at every apply; one starts whenever none runs.
        let mut sm = sm.save_every(Duration::ZERO);
        let saves = sm.saves();
        for i in 1..=40 {
            let entry = entry(i, vec![put(&format!("settings/k{i:02}"), &format!("v{i}"))]);
            sm.apply(vec![entry]).await.unwrap();
        }
        sm.finish_saving().await.unwrap();
        saves.idle().await;

        let crashed = crash_copy(dir.path());
        drop((sm, store));
        let (store, mut sm) = open(crashed.path());
        let at = sm.applied_state().await.unwrap().0.map_or(0, |l| l.index);
        assert!(at > 0, "some save ended");
        let survived = store.scan("settings/").await.unwrap();
        let keys: Vec<&str> = survived.iter().map(|r| r.key.as_str()).collect();
        for i in 1..=at {
            assert!(
                keys.contains(&format!("settings/k{i:02}").as_str()),
                "entry {i} of {at} saved: {keys:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_finished_save_is_noted_however_much_of_its_budget_the_apply_s_task_spent() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, sm) = open(dir.path());
        let mut sm = sm.save_every(Duration::ZERO);
        sm.apply(vec![entry(1, vec![put("settings/a", "1")])]).await.unwrap();
        for _ in 0..1_000 {
            if sm.saving.as_ref().is_none_or(|s| s.task.is_finished()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(sm.saving.as_ref().is_some_and(|s| s.task.is_finished()), "the save ended");
        // On a task of its own (which has a budget), the cooperative budget
        // spent (128 ready operations per poll), as openraft's command queue
        // can spend it before an apply.
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..128 {
                tx.send(()).unwrap();
            }
            for _ in 0..128 {
                rx.recv().await.unwrap();
            }
            sm.apply(vec![entry(2, vec![put("settings/b", "1")])]).await.unwrap();
        })
        .await
        .unwrap();
    }

    /// Entry `index` carrying `txn` under `id`.
    fn with_id(index: u64, id: u128, txn: Transaction) -> Entry {
        let mut e = entry(index, vec![txn]);
        if let EntryPayload::Normal(b) = &mut e.payload {
            Arc::make_mut(&mut b.proposals)[0].txn.request_id = Some(id);
        }
        e
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_retried_proposal_is_decided_once_across_a_crash_and_a_snapshot_install() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut sm) = open(dir.path());
        let mut cas = put("settings/lock", "mine");
        cas.conditions = vec![Condition::absent("settings/lock")];
        let first = sm.apply(vec![with_id(3, 42, cas.clone())]).await.unwrap();
        let written = Applied::Written { first: 3 * SEQ_PER_ENTRY };
        assert_eq!(first, vec![vec![written.clone()]]);
        // The retry, in a later entry: the first answer, not "condition failed",
        // and nothing written again.
        let again = sm.apply(vec![with_id(5, 42, cas.clone())]).await.unwrap();
        assert_eq!(again, vec![vec![written.clone()]]);
        assert_eq!(store.get("settings/lock").await.unwrap().unwrap().seq, 3 * SEQ_PER_ENTRY);
        // Another write with the same transaction but its own id is decided.
        let other = sm.apply(vec![with_id(6, 43, cas.clone())]).await.unwrap();
        assert!(matches!(other[0][0], Applied::Failed { .. }), "{other:?}");

        // Saved with the position: a restart still knows the id.
        let _ = sm.get_snapshot_builder().await;
        drop((sm, store));
        let (store, mut sm) = open(dir.path());
        assert_eq!(sm.apply(vec![with_id(7, 42, cas.clone())]).await.unwrap(), vec![vec![written.clone()]]);

        // In the snapshot: a node that installs it knows the id too.
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let (copy, mut installed) = open(elsewhere.path());
        installed.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        assert_eq!(
            installed.apply(vec![with_id(8, 42, cas.clone())]).await.unwrap(),
            vec![vec![written.clone()]]
        );
        assert_eq!(copy.scan("settings/").await.unwrap(), store.scan("settings/").await.unwrap());
        // And keeps it across its own restart.
        drop((installed, copy));
        let (_, mut installed) = open(elsewhere.path());
        assert_eq!(installed.apply(vec![with_id(9, 42, cas)]).await.unwrap(), vec![vec![written]]);
    }

    /// The files of `dir` as `kill -9` would leave them, in a new directory.
    fn crash_copy(dir: &Path) -> tempfile::TempDir {
        let crashed = tempfile::tempdir().unwrap();
        for file in ["config.redb", "raft.redb"] {
            std::fs::copy(dir.join(file), crashed.path().join(file)).unwrap();
        }
        crashed
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn entries_the_store_held_before_a_crash_are_not_decided_again_against_a_store_ahead_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut sm) = open(dir.path());
        // e2 writes j (if absent) and k; e3 writes k only if k holds e2's version.
        let e1 = with_id(1, 1, put("settings/k", "v1"));
        let mut cas_j = Transaction::new(WriteBatch::new().put("settings/j", "1").put("settings/k", "v2"));
        cas_j.conditions = vec![Condition::absent("settings/j")];
        let e2 = with_id(2, 2, cas_j);
        let k_at_e2 = format!("{}:{}", sm.origin, 2 * SEQ_PER_ENTRY + 1).parse().unwrap();
        let mut cas_k = put("settings/k", "v3");
        cas_k.conditions = vec![Condition::version("settings/k", k_at_e2)];
        let e3 = with_id(3, 3, cas_k);
        sm.apply(vec![e1.clone(), e2.clone()]).await.unwrap();
        // A durable write (a tombstone sweep makes one) makes e1 and e2 durable
        // while the applied position is still unsaved; e3 is applied after it.
        store.sync().await.unwrap();
        let third = sm.apply(vec![e3.clone()]).await.unwrap();
        assert_eq!(third, vec![vec![Applied::Written { first: 3 * SEQ_PER_ENTRY }]]);

        let crashed = crash_copy(dir.path());
        drop((sm, store));
        let (store, mut sm) = open(crashed.path());
        assert_eq!(sm.applied_state().await.unwrap().0, None, "no position was saved");
        let k = store.get("settings/k").await.unwrap().unwrap();
        assert_eq!(k.value.as_deref(), Some(&b"v2"[..]), "the store kept e1 and e2, not e3");
        // Decided again against this store, e2's condition would fail (j is
        // there), k would stay at e1's version among this batch's writes, and
        // e3 would fail: k would end "v2" here and "v3" everywhere else.
        let answers = sm.apply(vec![e1, e2, e3.clone()]).await.unwrap();
        assert!(matches!(answers[0].as_slice(), [Applied::Unknown { .. }]), "{answers:?}");
        assert!(matches!(answers[1].as_slice(), [Applied::Unknown { .. }]), "{answers:?}");
        assert_eq!(answers[2], vec![Applied::Written { first: 3 * SEQ_PER_ENTRY }]);
        let k = store.get("settings/k").await.unwrap().unwrap();
        assert_eq!((k.value.as_deref(), k.seq), (Some(&b"v3"[..]), 3 * SEQ_PER_ENTRY));
        // Their ids are noted as on every replica: a retry decides nothing.
        let retry = sm.apply(vec![with_id(4, 2, Transaction::new(WriteBatch::new().put("settings/j", "2")))]);
        assert!(matches!(retry.await.unwrap()[0].as_slice(), [Applied::Unknown { .. }]));
        assert_eq!(store.get("settings/j").await.unwrap().unwrap().value.as_deref(), Some(&b"1"[..]));
    }

    #[tokio::test]
    async fn a_proposal_that_may_be_a_retry_of_a_forgotten_id_is_not_decided() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut sm) = open(dir.path());
        // Entry 1 is stamped 1,001 ms; one stamped past a minute later expires it.
        sm.apply(vec![with_id(1, 1, put("settings/a", "1"))]).await.unwrap();
        let mut late = with_id(2, 2, put("settings/b", "1"));
        if let EntryPayload::Normal(b) = &mut late.payload {
            Arc::make_mut(&mut b.proposals)[0].stamp = Timestamp::new(100_000, 0);
        }
        sm.apply(vec![late]).await.unwrap();
        // A proposal stamped before the dropped id's stamp, unknown now.
        let mut old = with_id(3, 9, put("settings/c", "1"));
        if let EntryPayload::Normal(b) = &mut old.payload {
            Arc::make_mut(&mut b.proposals)[0].stamp = Timestamp::new(900, 0);
        }
        let answers = sm.apply(vec![old]).await.unwrap();
        assert!(matches!(answers[0].as_slice(), [Applied::Unknown { .. }]), "{answers:?}");
        assert!(store.get("settings/c").await.unwrap().is_none());
        // A fresh one is decided.
        let answers = sm.apply(vec![with_id(4, 10, put("settings/d", "1"))]).await.unwrap();
        assert!(matches!(answers[0].as_slice(), [Applied::Written { .. }]), "{answers:?}");
    }

    #[tokio::test]
    async fn proposals_packed_in_one_entry_are_decided_in_order_each_with_its_own_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut sm) = open(dir.path());
        let mut absent = put("settings/a", "second");
        absent.conditions = vec![Condition::absent("settings/a")];
        let two = Transaction::new(WriteBatch::new().put("settings/b", "1").put("settings/c", "1"));
        let packed = entry(7, vec![put("settings/a", "first"), absent, two, put("settings/d", "1")]);
        let answers = sm.apply(vec![packed]).await.unwrap();
        let base = 7 * SEQ_PER_ENTRY;
        assert_eq!(
            answers,
            vec![vec![
                Applied::Written { first: base },
                Applied::Failed {
                    index: 0,
                    key: "settings/a".into(),
                    current: Some(format!("{}:{base}", sm.origin))
                },
                Applied::Written { first: base + 1 },
                Applied::Written { first: base + 3 },
            ]]
        );
        let a = store.get("settings/a").await.unwrap().unwrap();
        assert_eq!((a.value.as_deref(), a.seq), (Some(&b"first"[..]), base));
        assert_eq!(store.get("settings/d").await.unwrap().unwrap().seq, base + 3);
    }
}
