//! What a TLS port does with clients whose handshake never succeeds: a
//! client that speaks plaintext HTTP to it is told so in its own protocol, and
//! every refused handshake is logged, so an operator sees a misconfigured
//! client or a certificate from another CA without a packet capture.
//!
//! A TLS connection opens with a handshake record (content type 22, RFC 8446
//! §5.1). A plaintext HTTP/1.1 request opens with its method (an upper-case
//! token, RFC 9112 §3), and a plaintext HTTP/2 client with its preface
//! `PRI * HTTP/2.0` (RFC 9113 §3.4). [`refuse_plaintext`] peeks at the first
//! bytes, and on plaintext answers `400` over HTTP/1.1, or a server preface
//! and `GOAWAY` carrying the reason as debug data over HTTP/2 (§6.8), as nginx
//! answers "The plain HTTP request was sent to HTTPS port".
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use spectrum_core::tls_accept::{Opening, Plaintext, refuse_plaintext};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let client = tokio::spawn(async move {
//!     let mut stream = tokio::net::TcpStream::connect(addr).await?;
//!     stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
//!     let mut answer = String::new();
//!     stream.read_to_string(&mut answer).await?;
//!     Ok::<_, std::io::Error>(answer)
//! });
//! let (mut stream, _) = listener.accept().await?;
//! assert_eq!(refuse_plaintext(&mut stream).await?, Opening::Plaintext(Plaintext::Http1));
//! drop(stream);
//! let answer = client.await.unwrap()?;
//! assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
//! assert!(answer.contains("this port speaks TLS"), "{answer}");
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The reason a plaintext client is given (over HTTP/1.1 as the body of a
/// `400`, over HTTP/2 as the debug data of its `GOAWAY`).
pub const REASON: &str = "this port speaks TLS: connect with https:// (TLS), not plaintext HTTP";

/// The plaintext protocol a client spoke to a TLS port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plaintext {
    /// An HTTP/1.x request: answered `400 Bad Request`.
    Http1,
    /// The HTTP/2 connection preface: answered with an empty `SETTINGS` and a
    /// `GOAWAY` (`PROTOCOL_ERROR`) whose debug data says why.
    Http2,
}

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI ";

/// How a connection to a TLS port opened, as [`refuse_plaintext`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Its first bytes may open a TLS handshake (they are left unread for it).
    Tls,
    /// The client closed the connection before sending anything (a TCP
    /// health check, a port scan): nothing to refuse.
    Closed,
    /// Plaintext HTTP, answered that the port speaks TLS.
    Plaintext(Plaintext),
}

/// How many more times the first bytes are looked at when they are a part of
/// the HTTP/2 preface's first four (`P`, `PR`, `PRI`), [`PEEK_AGAIN_AFTER`]
/// apart: the rest is normally in the same segment.
const PEEK_AGAIN: usize = 5;
const PEEK_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// Peeks at the first bytes `stream`'s client sent (waiting for at least
/// one): [`Opening::Tls`] when they may open a TLS handshake (nothing is
/// read, so the handshake proceeds as if this had not looked); when they open
/// plaintext HTTP, answers the client in its protocol that this port speaks
/// TLS and says which protocol it spoke (the caller then closes the
/// connection). The caller bounds the wait.
///
/// # Errors
///
/// The socket's error peeking or writing (the connection is then of no use).
pub async fn refuse_plaintext(stream: &mut TcpStream) -> std::io::Result<Opening> {
    let mut first = [0u8; 4];
    let mut seen = stream.peek(&mut first).await?;
    for _ in 0..PEEK_AGAIN {
        if seen == 0 || seen == first.len() || !H2_PREFACE.starts_with(&first[..seen]) {
            break;
        }
        tokio::time::sleep(PEEK_AGAIN_AFTER).await;
        seen = stream.peek(&mut first).await?;
    }
    let first = &first[..seen];
    let protocol = match first.first() {
        None => return Ok(Opening::Closed),
        // A handshake record (22), or an SSLv2-style hello: TLS's to judge.
        Some(0x16 | 0x80..) => return Ok(Opening::Tls),
        Some(_) if first.starts_with(H2_PREFACE) => Plaintext::Http2,
        Some(b'A'..=b'Z') => Plaintext::Http1,
        Some(_) => return Ok(Opening::Tls),
    };
    match protocol {
        Plaintext::Http1 => {
            let body = format!("{REASON}\n");
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await?;
        }
        Plaintext::Http2 => {
            first_request(stream).await;
            stream.write_all(&h2_refusal()).await?;
        }
    }
    stream.flush().await?;
    // The client closes first, once it has read the answer (an HTTP/2 client
    // that saw this side's FIN before the GOAWAY reported a closed
    // connection instead of the reason, about one time in five).
    linger(stream).await;
    let _ = stream.shutdown().await;
    Ok(Opening::Plaintext(protocol))
}

/// Reads a plaintext HTTP/2 client's preface and frames up to its first
/// `HEADERS` (a request), for up to [`FIRST_REQUEST_WITHIN`] and
/// [`LINGER_BYTES`]: a `GOAWAY` that comes before the client has sent its
/// request fails that request as "connection closed" in hyper's client,
/// without the reason (about one time in three); after it, the request fails
/// with the `GOAWAY`, reason included.
async fn first_request(stream: &mut TcpStream) {
    const HEADERS: u8 = 0x1;
    let read = async {
        let mut preface = [0u8; 24];
        stream.read_exact(&mut preface).await?;
        let mut seen = preface.len();
        let mut skip = [0u8; 1024];
        while seen < LINGER_BYTES {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await?;
            if head[3] == HEADERS {
                return Ok::<(), std::io::Error>(());
            }
            let mut left = usize::try_from(u32::from_be_bytes([0, head[0], head[1], head[2]])).unwrap_or(0);
            seen += head.len() + left;
            while left > 0 {
                let take = left.min(skip.len());
                let n = stream.read(&mut skip[..take]).await?;
                if n == 0 {
                    return Ok(());
                }
                left -= n;
            }
        }
        Ok(())
    };
    let _ = tokio::time::timeout(FIRST_REQUEST_WITHIN, read).await;
}

/// Longest a plaintext HTTP/2 client's first request is waited for.
const FIRST_REQUEST_WITHIN: std::time::Duration = std::time::Duration::from_millis(250);

/// Reads and drops what the client still sends, until it closes, for up to
/// [`LINGER`] and [`LINGER_BYTES`]: closing a socket with unread bytes resets
/// the connection, and a client reset before it read the answer (an HTTP/2
/// client has sent its settings and first request by then) reports a broken
/// pipe instead of it (nginx's `lingering_close`, for the same reason).
async fn linger(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let drained = async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drained).await;
}

/// Longest a refused plaintext client is read from after its answer.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// Most bytes read from a refused plaintext client after its answer.
const LINGER_BYTES: usize = 64 * 1024;

/// Why a connection to a TLS port was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The client closed before sending anything (a TCP check): no refusal
    /// to log.
    Closed,
    /// The handshake failed, or the client spoke plaintext (it was told so):
    /// the reason, for [`HandshakeRefusals::refused`].
    Handshake(String),
}

/// The TLS handshake of `tcp` with `acceptor`, after [`refuse_plaintext`]
/// (a plaintext HTTP client is answered that the port speaks TLS, and
/// refused). The caller bounds the time it takes.
///
/// # Errors
///
/// [`Refused`]: why the connection is not served.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    mut tcp: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Refused> {
    match refuse_plaintext(&mut tcp).await {
        Ok(Opening::Tls) => acceptor.accept(tcp).await.map_err(|e| Refused::Handshake(e.to_string())),
        Ok(Opening::Closed) => Err(Refused::Closed),
        Ok(Opening::Plaintext(plaintext)) => Err(Refused::Handshake(plaintext.to_string())),
        Err(e) => Err(Refused::Handshake(e.to_string())),
    }
}

/// An HTTP/2 server preface (an empty `SETTINGS` frame) and a `GOAWAY` with
/// last stream 0, `PROTOCOL_ERROR` and [`REASON`] as debug data (RFC 9113
/// §4.1, §6.5, §6.8).
fn h2_refusal() -> Vec<u8> {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const PROTOCOL_ERROR: u32 = 0x1;
    let frame = |kind: u8, payload: &[u8]| {
        let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, 0, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    };
    let mut goaway = Vec::with_capacity(8 + REASON.len());
    goaway.extend_from_slice(&0u32.to_be_bytes());
    goaway.extend_from_slice(&PROTOCOL_ERROR.to_be_bytes());
    goaway.extend_from_slice(REASON.as_bytes());
    let mut bytes = frame(SETTINGS, &[]);
    bytes.extend(frame(GOAWAY, &goaway));
    bytes
}

/// Logs refused TLS handshakes on one kind of port (`what`: "node TLS
/// port", "balancer"): at `warn` with the client's address and the reason (a
/// client certificate from another CA, a client that does not trust this
/// server's certificate, plaintext) the 1st, 2nd, 4th, 8th… and at least one
/// a minute while refusals go on, every one at `debug`: a client that retries
/// without end fills no log, and a new kind of refusal still shows within a
/// minute.
#[derive(Debug)]
pub struct HandshakeRefusals {
    what: &'static str,
    count: AtomicU64,
    /// When the last refusal was logged at `warn`, in seconds since
    /// [`since`] was first read (0: never).
    warned_at: AtomicU64,
}

/// Seconds since the first refusal anywhere in this process (from 1).
fn since() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs() + 1
}

/// The most time between two refusals logged at `warn`, in seconds.
const WARN_AT_LEAST_EVERY_S: u64 = 60;

impl HandshakeRefusals {
    /// No refusal yet on the port `what` names.
    pub const fn new(what: &'static str) -> Self {
        Self { what, count: AtomicU64::new(0), warned_at: AtomicU64::new(0) }
    }

    /// Logs one refused handshake from `client`, for `reason`.
    pub fn refused(&self, client: SocketAddr, reason: &dyn fmt::Display) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let port = self.what;
        let now = since();
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_AT_LEAST_EVERY_S;
        let warn = (count.is_power_of_two() || due)
            && self.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        if warn {
            tracing::warn!(%client, %reason, refused = count, "{port}: TLS handshake refused");
        } else {
            tracing::debug!(%client, %reason, refused = count, "{port}: TLS handshake refused");
        }
    }

    /// How many handshakes were refused so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Why a plaintext client was refused, for [`HandshakeRefusals::refused`].
impl fmt::Display for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plaintext::Http1 => write!(f, "the client spoke plaintext HTTP/1.1 (answered 400)"),
            Plaintext::Http2 => write!(f, "the client spoke plaintext HTTP/2 (answered GOAWAY)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client sending `bytes` first reads back, what the port made of
    /// it, and what is still there to read on the port's side.
    async fn exchange(bytes: &'static [u8]) -> (Vec<u8>, Opening, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(500), stream.read_to_end(&mut answer))
                    .await;
            answer
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let seen = refuse_plaintext(&mut stream).await.unwrap();
        let mut left = vec![0u8; bytes.len()];
        let read = match seen {
            Opening::Tls => {
                tokio::time::timeout(std::time::Duration::from_secs(1), stream.read_exact(&mut left))
                    .await
                    .is_ok()
            }
            _ => false,
        };
        left.truncate(if read { bytes.len() } else { 0 });
        drop(stream);
        (client.await.unwrap(), seen, left)
    }

    #[tokio::test]
    async fn a_tls_hello_is_left_unread_for_the_handshake() {
        let hello = [0x16, 0x03, 0x01, 0x00, 0x05];
        let (answer, seen, left) = exchange(&[0x16, 0x03, 0x01, 0x00, 0x05]).await;
        assert_eq!(seen, Opening::Tls);
        assert!(answer.is_empty());
        assert_eq!(left, hello, "the handshake reads every byte the client sent");
    }

    #[tokio::test]
    async fn plaintext_http2_gets_a_goaway_saying_why() {
        let (answer, seen, _) = exchange(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert_eq!(seen, Opening::Plaintext(Plaintext::Http2));
        // SETTINGS (empty), then GOAWAY: last stream 0, PROTOCOL_ERROR, the reason.
        assert_eq!(&answer[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(answer[12], 7, "{answer:?}");
        assert_eq!(&answer[18..26], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&answer[26..], REASON.as_bytes());
        let len = u32::from_be_bytes([0, answer[9], answer[10], answer[11]]) as usize;
        assert_eq!(len, 8 + REASON.len());
    }

    #[tokio::test]
    async fn other_bytes_are_left_to_the_handshake() {
        let (answer, seen, left) = exchange(b"\x00\x01garbage").await;
        assert_eq!(seen, Opening::Tls);
        assert!(answer.is_empty());
        assert_eq!(left, b"\x00\x01garbage");
    }

    #[tokio::test]
    async fn a_client_that_closes_before_sending_is_no_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(TcpStream::connect(addr).await.unwrap());
        let (mut stream, _) = listener.accept().await.unwrap();
        assert_eq!(refuse_plaintext(&mut stream).await.unwrap(), Opening::Closed);
    }

    #[tokio::test]
    async fn an_http2_preface_in_pieces_is_still_told_apart() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            stream.write_all(b"PR").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            stream.write_all(b"I * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            answer
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let seen = refuse_plaintext(&mut stream).await.unwrap();
        drop(stream);
        assert_eq!(seen, Opening::Plaintext(Plaintext::Http2));
        assert_eq!(client.await.unwrap()[3], 4, "a SETTINGS frame first");
    }
}
