//! The balancer's HTTP/2 client to a backend, on the `h2` crate directly.
//!
//! hyper's HTTP/2 client hands every request to its connection's task through a
//! channel, and that task spawns one more task per request to wait for the
//! response and send it back through a oneshot: three task hops and a spawn per
//! request on top of the HTTP/2 work. Here the request's own task opens the
//! stream (`h2`'s handle locks the connection's stream table for that), writes
//! the request body when it is already there, and waits for the response
//! itself; the connection's task only reads and writes the socket. As in
//! hyper, a body still arriving when the request goes out is written by a task
//! of its own, so that a streaming request and its response both move.
//!
//! Flow control stays end to end: the request body is read from the client only
//! while the backend's stream has window for it ([`Pipe`]), and the response's
//! window is given back to the backend as the client's side takes each frame
//! ([`RecvBody`]), so a client that stops reading stops its own stream only.
//!
//! The connection task also sends keep-alive pings (every [`KEEP_ALIVE_INTERVAL`],
//! closing the connection when one is not answered within
//! [`KEEP_ALIVE_TIMEOUT`]), as hyper's client did for the balancer, so a backend
//! whose host vanished is noticed without waiting for TCP (RFC 9113 §6.7).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::Ping;
use h2::client::SendRequest;
use http::{Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, trace};

use crate::h2_body::{Cancel, CancelOnDrop, Pipe, RecvBody, content_length};
use crate::replay::AttemptBody;

/// How often an idle or busy connection is pinged.
pub(crate) const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is closed.
pub(crate) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a new connection (RFC 9113 §6.5.2 and §6.9.2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The receive window of each stream, in bytes.
    pub(crate) stream_window: u32,
    /// The receive window of the whole connection, in bytes.
    pub(crate) connection_window: u32,
    /// How often the connection is pinged ([`KEEP_ALIVE_INTERVAL`]).
    pub(crate) keep_alive_interval: Duration,
    /// How long a ping may go unanswered ([`KEEP_ALIVE_TIMEOUT`]).
    pub(crate) keep_alive_timeout: Duration,
}

impl Settings {
    /// The given windows, pinging every [`KEEP_ALIVE_INTERVAL`].
    pub(crate) fn with_windows(stream_window: u32, connection_window: u32) -> Self {
        Self {
            stream_window,
            connection_window,
            keep_alive_interval: KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: KEEP_ALIVE_TIMEOUT,
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The request did not go out: the connection is closed or closing. The
    /// request comes back when it was not taken apart yet; either way it may go
    /// to another backend.
    NotSent {
        /// The request, when it is whole.
        request: Option<Box<Request<AttemptBody>>>,
        /// What the connection said.
        error: h2::Error,
    },
    /// The request went out and the backend refused its stream without
    /// processing it (RFC 9113): a `GOAWAY` whose last stream id is below the
    /// stream's (§6.8), or `RST_STREAM` with `REFUSED_STREAM` (§8.7). Nothing
    /// ran, so it may go to another backend whatever its method, when its body
    /// can be sent again.
    Refused(h2::Error),
    /// The request went out and the exchange broke before response headers
    /// (a reset stream, a closed connection).
    Broke(h2::Error),
}

impl SendError {
    /// What went wrong, for logs.
    pub(crate) fn error(&self) -> &h2::Error {
        match self {
            SendError::NotSent { error, .. } | SendError::Refused(error) | SendError::Broke(error) => error,
        }
    }

    /// A stream's failure before its response: [`Refused`](Self::Refused) when
    /// the backend says it never processed the stream, else [`Broke`](Self::Broke).
    ///
    /// `h2` fails a stream with a remote `GOAWAY` error only when the peer's
    /// `GOAWAY` named a last stream id below it (streams at or below it go on,
    /// and fail as I/O errors if the connection then drops), and with a remote
    /// reset only when the peer sent `RST_STREAM`.
    fn of_stream(error: h2::Error) -> Self {
        let refused_stream = error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM);
        if error.is_remote() && (error.is_go_away() || refused_stream) {
            SendError::Refused(error)
        } else {
            SendError::Broke(error)
        }
    }
}

/// One HTTP/2 connection to a backend: a handle requests are sent through,
/// cheap to clone. The connection stays open while its task runs, whatever
/// handles are dropped.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    h2: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Sender {
    /// Opens the connection over `io` (a connected socket, TLS already done) and
    /// starts its task on the current runtime; `backend` names it in logs.
    pub(crate) async fn handshake<I>(io: I, settings: Settings, backend: String) -> Result<Self, h2::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (h2, mut conn) = h2::client::Builder::new()
            .enable_push(false)
            // Until the backend's settings say how many streams it takes.
            .initial_max_send_streams(100)
            .initial_window_size(settings.stream_window)
            .initial_connection_window_size(settings.connection_window)
            .max_send_buffer_size(1024 * 1024)
            .max_header_list_size(64 * 1024)
            .handshake::<_, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let ping_pong = conn.ping_pong();
        let flag = closed.clone();
        tokio::spawn(async move {
            let ended = drive(conn, ping_pong, settings).await;
            flag.store(true, Ordering::Release);
            match ended {
                Ok(()) => trace!(%backend, "upstream connection closed"),
                Err(error) => debug!(%backend, %error, "upstream connection ended"),
            }
        });
        Ok(Self { h2, closed })
    }

    /// Whether `other` is a handle to the same connection.
    pub(crate) fn same_connection(&self, other: &Sender) -> bool {
        Arc::ptr_eq(&self.closed, &other.closed)
    }

    /// Whether the connection has ended or is closing (the backend sent
    /// `GOAWAY`, or it broke): no new request may go on it.
    pub(crate) fn is_closed(&mut self) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return true;
        }
        // `h2` reads the connection's error first. A handle that sent a request
        // (see `send`) may still hold that stream waiting to open: the no-op
        // waker is then left on a stream whose request already failed, which
        // nothing waits on.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.h2.poll_ready(&mut cx), Poll::Ready(Err(_)))
    }

    /// Sends `request` and waits for the response's headers. The request's URI
    /// must be absolute (scheme and authority become `:scheme` and
    /// `:authority`), and it must hold no connection-specific header (RFC 9113
    /// §8.2.2), which `h2` refuses. A body whose size is known gets a
    /// `content-length`, as hyper's client gave it.
    ///
    /// Should the caller stop waiting, or drop the response's body before the
    /// request body is all written, the stream is reset (`CANCEL`) and the
    /// task writing the request body ends.
    pub(crate) async fn send(
        &mut self,
        request: Request<AttemptBody>,
    ) -> Result<Response<RecvBody>, SendError> {
        // On this handle rather than a clone of it: each request has a handle of
        // its own (the pool's is cloned for it), and cloning or dropping one
        // takes the lock on the connection's streams.
        let h2 = &mut self.h2;
        if let Err(error) = std::future::poll_fn(|cx| h2.poll_ready(cx)).await {
            return Err(SendError::NotSent { request: Some(Box::new(request)), error });
        }
        let (mut head, body) = request.into_parts();
        let end_of_stream = body.is_end_stream();
        if let Some(len) = body.size_hint().exact()
            && (len > 0 || !matches!(head.method, http::Method::GET | http::Method::HEAD))
        {
            head.headers.entry(http::header::CONTENT_LENGTH).or_insert_with(|| len.into());
        }
        let (response, stream) = match h2.send_request(Request::from_parts(head, ()), end_of_stream) {
            Ok(sent) => sent,
            Err(error) => return Err(SendError::NotSent { request: None, error }),
        };
        // Cancels the pipe, if it outlives this call, when this future is
        // dropped while waiting, or later with the response's body.
        let mut guard = None;
        if !end_of_stream {
            let mut pipe = Pipe::new(body, stream);
            // Most request bodies (a unary call's one message) are here already:
            // written now, without a task of their own (nor a cancel flag: this
            // task is the one that would give up).
            let done = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut pipe).poll(cx).is_ready())).await;
            if !done {
                let cancel = Cancel::default();
                pipe.cancelled_by(cancel.clone());
                tokio::spawn(pipe);
                guard = Some(CancelOnDrop(cancel));
            }
        }
        let response = response.await.map_err(SendError::of_stream)?;
        let remaining = content_length(response.headers());
        Ok(response.map(|recv| RecvBody::new(recv, remaining, guard)))
    }
}

/// Runs a connection until it ends, pinging it as `settings` say.
async fn drive<T>(
    conn: h2::client::Connection<T, Bytes>,
    ping_pong: Option<h2::PingPong>,
    settings: Settings,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    tokio::pin!(conn);
    let Some(mut ping_pong) = ping_pong else { return conn.await };
    loop {
        tokio::select! {
            ended = &mut conn => return ended,
            () = tokio::time::sleep(settings.keep_alive_interval) => {}
        }
        let pong = tokio::time::timeout(settings.keep_alive_timeout, ping_pong.ping(Ping::opaque()));
        tokio::select! {
            ended = &mut conn => return ended,
            answered = pong => match answered {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    debug!(timeout = ?settings.keep_alive_timeout, "upstream connection did not answer a ping; closing it");
                    return Ok(());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::channel::mpsc;
    use http::{HeaderMap, HeaderValue};
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::error::BoxError;
    use crate::replay::RequestBody;

    const SMALL_WINDOW: u32 = 64 * 1024;

    /// An h2c server on loopback answering with `answer`; its address.
    async fn h2c_server<F, Fut, B>(answer: F) -> std::net::SocketAddr
    where
        F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let answer = answer.clone();
                        async move { Ok::<_, Infallible>(answer(req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    }

    /// An h2c server answering each request with its own body (every data
    /// frame and the trailers, as they come); its address.
    async fn echo_server() -> std::net::SocketAddr {
        h2c_server(|req: http::Request<Incoming>| async move { Response::new(req.into_body()) }).await
    }

    async fn connect(addr: std::net::SocketAddr, settings: Settings) -> Sender {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Sender::handshake(tcp, settings, addr.to_string()).await.unwrap()
    }

    fn request(addr: std::net::SocketAddr, body: AttemptBody) -> Request<AttemptBody> {
        Request::post(format!("http://{addr}/echo")).body(body).unwrap()
    }

    type Frames = mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>;

    /// A request body whose frames the test sends when it likes.
    fn streamed() -> (Frames, AttemptBody) {
        let (tx, rx) = mpsc::unbounded();
        (tx, RequestBody::new(StreamBody::new(rx), None, 0).attempt())
    }

    fn small() -> Settings {
        Settings::with_windows(SMALL_WINDOW, SMALL_WINDOW)
    }

    /// A peer speaking raw HTTP/2 frames, for what no server library sends on
    /// demand: it takes the client's first two requests (streams 1 and 3),
    /// writes `refusal` (encoded frames), then answers stream 1 with status 200.
    async fn raw_server(refusal: Vec<u8>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut preface = [0u8; 24];
            tcp.read_exact(&mut preface).await.unwrap();
            tcp.write_all(&frame(4, 0, 0, &[])).await.unwrap();
            let mut opened = 0;
            while opened < 2 {
                let mut head = [0u8; 9];
                if tcp.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                tcp.read_exact(&mut payload).await.unwrap();
                match (head[3], head[4] & 1) {
                    // HEADERS
                    (1, _) => opened += 1,
                    // SETTINGS, not an ACK: acknowledged
                    (4, 0) => tcp.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
                    _ => {}
                }
            }
            tcp.write_all(&refusal).await.unwrap();
            // `:status: 200` (HPACK static index 8), END_STREAM | END_HEADERS.
            tcp.write_all(&frame(1, 0x5, 1, &[0x88])).await.unwrap();
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
        });
        addr
    }

    /// An HTTP/2 frame of type `kind` with `flags` on `stream`.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn a_stream_a_goaway_left_out_or_refused_is_told_apart_as_never_processed() {
        // GOAWAY with last stream id 1 and NO_ERROR; RST_STREAM REFUSED_STREAM (7) on stream 3.
        let goaway = frame(7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
        let refused = frame(3, 0, 3, &7u32.to_be_bytes());
        // A reset with another code may have come after processing began.
        let cancelled = frame(3, 0, 3, &8u32.to_be_bytes());
        for (refusal, never_processed) in [(goaway, true), (refused, true), (cancelled, false)] {
            let addr = raw_server(refusal).await;
            let sender = connect(addr, small()).await;
            let (mut one, mut two) = (sender.clone(), sender);
            let get = || {
                let empty = RequestBody::new(Empty::<Bytes>::new(), None, 0).attempt();
                Request::get(format!("http://{addr}/")).body(empty).unwrap()
            };
            let (first, second) = tokio::join!(one.send(get()), two.send(get()));
            assert_eq!(first.unwrap().status(), 200, "stream 1 was processed");
            match second {
                Err(SendError::Refused(_)) if never_processed => {}
                Err(SendError::Broke(_)) if !never_processed => {}
                other => panic!("never processed: {never_processed}; got {:?}", other.map(|r| r.status())),
            }
        }
    }

    #[tokio::test]
    async fn a_body_sent_a_frame_at_a_time_is_echoed_while_it_is_still_being_sent() {
        let addr = echo_server().await;
        let mut sender = connect(addr, small()).await;
        let (frames, body) = streamed();
        frames.unbounded_send(Ok(Frame::data(Bytes::from_static(b"one")))).unwrap();
        let response = sender.send(request(addr, body)).await.unwrap();
        let mut echoed = response.into_body();
        // Each reply comes back before the next frame is sent: the request body
        // and the response move together.
        for word in ["one", "two", "three"] {
            if word != "one" {
                frames.unbounded_send(Ok(Frame::data(Bytes::from(word)))).unwrap();
            }
            let frame = echoed.frame().await.expect("a frame").unwrap();
            assert_eq!(frame.into_data().unwrap(), word.as_bytes());
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        frames.unbounded_send(Ok(Frame::trailers(trailers.clone()))).unwrap();
        let last = echoed.frame().await.expect("the trailers").unwrap();
        assert_eq!(last.into_trailers().unwrap(), trailers);
        assert!(echoed.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_body_many_times_the_windows_goes_through_as_each_side_takes_it() {
        let addr = echo_server().await;
        let mut sender = connect(addr, small()).await;
        let chunk = Bytes::from(vec![7u8; 100 * 1024]);
        let chunks = (0..40).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
        let body = RequestBody::new(StreamBody::new(futures::stream::iter(chunks)), None, 0).attempt();
        let response = sender.send(request(addr, body)).await.unwrap();
        let echoed = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(echoed.len(), 40 * 100 * 1024);
        assert!(echoed.iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn a_whole_body_and_an_empty_one_are_sent_and_echoed() {
        let addr = echo_server().await;
        let mut sender = connect(addr, small()).await;
        let body = RequestBody::new(Full::new(Bytes::from_static(b"all at once")), None, 1024).attempt();
        let response = sender.send(request(addr, body)).await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), &b"all at once"[..]);
        let empty = RequestBody::new(Empty::<Bytes>::new(), None, 0).attempt();
        let response = sender.send(request(addr, empty)).await.unwrap();
        assert!(response.into_body().collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn a_failing_request_body_resets_its_stream_and_the_exchange_breaks() {
        let addr = echo_server().await;
        let mut sender = connect(addr, small()).await;
        let (frames, body) = streamed();
        frames.unbounded_send(Ok(Frame::data(Bytes::from_static(b"part")))).unwrap();
        let response = sender.send(request(addr, body)).await.unwrap();
        let mut echoed = response.into_body();
        assert!(echoed.frame().await.unwrap().unwrap().is_data());
        frames.unbounded_send(Err("the client went away".into())).unwrap();
        let broken = tokio::time::timeout(Duration::from_secs(5), echoed.frame()).await.expect("in time");
        assert!(matches!(broken, Some(Err(_))), "{broken:?}");
        assert!(!sender.is_closed(), "one stream failed, not the connection");
    }

    #[tokio::test]
    async fn a_client_s_trailers_lose_the_fields_http2_forbids_and_the_rest_go_through() {
        let addr = echo_server().await;
        let mut sender = connect(addr, small()).await;
        let (frames, body) = streamed();
        frames.unbounded_send(Ok(Frame::data(Bytes::from_static(b"chunked")))).unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("te", HeaderValue::from_static("gzip"));
        trailers.insert("connection", HeaderValue::from_static("close"));
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        frames.unbounded_send(Ok(Frame::trailers(trailers))).unwrap();
        let response = sender.send(request(addr, body)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
            .await
            .expect("in time")
            .unwrap();
        let trailers = echoed.trailers().cloned().expect("trailers");
        assert_eq!(trailers.get("x-checksum").unwrap(), "abc");
        assert!(trailers.get("te").is_none() && trailers.get("connection").is_none(), "{trailers:?}");
        assert_eq!(echoed.to_bytes(), &b"chunked"[..]);
    }

    #[tokio::test]
    async fn dropping_the_response_resets_a_request_body_still_being_sent() {
        // A backend that answers at once, keeps its answer open, and reports how
        // the request body it reads ended (true: reset).
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let addr = h2c_server(move |req: http::Request<Incoming>| {
            let ended_tx = ended_tx.clone();
            async move {
                let (open, rx) = mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
                tokio::spawn(async move {
                    let read = req.into_body().collect().await;
                    let _ = ended_tx.send(read.is_err());
                    drop(open);
                });
                Response::new(StreamBody::new(rx))
            }
        })
        .await;
        let mut sender = connect(addr, small()).await;
        let (frames, body) = streamed();
        frames.unbounded_send(Ok(Frame::data(Bytes::from_static(b"first")))).unwrap();
        let response = sender.send(request(addr, body)).await.unwrap();
        // Let the pipe be waiting for the client's next frame, then give up.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(response);
        let reset = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await;
        assert_eq!(reset, Ok(Some(true)), "the backend saw its request stream reset");
        drop(frames);
    }

    #[tokio::test]
    async fn a_connection_whose_peer_never_answers_a_ping_is_closed() {
        // A peer that accepts the connection and then says nothing at all.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move { listener.accept().await.map(|(tcp, _)| tcp) });
        let settings = Settings {
            keep_alive_interval: Duration::from_millis(50),
            keep_alive_timeout: Duration::from_millis(100),
            ..small()
        };
        let mut sender = connect(addr, settings).await;
        let _held = silent.await.unwrap().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !sender.is_closed() {
            assert!(tokio::time::Instant::now() < deadline, "still open after 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let body = RequestBody::new(Full::new(Bytes::from_static(b"x")), None, 16).attempt();
        let refused = sender.send(request(addr, body)).await.unwrap_err();
        assert!(matches!(refused, SendError::NotSent { request: Some(_), .. }), "{refused:?}");
    }
}
