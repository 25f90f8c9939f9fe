//! What passes through the proxy, and how: protocols, paths, headers, trailers, gRPC.

use std::sync::Arc;

use futures::StreamExt;
use spectrum_balancer::BalancingStrategy;
use spectrum_balancer::strategy::{Outcome, RequestContext, RoundRobin};
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

#[tokio::test]
async fn requests_spread_over_all_backends_in_turn() {
    let nodes = start_nodes(3).await;
    let balancer = balancer_for(&nodes, Some(Arc::new(RoundRobin::new()))).await;
    let mut client = Client::http1(balancer.local_addr()).await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(client.get("/hello").await);
    }
    assert!(answers.iter().all(|a| a.status == 200));
    for node in &nodes {
        assert_eq!(served_by(&answers, &node.name), 10, "{}", node.name);
    }
    // Round robin: every window of three consecutive requests covers the three nodes.
    for window in answers.windows(3) {
        let mut names: Vec<&str> = window.iter().map(Answer::node).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 3, "{names:?}");
    }
    let stats = balancer.stats();
    assert!(stats.iter().all(|s| s.requests == 10 && s.in_flight == 0 && s.failures == 0), "{stats:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn http1_and_h2c_clients_share_one_port() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut h1 = Client::http1(balancer.local_addr()).await;
    let mut h2 = Client::h2c(balancer.local_addr()).await;
    let a = h1.get("/via/h1").await;
    let b = h2.get("/via/h2").await;
    assert_eq!((a.status.as_u16(), a.version), (200, http::Version::HTTP_11));
    assert_eq!((b.status.as_u16(), b.version), (200, http::Version::HTTP_2));
    assert!(a.body.ends_with("GET /via/h1"), "{}", a.body);
    assert!(b.body.ends_with("GET /via/h2"), "{}", b.body);
    balancer.shutdown().await;
}

#[tokio::test]
async fn paths_are_forwarded_byte_for_byte_with_encoded_slashes() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_for(&nodes, None).await;
    let path = "/files/a%2Fb//%2e%2E/c%20d?x=%2F&y=1&z=%41";
    for mut client in [Client::http1(balancer.local_addr()).await, Client::h2c(balancer.local_addr()).await] {
        let a = client.get(path).await;
        assert_eq!(a.body, format!("node-0 GET {path}"));
    }
    balancer.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_x_forwarded_for_is_added() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut client = Client::http1(balancer.local_addr()).await;
    let a = client
        .get_with("/headers", &[("connection", "x-private"), ("x-private", "secret"), ("te", "trailers")])
        .await;
    assert_eq!(a.header("x-seen-xff"), "127.0.0.1");
    assert_eq!(a.header("x-seen-connection"), "-");
    assert_eq!(a.header("x-seen-x-private"), "-");
    assert_eq!(a.header("x-seen-te"), "trailers");
    assert_eq!(
        a.header("x-seen-host"),
        "-",
        "the URI authority names the backend; host moves to x-forwarded-host"
    );
    balancer.shutdown().await;
}

#[tokio::test]
async fn response_bodies_and_trailers_stream_through_to_h2c_clients() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut client = Client::h2c(balancer.local_addr()).await;
    let a = client.get("/trailers").await;
    assert_eq!(a.body, "chunk-1 chunk-2");
    let trailers = a.trailers.expect("trailers reach the client");
    assert_eq!(trailers["x-trailer"], "node-0");
    balancer.shutdown().await;
}

#[tokio::test]
async fn grpc_unary_calls_reach_every_node_with_their_status() {
    let nodes = start_nodes(3).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut health = HealthClient::new(grpc_channel(&balancer));
    let mut seen = Vec::new();
    for _ in 0..6 {
        let resp = within(health.check(HealthCheckRequest { service: "demo".into() })).await.unwrap();
        seen.push(resp.metadata().get("x-node").unwrap().to_str().unwrap().to_owned());
        assert_eq!(resp.into_inner().status, WireStatus::Serving as i32);
    }
    for node in &nodes {
        assert_eq!(seen.iter().filter(|n| **n == node.name).count(), 2, "{seen:?}");
    }
    // A gRPC error status travels in trailers (or a trailers-only answer) and arrives intact.
    let err =
        within(health.check(HealthCheckRequest { service: "no-such-service".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn grpc_server_streaming_passes_each_update_through() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut health = HealthClient::new(grpc_channel(&balancer));
    let mut updates =
        within(health.watch(HealthCheckRequest { service: "demo".into() })).await.unwrap().into_inner();
    let first = within(updates.next()).await.unwrap().unwrap();
    assert_eq!(first.status, WireStatus::Serving as i32);
    assert_eq!(balancer.stats()[0].in_flight, 1, "an open stream counts as in flight");

    nodes[0].health.set_service_status("demo", ServingStatus::NotServing).await;
    let second = within(updates.next()).await.unwrap().unwrap();
    assert_eq!(second.status, WireStatus::NotServing as i32);

    nodes[0].health.set_service_status("demo", ServingStatus::Serving).await;
    let third = within(updates.next()).await.unwrap().unwrap();
    assert_eq!(third.status, WireStatus::Serving as i32);
    drop(updates);
    wait_until("the closed stream is no longer in flight", || balancer.stats()[0].in_flight == 0).await;
    balancer.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_for(&nodes, None).await;
    let addr = balancer.local_addr();
    assert_eq!(Client::http1(addr).await.get("/").await.status, 200);
    within(balancer.shutdown()).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
}

#[tokio::test]
async fn consistent_hashing_by_client_address_keeps_a_client_on_one_node() {
    let nodes = start_nodes(3).await;
    let config = spectrum_balancer::BalancerConfig { affinity_client_address: true, ..fast_config() };
    let strategy: std::sync::Arc<dyn spectrum_balancer::BalancingStrategy> =
        std::sync::Arc::new(spectrum_balancer::ConsistentHash::new());
    let balancer = balancer_with(config, &nodes, Some(strategy)).await;
    let mut answers = Vec::new();
    for _ in 0..12 {
        let mut client = Client::http1(balancer.local_addr()).await;
        answers.push(client.get("/who").await);
    }
    let first = answers[0].node().to_owned();
    assert!(answers.iter().all(|a| a.node() == first), "one client address, one node: {answers:?}");
    balancer.shutdown().await;
}

/// Round robin that records every outcome it is told of.
#[derive(Debug, Default)]
struct Recording {
    inner: RoundRobin,
    outcomes: std::sync::Mutex<Vec<Outcome>>,
}

impl BalancingStrategy for Recording {
    fn pick(&self, backends: &[spectrum_balancer::Backend], ctx: &RequestContext<'_>) -> Option<usize> {
        self.inner.pick(backends, ctx)
    }

    fn on_complete(
        &self,
        _backend: &spectrum_balancer::Backend,
        outcome: Outcome,
        _latency: std::time::Duration,
    ) {
        self.outcomes.lock().unwrap().push(outcome);
    }
}

#[tokio::test]
async fn an_answer_ending_with_its_last_data_frame_counts_as_a_success() {
    let nodes = start_nodes(1).await;
    let strategy = Arc::new(Recording::default());
    let balancer = balancer_for(&nodes, Some(strategy.clone())).await;
    // Plain answers: their last DATA frame carries END_STREAM, no trailers follow.
    for mut client in [Client::h2c(balancer.local_addr()).await, Client::http1(balancer.local_addr()).await] {
        for _ in 0..3 {
            assert_eq!(client.get("/plain").await.status.as_u16(), 200);
        }
    }
    wait_until("every exchange is over", || balancer.stats()[0].in_flight == 0).await;
    let outcomes = strategy.outcomes.lock().unwrap().clone();
    assert_eq!(outcomes, vec![Outcome::Success; 6], "not one exchange counted as given up");
    balancer.shutdown().await;
}
