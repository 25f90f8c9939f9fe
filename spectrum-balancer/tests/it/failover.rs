//! Health checks, failover and the balancer's own answers when no node can serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spectrum_balancer::{Balancer, BalancerConfig};
use tonic_health::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

#[tokio::test]
async fn a_stopped_node_costs_no_failed_requests_and_is_then_skipped() {
    let mut nodes = start_nodes(3).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut client = Client::http1(balancer.local_addr()).await;
    for _ in 0..6 {
        assert_eq!(client.get("/before").await.status, 200);
    }

    nodes[1].stop().await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(client.get("/after").await);
    }
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(served_by(&answers, "node-1"), 0);
    assert_eq!(served_by(&answers, "node-0") + served_by(&answers, "node-2"), 30);

    wait_until("health checks mark node-1 down", || !balancer.stats()[1].healthy).await;
    let tried_before = balancer.stats()[1].requests;
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(client.get("/later").await);
    }
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(served_by(&answers, "node-0"), 10);
    assert_eq!(served_by(&answers, "node-2"), 10);
    assert_eq!(balancer.stats()[1].requests, tried_before, "a node marked down is not even tried");

    nodes[1].restart().await;
    wait_until("node-1 is healthy again", || balancer.stats()[1].healthy).await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(client.get("/back").await);
    }
    assert_eq!(served_by(&answers, "node-1"), 10);
    balancer.shutdown().await;
}

#[tokio::test]
async fn killing_a_node_under_steady_load_fails_no_safe_request() {
    let mut nodes = start_nodes(3).await;
    let balancer = balancer_for(&nodes, None).await;
    let addr = balancer.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut client = if i % 2 == 0 { Client::http1(addr).await } else { Client::h2c(addr).await };
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(client.get("/load").await);
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    nodes[1].stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(within(c).await.unwrap());
    }
    let failed: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), answers.len());
    assert!(served_by(&answers, "node-1") > 0, "node-1 served before it was stopped");
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_node_reporting_not_serving_gets_no_traffic() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    nodes[0].health.set_service_status("", ServingStatus::NotServing).await;
    wait_until("node-0 marked down", || !balancer.stats()[0].healthy).await;
    let mut client = Client::h2c(balancer.local_addr()).await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await.node(), "node-1");
    }
    balancer.shutdown().await;
}

#[tokio::test]
async fn when_every_node_is_marked_down_they_are_still_tried() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    for node in &nodes {
        node.health.set_service_status("", ServingStatus::NotServing).await;
    }
    wait_until("both nodes marked down", || balancer.stats().iter().all(|s| !s.healthy)).await;
    let mut client = Client::http1(balancer.local_addr()).await;
    let answers = [client.get("/").await, client.get("/").await];
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_write_a_node_fails_after_it_was_sent_is_answered_with_its_outcome_unknown() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut stream = tokio::net::TcpStream::connect(balancer.local_addr()).await.unwrap();
    let post = "POST /reset HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}";
    tokio::io::AsyncWriteExt::write_all(&mut stream, post.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = within(tokio::io::AsyncReadExt::read(&mut stream, &mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("whether it took effect is unknown"), "{answer}");
    // Sent once: a POST is not sent to the other node.
    let stats = balancer.stats();
    assert_eq!(stats.iter().map(|s| s.requests).sum::<u64>(), 1, "{stats:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn with_no_backend_configured_clients_get_unavailable_at_once() {
    let balancer = Balancer::builder(fast_config()).start().await.unwrap();
    let started = Instant::now();
    let mut client = Client::http1(balancer.local_addr()).await;
    let a = client.get("/anything").await;
    assert_eq!(a.status, 503);
    assert!(!a.body.is_empty());

    let mut health = HealthClient::new(grpc_channel(&balancer));
    let err = within(health.check(HealthCheckRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(!err.message().is_empty());
    assert!(started.elapsed() < Duration::from_secs(2), "answers must not wait: {:?}", started.elapsed());
    balancer.shutdown().await;
}

#[tokio::test]
async fn with_every_node_stopped_clients_get_unavailable_quickly() {
    let mut nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    for node in &mut nodes {
        node.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let mut client = Client::h2c(balancer.local_addr()).await;
    assert_eq!(client.get("/").await.status, 503);
    let mut health = HealthClient::new(grpc_channel(&balancer));
    let err = within(health.check(HealthCheckRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let stats = balancer.stats();
    assert!(stats.iter().all(|s| s.failures > 0 && !s.healthy), "{stats:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn an_invalid_config_is_refused_with_the_field_named() {
    let config = BalancerConfig { fall: 0, ..fast_config() };
    let err = Balancer::builder(config).start().await.unwrap_err();
    assert!(err.to_string().contains("fall"), "{err}");
}
