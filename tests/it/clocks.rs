//! Clocks fence writes: a node whose clock is off from the majority of its peers
//! refuses writes and is not ready, still takes its peers' data, and recovers by
//! itself once its clock is right; the replicas never disagree.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use spectrum::client::{AckLevel, AdminClient, NodeStateChange, ReadAfter};
use spectrum::core::{Clock, MemberState, PeerAddr, SystemClock, transport};
use spectrum::{Node, NodeBuilder};

use crate::support::readyz_becomes;

/// The system clock, shifted by an offset the test can change (a `faketime`).
#[derive(Debug, Default)]
struct ShiftedClock {
    shift_ms: AtomicI64,
}

impl ShiftedClock {
    fn set_shift(&self, shift: i64) {
        self.shift_ms.store(shift, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms().saturating_add_signed(self.shift_ms.load(Ordering::SeqCst))
    }
}

const TEN_MINUTES_MS: i64 = 10 * 60 * 1_000;

/// Node `i` (0-based) of a three-node test cluster listening on `listener`, its
/// seeds the other `addrs`; node-3 runs on `clock`; durable under `data` when given.
fn builder(
    cluster: &str,
    i: usize,
    addrs: &[PeerAddr],
    clock: &Arc<ShiftedClock>,
    data: Option<&Path>,
) -> NodeBuilder {
    let id = format!("node-{}", i + 1);
    let seeds: Vec<PeerAddr> = addrs.iter().filter(|a| **a != addrs[i]).cloned().collect();
    let b = NodeBuilder::new(id.parse().unwrap(), cluster.parse().unwrap())
        .drain_grace(Duration::ZERO)
        .sync_interval(Duration::from_millis(100))
        .seeds(seeds);
    let b = match data {
        Some(root) => b.data_dir(root.join(&id)),
        None => b.in_memory(),
    };
    if i == 2 { b.clock(clock.clone()) } else { b }
}

/// Three nodes of `cluster` on loopback; node-3 runs on `clock`.
async fn three_nodes(cluster: &str, clock: Arc<ShiftedClock>) -> Vec<Node> {
    three_nodes_in(cluster, &clock, None).await.0
}

/// Three nodes of `cluster` on loopback, durable under `data` when given; node-3
/// runs on `clock`. Also returns their addresses.
async fn three_nodes_in(
    cluster: &str,
    clock: &Arc<ShiftedClock>,
    data: Option<&Path>,
) -> (Vec<Node>, Vec<PeerAddr>) {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(transport::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap());
    }
    let addrs: Vec<PeerAddr> = listeners.iter().map(transport::Listener::addr).collect();
    let starts = listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| builder(cluster, i, &addrs, clock, data).listener(listener).start());
    (futures::future::try_join_all(starts).await.expect("nodes start"), addrs)
}

/// Three durable nodes of `cluster` under `data` (node-3 on `clock`), their
/// addresses, and a client of node-1 through which all three took
/// `settings/color` = `green`.
async fn three_holding_green(
    cluster: &str,
    clock: &Arc<ShiftedClock>,
    data: &Path,
) -> (Vec<Node>, Vec<PeerAddr>, AdminClient) {
    let (nodes, addrs) = three_nodes_in(cluster, clock, Some(data)).await;
    let on_node1 = AdminClient::connect(nodes[0].addr(), None).await.unwrap();
    on_node1.put("settings/color", "green", AckLevel::All).await.expect("all three hold it");
    (nodes, addrs, on_node1)
}

/// Waits (up to 10 s) until every node holds `value` at `key`.
async fn all_hold(nodes: &[Node], key: &str, value: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in nodes {
        loop {
            let got = n.store().get(key).await.unwrap().and_then(|r| r.value);
            if got.as_deref() == Some(value) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} holds {:?} at {key}, expected {:?}",
                n.id(),
                got.map(|v| String::from_utf8_lossy(&v).into_owned()),
                String::from_utf8_lossy(value)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_runs_behind_is_fenced_yet_converges_and_recovers_when_its_clock_is_right() {
    let clock = Arc::new(ShiftedClock::default());
    clock.set_shift(-TEN_MINUTES_MS);
    let nodes = three_nodes("it-clock-behind", clock.clone()).await;
    let (node1, skewed) = (&nodes[0], &nodes[2]);

    // Its peers agree with each other, so the skewed node knows it is the outlier.
    let body = readyz_becomes(&skewed.local_addr().to_string(), 503).await;
    assert!(body.contains("clock"), "{body}");
    readyz_becomes(&node1.local_addr().to_string(), 200).await;
    let on_skewed = AdminClient::connect(skewed.addr(), None).await.unwrap();
    let refused = on_skewed.put("settings/color", "blue", AckLevel::Local).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::FailedPrecondition), "{refused}");
    assert!(refused.to_string().contains("ms"), "names the offset: {refused}");
    // Status says so, and shows each peer's offset with its uncertainty.
    let status = on_skewed.status().await.unwrap();
    assert!(status.clock_fenced.as_deref().is_some_and(|why| why.contains("behind")), "{status}");
    for p in &status.peers {
        let offset = p.clock_offset_ms.expect("measured");
        assert!(offset > 590_000 && p.clock_skewed && p.clock_uncertainty_ms.is_some(), "{p:?}");
    }
    assert!(status.to_string().contains("SKEW"), "{status}");

    // It still takes its peers' writes.
    let on_node1 = AdminClient::connect(node1.addr(), None).await.unwrap();
    let red = on_node1.put("settings/color", "red", AckLevel::All).await.expect("acknowledged by all");
    all_hold(&nodes, "settings/color", b"red").await;

    // Once its clock is right, it serves and writes again, and everyone agrees.
    clock.set_shift(0);
    readyz_becomes(&skewed.local_addr().to_string(), 200).await;
    let blue = on_skewed.put("settings/color", "blue", AckLevel::Local).await.expect("accepted again");
    all_hold(&nodes, "settings/color", b"blue").await;
    let got = on_node1.get("settings/color", ReadAfter::from(&blue.write)).await.unwrap();
    assert_eq!(got.value, b"blue", "a read after blue's token sees blue (red was {:?})", red.write);
    for n in nodes {
        n.shutdown_without_drain().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_node_behind_and_its_peers_end_on_one_value_everywhere() {
    // The order of the issue: red through node-1, then blue through the node
    // behind (ack local), whatever it answers.
    let clock = Arc::new(ShiftedClock::default());
    clock.set_shift(-TEN_MINUTES_MS);
    let nodes = three_nodes("it-clock-order", clock.clone()).await;
    let on_node1 = AdminClient::connect(nodes[0].addr(), None).await.unwrap();
    let on_skewed = AdminClient::connect(nodes[2].addr(), None).await.unwrap();
    on_node1.put("settings/color", "red", AckLevel::Local).await.expect("written");
    let blue = on_skewed.put("settings/color", "blue", AckLevel::Local).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut values = Vec::new();
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let first = nodes[0].store().get("settings/color").await.unwrap().and_then(|r| r.value);
            let here = n.store().get("settings/color").await.unwrap().and_then(|r| r.value);
            if here.is_some() && here == first {
                values.push(here);
                break;
            }
            assert!(Instant::now() < deadline, "{} holds {here:?}, node-1 {first:?} ({blue:?})", n.id());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let Ok(blue) = &blue {
        let got = on_node1.get("settings/color", ReadAfter::from(&blue.write)).await.unwrap();
        assert_eq!(got.value, b"blue", "blue was acknowledged, so a read after it sees it");
    }
    for n in nodes {
        n.shutdown_without_drain().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_node_restarted_ten_minutes_behind_refuses_writes_and_every_replica_keeps_one_value() {
    // The case: the node held data from before, so it joins at once.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let (mut nodes, addrs, on_node1) = three_holding_green("it-clock-restart", &clock, dir.path()).await;

    let old = nodes.pop().unwrap();
    let at = old.local_addr();
    old.shutdown_without_drain().await;
    clock.set_shift(-TEN_MINUTES_MS);
    let listener = transport::bind(at).await.unwrap();
    let restarted =
        builder("it-clock-restart", 2, &addrs, &clock, Some(dir.path())).listener(listener).start().await;
    nodes.push(restarted.expect("restarts"));

    on_node1.put("settings/color", "red", AckLevel::Local).await.expect("written");
    let on_skewed = AdminClient::connect(nodes[2].addr(), None).await.unwrap();
    let blue = on_skewed.put("settings/color", "blue", AckLevel::Local).await;
    let refused = blue.expect_err("a node ten minutes behind refuses writes");
    assert_eq!(refused.code(), Some(tonic::Code::FailedPrecondition), "{refused}");
    assert!(refused.to_string().contains("behind"), "{refused}");
    let body = readyz_becomes(&nodes[2].local_addr().to_string(), 503).await;
    assert!(body.contains("clock off (see clock_error)"), "{body}");
    all_hold(&nodes, "settings/color", b"red").await;

    clock.set_shift(0);
    readyz_becomes(&nodes[2].local_addr().to_string(), 200).await;
    let blue = on_skewed.put("settings/color", "blue", AckLevel::Local).await.expect("accepted again");
    all_hold(&nodes, "settings/color", b"blue").await;
    let got = on_node1.get("settings/color", ReadAfter::from(&blue.write)).await.unwrap();
    assert_eq!(got.value, b"blue");
    for n in nodes {
        n.shutdown_without_drain().await;
    }
}

/// Ahead, but by little enough for a test to wait out its hybrid clock's lead.
const AHEAD_MS: i64 = 4_000;

/// Restarts node-3 (the last of `nodes`) on its own disk under `dir`, at its
/// address.
async fn restart_node_3(
    nodes: &mut Vec<Node>,
    cluster: &str,
    addrs: &[PeerAddr],
    clock: &Arc<ShiftedClock>,
    dir: &Path,
) {
    let old = nodes.pop().unwrap();
    let at = old.local_addr();
    old.shutdown_without_drain().await;
    let listener = transport::bind(at).await.unwrap();
    let restarted = builder(cluster, 2, addrs, clock, Some(dir)).listener(listener).start().await;
    nodes.push(restarted.expect("restarts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_node_restarted_ahead_refuses_writes_until_its_wall_and_hybrid_clocks_are_both_right() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let (mut nodes, addrs, on_node1) = three_holding_green("it-clock-ahead", &clock, dir.path()).await;

    clock.set_shift(AHEAD_MS);
    restart_node_3(&mut nodes, "it-clock-ahead", &addrs, &clock, dir.path()).await;
    // Its peers refused its first pull, and the refusals measured its clock: no write slips in.
    let on_skewed = AdminClient::connect(nodes[2].addr(), None).await.unwrap();
    let refused = on_skewed.put("settings/color", "blue", AckLevel::Local).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::FailedPrecondition), "{refused}");
    assert!(refused.to_string().contains("ahead of"), "{refused}");
    readyz_becomes(&nodes[2].local_addr().to_string(), 503).await;
    on_node1.put("settings/color", "red", AckLevel::Local).await.expect("written");

    // Corrected and restarted at once: its wall clock is right, but the hybrid
    // clock its store restores is still about AHEAD_MS ahead. A write stamped
    // so would outlast newer writes elsewhere: refused, saying for how long.
    clock.set_shift(0);
    restart_node_3(&mut nodes, "it-clock-ahead", &addrs, &clock, dir.path()).await;
    let on_skewed = AdminClient::connect(nodes[2].addr(), None).await.unwrap();
    let refused = on_skewed.put("settings/color", "blue", AckLevel::Local).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::FailedPrecondition), "{refused}");
    assert!(refused.to_string().contains("hybrid clock is"), "{refused}");
    // It still takes its peers, who are merely behind its hybrid clock (they
    // refuse its answers meanwhile, whose stamps would drag theirs ahead).
    on_node1.put("settings/mode", "fast", AckLevel::Quorum).await.expect("acknowledged");
    all_hold(&nodes, "settings/mode", b"fast").await;
    all_hold(&nodes, "settings/color", b"red").await;

    // Once its wall clock has caught up, it serves and takes writes again.
    readyz_becomes(&nodes[2].local_addr().to_string(), 200).await;
    let blue = on_skewed.put("settings/color", "blue", AckLevel::Local).await.expect("accepted again");
    all_hold(&nodes, "settings/color", b"blue").await;
    let got = on_node1.get("settings/color", ReadAfter::from(&blue.write)).await.unwrap();
    assert_eq!(got.value, b"blue");
    for n in nodes {
        n.shutdown_without_drain().await;
    }
}

/// A node removed while its clock ran ahead records nothing stamped by that
/// clock (neither its start nor its stop), so it comes back with the right
/// clock to find itself removed: the removal is not outlasted (a trial saw
/// it active again, its own record stamped ten minutes ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_while_its_clock_ran_ahead_stays_removed_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let (mut nodes, addrs, on_node1) = three_holding_green("it-clock-removed", &clock, dir.path()).await;

    clock.set_shift(TEN_MINUTES_MS);
    restart_node_3(&mut nodes, "it-clock-removed", &addrs, &clock, dir.path()).await;
    readyz_becomes(&nodes[2].local_addr().to_string(), 503).await;
    let removed = on_node1.set_node_state("node-3", NodeStateChange::Remove, AckLevel::Quorum).await.unwrap();
    assert_eq!(removed.member.state, MemberState::Removed);
    // Stopped the way an operator stops it (with its drain), still ahead.
    let skewed = nodes.pop().unwrap();
    let at = skewed.local_addr();
    skewed.shutdown().await;

    clock.set_shift(0);
    let listener = transport::bind(at).await.unwrap();
    let back =
        builder("it-clock-removed", 2, &addrs, &clock, Some(dir.path())).listener(listener).start().await;
    // Its hybrid clock, restored from its store, is still ten minutes ahead:
    // its peers refuse its calls until its wall clock catches up, so it cannot
    // learn of its removal yet, and it does not record itself meanwhile.
    let back = back.expect("starts, fenced");
    let body = readyz_becomes(&back.local_addr().to_string(), 503).await;
    assert!(body.contains("hybrid clock is"), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Its peers' clocks did not follow its own: they serve and take writes.
    readyz_becomes(&nodes[0].local_addr().to_string(), 200).await;
    on_node1.put("settings/color", "red", AckLevel::Quorum).await.expect("written");
    back.shutdown().await;
    for n in &nodes {
        let record = n.store().get("membership/node-3").await.unwrap().and_then(|r| r.value).unwrap();
        let member = spectrum::core::Member::from_record_value(&record).unwrap();
        assert_eq!(member.state, MemberState::Removed, "{} holds {member:?}", n.id());
    }
    for n in nodes {
        n.shutdown_without_drain().await;
    }
}
