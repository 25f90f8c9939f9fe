//! A small pool of multiplexed HTTP/2 connections per backend, opened lazily and
//! reopened when they close.
//!
//! One HTTP/2 connection is driven by one task, so every request to a backend
//! would otherwise be framed, flow-controlled and written by a single task (one
//! core at a time), with every stream of that connection sharing one lock. The
//! pool spreads requests over up to [`BalancerConfig::upstream_connections`]
//! connections, each request going to the one with the fewest requests in flight.
//!
//! [`BalancerConfig::upstream_connections`]: crate::BalancerConfig::upstream_connections

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tracing::debug;

use crate::h2_client::{Sender, Settings};
use crate::tls::Connector;

/// Flow-control window of each upstream stream. Fixed rather than adaptive:
/// hyper's adaptive window times and pings on every received data frame, a cost
/// paid per request for no gain on the low-latency links between a balancer and
/// its nodes.
///
/// Small beside [`CONNECTION_WINDOW`]: a client that stops reading a streamed
/// response holds at most this much of its connection's window, so it takes
/// `CONNECTION_WINDOW / STREAM_WINDOW` (256) such clients on one connection, not
/// four, before other requests on it stall. 256 KiB still covers the
/// bandwidth-delay product of a data-centre link many times over.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Flow-control window of each upstream connection (see [`STREAM_WINDOW`]).
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// Why no connection to a backend could be had. The request was not sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[from] h2::Error),
}

/// One pooled connection: its sender, if open, and the requests it carries.
#[derive(Debug, Default)]
struct Slot {
    sender: parking_lot::Mutex<Option<Sender>>,
    /// Exchanges on this slot's connection not yet complete (response body included).
    in_flight: Arc<AtomicUsize>,
    /// Held while connecting, so that concurrent requests share one new connection.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn cached(&self) -> Option<Sender> {
        let mut slot = self.sender.lock();
        let open = slot.as_mut().is_some_and(|s| !s.is_closed());
        if !open {
            // Closed or closing (`GOAWAY`): the next request opens another.
            *slot = None;
        }
        slot.clone()
    }
}

/// A request's claim on one pooled connection: counts as in flight on it until
/// dropped (when the exchange completes).
#[derive(Debug)]
pub(crate) struct Lease {
    in_flight: Arc<AtomicUsize>,
    slot: usize,
}

impl Lease {
    /// Which of the backend's connections the request goes on.
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections to one backend.
#[derive(Debug)]
pub(crate) struct Upstream {
    addr: SocketAddr,
    authority: http::uri::Authority,
    connect_timeout: Duration,
    slots: Box<[Slot]>,
    /// TLS to the backend, verified for its IP address; `None` for h2c.
    tls: Option<Connector>,
}

impl Upstream {
    /// Up to `connections` (at least 1) connections to `addr`, over TLS with `tls`.
    pub(crate) fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        connections: usize,
        tls: Option<Connector>,
    ) -> Self {
        let authority = http::uri::Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| http::uri::Authority::from_static("localhost"));
        let slots = (0..connections.max(1)).map(|_| Slot::default()).collect();
        Self { addr, authority, connect_timeout, slots, tls }
    }

    /// The backend's `host:port`, for request URIs.
    pub(crate) fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// The slot with the fewest exchanges in flight (the first such one, so that a
    /// lightly loaded backend keeps to few connections), claimed for one exchange.
    fn lease(&self) -> Lease {
        let mut best = 0;
        let mut least = usize::MAX;
        for (i, slot) in self.slots.iter().enumerate() {
            let n = slot.in_flight.load(Ordering::Relaxed);
            if n < least {
                best = i;
                least = n;
                if n == 0 {
                    break;
                }
            }
        }
        let in_flight = self.slots[best].in_flight.clone();
        in_flight.fetch_add(1, Ordering::Relaxed);
        Lease { in_flight, slot: best }
    }

    /// Forgets connection `slot` (see [`Lease::slot`]) after `failed`, its
    /// connection, failed to take a request; a newer connection another request
    /// has put there meanwhile is kept.
    pub(crate) fn invalidate(&self, slot: usize, failed: &Sender) {
        if let Some(slot) = self.slots.get(slot) {
            let mut sender = slot.sender.lock();
            if sender.as_ref().is_some_and(|current| current.same_connection(failed)) {
                *sender = None;
            }
        }
    }

    /// A handle to send one request on, from the least loaded connection, connecting
    /// first if needed. The lease counts the request against that connection until
    /// it is dropped.
    pub(crate) async fn sender(&self) -> Result<(Sender, Lease), ConnectError> {
        let lease = self.lease();
        let slot = &self.slots[lease.slot];
        if let Some(s) = slot.cached() {
            return Ok((s, lease));
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(s) = slot.cached() {
            return Ok((s, lease));
        }
        // Boxed: connecting (a TLS handshake's buffers included) makes a future of
        // several KiB, which would otherwise sit inside every request's future and
        // be copied whenever that is moved or spawned, though it runs once per
        // connection.
        let sender = tokio::time::timeout(self.connect_timeout, Box::pin(self.connect()))
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        *slot.sender.lock() = Some(sender.clone());
        Ok((sender, lease))
    }

    async fn connect(&self) -> Result<Sender, ConnectError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => self.handshake(tcp).await,
            Some(tls) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                self.handshake(tls.0.connect(name, tcp).await.map_err(ConnectError::Tls)?).await
            }
        }
    }

    async fn handshake<I>(&self, io: I) -> Result<Sender, ConnectError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let settings = Settings::with_windows(STREAM_WINDOW, CONNECTION_WINDOW);
        let sender = Sender::handshake(io, settings, self.addr.to_string()).await?;
        debug!(backend = %self.addr, "upstream connection open");
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_to_the_least_loaded_connection() {
        let up = Upstream::new("127.0.0.1:1".parse().unwrap(), Duration::from_secs(1), 3, None);
        let a = up.lease();
        let b = up.lease();
        let c = up.lease();
        assert_eq!([a.slot, b.slot, c.slot], [0, 1, 2]);
        drop(b);
        let d = up.lease();
        assert_eq!(d.slot, 1, "the freed connection is the least loaded");
        drop((a, c, d));
        assert_eq!(up.lease().slot, 0, "an idle backend keeps to its first connection");
    }

    #[test]
    fn at_least_one_connection() {
        let up = Upstream::new("127.0.0.1:1".parse().unwrap(), Duration::from_secs(1), 0, None);
        assert_eq!(up.slots.len(), 1);
    }
}
