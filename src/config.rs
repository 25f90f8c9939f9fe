//! Configuration files for nodes and balancers run as their own processes
//! (`spectrum node --config FILE`, `spectrum balancer --config FILE`).
//!
//! Command-line flags and environment variables override the file: see
//! [`NodeOverrides`] and [`BalancerOverrides`].
//!
//! ```
//! let node: spectrum::config::NodeFileConfig = toml::from_str(r#"
//!     id = "node-1"
//!     cluster = "local"
//!     listen = "127.0.0.1:7101"
//!     seeds = ["http://127.0.0.1:7102", "http://127.0.0.1:7103"]
//!     token = "change-me"
//!     cluster_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
//! "#).unwrap();
//! assert_eq!(node.id.as_str(), "node-1");
//! assert!(node.cluster_key.is_some());
//! assert!(!format!("{node:?}").contains("change-me"), "Debug never shows the token or key");
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spectrum_core::tls::TlsConfig;
use spectrum_core::{ClusterId, NodeId, PeerAddr};
use spectrum_resources::ClusterKey;

use crate::auth::Token;
use crate::error::NodeError;

/// A node's configuration file. Every field is validated as it is read (ids,
/// addresses, the token, the cluster key), so a bad file is refused naming the
/// field. `Debug` shows neither the token nor the cluster key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFileConfig {
    /// The node's id.
    pub id: NodeId,
    /// The cluster's id.
    pub cluster: ClusterId,
    /// Address to listen on (`0.0.0.0:PORT` or `[::]:PORT` for every interface,
    /// which needs `advertise`).
    pub listen: SocketAddr,
    /// The address peers and balancers reach this node at, published in
    /// membership (`host:port`, an IP or a host name; default: `listen`).
    #[serde(default)]
    pub advertise: Option<PeerAddr>,
    /// Addresses of other members (`http://host:port`, IPs or host names).
    #[serde(default)]
    pub seeds: Vec<PeerAddr>,
    /// Directory for the node's durable data.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Bearer token required by the management API (the same on every node).
    #[serde(default)]
    pub token: Option<Token>,
    /// The cluster key that encrypts resource secrets at rest: 32 bytes as 64 hex
    /// digits or base64, the same on every node (see [`ClusterKey`]).
    #[serde(default, deserialize_with = "cluster_key_field")]
    pub cluster_key: Option<ClusterKey>,
    /// Anti-entropy interval in milliseconds (default 1000).
    #[serde(default)]
    pub sync_interval_ms: Option<u64>,
    /// Largest tolerated clock offset from a peer, in milliseconds (default 500).
    #[serde(default)]
    pub max_clock_offset_ms: Option<u64>,
    /// The cluster's certificates (`tls = { ca = "...", cert = "...", key = "..." }`):
    /// the node's port serves TLS only and every call to a peer is mutual TLS.
    /// Absent, the node runs plaintext (development mode).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// Paths of PEM files for TLS (relative paths from the working directory, as
/// `data_dir`): the cluster CA's certificate, and this process's certificate and
/// private key (from `spectrum cert init` and `spectrum cert issue`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificate every peer's certificate must chain to.
    pub ca: PathBuf,
    /// This process's certificate.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks the three files.
    ///
    /// # Errors
    ///
    /// [`NodeError::Core`] naming the file that cannot be read or parsed.
    pub fn load(&self) -> Result<TlsConfig, NodeError> {
        Ok(TlsConfig::from_files(&self.ca, &self.cert, &self.key)?)
    }
}

impl NodeFileConfig {
    /// The anti-entropy interval.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms.unwrap_or(1000))
    }

    /// This configuration with every value `overrides` sets replacing the file's.
    pub fn with_overrides(mut self, overrides: NodeOverrides) -> Self {
        let NodeOverrides { id, cluster, listen, advertise, seeds, data_dir, token, cluster_key } = overrides;
        self.id = id.unwrap_or(self.id);
        self.cluster = cluster.unwrap_or(self.cluster);
        self.listen = listen.unwrap_or(self.listen);
        self.advertise = advertise.or(self.advertise);
        self.seeds = seeds.unwrap_or(self.seeds);
        self.data_dir = data_dir.or(self.data_dir);
        self.token = token.or(self.token);
        self.cluster_key = cluster_key.or(self.cluster_key);
        self
    }
}

/// A bad cluster key is refused naming the field, never echoing the value.
fn cluster_key_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ClusterKey>, D::Error> {
    let key = Option::<ClusterKey>::deserialize(d)
        .map_err(|e| serde::de::Error::custom(format!("cluster_key: {e}")))?;
    Ok(key)
}

/// Values given on the command line or in the environment, each replacing the
/// file's when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeOverrides {
    /// Replaces `id`.
    pub id: Option<NodeId>,
    /// Replaces `cluster`.
    pub cluster: Option<ClusterId>,
    /// Replaces `listen`.
    pub listen: Option<SocketAddr>,
    /// Replaces `advertise`.
    pub advertise: Option<PeerAddr>,
    /// Replaces `seeds`.
    pub seeds: Option<Vec<PeerAddr>>,
    /// Replaces `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Replaces `token`.
    pub token: Option<Token>,
    /// Replaces `cluster_key`.
    pub cluster_key: Option<ClusterKey>,
}

/// One node as the balancer's configuration file names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    /// The node's id.
    pub id: NodeId,
    /// The node's address, `host:port` (an IP or a host name, resolved when the
    /// balancer starts).
    pub addr: PeerAddr,
    /// Relative weight (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// A balancer's configuration file.
///
/// `Debug` does not show the token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerFileConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The nodes to balance over.
    pub nodes: Vec<BackendEntry>,
    /// Health check interval in milliseconds (default 1000).
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
    /// The cluster's management token, with which the balancer reads membership to
    /// follow nodes joining, draining and leaving.
    #[serde(default)]
    pub token: Option<Token>,
    /// Whether to follow membership (default true): draining members get no new
    /// requests, and members that join are added.
    #[serde(default)]
    pub follow_membership: Option<bool>,
    /// The cluster's certificates and the balancer's own (`spectrum cert issue
    /// balancer --san HOST`): the balancer serves clients over TLS only (ALPN `h2`
    /// and `http/1.1` on one port; client certificates are not required) and talks
    /// TLS to the nodes, health checks and membership reads included, verifying them
    /// with the CA (it presents no certificate to them). Absent, plaintext on both
    /// sides.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

impl BalancerFileConfig {
    /// The health check interval (default 1 s).
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms.unwrap_or(1000))
    }

    /// This configuration with every value `overrides` sets replacing the file's.
    pub fn with_overrides(mut self, overrides: BalancerOverrides) -> Self {
        let BalancerOverrides { listen, health_interval_ms, token } = overrides;
        self.listen = listen.unwrap_or(self.listen);
        self.health_interval_ms = health_interval_ms.or(self.health_interval_ms);
        self.token = token.or(self.token);
        self
    }
}

/// Values given on the command line or in the environment, each replacing the
/// balancer file's when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalancerOverrides {
    /// Replaces `listen`.
    pub listen: Option<SocketAddr>,
    /// Replaces `health_interval_ms`.
    pub health_interval_ms: Option<u64>,
    /// Replaces `token`.
    pub token: Option<Token>,
}

/// Reads and parses a TOML file.
///
/// # Errors
///
/// [`NodeError::ConfigFile`] naming the file and what is wrong with it (the line
/// and the field's message; never the offending text, which may be a secret).
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, NodeError> {
    let file_error = |reason: String| NodeError::ConfigFile { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    toml::from_str(&text).map_err(|e| {
        let at = e.to_string().lines().next().unwrap_or_default().to_owned();
        file_error(format!("{at}: {}", e.message()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "id = \"n\"\ncluster = \"c\"\nlisten = \"127.0.0.1:1\"\ntoken = \"file-token\"\n";

    #[test]
    fn advertise_is_optional_and_takes_host_names() {
        let cfg: NodeFileConfig = toml::from_str(NODE).unwrap();
        assert_eq!(cfg.advertise, None, "existing files keep working");
        let cfg: NodeFileConfig =
            toml::from_str(&format!("{NODE}advertise = \"node-1.spectrum.svc:7001\"\n")).unwrap();
        assert_eq!(cfg.advertise.unwrap().as_str(), "http://node-1.spectrum.svc:7001");
        let err = toml::from_str::<NodeFileConfig>(&format!("{NODE}advertise = \"node-1\"\n")).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn tls_is_optional_and_names_three_files() {
        let cfg: NodeFileConfig = toml::from_str(NODE).unwrap();
        assert_eq!(cfg.tls, None, "a file without tls runs plaintext");
        let text = format!("{NODE}tls = {{ ca = \"c/ca.pem\", cert = \"c/n.pem\", key = \"c/n.key\" }}\n");
        let cfg: NodeFileConfig = toml::from_str(&text).unwrap();
        assert_eq!(cfg.tls.unwrap().key, PathBuf::from("c/n.key"));
        let partial = format!("{NODE}tls = {{ ca = \"c/ca.pem\" }}\n");
        assert!(toml::from_str::<NodeFileConfig>(&partial).unwrap_err().to_string().contains("cert"));
    }

    #[test]
    fn unknown_fields_are_refused_with_the_field_name() {
        let err = toml::from_str::<NodeFileConfig>(&format!("{NODE}colour = \"red\"\n")).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn balancer_files_list_their_nodes() {
        let cfg: BalancerFileConfig = toml::from_str(
            "listen = \"127.0.0.1:7100\"\n[[nodes]]\nid = \"node-1\"\naddr = \"127.0.0.1:7101\"\n",
        )
        .unwrap();
        assert_eq!(cfg.nodes.len(), 1);
        assert_eq!(cfg.nodes[0].addr.port(), 7101);
        let named: BalancerFileConfig = toml::from_str(
            "listen = \"127.0.0.1:7100\"\n[[nodes]]\nid = \"node-1\"\naddr = \"node-1.spectrum:7101\"\n",
        )
        .unwrap();
        assert_eq!(named.nodes[0].addr.as_str(), "http://node-1.spectrum:7101");
        assert_eq!(cfg.health_interval(), Duration::from_secs(1));
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let cfg: NodeFileConfig = toml::from_str(NODE).unwrap();
        let cfg = cfg.with_overrides(NodeOverrides {
            listen: Some("127.0.0.1:9".parse().unwrap()),
            token: Some("flag-token".parse().unwrap()),
            ..NodeOverrides::default()
        });
        assert_eq!(cfg.listen.port(), 9);
        assert_eq!(cfg.token.as_ref().map(Token::expose), Some("flag-token"));
        assert_eq!(cfg.id.as_str(), "n", "not overridden");
        assert!(!format!("{cfg:?}").contains("flag-token"));
    }

    #[test]
    fn a_bad_cluster_key_is_named_and_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, format!("{NODE}cluster_key = \"not-a-key-zzzz\"\n")).unwrap();
        let err = load::<NodeFileConfig>(&path).unwrap_err().to_string();
        assert!(err.contains("cluster_key"), "{err}");
        assert!(!err.contains("not-a-key-zzzz"), "{err}");
    }

    #[test]
    fn the_example_cluster_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
        let balancer: BalancerFileConfig = load(&dir.join("balancer.toml")).unwrap();
        assert_eq!(balancer.nodes.len(), 3);
        for node in &balancer.nodes {
            let cfg: NodeFileConfig = load(&dir.join(format!("{}.toml", node.id))).unwrap();
            assert_eq!(PeerAddr::from(cfg.listen), node.addr);
            assert_eq!(cfg.token, balancer.token);
            assert!(cfg.cluster_key.is_some());
            assert_eq!(cfg.seeds.len(), 2);
        }
    }
}
