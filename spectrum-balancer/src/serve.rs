//! Serving client connections: one acceptor on the runtime that started the
//! balancer, and [`BalancerConfig::workers`] threads that each run a
//! single-threaded tokio runtime and serve the connections handed to them.
//!
//! A connection's first bytes (or its TLS ALPN) say what it speaks: the HTTP/2
//! preface (RFC 9113 §3.4) goes to [`H2Connection`], anything else to hyper's
//! HTTP/1.1 server. A request is read from its client, forwarded on one of the
//! worker's own connections to the backend, and answered, all on one thread: no task moves
//! between threads and no wake-up crosses one (each worker has its own
//! [`Proxy`], whose `worker` index picks the worker's upstream connections). The
//! per-backend load figures and the strategies are shared by every worker
//! (atomics), so in-flight counts and latency averages cover the whole balancer.
//!
//! [`BalancerConfig::workers`]: crate::BalancerConfig::workers

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::body::{ClientBody, ProxyBody};
use crate::config::BalancerConfig;
use crate::error::{BalancerError, BoxError};
use crate::h2_server::H2Connection;
use crate::pool::Pool;
use crate::proxy::Proxy;
use crate::tls::SharedAcceptor;

/// How client connections are bounded (from [`BalancerConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_concurrent_streams: u32,
    /// What an HTTP/2 client is told it may send as a header section: twice
    /// [`BalancerConfig::max_request_headers`], so that a request over the
    /// balancer's limit (but not far over) reaches it and gets its clear `431`
    /// (`h2` refuses a stream over the announced size with `REFUSED_STREAM`,
    /// which clients take as "try again").
    max_header_list_size: u32,
    grace: Duration,
}

impl ConnectionLimits {
    pub(crate) fn of(config: &BalancerConfig) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            max_concurrent_streams: config.max_concurrent_streams,
            max_header_list_size: u32::try_from(config.max_request_headers.saturating_mul(2))
                .unwrap_or(u32::MAX),
            grace: config.shutdown_grace,
        }
    }
}

/// Client connections open across every worker, held against
/// [`BalancerConfig::max_connections`](crate::BalancerConfig::max_connections).
#[derive(Debug, Default)]
struct Open {
    count: AtomicUsize,
}

/// Counts one client connection as open, overall and on its worker, until dropped.
#[derive(Debug)]
struct OpenGuard {
    open: Arc<Open>,
    on_worker: Arc<AtomicUsize>,
}

impl OpenGuard {
    fn new(open: &Arc<Open>, on_worker: &Arc<AtomicUsize>) -> Self {
        open.count.fetch_add(1, Ordering::AcqRel);
        on_worker.fetch_add(1, Ordering::Relaxed);
        Self { open: open.clone(), on_worker: on_worker.clone() }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.on_worker.fetch_sub(1, Ordering::Relaxed);
        self.open.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client connection on its way from the acceptor to a worker.
struct Accepted {
    /// Taken out of the acceptor's runtime, registered again in the worker's.
    stream: std::net::TcpStream,
    client: SocketAddr,
    /// The listener's TLS as it was when the connection was accepted.
    tls: Option<TlsAcceptor>,
    guard: OpenGuard,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("client", &self.client)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// One worker thread, as the acceptor sees it.
#[derive(Debug)]
struct Worker {
    queue: mpsc::UnboundedSender<Accepted>,
    /// Client connections this worker serves.
    open: Arc<AtomicUsize>,
    /// Fires when the worker's runtime has stopped.
    done: Option<oneshot::Receiver<()>>,
    /// Stops the worker at once, open connections included (dropped with `Workers`).
    abort: Option<oneshot::Sender<()>>,
}

/// The worker threads. Dropping this stops them at once; [`finish`](Self::finish)
/// waits for them to end on their own (after a graceful shutdown).
#[derive(Debug)]
pub(crate) struct Workers {
    workers: Vec<Worker>,
    open: Arc<Open>,
}

impl Workers {
    /// Starts `count` workers (at least one), worker `i` forwarding with
    /// `proxy_for(i)`; they stop serving when `shutdown` turns true, after letting
    /// open requests finish for up to the grace period.
    ///
    /// # Errors
    ///
    /// [`BalancerError::Worker`] when a runtime or thread cannot be started (the
    /// workers already started are stopped).
    pub(crate) fn start(
        count: usize,
        limits: ConnectionLimits,
        shutdown: &watch::Receiver<bool>,
        proxy_for: impl Fn(usize) -> Arc<Proxy>,
    ) -> Result<Self, BalancerError> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| BalancerError::Worker { worker: index, source })?;
            let (queue, incoming) = mpsc::unbounded_channel();
            let (done_tx, done) = oneshot::channel();
            let (abort, aborted) = oneshot::channel::<()>();
            let (proxy, shutdown) = (proxy_for(index), shutdown.clone());
            std::thread::Builder::new()
                .name(format!("spectrum-balancer-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        tokio::select! {
                            () = worker_loop(incoming, proxy, limits, shutdown) => {}
                            _ = aborted => {}
                        }
                    });
                    // Dropping the runtime cancels whatever the worker still served.
                    drop(runtime);
                    let _ = done_tx.send(());
                })
                .map_err(|source| BalancerError::Worker { worker: index, source })?;
            workers.push(Worker { queue, open: Arc::default(), done: Some(done), abort: Some(abort) });
        }
        Ok(Self { workers, open: Arc::default() })
    }

    /// Hands a client connection to the worker serving the fewest.
    fn dispatch(&self, stream: TcpStream, client: SocketAddr, tls: Option<TlsAcceptor>) {
        let Some(worker) = self.workers.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)) else {
            return;
        };
        let guard = OpenGuard::new(&self.open, &worker.open);
        match stream.into_std() {
            Ok(stream) => {
                // A worker that is gone drops the connection (and its guard) with the message.
                let _ = worker.queue.send(Accepted { stream, client, tls, guard });
            }
            Err(error) => debug!(%client, %error, "cannot hand a client connection to a worker"),
        }
    }

    /// Waits for every worker to stop (each does once shutdown is signalled and its
    /// connections are done or the grace period is over).
    async fn finish(&mut self) {
        for worker in &mut self.workers {
            if let Some(done) = worker.done.take() {
                let _ = done.await;
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(abort) = worker.abort.take() {
                let _ = abort.send(());
            }
        }
    }
}

/// The HTTP/1.1 server settings every HTTP/1.1 client connection is served with
/// (HTTP/2 connections are served by [`H2Connection`]).
fn http1_server(limits: ConnectionLimits) -> http1::Builder {
    let mut server = http1::Builder::new();
    server.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    server
}

/// One worker: serves the connections handed to it until shutdown (then lets them
/// finish for up to the grace period) or until the acceptor is gone, and drops its
/// copy of the pool's snapshot as soon as a newer one is published.
async fn worker_loop(
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
    proxy: Arc<Proxy>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let server = Arc::new(http1_server(limits));
    let mut connections = JoinSet::new();
    let mut changes = proxy.pool.changes();
    let mut watching = true;
    loop {
        tokio::select! {
            // A new snapshot: drop this worker's stale copy at once, so a removed
            // backend's connections close without waiting for a request here.
            changed = changes.changed(), if watching => match changed {
                Ok(()) => proxy.snapshot.forget_if_stale(&proxy.pool),
                Err(_) => watching = false,
            },
            accepted = incoming.recv() => match accepted {
                Some(accepted) => {
                    connections.spawn(serve_accepted(accepted, server.clone(), proxy.clone(), shutdown.clone(), limits));
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    let drained =
        tokio::time::timeout(limits.grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        debug!(open = connections.len(), "grace period over; closing connections");
        connections.shutdown().await;
    }
}

/// Serves a connection handed to this worker, counted as open until it ends.
async fn serve_accepted(
    accepted: Accepted,
    server: Arc<http1::Builder>,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let Accepted { stream, client, tls, guard: _guard } = accepted;
    match TcpStream::from_std(stream) {
        Ok(stream) => accept_connection(server, tls, stream, client, proxy, shutdown, limits).await,
        Err(error) => debug!(%client, %error, "cannot serve a client connection"),
    }
}

/// Longest pause after a failed `accept` (out of file descriptors, say): the
/// pause doubles from 10 ms up to this, so a failing accept neither spins nor
/// floods the log.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts client connections and hands them to `workers` until `shutdown`
/// turns true; then waits for the workers to finish. A connection beyond the
/// limit is refused: closed at once, and counted in `pool`'s counters.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<SharedAcceptor>>,
    mut workers: Workers,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    pool: Arc<Pool>,
) {
    let open = workers.open.clone();
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    backoff = Duration::ZERO;
                    let now_open = open.count.load(Ordering::Acquire);
                    if now_open >= limits.max_connections {
                        refuse(stream, client, now_open, &pool);
                        continue;
                    }
                    workers.dispatch(stream, client, tls.as_ref().map(|t| t.current()));
                }
                Err(error) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    let open = open.count.load(Ordering::Relaxed);
                    if backoff < MAX_ACCEPT_BACKOFF || open % 64 == 0 {
                        warn!(%error, open, pause_ms = backoff.as_millis() as u64, "accept failed");
                    }
                    tokio::time::sleep(backoff).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    debug!(open = open.count.load(Ordering::Relaxed), "no longer accepting; waiting for open connections");
    workers.finish().await;
}

/// Refuses a connection over the limit: closes it at once (the client reads
/// the end of the connection, or a reset if it had sent something) and counts
/// it. The log says
/// so for the 1st, 2nd, 4th, 8th … refusal, then every 1,024th: a flood
/// neither goes unseen nor floods the log.
fn refuse(stream: TcpStream, client: SocketAddr, open: usize, pool: &Pool) {
    let refused = pool.counters.connections_refused.fetch_add(1, Ordering::Relaxed) + 1;
    if refused.is_power_of_two() || refused % 1024 == 0 {
        warn!(%client, open, refused, "connection limit reached (max_connections): refusing new connections");
    }
    drop(stream);
}

/// Requests in flight on one client connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    idle_since: parking_lot::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: parking_lot::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// When the connection becomes idle too long, if it is idle now.
    fn idle_deadline(&self, idle_timeout: Duration) -> Option<tokio::time::Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| *self.idle_since.lock() + idle_timeout)
    }
}

/// Marks a request in flight until dropped: with its response's body, once
/// that is written or given up ([`holding`](Self::holding)), so a long stream
/// (a download, a watch) does not leave its connection idle.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }

    /// `body`, holding this mark until it is dropped.
    fn holding(self, body: ProxyBody) -> ProxyBody {
        if body.is_end_stream() {
            // Nothing will be written: no wrapper (nor its allocation) needed.
            return body;
        }
        BoxBody::new(InFlightBody { body, _in_flight: self })
    }
}

/// A response body that keeps its request [`InFlight`].
#[derive(Debug)]
struct InFlightBody {
    body: ProxyBody,
    _in_flight: InFlight,
}

impl Body for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock() = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a client speaks on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Serves one accepted connection, after its TLS handshake when `tls` is set.
async fn accept_connection(
    server: Arc<http1::Builder>,
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    client: SocketAddr,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return serve_connection(server, stream, client, proxy, shutdown, limits).await;
    };
    // The handshake, as a plaintext connection's first bytes, must come within
    // the header read timeout. A plaintext HTTP client is told in its own
    // protocol that this port speaks TLS.
    use spectrum_core::tls_accept::Refused;
    match tokio::time::timeout(limits.header_read_timeout, spectrum_core::tls_accept::accept(&tls, stream))
        .await
    {
        // The first bytes say the protocol whatever ALPN (RFC 7301) chose, as
        // with hyper's automatic server; and reading them is timed.
        Ok(Ok(stream)) => serve_connection(server, stream, client, proxy, shutdown, limits).await,
        // Closed before a byte (a TCP check): nothing to refuse.
        Ok(Err(Refused::Closed)) => {}
        Ok(Err(Refused::Handshake(refused))) => REFUSED_HANDSHAKES.refused(client, &refused),
        Err(_) => REFUSED_HANDSHAKES.refused(client, &"no handshake within the header read timeout"),
    }
}

/// The refused TLS handshakes of every balancer in this process (logged, see
/// [`HandshakeRefusals`](spectrum_core::tls_accept::HandshakeRefusals)).
static REFUSED_HANDSHAKES: spectrum_core::tls_accept::HandshakeRefusals =
    spectrum_core::tls_accept::HandshakeRefusals::new("balancer");

/// Serves a connection in the protocol its first bytes show: HTTP/2 after its
/// preface, else HTTP/1.1.
async fn serve_connection<I>(
    server: Arc<http1::Builder>,
    mut stream: I,
    client: SocketAddr,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sniffed = tokio::select! {
        sniffed = sniff(&mut stream, limits) => sniffed,
        _ = shutdown.changed() => return,
    };
    let (protocol, read) = match sniffed {
        Ok(Some(sniffed)) => sniffed,
        Ok(None) => return debug!(%client, "client connection closed before a request"),
        Err(error) => return debug!(%client, %error, "client connection failed before a request"),
    };
    let io = Rewind { read, io: stream };
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    match protocol {
        Protocol::Http2 => {
            let service = move |req: Request<ClientBody>| {
                let proxy = proxy.clone();
                let in_flight = InFlight::start(&tracked);
                // Boxed: each stream's task holds this future, and unboxed its
                // several KiB (the whole forwarding state machine) would be
                // copied into the task when spawned.
                Box::pin(async move { proxy.handle(req, client).await.map(|body| in_flight.holding(body)) })
            };
            let conn =
                H2Connection::new(io, limits.max_concurrent_streams, limits.max_header_list_size, service);
            serve_until_done(
                conn,
                |conn| conn.get_mut().graceful_shutdown(),
                &activity,
                shutdown,
                limits,
                client,
            )
            .await;
        }
        Protocol::Http1 => {
            let service = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                let in_flight = InFlight::start(&tracked);
                // Boxed: set into the connection's state for each request, and
                // several KiB (the whole forwarding state machine) unboxed.
                Box::pin(async move {
                    let response = proxy.handle(req.map(ClientBody::Hyper), client).await;
                    Ok::<_, Infallible>(response.map(|body| in_flight.holding(body)))
                })
            });
            let conn = server.serve_connection(TokioIo::new(io), service);
            serve_until_done(conn, |conn| conn.graceful_shutdown(), &activity, shutdown, limits, client)
                .await;
        }
    }
}

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a connection's first bytes until they show HTTP/2's preface or
/// something else (HTTP/1.1), as hyper's automatic server did; returns the
/// protocol and the bytes read, to be read again ([`Rewind`]). `None` when
/// the client closed the connection, or did not send the whole preface, or
/// the first bytes of something else, within the header read timeout.
async fn sniff<I>(io: &mut I, limits: ConnectionLimits) -> io::Result<Option<(Protocol, Bytes)>>
where
    I: AsyncRead + Unpin,
{
    let mut read = BytesMut::with_capacity(PREFACE.len());
    // A new connection shows what it speaks as soon as it has anything to
    // say: one that stays silent holds a connection slot for nothing.
    let deadline = tokio::time::Instant::now() + limits.header_read_timeout.min(limits.idle_timeout);
    loop {
        match tokio::time::timeout_at(deadline, io.read_buf(&mut read)).await {
            Err(_) | Ok(Ok(0)) => return Ok(None),
            Ok(Err(error)) => return Err(error),
            Ok(Ok(_)) => {}
        }
        let seen = read.len().min(PREFACE.len());
        if read[..seen] != PREFACE[..seen] {
            return Ok(Some((Protocol::Http1, read.freeze())));
        }
        if seen == PREFACE.len() {
            return Ok(Some((Protocol::Http2, read.freeze())));
        }
    }
}

/// A connection whose first bytes, already read (by [`sniff`]), are read again
/// before the rest.
#[derive(Debug)]
struct Rewind<I> {
    read: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() && buf.remaining() > 0 {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Serves `conn` until it ends: closes it gracefully (`close`: it finishes
/// what is open and takes nothing new) on shutdown, and when no request has
/// been in flight for the idle timeout (then lets it finish for up to the grace
/// period).
async fn serve_until_done<C, E>(
    conn: C,
    close: fn(Pin<&mut C>),
    activity: &Activity,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    client: SocketAddr,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let result = loop {
        // Re-checked at least every idle timeout: a request may start and end in between.
        let wake = activity
            .idle_deadline(limits.idle_timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + limits.idle_timeout);
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = shutdown.changed() => {
                close(conn.as_mut());
                break conn.await;
            }
            _ = tokio::time::sleep_until(wake) => {
                if activity.idle_deadline(limits.idle_timeout).is_some_and(|d| d <= tokio::time::Instant::now()) {
                    debug!(%client, idle_ms = limits.idle_timeout.as_millis() as u64, "closing an idle client connection");
                    close(conn.as_mut());
                    match tokio::time::timeout(limits.grace, conn.as_mut()).await {
                        Ok(result) => break result,
                        Err(_) => break Ok(()),
                    }
                }
            }
        }
    };
    if let Err(error) = result {
        debug!(%client, %error, "client connection ended with an error");
    }
}
