//! A node's not-ready refusal (marked `spectrum-refused: not-ready`), and a
//! stream a node refused unprocessed (HTTP/2 `REFUSED_STREAM`, or left out by its
//! `GOAWAY`), are sent to another node, whatever the request: nothing ran.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use spectrum_balancer::{BackendConfig, Balancer, BalancerConfig};
use tokio::net::{TcpListener, TcpStream};
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

/// The balancer's `spectrum_balancer_not_ready_retries_total`.
fn not_ready_retries(balancer: &spectrum_balancer::BalancerHandle) -> u64 {
    let text = balancer.metrics_text();
    let line = text.lines().find(|l| l.starts_with("spectrum_balancer_not_ready_retries_total "));
    line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).expect("the counter is exported")
}

/// POSTs `body` to `/echo` over `sender` and returns the status, the answering node
/// and the body.
async fn post_echo<S>(sender: &mut S, uri: &str, body: &'static [u8]) -> (u16, String, Bytes)
where
    S: PostSender,
{
    let req = http::Request::post(uri)
        .header("host", "balancer.test")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let resp = within(sender.post(req)).await;
    let status = resp.status().as_u16();
    let node = resp.headers().get("x-node").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let bytes = within(resp.into_body().collect()).await.unwrap().to_bytes();
    (status, node, bytes)
}

/// An HTTP/1.1 or HTTP/2 client connection that sends bodies.
trait PostSender {
    async fn post(&mut self, req: http::Request<Full<Bytes>>) -> http::Response<hyper::body::Incoming>;
}

impl PostSender for hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    async fn post(&mut self, req: http::Request<Full<Bytes>>) -> http::Response<hyper::body::Incoming> {
        self.ready().await.unwrap();
        self.send_request(req).await.unwrap()
    }
}

impl PostSender for hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    async fn post(&mut self, req: http::Request<Full<Bytes>>) -> http::Response<hyper::body::Incoming> {
        self.ready().await.unwrap();
        self.send_request(req).await.unwrap()
    }
}

#[tokio::test]
async fn a_call_refused_by_a_node_that_is_not_ready_is_sent_to_another_even_if_not_idempotent() {
    let nodes = start_nodes(2).await;
    // Nothing is idempotent here, and passive ejection is off, so node-0 keeps being
    // picked (round robin: every other request) and keeps refusing.
    let config = BalancerConfig { eject_after_failures: u32::MAX, ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    nodes[0].not_ready.store(true, Ordering::Relaxed);

    let mut health = HealthClient::new(grpc_channel(&balancer));
    for i in 0..6 {
        let call = within(health.check(HealthCheckRequest { service: "demo".into() })).await;
        let resp = call.unwrap_or_else(|status| panic!("call {i} failed: {status:?}"));
        assert_eq!(
            resp.get_ref().status,
            WireStatus::Serving as i32,
            "the request body reached node-1 intact"
        );
        assert_eq!(grpc_node(&resp), "node-1");
    }

    let body: &'static [u8] = b"a non-idempotent request body";
    let io = TokioIo::new(TcpStream::connect(balancer.local_addr()).await.unwrap());
    let (mut http1, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let io = TokioIo::new(TcpStream::connect(balancer.local_addr()).await.unwrap());
    let (mut http2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        assert_eq!(
            post_echo(&mut http1, "/echo", body).await,
            (200, "node-1".into(), Bytes::from_static(body))
        );
        let answer = post_echo(&mut http2, "http://balancer.test/echo", body).await;
        assert_eq!(answer, (200, "node-1".into(), Bytes::from_static(body)));
    }

    assert_eq!(nodes[0].echoed.load(Ordering::Relaxed), 0, "node-0 ran nothing");
    assert_eq!(nodes[1].echoed.load(Ordering::Relaxed), 6);
    let refused = not_ready_retries(&balancer);
    assert!(refused >= 6, "about every other request went to node-0 first: {refused}");
    assert!(balancer.stats()[0].requests >= 6, "{:?}", balancer.stats());
    balancer.shutdown().await;
}

#[tokio::test]
async fn when_every_node_refuses_as_not_ready_the_client_gets_the_last_refusal_once_each_was_tried() {
    let nodes = start_nodes(3).await;
    let config = BalancerConfig { eject_after_failures: u32::MAX, ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    for node in &nodes {
        node.not_ready.store(true, Ordering::Relaxed);
    }
    let mut health = HealthClient::new(grpc_channel(&balancer));
    let err = within(health.check(HealthCheckRequest { service: "demo".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("catching up"), "the node's own refusal is passed on: {err:?}");
    assert_eq!(err.metadata().get("spectrum-refused").unwrap(), "not-ready");
    assert_eq!(not_ready_retries(&balancer), 2, "each of the other two nodes was tried once");
    assert_eq!(balancer.stats_service().stats().not_ready_retries, 2, "the figures say so too");
    let sent: u64 = balancer.stats().iter().map(|s| s.requests).sum();
    assert_eq!(sent, 3, "one attempt per node: {:?}", balancer.stats());

    let mut client = Client::h2c(balancer.local_addr()).await;
    let answer = client.get("/anything").await;
    assert_eq!((answer.status.as_u16(), answer.body.as_str()), (503, "not ready"));
    balancer.shutdown().await;
}

/// A node that answers gRPC health checks (serving) and refuses every other
/// stream unprocessed, with `RST_STREAM` `REFUSED_STREAM` (RFC 9113 §8.7), as a
/// server shedding load may; counts the refusals. Its address.
async fn refusing_node(refused: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let refused = refused.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else { return };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    if request.uri().path() != "/grpc.health.v1.Health/Check" {
                        refused.fetch_add(1, Ordering::Relaxed);
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let head = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let Ok(mut stream) = respond.send_response(head, false) else { continue };
                    // HealthCheckResponse { status: SERVING }, in its gRPC frame.
                    let _ = stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]), false);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let _ = stream.send_trailers(trailers);
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_request_a_node_refused_unprocessed_is_sent_to_another_even_if_not_idempotent() {
    let nodes = start_nodes(1).await;
    let refused = Arc::new(AtomicUsize::new(0));
    let refusing = BackendConfig::new("node-refusing".parse().unwrap(), refusing_node(refused.clone()).await);
    // Nothing is idempotent here, and passive ejection is off: round robin keeps
    // picking the refusing node for every other request.
    let config = BalancerConfig { eject_after_failures: u32::MAX, ..fast_config() };
    let balancer =
        Balancer::builder(config).backends(vec![refusing, nodes[0].backend()]).start().await.unwrap();
    wait_until("both nodes healthy", || balancer.stats().iter().filter(|s| s.healthy).count() == 2).await;

    let body: &'static [u8] = b"a non-idempotent request body";
    let io = TokioIo::new(TcpStream::connect(balancer.local_addr()).await.unwrap());
    let (mut http2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let io = TokioIo::new(TcpStream::connect(balancer.local_addr()).await.unwrap());
    let (mut http1, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let answer = post_echo(&mut http2, "http://balancer.test/echo", body).await;
        assert_eq!(answer, (200, "node-0".into(), Bytes::from_static(body)));
        assert_eq!(
            post_echo(&mut http1, "/echo", body).await,
            (200, "node-0".into(), Bytes::from_static(body))
        );
    }
    assert_eq!(nodes[0].echoed.load(Ordering::Relaxed), 6, "each request ran once, on node-0");
    let refusals = refused.load(Ordering::Relaxed);
    assert!(refusals >= 2, "about every other request went to the refusing node first: {refusals}");
    balancer.shutdown().await;
}
