//! Operating a Raft group: a node leaves cleanly (the leader included) and the
//! rest keep deciding writes; deletes' tombstones are collected and a node
//! that was away holding a deleted value does not bring it back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use spectrum_core::MemberState;
use spectrum_replication::conformance::{
    NodeSpec, ReplicatorMaker, StartedNode, TestCluster, WAIT, fast_raft_settings,
};
use spectrum_replication::{
    AckLevel, ConfigStore, Outcome, RaftReplicator, ReplicationError, Replicator, Transaction, WriteBatch,
};
use tonic::service::Routes;

/// Raft nodes like the suite's, keeping a handle on each node's Raft node.
#[derive(Clone, Default)]
struct Rafts {
    tombstone_keep: Option<u64>,
    started: Arc<Mutex<BTreeMap<String, RaftReplicator>>>,
}

impl Rafts {
    fn of(&self, c: &TestCluster<Rafts>, i: usize) -> RaftReplicator {
        self.started.lock()[c.id(i).as_str()].clone()
    }
}

#[async_trait]
impl ReplicatorMaker for Rafts {
    async fn start(&self, spec: NodeSpec) -> Result<StartedNode, ReplicationError> {
        let id = spec.store.node_id().to_string();
        let mut builder = RaftReplicator::builder(spec.store, spec.hlc, spec.cluster, spec.addr)
            .seeds(spec.seeds)
            .data_dir(&spec.dir)
            .credential(spec.credential)
            .settings(fast_raft_settings());
        if let Some(keep) = self.tombstone_keep {
            builder = builder.tombstone_keep(keep);
        }
        let raft = builder.build().await?;
        let routes = Routes::new(raft.service().into_server(4 << 20));
        drop(raft.start());
        self.started.lock().insert(id, raft.clone());
        let stopping = raft.clone();
        Ok(StartedNode {
            replicator: Arc::new(raft),
            routes,
            stop: Box::new(move || Box::pin(async move { stopping.shutdown().await })),
        })
    }
}

async fn until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn put(
    r: &Arc<dyn Replicator>,
    key: &str,
) -> Result<spectrum_replication::Committed, ReplicationError> {
    r.commit(Transaction::new(WriteBatch::new().put(key, "v")), WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaving_leader_hands_over_and_the_two_left_keep_committing_while_it_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let rafts = Rafts::default();
    let mut c = TestCluster::start(rafts.clone(), dir.path(), 3).await.unwrap();
    assert!(until(|| (0..3).any(|i| rafts.of(&c, i).is_leader())).await, "no leader");
    let l = (0..3).find(|i| rafts.of(&c, *i).is_leader()).unwrap();
    let leaving = c.id(l).to_string();

    // The leader leaves as a node does: recorded as left, then out of the voters.
    c.record_member(l, MemberState::Left).await.unwrap();
    rafts.of(&c, l).leave(WAIT).await.unwrap();
    let rest: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    for &i in &rest {
        let raft = rafts.of(&c, i);
        assert!(
            until(|| raft.voters().len() == 2 && !raft.voters().contains(&leaving)).await,
            "{:?}",
            raft.voters()
        );
    }
    assert!(
        until(|| rest.iter().any(|i| rafts.of(&c, *i).is_leader())).await,
        "no leader among the two left"
    );
    for &i in &rest {
        let done = put(c.replicator(i), &format!("settings/after-leave-{i}")).await.unwrap();
        assert!(matches!(done.outcome, Outcome::Applied { .. }), "{done:?}");
        assert_eq!(done.members, 2, "two voters decide now");
    }

    // The node that left refuses writes and consistent reads, naming why.
    let refused = put(c.replicator(l), "settings/from-the-left-node").await.unwrap_err();
    assert!(matches!(refused, ReplicationError::NotAMember { .. }), "{refused:?}");
    assert!(refused.to_string().contains("left this cluster's Raft group"), "{refused}");
    let barrier = c.replicator(l).linearizable_barrier(WAIT).await.unwrap_err();
    assert!(matches!(barrier, ReplicationError::NotAMember { .. }), "{barrier:?}");
    assert!(c.converge_among(&rest).await);
    assert_eq!(c.store(rest[0]).get("settings/from-the-left-node").await.unwrap(), None);

    // Restarted, it asks to join again and is a voter once more.
    c.restart(l).await.unwrap();
    let back = rafts.of(&c, l);
    assert!(until(|| back.voters().len() == 3).await, "{:?}", back.voters());
    c.record_member(l, MemberState::Active).await.unwrap();
    let done = put(c.replicator(l), "settings/back").await.unwrap();
    assert_eq!(done.members, 3);

    // A follower leaves too: the leader takes it out the same way.
    let f = (0..3).find(|i| !rafts.of(&c, *i).is_leader()).unwrap();
    rafts.of(&c, f).leave(WAIT).await.unwrap();
    let stay = (0..3).find(|i| *i != f).unwrap();
    assert!(until(|| rafts.of(&c, stay).voters().len() == 2).await);
    assert_eq!(put(c.replicator(stay), "settings/two-again").await.unwrap().members, 2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_voter_cannot_leave() {
    let dir = tempfile::tempdir().unwrap();
    let rafts = Rafts::default();
    let c = TestCluster::start(rafts.clone(), dir.path(), 1).await.unwrap();
    let refused = rafts.of(&c, 0).leave(WAIT).await.unwrap_err();
    assert!(refused.to_string().contains("only voter"), "{refused}");
    assert_eq!(rafts.of(&c, 0).voters().len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_mode_collects_tombstones_and_a_node_back_from_away_does_not_resurrect_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let rafts = Rafts { tombstone_keep: Some(4), ..Rafts::default() };
    let mut c = TestCluster::start(rafts.clone(), dir.path(), 3).await.unwrap();
    c.write(0, WriteBatch::new().put("settings/doomed", "old"), AckLevel::All).await.unwrap();
    assert!(c.converge().await);
    assert!(c.store(2).get("settings/doomed").await.unwrap().is_some_and(|r| !r.is_tombstone()));

    // n3 is away holding the value while it is deleted and the log moves on
    // (past the tombstone's keep, and past a snapshot that compacts the log).
    c.stop(2).await;
    c.write(0, WriteBatch::new().delete("settings/doomed"), AckLevel::Quorum).await.unwrap();
    for k in 0..30 {
        c.write(1, WriteBatch::new().put(format!("settings/k{k}"), "v"), AckLevel::Quorum).await.unwrap();
    }
    for i in [0, 1] {
        let store = c.store(i).clone();
        let collected = async move { store.get("settings/doomed").await.unwrap().is_none() };
        let mut done = collected.await;
        for _ in 0..100 {
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            done = c.store(i).get("settings/doomed").await.unwrap().is_none();
        }
        assert!(done, "n{}: the tombstone was never collected", i + 1);
    }
    assert!(rafts.of(&c, 0).snapshot_index().is_some(), "the log was compacted behind a snapshot");

    // Back, n3 installs the snapshot: the value it held does not come back,
    // here or anywhere, and it holds what it missed.
    c.restart(2).await.unwrap();
    assert!(c.converge().await, "n3 did not catch up");
    for i in 0..3 {
        assert_eq!(c.store(i).get("settings/doomed").await.unwrap(), None, "n{}", i + 1);
        assert!(c.store(i).get("settings/k29").await.unwrap().is_some(), "n{}", i + 1);
    }
    // A later write to the key is a new value, not the old one back.
    c.write(2, WriteBatch::new().put("settings/doomed", "new"), AckLevel::Quorum).await.unwrap();
    assert!(c.converge().await);
    for i in 0..3 {
        let r = c.store(i).get("settings/doomed").await.unwrap().unwrap();
        assert_eq!(r.value.as_deref(), Some(&b"new"[..]), "n{}", i + 1);
    }
    c.shutdown().await;
}
