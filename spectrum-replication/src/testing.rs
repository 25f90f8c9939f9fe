//! The conformance suite every [`ConfigStore`] implementation runs (behind the
//! `testing` feature).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use spectrum_replication::{MemoryStore, testing::conformance_suite};
//!
//! conformance_suite(MemoryStore::new).await;
//! # });
//! ```
//!
//! A durable store gives each store of the suite a file of its own:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use spectrum_replication::{RedbStore, testing::conformance_suite};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let n = AtomicUsize::new(0);
//! conformance_suite(|id, hlc| {
//!     let path = dir.path().join(format!("{}.redb", n.fetch_add(1, Ordering::Relaxed)));
//!     RedbStore::open(path, id, hlc).expect("open")
//! })
//! .await;
//! # });
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spectrum_core::{Hlc, ManualClock, NodeId, Timestamp};

use crate::error::StoreError;
use crate::origin::Origin;
use crate::record::{Change, DEFAULT_MAX_VALUE_BYTES, Record, VersionVector, WriteBatch};
use crate::store::ConfigStore;

/// Runs every check of the suite against stores built by `make`, panicking with
/// the name of the first check that fails.
///
/// `make(node_id, hlc)` must return a fresh, empty store for `node_id` stamping
/// with `hlc` and accepting values of up to [`DEFAULT_MAX_VALUE_BYTES`] (no
/// larger). Being created empty, each must write under an [`Origin`] of its own
/// (see [`Origin::fresh`]). The suite drives the clocks itself (they are [`ManualClock`]s).
pub async fn conformance_suite<F, S>(make: F)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let h = Harness { make: &make };
    apply_then_get_and_scan(&h).await;
    a_fresh_store_writes_under_an_origin_of_its_own(&h).await;
    apply_numbers_writes_per_origin_and_digest_counts_them(&h).await;
    delete_leaves_a_tombstone_that_get_and_scan_return(&h).await;
    invalid_batches_change_nothing(&h).await;
    invalid_remote_records_change_nothing(&h).await;
    merge_keeps_the_last_writer_by_stamp_then_origin(&h).await;
    merge_is_idempotent(&h).await;
    merge_is_commutative(&h).await;
    out_of_order_records_advance_the_digest_only_when_contiguous(&h).await;
    delta_then_merge_makes_digests_and_contents_equal(&h).await;
    delta_for_an_equal_digest_is_empty_and_complete(&h).await;
    truncated_deltas_converge_when_repeated(&h).await;
    covers_advance_the_digest_over_superseded_writes(&h).await;
    local_writes_win_over_records_stamped_ahead(&h).await;
    subscribe_sees_local_and_merged_writes(&h).await;
    snapshot_then_restore_makes_an_equal_copy(&h).await;
    tombstones_are_collected_only_where_the_horizon_covers_them(&h).await;
    restoring_a_snapshot_drops_records_superseded_by_collected_tombstones(&h).await;
    the_change_feed_replays_every_change_in_order_without_gaps(&h).await;
    the_feed_head_names_the_position_the_oldest_and_the_digest_there(&h).await;
    writes_that_did_not_see_each_other_are_kept_as_a_conflict_until_one_that_saw_both(&h).await;
    a_tombstone_that_lost_a_conflict_is_collected_and_the_conflict_ends(&h).await;
}

struct Harness<'a, F> {
    make: &'a F,
}

impl<F, S> Harness<'_, F>
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    fn store(&self, id: &str) -> S {
        self.store_at(id, 1_000_000)
    }

    fn store_at(&self, id: &str, ms: u64) -> S {
        let hlc = Arc::new(Hlc::new(Arc::new(ManualClock::new(ms))));
        (self.make)(node(id), hlc)
    }
}

fn node(id: &str) -> NodeId {
    match NodeId::new(id) {
        Ok(n) => n,
        Err(e) => panic!("test node id {id:?}: {e}"),
    }
}

fn origin(text: &str) -> Origin {
    match text.parse() {
        Ok(o) => o,
        Err(e) => panic!("test origin {text:?}: {e}"),
    }
}

fn remote(key: &str, value: Option<&str>, wall_ms: u64, origin: &str, seq: u64) -> Record {
    Record {
        key: key.into(),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        stamp: Timestamp::new(wall_ms, 0),
        origin: self::origin(origin),
        seq,
        lineage: Default::default(),
    }
}

async fn contents<S: ConfigStore>(s: &S) -> BTreeMap<String, Record> {
    s.scan("").await.expect("scan").into_iter().map(|r| (r.key.clone(), r)).collect()
}

async fn sync_fully<S: ConfigStore, T: ConfigStore>(from: &S, to: &T, budget: usize) {
    for _ in 0..10_000 {
        let d = from.delta(&to.digest().await.expect("digest"), budget).await.expect("delta");
        to.merge(d.records, &d.covers).await.expect("merge");
        if d.complete {
            return;
        }
    }
    panic!("delta sync did not complete in 10,000 rounds");
}

async fn apply_then_get_and_scan<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    assert_eq!(s.node_id(), &node("a"), "apply_then_get_and_scan: node_id");
    let out = s
        .apply(WriteBatch::new().put("b/2", "two").put("b/1", "one").put("c/1", "other"))
        .await
        .expect("apply");
    assert_eq!(out.len(), 3, "apply_then_get_and_scan: one record per write");
    assert!(
        out.iter().all(|r| r.origin == *s.origin()),
        "apply_then_get_and_scan: records carry the store's origin"
    );
    assert_eq!(s.origin().node(), &node("a"), "apply_then_get_and_scan: the origin is of the store's node");
    let got = s.get("b/1").await.expect("get").expect("b/1 present");
    assert_eq!(got.value.as_deref(), Some(&b"one"[..]), "apply_then_get_and_scan: value");
    assert_eq!(got, out[1], "apply_then_get_and_scan: get returns the applied record");
    assert!(s.get("b/3").await.expect("get").is_none(), "apply_then_get_and_scan: missing key is None");
    let keys: Vec<String> = s.scan("b/").await.expect("scan").into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["b/1", "b/2"], "apply_then_get_and_scan: scan is by prefix, in key order");
    assert_eq!(s.scan("").await.expect("scan").len(), 3, "apply_then_get_and_scan: empty prefix scans all");
}

async fn a_fresh_store_writes_under_an_origin_of_its_own<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let what = "a_fresh_store_writes_under_an_origin_of_its_own";
    let lost = h.store("a");
    let fresh = h.store("a");
    assert_ne!(lost.origin(), fresh.origin(), "{what}: two fresh stores of one node");
    assert!(!fresh.origin().is_legacy(), "{what}: never the bare node id, which old stores used");
    lost.apply(WriteBatch::new().put("x", "1").put("y", "1")).await.expect("apply");
    // The fresh store writes before it has heard of the lost one's writes.
    let mine = fresh.apply(WriteBatch::new().put("z", "1")).await.expect("apply");
    assert_eq!((&mine[0].origin, mine[0].seq), (fresh.origin(), 1), "{what}: numbering starts at 1");
    sync_fully(&lost, &fresh, usize::MAX).await;
    sync_fully(&fresh, &lost, usize::MAX).await;
    assert_eq!(contents(&fresh).await.len(), 3, "{what}: no write hides another");
    assert_eq!(contents(&fresh).await, contents(&lost).await, "{what}: the copies are equal");
    assert_eq!(
        fresh.digest().await.expect("digest"),
        lost.digest().await.expect("digest"),
        "{what}: digests"
    );
    // Equal stamps from two incarnations of one node: the greater incarnation wins.
    let low = remote("t", Some("low"), 30, "c~0000000000000001", 1);
    let high = remote("t", Some("high"), 30, "c~0000000000000002", 1);
    fresh.merge(vec![high, low], &VersionVector::default()).await.expect("merge");
    let t = fresh.get("t").await.expect("get").expect("t");
    assert_eq!(t.value.as_deref(), Some(&b"high"[..]), "{what}: ties break on the incarnation");
}

async fn apply_numbers_writes_per_origin_and_digest_counts_them<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    let first = s.apply(WriteBatch::new().put("k", "1").put("j", "1")).await.expect("apply");
    let second = s.apply(WriteBatch::new().put("k", "2")).await.expect("apply");
    let seqs: Vec<u64> = first.iter().chain(&second).map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3], "apply numbers writes 1, 2, 3");
    assert!(second[0].stamp > first[1].stamp, "later writes carry greater stamps");
    assert_eq!(s.digest().await.expect("digest").get(s.origin()), 3, "digest counts local writes");
    assert_eq!(second[0].token().to_string(), format!("{}:3", s.origin()), "token names origin and seq");
}

async fn delete_leaves_a_tombstone_that_get_and_scan_return<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    s.apply(WriteBatch::new().put("k", "v")).await.expect("apply");
    let del = s.apply(WriteBatch::new().delete("k")).await.expect("delete");
    assert!(del[0].is_tombstone(), "delete writes a tombstone");
    let got = s.get("k").await.expect("get").expect("tombstone is returned by get");
    assert!(got.is_tombstone() && got.seq == 2, "get returns the tombstone record");
    assert_eq!(s.live_version("k").await.expect("live version"), None, "a tombstone has no live version");
    assert_eq!(s.live_version("absent").await.expect("live version"), None);
    let scanned = s.scan("k").await.expect("scan");
    assert_eq!(scanned.len(), 1, "scan returns tombstones");
    assert!(scanned[0].is_tombstone(), "scan returns tombstones");
    // Live keys are scan's live records' keys, in key order.
    s.apply(WriteBatch::new().put("k2", "v").put("k1", "v").put("j", "v")).await.expect("apply");
    assert_eq!(s.live_keys("k").await.expect("live keys"), vec!["k1".to_owned(), "k2".to_owned()]);
    assert_eq!(s.live_keys("").await.expect("live keys").len(), 3, "every live key, no tombstone");
    let k1 = s.get("k1").await.expect("get").expect("k1");
    assert_eq!(s.live_version("k1").await.expect("live version"), Some(k1.token()), "get's record's version");
    // Many at once: each as `live_version` answers it, in the order asked,
    // a key asked twice answered twice.
    let asked = ["k2", "k", "absent", "k1", "k2"];
    let mut one_by_one = Vec::new();
    for key in asked {
        one_by_one.push(s.live_version(key).await.expect("live version"));
    }
    let k2 = s.get("k2").await.expect("get").expect("k2").token();
    assert_eq!(one_by_one, vec![Some(k2.clone()), None, None, Some(k1.token()), Some(k2)]);
    assert_eq!(s.live_versions(&asked).await.expect("live versions"), one_by_one);
    assert!(s.live_versions(&[]).await.expect("live versions").is_empty());
}

async fn invalid_batches_change_nothing<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    s.apply(WriteBatch::new().put("keep", "v")).await.expect("apply");
    let before = (contents(&s).await, s.digest().await.expect("digest"));

    let e = s.apply(WriteBatch::new()).await.expect_err("empty batch");
    assert!(matches!(e, StoreError::EmptyBatch), "empty batch: {e}");
    let e = s.apply(WriteBatch::new().put("ok", "v").put("", "v")).await.expect_err("empty key");
    assert!(matches!(e, StoreError::InvalidKey { .. }), "empty key: {e}");
    let e = s.apply(WriteBatch::new().put("ok", "v").put("bad\nkey", "v")).await.expect_err("control char");
    assert!(matches!(e, StoreError::InvalidKey { .. }), "control character: {e}");
    let e = s.apply(WriteBatch::new().put("x".repeat(513), "v")).await.expect_err("long key");
    assert!(matches!(e, StoreError::InvalidKey { .. }), "long key: {e}");
    let big = Bytes::from(vec![0u8; DEFAULT_MAX_VALUE_BYTES + 1]);
    let e = s.apply(WriteBatch::new().put("ok", "v").put("big", big)).await.expect_err("big value");
    assert!(matches!(e, StoreError::ValueTooLarge { .. }), "oversized value: {e}");

    let after = (contents(&s).await, s.digest().await.expect("digest"));
    assert_eq!(before, after, "a rejected batch writes nothing");
    let next = s.apply(WriteBatch::new().put("ok", "v")).await.expect("apply");
    assert_eq!(next[0].seq, 2, "a rejected batch consumes no sequence numbers");
}

async fn invalid_remote_records_change_nothing<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    let good = remote("good", Some("v"), 5, "b", 1);
    let big = Record {
        value: Some(Bytes::from(vec![0u8; DEFAULT_MAX_VALUE_BYTES + 1])),
        ..remote("big", None, 6, "b", 2)
    };
    let cases = [
        ("empty key", remote("", Some("v"), 5, "b", 2)),
        ("seq 0", remote("k", Some("v"), 5, "b", 0)),
        ("control character", remote("k\u{7}", Some("v"), 5, "b", 2)),
        ("oversized value", big),
    ];
    for (what, bad) in cases {
        let mut covers = VersionVector::default();
        covers.raise(&origin("b"), 9);
        let e = s.merge(vec![good.clone(), bad], &covers).await.expect_err(what);
        assert!(matches!(e, StoreError::InvalidRecord { .. }), "{what}: {e}");
        assert!(contents(&s).await.is_empty(), "{what}: nothing merged");
        assert_eq!(s.digest().await.expect("digest"), VersionVector::default(), "{what}: digest unchanged");
    }
}

async fn merge_keeps_the_last_writer_by_stamp_then_origin<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let older = remote("k", Some("older"), 10, "z", 1);
    let newer = remote("k", Some("newer"), 20, "b", 1);
    let tie_low = remote("t", Some("low"), 30, "b", 2);
    let tie_high = remote("t", Some("high"), 30, "c", 1);
    for order in [[&older, &newer, &tie_low, &tie_high], [&tie_high, &newer, &tie_low, &older]] {
        let s = h.store("a");
        for r in order {
            s.merge(vec![r.clone()], &VersionVector::default()).await.expect("merge");
        }
        let k = s.get("k").await.expect("get").expect("k");
        assert_eq!(k.value.as_deref(), Some(&b"newer"[..]), "the greater stamp wins");
        let t = s.get("t").await.expect("get").expect("t");
        assert_eq!(t.value.as_deref(), Some(&b"high"[..]), "equal stamps: the greater origin wins");
    }
    let s = h.store("a");
    s.merge(vec![newer.clone()], &VersionVector::default()).await.expect("merge");
    let tomb = remote("k", None, 25, "b", 2);
    s.merge(vec![tomb], &VersionVector::default()).await.expect("merge");
    let report = s.merge(vec![newer], &VersionVector::default()).await.expect("merge");
    assert_eq!(report.applied, 0, "an older put does not resurrect a deleted key");
    assert!(s.get("k").await.expect("get").expect("k").is_tombstone(), "the tombstone stays");
}

fn sample_records() -> Vec<Record> {
    vec![
        remote("a", Some("b1"), 10, "b", 1),
        remote("b", Some("b2"), 11, "b", 2),
        remote("a", Some("b3"), 12, "b", 3),
        remote("a", Some("c1"), 11, "c", 1),
        remote("c", None, 13, "c", 2),
        remote("b", Some("c3"), 9, "c", 3),
    ]
}

async fn merge_is_idempotent<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    let first = s.merge(sample_records(), &VersionVector::default()).await.expect("merge");
    assert_eq!(first.applied + first.ignored, 6, "merge reports every record");
    let state = (contents(&s).await, s.digest().await.expect("digest"));
    let again = s.merge(sample_records(), &VersionVector::default()).await.expect("merge");
    assert_eq!(again.applied, 0, "merging the same records twice applies nothing the second time");
    assert_eq!(state, (contents(&s).await, s.digest().await.expect("digest")), "merge is idempotent");
}

async fn merge_is_commutative<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let forward = h.store("a");
    let backward = h.store("a");
    let one_by_one = h.store("a");
    forward.merge(sample_records(), &VersionVector::default()).await.expect("merge");
    let mut rev = sample_records();
    rev.reverse();
    backward.merge(rev, &VersionVector::default()).await.expect("merge");
    for r in sample_records().into_iter().rev() {
        one_by_one.merge(vec![r], &VersionVector::default()).await.expect("merge");
    }
    let f = (contents(&forward).await, forward.digest().await.expect("digest"));
    assert_eq!(f, (contents(&backward).await, backward.digest().await.expect("digest")), "merge commutes");
    assert_eq!(
        f,
        (contents(&one_by_one).await, one_by_one.digest().await.expect("digest")),
        "merge commutes"
    );
    assert_eq!(f.0["a"].value.as_deref(), Some(&b"b3"[..]), "last writer wins");
    assert_eq!(f.1.get(&origin("b")), 3, "digest covers b:1..3");
    assert_eq!(f.1.get(&origin("c")), 3, "digest covers c:1..3");
}

async fn out_of_order_records_advance_the_digest_only_when_contiguous<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    let b = origin("b");
    let recs = [
        remote("x", Some("1"), 1, "b", 1),
        remote("y", Some("2"), 2, "b", 2),
        remote("z", Some("3"), 3, "b", 3),
    ];
    s.merge(vec![recs[2].clone()], &VersionVector::default()).await.expect("merge");
    assert_eq!(s.digest().await.expect("digest").get(&b), 0, "a gap holds the digest back");
    s.merge(vec![recs[0].clone()], &VersionVector::default()).await.expect("merge");
    assert_eq!(s.digest().await.expect("digest").get(&b), 1, "the digest advances to the gap");
    s.merge(vec![recs[1].clone()], &VersionVector::default()).await.expect("merge");
    assert_eq!(
        s.digest().await.expect("digest").get(&b),
        3,
        "filling the gap advances over what was pending"
    );
}

/// Three stores with concurrent and overlapping writes.
async fn three_busy_stores<F, S>(h: &Harness<'_, F>) -> [S; 3]
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let stores = [h.store_at("a", 1_000_000), h.store_at("b", 1_000_005), h.store_at("c", 999_990)];
    for round in 0..6u32 {
        for (i, s) in stores.iter().enumerate() {
            let mut batch = WriteBatch::new()
                .put(format!("shared/{}", round % 3), format!("{i}-{round}"))
                .put(format!("own/{i}/{round}"), "v");
            if round % 2 == 1 {
                batch = batch.delete(format!("own/{i}/{}", round - 1));
            }
            s.apply(batch).await.expect("apply");
        }
    }
    stores
}

async fn delta_then_merge_makes_digests_and_contents_equal<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let [a, b, c] = three_busy_stores(h).await;
    sync_fully(&a, &b, usize::MAX).await;
    sync_fully(&c, &b, usize::MAX).await;
    sync_fully(&b, &a, usize::MAX).await;
    sync_fully(&b, &c, usize::MAX).await;
    let want = (contents(&b).await, b.digest().await.expect("digest"));
    assert_eq!(want, (contents(&a).await, a.digest().await.expect("digest")), "a converged with b");
    assert_eq!(want, (contents(&c).await, c.digest().await.expect("digest")), "c converged with b");
    for s in [&a, &b, &c] {
        let o = s.origin();
        assert_eq!(want.1.get(o), 6 * 2 + 3, "digest covers every write of {o}");
    }
}

async fn delta_for_an_equal_digest_is_empty_and_complete<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let [a, ..] = three_busy_stores(h).await;
    let d = a.delta(&a.digest().await.expect("digest"), 1).await.expect("delta");
    assert!(d.records.is_empty() && d.complete, "nothing is due for an equal digest");
    let fresh = h.store("z");
    let d = fresh.delta(&VersionVector::default(), 1).await.expect("delta");
    assert!(d.records.is_empty() && d.complete, "an empty store owes nothing");
}

async fn truncated_deltas_converge_when_repeated<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let [a, b, c] = three_busy_stores(h).await;
    let d = a.delta(&VersionVector::default(), 1).await.expect("delta");
    // One record, or the group a vouched gap needs (see `ConfigStore::delta`).
    assert!(!d.records.is_empty(), "a tiny budget still sends a record");
    assert!(!d.complete, "and says it is incomplete");
    for budget in [1, 60, 200] {
        let sink = h.store("sink");
        for from in [&a, &b, &c] {
            sync_fully(from, &sink, budget).await;
        }
        let full = h.store("full");
        for from in [&a, &b, &c] {
            sync_fully(from, &full, usize::MAX).await;
        }
        assert_eq!(
            contents(&sink).await,
            contents(&full).await,
            "budget {budget}: same contents as a full sync"
        );
        assert_eq!(
            sink.digest().await.expect("digest"),
            full.digest().await.expect("digest"),
            "budget {budget}: same digest as a full sync"
        );
    }
}

async fn covers_advance_the_digest_over_superseded_writes<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let a = h.store("a");
    for v in ["1", "2", "3"] {
        a.apply(WriteBatch::new().put("k", v)).await.expect("apply");
    }
    let b = h.store("b");
    let d = a.delta(&b.digest().await.expect("digest"), usize::MAX).await.expect("delta");
    assert_eq!(d.records.len(), 1, "only the surviving record is sent");
    b.merge(d.records, &d.covers).await.expect("merge");
    assert_eq!(
        b.digest().await.expect("digest").get(a.origin()),
        3,
        "covers skip the superseded a:1 and a:2"
    );
}

async fn local_writes_win_over_records_stamped_ahead<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let a = h.store_at("a", 1_000_000);
    a.merge(vec![remote("k", Some("theirs"), 1_000_400, "b", 1)], &VersionVector::default())
        .await
        .expect("merge");
    let w = a.apply(WriteBatch::new().put("k", "mine")).await.expect("apply");
    assert!(w[0].stamp > Timestamp::new(1_000_400, 0), "the local stamp moves past the replaced record");
    let got = a.get("k").await.expect("get").expect("k");
    assert_eq!(got.value.as_deref(), Some(&b"mine"[..]), "a local write replaces what it overwrote");
}

async fn subscribe_sees_local_and_merged_writes<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    let mut feed = s.subscribe();
    let mut under_y = s.subscribe_prefix("y");
    let local = s.apply(WriteBatch::new().put("x", "1").delete("y")).await.expect("apply");
    let theirs = remote("z", Some("2"), 5, "b", 1);
    s.merge(vec![theirs.clone()], &VersionVector::default()).await.expect("merge");
    s.merge(vec![theirs.clone()], &VersionVector::default()).await.expect("merge again");
    let mut seen = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(5), feed.recv()).await {
            Ok(Ok(r)) => seen.push(r),
            other => panic!("subscribe: expected a record, got {other:?}"),
        }
    }
    assert_eq!(seen, [local[0].clone(), local[1].clone(), theirs], "the feed shows writes in storage order");
    assert!(feed.try_recv().is_err(), "an ignored duplicate is not fed again");
    // A prefix's feed carries its records, in order; a store may send others
    // too (the default sends the whole feed), never fewer.
    let mut under = Vec::new();
    while let Ok(r) = under_y.try_recv() {
        under.push(r);
    }
    assert!(under.contains(&local[1]), "the prefix's feed carries the delete of y: {under:?}");
    let all = [local[0].clone(), local[1].clone(), seen[2].clone()];
    let order: Vec<usize> = under.iter().filter_map(|r| all.iter().position(|a| a == r)).collect();
    assert!(order.len() == under.len() && order.is_sorted(), "in storage order: {under:?}");
}

async fn snapshot_then_restore_makes_an_equal_copy<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let [a, b, _] = three_busy_stores(h).await;
    let snap = a.snapshot().await.expect("snapshot");
    assert_eq!(snap.digest, a.digest().await.expect("digest"), "snapshot: digest is the store's");
    assert_eq!(snap.records, a.scan("").await.expect("scan"), "snapshot: every record, in key order");
    let copy = h.store("copy");
    copy.restore(snap.clone()).await.expect("restore");
    assert_eq!(
        (contents(&copy).await, copy.digest().await.expect("digest")),
        (contents(&a).await, a.digest().await.expect("digest")),
        "restore into an empty store makes an equal copy"
    );
    let again = copy.restore(snap).await.expect("restore again");
    assert_eq!(again.applied, 0, "restore is idempotent");
    // Restoring into a store with writes of its own keeps the newer of each key.
    b.restore(a.snapshot().await.expect("snapshot")).await.expect("restore");
    sync_fully(&b, &a, usize::MAX).await;
    assert_eq!(contents(&a).await, contents(&b).await, "restore merges last-writer-wins per key");
    let bad = crate::record::Snapshot {
        records: vec![remote("", Some("v"), 5, "b", 1)],
        ..crate::record::Snapshot::default()
    };
    let before = contents(&copy).await;
    let e = copy.restore(bad).await.expect_err("malformed snapshot");
    assert!(matches!(e, StoreError::InvalidRecord { .. }), "malformed snapshot: {e}");
    assert_eq!(before, contents(&copy).await, "a malformed snapshot changes nothing");
}

async fn tombstones_are_collected_only_where_the_horizon_covers_them<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    let put = s.apply(WriteBatch::new().put("gone", "v").put("kept", "v")).await.expect("apply");
    let del = s.apply(WriteBatch::new().delete("gone")).await.expect("delete");
    s.apply(WriteBatch::new().delete("later")).await.expect("delete");
    assert_eq!(s.collect_tombstones(&VersionVector::default()).await.expect("collect"), 0, "empty horizon");
    let mut horizon = VersionVector::default();
    horizon.raise(s.origin(), del[0].seq);
    assert_eq!(s.collect_tombstones(&horizon).await.expect("collect"), 1, "only a:3 is covered");
    assert!(s.get("gone").await.expect("get").is_none(), "a collected tombstone is gone");
    assert!(s.get("later").await.expect("get").expect("later").is_tombstone(), "a:4 is beyond the horizon");
    assert!(s.get("kept").await.expect("get").is_some(), "values are never collected");
    assert_eq!(s.digest().await.expect("digest").get(s.origin()), 4, "collection keeps the digest");

    let e = s.delta(&VersionVector::default(), usize::MAX).await.expect_err("behind the floor");
    assert!(matches!(e, StoreError::BehindHorizon { floor: 3, .. }), "behind the floor: {e}");
    let d = s.delta(&horizon, usize::MAX).await.expect("a peer past the floor gets a delta");
    assert!(d.complete && d.records.len() == 1, "just a:4");

    let report = s.merge(vec![put[0].clone()], &VersionVector::default()).await.expect("merge");
    assert_eq!(report.applied, 0, "the superseded put is covered, so ignored");
    assert!(s.get("gone").await.expect("get").is_none(), "a collected key does not come back");

    let w = s.apply(WriteBatch::new().put("gone", "again")).await.expect("apply");
    assert!(w[0].stamp > del[0].stamp, "a new write after collection is stamped above the tombstone");
    assert_eq!(
        s.snapshot().await.expect("snapshot").gc_floor.get(s.origin()),
        3,
        "the snapshot carries the floor"
    );
}

async fn restoring_a_snapshot_drops_records_superseded_by_collected_tombstones<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let a = h.store("a");
    let stale = h.store("stale");
    let put = a.apply(WriteBatch::new().put("k", "old")).await.expect("apply");
    // `stale` saw the put, then was cut off while the key was deleted and the
    // tombstone collected everywhere else.
    stale.merge(put.clone(), &VersionVector::default()).await.expect("merge");
    stale.apply(WriteBatch::new().put("mine", "v")).await.expect("apply");
    a.apply(WriteBatch::new().delete("k")).await.expect("delete");
    let digest = a.digest().await.expect("digest");
    assert_eq!(a.collect_tombstones(&digest).await.expect("collect"), 1, "collected");

    let e = a.delta(&stale.digest().await.expect("digest"), usize::MAX).await.expect_err("needs a snapshot");
    assert!(matches!(e, StoreError::BehindHorizon { .. }), "{e}");
    stale.restore(a.snapshot().await.expect("snapshot")).await.expect("restore");
    assert!(stale.get("k").await.expect("get").is_none(), "the deleted key does not come back");
    assert!(stale.get("mine").await.expect("get").is_some(), "writes the maker has not seen stay");
    let d = a.delta(&stale.digest().await.expect("digest"), usize::MAX).await.expect("a delta again");
    assert!(d.records.is_empty(), "nothing more is due");
    // And the stale store cannot hand the old value back.
    let back = stale.delta(&a.digest().await.expect("digest"), usize::MAX).await.expect("delta");
    a.merge(back.records, &back.covers).await.expect("merge");
    assert!(a.get("k").await.expect("get").is_none(), "no resurrection through the stale store");
    assert!(a.get("mine").await.expect("get").is_some(), "its own writes still flow");
}

async fn the_change_feed_replays_every_change_in_order_without_gaps<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    let start = s.snapshot().await.expect("snapshot").position;
    s.apply(WriteBatch::new().put("x/1", "1").put("y/1", "1")).await.expect("apply");
    s.merge(vec![remote("x/2", Some("2"), 5, "b", 1)], &VersionVector::default()).await.expect("merge");
    s.merge(vec![remote("x/2", Some("2"), 5, "b", 1)], &VersionVector::default()).await.expect("merge again");
    s.apply(WriteBatch::new().delete("x/1")).await.expect("delete");
    let horizon = s.digest().await.expect("digest");
    s.collect_tombstones(&horizon).await.expect("collect");

    let mut all: Vec<Change> = Vec::new();
    let mut pos = start;
    for _ in 0..100 {
        let batch = s.changes_since("", pos, 2).await.expect("changes_since");
        assert!(batch.changes.len() <= 2, "the limit is kept");
        if batch.changes.is_empty() {
            assert_eq!(batch.position, pos, "an empty page does not move");
            break;
        }
        pos = batch.position;
        all.extend(batch.changes);
    }
    let indexes: Vec<u64> = all.iter().map(|c| c.index).collect();
    let want: Vec<u64> = (start + 1..=start + 5).collect();
    assert_eq!(indexes, want, "one change per stored or dropped record, numbered without gaps");
    assert_eq!(all[4].record, None, "a collected tombstone shows as a dropped record");
    assert!(all[4].dropped_tombstone, "which says it was a tombstone");
    assert!(all.iter().take(4).all(|c| !c.dropped_tombstone), "stored records are not drops");
    let mut replayed = BTreeMap::new();
    for c in &all {
        match &c.record {
            Some(r) => replayed.insert(c.key.clone(), r.clone()),
            None => replayed.remove(&c.key),
        };
    }
    assert_eq!(replayed, contents(&s).await, "replaying the feed rebuilds the store");

    let only_x = s.changes_since("x/", start, 100).await.expect("changes_since");
    assert!(only_x.changes.iter().all(|c| c.key.starts_with("x/")), "the prefix filters");
    assert_eq!(only_x.changes.len(), 4, "every change under the prefix");
    assert_eq!(only_x.position, start + 5, "the position passes skipped changes");
    let e = s.changes_since("", start + 6, 10).await.expect_err("a position never issued");
    assert!(matches!(e, StoreError::FeedAhead { .. }), "{e}");
}

async fn the_feed_head_names_the_position_the_oldest_and_the_digest_there<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    let empty = s.feed_head().await.expect("feed_head");
    assert_eq!((empty.position, empty.oldest), (0, 0), "an empty store's feed starts at 0");
    s.apply(WriteBatch::new().put("x", "1").put("y", "2")).await.expect("apply");
    s.merge(vec![remote("z", Some("3"), 5, "b", 1)], &VersionVector::default()).await.expect("merge");
    let head = s.feed_head().await.expect("feed_head");
    let snapshot = s.snapshot().await.expect("snapshot");
    assert_eq!(head.position, snapshot.position, "feed_head: the position a snapshot reports");
    assert_eq!(head.digest, snapshot.digest, "feed_head: the digest at that position");
    assert!(head.oldest <= head.position, "feed_head: the oldest position is not beyond the head");
    s.changes_since("", head.oldest, 10).await.expect("the oldest position is accepted");
    if head.oldest > 0 {
        let e = s.changes_since("", head.oldest - 1, 10).await.expect_err("below the oldest");
        assert!(matches!(e, StoreError::FeedCompacted { oldest, .. } if oldest == head.oldest), "{e}");
    }
}

/// Two stores write one key before hearing of each other: after a delta each
/// way both keep the last writer's record and list the other write as the one
/// conflict; a snapshot carries it to a third store; a write that saw both
/// clears it on every store, and its lineage names what it replaced.
async fn writes_that_did_not_see_each_other_are_kept_as_a_conflict_until_one_that_saw_both<F, S>(
    h: &Harness<'_, F>,
) where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let a = h.store_at("a", 1_000_000);
    let b = h.store_at("b", 1_000_005);
    let Ok(mut first) = a.apply(WriteBatch::new().put("k", "from a")).await else { panic!("apply on a") };
    let Ok(mut second) = b.apply(WriteBatch::new().put("k", "from b")).await else { panic!("apply on b") };
    let (first, second) = (first.remove(0), second.remove(0));
    assert_eq!(first.lineage.replaces, None, "conflict: a new key replaces nothing");
    sync_fully(&a, &b, usize::MAX).await;
    sync_fully(&b, &a, usize::MAX).await;
    for s in [&a, &b] {
        let found = s.conflicts("").await.expect("conflicts");
        assert_eq!(found.len(), 1, "conflict: one on each store");
        assert_eq!((&found[0].winner, &found[0].loser), (&second, &first), "conflict: b's later write wins");
        assert_eq!(s.get("k").await.expect("get"), Some(second.clone()), "conflict: reads see the winner");
        assert!(s.conflicts("other/").await.expect("conflicts").is_empty(), "conflict: by prefix");
    }
    let copy = h.store("copy");
    copy.restore(a.snapshot().await.expect("snapshot")).await.expect("restore");
    assert_eq!(copy.conflicts("").await.expect("conflicts").len(), 1, "conflict: a snapshot carries it");
    let Ok(mut third) = a.apply(WriteBatch::new().put("k", "settled")).await else { panic!("apply on a") };
    let third = third.remove(0);
    assert_eq!(third.lineage.replaces, Some(second.token()), "conflict: a write names what it replaced");
    assert!(third.saw(&first) && third.saw(&second), "conflict: a write sees every held side");
    sync_fully(&a, &b, usize::MAX).await;
    sync_fully(&a, &copy, usize::MAX).await;
    for s in [&a, &b, &copy] {
        assert!(s.conflicts("").await.expect("conflicts").is_empty(), "conflict: cleared everywhere");
    }
}

async fn a_tombstone_that_lost_a_conflict_is_collected_and_the_conflict_ends<F, S>(h: &Harness<'_, F>)
where
    F: Fn(NodeId, Arc<Hlc>) -> S,
    S: ConfigStore,
{
    let s = h.store("a");
    // b deleted `k` and, concurrently, c put it later; d put `j` and e deleted it later.
    let records = vec![
        remote("k", None, 10, "b", 1),
        remote("k", Some("put"), 20, "c", 1),
        remote("j", Some("put"), 10, "d", 1),
        remote("j", None, 20, "e", 1),
    ];
    s.merge(records, &VersionVector::default()).await.expect("merge");
    assert_eq!(s.conflicts("").await.expect("conflicts").len(), 2, "lost tombstone: two conflicts");
    let mut horizon = VersionVector::default();
    for o in ["b", "c", "d", "e"] {
        horizon.raise(&origin(o), 1);
    }
    assert_eq!(s.collect_tombstones(&horizon).await.expect("collect"), 1, "lost tombstone: b:1 only");
    let left = s.conflicts("").await.expect("conflicts");
    assert_eq!(left.len(), 1, "lost tombstone: the conflict of a winning tombstone stays");
    assert_eq!(left[0].key, "j", "lost tombstone: its key stays deleted");
    assert_eq!(s.get("k").await.expect("get").and_then(|r| r.value), Some(Bytes::from_static(b"put")));
    let snapshot = s.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.gc_floor.get(&origin("b")), 1, "lost tombstone: the floor rises past it");
    assert!(snapshot.conflicts.iter().all(|c| c.key == "j"), "lost tombstone: no longer stored");
}

/// A conflict named by version tokens: `(key, winner, loser)`.
pub type NamedConflict = (String, String, String);

/// The model of the conflicts replicas list once they exchanged everything,
/// from every write ever made to them: per key, the writes no other write to
/// the key supersedes (its writer saw it, by its lineage's context, and it
/// wins over it); the last-writer-wins greatest of them is the winner, every
/// other one a loser, except those `collected` says are gone (a losing
/// tombstone the horizon covered, for instance). A key with a single such
/// write has no conflict. The property tests of `tests/it` and the root's
/// `tests/convergence` compare replicas against it.
pub fn conflict_model<'a>(
    writes: impl IntoIterator<Item = &'a Record>,
    collected: impl Fn(&Record) -> bool,
) -> std::collections::BTreeSet<NamedConflict> {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in writes {
        by_key.entry(&r.key).or_default().push(r);
    }
    let mut out = std::collections::BTreeSet::new();
    for (key, writes) in by_key {
        let superseded = |x: &Record| {
            writes.iter().any(|y| {
                (y.origin != x.origin || y.seq != x.seq)
                    && y.lineage.context.get(&x.origin) >= x.seq
                    && y.wins_over(x)
            })
        };
        let open: Vec<&Record> = writes.iter().copied().filter(|x| !superseded(x)).collect();
        let Some(winner) = open.iter().copied().reduce(|a, b| if b.wins_over(a) { b } else { a }) else {
            continue;
        };
        for l in open.iter().filter(|l| l.token() != winner.token() && !collected(l)) {
            out.insert((key.to_owned(), winner.token().to_string(), l.token().to_string()));
        }
    }
    out
}
