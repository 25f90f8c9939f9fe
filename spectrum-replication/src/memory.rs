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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use spectrum_core::{Hlc, NodeId};
use tokio::sync::broadcast;
use tracing::trace;

use crate::error::StoreError;
use crate::record::{
    DEFAULT_MAX_VALUE_BYTES, Delta, MergeReport, Record, VersionVector, Write, WriteBatch, validate_key,
};
use crate::store::ConfigStore;

/// How many records a [`ConfigStore::subscribe`] receiver may fall behind before
/// it sees [`broadcast::error::RecvError::Lagged`].
pub const FEED_CAPACITY: usize = 1024;

/// A [`ConfigStore`] that keeps everything in memory. Nothing survives a restart.
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
    node_id: NodeId,
    hlc: Arc<Hlc>,
    max_value_bytes: usize,
    state: Mutex<State>,
    feed: broadcast::Sender<Record>,
}

impl MemoryStore {
    /// An empty store for node `node_id`, stamping local writes with `hlc`.
    pub fn new(node_id: NodeId, hlc: Arc<Hlc>) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Self {
            node_id,
            hlc,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            state: Mutex::new(State::default()),
            feed,
        }
    }

    /// Sets the largest value accepted, in bytes (default
    /// [`DEFAULT_MAX_VALUE_BYTES`]). It applies to local writes and to merged
    /// records alike.
    pub fn with_max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// The clock stamping local writes.
    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.hlc
    }

    /// How many records (tombstones included) are stored.
    pub fn len(&self) -> usize {
        self.state.lock().records.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_record(&self, r: &Record) -> Result<(), StoreError> {
        let invalid = |reason: String| StoreError::InvalidRecord { origin: r.origin.clone(), reason };
        validate_key(&r.key).map_err(|e| invalid(e.to_string()))?;
        if r.seq == 0 {
            return Err(invalid(format!("record for {:?} has sequence number 0; they start at 1", r.key)));
        }
        if let Some(v) = &r.value
            && v.len() > self.max_value_bytes
        {
            return Err(invalid(format!(
                "value for {:?} is {} bytes; at most {} are allowed",
                r.key,
                v.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("MemoryStore")
            .field("node_id", &self.node_id)
            .field("records", &st.records.len())
            .field("digest", &st.vv)
            .field("max_value_bytes", &self.max_value_bytes)
            .finish()
    }
}

/// Everything behind the store's lock.
#[derive(Debug, Default)]
struct State {
    /// The winning record per key.
    records: BTreeMap<String, Record>,
    /// Per origin, sequence number → key of the stored records written there.
    by_origin: BTreeMap<NodeId, BTreeMap<u64, String>>,
    /// Highest contiguous sequence number seen per origin.
    vv: VersionVector,
    /// Sequence numbers seen above a gap, per origin.
    pending: BTreeMap<NodeId, BTreeSet<u64>>,
}

impl State {
    /// Stores `rec`, replacing whatever was stored for its key.
    fn store(&mut self, rec: Record) {
        if let Some(old) = self.records.get(&rec.key)
            && let Some(idx) = self.by_origin.get_mut(&old.origin)
        {
            idx.remove(&old.seq);
            if idx.is_empty() {
                self.by_origin.remove(&old.origin);
            }
        }
        self.by_origin.entry(rec.origin.clone()).or_default().insert(rec.seq, rec.key.clone());
        self.records.insert(rec.key.clone(), rec);
    }

    /// The sequence number of the next local write: above everything seen from
    /// this origin (a node that lost its memory must not reuse numbers its peers
    /// already hold).
    fn next_local_seq(&self, me: &NodeId) -> u64 {
        let pending = self.pending.get(me).and_then(|p| p.last().copied()).unwrap_or(0);
        self.vv.get(me).max(pending) + 1
    }

    /// Notes that record `(origin, seq)` was merged or written here.
    fn mark_seen(&mut self, origin: &NodeId, seq: u64) {
        let cur = self.vv.get(origin);
        if seq <= cur {
            return;
        }
        if seq == cur + 1 {
            self.vv.raise(origin, seq);
            self.drain(origin);
        } else {
            self.pending.entry(origin.clone()).or_default().insert(seq);
        }
    }

    /// Raises the vector for `origin` to `seq` on a sender's word (`covers`).
    fn raise_to(&mut self, origin: &NodeId, seq: u64) {
        if seq > self.vv.get(origin) {
            self.vv.raise(origin, seq);
        }
        self.drain(origin);
    }

    /// Advances the vector for `origin` over pending sequence numbers that are now
    /// contiguous, and drops those already covered.
    fn drain(&mut self, origin: &NodeId) {
        let Some(p) = self.pending.get_mut(origin) else { return };
        let start = self.vv.get(origin);
        let mut cur = start;
        while let Some(&first) = p.first() {
            if first <= cur {
                p.pop_first();
            } else if first == cur + 1 {
                p.pop_first();
                cur = first;
            } else {
                break;
            }
        }
        if p.is_empty() {
            self.pending.remove(origin);
        }
        if cur > start {
            self.vv.raise(origin, cur);
        }
    }
}

#[async_trait]
impl ConfigStore for MemoryStore {
    fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.state.lock().records.get(key).cloned())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        let st = self.state.lock();
        Ok(st
            .records
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError> {
        batch.validate(self.max_value_bytes)?;
        let mut st = self.state.lock();
        // A local write must win over the record it replaces, even one stamped by
        // a peer whose clock runs ahead of ours.
        for w in &batch.writes {
            if let Some(held) = st.records.get(w.key()) {
                self.hlc.restore(held.stamp);
            }
        }
        let mut out = Vec::with_capacity(batch.writes.len());
        for w in batch.writes {
            let seq = st.next_local_seq(&self.node_id);
            let (key, value) = match w {
                Write::Put { key, value } => (key, Some(value)),
                Write::Delete { key } => (key, None),
            };
            let rec = Record { key, value, stamp: self.hlc.now(), origin: self.node_id.clone(), seq };
            st.store(rec.clone());
            st.mark_seen(&self.node_id, seq);
            let _ = self.feed.send(rec.clone());
            out.push(rec);
        }
        trace!(node = %self.node_id, writes = out.len(), "applied local batch");
        Ok(out)
    }

    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError> {
        for r in &records {
            self.check_record(r)?;
        }
        let mut report = MergeReport::default();
        let mut st = self.state.lock();
        for r in records {
            let wins = st.records.get(&r.key).is_none_or(|held| r.wins_over(held));
            let (origin, seq) = (r.origin.clone(), r.seq);
            if wins {
                st.store(r.clone());
                let _ = self.feed.send(r);
                report.applied += 1;
            } else {
                report.ignored += 1;
            }
            st.mark_seen(&origin, seq);
        }
        for (origin, &seq) in &covers.entries {
            st.raise_to(origin, seq);
        }
        trace!(node = %self.node_id, applied = report.applied, ignored = report.ignored, "merged remote records");
        Ok(report)
    }

    async fn digest(&self) -> Result<VersionVector, StoreError> {
        Ok(self.state.lock().vv.clone())
    }

    async fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError> {
        let st = self.state.lock();
        let origins: BTreeSet<&NodeId> = st.by_origin.keys().chain(st.vv.entries.keys()).collect();
        let mut delta = Delta { complete: true, ..Delta::default() };
        let mut used = 0usize;
        for origin in origins {
            let from = since.get(origin);
            let ours = st.vv.get(origin);
            let mut due = st
                .by_origin
                .get(origin)
                .into_iter()
                .flat_map(|idx| idx.range((Bound::Excluded(from), Bound::Unbounded)))
                .filter_map(|(&seq, key)| st.records.get(key).map(|r| (seq, r)))
                .peekable();
            let mut last_sent = None;
            let mut cut = false;
            if delta.complete {
                for (seq, rec) in due {
                    let len = rec.encoded_len();
                    if !delta.records.is_empty() && used.saturating_add(len) > budget_bytes {
                        cut = true;
                        break;
                    }
                    used = used.saturating_add(len);
                    delta.records.push(rec.clone());
                    last_sent = Some(seq);
                }
            } else {
                cut = due.peek().is_some();
            }
            let claim = if cut {
                delta.complete = false;
                last_sent.map_or(0, |s| s.min(ours))
            } else {
                ours
            };
            if claim > from {
                delta.covers.raise(origin, claim);
            }
        }
        Ok(delta)
    }

    fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.feed.subscribe()
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
            origin: NodeId::new(origin).unwrap(),
            seq,
        }
    }

    #[tokio::test]
    async fn out_of_order_records_advance_the_digest_only_when_contiguous() {
        let s = store("a");
        let b = NodeId::new("b").unwrap();
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
        assert_eq!(d.covers.get(a.node_id()), 1);
    }

    #[tokio::test]
    async fn covers_are_capped_at_the_senders_own_contiguous_digest() {
        let a = store("a");
        // `a` holds b:5 but has not seen b:1..4.
        a.merge(vec![rec("k", "b", 5, 5)], &VersionVector::default()).await.unwrap();
        let d = a.delta(&VersionVector::default(), 1 << 20).await.unwrap();
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.covers.get(&NodeId::new("b").unwrap()), 0);
    }

    #[tokio::test]
    async fn a_node_that_lost_its_memory_does_not_reuse_sequence_numbers() {
        let a = store("a");
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
