//! Transport plumbing shared by every Spectrum service: gRPC servers and channels
//! configured alike (HTTP/2 keepalive, message size limits, timeouts), and the seams
//! through which a test or a simulator supplies its own listeners and connectors.
//!
//! - [`TransportConfig::server`] gives a [`tonic::transport::Server`] builder; serve
//!   it on a [`Listener`] from [`bind`] with `serve_with_incoming`, or on any other
//!   stream of connections (a simulator's) the same way.
//! - [`TransportConfig::endpoint`] gives a [`tonic::transport::Endpoint`]; call
//!   `connect_lazy()` for a real TCP channel, or `connect_with_connector_lazy` to
//!   route through a simulator.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server, Uri};

use crate::addr::PeerAddr;
use crate::error::CoreError;

/// Default largest gRPC message accepted or sent: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Turns a configured [`Endpoint`] into a [`Channel`]: the seam through which a
/// simulator (turmoil, say) routes every Spectrum client over its own network, with
/// `endpoint.connect_with_connector_lazy(..)`. Without one, channels connect over
/// TCP, lazily.
#[derive(Clone)]
pub struct ChannelConnector(Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>);

impl ChannelConnector {
    /// A connector from a function.
    pub fn new(f: impl Fn(Endpoint) -> Channel + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Builds the channel for `endpoint`.
    pub fn connect(&self, endpoint: Endpoint) -> Channel {
        (self.0)(endpoint)
    }
}

impl fmt::Debug for ChannelConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelConnector(..)")
    }
}

/// How Spectrum's gRPC servers and clients talk: one value configures both sides.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest encoded gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Interval between HTTP/2 keepalive pings on idle connections.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Longest time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest time a client call may take, or `None` for no limit (streams).
    pub request_timeout: Option<Duration>,
    /// How channels are made; `None` for lazy TCP connections.
    pub connector: Option<ChannelConnector>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Some(Duration::from_secs(10)),
            connector: None,
        }
    }
}

impl TransportConfig {
    /// A server builder with keepalive and TCP_NODELAY set.
    ///
    /// Message size limits are per service in tonic: apply
    /// [`max_message_bytes`](Self::max_message_bytes) with each generated server's
    /// `max_decoding_message_size`.
    pub fn server(&self) -> Server {
        Server::builder()
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .tcp_nodelay(true)
    }

    /// An endpoint for `addr` with this configuration's keepalive and timeouts.
    pub fn endpoint(&self, addr: &PeerAddr) -> Endpoint {
        let mut ep = Endpoint::from(uri_of(addr))
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(t) = self.request_timeout {
            ep = ep.timeout(t);
        }
        ep
    }

    /// A channel to `addr`: through the [`connector`](Self::connector) when one is
    /// set, else a lazily connected TCP channel (the first call connects).
    pub fn channel(&self, addr: &PeerAddr) -> Channel {
        let ep = self.endpoint(addr);
        match &self.connector {
            Some(c) => c.connect(ep),
            None => ep.connect_lazy(),
        }
    }

    /// Routes every channel through `connector` (see [`ChannelConnector`]).
    pub fn with_connector(mut self, connector: ChannelConnector) -> Self {
        self.connector = Some(connector);
        self
    }
}

/// The URI of a validated address.
pub fn uri_of(addr: &PeerAddr) -> Uri {
    // The canonical text was produced from a parsed URI and is one again.
    addr.as_str().parse().expect("a PeerAddr's canonical text is a valid URI")
}

/// A bound TCP listener ready to be served with `serve_with_incoming`, and the
/// address it actually bound (useful with port 0).
#[derive(Debug)]
pub struct Listener {
    /// The bound local address.
    pub local_addr: SocketAddr,
    /// The stream of accepted connections.
    pub incoming: TcpIncoming,
}

impl Listener {
    /// The bound address, as peers reach it.
    pub fn addr(&self) -> PeerAddr {
        PeerAddr::from(self.local_addr)
    }

    /// The bound address as an `http://` URL string.
    pub fn url(&self) -> String {
        self.addr().to_string()
    }
}

/// Binds `addr` (for example `127.0.0.1:0` for an ephemeral loopback port).
///
/// # Errors
///
/// [`CoreError::Io`] when the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<Listener, CoreError> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(Listener { local_addr, incoming })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_use_the_canonical_address() {
        let addr: PeerAddr = "127.0.0.1:7000".parse().unwrap();
        let ep = TransportConfig::default().endpoint(&addr);
        assert_eq!(ep.uri().to_string(), "http://127.0.0.1:7000/");
    }

    #[tokio::test]
    async fn bind_reports_the_ephemeral_port() {
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_ne!(l.local_addr.port(), 0);
        assert!(l.url().starts_with("http://127.0.0.1:"));
        assert_eq!(l.addr().port(), l.local_addr.port());
    }
}
