//! [`MemoryStore`]: a [`ConfigStore`] held in memory, for tests and quick demos.
//!
//! # Why deltas with `covers` are safe
//!
//! A store keeps only the winning record per key, so the records of an origin that
//! were superseded are gone and its sequence numbers have gaps. The version vector
//! still advances over them: a [`Delta`] says, per origin, up to which sequence
//! number the receiver may raise its vector (`covers`). The invariant every store
//! keeps is:
//!
//! > for every key, if the store's vector covers the greatest write ever made to
//! > that key, the store holds that write.
//!
//! A sender claims `covers[o] = c` only when it covers `(o, c)` itself and has sent
//! every record it holds of origin `o` above the receiver's digest up to `c`
//! (records go out in ascending sequence order per origin). If the greatest write
//! to a key is `(o, s)` with `s <= c`, the sender covers it, so by the invariant
//! holds it, so it was sent; the receiver's invariant therefore survives the merge.
//! When every vector covers every write, every store holds every key's greatest
//! write: the replicas are equal.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use spectrum_core::{Hlc, NodeId};
use tokio::sync::broadcast;
use tracing::trace;

use crate::changelog::{ChangeLogLimits, DEFAULT_CHANGE_LOG_CAPACITY, FeedHead, MemoryLog};
use crate::conflict::Conflict;
use crate::error::StoreError;
use crate::feed::Feeds;
use crate::origin::Origin;
use crate::record::{
    ChangeBatch, DEFAULT_MAX_VALUE_BYTES, Delta, MergeReport, Record, Snapshot, VersionToken, VersionVector,
    WriteBatch,
};
use crate::state::{Changes, State, check_record};
use crate::store::ConfigStore;

/// A [`ConfigStore`] that keeps everything in memory. Nothing survives a restart;
/// [`RedbStore`](crate::RedbStore) is the durable store.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use spectrum_core::{Hlc, NodeId};
/// use spectrum_replication::{ConfigStore, MemoryStore, WriteBatch};
///
/// let store = MemoryStore::new(NodeId::new("n1")?, Arc::new(Hlc::system()));
/// let written = store.apply(WriteBatch::new().put("settings/color", "blue")).await?;
/// assert_eq!(written[0].seq, 1);
/// let got = store.get("settings/color").await?.expect("just written");
/// assert_eq!(got.value.as_deref(), Some(&b"blue"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct MemoryStore {
    origin: Origin,
    hlc: Arc<Hlc>,
    max_value_bytes: usize,
    state: Mutex<State>,
    /// The change log; locked after `state`, never before.
    log: Mutex<MemoryLog>,
    feed: Feeds,
}

impl MemoryStore {
    /// An empty store for node `node_id`, stamping local writes with `hlc`. It
    /// writes under a fresh origin ([`Origin::fresh`]): nothing survives a
    /// restart, so each store is an incarnation of its own.
    pub fn new(node_id: NodeId, hlc: Arc<Hlc>) -> Self {
        Self::for_origin(Origin::fresh(node_id), hlc)
    }

    /// An empty store writing under `origin`, stamping local writes with `hlc`:
    /// for simulations and tests that must replay the same origins. `origin`
    /// must be one no earlier store used (else sequence numbers are reused).
    pub fn for_origin(origin: Origin, hlc: Arc<Hlc>) -> Self {
        Self {
            origin,
            hlc,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            state: Mutex::new(State::default()),
            log: Mutex::new(MemoryLog::new(
                ChangeLogLimits::default().max_entries(DEFAULT_CHANGE_LOG_CAPACITY),
            )),
            feed: Feeds::default(),
        }
    }

    /// Sets the largest value accepted, in bytes (default
    /// [`DEFAULT_MAX_VALUE_BYTES`]). It applies to local writes and to merged
    /// records alike.
    pub fn with_max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// Sets how many changes [`changes_since`](ConfigStore::changes_since) can
    /// reach back (default [`DEFAULT_CHANGE_LOG_CAPACITY`];
    /// at least one), keeping the age limit.
    pub fn with_change_log_capacity(self, capacity: usize) -> Self {
        let limits = self.change_log_limits().max_entries(capacity);
        self.with_change_log(limits)
    }

    /// Sets what the change log keeps (default: [`DEFAULT_CHANGE_LOG_CAPACITY`]
    /// entries, [`DEFAULT_CHANGE_LOG_MAX_AGE`](crate::DEFAULT_CHANGE_LOG_MAX_AGE)).
    pub fn with_change_log(self, limits: ChangeLogLimits) -> Self {
        self.log.lock().set_limits(limits, self.hlc.physical_now_ms());
        self
    }

    /// What the change log keeps.
    pub fn change_log_limits(&self) -> ChangeLogLimits {
        self.log.lock().limits()
    }

    /// The clock stamping local writes.
    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.hlc
    }

    /// How many records (tombstones included) are stored.
    pub fn len(&self) -> usize {
        self.state.lock().len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commits planned changes and feeds the stored records to subscribers.
    fn commit(&self, st: &mut State, changes: &Changes) {
        st.commit(changes);
        if !changes.feed.is_empty() {
            self.log.lock().append(&changes.feed, self.hlc.physical_now_ms());
        }
        self.feed.publish(changes.feed.iter().filter_map(|c| c.record.as_ref()));
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("MemoryStore")
            .field("origin", &self.origin)
            .field("records", &st.len())
            .field("digest", st.vv())
            .field("max_value_bytes", &self.max_value_bytes)
            .finish()
    }
}

#[async_trait]
impl ConfigStore for MemoryStore {
    fn origin(&self) -> &Origin {
        &self.origin
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.state.lock().get(key))
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        Ok(self.state.lock().scan(prefix))
    }

    async fn live_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.state.lock().live_keys(prefix))
    }

    async fn live_version(&self, key: &str) -> Result<Option<VersionToken>, StoreError> {
        Ok(self.state.lock().live_version(key))
    }

    async fn live_versions(&self, keys: &[&str]) -> Result<Vec<Option<VersionToken>>, StoreError> {
        let state = self.state.lock();
        Ok(keys.iter().map(|key| state.live_version(key)).collect())
    }

    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError> {
        batch.validate(self.max_value_bytes)?;
        let mut st = self.state.lock();
        let (changes, out) = st.plan_apply(&self.origin, &self.hlc, batch);
        self.commit(&mut st, &changes);
        trace!(origin = %self.origin, writes = out.len(), "applied local batch");
        Ok(out)
    }

    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError> {
        for r in &records {
            check_record(r, self.max_value_bytes)?;
        }
        let mut st = self.state.lock();
        let (changes, report) = st.plan_merge(records, covers);
        self.commit(&mut st, &changes);
        trace!(origin = %self.origin, applied = report.applied, ignored = report.ignored, "merged remote records");
        Ok(report)
    }

    async fn digest(&self) -> Result<VersionVector, StoreError> {
        Ok(self.state.lock().vv().clone())
    }

    async fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError> {
        self.state.lock().delta(since, budget_bytes)
    }

    fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.feed.subscribe()
    }

    fn subscribe_prefix(&self, prefix: &str) -> broadcast::Receiver<Record> {
        self.feed.subscribe_prefix(prefix)
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(self.state.lock().snapshot())
    }

    async fn conflicts(&self, prefix: &str) -> Result<Vec<Conflict>, StoreError> {
        Ok(self.state.lock().conflicts(prefix))
    }

    async fn restore(&self, snapshot: Snapshot) -> Result<MergeReport, StoreError> {
        for r in snapshot.records.iter().chain(&snapshot.conflicts) {
            check_record(r, self.max_value_bytes)?;
        }
        let mut st = self.state.lock();
        let (changes, report) = st.plan_restore(snapshot, &self.hlc);
        self.commit(&mut st, &changes);
        trace!(origin = %self.origin, applied = report.applied, "restored a snapshot");
        Ok(report)
    }

    async fn changes_since(&self, prefix: &str, from: u64, limit: usize) -> Result<ChangeBatch, StoreError> {
        let st = self.state.lock();
        self.log.lock().changes_since(prefix, from, limit, st.head())
    }

    async fn feed_head(&self) -> Result<FeedHead, StoreError> {
        let st = self.state.lock();
        let oldest = self.log.lock().oldest(st.head());
        Ok(FeedHead { position: st.head(), oldest, digest: st.vv().clone() })
    }

    async fn collect_tombstones(&self, horizon: &VersionVector) -> Result<usize, StoreError> {
        let mut st = self.state.lock();
        let (changes, count) = st.plan_collect(horizon, &self.hlc);
        self.commit(&mut st, &changes);
        trace!(origin = %self.origin, collected = count, "collected tombstones");
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use spectrum_core::{ManualClock, Timestamp};

    fn store(id: &str) -> MemoryStore {
        MemoryStore::new(NodeId::new(id).unwrap(), Arc::new(Hlc::new(Arc::new(ManualClock::new(1_000)))))
    }

    fn rec(key: &str, origin: &str, seq: u64, wall: u64) -> Record {
        Record {
            key: key.into(),
            value: Some(Bytes::from(format!("{origin}-{seq}"))),
            stamp: Timestamp::new(wall, 0),
            origin: origin.parse().unwrap(),
            seq,
            lineage: Default::default(),
        }
    }

    #[tokio::test]
    async fn out_of_order_records_advance_the_digest_only_when_contiguous() {
        let s = store("a");
        let b: Origin = "b".parse().unwrap();
        s.merge(vec![rec("k3", "b", 3, 3)], &VersionVector::default()).await.unwrap();
        assert_eq!(s.digest().await.unwrap().get(&b), 0);
        s.merge(vec![rec("k1", "b", 1, 1)], &VersionVector::default()).await.unwrap();
        assert_eq!(s.digest().await.unwrap().get(&b), 1);
        s.merge(vec![rec("k2", "b", 2, 2)], &VersionVector::default()).await.unwrap();
        assert_eq!(s.digest().await.unwrap().get(&b), 3);
    }

    #[tokio::test]
    async fn a_truncated_delta_never_covers_what_it_did_not_send() {
        let a = store("a");
        for i in 0..10 {
            a.apply(WriteBatch::new().put(format!("k{i}"), "v")).await.unwrap();
        }
        let d = a.delta(&VersionVector::default(), 1).await.unwrap();
        assert_eq!(d.records.len(), 1);
        assert!(!d.complete);
        assert_eq!(d.covers.get(a.origin()), 1);
    }

    #[tokio::test]
    async fn covers_are_capped_at_the_senders_own_contiguous_digest() {
        let a = store("a");
        // `a` holds b:5 but has not seen b:1..4.
        a.merge(vec![rec("k", "b", 5, 5)], &VersionVector::default()).await.unwrap();
        let d = a.delta(&VersionVector::default(), 1 << 20).await.unwrap();
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.covers.get(&"b".parse().unwrap()), 0);
    }

    #[tokio::test]
    async fn a_new_store_of_a_node_writes_under_a_new_origin_from_1() {
        let old = store("a");
        old.apply(WriteBatch::new().put("x", "v").put("y", "v")).await.unwrap();
        let new = store("a");
        assert_ne!(new.origin(), old.origin());
        assert_eq!(new.node_id(), old.node_id());
        // The new store learns the old one's writes; its own start at 1, unused.
        let d = old.delta(&new.digest().await.unwrap(), 1 << 20).await.unwrap();
        new.merge(d.records, &d.covers).await.unwrap();
        let w = new.apply(WriteBatch::new().put("z", "v")).await.unwrap();
        assert_eq!((&w[0].origin, w[0].seq), (new.origin(), 1));
        assert_eq!(new.digest().await.unwrap().get(old.origin()), 2);
    }

    #[tokio::test]
    async fn a_store_handed_back_its_own_writes_numbers_above_them() {
        let a = MemoryStore::for_origin(
            "a".parse().unwrap(),
            Arc::new(Hlc::new(Arc::new(ManualClock::new(1_000)))),
        );
        a.merge(vec![rec("x", "a", 7, 7)], &VersionVector::default()).await.unwrap();
        let w = a.apply(WriteBatch::new().put("y", "v")).await.unwrap();
        assert_eq!(w[0].seq, 8);
    }

    #[tokio::test]
    async fn a_local_write_wins_over_a_record_stamped_in_the_future() {
        let a = store("a");
        a.merge(vec![rec("k", "b", 1, 9_999_999)], &VersionVector::default()).await.unwrap();
        a.apply(WriteBatch::new().put("k", "mine")).await.unwrap();
        let got = a.get("k").await.unwrap().unwrap();
        assert_eq!(got.value.as_deref(), Some(&b"mine"[..]));
    }
}
