//! Raft mode over real gRPC on loopback: three nodes, writes through consensus
//! from any node, compare-and-set decided once, a leader lost and replaced.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use spectrum_core::transport::bind;
use spectrum_core::{Hlc, PeerAddr, TransportConfig};
use spectrum_replication::{
    Condition, ConfigStore, Outcome, PeerCredential, RaftReplicator, RaftSettings, RedbStore, Replicator,
    Transaction, WriteBatch,
};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

struct TestNode {
    store: Arc<dyn ConfigStore>,
    raft: RaftReplicator,
    server: JoinHandle<()>,
}

fn settings() -> RaftSettings {
    RaftSettings {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
        snapshot_every: 20,
        keep_behind_snapshot: 0,
    }
}

async fn start_all(dir: &std::path::Path, n: usize) -> Vec<TestNode> {
    start_with(dir, n, 0).await
}

/// A node of an older version, without AppendStream and ForwardStream: its
/// Raft service answers those methods `unimplemented`, as a tonic server
/// without them does.
#[derive(Clone)]
struct WithoutStreams<S>(S);

impl<S> tower::Service<http::Request<tonic::body::Body>> for WithoutStreams<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path().ends_with("/AppendStream") || request.uri().path().ends_with("/ForwardStream")
        {
            let answer = tonic::Status::unimplemented("").into_http();
            return Box::pin(async move { Ok(answer) });
        }
        Box::pin(self.0.call(request))
    }
}

impl<S> tonic::server::NamedService for WithoutStreams<S> {
    const NAME: &'static str = "spectrum.replication.v1.Raft";
}

/// Shuts every node down and stops its server.
async fn stop_all(nodes: &[TestNode]) {
    for n in nodes {
        n.raft.shutdown().await;
        n.server.abort();
    }
}

/// `n` nodes, the last `older` of them serving Raft without streams, once
/// every one knows a leader.
async fn start_with(dir: &std::path::Path, n: usize, older: usize) -> Vec<TestNode> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(bind("127.0.0.1:0".parse().unwrap()).await.unwrap());
    }
    let addrs: Vec<PeerAddr> = listeners.iter().map(|l| l.addr()).collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = format!("n{}", i + 1);
        let node_dir = dir.join(&id);
        std::fs::create_dir_all(&node_dir).unwrap();
        let hlc = Arc::new(Hlc::system());
        let store: Arc<dyn ConfigStore> =
            Arc::new(RedbStore::open(node_dir.join("store.redb"), id.parse().unwrap(), hlc.clone()).unwrap());
        let seeds = addrs.iter().filter(|a| **a != addrs[i]).cloned().collect();
        let raft =
            RaftReplicator::builder(store.clone(), hlc, "raft-test".parse().unwrap(), addrs[i].clone())
                .seeds(seeds)
                .data_dir(&node_dir)
                .credential(PeerCredential::from_bytes([9; 32]))
                .settings(settings())
                .build()
                .await
                .unwrap();
        let service = raft.service().into_server(4 << 20);
        let mut server = TransportConfig::default().server().unwrap();
        let server = if i + older >= n {
            server.add_service(WithoutStreams(service)).serve_with_incoming(listener.incoming).boxed()
        } else {
            server.add_service(service).serve_with_incoming(listener.incoming).boxed()
        };
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        let _join = raft.start();
        nodes.push(TestNode { store, raft, server });
    }
    for n in &nodes {
        assert!(n.raft.wait_for_leader(WAIT).await, "no leader elected");
    }
    nodes
}

/// Node `i` commits `settings/k{i}` = `v{i}` and holds it once the commit
/// returns; then every node reads every one after a linearizable barrier.
async fn write_on_each_and_read_on_all(nodes: &[TestNode]) {
    for (i, n) in nodes.iter().enumerate() {
        let txn = Transaction::new(WriteBatch::new().put(format!("settings/k{i}"), format!("v{i}")));
        let done = n.raft.commit(txn, WAIT).await.unwrap();
        assert!(matches!(done.outcome, Outcome::Applied { .. }), "{done:?}");
        // Once commit returns, the proposing node holds it.
        assert_eq!(
            value(&n.store, &format!("settings/k{i}")).await.as_deref(),
            Some(format!("v{i}").as_str())
        );
    }
    for n in nodes {
        n.raft.linearizable_barrier(WAIT).await.unwrap();
        for i in 0..nodes.len() {
            assert_eq!(value(&n.store, &format!("settings/k{i}")).await, Some(format!("v{i}")));
        }
    }
}

async fn value(store: &Arc<dyn ConfigStore>, key: &str) -> Option<String> {
    let r = store.get(key).await.unwrap()?;
    r.value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_any_node_is_read_on_all_and_a_lost_leader_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_all(dir.path(), 3).await;
    write_on_each_and_read_on_all(&nodes).await;
    // Compare-and-set: two nodes race to create the same name; exactly one wins.
    let create =
        || Transaction::new(WriteBatch::new().put("dataflows/x", "1")).when(Condition::absent("dataflows/x"));
    let (a, b) = tokio::join!(nodes[0].raft.commit(create(), WAIT), nodes[1].raft.commit(create(), WAIT));
    let won =
        [a.unwrap(), b.unwrap()].iter().filter(|c| matches!(c.outcome, Outcome::Applied { .. })).count();
    assert_eq!(won, 1);
    // Every replica holds the same records, version for version.
    for n in &nodes {
        n.raft.linearizable_barrier(WAIT).await.unwrap();
    }
    let first = nodes[0].store.scan("").await.unwrap();
    for n in &nodes[1..] {
        assert_eq!(n.store.scan("").await.unwrap(), first);
    }

    // Kill the leader: the other two elect one and writes continue.
    let leader = nodes[0].raft.leader().unwrap();
    let idx = nodes.iter().position(|n| n.store.node_id().as_str() == leader).unwrap();
    nodes[idx].raft.shutdown().await;
    nodes[idx].server.abort();
    let survivor = &nodes[(idx + 1) % 3];
    let txn = Transaction::new(WriteBatch::new().put("settings/after", "yes"));
    let done = survivor.raft.commit(txn, WAIT).await.unwrap();
    assert!(matches!(done.outcome, Outcome::Applied { .. }));
    assert_ne!(survivor.raft.leader().as_deref(), Some(leader.as_str()));
    for (i, n) in nodes.iter().enumerate() {
        if i != idx {
            n.raft.linearizable_barrier(WAIT).await.unwrap();
            assert_eq!(value(&n.store, "settings/after").await.as_deref(), Some("yes"));
        }
    }
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_on_every_node_share_log_entries_and_each_gets_its_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_all(dir.path(), 3).await;
    nodes[0].raft.linearizable_barrier(WAIT).await.unwrap();
    let before = nodes[0].raft.applied_index();
    const EACH: usize = 16;
    let writes = nodes.iter().enumerate().flat_map(|(i, n)| {
        (0..EACH).map(move |w| {
            let txn =
                Transaction::new(WriteBatch::new().put(format!("settings/n{i}w{w}"), format!("{i}.{w}")));
            n.raft.commit(txn, WAIT)
        })
    });
    let done = futures::future::join_all(writes).await;
    let mut versions = Vec::new();
    for d in done {
        match d.unwrap().outcome {
            Outcome::Applied { versions: v } => versions.extend(v),
            other => panic!("{other:?}"),
        }
    }
    versions.sort_by_key(|v| v.seq);
    versions.dedup();
    assert_eq!(versions.len(), 3 * EACH, "every write has a version of its own");
    nodes[0].raft.linearizable_barrier(WAIT).await.unwrap();
    let entries = nodes[0].raft.applied_index() - before;
    assert!(entries < (3 * EACH) as u64, "{} writes took {entries} log entries", 3 * EACH);
    for n in &nodes {
        n.raft.linearizable_barrier(WAIT).await.unwrap();
        for i in 0..3 {
            for w in 0..EACH {
                let got = value(&n.store, &format!("settings/n{i}w{w}")).await;
                assert_eq!(got, Some(format!("{i}.{w}")));
            }
        }
    }
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_without_streams_are_sent_one_call_each_by_leaders_and_followers() {
    // Two of three nodes are of an older version: whichever node leads, one
    // follower at least has no AppendStream, and without one call each the
    // group could not even form.
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_with(dir.path(), 3, 2).await;
    write_on_each_and_read_on_all(&nodes).await;
    stop_all(&nodes).await;
    // All three of an older version: whichever leads has no ForwardStream,
    // and both followers' writes reach it one call each.
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_with(dir.path(), 3, 3).await;
    write_on_each_and_read_on_all(&nodes).await;
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_proposals_a_follower_forwards_each_get_their_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_all(dir.path(), 3).await;
    let leader = nodes[0].raft.leader().unwrap();
    let follower = nodes.iter().find(|n| n.store.node_id().as_str() != leader).unwrap();
    // Every third name is taken already.
    const NAMES: usize = 60;
    let taken = |w: usize| w % 3 == 0;
    let mut batch = WriteBatch::new();
    for w in (0..NAMES).filter(|w| taken(*w)) {
        batch = batch.put(format!("names/{w}"), "before");
    }
    follower.raft.commit(Transaction::new(batch), WAIT).await.unwrap();
    // All at once, from the follower: each creates its name if it is free.
    let creates = (0..NAMES).map(|w| {
        let name = format!("names/{w}");
        let txn =
            Transaction::new(WriteBatch::new().put(&name, format!("by {w}"))).when(Condition::absent(&name));
        follower.raft.commit(txn, WAIT)
    });
    let done = futures::future::join_all(creates).await;
    for (w, d) in done.into_iter().enumerate() {
        match d.unwrap().outcome {
            Outcome::ConditionFailed(f) if taken(w) => assert_eq!(f.key, format!("names/{w}"), "{w}"),
            Outcome::Applied { versions } if !taken(w) => assert_eq!(versions.len(), 1, "{w}"),
            other => panic!("create {w} was answered {other:?}"),
        }
        let expected = if taken(w) { "before".to_owned() } else { format!("by {w}") };
        assert_eq!(value(&follower.store, &format!("names/{w}")).await, Some(expected));
    }
    stop_all(&nodes).await;
}
