//! The load generator: bare hyper connections (HTTP/2 for gRPC, HTTP/1.1 for
//! `/healthz`), over TCP or TLS, driving one shape of load at one target for a
//! fixed time. The same code and the same connection settings serve every target,
//! so only what sits between the client and the nodes differs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use crate::cpu;

/// Errors of the benchmark itself.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Flow-control windows of the client's HTTP/2 connections (same for every target).
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Requests each worker makes before the timed window opens.
const WARM_UP_REQUESTS: usize = 20;

/// TLS for the client: one connector per protocol (ALPN `h2` or `http/1.1`).
#[derive(Clone)]
pub(crate) struct ClientTls {
    h2: TlsConnector,
    http1: TlsConnector,
}

impl ClientTls {
    /// Trusts the certificates of `ca_pem` only.
    pub(crate) fn new(ca_pem: &[u8]) -> Result<Self, BoxError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(crypto::ring::default_provider());
        let connector = |alpn: &[u8]| -> Result<TlsConnector, BoxError> {
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsConnector::from(Arc::new(config)))
        };
        Ok(Self { h2: connector(b"h2")?, http1: connector(b"http/1.1")? })
    }
}

/// One address load goes to, over TCP or TLS.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<ClientTls>,
}

/// What one request is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call {
    /// gRPC `grpc.health.v1.Health/Check`, an empty request (HTTP/2).
    Unary,
    /// `GET /healthz` (HTTP/1.1).
    Healthz,
    /// `GET /readyz` (HTTP/1.1): 200 once a node is ready.
    Readyz,
    /// gRPC `spectrum.demo.v1.Dataflow/Download` of this many bytes (HTTP/2).
    Download(u64),
}

impl Call {
    fn h2(self) -> bool {
        matches!(self, Call::Unary | Call::Download(_))
    }

    fn request(self, endpoint: &Endpoint) -> Request<Full<Bytes>> {
        let scheme = if endpoint.tls.is_some() { "https" } else { "http" };
        let (method, path, body) = match self {
            Call::Unary => (Method::POST, "/grpc.health.v1.Health/Check", grpc_frame(&[])),
            Call::Healthz => (Method::GET, "/healthz", Bytes::new()),
            Call::Readyz => (Method::GET, "/readyz", Bytes::new()),
            Call::Download(bytes) => {
                let req = spectrum::demo::proto::DownloadRequest { bytes, chunk_bytes: 0 };
                (Method::POST, "/spectrum.demo.v1.Dataflow/Download", grpc_frame(&req.encode_to_vec()))
            }
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        if self.h2() {
            *req.uri_mut() = format!("{scheme}://{}{path}", endpoint.addr).parse().expect("a valid URI");
            let h = req.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        } else {
            *req.uri_mut() = path.parse().expect("a valid path");
            let host = HeaderValue::from_str(&endpoint.addr.to_string()).expect("a valid host");
            req.headers_mut().insert(header::HOST, host);
        }
        req
    }
}

/// A gRPC message frame: uncompressed, length-prefixed.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(message);
    frame.freeze()
}

/// One client connection.
#[derive(Clone)]
enum Sender {
    H2(http2::SendRequest<Full<Bytes>>),
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
}

async fn connect(endpoint: &Endpoint, h2: bool) -> Result<Sender, BoxError> {
    let tcp = TcpStream::connect(endpoint.addr).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = &endpoint.tls else { return handshake(tcp, h2).await };
    let connector = if h2 { &tls.h2 } else { &tls.http1 };
    let stream = connector.connect(ServerName::IpAddress(endpoint.addr.ip().into()), tcp).await?;
    handshake(stream, h2).await
}

async fn handshake<I>(io: I, h2: bool) -> Result<Sender, BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(io)
            .await?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Sender::H1(Arc::new(tokio::sync::Mutex::new(sender))))
    }
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H2(s) => s.is_closed(),
            Sender::H1(s) => s.try_lock().is_ok_and(|s| s.is_closed()),
        }
    }

    /// Sends `req` and reads the whole answer: the body's length in bytes. An HTTP
    /// status other than 200, or a gRPC status other than 0, is an error.
    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> Result<u64, BoxError> {
        let resp = match self {
            Sender::H2(s) => s.send_request(req).await?,
            Sender::H1(s) => {
                let mut s = s.lock().await;
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        read_answer(resp).await
    }
}

async fn read_answer(resp: Response<Incoming>) -> Result<u64, BoxError> {
    if resp.status() != StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status()).into());
    }
    let mut grpc_status = resp.headers().get("grpc-status").cloned();
    let grpc = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut body = resp.into_body();
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
        } else if let Some(trailers) = frame.trailers_ref() {
            grpc_status = trailers.get("grpc-status").cloned();
        }
    }
    match grpc_status {
        _ if !grpc => Ok(bytes),
        Some(status) if status == "0" => Ok(bytes),
        other => Err(format!("gRPC status {other:?}").into()),
    }
}

/// One request on a new connection: for readiness checks.
pub(crate) async fn once(endpoint: &Endpoint, call: Call) -> Result<u64, BoxError> {
    let mut sender = connect(endpoint, call.h2()).await?;
    tokio::time::timeout(Duration::from_secs(2), sender.exchange(call.request(endpoint)))
        .await
        .map_err(|_| "no answer within 2 s")?
}

/// How load is laid on connections: `connections` connections (spread over the
/// endpoints in turn), each carrying `streams` concurrent requests one after the
/// other. With one connection and several endpoints (direct to the nodes), the one
/// client opens one connection per endpoint and uses them in turn, as a round-robin
/// proxy would.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) call: Call,
    pub(crate) connections: usize,
    pub(crate) streams: usize,
}

/// What one timed round measured.
#[derive(Debug, Default)]
pub(crate) struct Round {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    /// Each completed request's latency, in nanoseconds.
    pub(crate) latencies: Vec<u64>,
    /// CPU time the proxy process used in the window, when there is one.
    pub(crate) cpu: Option<Duration>,
}

/// Runs `load` against `endpoints` for `window` (requests under way when it closes
/// finish and count), reading the CPU time of process `pid` around it.
pub(crate) async fn round(
    load: Load,
    endpoints: &[Endpoint],
    pid: Option<u32>,
    window: Duration,
) -> Result<Round, BoxError> {
    let workers = open(load, endpoints).await?;
    let gate = Arc::new(Barrier::new(workers.len() + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(workers.len());
    for senders in workers {
        let (gate, stop, endpoints) = (gate.clone(), stop.clone(), endpoints.to_vec());
        tasks.push(tokio::spawn(work(load.call, senders, endpoints, gate, stop)));
    }
    gate.wait().await;
    let cpu_before = pid.and_then(cpu::process_time);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Round::default();
    for task in tasks {
        let done = task.await??;
        total.requests += done.requests;
        total.errors += done.errors;
        total.bytes += done.bytes;
        total.first_error = total.first_error.or(done.first_error);
        total.latencies.extend(done.latencies);
    }
    total.elapsed = started.elapsed();
    total.cpu = match (cpu_before, pid.and_then(cpu::process_time)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(total)
}

/// Opens the connections of `load`; one list of connections per worker.
async fn open(load: Load, endpoints: &[Endpoint]) -> Result<Vec<Vec<(Sender, usize)>>, BoxError> {
    let h2 = load.call.h2();
    if load.connections == 1 {
        let mut senders = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            senders.push((connect(endpoint, h2).await?, i));
        }
        return Ok(vec![senders; load.streams]);
    }
    let mut workers = Vec::new();
    for c in 0..load.connections {
        let i = c % endpoints.len();
        let sender = connect(&endpoints[i], h2).await?;
        workers.extend((0..load.streams).map(|_| vec![(sender.clone(), i)]));
    }
    Ok(workers)
}

/// One worker: warms up, waits at `gate`, then sends requests one after the other
/// (cycling over its connections) until `stop`.
async fn work(
    call: Call,
    mut senders: Vec<(Sender, usize)>,
    endpoints: Vec<Endpoint>,
    gate: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> Result<Round, BoxError> {
    let warm_up = match call {
        Call::Download(_) => 1,
        _ => WARM_UP_REQUESTS,
    };
    let mut warm_error = None;
    let count = senders.len();
    for n in 0..warm_up {
        let (sender, i) = &mut senders[n % count];
        if let Err(e) = sender.exchange(call.request(&endpoints[*i])).await {
            warm_error = Some(e);
            break;
        }
    }
    // Always reached, so the round never waits for a worker that failed.
    gate.wait().await;
    if let Some(e) = warm_error {
        return Err(format!("warm-up failed: {e}").into());
    }
    let mut done = Round::default();
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        let (sender, i) = &mut senders[next % count];
        next += 1;
        let started = Instant::now();
        match sender.exchange(call.request(&endpoints[*i])).await {
            Ok(bytes) => {
                done.requests += 1;
                done.bytes += bytes;
                done.latencies.push(started.elapsed().as_nanos() as u64);
            }
            Err(e) => {
                done.errors += 1;
                done.first_error.get_or_insert_with(|| e.to_string());
                if sender.is_closed() {
                    break;
                }
            }
        }
    }
    Ok(done)
}
