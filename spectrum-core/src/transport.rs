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
//! - [`TransportConfig::tls`] turns on TLS for both (see [`crate::tls`]): servers
//!   serve TLS only, and channels connect with `https://` to the host and port of the
//!   `http://` [`PeerAddr`] they are given. Membership keeps `http://` addresses
//!   whether or not a cluster uses TLS; the transport decides the scheme on the wire.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server, Uri};

use crate::addr::PeerAddr;
use crate::error::CoreError;
use crate::tls::TlsConfig;

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
    /// TLS for servers and channels; `None` for plaintext (h2c).
    pub tls: Option<TlsConfig>,
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
            tls: None,
        }
    }
}

impl TransportConfig {
    /// A server builder with keepalive and TCP_NODELAY set, serving TLS when
    /// [`tls`](Self::tls) is set.
    ///
    /// Message size limits are per service in tonic: apply
    /// [`max_message_bytes`](Self::max_message_bytes) with each generated server's
    /// `max_decoding_message_size`.
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] when TLS is set without a certificate of its own.
    pub fn server(&self) -> Result<Server, CoreError> {
        let server = Server::builder()
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .tcp_nodelay(true);
        match &self.tls {
            None => Ok(server),
            Some(tls) => server
                .tls_config(tls.server_config()?)
                .map_err(|e| CoreError::Tls { reason: format!("server: {e}") }),
        }
    }

    /// An endpoint for `addr` with this configuration's keepalive and timeouts:
    /// `http://host:port`, or with [`tls`](Self::tls) `https://host:port` verifying
    /// the server's certificate for `host`.
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] when tonic refuses the TLS settings for this host (a
    /// [`TlsConfig`] that was built once connects to any valid address).
    pub fn try_endpoint(&self, addr: &PeerAddr) -> Result<Endpoint, CoreError> {
        let Some(tls) = &self.tls else { return Ok(self.configure(Endpoint::from(uri_of(addr)))) };
        let uri: Uri = format!("https://{}", addr.authority())
            .parse()
            .map_err(|_| CoreError::Tls { reason: format!("no https URI for {addr}") })?;
        self.configure(Endpoint::from(uri))
            .tls_config(tls.client_config(addr.host()))
            .map_err(|e| CoreError::Tls { reason: format!("client for {addr}: {e}") })
    }

    /// [`try_endpoint`](Self::try_endpoint) for callers that learn of failures when
    /// they call: should tonic refuse the TLS settings, the endpoint keeps its
    /// `https://` address without them and every call on it fails. It never falls
    /// back to plaintext.
    pub fn endpoint(&self, addr: &PeerAddr) -> Endpoint {
        self.try_endpoint(addr).unwrap_or_else(|_| {
            let https = format!("https://{}", addr.authority());
            self.configure(Endpoint::from(https.parse::<Uri>().unwrap_or_else(|_| uri_of(addr))))
        })
    }

    /// The scheme channels use on the wire: `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Sets TLS for servers and channels (see [`crate::tls`]).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn configure(&self, ep: Endpoint) -> Endpoint {
        let mut ep = ep
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

/// `status`'s message and, for a failure on the way (a status the client's
/// transport made, with a source), each cause in turn (`transport error:
/// http2 error: connection error received: …`): a plaintext client at a TLS
/// port, or a peer whose certificate is from another CA, reads the reason
/// there rather than `transport error`.
pub fn status_with_causes(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        let text = error.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = error.source();
    }
    if message.contains(crate::tls_accept::REASON) {
        // A TLS port's answer to a plaintext client, inside h2's report of
        // the GOAWAY that carried it: the reason alone says what to do.
        return crate::tls_accept::REASON.to_owned();
    }
    if message.contains("received fatal alert") {
        // rustls names the alert only (`DecryptError` for a certificate of
        // another CA); the peer's log has its reason.
        message.push_str(
            " (the peer refused the TLS handshake: is this side's certificate issued by the CA the \
             peer trusts? The peer logs its reason)",
        );
    }
    message
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
/// [`CoreError::Bind`] when the address cannot be bound; [`CoreError::Io`] when the
/// bound socket cannot say its address.
pub async fn bind(addr: SocketAddr) -> Result<Listener, CoreError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| CoreError::Bind { addr, source })?;
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
