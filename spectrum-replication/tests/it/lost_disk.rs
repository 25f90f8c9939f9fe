//! A member that lost its disk, a tombstone collected on the strength of its
//! digest from before the loss, and a write of its new store to the deleted
//! key: whether the replicas agree on the key's value depends on the new store
//! waiting for [`FirstWrite`] before its first write (see
//! `spectrum_replication::horizon`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use spectrum_core::{Hlc, ManualClock, NodeId};
use spectrum_replication::horizon::{FirstWrite, tombstone_horizon};
use spectrum_replication::{ConfigStore, MemoryStore, Record, StoreError, WriteBatch};

const BUDGET: usize = 1 << 20;

struct Node {
    clock: Arc<ManualClock>,
    hlc: Arc<Hlc>,
    store: MemoryStore,
}

/// A node over a new store whose physical clock reads `clock_ms` (500 ms
/// maximum offset).
fn node(name: &str, clock_ms: u64) -> Node {
    let clock = Arc::new(ManualClock::new(clock_ms));
    let hlc = Arc::new(Hlc::new(clock.clone()));
    let store = MemoryStore::new(NodeId::new(name).expect("node id"), hlc.clone());
    Node { clock, hlc, store }
}

/// One pull: `to` takes what `from` has that it lacks (a snapshot when `to` is
/// below `from`'s tombstone floor), page by page.
async fn pull(to: &MemoryStore, from: &MemoryStore) {
    for _ in 0..100 {
        match from.delta(&to.digest().await.expect("digest"), BUDGET).await {
            Ok(delta) => {
                to.merge(delta.records, &delta.covers).await.expect("merge");
                if delta.complete {
                    return;
                }
            }
            Err(StoreError::BehindHorizon { .. }) => {
                to.restore(from.snapshot().await.expect("snapshot")).await.expect("restore");
                return;
            }
            Err(e) => panic!("delta: {e}"),
        }
    }
    panic!("a pull did not complete in 100 pages");
}

async fn value(s: &MemoryStore, key: &str) -> Option<Vec<u8>> {
    s.get(key).await.expect("get").and_then(|r| r.value.map(|v| v.to_vec()))
}

/// What the scenario ends with: the value of `k` on a, b and c, the
/// tombstone, and the new store's write.
struct Outcome {
    values: [Option<Vec<u8>>; 3],
    tombstone: Record,
    written: Record,
}

/// a, b and c all see `k` deleted by a, whose clock runs 500 ms ahead (the
/// most allowed); b loses its disk and comes back under a new incarnation
/// with its clock 499 ms behind (within bounds too); a collects the tombstone
/// on the strength of b's digest from before the loss, c has not collected
/// yet; b's new store writes `k` before it has caught up, after waiting for
/// [`FirstWrite`] when `wait`. Then every pair exchanges, twice.
async fn lost_disk_then_write(wait: bool) -> Outcome {
    let a = node("a", 10_500);
    let b_lost = node("b", 10_000);
    let c = node("c", 10_000);
    a.store.apply(WriteBatch::new().put("k", "old")).await.expect("put");
    a.store.apply(WriteBatch::new().delete("k")).await.expect("delete");
    for s in [&b_lost.store, &c.store] {
        pull(s, &a.store).await;
    }
    let tombstone = a.store.get("k").await.expect("get").expect("tombstone");
    assert!(tombstone.is_tombstone());

    let b = node("b", 9_501);
    assert_ne!(b.store.origin(), b_lost.store.origin(), "an empty disk is a new incarnation");
    let first_write = FirstWrite::from_now(&b.hlc);
    let mut digests = BTreeMap::new();
    for s in [&a.store, &b_lost.store, &c.store] {
        digests.insert(s.origin().clone(), s.digest().await.expect("digest"));
    }
    drop(b_lost);
    let horizon = tombstone_horizon(&digests).expect("every member has seen the delete");
    assert_eq!(a.store.collect_tombstones(&horizon).await.expect("collect"), 1, "a collects the delete");

    if wait {
        // Waiting, on b's clock: the manual clock moves only when told to.
        assert!(!first_write.due(&b.hlc));
        b.clock.advance(Duration::from_millis(first_write.not_before_ms() - b.hlc.physical_now_ms()));
        assert!(first_write.due(&b.hlc));
    }
    let written = b.store.apply(WriteBatch::new().put("k", "new")).await.expect("put").remove(0);

    let stores = [&a.store, &b.store, &c.store];
    for _ in 0..2 {
        for to in stores {
            for from in stores {
                if !std::ptr::eq(to, from) {
                    pull(to, from).await;
                }
            }
        }
    }
    let digest = a.store.digest().await.expect("digest");
    for s in stores {
        assert_eq!(s.digest().await.expect("digest"), digest, "every replica has every write");
    }
    let values = [value(&a.store, "k").await, value(&b.store, "k").await, value(&c.store, "k").await];
    Outcome { values, tombstone, written }
}

/// The reproduction of the colleague's report: without the wait, b's write is
/// stamped below the tombstone, so a (which collected it) shows the write while
/// c (which holds it) shows the key deleted, for good. This is the hazard the
/// wait exists for; were it closed elsewhere, this test would say so.
#[tokio::test]
async fn a_new_store_writing_before_its_first_write_is_due_splits_the_replicas_over_a_collected_delete() {
    let o = lost_disk_then_write(false).await;
    assert!(o.written.stamp < o.tombstone.stamp, "{:?} vs {:?}", o.written.stamp, o.tombstone.stamp);
    let [on_a, _, on_c] = o.values;
    assert_eq!((on_a, on_c), (Some(b"new".to_vec()), None));
}

/// With the wait, b's write is stamped above every stamp issued before its
/// store began: it wins wherever the tombstone is still held, and every
/// replica shows it.
#[tokio::test]
async fn a_new_store_that_waits_for_its_first_write_agrees_with_every_replica_over_a_collected_delete() {
    let o = lost_disk_then_write(true).await;
    assert!(o.written.stamp > o.tombstone.stamp, "{:?} vs {:?}", o.written.stamp, o.tombstone.stamp);
    let new = Some(b"new".to_vec());
    assert_eq!(o.values, [new.clone(), new.clone(), new]);
}
