//! Convergence of the replicated configuration database, proven by property tests.
//!
//! Each case is a script of [`Op`]s run against real stores ([`MemoryStore`]) over a
//! simulated network that drops, duplicates, reorders and truncates messages, cuts
//! links (partitions), crashes nodes (every message in flight to or from them is
//! lost) and steps their clocks within the allowed offset. Then the network heals and
//! nodes sync to quiescence, and the properties a user relies on are asserted:
//!
//! - every replica is identical, and equal to a last-writer-wins model of every
//!   acknowledged write;
//! - no deleted key comes back;
//! - no acknowledged write is lost (each is the winner for its key, or beaten by a
//!   later write);
//! - every node's HLC stamps strictly increase (a store's, once a node lost its
//!   store and came back on an empty one);
//! - a node that loses its store and writes before it has caught up converges
//!   too: each store writes under an origin of its own, so it never reuses a
//!   sequence number;
//! - tombstones collected once every member has seen them never let a deleted key
//!   come back, however late an old message arrives;
//! - every replica lists the same conflicts (writes to one key that did not see
//!   each other), and they are the ones a model computes from every write that
//!   still exists: per key, the writes no other write supersedes (by its
//!   lineage), the last writer's being the winner.
//!
//! Failing cases are saved in `proptest-regressions/convergence.txt` at the
//! repository root, and replayed first on every run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use spectrum_core::{Clock, Hlc, ManualClock, NodeId, Timestamp};
use spectrum_replication::horizon::tombstone_horizon;
use spectrum_replication::testing::conflict_model;
use spectrum_replication::{
    ConfigStore, MemoryStore, Origin, Record, Snapshot, StoreError, VersionVector, WriteBatch,
};

const KEYS: &[&str] = &["settings/a", "settings/b", "license/main", "resources/postal", "dataflows/x"];
const START_MS: u64 = 1_700_000_000_000;

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Op {
    /// A client writes `key = value` on `node` (acknowledged locally, pushed to every peer).
    Put { node: usize, key: usize, value: u8 },
    /// A client deletes `key` on `node`.
    Delete { node: usize, key: usize },
    /// `to` asks `from` for what it lacks; the answer holds at most `budget` bytes.
    Pull { from: usize, to: usize, budget: usize },
    /// The network delivers the message at this position in its queue (reordering).
    Deliver { pick: usize },
    /// The network delivers a message and keeps a copy to deliver again (duplication).
    Duplicate { pick: usize },
    /// The network loses a message.
    Drop { pick: usize },
    /// The link between two nodes is cut both ways.
    Cut { a: usize, b: usize },
    /// Every link is restored.
    Heal,
    /// A node crashes and restarts: messages to and from it are lost; its
    /// acknowledged writes are durable (the durable store's guarantee, tested on its own).
    Crash { node: usize },
    /// A node loses its store (a lost disk) and comes back at once on an empty
    /// one, under the same node id: a crash, and its writes that reached no
    /// other node are lost (no longer expected anywhere).
    LoseStore { node: usize },
    /// A node's physical clock moves (backwards or forwards) within the allowed offset.
    StepClock { node: usize, delta_ms: i64 },
    /// A node collects the tombstones every member has seen (the replicator's
    /// rule: the element-wise minimum of every member's digest, and only once every
    /// member has seen every write).
    Collect { node: usize },
}

fn op(nodes: usize) -> impl Strategy<Value = Op> {
    let n = 0..nodes;
    prop_oneof![
        4 => (n.clone(), 0..KEYS.len(), any::<u8>()).prop_map(|(node, key, value)| Op::Put { node, key, value }),
        2 => (n.clone(), 0..KEYS.len()).prop_map(|(node, key)| Op::Delete { node, key }),
        3 => (n.clone(), n.clone(), prop_oneof![Just(1usize), 40..200usize, Just(1 << 20)])
            .prop_map(|(from, to, budget)| Op::Pull { from, to, budget }),
        4 => any::<usize>().prop_map(|pick| Op::Deliver { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Duplicate { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Drop { pick }),
        1 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Cut { a, b }),
        1 => Just(Op::Heal),
        1 => n.clone().prop_map(|node| Op::Crash { node }),
        1 => (n.clone(), -400i64..400).prop_map(|(node, delta_ms)| Op::StepClock { node, delta_ms }),
        1 => n.prop_map(|node| Op::Collect { node }),
    ]
}

/// A message in flight: records for `to` to merge, or a whole snapshot for a
/// node that fell behind the tombstone horizon.
#[derive(Debug, Clone)]
struct Message {
    from: usize,
    to: usize,
    records: Vec<Record>,
    covers: VersionVector,
    snapshot: Option<Snapshot>,
}

struct Sim {
    stores: Vec<MemoryStore>,
    /// How many stores each node has had (its current store's incarnation).
    incarnations: Vec<u64>,
    clocks: Vec<Arc<ManualClock>>,
    queue: VecDeque<Message>,
    cut: BTreeSet<(usize, usize)>,
    /// Every acknowledged write, in order.
    acked: Vec<Record>,
    /// The last stamp each node issued.
    last_stamp: Vec<Timestamp>,
    /// Writes that were on no surviving store and in no message when a node
    /// lost its store: gone for good, so in no conflict.
    gone: BTreeSet<(Origin, u64)>,
}

impl Sim {
    fn new(nodes: usize) -> Self {
        let clocks: Vec<_> = (0..nodes).map(|_| Arc::new(ManualClock::new(START_MS))).collect();
        let stores = clocks.iter().enumerate().map(|(i, c)| store(i, 1, c.clone())).collect();
        Self {
            stores,
            incarnations: vec![1; nodes],
            clocks,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            acked: Vec::new(),
            last_stamp: vec![Timestamp::ZERO; nodes],
            gone: BTreeSet::new(),
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn send(&mut self, msg: Message) {
        if self.linked(msg.from, msg.to) && msg.from != msg.to {
            self.queue.push_back(msg);
        }
    }

    async fn write(&mut self, node: usize, batch: WriteBatch) {
        let records = self.stores[node].apply(batch).await.expect("valid local write");
        for r in &records {
            assert!(
                r.stamp > self.last_stamp[node],
                "HLC went backwards on n{node}: {} after {}",
                r.stamp,
                self.last_stamp[node]
            );
            self.last_stamp[node] = r.stamp;
        }
        self.acked.extend(records.iter().cloned());
        for to in 0..self.stores.len() {
            self.send(Message {
                from: node,
                to,
                records: records.clone(),
                covers: VersionVector::default(),
                snapshot: None,
            });
        }
    }

    async fn deliver(&mut self, msg: Message) {
        if !self.linked(msg.from, msg.to) {
            return;
        }
        match msg.snapshot {
            Some(snapshot) => {
                self.stores[msg.to].restore(snapshot).await.expect("a snapshot restores");
            }
            None => {
                self.stores[msg.to].merge(msg.records, &msg.covers).await.expect("well-formed records merge");
            }
        }
    }

    /// What `from` sends `to` when asked: a delta, or a snapshot when `to` is
    /// behind `from`'s tombstone horizon.
    async fn answer(&self, from: usize, to: usize, budget: usize) -> Message {
        let digest = self.stores[to].digest().await.unwrap();
        match self.stores[from].delta(&digest, budget).await {
            Ok(delta) => Message { from, to, records: delta.records, covers: delta.covers, snapshot: None },
            Err(StoreError::BehindHorizon { .. }) => Message {
                from,
                to,
                records: Vec::new(),
                covers: VersionVector::default(),
                snapshot: Some(self.stores[from].snapshot().await.unwrap()),
            },
            Err(e) => panic!("delta failed: {e}"),
        }
    }

    async fn run(&mut self, op: Op) {
        let n = self.stores.len();
        match op {
            Op::Put { node, key, value } => {
                self.write(node, WriteBatch::new().put(KEYS[key], vec![value])).await;
            }
            Op::Delete { node, key } => {
                let live = self.stores[node].get(KEYS[key]).await.unwrap().is_some_and(|r| !r.is_tombstone());
                if live {
                    self.write(node, WriteBatch::new().delete(KEYS[key])).await;
                }
            }
            Op::Pull { from, to, budget } => {
                if from != to && self.linked(from, to) {
                    let msg = self.answer(from, to, budget).await;
                    self.send(msg);
                }
            }
            Op::Deliver { pick } | Op::Duplicate { pick } if !self.queue.is_empty() => {
                let i = pick % self.queue.len();
                let msg = if matches!(op, Op::Duplicate { .. }) {
                    self.queue[i].clone()
                } else {
                    self.queue.remove(i).expect("index in range")
                };
                self.deliver(msg).await;
            }
            Op::Drop { pick } if !self.queue.is_empty() => {
                let i = pick % self.queue.len();
                self.queue.remove(i);
            }
            Op::Deliver { .. } | Op::Duplicate { .. } | Op::Drop { .. } => {}
            Op::Cut { a, b } => {
                if a != b {
                    self.cut.insert((a.min(b), a.max(b)));
                }
            }
            Op::Heal => self.cut.clear(),
            Op::Crash { node } => self.queue.retain(|m| m.from != node && m.to != node),
            Op::LoseStore { node } => self.lose_store(node).await,
            Op::StepClock { node, delta_ms } => {
                let now = self.clocks[node].now_ms() as i64;
                // Stay within the allowed offset of the cluster's reference time.
                let target = (now + delta_ms).clamp(START_MS as i64 - 400, START_MS as i64 + 400);
                self.clocks[node].set(target as u64);
            }
            Op::Collect { node } => {
                let mut digests = BTreeMap::new();
                for s in &self.stores {
                    digests.insert(s.origin().clone(), s.digest().await.unwrap());
                }
                if let Some(horizon) = tombstone_horizon(&digests) {
                    self.stores[node].collect_tombstones(&horizon).await.unwrap();
                }
            }
        }
        debug_assert!(n == self.stores.len());
    }

    /// `node` crashes and comes back on an empty store, writing under a new
    /// origin. What is in flight to or from it is lost in the crash, and so are
    /// the acknowledged writes no longer expected anywhere: a write survives
    /// while another node holds it or a message in flight carries it, or while
    /// a surviving write to its key beats it (then it is rightly superseded);
    /// any other is gone with the disk, and can never come back.
    async fn lose_store(&mut self, node: usize) {
        self.queue.retain(|m| m.from != node && m.to != node);
        let mut held = Vec::with_capacity(self.acked.len());
        for r in &self.acked {
            let mut found = self.queue.iter().any(|m| {
                m.records.contains(r)
                    || m.snapshot.as_ref().is_some_and(|s| s.records.contains(r) || s.conflicts.contains(r))
            });
            for (i, s) in self.stores.iter().enumerate() {
                found = found || (i != node && s.get(&r.key).await.unwrap().is_some_and(|h| h == *r));
                found =
                    found || (i != node && s.conflicts(&r.key).await.unwrap().iter().any(|c| c.loser == *r));
            }
            if !found {
                self.gone.insert((r.origin.clone(), r.seq));
            }
            held.push(found);
        }
        let mut top: BTreeMap<&str, &Record> = BTreeMap::new();
        for (r, _) in self.acked.iter().zip(&held).filter(|(_, h)| **h) {
            if top.get(r.key.as_str()).is_none_or(|t| r.wins_over(t)) {
                top.insert(&r.key, r);
            }
        }
        let keep: Vec<bool> = (self.acked.iter().zip(&held))
            .map(|(r, h)| *h || top.get(r.key.as_str()).is_some_and(|t| t.wins_over(r)))
            .collect();
        let mut keep = keep.into_iter();
        self.acked.retain(|_| keep.next().unwrap_or(true));
        self.incarnations[node] += 1;
        self.stores[node] = store(node, self.incarnations[node], self.clocks[node].clone());
        // A new store's clock starts from the physical clock, not the lost high-water mark.
        self.last_stamp[node] = Timestamp::ZERO;
    }

    /// Heals, delivers what is in flight, then syncs every pair until every digest is
    /// equal and a whole round changes nothing (bounded: a bug shows up as a failure
    /// to converge, not a hang). Equal digests alone do not mean the copies are
    /// equal: a record above a gap that no store can fill (its writer's store was
    /// lost before the write below it reached anyone) is in no digest, and
    /// travels with the next rounds.
    async fn quiesce(&mut self) {
        self.cut.clear();
        while let Some(msg) = self.queue.pop_front() {
            self.deliver(msg).await;
        }
        let n = self.stores.len();
        for _round in 0..(4 * n + 8) {
            let before = self.states().await;
            for from in 0..n {
                for to in 0..n {
                    if from != to {
                        let msg = self.answer(from, to, 256).await;
                        self.deliver(msg).await;
                    }
                }
            }
            let after = self.states().await;
            if after.iter().all(|(digest, _)| *digest == after[0].0) && after == before {
                // Tombstone collection is each node's own (a node may have
                // collected what the others still hold): at rest, as the replicator
                // does, every node collects up to the horizon, and only then are
                // the copies compared record for record.
                for node in 0..n {
                    self.run(Op::Collect { node }).await;
                }
                return;
            }
        }
        panic!("replicas did not converge after healing");
    }

    /// Every store's digest and records.
    async fn states(&self) -> Vec<(VersionVector, Vec<Record>)> {
        let mut out = Vec::with_capacity(self.stores.len());
        for s in &self.stores {
            out.push((s.digest().await.unwrap(), s.scan("").await.unwrap()));
        }
        out
    }

    async fn check(&self) {
        // The last-writer-wins model: per key, the greatest acknowledged write.
        let mut model: BTreeMap<&str, &Record> = BTreeMap::new();
        for r in &self.acked {
            match model.get(r.key.as_str()) {
                Some(held) if !r.wins_over(held) => {}
                _ => {
                    model.insert(&r.key, r);
                }
            }
        }
        let first = self.stores[0].scan("").await.unwrap();
        for (i, s) in self.stores.iter().enumerate() {
            let contents = s.scan("").await.unwrap();
            assert_eq!(contents, first, "replica n{i} differs from n0");
        }
        let held: BTreeMap<&str, &Record> = first.iter().map(|r| (r.key.as_str(), r)).collect();
        for (key, winner) in &model {
            match held.get(key) {
                // A collected tombstone leaves nothing behind, which is what it means.
                None => assert!(winner.is_tombstone(), "acknowledged write to {key} lost"),
                Some(got) => {
                    assert_eq!(*got, *winner, "{key} is not the last writer's value");
                    if winner.is_tombstone() {
                        assert!(got.is_tombstone(), "deleted key {key} came back");
                    }
                }
            }
        }
        for r in &self.acked {
            match held.get(r.key.as_str()) {
                Some(held) => {
                    assert!(*held == r || held.wins_over(r), "write {} lost without a later write", r.token())
                }
                None => assert!(model[r.key.as_str()].is_tombstone(), "write {} lost", r.token()),
            }
        }
        assert!(held.keys().all(|k| model.contains_key(k)), "replicas hold keys nobody wrote");
        let first = conflicts(&self.stores[0]).await;
        for (i, s) in self.stores.iter().enumerate() {
            assert_eq!(conflicts(s).await, first, "replica n{i}'s conflicts differ from n0's");
        }
        let existing: Vec<&Record> =
            self.acked.iter().filter(|r| !self.gone.contains(&(r.origin.clone(), r.seq))).collect();
        // At rest every digest is the same, and so is the horizon each node collected up to.
        let horizon = self.stores[0].digest().await.unwrap();
        // A losing tombstone is collected at rest where the horizon covers it
        // (one above a gap a lost store left in its origin's sequence never is).
        let collected = |l: &Record| l.is_tombstone() && horizon.get(&l.origin) >= l.seq;
        let model = conflict_model(existing.iter().copied(), collected);
        assert_eq!(first, model, "the conflicts are not the model's");
    }
}

/// A conflict as `(key, winner, loser)` version tokens.
type Named = BTreeSet<(String, String, String)>;

async fn conflicts(s: &MemoryStore) -> Named {
    let found = s.conflicts("").await.unwrap();
    found.iter().map(|c| (c.key.clone(), c.winner.token().to_string(), c.loser.token().to_string())).collect()
}

/// The `incarnation`-th store of node `n{i}`, stamping with `clock`: its origin
/// is fixed by both, so a case replays.
fn store(i: usize, incarnation: u64, clock: Arc<ManualClock>) -> MemoryStore {
    let origin = Origin::new(NodeId::new(format!("n{i}")).unwrap(), incarnation);
    MemoryStore::for_origin(origin, Arc::new(Hlc::new(clock)))
}

/// Runs a scenario, heals, checks every property, and returns the converged
/// contents (every replica's, since they are equal).
fn run_case(nodes: usize, ops: Vec<Op>) -> Vec<Record> {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut sim = Sim::new(nodes);
        for op in ops {
            sim.run(op).await;
        }
        sim.quiesce().await;
        sim.check().await;
        sim.stores[0].scan("").await.unwrap()
    })
}

fn config() -> Config {
    Config {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/convergence.txt",
        ))),
        ..Config::default()
    }
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (3usize..=5).prop_flat_map(|nodes| (Just(nodes), proptest::collection::vec(op(nodes), 1..80)))
}

/// Scenarios in which nodes also lose their stores.
fn scenario_with_lost_stores() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (3usize..=5).prop_flat_map(|nodes| {
        let step = prop_oneof![12 => op(nodes), 1 => (0..nodes).prop_map(|node| Op::LoseStore { node })];
        (Just(nodes), proptest::collection::vec(step, 1..80))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn replicas_converge_to_the_last_writer_under_loss_reordering_partitions_and_crashes(
        (nodes, ops) in scenario()
    ) {
        run_case(nodes, ops);
    }

    #[test]
    fn replicas_converge_when_nodes_lose_their_stores_and_write_before_catching_up(
        (nodes, ops) in scenario_with_lost_stores()
    ) {
        run_case(nodes, ops);
    }
}

#[test]
fn a_delete_during_a_partition_is_not_undone_by_the_stale_side() {
    use Op::*;
    run_case(
        3,
        vec![
            Put { node: 0, key: 0, value: 1 },
            Deliver { pick: 0 },
            Deliver { pick: 0 },
            Cut { a: 0, b: 2 },
            Cut { a: 1, b: 2 },
            Delete { node: 0, key: 0 },
            Deliver { pick: 0 },
            Pull { from: 2, to: 0, budget: 1 << 20 },
            Pull { from: 2, to: 1, budget: 1 << 20 },
            Heal,
        ],
    );
}

#[test]
fn a_collected_tombstone_is_not_undone_by_a_late_copy_of_the_old_write() {
    use Op::*;
    let mut ops = vec![
        Put { node: 0, key: 0, value: 1 },
        // Keep copies of the put's pushes in flight, delivering one of each now.
        Duplicate { pick: 0 },
        Duplicate { pick: 1 },
        Delete { node: 0, key: 0 },
    ];
    // Everybody sees everything, then every node collects.
    for from in 0..3 {
        for to in 0..3 {
            ops.push(Pull { from, to, budget: 1 << 20 });
        }
    }
    for _ in 0..12 {
        ops.push(Deliver { pick: 2 });
    }
    ops.extend([Collect { node: 0 }, Collect { node: 1 }, Collect { node: 2 }]);
    // The late copies of the old put arrive last.
    ops.extend([Deliver { pick: 0 }, Deliver { pick: 0 }]);
    let contents = run_case(3, ops);
    assert!(contents.iter().all(|r| r.key != KEYS[0]), "the tombstone was collected and nothing came back");
}

/// A budget-cut delta must not vouch for a superseded write whose superseding
/// record it left out. Here n2's answer to n1 (budget 1) carried n2's first
/// write but not its second, which had superseded n0's first, yet vouched for
/// n0's first; n2 then lost its store, and n1 counted `(n0, 1)` as seen
/// without ever holding it, while n0 still held it as the key's value (found
/// by the property tests; proptest's seed was not kept, so the case is here).
#[test]
fn a_cut_delta_does_not_vouch_for_a_write_superseded_by_a_record_it_left_out() {
    use Op::*;
    let mut ops = vec![
        Put { node: 2, key: 0, value: 0 },
        Put { node: 0, key: 3, value: 0 },
        Duplicate { pick: 7626434817858278703 },
        Put { node: 2, key: 3, value: 0 },
    ];
    ops.extend([Drop { pick: 0 }, Drop { pick: 0 }, Drop { pick: 0 }, Drop { pick: 0 }]);
    ops.extend([
        Pull { from: 2, to: 1, budget: 1 },
        Put { node: 0, key: 0, value: 0 },
        Deliver { pick: 3234562447213240792 },
        Put { node: 1, key: 0, value: 0 },
        LoseStore { node: 2 },
    ]);
    run_case(3, ops);
}
