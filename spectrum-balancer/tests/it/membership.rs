//! Live membership: draining, adding and removing backends while serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spectrum_balancer::{Balancer, BalancerError, BalancerHandle, Discovery};
use spectrum_core::{Member, MemberState};

use crate::support::*;

#[tokio::test]
async fn a_draining_node_gets_no_new_requests_until_undrained() {
    let nodes = start_nodes(3).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut client = Client::http1(balancer.local_addr()).await;

    balancer.set_draining(&nodes[2].id, true).unwrap();
    assert!(balancer.stats()[2].draining);
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 0);
    assert_eq!(served_by(&answers, "node-0"), 10);

    balancer.set_draining(&nodes[2].id, false).unwrap();
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 10);
    balancer.shutdown().await;
}

/// With every node draining (the last active one stopped, or drains raced
/// on two nodes) the draining ones still take requests, so the cluster can be
/// undrained through the balancer (a trial was locked out); once one is
/// active again, it alone does.
#[tokio::test]
async fn with_every_node_draining_the_draining_ones_take_requests() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut client = Client::http1(balancer.local_addr()).await;
    for node in &nodes {
        balancer.set_draining(&node.id, true).unwrap();
    }
    let answers: Vec<_> = get_n(&mut client, 10).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(served_by(&answers, "node-0") + served_by(&answers, "node-1"), 10);

    balancer.set_draining(&nodes[1].id, false).unwrap();
    let answers = get_n(&mut client, 10).await;
    assert_eq!(served_by(&answers, "node-1"), 10, "the active node alone");
    balancer.shutdown().await;
}

async fn get_n(client: &mut Client, n: usize) -> Vec<Answer> {
    let mut answers = Vec::new();
    for _ in 0..n {
        answers.push(client.get("/").await);
    }
    answers
}

#[tokio::test]
async fn a_request_in_flight_on_a_draining_node_finishes() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    let addr = balancer.local_addr();
    // Round robin from the start: the first request goes to node-0.
    let slow = tokio::spawn(async move { Client::h2c(addr).await.get("/slow").await });
    wait_until("the slow request is in flight", || balancer.stats()[0].in_flight == 1).await;
    balancer.set_draining(&nodes[0].id, true).unwrap();
    let mut client = Client::h2c(addr).await;
    for _ in 0..4 {
        assert_eq!(client.get("/").await.node(), "node-1");
    }
    let a = within(slow).await.unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "node-0 slow"));
    balancer.shutdown().await;
}

#[tokio::test]
async fn an_added_node_receives_traffic_and_figures_survive_the_change() {
    let nodes = start_nodes(3).await;
    let balancer = balancer_for(&nodes[..2], None).await;
    let mut client = Client::http1(balancer.local_addr()).await;
    for _ in 0..4 {
        client.get("/").await;
    }
    assert_eq!(balancer.stats()[0].requests, 2);

    balancer.set_backends(nodes.iter().map(TestNode::backend).collect()).unwrap();
    wait_until("node-2 healthy", || balancer.stats().get(2).is_some_and(|s| s.healthy)).await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 10);
    assert_eq!(balancer.stats()[0].requests, 12, "load figures survive a membership change");

    balancer.set_backends(vec![nodes[2].backend()]).unwrap();
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 5, "removed nodes get nothing");
    assert_eq!(balancer.stats().len(), 1);
    balancer.shutdown().await;
}

#[tokio::test]
async fn membership_changes_are_validated() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_for(&nodes, None).await;
    let err = balancer.set_backends(vec![nodes[0].backend(), nodes[0].backend()]).unwrap_err();
    assert!(matches!(err, BalancerError::DuplicateBackend { .. }), "{err}");
    assert_eq!(balancer.stats().len(), 1, "the previous list stays in force");
    let unknown = "node-9".parse().unwrap();
    assert!(matches!(balancer.set_draining(&unknown, true), Err(BalancerError::UnknownBackend { .. })));
    balancer.shutdown().await;
}

/// A membership record the test edits while the balancer polls it.
#[derive(Debug, Default)]
struct Roster {
    members: parking_lot::Mutex<Vec<Member>>,
    broken: std::sync::atomic::AtomicBool,
}

impl Roster {
    fn set(&self, nodes: &[&TestNode], state: MemberState) {
        let mut members = self.members.lock();
        for node in nodes {
            let member = Member::new(node.id.clone(), node.addr.into(), state);
            match members.iter_mut().find(|m| m.id == node.id) {
                Some(m) => *m = member,
                None => members.push(member),
            }
        }
    }
}

#[async_trait::async_trait]
impl Discovery for Roster {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        if self.broken.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(BalancerError::discovery("management service unreachable"));
        }
        Ok(self.members.lock().clone())
    }
}

async fn balancer_discovering(roster: &Arc<Roster>) -> BalancerHandle {
    Balancer::builder(fast_config())
        .discovery(roster.clone(), Duration::from_millis(100))
        .start()
        .await
        .unwrap()
}

fn names(balancer: &BalancerHandle) -> Vec<String> {
    balancer.stats().iter().map(|s| s.id.to_string()).collect()
}

#[tokio::test]
async fn a_node_joining_the_membership_receives_traffic_within_seconds() {
    let nodes = start_nodes(3).await;
    let roster = Arc::new(Roster::default());
    roster.set(&[&nodes[0], &nodes[1]], MemberState::Active);
    roster.set(&[&nodes[2]], MemberState::Joining);
    let balancer = balancer_discovering(&roster).await;
    wait_until("two members healthy", || balancer.stats().iter().filter(|s| s.healthy).count() == 2).await;
    assert_eq!(names(&balancer), ["node-0", "node-1"], "a joining member gets nothing yet");

    let mut client = Client::http1(balancer.local_addr()).await;
    let joined = Instant::now();
    roster.set(&[&nodes[2]], MemberState::Active);
    while client.get("/").await.node() != "node-2" {
        assert!(joined.elapsed() < Duration::from_secs(5), "node-2 got no traffic after joining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 10, "the new node takes its share");
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_draining_member_finishes_its_requests_and_a_left_member_is_removed() {
    let nodes = start_nodes(2).await;
    let roster = Arc::new(Roster::default());
    roster.set(&[&nodes[0], &nodes[1]], MemberState::Active);
    let balancer = balancer_discovering(&roster).await;
    wait_until("both members healthy", || balancer.stats().iter().filter(|s| s.healthy).count() == 2).await;
    let requests_before = balancer.stats()[0].requests;

    // Round robin from a fresh start: the first request goes to node-0.
    let addr = balancer.local_addr();
    let slow = tokio::spawn(async move { Client::h2c(addr).await.get("/slow").await });
    wait_until("the slow request is in flight", || balancer.stats()[0].in_flight == 1).await;
    roster.set(&[&nodes[0]], MemberState::Draining);
    wait_until("node-0 draining", || balancer.stats()[0].draining).await;
    let mut client = Client::h2c(addr).await;
    for _ in 0..6 {
        assert_eq!(client.get("/").await.node(), "node-1");
    }
    let a = within(slow).await.unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "node-0 slow"), "in-flight work finishes");
    assert_eq!(balancer.stats()[0].requests, requests_before + 1, "no new request reached node-0");

    roster.members.lock().retain(|m| m.id != nodes[0].id);
    roster.set(&[&nodes[1]], MemberState::Active);
    wait_until("node-0 removed", || names(&balancer) == ["node-1"]).await;
    roster.set(&[&nodes[0]], MemberState::Left);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&balancer), ["node-1"], "a left member stays out");
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_failing_membership_source_leaves_the_members_in_place() {
    let nodes = start_nodes(2).await;
    let roster = Arc::new(Roster::default());
    roster.set(&[&nodes[0], &nodes[1]], MemberState::Active);
    let balancer = balancer_discovering(&roster).await;
    wait_until("both members healthy", || balancer.stats().iter().filter(|s| s.healthy).count() == 2).await;
    roster.broken.store(true, std::sync::atomic::Ordering::Relaxed);
    roster.members.lock().clear();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(names(&balancer), ["node-0", "node-1"]);
    let mut client = Client::http1(balancer.local_addr()).await;
    assert_eq!(client.get("/").await.status, 200);

    // A record pushed by hand is applied at once too.
    balancer
        .apply_members(&[Member::new(nodes[1].id.clone(), nodes[1].addr.into(), MemberState::Active)])
        .unwrap();
    assert_eq!(names(&balancer), ["node-1"]);
    balancer.shutdown().await;
}

#[tokio::test]
async fn an_idle_worker_closes_a_removed_backends_connections_without_waiting_for_a_request() {
    let nodes = start_nodes(2).await;
    let config = spectrum_balancer::BalancerConfig { workers: 2, ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    // Two client connections: the acceptor hands them to different workers, and
    // each worker opens its own connections to both nodes (round robin).
    let mut clients =
        vec![Client::h2c(balancer.local_addr()).await, Client::h2c(balancer.local_addr()).await];
    for client in &mut clients {
        for _ in 0..4 {
            assert_eq!(client.get("/").await.status, 200);
        }
    }
    let open = |node: &TestNode| node.proxied_connections.load(std::sync::atomic::Ordering::Acquire);
    assert!(open(&nodes[1]) >= 1, "the balancer forwarded to node-1");

    // node-1 leaves; no request comes in after that.
    balancer.set_backends(vec![nodes[0].backend()]).unwrap();
    wait_until("node-1's upstream connections are closed", || open(&nodes[1]) == 0).await;
    assert!(open(&nodes[0]) >= 1, "the remaining node's connections stay open");
    for client in &mut clients {
        assert_eq!(client.get("/").await.node(), "node-0");
    }
    balancer.shutdown().await;
}
