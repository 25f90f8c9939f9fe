//! Property tests: merge laws, delta sync equals full-state merge, and tombstone
//! collection never brings a deleted key back; with conflicts: every replica
//! ends with the same conflict set, the one a model computes from every write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use spectrum_core::{Hlc, ManualClock, NodeId, Timestamp};
use spectrum_replication::horizon::tombstone_horizon;
use spectrum_replication::testing::conflict_model;
use spectrum_replication::{ConfigStore, MemoryStore, Record, StoreError, VersionVector, WriteBatch};

const ORIGINS: [&str; 3] = ["a", "b", "c"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn store(id: &str) -> MemoryStore {
    MemoryStore::new(NodeId::new(id).unwrap(), Arc::new(Hlc::new(Arc::new(ManualClock::new(1_000)))))
}

type State = (Vec<Record>, VersionVector);

async fn state(s: &MemoryStore) -> State {
    (s.scan("").await.unwrap(), s.digest().await.unwrap())
}

async fn merged(sets: &[&[Record]]) -> MemoryStore {
    let s = store("z");
    for set in sets {
        s.merge(set.to_vec(), &VersionVector::default()).await.unwrap();
    }
    s
}

/// The writes of three origins: per origin, seq 1, 2, … with strictly increasing
/// stamps (as an HLC issues them), on a handful of keys.
fn universe() -> impl Strategy<Value = Vec<Record>> {
    let one = |origin: &'static str| {
        (0u64..20, prop::collection::vec((0u8..4, prop::option::of(any::<u8>()), 1u64..4), 0..8)).prop_map(
            move |(base, writes)| {
                let mut wall = base;
                writes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (key, value, step))| {
                        wall += step;
                        Record {
                            key: format!("k{key}"),
                            value: value.map(|v| Bytes::from(vec![v])),
                            stamp: Timestamp::new(wall, 0),
                            origin: origin.parse().unwrap(),
                            seq: i as u64 + 1,
                            lineage: Default::default(),
                        }
                    })
                    .collect::<Vec<_>>()
            },
        )
    };
    (one(ORIGINS[0]), one(ORIGINS[1]), one(ORIGINS[2])).prop_map(|(a, b, c)| [a, b, c].concat())
}

/// The universe and three subsets of it (chosen by bits).
fn three_subsets() -> impl Strategy<Value = (Vec<Record>, Vec<Record>, Vec<Record>)> {
    universe().prop_flat_map(|u| {
        let n = u.len();
        (Just(u), prop::collection::vec(0u8..8, n)).prop_map(|(u, bits)| {
            let pick = |bit: u8| -> Vec<Record> {
                u.iter().zip(&bits).filter(|(_, b)| *b & bit != 0).map(|(r, _)| r.clone()).collect()
            };
            (pick(1), pick(2), pick(4))
        })
    })
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        node: usize,
        key: u8,
        value: u8,
    },
    Delete {
        node: usize,
        key: u8,
    },
    /// One delta exchange, possibly cut short by the budget and never repeated.
    Sync {
        from: usize,
        to: usize,
        budget: usize,
    },
    /// Steps a node's physical clock, backwards too (the HLC must cope).
    Tick {
        node: usize,
        ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3, 0u8..5, any::<u8>()).prop_map(|(node, key, value)| Op::Put { node, key, value }),
        1 => (0usize..3, 0u8..5).prop_map(|(node, key)| Op::Delete { node, key }),
        2 => (0usize..3, 0usize..3, 1usize..120).prop_map(|(from, to, budget)| Op::Sync { from, to, budget }),
        1 => (0usize..3, -3i64..4).prop_map(|(node, ms)| Op::Tick { node, ms }),
    ]
}

async fn sync_fully(from: &MemoryStore, to: &MemoryStore, budget: usize) {
    for _ in 0..10_000 {
        let d = from.delta(&to.digest().await.unwrap(), budget).await.unwrap();
        to.merge(d.records, &d.covers).await.unwrap();
        if d.complete {
            return;
        }
    }
    panic!("delta sync did not complete");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative((a, b, _) in three_subsets()) {
        runtime().block_on(async {
            let ab = state(&merged(&[&a, &b]).await).await;
            let ba = state(&merged(&[&b, &a]).await).await;
            let mut rev: Vec<Record> = a.iter().chain(&b).cloned().collect();
            rev.reverse();
            let reversed = state(&merged(&[&rev]).await).await;
            prop_assert_eq!(&ab, &ba);
            prop_assert_eq!(&ab, &reversed);
            Ok(())
        })?;
    }

    #[test]
    fn merge_is_associative((a, b, c) in three_subsets()) {
        runtime().block_on(async {
            let left = merged(&[&a, &b]).await;
            let left = merged(&[&left.scan("").await.unwrap(), &c]).await;
            let right = merged(&[&b, &c]).await;
            let right = merged(&[&a, &right.scan("").await.unwrap()]).await;
            prop_assert_eq!(left.scan("").await.unwrap(), right.scan("").await.unwrap());
            Ok(())
        })?;
    }

    #[test]
    fn merge_is_idempotent((a, b, _) in three_subsets()) {
        runtime().block_on(async {
            let once = state(&merged(&[&a, &b]).await).await;
            let twice = state(&merged(&[&a, &b, &a, &b]).await).await;
            prop_assert_eq!(once, twice);
            Ok(())
        })?;
    }

    #[test]
    fn repeated_delta_sync_equals_full_state_merge(
        ops in prop::collection::vec(op(), 1..60),
        heal_budget in 1usize..100,
    ) {
        runtime().block_on(delta_sync_matches_the_model(&ops, heal_budget))?;
    }
}

/// Runs `ops` on three nodes, heals with repeated delta syncs of `heal_budget`
/// bytes, and checks every node against a last-writer-wins model.
async fn delta_sync_matches_the_model(ops: &[Op], heal_budget: usize) -> Result<(), TestCaseError> {
    let clocks: Vec<Arc<ManualClock>> = (0..3).map(|i| Arc::new(ManualClock::new(1_000 + i))).collect();
    let nodes: Vec<MemoryStore> = clocks
        .iter()
        .zip(ORIGINS)
        .map(|(c, id)| MemoryStore::new(NodeId::new(id).unwrap(), Arc::new(Hlc::new(c.clone()))))
        .collect();
    let mut written: Vec<Record> = Vec::new();
    for op in ops {
        match *op {
            Op::Put { node, key, value } => {
                let batch = WriteBatch::new().put(format!("k{key}"), vec![value]);
                written.extend(nodes[node].apply(batch).await.unwrap());
            }
            Op::Delete { node, key } => {
                written.extend(nodes[node].apply(WriteBatch::new().delete(format!("k{key}"))).await.unwrap());
            }
            Op::Sync { from, to, budget } if from != to => {
                let d = nodes[from].delta(&nodes[to].digest().await.unwrap(), budget).await.unwrap();
                nodes[to].merge(d.records, &d.covers).await.unwrap();
            }
            Op::Sync { .. } => {}
            Op::Tick { node, ms } => {
                use spectrum_core::Clock;
                clocks[node].set(clocks[node].now_ms().saturating_add_signed(ms));
            }
        }
    }
    for from in 0..3 {
        for to in 0..3 {
            if from != to {
                sync_fully(&nodes[from], &nodes[to], heal_budget).await;
            }
        }
    }
    // The oracle: per key, the greatest write by (stamp, origin).
    let mut model: BTreeMap<String, Record> = BTreeMap::new();
    for r in &written {
        if model.get(&r.key).is_none_or(|held| r.wins_over(held)) {
            model.insert(r.key.clone(), r.clone());
        }
    }
    let mut want_vv = VersionVector::default();
    for r in &written {
        want_vv.raise(&r.origin, r.seq);
    }
    let full = merged(&[&written]).await;
    let want: Vec<Record> = model.into_values().collect();
    let want_conflicts = conflict_model(&written, |_| false);
    prop_assert_eq!(&full.scan("").await.unwrap(), &want);
    prop_assert_eq!(&conflicts(&full).await, &want_conflicts);
    for n in &nodes {
        prop_assert_eq!(&n.scan("").await.unwrap(), &want);
        prop_assert_eq!(&n.digest().await.unwrap(), &want_vv);
        prop_assert_eq!(&conflicts(n).await, &want_conflicts, "node {}", n.node_id());
    }
    Ok(())
}

/// A conflict as `(key, winner, loser)` version tokens.
type Named = BTreeSet<(String, String, String)>;

async fn conflicts(s: &MemoryStore) -> Named {
    let found = s.conflicts("").await.unwrap();
    found.iter().map(|c| (c.key.clone(), c.winner.token().to_string(), c.loser.token().to_string())).collect()
}

/// The writes three real stores make under `ops` (so each carries the lineage
/// its store gave it), and three subsets of them chosen by bits.
fn written_subsets() -> impl Strategy<Value = (Vec<Record>, Vec<Record>, Vec<Record>)> {
    prop::collection::vec(op(), 1..40).prop_flat_map(|ops| {
        let written = runtime().block_on(write_all(&ops));
        let n = written.len();
        (Just(written), prop::collection::vec(0u8..8, n)).prop_map(|(u, bits)| {
            let pick = |bit: u8| -> Vec<Record> {
                u.iter().zip(&bits).filter(|(_, b)| *b & bit != 0).map(|(r, _)| r.clone()).collect()
            };
            (pick(1), pick(2), pick(4))
        })
    })
}

/// Runs `ops` on three stores; returns every write made.
async fn write_all(ops: &[Op]) -> Vec<Record> {
    let nodes: Vec<MemoryStore> = ORIGINS.iter().map(|id| store(id)).collect();
    let mut written = Vec::new();
    for op in ops {
        match *op {
            Op::Put { node, key, value } => {
                let batch = WriteBatch::new().put(format!("k{key}"), vec![value]);
                written.extend(nodes[node].apply(batch).await.unwrap());
            }
            Op::Delete { node, key } => {
                written.extend(nodes[node].apply(WriteBatch::new().delete(format!("k{key}"))).await.unwrap());
            }
            Op::Sync { from, to, budget } if from != to => {
                let d = nodes[from].delta(&nodes[to].digest().await.unwrap(), budget).await.unwrap();
                nodes[to].merge(d.records, &d.covers).await.unwrap();
            }
            Op::Sync { .. } | Op::Tick { .. } => {}
        }
    }
    written
}

/// What a store holds, conflict losers included.
async fn held(s: &MemoryStore) -> (Vec<Record>, Named) {
    (s.scan("").await.unwrap(), conflicts(s).await)
}

/// Everything a store holds as records to merge elsewhere: winners and losers.
async fn all_records(s: &MemoryStore) -> Vec<Record> {
    let snap = s.snapshot().await.unwrap();
    snap.records.into_iter().chain(snap.conflicts).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn merge_with_conflicts_is_commutative_and_idempotent((a, b, _) in written_subsets()) {
        runtime().block_on(async {
            let ab = merged(&[&a, &b]).await;
            let ba = merged(&[&b, &a]).await;
            let mut rev: Vec<Record> = a.iter().chain(&b).cloned().collect();
            rev.reverse();
            let reversed = merged(&[&rev]).await;
            let twice = merged(&[&a, &b, &b, &a]).await;
            let want = held(&ab).await;
            prop_assert_eq!(&held(&ba).await, &want);
            prop_assert_eq!(&held(&reversed).await, &want);
            prop_assert_eq!(&held(&twice).await, &want);
            prop_assert_eq!(ab.digest().await.unwrap(), twice.digest().await.unwrap());
            prop_assert_eq!(&want.1, &conflict_model(&[a, b].concat(), |_| false), "the model's conflicts");
            Ok(())
        })?;
    }

    #[test]
    fn merge_with_conflicts_is_associative((a, b, c) in written_subsets()) {
        runtime().block_on(async {
            let left = merged(&[&a, &b]).await;
            let left = merged(&[&all_records(&left).await, &c]).await;
            let right = merged(&[&b, &c]).await;
            let right = merged(&[&a, &all_records(&right).await]).await;
            prop_assert_eq!(held(&left).await, held(&right).await);
            Ok(())
        })?;
    }
}

/// Two writes to one key made before either node heard of the other: both
/// nodes, and a third that only ever talks to one of them, list the same
/// conflict; a write from a node that holds it clears it everywhere, and a
/// late copy of the loser does not bring it back.
#[test]
fn a_conflict_shows_on_every_replica_until_a_write_that_saw_both_clears_it() {
    runtime().block_on(async {
        let (a, b, c) = (store("a"), store("b"), store("c"));
        let a1 = a.apply(WriteBatch::new().put("k", "from a")).await.unwrap().remove(0);
        b.apply(WriteBatch::new().put("other", "x")).await.unwrap();
        let b1 = b.apply(WriteBatch::new().put("k", "from b")).await.unwrap().remove(0);
        assert!(b1.wins_over(&a1), "b's clock was ahead");
        sync_fully(&a, &b, 64).await;
        sync_fully(&b, &a, 64).await;
        // c hears only from b, which kept a's write as the loser.
        sync_fully(&b, &c, 64).await;
        let want: Named = [("k".to_owned(), b1.token().to_string(), a1.token().to_string())].into();
        for s in [&a, &b, &c] {
            assert_eq!(conflicts(s).await, want, "{}", s.node_id());
            assert_eq!(s.get("k").await.unwrap().unwrap().value.as_deref(), Some(&b"from b"[..]));
        }
        // c saw both: its write clears the conflict, here and wherever it goes.
        let c1 = c.apply(WriteBatch::new().put("k", "settled")).await.unwrap().remove(0);
        assert_eq!(c1.lineage.replaces, Some(b1.token()));
        sync_fully(&c, &a, 64).await;
        sync_fully(&c, &b, 64).await;
        for s in [&a, &b, &c] {
            assert!(conflicts(s).await.is_empty(), "{}", s.node_id());
        }
        a.merge(vec![a1.clone(), b1.clone()], &VersionVector::default()).await.unwrap();
        let late = store("d");
        late.merge(vec![c1.clone()], &VersionVector::default()).await.unwrap();
        late.merge(vec![a1, b1], &VersionVector::default()).await.unwrap();
        assert!(conflicts(&a).await.is_empty() && conflicts(&late).await.is_empty());
        assert_eq!(late.get("k").await.unwrap().unwrap().value.as_deref(), Some(&b"settled"[..]));
    });
}

/// A write that saw only one side leaves the conflict open, against itself.
#[test]
fn a_write_that_saw_only_one_side_keeps_the_conflict_open() {
    runtime().block_on(async {
        let (a, b) = (store("a"), store("b"));
        let a1 = a.apply(WriteBatch::new().put("k", "a1")).await.unwrap().remove(0);
        let b1 = b.apply(WriteBatch::new().put("k", "b1")).await.unwrap().remove(0);
        // a writes again before hearing of b1: its write supersedes a1 only.
        let a2 = a.apply(WriteBatch::new().put("k", "a2")).await.unwrap().remove(0);
        assert_eq!(a2.lineage.replaces, Some(a1.token()));
        sync_fully(&a, &b, 64).await;
        sync_fully(&b, &a, 64).await;
        let (win, lose) = if a2.wins_over(&b1) { (&a2, &b1) } else { (&b1, &a2) };
        let want: Named = [("k".to_owned(), win.token().to_string(), lose.token().to_string())].into();
        assert_eq!(conflicts(&a).await, want);
        assert_eq!(conflicts(&b).await, want);
    });
}

/// A delete that wins keeps its key deleted (the put it beat is only listed),
/// and its tombstone is collected only once a later write clears the conflict.
#[test]
fn a_conflicting_delete_keeps_the_key_deleted_and_its_tombstone_until_cleared() {
    runtime().block_on(async {
        let (a, b) = (store("a"), store("b"));
        a.apply(WriteBatch::new().put("k", "v")).await.unwrap();
        sync_fully(&a, &b, 64).await;
        b.apply(WriteBatch::new().put("k", "b's edit")).await.unwrap();
        a.apply(WriteBatch::new().put("x", "1").put("y", "2")).await.unwrap();
        let del = a.apply(WriteBatch::new().delete("k")).await.unwrap().remove(0);
        sync_fully(&a, &b, 64).await;
        sync_fully(&b, &a, 64).await;
        for s in [&a, &b] {
            assert!(s.get("k").await.unwrap().unwrap().is_tombstone(), "the delete won");
            assert_eq!(s.conflicts("").await.unwrap().len(), 1);
        }
        let horizon = a.digest().await.unwrap();
        assert_eq!(a.collect_tombstones(&horizon).await.unwrap(), 0, "held while the conflict is open");
        let again = b.apply(WriteBatch::new().delete("k")).await.unwrap().remove(0);
        assert!(again.saw(&del));
        sync_fully(&b, &a, 64).await;
        assert!(a.conflicts("").await.unwrap().is_empty());
        let horizon = a.digest().await.unwrap();
        assert_eq!(a.collect_tombstones(&horizon).await.unwrap(), 1);
        assert!(a.get("k").await.unwrap().is_none(), "collected, and nothing came back");
    });
}

/// Found by proptest against a delta that claimed `covers` past what a truncated
/// delta had sent: a superseded write let the receiver skip a record it lacked.
#[test]
fn a_truncated_delta_with_superseded_writes_still_converges() {
    let ops = [
        Op::Put { node: 1, key: 0, value: 0 },
        Op::Put { node: 1, key: 1, value: 0 },
        Op::Put { node: 0, key: 0, value: 0 },
    ];
    runtime().block_on(delta_sync_matches_the_model(&ops, 1)).unwrap();
}

#[derive(Debug, Clone)]
enum GcOp {
    Write(Op),
    /// Collects on `node` with the horizon of every node's current digest.
    Collect {
        node: usize,
    },
    /// A delayed or duplicated push: the `nth` write made so far arrives at `to` again.
    Redeliver {
        to: usize,
        nth: usize,
    },
}

fn gc_op() -> impl Strategy<Value = GcOp> {
    prop_oneof![
        6 => op().prop_map(GcOp::Write),
        1 => (0usize..3).prop_map(|node| GcOp::Collect { node }),
        1 => (0usize..3, any::<usize>()).prop_map(|(to, nth)| GcOp::Redeliver { to, nth }),
    ]
}

/// One delta exchange, or a snapshot when `to` is behind `from`'s tombstone horizon.
async fn exchange(from: &MemoryStore, to: &MemoryStore, budget: usize) -> bool {
    match from.delta(&to.digest().await.unwrap(), budget).await {
        Ok(d) => {
            to.merge(d.records, &d.covers).await.unwrap();
            d.complete
        }
        Err(StoreError::BehindHorizon { .. }) => {
            to.restore(from.snapshot().await.unwrap()).await.unwrap();
            false
        }
        Err(e) => panic!("delta: {e}"),
    }
}

/// Values only: what a reader sees (a tombstone and a collected key look alike).
async fn live(s: &MemoryStore) -> BTreeMap<String, Bytes> {
    s.scan("").await.unwrap().into_iter().filter_map(|r| r.value.map(|v| (r.key, v))).collect()
}

async fn collection_matches_the_model(ops: &[GcOp], heal_budget: usize) -> Result<(), TestCaseError> {
    let clocks: Vec<Arc<ManualClock>> = (0..3).map(|i| Arc::new(ManualClock::new(1_000 + i))).collect();
    let nodes: Vec<MemoryStore> = clocks
        .iter()
        .zip(ORIGINS)
        .map(|(c, id)| MemoryStore::new(NodeId::new(id).unwrap(), Arc::new(Hlc::new(c.clone()))))
        .collect();
    let mut written: Vec<Record> = Vec::new();
    for op in ops {
        match op {
            GcOp::Write(Op::Put { node, key, value }) => {
                let batch = WriteBatch::new().put(format!("k{key}"), vec![*value]);
                written.extend(nodes[*node].apply(batch).await.unwrap());
            }
            GcOp::Write(Op::Delete { node, key }) => {
                written
                    .extend(nodes[*node].apply(WriteBatch::new().delete(format!("k{key}"))).await.unwrap());
            }
            GcOp::Write(Op::Sync { from, to, budget }) if from != to => {
                exchange(&nodes[*from], &nodes[*to], *budget).await;
            }
            GcOp::Write(Op::Sync { .. }) => {}
            GcOp::Write(Op::Tick { node, ms }) => {
                use spectrum_core::Clock;
                clocks[*node].set(clocks[*node].now_ms().saturating_add_signed(*ms));
            }
            GcOp::Collect { node } => {
                let mut digests = BTreeMap::new();
                for n in &nodes {
                    digests.insert(n.origin().clone(), n.digest().await.unwrap());
                }
                if let Some(h) = tombstone_horizon(&digests) {
                    nodes[*node].collect_tombstones(&h).await.unwrap();
                }
            }
            GcOp::Redeliver { to, nth } if !written.is_empty() => {
                let r = written[nth % written.len()].clone();
                nodes[*to].merge(vec![r], &VersionVector::default()).await.unwrap();
            }
            GcOp::Redeliver { .. } => {}
        }
    }
    for _ in 0..4 {
        for from in 0..3 {
            for to in 0..3 {
                if from != to {
                    let mut done = false;
                    for _ in 0..10_000 {
                        if exchange(&nodes[from], &nodes[to], heal_budget).await {
                            done = true;
                            break;
                        }
                    }
                    prop_assert!(done, "sync {from} -> {to} did not complete");
                }
            }
        }
    }
    let mut model: BTreeMap<String, Record> = BTreeMap::new();
    for r in &written {
        if model.get(&r.key).is_none_or(|held| r.wins_over(held)) {
            model.insert(r.key.clone(), r.clone());
        }
    }
    let want: BTreeMap<String, Bytes> =
        model.into_values().filter_map(|r| r.value.map(|v| (r.key, v))).collect();
    let mut want_vv = VersionVector::default();
    for r in &written {
        want_vv.raise(&r.origin, r.seq);
    }
    let want_conflicts = conflict_model(&written, |_| false);
    for n in &nodes {
        prop_assert_eq!(
            &live(n).await,
            &want,
            "node {}: no deleted key comes back, no write is lost",
            n.node_id()
        );
        prop_assert_eq!(&n.digest().await.unwrap(), &want_vv);
        prop_assert_eq!(&conflicts(n).await, &want_conflicts, "node {}: the conflict set", n.node_id());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn tombstone_collection_never_resurrects_a_key_and_replicas_converge(
        ops in prop::collection::vec(gc_op(), 1..80),
        heal_budget in 1usize..100,
    ) {
        runtime().block_on(collection_matches_the_model(&ops, heal_budget))?;
    }
}

/// Found by proptest: a sender holding records above a gap in its own digest
/// resent the first of them forever when the budget cut between them, so a delta
/// sync never completed.
#[test]
fn a_sender_holding_records_above_a_gap_still_completes_a_delta() {
    let put = |node, key| GcOp::Write(Op::Put { node, key, value: 0 });
    let ops = [
        put(2, 0),
        put(2, 2),
        put(2, 0),
        GcOp::Redeliver { to: 0, nth: 1 },
        GcOp::Redeliver { to: 0, nth: 2 },
        put(0, 3),
    ];
    runtime().block_on(collection_matches_the_model(&ops, 1)).unwrap();
}
