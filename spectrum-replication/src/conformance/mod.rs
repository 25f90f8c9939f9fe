//! The conformance suite every [`Replicator`](crate::Replicator) implementation runs (behind the
//! `testing` feature), as `testing` holds the one every
//! [`ConfigStore`] runs.
//!
//! It drives real nodes: durable stores, the replicator under test served
//! over gRPC on loopback, stopped and restarted over the same files
//! ([`TestCluster`]). An implementation supplies a [`ReplicatorMaker`]; the
//! two reference replicators' are [`AntiEntropyMaker`] and [`RaftMaker`]:
//!
//! ```no_run
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use spectrum_replication::conformance::{RaftMaker, replicator_conformance_suite};
//!
//! let dir = tempfile::tempdir().unwrap();
//! replicator_conformance_suite(RaftMaker, dir.path()).await;
//! # });
//! ```
//!
//! The contract, one check each:
//!
//! - a write acknowledged at each level is on the nodes that level promises
//!   (last-writer-wins: `Local` on the writer, `Quorum` on a majority, `All`
//!   on every member, when `replicate` returns; Raft: on the proposer when
//!   `commit` returns, and on any node after its linearizable barrier);
//! - replicas converge, concurrent writes to one key included;
//! - a delete never comes back, not even from a node that was down and held
//!   the deleted value;
//! - a restarted node catches up with what it missed;
//! - membership changes are followed: a node that joins counts toward
//!   acknowledgements and holds everything, a removed one stops counting;
//! - shutdown stops cleanly: the files are released and can be reopened;
//! - bad input gets an error and changes nothing.
//!
//! Where the modes differ by design, the suite follows the replicator's
//! declared [`mode`](crate::Replicator::mode) instead of skipping: in Raft mode
//! compare-and-set decides a race exactly once and a linearizable barrier
//! holds every earlier write; in last-writer-wins mode both answer
//! [`ReplicationError::NeedsConsensus`] and nothing is written.
//!
//! The store under Raft mode is the node's ordinary [`RedbStore`](crate::RedbStore), which
//! passes the store suite (`testing`) as it is; that suite's checks of local
//! writes (each store's own origin, a local write winning over records
//! stamped ahead) describe last-writer-wins writes, not log entries applied
//! under the cluster's Raft origin, so it is not run a second time through
//! consensus: this suite checks what Raft mode adds on top.

mod cluster;

use std::path::Path;

use spectrum_core::MemberState;

pub use cluster::{
    AntiEntropyMaker, NodeSpec, RaftMaker, ReplicatorMaker, StartedNode, TestCluster, WAIT,
    fast_raft_settings,
};

use crate::error::{ReplicationError, StoreError};
use crate::record::{VersionToken, WriteBatch};
use crate::replicator::AckLevel;
use crate::store::ConfigStore;
use crate::transaction::{Condition, Outcome, ReplicationMode, Transaction};

/// Runs every check of the suite against replicators from `maker`, each check
/// on a fresh cluster in a directory of its own under `dir`, panicking with
/// the name of the first check that fails.
pub async fn replicator_conformance_suite<M: ReplicatorMaker + Clone>(maker: M, dir: &Path) {
    let run = |name: &str| dir.join(name);
    a_write_acknowledged_at_each_level_is_on_the_nodes_it_promises(maker.clone(), &run("ack")).await;
    replicas_converge_after_concurrent_writes_to_one_key(maker.clone(), &run("converge")).await;
    a_restarted_node_catches_up_and_a_delete_never_comes_back(maker.clone(), &run("restart")).await;
    membership_changes_are_followed(maker.clone(), &run("membership")).await;
    conditional_writes_and_barriers_follow_the_declared_mode(maker.clone(), &run("mode")).await;
    bad_input_is_refused_and_changes_nothing(maker.clone(), &run("bad")).await;
    shutdown_stops_cleanly_and_releases_the_files(maker, &run("shutdown")).await;
}

fn check<T, E: std::fmt::Display>(name: &str, what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{name}: {what}: {e}"),
    }
}

async fn three<M: ReplicatorMaker>(name: &str, maker: M, dir: &Path) -> TestCluster<M> {
    check(name, "starting three nodes", TestCluster::start(maker, dir, 3).await)
}

/// Whether node `i`'s store holds the write `version` of `key`: the key
/// holds it, or the digest covers it (something newer replaced it). The
/// digest alone is not enough: it covers a write only once every earlier
/// write of its origin arrived, and a push may overtake an earlier one.
async fn holds<M: ReplicatorMaker>(c: &TestCluster<M>, i: usize, key: &str, version: &VersionToken) -> bool {
    let held = c.store(i).get(key).await.ok().flatten().is_some_and(|r| r.token() == *version);
    held || c.store(i).digest().await.is_ok_and(|d| d.covers(version))
}

async fn holders<M: ReplicatorMaker>(c: &TestCluster<M>, key: &str, version: &VersionToken) -> usize {
    let mut n = 0;
    for i in c.up() {
        n += usize::from(holds(c, i, key, version).await);
    }
    n
}

/// The live value of `key` on node `i`.
async fn value<M: ReplicatorMaker>(c: &TestCluster<M>, i: usize, key: &str) -> Option<Vec<u8>> {
    let record = c.store(i).get(key).await.ok()??;
    record.value.map(|v| v.to_vec())
}

async fn a_write_acknowledged_at_each_level_is_on_the_nodes_it_promises<M: ReplicatorMaker>(
    maker: M,
    dir: &Path,
) {
    let name = "a_write_acknowledged_at_each_level_is_on_the_nodes_it_promises";
    let c = three(name, maker, dir).await;
    let raft = c.replicator(0).mode() == ReplicationMode::Raft;
    for (ack, promised) in [(AckLevel::Local, 1), (AckLevel::Quorum, 2), (AckLevel::All, 3)] {
        let key = format!("settings/ack-{ack:?}");
        let versions = check(name, "writing", c.write(0, WriteBatch::new().put(key.clone(), "v"), ack).await);
        let version = &versions[0];
        assert!(holds(&c, 0, &key, version).await, "{name}: the writer holds its own write at {ack:?}");
        if raft {
            // Committed: on a majority's logs, applied on the proposer; any
            // node holds it after its barrier.
            for i in c.up() {
                check(name, "barrier", c.replicator(i).linearizable_barrier(WAIT).await);
                assert!(
                    holds(&c, i, &key, version).await,
                    "{name}: n{} lacks a committed write after its barrier",
                    i + 1
                );
            }
        } else {
            let held = holders(&c, &key, version).await;
            assert!(held >= promised, "{name}: {ack:?} promised {promised} nodes, {held} hold the write");
        }
    }
    c.shutdown().await;
}

async fn replicas_converge_after_concurrent_writes_to_one_key<M: ReplicatorMaker>(maker: M, dir: &Path) {
    let name = "replicas_converge_after_concurrent_writes_to_one_key";
    let c = three(name, maker, dir).await;
    let writes = futures::future::join_all(c.up().into_iter().map(|i| {
        let batch = WriteBatch::new()
            .put("settings/contended", format!("from-{i}"))
            .put(format!("settings/own-{i}"), "x");
        let c = &c;
        async move { c.write(i, batch, AckLevel::Local).await }
    }))
    .await;
    for w in writes {
        check(name, "a concurrent write", w);
    }
    assert!(c.converge().await, "{name}: replicas did not converge");
    let winner = value(&c, 0, "settings/contended").await;
    assert!(winner.is_some(), "{name}: the contended key lost every write");
    for i in c.up() {
        assert_eq!(
            value(&c, i, "settings/contended").await,
            winner,
            "{name}: n{} reads another value",
            i + 1
        );
        for j in 0..3 {
            assert!(
                value(&c, i, &format!("settings/own-{j}")).await.is_some(),
                "{name}: n{} lacks own-{j}",
                i + 1
            );
        }
    }
    c.shutdown().await;
}

async fn a_restarted_node_catches_up_and_a_delete_never_comes_back<M: ReplicatorMaker>(maker: M, dir: &Path) {
    let name = "a_restarted_node_catches_up_and_a_delete_never_comes_back";
    let mut c = three(name, maker, dir).await;
    check(name, "writing", c.write(0, WriteBatch::new().put("settings/doomed", "old"), AckLevel::All).await);
    assert!(c.converge().await, "{name}: not converged before the stop");
    assert_eq!(value(&c, 2, "settings/doomed").await.as_deref(), Some(&b"old"[..]));
    // n3 goes down holding the value; it is deleted, and much is written,
    // while it is away (enough for a Raft log to be compacted behind a
    // snapshot, so n3 catches up by installing it).
    c.stop(2).await;
    check(name, "deleting", c.write(0, WriteBatch::new().delete("settings/doomed"), AckLevel::Quorum).await);
    for k in 0..40 {
        let batch = WriteBatch::new().put(format!("settings/missed-{k}"), format!("{k}"));
        check(name, "writing while n3 is down", c.write(1, batch, AckLevel::Quorum).await);
    }
    check(name, "restarting n3", c.restart(2).await);
    assert!(c.converge().await, "{name}: the restarted node did not catch up");
    for i in c.up() {
        assert_eq!(
            value(&c, i, "settings/doomed").await,
            None,
            "{name}: the deleted key came back on n{}",
            i + 1
        );
        assert_eq!(
            value(&c, i, "settings/missed-39").await.as_deref(),
            Some(&b"39"[..]),
            "{name}: n{}",
            i + 1
        );
    }
    // More rounds change nothing: the delete stays.
    assert!(c.converge().await);
    assert_eq!(value(&c, 2, "settings/doomed").await, None, "{name}: the deleted key came back later");
    c.shutdown().await;
}

async fn membership_changes_are_followed<M: ReplicatorMaker>(maker: M, dir: &Path) {
    let name = "membership_changes_are_followed";
    let mut c = three(name, maker, dir).await;
    check(name, "writing", c.write(0, WriteBatch::new().put("settings/before", "1"), AckLevel::All).await);
    let added = check(name, "adding n4", c.add().await);
    // The new node catches up and, once known, counts toward `All`.
    let members = |c: &TestCluster<M>| {
        let r = c.replicator(0).clone();
        async move {
            match r.mode() {
                ReplicationMode::Raft => r
                    .commit(Transaction::new(WriteBatch::new().put("settings/probe", "x")), WAIT)
                    .await
                    .map(|done| done.members),
                _ => r.replicate(Vec::new(), AckLevel::All, WAIT).await.map(|report| report.members),
            }
        }
    };
    assert!(wait_for(|| async { members(&c).await.is_ok_and(|m| m == 4) }).await, "{name}: n4 never counted");
    let version = check(
        name,
        "writing at All",
        c.write(0, WriteBatch::new().put("settings/after", "2"), AckLevel::All).await,
    );
    assert!(c.converge().await, "{name}: n4 did not catch up");
    assert!(
        holds(&c, added, "settings/after", &version[0]).await
            && value(&c, added, "settings/before").await.is_some()
    );
    // An operator removes it: recorded, and taken out of what decides writes.
    c.stop(added).await;
    check(name, "recording n4 removed", c.record_member_on(0, added, MemberState::Removed).await);
    check(name, "removing n4", c.replicator(0).remove_member(c.id(added), WAIT).await);
    assert!(wait_for(|| async { members(&c).await.is_ok_and(|m| m == 3) }).await, "{name}: n4 still counts");
    // Every node follows the change once it has it.
    assert!(c.converge().await, "{name}: the removal did not reach every node");
    check(
        name,
        "writing at All without n4",
        c.write(1, WriteBatch::new().put("settings/three", "3"), AckLevel::All).await,
    );
    c.shutdown().await;
}

async fn conditional_writes_and_barriers_follow_the_declared_mode<M: ReplicatorMaker>(maker: M, dir: &Path) {
    let name = "conditional_writes_and_barriers_follow_the_declared_mode";
    let c = three(name, maker, dir).await;
    let create =
        || Transaction::new(WriteBatch::new().put("dataflows/x", "1")).when(Condition::absent("dataflows/x"));
    let (a, b) = tokio::join!(c.replicator(0).commit(create(), WAIT), c.replicator(1).commit(create(), WAIT));
    match c.replicator(0).mode() {
        ReplicationMode::Raft => {
            let won = [check(name, "cas on n1", a), check(name, "cas on n2", b)]
                .iter()
                .filter(|done| matches!(done.outcome, Outcome::Applied { .. }))
                .count();
            assert_eq!(won, 1, "{name}: a create-if-absent race must be won exactly once");
            for i in c.up() {
                check(name, "barrier", c.replicator(i).linearizable_barrier(WAIT).await);
                assert_eq!(value(&c, i, "dataflows/x").await.as_deref(), Some(&b"1"[..]));
            }
        }
        _ => {
            for r in [a, b] {
                assert!(matches!(r, Err(ReplicationError::NeedsConsensus { .. })), "{name}: {r:?}");
            }
            let barrier = c.replicator(2).linearizable_barrier(WAIT).await;
            assert!(matches!(barrier, Err(ReplicationError::NeedsConsensus { .. })), "{name}: {barrier:?}");
            for i in c.up() {
                assert_eq!(
                    value(&c, i, "dataflows/x").await,
                    None,
                    "{name}: a refused call wrote on n{}",
                    i + 1
                );
            }
        }
    }
    c.shutdown().await;
}

async fn bad_input_is_refused_and_changes_nothing<M: ReplicatorMaker>(maker: M, dir: &Path) {
    let name = "bad_input_is_refused_and_changes_nothing";
    let c = three(name, maker, dir).await;
    assert!(c.converge().await);
    let before = check(name, "digest", c.store(0).digest().await);
    let bad_key = Transaction::new(WriteBatch::new().put("settings/ok", "1").put("", "empty key"));
    let too_large = Transaction::new(WriteBatch::new().put("settings/big", vec![0u8; 2 << 20]));
    let empty = Transaction::new(WriteBatch::new());
    for (what, txn) in [("an empty key", bad_key), ("an oversized value", too_large), ("no write", empty)] {
        let refused = c.replicator(0).commit(txn, WAIT).await;
        match c.replicator(0).mode() {
            ReplicationMode::Raft => assert!(
                matches!(refused, Err(ReplicationError::Store(_))),
                "{name}: {what} must be refused by the store's rules: {refused:?}"
            ),
            _ => assert!(
                matches!(refused, Err(ReplicationError::NeedsConsensus { .. })),
                "{name}: {refused:?}"
            ),
        }
    }
    // A local write of bad records never reaches the replicator: the store
    // refuses it first, in both modes.
    let refused = c.store(0).apply(WriteBatch::new().put("", "v")).await;
    assert!(matches!(refused, Err(StoreError::InvalidKey { .. })), "{name}: {refused:?}");
    assert!(c.converge().await);
    for i in c.up() {
        assert_eq!(
            check(name, "digest", c.store(i).digest().await),
            before,
            "{name}: bad input changed n{}",
            i + 1
        );
        assert_eq!(value(&c, i, "settings/ok").await, None, "{name}: half a refused batch was written");
    }
    c.shutdown().await;
}

async fn shutdown_stops_cleanly_and_releases_the_files<M: ReplicatorMaker>(maker: M, dir: &Path) {
    let name = "shutdown_stops_cleanly_and_releases_the_files";
    let c = three(name, maker, dir).await;
    let version = check(
        name,
        "writing",
        c.write(0, WriteBatch::new().put("settings/kept", "yes"), AckLevel::All).await,
    );
    let ids: Vec<_> = (0..c.len()).map(|i| c.id(i).clone()).collect();
    c.shutdown().await;
    // Every file is released, and the acknowledged write is on the writer's
    // disk. Released within `WAIT`, as a restart in the harness waits: under
    // load, one run in about 25 found n1's store still open at once (a task
    // of the stopped node still dropping its handle).
    let hlc = std::sync::Arc::new(spectrum_core::Hlc::system());
    let store = check(
        name,
        "reopening n1's store after shutdown",
        cluster::open_store(&dir.join(ids[0].as_str()), &ids[0], &hlc).await,
    );
    assert!(check(name, "digest", store.digest().await).covers(&version[0]), "{name}: the write was lost");
}

/// Polls `cond` until it holds or [`WAIT`] passes; whether it held.
async fn wait_for<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}
