//! The balancer's HTTP/2 server for clients, on the `h2` crate directly.
//!
//! hyper's server wraps each stream `h2` accepts in a body of its own and a task
//! that polls the service's future, then turns into a second state machine that
//! pipes the response body, through its executor and service traits. Here the
//! connection's task accepts streams from `h2` and spawns one plain task per
//! stream, which awaits the answer ([`H2Connection`]'s service: the proxy
//! forwarding the request), sends its head and writes its body ([`Pipe`]). A
//! client that resets a stream before its answer drops the forwarding (so the
//! stream to the node is reset in turn), as hyper did.
//!
//! Flow control stays end to end ([`crate::h2_body`]): a request's window goes
//! back to the client as the node's side takes each frame, and a response is
//! read from the node only while the client's stream has window for it.
//!
//! The connection is served with a 256 KiB stream window under a 2 MiB
//! connection window (so a stalled upload holds up only its own stream),
//! hyper's server defaults otherwise (a 16 KiB header list, 400 KiB of send
//! buffer per stream), `h2`'s limits on reset streams (RFC 9113 §6.4: the
//! rapid-reset defence), and the configured limit on concurrent streams
//! (§6.5.2).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::Bytes;
use h2::Reason;
use h2::server::{Connection, Handshake, SendResponse};
use http::header::{CONTENT_LENGTH, DATE};
use http::{HeaderValue, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, trace};

use crate::body::{ClientBody, ProxyBody};
use crate::h2_body::{Pipe, RecvBody, content_length, strip_connection_fields};

/// The receive window of each stream, in bytes: a node's stream takes no more
/// at once (`upstream`'s window), so more would only be held here.
const STREAM_WINDOW: u32 = 256 * 1024;
/// The receive window of the whole connection, in bytes: eight streams' worth,
/// so one upload whose node stopped reading does not hold up the connection's
/// others (its window is its stream's only), while a connection holds at most
/// this much of its client's data here.
const CONNECTION_WINDOW: u32 = 8 * STREAM_WINDOW;
/// The most bytes a stream's response may have buffered for sending (hyper's
/// server default).
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// One client's HTTP/2 connection, served until it ends: a future that
/// accepts the client's streams and spawns a task answering each with
/// `service` (on the current runtime). Resolves when the connection closes
/// (`Ok` after a graceful close, whatever the streams' fates), or with the
/// connection's error.
pub(crate) struct H2Connection<I, S> {
    state: State<I>,
    service: S,
}

#[allow(
    clippy::large_enum_variant,
    reason = "the connection is the state for the connection's whole life; boxed, every poll would go through a pointer"
)]
enum State<I> {
    /// Exchanging the connection preface (RFC 9113 §3.4).
    Handshaking(Pin<Box<Handshake<I, Bytes>>>),
    Serving(Connection<I, Bytes>),
    /// Asked to close before any stream could open.
    Closed,
}

impl<I, S, F> H2Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<ClientBody>) -> F + Unpin,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    /// Starts serving `io` (TLS already done, the client's preface not yet
    /// read), allowing `max_concurrent_streams` streams at once and header
    /// sections of up to `max_header_list_size` bytes (RFC 9113 §6.5.2); `h2`
    /// refuses a stream with a larger one (`REFUSED_STREAM`) before the
    /// service sees it.
    pub(crate) fn new(io: I, max_concurrent_streams: u32, max_header_list_size: u32, service: S) -> Self {
        let handshake = h2::server::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(max_header_list_size)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_concurrent_streams(max_concurrent_streams)
            .handshake(io);
        Self { state: State::Handshaking(Box::pin(handshake)), service }
    }

    /// Stops taking new streams: `GOAWAY` goes to the client, and the future
    /// resolves once the streams already open are done (RFC 9113 §6.8); at
    /// once while the preface is still being exchanged (no stream is open).
    pub(crate) fn graceful_shutdown(&mut self) {
        match &mut self.state {
            State::Handshaking(_) => self.state = State::Closed,
            State::Serving(conn) => conn.graceful_shutdown(),
            State::Closed => {}
        }
    }
}

impl<I, S, F> Future for H2Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<ClientBody>) -> F + Unpin,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    type Output = Result<(), h2::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            let conn = match &mut this.state {
                State::Handshaking(handshake) => {
                    let conn = ready!(handshake.as_mut().poll(cx))?;
                    this.state = State::Serving(conn);
                    continue;
                }
                State::Serving(conn) => conn,
                State::Closed => return Poll::Ready(Ok(())),
            };
            match ready!(conn.poll_accept(cx)) {
                Some(Ok((request, respond))) => {
                    let length = content_length(request.headers());
                    let request = request.map(|recv| ClientBody::H2(RecvBody::new(recv, length, None)));
                    tokio::spawn(answer((this.service)(request), respond));
                }
                Some(Err(error)) => return Poll::Ready(Err(error)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Answers one stream with `response` once it is ready, unless the client
/// resets the stream first (then `response` is dropped unfinished).
async fn answer<F>(response: F, mut respond: SendResponse<Bytes>)
where
    F: Future<Output = Response<ProxyBody>>,
{
    let response = tokio::select! {
        biased;
        response = response => response,
        reset = std::future::poll_fn(|cx| respond.poll_reset(cx)) => {
            match reset {
                Ok(reason) => trace!(?reason, "client reset its stream before the answer"),
                Err(error) => trace!(%error, "client stream failed before the answer"),
            }
            return;
        }
    };
    let (mut head, body) = response.into_parts();
    strip_connection_fields(&mut head.headers);
    if !head.headers.contains_key(DATE) {
        // A node's answer has its own; the balancer's own answers get one here
        // (RFC 9110 §6.6.1).
        let now = httpdate::fmt_http_date(SystemTime::now());
        if let Ok(now) = HeaderValue::try_from(now) {
            head.headers.insert(DATE, now);
        }
    }
    let end = body.is_end_stream();
    if !end && let Some(len) = body.size_hint().exact() {
        head.headers.entry(CONTENT_LENGTH).or_insert_with(|| len.into());
    }
    match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(stream) if !end => Pipe::new(body, stream).await,
        Ok(_) => {}
        Err(error) => {
            debug!(%error, "could not send an answer's head; resetting its stream");
            respond.send_reset(Reason::INTERNAL_ERROR);
        }
    }
}
