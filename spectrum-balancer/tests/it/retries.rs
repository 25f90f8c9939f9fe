//! Retries after failure, passive ejection, and the balancer's limits on requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use spectrum_balancer::{BalancerConfig, PathMatcher};
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

/// `fast_config` with the health `Check` call marked idempotent.
fn idempotent_check() -> BalancerConfig {
    BalancerConfig {
        idempotent: vec![PathMatcher::grpc_method("grpc.health.v1.Health", "Check")],
        ..fast_config()
    }
}

fn demo_check() -> HealthCheckRequest {
    HealthCheckRequest { service: "demo".into() }
}

#[tokio::test]
async fn killing_a_node_under_steady_grpc_load_fails_no_idempotent_call() {
    let _ =
        tracing_subscriber::fmt().with_test_writer().with_env_filter("spectrum_balancer=debug").try_init();
    let mut nodes = start_nodes(3).await;
    let balancer = balancer_with(idempotent_check(), &nodes, None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            let channel = grpc_channel(&balancer);
            tokio::spawn(async move {
                let mut health = HealthClient::new(channel);
                let (mut ok, mut failed, mut by_node_1) = (0, Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    match within(health.check(demo_check())).await {
                        Ok(resp) if resp.get_ref().status == WireStatus::Serving as i32 => {
                            ok += 1;
                            by_node_1 += usize::from(grpc_node(&resp) == "node-1");
                        }
                        Ok(resp) => failed.push(format!("status {}", resp.get_ref().status)),
                        Err(status) => failed.push(format!("{status:?}")),
                    }
                }
                (ok, failed, by_node_1)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Abort the server task: connections close at once, calls in flight break.
    nodes[1].stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed, mut by_node_1) = (0, Vec::new(), 0);
    for c in clients {
        let (o, f, n) = within(c).await.unwrap();
        ok += o;
        failed.extend(f);
        by_node_1 += n;
    }
    assert!(failed.is_empty(), "{} of {} calls failed: {failed:?}", failed.len(), ok + failed.len());
    assert!(ok > 100, "steady load: only {ok} calls");
    assert!(by_node_1 > 0, "node-1 served before it was killed");
    let stats = balancer.stats();
    assert!(!stats[1].healthy, "the killed node is out: {stats:?}");
    eprintln!("{ok} calls, retried after failure: {}", stats[1].retries);
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_node_answering_unavailable_is_ejected_and_its_idempotent_calls_go_elsewhere() {
    let nodes = start_nodes(3).await;
    let config = BalancerConfig { eject_after_failures: 1, ..idempotent_check() };
    let balancer = balancer_with(config, &nodes, None).await;
    nodes[0].unavailable.store(true, Ordering::Relaxed);
    let mut health = HealthClient::new(grpc_channel(&balancer));
    let mut served = Vec::new();
    for _ in 0..30 {
        let resp = within(health.check(demo_check())).await.expect("retried on a good node");
        assert_eq!(resp.get_ref().status, WireStatus::Serving as i32, "the request body was replayed intact");
        served.push(grpc_node(&resp));
    }
    assert!(!served.iter().any(|n| n == "node-0"), "{served:?}");
    let stats = balancer.stats();
    assert!(stats[0].retries >= 1 && stats[0].failures >= 1, "{stats:?}");
    assert!(stats[0].requests <= 3, "an ejected node gets no more requests: {stats:?}");

    // Once it answers again, it comes back after its backoff and passing health checks.
    nodes[0].unavailable.store(false, Ordering::Relaxed);
    wait_until("node-0 re-admitted", || balancer.stats()[0].healthy).await;
    let mut served = Vec::new();
    for _ in 0..30 {
        served.push(grpc_node(&within(health.check(demo_check())).await.unwrap()));
    }
    assert_eq!(served.iter().filter(|n| *n == "node-0").count(), 10, "{served:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn calls_not_marked_idempotent_get_the_unavailable_answer() {
    let nodes = start_nodes(2).await;
    let config = BalancerConfig { eject_after_failures: 1, ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    nodes[0].unavailable.store(true, Ordering::Relaxed);
    let mut health = HealthClient::new(grpc_channel(&balancer));
    // Round robin: the first call goes to node-0, which is not retried.
    let err = within(health.check(demo_check())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    // node-0 is now ejected: the following calls succeed on node-1.
    for _ in 0..4 {
        let resp = within(health.check(demo_check())).await.unwrap();
        assert_eq!(grpc_node(&resp), "node-1");
    }
    assert!(balancer.stats()[0].ejected);
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_refused_clearly() {
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { max_request_body: Some(1_024), ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;

    // HTTP/1.1 with a content length: refused before anything is sent.
    let io = TokioIo::new(tokio::net::TcpStream::connect(balancer.local_addr()).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/upload")
        .header("host", "balancer.test")
        .body(Full::new(Bytes::from(vec![b'x'; 4_096])))
        .unwrap();
    let resp = within(sender.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 413);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("larger"), "{body:?}");

    // gRPC, streamed without a length: RESOURCE_EXHAUSTED.
    let mut health = HealthClient::new(grpc_channel(&balancer));
    let big = HealthCheckRequest { service: "s".repeat(4_096) };
    let err = within(health.check(big)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // Small requests still pass.
    assert!(within(health.check(demo_check())).await.is_ok());
    balancer.shutdown().await;
}

/// A balancer that ejects a node at its first failure, for longer than a
/// test runs: any failure counted against a node shows.
fn one_failure_ejects() -> BalancerConfig {
    BalancerConfig {
        eject_after_failures: 1,
        ejection_backoff: Duration::from_secs(60),
        max_ejection_backoff: Duration::from_secs(60),
        ..fast_config()
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_the_clients_fault_and_never_eject_a_node() {
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { max_request_body: Some(1_024), ..one_failure_ejects() };
    let balancer = balancer_with(config, &nodes, None).await;
    // Streamed without a length: the limit is found while the body goes to the node.
    let mut health = HealthClient::new(grpc_channel(&balancer));
    for _ in 0..5 {
        let big = HealthCheckRequest { service: "s".repeat(4_096) };
        let err = within(health.check(big)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    }
    let stats = balancer.stats();
    assert!(stats.iter().all(|b| !b.ejected && b.failures == 0), "{stats:?}");
    assert!(within(health.check(demo_check())).await.is_ok());
    balancer.shutdown().await;
}

#[tokio::test]
async fn headers_over_the_limit_are_answered_431_and_never_reach_or_eject_a_node() {
    let nodes = start_nodes(1).await;
    let config = one_failure_ejects();
    let balancer = balancer_with(config, &nodes, None).await;
    // 64 KiB over HTTP/1.1: a node (16 KiB, as hyper's servers) would close its
    // whole connection to the balancer for it. 20 KiB over h2c: under what the
    // balancer announces to HTTP/2 clients (twice its limit), over its limit.
    let huge = "a".repeat(64 * 1024);
    let large = "b".repeat(20 * 1024);
    let mut http1 = Client::http1(balancer.local_addr()).await;
    let mut h2c = Client::h2c(balancer.local_addr()).await;
    for _ in 0..5 {
        let a = http1.get_with("/big-headers", &[("x-big", &huge)]).await;
        assert_eq!(a.status.as_u16(), 431, "{a:?}");
        assert!(a.body.contains("over the balancer's limit of 16384 bytes"), "{a:?}");
        assert_eq!(a.header("x-spectrum-balancer"), "local", "{a:?}");
        let a = h2c.get_with("/big-headers", &[("x-big", &large)]).await;
        assert_eq!(a.status.as_u16(), 431, "{a:?}");
    }
    let mut health = HealthClient::new(grpc_channel(&balancer));
    let mut big = tonic::Request::new(demo_check());
    big.metadata_mut().insert("x-big", large.parse().unwrap());
    let err = within(health.check(big)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("headers"), "{err:?}");
    let stats = balancer.stats();
    assert!(stats.iter().all(|b| !b.ejected && b.failures == 0 && b.requests == 0), "{stats:?}");
    // Just under the limit goes through, on the same connections.
    let fits = "c".repeat(12 * 1024);
    assert_eq!(http1.get_with("/fits", &[("x-big", &fits)]).await.status.as_u16(), 200);
    assert_eq!(h2c.get_with("/fits", &[("x-big", &fits)]).await.status.as_u16(), 200);
    assert!(within(health.check(demo_check())).await.is_ok());
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_backend_slower_than_the_request_timeout_is_answered_with_a_timeout() {
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { request_timeout: Some(Duration::from_millis(100)), ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    let mut client = Client::h2c(balancer.local_addr()).await;
    let a = client.get("/slow").await;
    assert_eq!(a.status, 504, "{a:?}");
    assert!(a.body.contains("in time"), "{a:?}");
    assert_eq!(client.get("/fast").await.status, 200);
    balancer.shutdown().await;
}
