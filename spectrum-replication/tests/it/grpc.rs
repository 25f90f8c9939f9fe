//! Real gRPC replication between nodes on loopback (ephemeral ports). Cases that
//! send hand-made wire messages (malformed, from another cluster, over the size
//! limit) are unit tests of the service (`src/service.rs`), where the wire
//! protocol is visible.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use spectrum_core::transport::{Listener, bind};
use spectrum_core::{ClusterId, Hlc, ManualClock, NodeId, PeerAddr, SystemClock, TransportConfig};
use spectrum_replication::anti_entropy::AntiEntropyHandle;
use spectrum_replication::{
    AckLevel, AntiEntropy, ConfigStore, MemoryStore, PeerCredential, PeerFailure, ReplicationError,
    Replicator, VersionVector, WriteBatch,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const CLUSTER: &str = "test-cluster";

fn transport() -> TransportConfig {
    TransportConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Some(Duration::from_secs(2)),
        ..TransportConfig::default()
    }
}

async fn listener() -> Listener {
    bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// An address nothing listens on.
async fn dead_addr() -> PeerAddr {
    let l = listener().await;
    let addr = l.addr();
    drop(l);
    addr
}

struct TestNode {
    addr: PeerAddr,
    store: Arc<dyn ConfigStore>,
    ae: AntiEntropy,
    rounds: Option<AntiEntropyHandle>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

struct NodeSpec<'a> {
    id: &'a str,
    cluster: &'a str,
    seeds: Vec<PeerAddr>,
    hlc: Arc<Hlc>,
    /// Background anti-entropy interval, or `None` for pushes and manual rounds only.
    interval: Option<Duration>,
    /// The store to serve, or `None` for a fresh [`MemoryStore`].
    store: Option<Arc<dyn ConfigStore>>,
    /// The peer credential, or `None` for open replication.
    credential: Option<PeerCredential>,
}

impl<'a> NodeSpec<'a> {
    fn new(id: &'a str, seeds: Vec<PeerAddr>) -> Self {
        NodeSpec {
            id,
            cluster: CLUSTER,
            seeds,
            hlc: Arc::new(Hlc::system()),
            interval: None,
            store: None,
            credential: None,
        }
    }
    fn every(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }
}

impl TestNode {
    async fn serve(spec: NodeSpec<'_>, listener: Listener) -> TestNode {
        let addr = listener.addr();
        let id: NodeId = spec.id.parse().unwrap();
        let store = spec.store.unwrap_or_else(|| Arc::new(MemoryStore::new(id, spec.hlc.clone())));
        let cluster: ClusterId = spec.cluster.parse().unwrap();
        let mut builder = AntiEntropy::builder(store.clone(), spec.hlc, cluster, addr.clone())
            .seeds(spec.seeds)
            .transport(transport());
        if let Some(i) = spec.interval {
            builder = builder.interval(i);
        }
        if let Some(c) = spec.credential {
            builder = builder.credential(c);
        }
        let ae = builder.build();
        let svc = ae.service().into_server(transport().max_message_bytes);
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = transport()
                .server()
                .expect("a plaintext server")
                .add_service(svc)
                .serve_with_incoming_shutdown(listener.incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        let rounds = spec.interval.map(|_| ae.start());
        TestNode { addr, store, ae, rounds, shutdown: Some(tx), server: Some(server) }
    }

    async fn stop(mut self) {
        if let Some(r) = self.rounds.take() {
            r.shutdown().await;
        }
        self.ae.stop();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server).await.is_err() {
                abort.abort();
            }
        }
    }

    async fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key).await.unwrap().and_then(|r| r.value.map(|v| v.to_vec()))
    }

    async fn is_empty(&self) -> bool {
        self.store.scan("").await.unwrap().is_empty()
    }

    async fn write(&self, batch: WriteBatch, ack: AckLevel) -> Result<(), ReplicationError> {
        let records = self.store.apply(batch).await?;
        self.ae.replicate(records, ack, Duration::from_secs(3)).await.map(|_| ())
    }
}

/// Three nodes of one cluster, each seeded with the other two.
async fn three_nodes(interval: Option<Duration>) -> Vec<TestNode> {
    let listeners = [listener().await, listener().await, listener().await];
    let urls: Vec<PeerAddr> = listeners.iter().map(Listener::addr).collect();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let seeds = urls.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, u)| u.clone()).collect();
        let id = format!("node-{i}");
        let mut spec = NodeSpec::new(&id, seeds);
        spec.interval = interval;
        nodes.push(TestNode::serve(spec, l).await);
    }
    nodes
}

/// How long [`eventually`] waits.
const EVENTUALLY: Duration = Duration::from_secs(15);

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    // Generous: a round that picks a stopped peer may wait out the request
    // timeout (2 s), and CI runs these tests side by side on two cores.
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {EVENTUALLY:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_ms() -> u64 {
    use spectrum_core::Clock;
    SystemClock.now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_by_all_is_on_every_node() {
    let nodes = three_nodes(None).await;
    nodes[0].write(WriteBatch::new().put("settings/color", "blue"), AckLevel::All).await.unwrap();
    for n in &nodes {
        assert_eq!(n.value("settings/color").await.as_deref(), Some(&b"blue"[..]), "on {}", n.addr);
    }
    nodes[1].write(WriteBatch::new().put("settings/size", "xl"), AckLevel::Local).await.unwrap();
    for n in &nodes {
        eventually("a local-ack write to reach every node", || async {
            n.value("settings/size").await.is_some()
        })
        .await;
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_propagates_to_every_node() {
    let nodes = three_nodes(None).await;
    nodes[0].write(WriteBatch::new().put("k", "v"), AckLevel::All).await.unwrap();
    nodes[2].write(WriteBatch::new().delete("k"), AckLevel::All).await.unwrap();
    for n in &nodes {
        let rec = n.store.get("k").await.unwrap().expect("tombstone");
        assert!(rec.is_tombstone(), "deleted on {}", n.addr);
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_alone_brings_unpushed_writes_everywhere() {
    let nodes = three_nodes(Some(Duration::from_millis(50))).await;
    for (i, n) in nodes.iter().enumerate() {
        // Applied but never pushed: only the periodic rounds can move them.
        n.store
            .apply(WriteBatch::new().put(format!("only/{i}"), "v").put("shared", format!("{i}")))
            .await
            .unwrap();
    }
    for n in &nodes {
        eventually("every node to hold every write", || async {
            n.store.scan("only/").await.unwrap().len() == 3
        })
        .await;
    }
    let digests = [
        nodes[0].store.digest().await.unwrap(),
        nodes[1].store.digest().await.unwrap(),
        nodes[2].store.digest().await.unwrap(),
    ];
    eventually("digests to agree", || async {
        let d: Vec<VersionVector> = futures::future::join_all(nodes.iter().map(|n| n.store.digest()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        d[0] == d[1] && d[1] == d[2]
    })
    .await;
    assert!(digests.iter().all(|d| d.entries.len() <= 3));
    let statuses = nodes[0].ae.peers();
    assert_eq!(statuses.len(), 2);
    eventually("node-0 to have talked to both peers", || async {
        nodes[0].ae.peers().iter().all(|p| p.last_contact.is_some() && p.id.is_some())
    })
    .await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_down_converges_after_restart() {
    let mut nodes = three_nodes(Some(Duration::from_millis(50))).await;
    nodes[0].write(WriteBatch::new().put("before", "1"), AckLevel::All).await.unwrap();
    let down = nodes.pop().unwrap();
    down.stop().await;

    nodes[0].write(WriteBatch::new().put("during", "2").delete("before"), AckLevel::Quorum).await.unwrap();
    nodes[1].write(WriteBatch::new().put("during/b", "3"), AckLevel::Quorum).await.unwrap();

    // It comes back empty, on a new port, knowing only one seed.
    let restarted = TestNode::serve(
        NodeSpec::new("node-2", vec![nodes[1].addr.clone()]).every(Duration::from_millis(50)),
        listener().await,
    )
    .await;
    eventually("the restarted node to catch up", || async {
        restarted.value("during").await.is_some() && restarted.value("during/b").await.is_some()
    })
    .await;
    assert!(restarted.store.get("before").await.unwrap().expect("tombstone").is_tombstone());
    eventually("the restarted node's digest to match", || async {
        restarted.store.digest().await.unwrap().dominates(&nodes[0].store.digest().await.unwrap())
    })
    .await;
    for n in nodes {
        n.stop().await;
    }
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_cluster_is_refused_and_changes_nothing() {
    let a = TestNode::serve(NodeSpec::new("a", vec![]), listener().await).await;
    let mut spec = NodeSpec::new("intruder", vec![a.addr.clone()]);
    spec.cluster = "other-cluster";
    let x = TestNode::serve(spec, listener().await).await;
    x.store.apply(WriteBatch::new().put("foreign", "v")).await.unwrap();

    let err = x.ae.sync_round().await.unwrap_err();
    assert!(err.to_string().contains("wrong cluster"), "{err}");
    let err = x.write(WriteBatch::new().put("foreign2", "v"), AckLevel::All).await.unwrap_err();
    assert!(matches!(err, ReplicationError::AckTimeout { acked: 1, needed: 2, .. }), "{err}");

    // And the other way round: `a` refuses to take anything from the intruder.
    let a_to_x = AntiEntropy::builder(
        a.store.clone(),
        Arc::new(Hlc::system()),
        CLUSTER.parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    )
    .seeds(vec![x.addr.clone()])
    .transport(transport())
    .build();
    let err = a_to_x.sync_round().await.unwrap_err();
    assert!(err.to_string().contains("wrong cluster"), "{err}");

    assert!(a.is_empty().await, "nothing from another cluster was merged");
    assert_eq!(a.store.digest().await.unwrap(), VersionVector::default());
    a.stop().await;
    x.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_credential_peers_replicate_and_a_peer_without_it_or_with_another_is_refused() {
    let key = || Some(PeerCredential::from_bytes([5; 32]));
    let a =
        TestNode::serve(NodeSpec { credential: key(), ..NodeSpec::new("a", vec![]) }, listener().await).await;
    let b = TestNode::serve(
        NodeSpec { credential: key(), ..NodeSpec::new("b", vec![a.addr.clone()]) },
        listener().await,
    )
    .await;
    b.write(WriteBatch::new().put("shared", "v"), AckLevel::All).await.unwrap();
    assert_eq!(a.value("shared").await.as_deref(), Some(&b"v"[..]));
    let before = a.store.digest().await.unwrap();

    for (name, credential) in [("open", None), ("forger", Some(PeerCredential::from_bytes([6; 32])))] {
        let x = TestNode::serve(
            NodeSpec { credential, ..NodeSpec::new(name, vec![a.addr.clone()]) },
            listener().await,
        )
        .await;
        x.store.apply(WriteBatch::new().put("settings/greeting", "stranger")).await.unwrap();
        let err = x.ae.sync_round().await.unwrap_err();
        assert!(
            matches!(
                &err,
                ReplicationError::Peer {
                    failure: PeerFailure::Refused { code: tonic::Code::Unauthenticated, .. },
                    ..
                }
            ),
            "{name}: {err}"
        );
        assert!(x.value("shared").await.is_none(), "{name} read nothing");
        x.stop().await;
    }
    assert_eq!(a.store.digest().await.unwrap(), before, "nothing was merged");
    assert!(a.value("settings/greeting").await.is_none());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_clock_runs_ahead_of_the_majority_is_refused_and_flagged() {
    // Three members: a and the observer agree, the skewed node runs a minute ahead.
    let (la, lo, ls) = (listener().await, listener().await, listener().await);
    let (a_addr, o_addr, s_addr) = (la.addr(), lo.addr(), ls.addr());
    let a = TestNode::serve(NodeSpec::new("a", vec![o_addr.clone()]), la).await;
    let o = TestNode::serve(NodeSpec::new("observer", vec![s_addr.clone(), a_addr.clone()]), lo).await;
    let ahead = Arc::new(ManualClock::new(now_ms() + 60_000));
    let mut spec = NodeSpec::new("skewed", vec![a_addr, o_addr]);
    spec.hlc = Arc::new(Hlc::new(ahead));
    let s = TestNode::serve(spec, ls).await;

    let err = s.write(WriteBatch::new().put("from-the-future", "v"), AckLevel::All).await.unwrap_err();
    assert!(matches!(err, ReplicationError::AckTimeout { .. }), "{err}");
    let err = s.ae.sync_round().await.unwrap_err();
    assert!(err.to_string().contains("clock skew"), "{err}");
    assert!(a.is_empty().await && o.is_empty().await, "nothing from a skewed peer was merged");
    let flagged = a.ae.peer_table().get(&s.addr).expect("the skewed peer is in a's table");
    assert!(flagged.clock_skewed);
    assert!(flagged.clock_offset_ms.unwrap() > 50_000, "{flagged:?}");

    // Pulling from the skewed node is refused too (rounds pick a random peer).
    let mut refused = None;
    for _ in 0..30 {
        if let Err(e) = o.ae.sync_round().await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("a round with the skewed node fails");
    assert!(matches!(err, ReplicationError::ClockSkew { .. }), "{err}");
    assert!(o.is_empty().await);
    let measured = o.ae.peers().into_iter().find(|p| p.addr == s.addr).expect("measured");
    assert!(measured.clock_skewed && measured.last_error.is_some(), "{measured:?}");
    assert!(measured.clock_uncertainty_ms.is_some(), "measured over the round trip: {measured:?}");
    for n in [a, s, o] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_is_met_with_one_dead_peer_of_three_but_all_times_out() {
    let b = TestNode::serve(NodeSpec::new("b", vec![]), listener().await).await;
    let dead = dead_addr().await;
    let a = TestNode::serve(NodeSpec::new("a", vec![b.addr.clone(), dead.clone()]), listener().await).await;

    let records = a.store.apply(WriteBatch::new().put("q", "1")).await.unwrap();
    let report = a.ae.replicate(records, AckLevel::Quorum, Duration::from_secs(3)).await.unwrap();
    assert_eq!((report.acked, report.members), (2, 3));
    assert!(b.value("q").await.is_some());

    let records = a.store.apply(WriteBatch::new().put("all", "1")).await.unwrap();
    let started = Instant::now();
    let err = a.ae.replicate(records, AckLevel::All, Duration::from_millis(400)).await.unwrap_err();
    assert!(
        matches!(err, ReplicationError::AckTimeout { acked: 2, needed: 3, timeout_ms: 400, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(a.value("all").await.is_some(), "the write stays applied locally");
    eventually("the dead peer's failure to show in status", || async {
        a.ae.peers().iter().any(|p| p.addr == dead && p.last_error.is_some())
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// Whether `key` holds a value (not a tombstone) on any of `nodes`.
async fn any_value(nodes: &[&TestNode], key: &str) -> bool {
    for n in nodes {
        if n.value(key).await.is_some() {
            return true;
        }
    }
    false
}

/// Waits until every other node knows a digest of `node` covering everything
/// `writer` has written.
async fn every_node_has_seen_a_digest_of(nodes: &[TestNode], node: &TestNode, writer: &TestNode) {
    let want = writer.store.digest().await.unwrap().get(writer.store.origin());
    for n in nodes.iter().filter(|n| n.addr != node.addr) {
        eventually("a digest of the node covering the writes", || async {
            n.ae.peer_table().digest(&node.addr).is_some_and(|d| d.digest.get(writer.store.origin()) >= want)
        })
        .await;
    }
}

fn membership(id: &str, addr: &PeerAddr) -> WriteBatch {
    WriteBatch::new()
        .put(format!("membership/{id}"), format!(r#"{{"id":"{id}","addr":"{addr}","state":"active"}}"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_is_collected_only_after_every_member_has_seen_it() {
    let every = Duration::from_millis(50);
    let (la, lb) = (listener().await, listener().await);
    let (ua, ub) = (la.addr(), lb.addr());
    let a = TestNode::serve(NodeSpec::new("node-a", vec![ub.clone()]).every(every), la).await;
    let b = TestNode::serve(NodeSpec::new("node-b", vec![ua.clone()]).every(every), lb).await;
    // node-c is a member, but unreachable for now.
    a.write(membership("node-c", &dead_addr().await), AckLevel::Local).await.unwrap();
    a.write(WriteBatch::new().put("k", "v"), AckLevel::Local).await.unwrap();
    a.write(WriteBatch::new().delete("k"), AckLevel::Local).await.unwrap();
    eventually("b to hold the tombstone", || async {
        b.store.get("k").await.unwrap().is_some_and(|r| r.is_tombstone())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for n in [&a, &b] {
        let held = n.store.get("k").await.unwrap();
        assert!(
            held.is_some_and(|r| r.is_tombstone()),
            "{} collected before node-c saw the tombstone",
            n.addr
        );
    }

    let lc = listener().await;
    let uc = lc.addr();
    let c = TestNode::serve(NodeSpec::new("node-c", vec![ua.clone()]).every(every), lc).await;
    c.write(membership("node-c", &uc), AckLevel::Local).await.unwrap();
    for n in [&a, &b, &c] {
        eventually("every node to collect the tombstone", || async {
            n.store.get("k").await.unwrap().is_none()
        })
        .await;
    }
    assert!(!any_value(&[&a, &b, &c], "k").await, "the deleted key never came back");
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_partitioned_away_during_collection_never_resurrects_the_key() {
    let mut nodes = three_nodes(Some(Duration::from_millis(50))).await;
    nodes[0].write(WriteBatch::new().put("k", "v").put("other", "1"), AckLevel::All).await.unwrap();
    nodes[0].write(WriteBatch::new().delete("k"), AckLevel::All).await.unwrap();
    every_node_has_seen_a_digest_of(&nodes, &nodes[2], &nodes[0]).await;
    // node-2 saw the delete, then drops off the network with its store intact.
    let gone = nodes.pop().unwrap();
    let kept = gone.store.clone();
    gone.stop().await;
    for n in &nodes {
        eventually("the connected nodes to collect the tombstone", || async {
            n.store.get("k").await.unwrap().is_none()
        })
        .await;
    }
    nodes[1].write(WriteBatch::new().put("during", "1"), AckLevel::Local).await.unwrap();

    // It comes back with the state it had, at a new address.
    let seeds = vec![nodes[0].addr.clone(), nodes[1].addr.clone()];
    let mut spec = NodeSpec::new("node-2", seeds).every(Duration::from_millis(50));
    spec.store = Some(kept);
    let back = TestNode::serve(spec, listener().await).await;
    eventually("the returning node to catch up", || async { back.value("during").await.is_some() }).await;
    assert!(!any_value(&[&nodes[0], &nodes[1], &back], "k").await, "the deleted key never came back");
    assert!(back.store.get("k").await.unwrap().is_none_or(|r| r.is_tombstone()));
    for n in nodes {
        n.stop().await;
    }
    back.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_tombstone_horizon_is_sent_a_snapshot_and_forgets_the_deleted_key() {
    let mut nodes = three_nodes(Some(Duration::from_millis(50))).await;
    let put = nodes[0].store.apply(WriteBatch::new().put("k", "old").put("kept", "1")).await.unwrap();
    nodes[0].ae.replicate(put.clone(), AckLevel::All, Duration::from_secs(3)).await.unwrap();
    // node-2's state as it was then, as a backup would hold it.
    let stale = Arc::new(MemoryStore::new("node-2".parse().unwrap(), Arc::new(Hlc::system())));
    stale.merge(put, &VersionVector::default()).await.unwrap();
    stale.apply(WriteBatch::new().put("own", "x")).await.unwrap();

    nodes[0].write(WriteBatch::new().delete("k"), AckLevel::All).await.unwrap();
    every_node_has_seen_a_digest_of(&nodes, &nodes[2], &nodes[0]).await;
    let gone = nodes.pop().unwrap();
    gone.stop().await;
    for n in &nodes {
        eventually("the tombstone to be collected", || async { n.store.get("k").await.unwrap().is_none() })
            .await;
    }

    // node-2 comes back from the backup: its digest is below the floor.
    let seeds = vec![nodes[0].addr.clone(), nodes[1].addr.clone()];
    let mut spec = NodeSpec::new("node-2", seeds).every(Duration::from_millis(50));
    spec.store = Some(stale.clone());
    let back = TestNode::serve(spec, listener().await).await;
    eventually("the restored node to drop the deleted key", || async {
        back.store.get("k").await.unwrap().is_none()
    })
    .await;
    assert_eq!(back.value("kept").await.as_deref(), Some(&b"1"[..]));
    eventually("its own write to reach the others", || async { nodes[0].value("own").await.is_some() }).await;
    assert!(!any_value(&[&nodes[0], &nodes[1], &back], "k").await, "the deleted key never came back");
    for n in nodes {
        n.stop().await;
    }
    back.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_does_not_count_itself_under_another_spelling_of_its_address() {
    let l = listener().await;
    let own_as_localhost: PeerAddr = format!("http://localhost:{}", l.local_addr.port()).parse().unwrap();
    let a = TestNode::serve(NodeSpec::new("a", vec![own_as_localhost.clone()]), l).await;
    assert_eq!(a.ae.peer_addrs().await.unwrap(), vec![own_as_localhost], "not known to be itself yet");
    // The first exchange shows that address answers as `a` itself.
    let _ = a.ae.sync_round().await;
    assert!(a.ae.peer_addrs().await.unwrap().is_empty(), "itself is no peer");
    a.write(WriteBatch::new().put("k", "v"), AckLevel::All).await.expect("all of one node is itself");
    a.stop().await;
}
