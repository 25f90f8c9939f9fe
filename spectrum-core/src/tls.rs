//! TLS for Spectrum's gRPC servers and channels: rustls on ring, no system libraries.
//!
//! A cluster has one certificate authority. Every node holds a certificate signed by
//! it whose subject alternative names include the node's **id name**,
//! [`node_dns_name`] (`<node-id>.spectrum.internal`), plus the host names and IP
//! addresses peers, balancers and clients reach it at. A [`TlsConfig`] holds the CA
//! and, for a node or a balancer, its own certificate and key;
//! [`TransportConfig::tls`](crate::TransportConfig::tls) turns it on for both sides:
//!
//! - servers present their certificate and ask clients for one (mutual TLS); a
//!   client certificate that does not chain to the cluster CA is refused at the
//!   handshake. Whether a client *must* present one is [`ClientAuth`]: a node's
//!   port also serves management clients and balancers, which hold only the CA, so
//!   nodes accept certificate-less clients there and their internal services demand
//!   a certificate naming the calling node ([`certificate_names_node`]).
//! - channels connect with `https://` to the same `host:port` a
//!   [`PeerAddr`](crate::PeerAddr) names (membership keeps `http://` addresses; the
//!   scheme on the wire follows the transport's configuration), verify the server's
//!   certificate against the CA for that host, and present their own certificate
//!   when they have one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::CoreError;
use crate::id::NodeId;

/// The DNS suffix of a node's id name in its certificate.
pub const NODE_NAME_SUFFIX: &str = "spectrum.internal";

/// The DNS name a node's certificate carries for its id: `<node-id>.spectrum.internal`.
///
/// ```
/// use spectrum_core::tls::node_dns_name;
/// assert_eq!(node_dns_name(&"node-1".parse()?), "node-1.spectrum.internal");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn node_dns_name(id: &NodeId) -> String {
    format!("{}.{NODE_NAME_SUFFIX}", id.as_str())
}

/// Whether the end-entity certificate of a verified peer chain (the first of
/// `chain`, as `tonic::Request::peer_certs` gives it) names node `node_id`:
/// its subject alternative names hold [`node_dns_name`] of that id.
///
/// The chain must already have been verified against the cluster CA (the TLS
/// handshake does that); this checks only the name. A `node_id` that is not a valid
/// node id never matches.
pub fn certificate_names_node(chain: &[CertificateDer<'_>], node_id: &str) -> bool {
    let Ok(id) = NodeId::new(node_id) else { return false };
    let Some(leaf) = chain.first() else { return false };
    let Ok(name) = ServerName::try_from(node_dns_name(&id)) else { return false };
    match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => cert.verify_is_valid_for_subject_name(&name).is_ok(),
        Err(_) => false,
    }
}

/// Whether a TLS server requires every client to present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Every client presents a certificate chaining to the CA, or the handshake fails.
    #[default]
    Required,
    /// Clients may connect without a certificate; one they present must chain to
    /// the CA. Services that need the peer's identity check it per call.
    Optional,
}

/// A cluster's TLS material: the CA certificate, and this process's own
/// certificate chain and private key when it has one (nodes and balancers do; a
/// management client needs only the CA).
///
/// Built from PEM text or files, and checked when built: a `TlsConfig` that exists
/// parses. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct TlsConfig {
    ca: Arc<[u8]>,
    identity: Option<Pem>,
    client_auth: ClientAuth,
    /// The files it was read from, for [`reload`](Self::reload).
    files: Option<Arc<TlsPaths>>,
}

/// Where a [`TlsConfig`] read by [`TlsConfig::from_files`] came from.
#[derive(Debug)]
struct TlsPaths {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A certificate chain and its private key, PEM.
#[derive(Clone)]
struct Pem {
    cert: Arc<[u8]>,
    key: Arc<[u8]>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("identity", &self.identity.is_some())
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str, reason: impl fmt::Display) -> CoreError {
    CoreError::Tls { reason: format!("{what}: {reason}") }
}

fn check_certs(what: &str, pem: &[u8]) -> Result<(), CoreError> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(what, e))?;
    if certs.is_empty() {
        return Err(invalid(what, "no PEM certificate found"));
    }
    Ok(())
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, CoreError> {
    std::fs::read(path).map_err(|e| invalid(what, format_args!("cannot read {}: {e}", path.display())))
}

impl TlsConfig {
    /// Trusts the certificate authority in `ca_pem` and has no certificate of its
    /// own: for clients of a node or balancer that does not require one.
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] when `ca_pem` holds no PEM certificate.
    pub fn from_ca_pem(ca_pem: impl Into<Vec<u8>>) -> Result<Self, CoreError> {
        let ca: Vec<u8> = ca_pem.into();
        check_certs("CA certificate", &ca)?;
        let tls = Self { ca: ca.into(), identity: None, client_auth: ClientAuth::default(), files: None };
        tls.check_client()?;
        Ok(tls)
    }

    /// Trusts the CA in `ca_pem` and presents the certificate chain `cert_pem`
    /// with the private key `key_pem` (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] naming the part that does not parse.
    pub fn from_pem(
        ca_pem: impl Into<Vec<u8>>,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<Self, CoreError> {
        let mut tls = Self::from_ca_pem(ca_pem)?;
        let (cert, key): (Vec<u8>, Vec<u8>) = (cert_pem.into(), key_pem.into());
        check_certs("certificate", &cert)?;
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| invalid("private key", e))?;
        tls.identity = Some(Pem { cert: cert.into(), key: key.into() });
        tls.check_client()?;
        tonic::transport::Server::builder()
            .tls_config(tls.server_config()?)
            .map_err(|e| invalid("certificate and key", tonic_source(&e)))?;
        Ok(tls)
    }

    /// [`from_ca_pem`](Self::from_ca_pem) reading the CA certificate from a file.
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] naming the file that cannot be read or parsed.
    pub fn from_ca_file(ca: &Path) -> Result<Self, CoreError> {
        Self::from_ca_pem(read("CA certificate", ca)?)
    }

    /// [`from_pem`](Self::from_pem) reading the three PEM files.
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] naming the file that cannot be read or parsed.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, CoreError> {
        let mut tls = Self::from_pem(
            read("CA certificate", ca)?,
            read("certificate", cert)?,
            read("private key", key)?,
        )?;
        tls.files =
            Some(Arc::new(TlsPaths { ca: ca.to_owned(), cert: cert.to_owned(), key: key.to_owned() }));
        Ok(tls)
    }

    /// This configuration read again from the files it came from (see
    /// [`from_files`](Self::from_files)), keeping its [`ClientAuth`]: for certificate
    /// rotation. `None` when it was not read from files.
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] naming the file that cannot be read or parsed.
    pub fn reload(&self) -> Option<Result<Self, CoreError>> {
        let files = self.files.as_ref()?;
        Some(Self::from_files(&files.ca, &files.cert, &files.key).map(|t| t.client_auth(self.client_auth)))
    }

    /// The newest modification time among the files it came from, or `None` (not
    /// from files, or unreadable): poll it to reload when the files change.
    pub fn files_modified(&self) -> Option<std::time::SystemTime> {
        let files = self.files.as_ref()?;
        [&files.ca, &files.cert, &files.key]
            .into_iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    /// Builds a client once, so that a configuration that exists also connects.
    fn check_client(&self) -> Result<(), CoreError> {
        tonic::transport::Endpoint::from_static("https://localhost")
            .tls_config(self.client_config("localhost"))
            .map(drop)
            .map_err(|e| invalid("TLS client", tonic_source(&e)))
    }

    /// Whether servers built with this configuration require client certificates
    /// (default [`ClientAuth::Required`]).
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// Whether this configuration holds a certificate and key of its own.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca
    }

    /// This configuration's own certificate chain and private key, PEM, when it
    /// has them (for TLS stacks other than tonic's, such as the balancer's).
    pub fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity.as_ref().map(|Pem { cert, key }| (&cert[..], &key[..]))
    }

    /// Whether servers built with this configuration require client certificates.
    pub fn requires_client_auth(&self) -> bool {
        self.client_auth == ClientAuth::Required
    }

    /// tonic's server configuration: this certificate, clients verified against
    /// the CA (required or optional as configured).
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] when there is no certificate of its own to serve with.
    pub fn server_config(&self) -> Result<ServerTlsConfig, CoreError> {
        let Pem { cert, key } = self
            .identity
            .as_ref()
            .ok_or_else(|| invalid("server", "a TLS server needs a certificate and key"))?;
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(&cert[..], &key[..]))
            .client_ca_root(Certificate::from_pem(&self.ca[..]))
            .client_auth_optional(self.client_auth == ClientAuth::Optional))
    }

    /// tonic's client configuration for a server reached as `host` (a DNS name or
    /// an IP address, IPv6 with or without brackets): its certificate must chain to
    /// the CA and name `host`; this configuration's own certificate is presented
    /// when it has one.
    pub fn client_config(&self, host: &str) -> ClientTlsConfig {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca[..])).domain_name(host);
        if let Some(Pem { cert, key }) = &self.identity {
            config = config.identity(Identity::from_pem(&cert[..], &key[..]));
        }
        config
    }
}

/// A TLS listener's configuration that can be replaced while it serves: each new
/// connection is accepted with the newest one (open connections keep theirs).
/// Certificates rotate without a restart this way; tonic's own server TLS is fixed
/// when the server starts.
///
/// It offers ALPN `h2` and `http/1.1` and verifies client certificates against the
/// CA (required or optional as the [`TlsConfig`] says); tonic reads the peer's
/// certificates from the streams it yields (`tonic::Request::peer_certs`).
#[derive(Clone)]
pub struct ReloadableServerTls {
    current: Arc<parking_lot::RwLock<Arc<rustls::ServerConfig>>>,
}

impl fmt::Debug for ReloadableServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadableServerTls(..)")
    }
}

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The refused handshakes of every node TLS port in this process.
static REFUSED: crate::tls_accept::HandshakeRefusals =
    crate::tls_accept::HandshakeRefusals::new("node TLS port");

impl ReloadableServerTls {
    /// A listener configuration serving `tls`'s certificate.
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] when `tls` has no certificate of its own or rustls refuses it.
    pub fn new(tls: &TlsConfig) -> Result<Self, CoreError> {
        Ok(Self { current: Arc::new(parking_lot::RwLock::new(server_config(tls)?)) })
    }

    /// Serves `tls` to every connection accepted from now on.
    ///
    /// # Errors
    ///
    /// [`CoreError::Tls`] as [`new`](Self::new); the current configuration stays.
    pub fn replace(&self, tls: &TlsConfig) -> Result<(), CoreError> {
        *self.current.write() = server_config(tls)?;
        Ok(())
    }

    /// The TLS connections completed on `incoming`, for tonic's
    /// `serve_with_incoming`. Handshakes run concurrently (a slow client holds up no
    /// other) and fail after 10 s; a failed one is dropped. The listener closes
    /// when the returned stream is dropped.
    pub fn incoming(
        &self,
        mut incoming: tonic::transport::server::TcpIncoming,
    ) -> impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let current = self.current.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    () = tx.closed() => return,
                    next = incoming.next() => match next {
                        Some(Ok(tcp)) => tcp,
                        Some(Err(_)) => {
                            // Out of file descriptors, say: back off rather than spin.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        None => return,
                    },
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(current.read().clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let client = tcp.peer_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
                    let accepted =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, crate::tls_accept::accept(&acceptor, tcp))
                            .await;
                    match accepted {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(crate::tls_accept::Refused::Closed)) => {}
                        Ok(Err(crate::tls_accept::Refused::Handshake(reason))) => {
                            REFUSED.refused(client, &reason)
                        }
                        Err(_) => {
                            let reason = format!("no handshake within {HANDSHAKE_TIMEOUT:?}");
                            REFUSED.refused(client, &reason);
                        }
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// rustls's server configuration for `tls`: its certificate, client certificates
/// verified against its CA, ALPN `h2` and `http/1.1`.
fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, CoreError> {
    let err = |e: &dyn fmt::Display| invalid("server", e);
    let Pem { cert, key } =
        tls.identity.as_ref().ok_or_else(|| invalid("server", "a TLS server needs a certificate and key"))?;
    let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&tls.ca) {
        roots.add(ca.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = match tls.client_auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_client_cert_verifier(verifier.build().map_err(|e| err(&e))?)
        .with_single_cert(chain, key)
        .map_err(|e| err(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A tonic error with its causes, which its own text leaves out.
fn tonic_source(e: &tonic::transport::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_naming_the_part() {
        let err = TlsConfig::from_ca_pem("not a certificate").unwrap_err();
        assert!(err.to_string().contains("CA certificate"), "{err}");
    }

    #[test]
    fn an_invalid_node_id_never_matches() {
        assert!(!certificate_names_node(&[], "not a node!"));
        assert!(!certificate_names_node(&[], "node-1"));
    }
}
