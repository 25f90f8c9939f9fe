//! Test backends (small h2c servers with `grpc.health.v1`), clients, and helpers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use spectrum_balancer::{BackendConfig, Balancer, BalancerConfig, BalancerHandle, BalancingStrategy};
use spectrum_core::NodeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Service;

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How long any wait in these tests may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A backend node: an HTTP/2-only (h2c) server that
/// - serves `grpc.health.v1` (tonic-health), adding `x-node: NAME` to its answers;
/// - answers `/trailers` with a body and the trailer `x-trailer: NAME`;
/// - answers `/slow` after 500 ms;
/// - answers anything else with `x-node: NAME`, and a body `NAME METHOD PATH?QUERY`,
///   and echoes what it saw of `x-forwarded-for`, `te`, `connection`, `host` in
///   `x-seen-*` headers;
/// - while [`unavailable`](Self::unavailable) is set, answers every proxied request
///   (one with `x-forwarded-for`) with a trailers-only gRPC `UNAVAILABLE`, yet still
///   passes the balancer's own health checks;
/// - while [`not_ready`](Self::not_ready) is set, refuses every proxied request as
///   a node that is not ready does, before reading its body: gRPC `UNAVAILABLE`
///   (trailers-only) or HTTP 503, marked `spectrum-refused: not-ready`;
/// - answers `/echo` with the request's body (and counts it in
///   [`echoed`](Self::echoed));
/// - resets the stream of `/reset` (`INTERNAL_ERROR`) without answering;
/// - answers `/api/v1/balancer` as a node's HTTP API does, admitting one
///   token, `viewer-token` (`401` for any other or none).
pub(crate) struct TestNode {
    pub(crate) name: String,
    pub(crate) id: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) health: HealthReporter,
    pub(crate) unavailable: Arc<AtomicBool>,
    pub(crate) not_ready: Arc<AtomicBool>,
    /// Requests this node answered on `/echo`.
    pub(crate) echoed: Arc<AtomicUsize>,
    /// Connections open now that carried a proxied request (the balancer's
    /// upstream connections, not its health checks).
    pub(crate) proxied_connections: Arc<AtomicUsize>,
    server: Option<JoinHandle<()>>,
}

impl TestNode {
    pub(crate) async fn start(name: &str) -> TestNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, listener).await
    }

    /// Serves again on the same port after [`stop`](Self::stop).
    pub(crate) async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let fresh = Self::serve(&self.name, listener).await;
        *self = fresh;
    }

    async fn serve(name: &str, listener: TcpListener) -> TestNode {
        let addr = listener.local_addr().unwrap();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("demo", ServingStatus::Serving).await;
        let node_name: Arc<str> = Arc::from(name);
        let unavailable = Arc::new(AtomicBool::new(false));
        let flag = unavailable.clone();
        let not_ready = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicUsize::new(0));
        let (refusing, echoes) = (not_ready.clone(), echoed.clone());
        let proxied_connections = Arc::new(AtomicUsize::new(0));
        let open_proxied = proxied_connections.clone();
        let server = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let node_name = node_name.clone();
                let health_service = health_service.clone();
                let flag = flag.clone();
                let (refusing, echoes) = (refusing.clone(), echoes.clone());
                let counted = CountedOnce::new(&open_proxied);
                connections.spawn(async move {
                    let counted = Arc::new(counted);
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let node_name = node_name.clone();
                        let mut health_service = health_service.clone();
                        let proxied = req.headers().contains_key("x-forwarded-for");
                        if proxied {
                            counted.count();
                        }
                        let refuse = flag.load(Ordering::Relaxed) && proxied;
                        let not_ready = refusing.load(Ordering::Relaxed) && proxied;
                        let echoes = echoes.clone();
                        async move {
                            let mut resp: Response<Body> = if not_ready {
                                refuse_not_ready(&req)
                            } else if refuse {
                                let mut resp = Response::new(full(""));
                                resp.headers_mut()
                                    .insert("content-type", "application/grpc".parse().unwrap());
                                resp.headers_mut().insert("grpc-status", "14".parse().unwrap());
                                resp
                            } else if req.uri().path().starts_with("/grpc.health.v1.Health/") {
                                let resp = health_service.call(req).await.unwrap();
                                resp.map(|b| b.map_err(Into::into).boxed_unsync())
                            } else if req.uri().path() == "/api/v1/balancer" {
                                // As a node's HTTP API: one token admitted.
                                let admitted = req
                                    .headers()
                                    .get("authorization")
                                    .is_some_and(|v| v == "Bearer viewer-token");
                                let mut resp =
                                    Response::new(full(if admitted { "{}" } else { "{\"error\":{}}" }));
                                if !admitted {
                                    *resp.status_mut() = StatusCode::UNAUTHORIZED;
                                }
                                resp
                            } else if req.uri().path() == "/reset" {
                                // The service fails: hyper resets the stream
                                // (INTERNAL_ERROR) before any response.
                                return Err(std::io::Error::other("the node failed this request on purpose"));
                            } else if req.uri().path() == "/echo" {
                                echoes.fetch_add(1, Ordering::Relaxed);
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                Response::new(full(body))
                            } else {
                                answer(&node_name, req).await
                            };
                            resp.headers_mut().insert("x-node", node_name.parse().unwrap());
                            Ok::<_, std::io::Error>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TestNode {
            name: name.to_owned(),
            id: name.parse().unwrap(),
            addr,
            health,
            unavailable,
            not_ready,
            echoed,
            proxied_connections,
            server: Some(server),
        }
    }

    /// Closes the listener and every open connection, as a killed process would.
    pub(crate) async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    pub(crate) fn backend(&self) -> BackendConfig {
        BackendConfig::new(self.id.clone(), self.addr)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Counts one connection in a shared figure from its first [`count`](Self::count)
/// until dropped (with its connection's task, however that ends).
struct CountedOnce {
    open: Arc<AtomicUsize>,
    counted: AtomicBool,
}

impl CountedOnce {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        Self { open: open.clone(), counted: AtomicBool::new(false) }
    }

    fn count(&self) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.open.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for CountedOnce {
    fn drop(&mut self) {
        if *self.counted.get_mut() {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A not-ready node's refusal, made before reading the request's body.
fn refuse_not_ready(req: &Request<Incoming>) -> Response<Body> {
    let grpc =
        req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut resp = if grpc {
        let mut resp = Response::new(full(""));
        resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
        resp.headers_mut().insert("grpc-status", "14".parse().unwrap());
        resp.headers_mut().insert("grpc-message", "node-0 is catching up with the cluster".parse().unwrap());
        resp
    } else {
        let mut resp = Response::new(full("not ready"));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        resp
    };
    spectrum_balancer::refusal::mark_not_ready(resp.headers_mut());
    resp
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|never| match never {}).boxed_unsync()
}

async fn answer(node: &str, req: Request<Incoming>) -> Response<Body> {
    let pq = req.uri().path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_default();
    match req.uri().path() {
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-trailer", node.parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = vec![
                Ok(Frame::data(Bytes::from_static(b"chunk-1 "))),
                Ok(Frame::data(Bytes::from_static(b"chunk-2"))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::new(StreamBody::new(futures::stream::iter(frames)).boxed_unsync())
        }
        "/big" => {
            // 64 MiB, streamed in 1 MiB chunks as the reader takes them.
            let chunks = futures::StreamExt::map(futures::stream::iter(0..64), |_| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(vec![
                    b'x';
                    1 << 20
                ])))
            });
            Response::new(StreamBody::new(chunks).boxed_unsync())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Response::new(full(format!("{node} slow")))
        }
        // Twelve lines, 100 ms apart: a stream that outlasts short idle timeouts.
        "/trickle" => {
            let lines = futures::StreamExt::then(futures::stream::iter(0..12), |i| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(format!(
                    "line {i}\n"
                ))))
            });
            Response::new(StreamBody::new(lines).boxed_unsync())
        }
        // Answered only after a minute: longer than any test waits.
        "/hold" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Response::new(full(format!("{node} held")))
        }
        _ => {
            let mut resp = Response::new(full(format!("{node} {} {pq}", req.method())));
            for (seen, name) in [
                ("x-seen-xff", "x-forwarded-for"),
                ("x-seen-te", "te"),
                ("x-seen-connection", "connection"),
                ("x-seen-host", "host"),
                ("x-seen-x-private", "x-private"),
            ] {
                let value = req.headers().get(name).cloned().unwrap_or_else(|| "-".parse().unwrap());
                resp.headers_mut().insert(seen, value);
            }
            resp
        }
    }
}

/// A balancer config with fast health checks, so tests take well under a second per step.
pub(crate) fn fast_config() -> BalancerConfig {
    BalancerConfig {
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_millis(500),
        ejection_backoff: Duration::from_millis(200),
        max_ejection_backoff: Duration::from_secs(1),
        ..BalancerConfig::default()
    }
}

pub(crate) async fn start_nodes(n: usize) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(TestNode::start(&format!("node-{i}")).await);
    }
    nodes
}

/// A balancer in front of `nodes`, returned once every node is healthy.
pub(crate) async fn balancer_for(
    nodes: &[TestNode],
    strategy: Option<Arc<dyn BalancingStrategy>>,
) -> BalancerHandle {
    balancer_with(fast_config(), nodes, strategy).await
}

/// A balancer with `config` in front of `nodes`, returned once every node is healthy.
pub(crate) async fn balancer_with(
    config: BalancerConfig,
    nodes: &[TestNode],
    strategy: Option<Arc<dyn BalancingStrategy>>,
) -> BalancerHandle {
    let mut builder = Balancer::builder(config).backends(nodes.iter().map(TestNode::backend).collect());
    if let Some(s) = strategy {
        builder = builder.strategy(s);
    }
    let balancer = builder.start().await.unwrap();
    let want = nodes.len();
    wait_until("every node healthy", || balancer.stats().iter().filter(|s| s.healthy).count() == want).await;
    balancer
}

/// Polls `cond` every 20 ms until it holds, failing the test after [`PATIENCE`].
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails the test if `fut` takes longer than [`PATIENCE`].
pub(crate) async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.expect("took too long")
}

/// A response read to the end.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) version: http::Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
    pub(crate) trailers: Option<HeaderMap>,
}

impl Answer {
    pub(crate) fn node(&self) -> &str {
        self.headers.get("x-node").and_then(|v| v.to_str().ok()).unwrap_or("-")
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    async fn read(resp: Response<Incoming>) -> Answer {
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        Answer {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            trailers,
        }
    }
}

/// A client on one connection, speaking HTTP/1.1 or h2c (prior knowledge).
pub(crate) enum Client {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    pub(crate) async fn http1(addr: SocketAddr) -> Client {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Client::Http1(sender)
    }

    pub(crate) async fn h2c(addr: SocketAddr) -> Client {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        Client::Http2(sender)
    }

    /// Sends `GET path` with extra `headers` and reads the whole answer.
    pub(crate) async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut builder = Request::get(path);
        if let Client::Http2(_) = self {
            builder = Request::get(format!("http://balancer{path}"));
        } else {
            builder = builder.header("host", "balancer.test");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(Empty::new()).unwrap();
        let resp = within(async {
            match self {
                Client::Http1(s) => {
                    s.ready().await.unwrap();
                    s.send_request(req).await
                }
                Client::Http2(s) => {
                    s.ready().await.unwrap();
                    s.send_request(req).await
                }
            }
        })
        .await
        .unwrap();
        within(Answer::read(resp)).await
    }

    pub(crate) async fn get(&mut self, path: &str) -> Answer {
        self.get_with(path, &[]).await
    }
}

/// Counts how many of `answers` each node served.
pub(crate) fn served_by(answers: &[Answer], node: &str) -> usize {
    answers.iter().filter(|a| a.node() == node).count()
}

/// A gRPC channel to the balancer.
pub(crate) fn grpc_channel(balancer: &BalancerHandle) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(balancer.url()).unwrap().connect_lazy()
}

/// The node that answered a gRPC call (its `x-node` metadata).
pub(crate) fn grpc_node<T>(resp: &tonic::Response<T>) -> String {
    resp.metadata().get("x-node").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned()
}
