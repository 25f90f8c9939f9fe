//! Every store implementation passes the store conformance suite, and both
//! replicators the replicator conformance suite.

use std::sync::atomic::{AtomicUsize, Ordering};

use spectrum_replication::conformance::{AntiEntropyMaker, RaftMaker, replicator_conformance_suite};
use spectrum_replication::testing::conformance_suite;
use spectrum_replication::{MemoryStore, RedbStore};

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    conformance_suite(MemoryStore::new).await;
}

#[tokio::test]
async fn redb_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    conformance_suite(|id, hlc| {
        let path = dir.path().join(format!("{}.redb", n.fetch_add(1, Ordering::Relaxed)));
        RedbStore::open(path, id, hlc).unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_entropy_passes_the_replicator_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    replicator_conformance_suite(AntiEntropyMaker, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_raft_replicator_passes_the_replicator_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    replicator_conformance_suite(RaftMaker, dir.path()).await;
}
