//! Certificates for a cluster that runs over TLS: one cluster CA, and a certificate
//! per node (and per balancer) signed by it. What `spectrum cert init` and
//! `spectrum cert issue` run, and what tests use to make their own.
//!
//! A node certificate's subject alternative names hold the node's id name,
//! [`node_dns_name`] (`<node-id>.spectrum.internal`), which peers check against the
//! node id a replication message claims, and the host names and IP addresses the
//! node is reached at (a client verifies the host it dialled). Certificates are
//! ECDSA P-256, made with `rcgen` on ring.
//!
//! ```
//! use spectrum::cert::CertificateAuthority;
//! use spectrum::core::tls::TlsConfig;
//!
//! let ca = CertificateAuthority::generate()?;
//! let node = ca.issue(&"node-1".parse()?, &["127.0.0.1".into(), "localhost".into()])?;
//! let tls = TlsConfig::from_pem(ca.cert_pem(), node.cert_pem, node.key_pem)?;
//! assert!(tls.has_identity());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! On disk ([`init_dir`], [`issue_in_dir`]) a directory holds `ca.pem` and `ca.key`,
//! and `<node-id>.pem`, `<node-id>.key` per issued certificate; keys are written
//! with mode 0600 and nothing is overwritten.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use spectrum_core::NodeId;
pub use spectrum_core::tls::node_dns_name;
use thiserror::Error;

/// File name of the CA certificate in a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// The CA certificate's common name. `cert issue` rebuilds the issuer from it and the
/// CA key, so it is fixed.
const CA_COMMON_NAME: &str = "Spectrum cluster CA";

/// Errors making or storing certificates.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CertError {
    /// The certificate library refused: a malformed host name, a key that does not parse.
    #[error("{what}: {source}")]
    Generate {
        /// What was being made or read.
        what: String,
        /// The library's error.
        source: rcgen::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A file to be written exists already (nothing is overwritten).
    #[error("{} exists already; remove it first to replace it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

fn gen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let what = what.into();
    move |source| CertError::Generate { what, source }
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// A cluster's certificate authority: its certificate and key, able to issue
/// node certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority").finish_non_exhaustive()
    }
}

/// How long a cluster CA is valid, in years from the day it is made.
pub const CA_VALIDITY_YEARS: i16 = 10;
/// How long a node or balancer certificate is valid, in years from the day it is
/// issued (renew it before then: `spectrum cert issue` again, then reload).
pub const CERT_VALIDITY_YEARS: i16 = 1;

/// Sets `params` valid from the start of today (UTC) for `years` years.
fn valid_for(params: &mut CertificateParams, years: i16) {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let until = today.checked_add(jiff::Span::new().years(years)).unwrap_or(today);
    let day = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(i32::from(d.year()), d.month().unsigned_abs(), d.day().unsigned_abs())
    };
    params.not_before = day(today);
    params.not_after = day(until);
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    valid_for(&mut params, CA_VALIDITY_YEARS);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl CertificateAuthority {
    /// A new CA with a fresh key.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] when key generation fails.
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(gen_err("CA key"))?;
        let params = ca_params();
        let cert = params.self_signed(&key).map_err(gen_err("CA certificate"))?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA made by [`generate`](Self::generate) (or `spectrum cert init`) from its
    /// certificate and key.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] when the key does not parse.
    pub fn from_pem(cert_pem: impl Into<String>, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(gen_err("CA key"))?;
        Ok(Self { cert_pem: cert_pem.into(), issuer: Issuer::new(ca_params(), key) })
    }

    /// The CA certificate, PEM: what every node, balancer and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8). Keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for node `id`, valid for client and server use, naming
    /// [`node_dns_name`] of `id` and each of `hosts` (DNS names or IP addresses).
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] when a host is neither an IP address nor a DNS name.
    pub fn issue(&self, id: &NodeId, hosts: &[String]) -> Result<IssuedCert, CertError> {
        let mut names = vec![node_dns_name(id)];
        names.extend(hosts.iter().filter(|h| !h.is_empty()).cloned());
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(id.as_str(), names, usages)
    }

    /// A server-only certificate (a balancer's) for `hosts`: it names no node id and
    /// is not valid as a client certificate, so its key can never pass for a node.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] when a host is neither an IP address nor a DNS name.
    pub fn issue_server(&self, name: &str, hosts: &[String]) -> Result<IssuedCert, CertError> {
        let names = hosts.iter().filter(|h| !h.is_empty()).cloned().collect::<Vec<_>>();
        self.sign(name, names, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A client-only certificate (a management client's, for a balancer with
    /// `require_client_certificates`): it names no host and no node id, and is
    /// valid for client use only, so it can neither serve nor pass for a node
    /// (peers check the node name a replication call claims).
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] when signing fails.
    pub fn issue_client(&self, name: &str) -> Result<IssuedCert, CertError> {
        self.sign(name, Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn sign(
        &self,
        common_name: &str,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<IssuedCert, CertError> {
        let mut params = CertificateParams::new(names).map_err(gen_err("subject alternative names"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        valid_for(&mut params, CERT_VALIDITY_YEARS);
        let key = KeyPair::generate().map_err(gen_err("node key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err("node certificate"))?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Paths of a certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// Creates a cluster CA in `dir` (created if missing): `ca.pem` and `ca.key`.
///
/// # Errors
///
/// [`CertError::Exists`] when either file exists; [`CertError::Io`] when one cannot
/// be written.
pub fn init_dir(dir: &Path) -> Result<CertPaths, CertError> {
    let paths = CertPaths { cert: dir.join(CA_CERT_FILE), key: dir.join(CA_KEY_FILE) };
    refuse_existing(&paths)?;
    let ca = CertificateAuthority::generate()?;
    write_pair(dir, &paths, ca.cert_pem(), &ca.key_pem())?;
    Ok(paths)
}

/// Issues a certificate for node `id` with the CA in `dir`, written beside it as
/// `<id>.pem` and `<id>.key` (see [`CertificateAuthority::issue`]).
///
/// # Errors
///
/// [`CertError::Io`] when the CA cannot be read or the files written;
/// [`CertError::Exists`] when they exist; [`CertError::Generate`] for a bad host.
pub fn issue_in_dir(dir: &Path, id: &NodeId, hosts: &[String]) -> Result<CertPaths, CertError> {
    issue_with(dir, id, |ca| ca.issue(id, hosts))
}

/// Issues a server-only certificate (see [`CertificateAuthority::issue_server`]) as
/// `<name>.pem` and `<name>.key` with the CA in `dir`: for a balancer.
///
/// # Errors
///
/// As [`issue_in_dir`].
pub fn issue_server_in_dir(dir: &Path, name: &NodeId, hosts: &[String]) -> Result<CertPaths, CertError> {
    issue_with(dir, name, |ca| ca.issue_server(name.as_str(), hosts))
}

/// Issues a client-only certificate (see [`CertificateAuthority::issue_client`])
/// as `<name>.pem` and `<name>.key` with the CA in `dir`: for a management
/// client of a balancer that requires client certificates.
///
/// # Errors
///
/// As [`issue_in_dir`].
pub fn issue_client_in_dir(dir: &Path, name: &NodeId) -> Result<CertPaths, CertError> {
    issue_with(dir, name, |ca| ca.issue_client(name.as_str()))
}

fn issue_with(
    dir: &Path,
    id: &NodeId,
    issue: impl FnOnce(&CertificateAuthority) -> Result<IssuedCert, CertError>,
) -> Result<CertPaths, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| CertError::Io { path, source })
    };
    let ca = CertificateAuthority::from_pem(read(CA_CERT_FILE)?, &read(CA_KEY_FILE)?)?;
    let paths = CertPaths { cert: dir.join(format!("{id}.pem")), key: dir.join(format!("{id}.key")) };
    refuse_existing(&paths)?;
    let issued = issue(&ca)?;
    write_pair(dir, &paths, &issued.cert_pem, &issued.key_pem)?;
    Ok(paths)
}

fn refuse_existing(paths: &CertPaths) -> Result<(), CertError> {
    for path in [&paths.cert, &paths.key] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    Ok(())
}

fn write_pair(dir: &Path, paths: &CertPaths, cert: &str, key: &str) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.to_owned(), source })?;
    write_new(&paths.key, key, 0o600)?;
    write_new(&paths.cert, cert, 0o644)
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let io = |source| CertError::Io { path: path.to_owned(), source };
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => CertError::Exists { path: path.to_owned() },
        _ => io(e),
    })?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_valid_from_today_for_a_bounded_number_of_years() {
        let mut params = CertificateParams::default();
        valid_for(&mut params, CERT_VALIDITY_YEARS);
        let days = (params.not_after - params.not_before).whole_days();
        assert!((365..=366).contains(&days), "{days}");
        valid_for(&mut params, CA_VALIDITY_YEARS);
        let days = (params.not_after - params.not_before).whole_days();
        assert!((3650..=3653).contains(&days), "{days}");
    }
    use spectrum_core::tls::certificate_names_node;

    fn der(pem: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).map(Result::unwrap).collect()
    }

    #[test]
    fn a_node_certificate_names_its_node_and_no_other() {
        let ca = CertificateAuthority::generate().unwrap();
        let cert = ca.issue(&"node-1".parse().unwrap(), &["127.0.0.1".into()]).unwrap();
        assert!(certificate_names_node(&der(&cert.cert_pem), "node-1"));
        assert!(!certificate_names_node(&der(&cert.cert_pem), "node-2"));
    }

    #[test]
    fn a_server_only_certificate_names_no_node() {
        let ca = CertificateAuthority::generate().unwrap();
        let cert = ca.issue_server("balancer", &["127.0.0.1".into()]).unwrap();
        assert!(!certificate_names_node(&der(&cert.cert_pem), "balancer"));
    }

    #[test]
    fn a_client_only_certificate_names_no_node_and_loads_as_a_client_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_dir(dir.path()).unwrap();
        let alice = issue_client_in_dir(dir.path(), &"alice".parse().unwrap()).unwrap();
        let pem = std::fs::read_to_string(&alice.cert).unwrap();
        assert!(!certificate_names_node(&der(&pem), "alice"));
        let tls = spectrum_core::tls::TlsConfig::from_files(&ca.cert, &alice.cert, &alice.key);
        assert!(tls.is_ok(), "{tls:?}");
    }

    #[test]
    fn files_are_written_once_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_dir(dir.path()).unwrap();
        assert!(matches!(init_dir(dir.path()), Err(CertError::Exists { .. })));
        let node = issue_in_dir(dir.path(), &"n1".parse().unwrap(), &["localhost".into()]).unwrap();
        #[cfg(unix)]
        for key in [&ca.key, &node.key] {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let tls = spectrum_core::tls::TlsConfig::from_files(&ca.cert, &node.cert, &node.key);
        assert!(tls.is_ok(), "{tls:?}");
    }
}
