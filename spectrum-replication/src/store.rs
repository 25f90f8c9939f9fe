//! The [`ConfigStore`] trait: one node's copy of the configuration database.

use std::sync::Arc;

use async_trait::async_trait;
use spectrum_core::NodeId;
use tokio::sync::broadcast;

use crate::changelog::FeedHead;
use crate::conflict::Conflict;
use crate::error::StoreError;
use crate::origin::Origin;
use crate::record::{
    ChangeBatch, Delta, MergeReport, Record, Snapshot, VersionToken, VersionVector, WriteBatch,
};

/// How many records a [`ConfigStore::subscribe`] receiver of the stores in this
/// crate may fall behind before it sees [`broadcast::error::RecvError::Lagged`].
pub const FEED_CAPACITY: usize = 1024;

/// One node's full copy of the replicated configuration database.
///
/// # Contract
///
/// - Local writes ([`apply`](ConfigStore::apply)) are stamped by the node's HLC and
///   numbered 1, 2, 3, … under the store's [`origin`](ConfigStore::origin); a batch
///   applies atomically and, in a durable store, is on disk before `apply` returns.
/// - A store created empty writes under a fresh origin, never one an earlier
///   store could have used ([`Origin::fresh`]), so a node restarted on an empty
///   disk never reuses a sequence number; a durable store keeps its origin for as
///   long as its data lives.
/// - Remote records ([`merge`](ConfigStore::merge)) are kept when they win under
///   last-writer-wins by `(stamp, origin)`; merging is commutative, associative and
///   idempotent, so replicas that have merged the same records hold the same state,
///   whatever the order.
/// - The [`digest`](ConfigStore::digest) is a version vector; a
///   [`delta`](ConfigStore::delta) for a peer's digest holds every stored record
///   that peer may lack, and [`merge`](ConfigStore::merge) of that delta with its
///   `covers` brings the peer's digest up to ours.
/// - Tombstones are records: a delete replicates like a put and a deleted key
///   never comes back. A tombstone is dropped only by
///   [`collect_tombstones`](ConfigStore::collect_tombstones), once every member
///   has seen it; from then on a peer whose digest is below the store's
///   tombstone floor gets [`StoreError::BehindHorizon`] from
///   [`delta`](ConfigStore::delta) and must be brought up to date with a
///   [`snapshot`](ConfigStore::snapshot) instead.
/// - A merged record whose `(origin, seq)` the digest already covers is ignored:
///   the store holds it or something newer, or will receive something newer.
/// - Two writes to one key that did not see each other (by their
///   [`Lineage`](crate::Lineage)) are a [conflict](crate::conflict): the loser
///   is kept beside the winner, sent in deltas and snapshots like any record,
///   and listed by [`conflicts`](ConfigStore::conflicts) until a write that saw
///   both supersedes it. Replicas that merged the same records list the same
///   conflicts. A tombstone that won with open conflicts is not collected (the
///   put it beat would come back); a tombstone that lost one is collected like
///   any other, which ends that conflict on every replica alike.
/// - Every stored or dropped record is one entry of a change feed
///   ([`changes_since`](ConfigStore::changes_since)) numbered 1, 2, 3, … with no
///   gaps; [`subscribe`](ConfigStore::subscribe) wakes watchers up. The feed
///   keeps its newest entries within the store's
///   [`ChangeLogLimits`](crate::ChangeLogLimits) (by count and by age); a
///   durable store keeps them durably, written with the change they describe,
///   so positions stay valid across restarts.
///
/// It is an I/O plug-in, so it is async (`#[async_trait]`), `Send + Sync +
/// 'static`, and held as `Arc<dyn ConfigStore>`.
#[async_trait]
pub trait ConfigStore: Send + Sync + std::fmt::Debug + 'static {
    /// The origin this store's local writes are numbered under: its node and
    /// its incarnation (see [`Origin`]).
    fn origin(&self) -> &Origin;

    /// The node whose copy this is: the node of its [`origin`](ConfigStore::origin).
    fn node_id(&self) -> &NodeId {
        self.origin().node()
    }

    /// The record stored for `key`, tombstone included.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// Every record whose key starts with `prefix`, tombstones included, in key order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError>;

    /// The keys starting with `prefix` that hold a live value (no
    /// tombstones), in key order: the keys of [`scan`](Self::scan)'s live
    /// records, without copying the records (the stores of this crate walk
    /// their in-memory index; the default scans).
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    async fn live_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let records = self.scan(prefix).await?;
        Ok(records.into_iter().filter(|r| !r.is_tombstone()).map(|r| r.key).collect())
    }

    /// The version of the live value at `key`: `None` when the key holds no
    /// record or a tombstone. The [`token`](Record::token) of
    /// [`get`](Self::get)'s live record, without copying the record (the
    /// stores of this crate read their in-memory index; the default gets).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    async fn live_version(&self, key: &str) -> Result<Option<VersionToken>, StoreError> {
        Ok(self.get(key).await?.filter(|r| !r.is_tombstone()).map(|r| r.token()))
    }

    /// [`live_version`](Self::live_version) of each of `keys`, in order: one
    /// call where a caller needs many (the Raft state machine reads every key
    /// a batch of log entries writes or conditions on before deciding it).
    /// The stores of this crate read them at one moment, from their in-memory
    /// index under one lock; the default asks key by key.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    async fn live_versions(&self, keys: &[&str]) -> Result<Vec<Option<VersionToken>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.live_version(key).await?);
        }
        Ok(out)
    }

    /// Applies local writes atomically and returns the stamped records, in batch order.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidKey`], [`StoreError::ValueTooLarge`] or
    /// [`StoreError::EmptyBatch`] for bad input, and nothing is written;
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError>;

    /// Merges records from peers. `covers` (empty for a push) lets the digest
    /// advance over sequence numbers the sender has no record for because they were
    /// superseded.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidRecord`] for malformed input (nothing is merged);
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError>;

    /// Merges like [`merge`](ConfigStore::merge) (same checks, same answer,
    /// visible to reads at once), but the change need not be durable when this
    /// returns: it is once a later [`sync`](ConfigStore::sync) returns `Ok`.
    ///
    /// For a caller that can replay what a crash loses, as Raft mode's state
    /// machine replays its log (which is the durable truth) and saves its
    /// applied position only after a `sync`: one fsync per log batch instead of
    /// two. A crash keeps every change made before the last successful `sync`
    /// and, of the later ones, a prefix in the order they were made (whole
    /// changes, never part of one); merging again what survived is harmless,
    /// as merging is idempotent.
    ///
    /// The default merges durably: right for any store (a store that is not
    /// durable at all loses everything on a crash anyway), but it saves nothing.
    ///
    /// # Errors
    ///
    /// As [`merge`](ConfigStore::merge).
    async fn merge_deferred(
        &self,
        records: Vec<Record>,
        covers: &VersionVector,
    ) -> Result<MergeReport, StoreError> {
        self.merge(records, covers).await
    }

    /// Makes every change made so far durable, those of
    /// [`merge_deferred`](ConfigStore::merge_deferred) included; on `Ok` they
    /// survive `kill -9` and a power cut.
    ///
    /// The default does nothing: right for a store whose every change is
    /// durable when made (or never durable).
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails (then nothing
    /// deferred is known to be durable).
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// This copy's version vector.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn digest(&self) -> Result<VersionVector, StoreError>;

    /// The records a peer with digest `since` lacks, at most about `budget_bytes`
    /// of them (always at least one record when any is due; the first may be a
    /// group that travels together, over budget: every lacked record that could
    /// supersede a gap the delta vouches for, or the records above this copy's
    /// own contiguous digest).
    ///
    /// # Errors
    ///
    /// [`StoreError::BehindHorizon`] when `since` is below the tombstone floor (send
    /// a [`snapshot`](ConfigStore::snapshot) instead);
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError>;

    /// A feed of records as they are stored here, local or merged, in the order
    /// they were stored. A slow receiver may lag (see
    /// [`broadcast::error::RecvError::Lagged`]) and should then re-read with
    /// [`scan`](ConfigStore::scan).
    fn subscribe(&self) -> broadcast::Receiver<Record>;

    /// [`subscribe`](Self::subscribe)'s feed for a receiver that wants only
    /// the records whose key starts with `prefix`: the stores of this crate
    /// send it those alone, so it is neither woken nor handed a copy for a
    /// write elsewhere. It may carry others (the default is the whole feed),
    /// so a receiver still checks each key. Lagging is as on the whole feed.
    fn subscribe_prefix(&self, prefix: &str) -> broadcast::Receiver<Record> {
        let _ = prefix;
        self.subscribe()
    }

    /// A consistent copy of the whole store: every record, the digest they stand
    /// for, the tombstone floor, and the change-feed position.
    ///
    /// The default reads [`digest`](ConfigStore::digest) and then
    /// [`scan`](ConfigStore::scan) (records newer than the digest may be included,
    /// which is harmless) and reports an empty floor and position 0: right for a
    /// store that never collects tombstones and has no change feed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let digest = self.digest().await?;
        let records = self.scan("").await?;
        let conflicts = self.conflicts("").await?.into_iter().map(|c| c.loser).collect();
        Ok(Snapshot { records, conflicts, digest, gc_floor: VersionVector::default(), position: 0 })
    }

    /// The open conflicts of the keys starting with `prefix`, in key order (then
    /// by the loser's `(origin, seq)`): per key, the stored record and each
    /// write that lost to it without either having seen the other.
    ///
    /// The default reports none: right only for a store that keeps no conflict
    /// losers, which then loses them silently and cannot pass the conformance
    /// suite's conflict checks.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn conflicts(&self, prefix: &str) -> Result<Vec<Conflict>, StoreError> {
        let _ = prefix;
        Ok(Vec::new())
    }

    /// Merges a snapshot taken from another store: last-writer-wins per key;
    /// then every stored record the snapshot's digest covers but whose key the
    /// snapshot lacks is dropped (its maker saw it superseded and collected the
    /// tombstone that did so); then the digest and the tombstone floor rise to
    /// the snapshot's. This is how a store behind the tombstone horizon catches up
    /// without bringing deleted keys back.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidRecord`] for a malformed record (nothing is changed);
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn restore(&self, snapshot: Snapshot) -> Result<MergeReport, StoreError>;

    /// The changes stored after feed position `from` whose key starts with
    /// `prefix`, oldest first, at most `limit` of them: no gaps, no duplicates.
    /// Start from a [`Snapshot::position`] (or 0, the beginning) and resume from
    /// each answer's [`ChangeBatch::position`]; wait for more with
    /// [`subscribe`](ConfigStore::subscribe).
    ///
    /// # Errors
    ///
    /// [`StoreError::FeedCompacted`] when the feed no longer reaches back to `from`
    /// (re-read with a snapshot), carrying the oldest position it does reach back
    /// to; [`StoreError::FeedAhead`] for a position this store never issued;
    /// [`StoreError::Storage`] when a durable log cannot be read.
    async fn changes_since(&self, prefix: &str, from: u64, limit: usize) -> Result<ChangeBatch, StoreError>;

    /// Where the change feed stands, read at one instant: its last position, the
    /// oldest position [`changes_since`](ConfigStore::changes_since) accepts, and
    /// the store's digest at that last position. A watcher uses it to know what it
    /// has been shown once it has read the feed up to `position`.
    ///
    /// The default takes a [`snapshot`](ConfigStore::snapshot) (a copy of every
    /// record) and reports its position as the oldest: right but slow, and it
    /// says nothing of how far back the feed reaches.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn feed_head(&self) -> Result<FeedHead, StoreError> {
        let snapshot = self.snapshot().await?;
        Ok(FeedHead { position: snapshot.position, oldest: snapshot.position, digest: snapshot.digest })
    }

    /// Drops every tombstone whose `(origin, seq)` `horizon` covers, and returns
    /// how many. `horizon` must be covered by every member's digest, and every
    /// member must have seen every write each member had made (see
    /// [`tombstone_horizon`](crate::horizon::tombstone_horizon), which the
    /// anti-entropy replicator uses); then no member holds, or will receive, a
    /// write the tombstone superseded.
    ///
    /// The default collects nothing: the store keeps every tombstone forever and
    /// never needs to send a snapshot.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn collect_tombstones(&self, horizon: &VersionVector) -> Result<usize, StoreError> {
        let _ = horizon;
        Ok(0)
    }

    /// Tries to make the backing storage writable again after a
    /// [`StoreError::Storage`] (a full disk, an I/O error), and says whether it
    /// proved that it is: [`RedbStore`](crate::RedbStore) opens its file again
    /// and commits a write half as large as the largest value it accepts, then removes it. A node calls it, with backoff, while its store
    /// cannot write, so it serves again once the disk has room, without waiting
    /// for a client's write.
    ///
    /// The default does nothing and answers `Ok(false)`: the store cannot tell
    /// without a real write, so the node waits for the next one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] while the storage still cannot write.
    async fn recover(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

#[async_trait]
impl<T: ConfigStore + ?Sized> ConfigStore for Arc<T> {
    fn origin(&self) -> &Origin {
        (**self).origin()
    }
    fn node_id(&self) -> &NodeId {
        (**self).node_id()
    }
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        (**self).get(key).await
    }
    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        (**self).scan(prefix).await
    }
    async fn live_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        (**self).live_keys(prefix).await
    }
    async fn live_version(&self, key: &str) -> Result<Option<VersionToken>, StoreError> {
        (**self).live_version(key).await
    }
    async fn live_versions(&self, keys: &[&str]) -> Result<Vec<Option<VersionToken>>, StoreError> {
        (**self).live_versions(keys).await
    }
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError> {
        (**self).apply(batch).await
    }
    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError> {
        (**self).merge(records, covers).await
    }
    async fn merge_deferred(
        &self,
        records: Vec<Record>,
        covers: &VersionVector,
    ) -> Result<MergeReport, StoreError> {
        (**self).merge_deferred(records, covers).await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        (**self).sync().await
    }
    async fn digest(&self) -> Result<VersionVector, StoreError> {
        (**self).digest().await
    }
    async fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError> {
        (**self).delta(since, budget_bytes).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Record> {
        (**self).subscribe()
    }
    fn subscribe_prefix(&self, prefix: &str) -> broadcast::Receiver<Record> {
        (**self).subscribe_prefix(prefix)
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        (**self).snapshot().await
    }
    async fn restore(&self, snapshot: Snapshot) -> Result<MergeReport, StoreError> {
        (**self).restore(snapshot).await
    }
    async fn changes_since(&self, prefix: &str, from: u64, limit: usize) -> Result<ChangeBatch, StoreError> {
        (**self).changes_since(prefix, from, limit).await
    }
    async fn collect_tombstones(&self, horizon: &VersionVector) -> Result<usize, StoreError> {
        (**self).collect_tombstones(horizon).await
    }
    async fn feed_head(&self) -> Result<FeedHead, StoreError> {
        (**self).feed_head().await
    }
    async fn conflicts(&self, prefix: &str) -> Result<Vec<Conflict>, StoreError> {
        (**self).conflicts(prefix).await
    }
    async fn recover(&self) -> Result<bool, StoreError> {
        (**self).recover().await
    }
}
