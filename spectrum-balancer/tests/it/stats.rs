//! The balancer's own gRPC service, `spectrum.balancer.v1.Balancer/Stats`, answered
//! on its main port (to holders of its token, or anyone when opened) and on its
//! admin listener.

use std::sync::Arc;

use spectrum_balancer::stats::proto::{StatsRequest, StatsResponse, balancer_client::BalancerClient};
use spectrum_balancer::stats::{BackendHealth, StatsClient};
use spectrum_balancer::strategy::RoundRobin;
use spectrum_balancer::{BalancerConfig, BalancerError, BearerToken};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

/// Stats on the public port answers anyone: these tests are about the figures.
fn open_stats() -> BalancerConfig {
    BalancerConfig { open_stats: true, ..fast_config() }
}

async fn stats(client: &mut BalancerClient<tonic::transport::Channel>) -> StatsResponse {
    let resp = within(client.stats(StatsRequest {})).await.expect("Stats answers");
    assert_eq!(grpc_node(&resp), "-", "answered by the balancer itself, not a node");
    resp.into_inner()
}

#[tokio::test]
async fn stats_through_the_balancer_port_list_every_backend_with_growing_counts() {
    let nodes = start_nodes(3).await;
    let balancer = balancer_with(open_stats(), &nodes, Some(Arc::new(RoundRobin::new()))).await;
    let mut client = BalancerClient::new(grpc_channel(&balancer));

    let before = stats(&mut client).await;
    let ids: Vec<&str> = before.backends.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["node-0", "node-1", "node-2"]);
    for (b, node) in before.backends.iter().zip(&nodes) {
        assert_eq!(b.addr, node.addr.to_string());
        assert_eq!(b.weight, 1);
        assert!(b.healthy && !b.ejected && !b.draining, "{b:?}");
        assert_eq!((b.requests, b.in_flight, b.failures, b.retries), (0, 0, 0, 0), "{b:?}");
    }
    assert_eq!(before.requests, 0, "Stats calls are not counted as proxied requests");

    let mut http = Client::h2c(balancer.local_addr()).await;
    for _ in 0..6 {
        assert_eq!(http.get("/work").await.status, 200);
    }
    let after = stats(&mut client).await;
    assert_eq!(after.requests, 6);
    for b in &after.backends {
        assert_eq!(b.requests, 2, "{b:?}");
        assert_eq!(b.in_flight, 0, "{b:?}");
        assert!(b.latency_ewma_us > 0, "{b:?}");
    }
    // The same figures as the handle's.
    let handle: Vec<(String, u64)> =
        balancer.stats().iter().map(|s| (s.id.as_str().to_owned(), s.requests)).collect();
    let wire: Vec<(String, u64)> = after.backends.iter().map(|b| (b.id.clone(), b.requests)).collect();
    assert_eq!(handle, wire);
    let again = stats(&mut client).await;
    assert!(again.backends.iter().all(|b| b.requests == 2), "Stats calls never reach a node: {again:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_draining_backend_shows_draining() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_with(open_stats(), &nodes, None).await;
    balancer.set_draining(&nodes[1].id, true).unwrap();
    let mut client = BalancerClient::new(grpc_channel(&balancer));
    let s = stats(&mut client).await;
    let draining: Vec<(&str, bool)> = s.backends.iter().map(|b| (b.id.as_str(), b.draining)).collect();
    assert_eq!(draining, [("node-0", false), ("node-1", true)]);
    balancer.set_draining(&nodes[1].id, false).unwrap();
    assert!(stats(&mut client).await.backends.iter().all(|b| !b.draining));
    balancer.shutdown().await;
}

#[tokio::test]
async fn other_calls_are_proxied_as_before() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_with(open_stats(), &nodes, None).await;
    let channel = grpc_channel(&balancer);
    let mut health = HealthClient::new(channel.clone());
    let resp = within(health.check(HealthCheckRequest { service: "demo".into() })).await.unwrap();
    assert!(grpc_node(&resp).starts_with("node-"), "a node answered the health check");
    let mut client = BalancerClient::new(channel);
    let s = stats(&mut client).await;
    assert_eq!(s.backends.len(), 2, "on the same connection as proxied calls");
    assert_eq!(s.backends.iter().map(|b| b.requests).sum::<u64>(), 1, "{s:?}");
    assert!(s.backends.iter().all(|b| b.in_flight == 0), "a call with trailers is over once answered: {s:?}");

    let mut http = Client::h2c(balancer.local_addr()).await;
    let a = http.get("/work?x=1").await;
    assert_eq!(a.status, 200);
    assert!(a.body.ends_with("GET /work?x=1"), "{}", a.body);
    // A look-alike service name is not the balancer's.
    let a = http.get("/spectrum.balancer.v1.BalancerX/Stats").await;
    assert!(a.node().starts_with("node-"), "{a:?}");
    // An unknown method of the balancer's service is answered by the balancer.
    let a = http.get("/spectrum.balancer.v1.Balancer/Nope").await;
    assert_eq!((a.node(), a.header("grpc-status")), ("-", "12"), "{a:?}");
    assert_eq!(balancer.stats().iter().map(|s| s.requests).sum::<u64>(), 3);
    balancer.shutdown().await;
}

#[tokio::test]
async fn with_serve_stats_off_the_path_is_proxied() {
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { serve_stats: false, ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    let mut http = Client::h2c(balancer.local_addr()).await;
    let a = http.get("/spectrum.balancer.v1.Balancer/Stats").await;
    assert_eq!(a.node(), "node-0", "{a:?}");
    assert_eq!(a.body, "node-0 GET /spectrum.balancer.v1.Balancer/Stats");
    balancer.shutdown().await;
}

#[tokio::test]
async fn the_typed_client_reads_the_same_figures_as_the_handle() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_with(open_stats(), &nodes, Some(Arc::new(RoundRobin::new()))).await;
    balancer.set_draining(&nodes[1].id, true).unwrap();
    let mut http = Client::h2c(balancer.local_addr()).await;
    for _ in 0..3 {
        assert_eq!(http.get("/work").await.status, 200);
    }
    let mut client = within(StatsClient::connect(balancer.url())).await.expect("connects");
    let stats = within(client.stats()).await.expect("Stats answers");
    assert_eq!(stats.backends, balancer.stats(), "the same figures as the handle's");
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.backends[0].health, BackendHealth::Healthy);
    assert!(stats.backends[1].draining);

    let table = stats.to_string();
    assert!(table.starts_with("BALANCER  (3 requests,") && table.contains("LATENCY µs"), "{table}");
    assert_eq!(
        table.lines().nth(1),
        Some("STRATEGY  RoundRobin from the balancer's configuration"),
        "{table}"
    );
    assert!(table.lines().nth(3).is_some_and(|l| l.starts_with("node-0 ")), "{table}");
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["requests"], 3);
    assert_eq!(json["nodes"][0]["id"], "node-0");
    assert_eq!(json["nodes"][0]["addr"], nodes[0].addr.to_string());
    assert_eq!(json["nodes"][0]["health"], "healthy");
    assert_eq!(json["nodes"][1]["draining"], true);
    assert_eq!(json["strategy"]["source"], "configured");
    balancer.shutdown().await;
}

#[tokio::test]
async fn the_typed_client_says_when_the_endpoint_does_not_answer_stats() {
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { serve_stats: false, ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    let mut client = StatsClient::new(grpc_channel(&balancer));
    let error = within(client.stats()).await.unwrap_err();
    assert!(matches!(error, BalancerError::StatsCall { .. }), "{error}");
    balancer.shutdown().await;

    let error = within(StatsClient::connect("not a url")).await.unwrap_err();
    assert!(matches!(error, BalancerError::Connect { .. }), "{error}");
}

#[tokio::test]
async fn on_the_public_port_stats_answers_the_balancer_s_token_and_tokens_the_nodes_admit() {
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { stats_token: Some(BearerToken::new("t0ken")), ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    let refused = |error: BalancerError| match error {
        BalancerError::StatsCall { code, message } => (code, message),
        other => panic!("{other}"),
    };
    let (code, message) =
        refused(within(StatsClient::new(grpc_channel(&balancer)).stats()).await.unwrap_err());
    assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
    assert!(message.contains("a token the cluster admits"), "{message}");
    // Another token is checked with a node, which refuses this one.
    let wrong = StatsClient::new(grpc_channel(&balancer)).with_token("t0ken!").unwrap();
    let (code, _) = refused(within(wrong.clone().stats()).await.unwrap_err());
    assert_eq!(code, tonic::Code::Unauthenticated);
    let mut right = StatsClient::new(grpc_channel(&balancer)).with_token("t0ken").unwrap();
    assert_eq!(within(right.stats()).await.unwrap().backends.len(), 1);
    let checks = balancer.stats()[0].requests;
    assert_eq!(checks, 2, "a call without the balancer's own token is checked with a node: two so far");
    // A user's token the nodes admit (a viewer's, say) is answered too, and
    // remembered: asked once.
    let mut viewer = StatsClient::new(grpc_channel(&balancer)).with_token("viewer-token").unwrap();
    assert_eq!(within(viewer.stats()).await.unwrap().backends.len(), 1);
    assert_eq!(within(viewer.stats()).await.unwrap().backends.len(), 1);
    assert_eq!(balancer.stats()[0].requests, checks + 1);
    balancer.shutdown().await;
}

#[tokio::test]
async fn without_a_token_stats_is_off_on_the_public_port_and_served_on_the_admin_listener() {
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { admin_listen: Some("127.0.0.1:0".parse().unwrap()), ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    let error = within(StatsClient::new(grpc_channel(&balancer)).stats()).await.unwrap_err();
    assert!(
        matches!(&error, BalancerError::StatsCall { code: tonic::Code::PermissionDenied, message } if message.contains("admin listener")),
        "{error}"
    );
    let admin = format!("http://{}", balancer.admin_addr().unwrap());
    let mut client = within(StatsClient::connect(admin)).await.unwrap();
    let stats = within(client.stats()).await.expect("the admin listener answers Stats without a token");
    assert_eq!(stats.backends.len(), 1);
    assert_eq!(balancer.stats()[0].requests, 0, "no Stats call reached a node");
    balancer.shutdown().await;
}
