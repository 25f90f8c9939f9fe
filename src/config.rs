//! Configuration files for nodes and balancers run as their own processes
//! (`spectrum node --config FILE`, `spectrum balancer --config FILE`).
//!
//! ```
//! let node: spectrum::config::NodeFileConfig = toml::from_str(r#"
//!     id = "node-1"
//!     cluster = "local"
//!     listen = "127.0.0.1:7101"
//!     seeds = ["http://127.0.0.1:7102", "http://127.0.0.1:7103"]
//! "#).unwrap();
//! assert_eq!(node.id, "node-1");
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::NodeError;

/// A node's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFileConfig {
    /// The node's id.
    pub id: String,
    /// The cluster's id.
    pub cluster: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Addresses of other members (`http://host:port`).
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Directory for the node's durable data.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Bearer token required by the management API.
    #[serde(default)]
    pub token: Option<String>,
    /// Anti-entropy interval in milliseconds (default 1000).
    #[serde(default)]
    pub sync_interval_ms: Option<u64>,
    /// Largest tolerated clock offset from a peer, in milliseconds (default 500).
    #[serde(default)]
    pub max_clock_offset_ms: Option<u64>,
}

impl NodeFileConfig {
    /// The anti-entropy interval.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms.unwrap_or(1000))
    }
}

/// One node as the balancer's configuration file names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    /// The node's id.
    pub id: String,
    /// The node's address, `host:port`.
    pub addr: SocketAddr,
    /// Relative weight (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// A balancer's configuration file.
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
}

/// Reads and parses a TOML file.
///
/// # Errors
///
/// [`NodeError::Config`] naming the file and what is wrong with it.
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, NodeError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused_with_the_field_name() {
        let err = toml::from_str::<NodeFileConfig>(
            "id = \"n\"\ncluster = \"c\"\nlisten = \"127.0.0.1:1\"\ncolour = \"red\"\n",
        )
        .unwrap_err();
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
    }
}
