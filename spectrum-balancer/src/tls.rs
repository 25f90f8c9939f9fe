//! The balancer's TLS, on rustls with ring: an acceptor for clients (ALPN `h2` and
//! `http/1.1` on one port) and a connector to backends (ALPN `h2`), both built once
//! from [`TlsConfig`]s when the balancer starts.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use spectrum_core::tls::TlsConfig;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::BalancerError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| e.to_string())
}

fn roots(tls: &TlsConfig) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(tls.ca_pem())? {
        roots.add(cert).map_err(|e| format!("CA certificate: {e}"))?;
    }
    Ok(roots)
}

fn identity(
    tls: &TlsConfig,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    let Some((cert, key)) = tls.identity_pem() else { return Ok(None) };
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("private key: {e}"))?;
    Ok(Some((certs(cert)?, key)))
}

/// The listener's acceptor: `tls`'s certificate, ALPN `h2` then `http/1.1`, client
/// certificates verified against its CA (required or optional as it says).
pub(crate) fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, BalancerError> {
    let err = |reason: String| BalancerError::Tls { field: "tls", reason };
    let (chain, key) = identity(tls).map_err(err)?.ok_or_else(|| err("no certificate and key".into()))?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(tls).map_err(err)?), provider());
    let verifier = if tls.requires_client_auth() { verifier } else { verifier.allow_unauthenticated() };
    let verifier = verifier.build().map_err(|e| err(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| err(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The listener's acceptor, replaceable while the balancer serves.
pub(crate) struct SharedAcceptor(parking_lot::RwLock<TlsAcceptor>);

impl SharedAcceptor {
    pub(crate) fn new(acceptor: TlsAcceptor) -> Self {
        Self(parking_lot::RwLock::new(acceptor))
    }

    /// The acceptor for the next connection.
    pub(crate) fn current(&self) -> TlsAcceptor {
        self.0.read().clone()
    }

    pub(crate) fn replace(&self, acceptor: TlsAcceptor) {
        *self.0.write() = acceptor;
    }
}

impl std::fmt::Debug for SharedAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedAcceptor(..)")
    }
}

/// TLS to backends (a [`TlsConnector`], which shows nothing when debugged).
#[derive(Clone)]
pub(crate) struct Connector(pub(crate) TlsConnector);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector(..)")
    }
}

/// The connector to backends: their certificates verified against `tls`'s CA,
/// its own certificate presented when it has one, ALPN `h2`.
pub(crate) fn connector(tls: &TlsConfig) -> Result<Connector, BalancerError> {
    let err = |reason: String| BalancerError::Tls { field: "upstream_tls", reason };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots(tls).map_err(err)?);
    let mut config = match identity(tls).map_err(err)? {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| err(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Connector(TlsConnector::from(Arc::new(config))))
}
