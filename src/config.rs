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

use std::sync::Arc;

use serde::Deserialize;
use spectrum_balancer::strategy::{BalancingStrategy, HashKey, StrategySpec};
use spectrum_balancer::{BalancerConfig, BalancerError, BearerToken, PathMatcher};
use spectrum_core::tls::{ClientAuth, TlsConfig};
use spectrum_core::{ClusterId, NodeId, PeerAddr};
use spectrum_replication::ChangeLogLimits;
use spectrum_replication::{RaftSettings, ReplicationMode};
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
    /// Addresses of other members, each `host:port` or `http://host:port` (IPs or host names).
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
    /// Cluster keys `cluster_key` replaced, during a key rotation: secrets
    /// sealed with them still open, and peers still on one of them still
    /// replicate with this node (see
    /// [`NodeBuilder::previous_cluster_keys`](crate::NodeBuilder::previous_cluster_keys)).
    #[serde(default, deserialize_with = "previous_cluster_keys_field")]
    pub previous_cluster_keys: Vec<ClusterKey>,
    /// Anti-entropy interval in milliseconds (default 1000).
    #[serde(default)]
    pub sync_interval_ms: Option<u64>,
    /// How the cluster replicates: `"lww"` (last writer wins, the default) or
    /// `"raft"` (consensus: compare-and-set, transactions, consistent reads;
    /// writes need a majority). Chosen when the cluster is created, the same
    /// on every node.
    #[serde(default, deserialize_with = "replication_field")]
    pub replication: ReplicationMode,
    /// Raft mode: whether stopping the node (SIGTERM) also takes it out of the
    /// voters (default `false`, as Consul's `leave_on_terminate` for servers;
    /// see [`NodeBuilder::leave_on_terminate`](crate::NodeBuilder::leave_on_terminate)).
    #[serde(default)]
    pub leave_on_terminate: bool,
    /// Largest tolerated clock offset from a peer, in milliseconds (default 500).
    #[serde(default)]
    pub max_clock_offset_ms: Option<u64>,
    /// The cluster's certificates (`tls = { ca = "...", cert = "...", key = "..." }`):
    /// the node's port serves TLS only and every call to a peer is mutual TLS.
    /// Absent, the node runs plaintext (development mode).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// What the store's change log keeps, which bounds how far back a watcher
    /// can resume (`change_log = { max_entries = 100000, max_age_s = 604800 }`;
    /// both optional, those are the defaults).
    #[serde(default)]
    pub change_log: Option<ChangeLogFile>,
    /// Raft mode's timing, compaction and tombstone collection
    /// (`raft = { snapshot_every = 20000, keep_behind_snapshot = 1000,
    /// tombstone_keep = 1000, heartbeat_ms = 100, election_timeout_ms = [800, 1600] }`;
    /// all optional, those are the defaults). No effect in last-writer-wins mode.
    #[serde(default)]
    pub raft: Option<RaftFile>,
}

/// The `raft` table of a node file: [`RaftSettings`] and the tombstone
/// horizon ([`RaftReplicatorBuilder::tombstone_keep`](spectrum_replication::RaftReplicatorBuilder::tombstone_keep)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftFile {
    /// A snapshot once this many entries were applied since the last (at least 1).
    #[serde(default)]
    pub snapshot_every: Option<u64>,
    /// Entries kept in the log behind the last snapshot.
    #[serde(default)]
    pub keep_behind_snapshot: Option<u64>,
    /// A delete's tombstone is collected once its entry is this many entries
    /// behind the applied index (at least 1).
    #[serde(default)]
    pub tombstone_keep: Option<u64>,
    /// The leader's heartbeat interval in milliseconds (at least 1).
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// The range an election timeout is drawn from, in milliseconds: above
    /// the heartbeat, the first below the second.
    #[serde(default)]
    pub election_timeout_ms: Option<[u64; 2]>,
}

impl RaftFile {
    /// The settings it sets, the defaults for what it leaves out.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] naming the key of a value out of range.
    pub fn settings(&self) -> Result<RaftSettings, NodeError> {
        let bad = |field: &'static str, why: &str| NodeError::Config { field, reason: why.to_owned() };
        let mut settings = RaftSettings::default();
        if let Some(n) = self.snapshot_every {
            if n == 0 {
                return Err(bad("raft.snapshot_every", "must be at least 1"));
            }
            settings.snapshot_every = n;
        }
        if let Some(n) = self.keep_behind_snapshot {
            settings.keep_behind_snapshot = n;
        }
        if let Some(ms) = self.heartbeat_ms {
            if ms == 0 {
                return Err(bad("raft.heartbeat_ms", "must be at least 1"));
            }
            settings.heartbeat = Duration::from_millis(ms);
        }
        if let Some([min, max]) = self.election_timeout_ms {
            settings.election_timeout = (Duration::from_millis(min), Duration::from_millis(max));
        }
        // Checked on the values in force, defaults included, and named in the
        // message: a heartbeat_ms set alone can clash with the default range.
        let (min, max) = (settings.election_timeout.0.as_millis(), settings.election_timeout.1.as_millis());
        let heartbeat = settings.heartbeat.as_millis();
        if min >= max {
            let why = format!("[{min}, {max}]: the first value must be below the second");
            return Err(bad("raft.election_timeout_ms", &why));
        }
        if heartbeat >= min {
            let why = format!("[{min}, {max}] must start above heartbeat_ms ({heartbeat})");
            return Err(bad("raft.election_timeout_ms", &why));
        }
        Ok(settings)
    }

    /// The tombstone horizon it sets, if any.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] when it is 0.
    pub fn tombstone_keep(&self) -> Result<Option<u64>, NodeError> {
        match self.tombstone_keep {
            Some(0) => {
                Err(NodeError::Config { field: "raft.tombstone_keep", reason: "must be at least 1".into() })
            }
            other => Ok(other),
        }
    }
}

/// The `change_log` table of a node file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeLogFile {
    /// Most changes kept (default 100,000; at least 1).
    #[serde(default)]
    pub max_entries: Option<usize>,
    /// Age in seconds past which a change leaves the log (default 604,800: 7
    /// days; at least 1).
    #[serde(default)]
    pub max_age_s: Option<u64>,
}

impl ChangeLogFile {
    /// The limits it sets, the defaults for what it leaves out.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] naming `change_log.max_entries` or
    /// `change_log.max_age_s` when it is 0 (a log that keeps nothing would
    /// make every watch resume fail).
    pub fn limits(&self) -> Result<ChangeLogLimits, NodeError> {
        let bad = |field: &'static str| NodeError::Config { field, reason: "must be at least 1".into() };
        let mut limits = ChangeLogLimits::default();
        if let Some(entries) = self.max_entries {
            if entries == 0 {
                return Err(bad("change_log.max_entries"));
            }
            limits = limits.max_entries(entries);
        }
        if let Some(secs) = self.max_age_s {
            if secs == 0 {
                return Err(bad("change_log.max_age_s"));
            }
            limits = limits.max_age(Duration::from_secs(secs));
        }
        Ok(limits)
    }
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

/// An unknown replication mode is refused naming the key.
fn replication_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ReplicationMode, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(|e| serde::de::Error::custom(format!("replication: {e}")))
}

/// A bad cluster key is refused naming the field, never echoing the value.
fn cluster_key_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ClusterKey>, D::Error> {
    let key = Option::<ClusterKey>::deserialize(d)
        .map_err(|e| serde::de::Error::custom(format!("cluster_key: {e}")))?;
    Ok(key)
}

/// Bad previous cluster keys are refused naming the field and which one, never
/// echoing a value.
fn previous_cluster_keys_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ClusterKey>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<ClusterKey>()
                .map_err(|e| serde::de::Error::custom(format!("previous_cluster_keys[{i}]: {e}")))
        })
        .collect()
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

/// A balancer's configuration file. Every setting but `listen` and `nodes` is
/// optional; [`BalancerFileConfig::balancer_config`] turns the file into the
/// library's [`BalancerConfig`] and strategy,
/// refusing a bad value with the setting's name (an unknown setting is refused when
/// the file is read).
///
/// ```toml
/// listen = "127.0.0.1:7100"
/// admin_listen = "127.0.0.1:7190"      # /metrics and Stats, no token
/// max_request_body = 4194304           # bytes
/// max_request_headers = 16384          # bytes, as HTTP/2 counts them
/// max_connections = 10000              # client connections open at once
/// max_concurrent_streams = 256         # requests in flight per HTTP/2 connection
/// [strategy]
/// name = "consistent_hash"             # round_robin, weighted_round_robin, random,
/// hash_key = "x-tenant"                #   least_requests, peak_ewma, consistent_hash
/// load_factor = 1.25
/// [retry]
/// idempotent = ["/grpc.health.v1.Health/", "/my.pkg.Orders/Get"]  # a trailing / matches a service
/// max_attempts = 3
/// budget_ratio = 0.2
/// budget_min_per_second = 10
/// [timeouts]
/// connect_ms = 1000
/// request_ms = 30000
/// header_read_ms = 10000               # a new connection's first bytes; HTTP/1.1 headers
/// idle_ms = 60000                      # a client connection with nothing in flight
/// [[nodes]]
/// id = "node-1"
/// addr = "127.0.0.1:7101"
/// weight = 2
/// ```
///
/// `Debug` does not show the token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Where the balancer serves `/metrics` and its Stats service with no token
    /// (keep it on loopback or a management network). Default: none.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Largest request body accepted, in bytes (larger: 413 or RESOURCE_EXHAUSTED).
    /// Default: no limit.
    #[serde(default)]
    pub max_request_body: Option<u64>,
    /// Largest request header section accepted, in bytes as HTTP/2 counts it
    /// (larger: 431 or RESOURCE_EXHAUSTED); at most the nodes' own 16 KiB,
    /// which is the default. See `BalancerConfig::max_request_headers`.
    #[serde(default)]
    pub max_request_headers: Option<usize>,
    /// Most client connections open at once; a connection beyond it is
    /// refused, closed at once (default 10,000).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Most requests in flight on one HTTP/2 client connection (default 256);
    /// more are refused with `REFUSED_STREAM`.
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Threads serving client connections, each with its own runtime and its own
    /// connections to the nodes (default: one per core; at least 1).
    #[serde(default)]
    pub workers: Option<usize>,
    /// The balancing strategy and its parameters. Default: round robin.
    #[serde(default)]
    pub strategy: Option<StrategyFile>,
    /// Which requests may be retried after a node failed them, and how much.
    #[serde(default)]
    pub retry: Option<RetryFile>,
    /// Connection and request timeouts.
    #[serde(default)]
    pub timeouts: Option<TimeoutsFile>,
    /// The cluster's certificates and the balancer's own (`spectrum cert issue
    /// balancer --san HOST`): the balancer serves clients over TLS only (ALPN `h2`
    /// and `http/1.1` on one port; client certificates are not required) and talks
    /// TLS to the nodes, health checks and membership reads included, verifying them
    /// with the CA (it presents no certificate to them). Absent, plaintext on both
    /// sides.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// With `tls`: whether every client must present a certificate chaining to the
    /// cluster CA (`spectrum cert issue NAME` for each client); default false
    /// (clients need only trust the CA, and present a token).
    #[serde(default)]
    pub require_client_certificates: Option<bool>,
}

/// The balancer file's `[strategy]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyFile {
    /// Which strategy.
    pub name: StrategyName,
    /// The header or gRPC metadata key whose value routes a request
    /// (`consistent_hash`: the same value goes to the same node), or
    /// `"client_address"` for the client's IP address. Default: none (requests are
    /// spread as if every key were different).
    #[serde(default)]
    pub hash_key: Option<String>,
    /// `consistent_hash`'s bounded-load factor: no node gets more than this times
    /// the mean load (at least 1; default 1.25).
    #[serde(default)]
    pub load_factor: Option<f64>,
}

/// A strategy by name (see `spectrum_balancer::strategy`): the same names the
/// database's `balancer/strategy` and `spectrum balancer set-strategy` take.
pub use spectrum_balancer::strategy::StrategyName;

/// The balancer file's `[retry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Paths safe to send twice: a path ending in `/` matches every method of a
    /// service, any other path one method. Replaces the default list
    /// ([`DEFAULT_IDEMPOTENT`]: health, reflection and the management API's reads).
    #[serde(default)]
    pub idempotent: Option<Vec<String>>,
    /// Most nodes tried for one request (at least 1; default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Retries earned per request, 0 to 1 (default 0.2).
    #[serde(default)]
    pub budget_ratio: Option<f64>,
    /// Retries earned per second whatever the traffic (default 10).
    #[serde(default)]
    pub budget_min_per_second: Option<u32>,
}

/// The balancer file's `[timeouts]`, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Longest time to connect to a node (default 1000; at least 1).
    #[serde(default)]
    pub connect_ms: Option<u64>,
    /// Longest wait for a node's response headers (default: none).
    #[serde(default)]
    pub request_ms: Option<u64>,
    /// Longest a health check may take (default as the library's).
    #[serde(default)]
    pub health_ms: Option<u64>,
    /// Longest a new client connection may take to send its first bytes (or
    /// its TLS handshake), and an HTTP/1.1 client its request's headers, the
    /// next request's on a keep-alive connection included (default 10000): a
    /// connection that sends nothing, half a request line or half a preface is
    /// closed after it.
    #[serde(default)]
    pub header_read_ms: Option<u64>,
    /// A client connection with no request in flight for this long is closed
    /// (default 60000).
    #[serde(default)]
    pub idle_ms: Option<u64>,
}

impl TimeoutsFile {
    /// Sets the timeouts the file names on `config`.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] naming a timeout of 0 (`timeouts.connect_ms`, …).
    fn apply(&self, config: &mut BalancerConfig) -> Result<(), NodeError> {
        for (field, ms) in [
            ("timeouts.connect_ms", self.connect_ms),
            ("timeouts.request_ms", self.request_ms),
            ("timeouts.health_ms", self.health_ms),
            ("timeouts.header_read_ms", self.header_read_ms),
            ("timeouts.idle_ms", self.idle_ms),
        ] {
            if ms == Some(0) {
                return Err(NodeError::Config { field, reason: "must be at least 1 ms".into() });
            }
        }
        let or = |ms: Option<u64>, default: Duration| ms.map_or(default, Duration::from_millis);
        config.connect_timeout = or(self.connect_ms, config.connect_timeout);
        config.request_timeout = self.request_ms.map(Duration::from_millis).or(config.request_timeout);
        config.health_timeout = or(self.health_ms, config.health_timeout);
        config.header_read_timeout = or(self.header_read_ms, config.header_read_timeout);
        config.idle_timeout = or(self.idle_ms, config.idle_timeout);
        Ok(())
    }
}

/// The `hash_key` that routes by the client's IP address.
pub use spectrum_balancer::strategy::CLIENT_ADDRESS;

/// Requests the `spectrum` balancer and the in-process [`Cluster`](crate::Cluster)
/// retry after a node failed them, unless a file says otherwise: health checks,
/// reflection, and the management API's reads.
pub const DEFAULT_IDEMPOTENT: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/spectrum.management.v1.Management/Get",
    "/spectrum.management.v1.Management/List",
    "/spectrum.management.v1.Management/Status",
    "/spectrum.management.v1.Management/ShowLicense",
    "/spectrum.management.v1.Management/ListDataflows",
    "/spectrum.management.v1.Management/ShowDataflow",
    "/spectrum.management.v1.Management/ListResources",
    "/spectrum.management.v1.Management/ShowResource",
    "/spectrum.management.v1.Management/ExportResources",
    "/spectrum.management.v1.Management/ExportConfig",
    "/spectrum.management.v1.Management/ListUsers",
    "/spectrum.management.v1.Management/ListAudit",
    "/spectrum.management.v1.Management/ShowBalancerSettings",
];

/// A path of the `idempotent` list as a matcher (a trailing `/` matches a service).
pub fn idempotent_matcher(path: &str) -> PathMatcher {
    if path.ends_with('/') { PathMatcher::prefix(path) } else { PathMatcher::Exact(path.to_owned()) }
}

/// The default retriable requests ([`DEFAULT_IDEMPOTENT`]) as matchers.
pub fn default_idempotent() -> Vec<PathMatcher> {
    DEFAULT_IDEMPOTENT.iter().map(|p| idempotent_matcher(p)).collect()
}

/// The balancer file's key for a [`BalancerConfig`] field, so that a value
/// out of range is refused naming what the file says (`retry.budget_ratio`,
/// not the library's `retry_budget.ratio`).
fn balancer_file_key(field: &'static str) -> &'static str {
    match field {
        "health_interval" => "health_interval_ms",
        "health_timeout" => "timeouts.health_ms",
        "connect_timeout" => "timeouts.connect_ms",
        "header_read_timeout" => "timeouts.header_read_ms",
        "idle_timeout" => "timeouts.idle_ms",
        "max_attempts" => "retry.max_attempts",
        "retry_budget.ratio" => "retry.budget_ratio",
        other => other,
    }
}

impl BalancerFileConfig {
    /// The library's configuration and strategy for this file (nodes and membership
    /// discovery are wired by the caller).
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] naming the setting when a value is out of range.
    pub fn balancer_config(&self) -> Result<(BalancerConfig, Arc<dyn BalancingStrategy>), NodeError> {
        let invalid = |field: &'static str, reason: &str| NodeError::Config { field, reason: reason.into() };
        let mut config = BalancerConfig {
            listen: self.listen,
            health_interval: self.health_interval(),
            admin_listen: self.admin_listen,
            max_request_body: self.max_request_body,
            idempotent: default_idempotent(),
            // `Stats` on the public port answers the holders of the cluster's token only
            // (and is off there when the file sets none).
            stats_token: self.token.as_ref().map(|t| BearerToken::new(t.expose())),
            ..BalancerConfig::default()
        };
        if let Some(retry) = &self.retry {
            if let Some(paths) = &retry.idempotent {
                if paths.iter().any(|p| !p.starts_with('/')) {
                    return Err(invalid("retry.idempotent", "every path must start with '/'"));
                }
                config.idempotent = paths.iter().map(|p| idempotent_matcher(p)).collect();
            }
            config.max_attempts = retry.max_attempts.unwrap_or(config.max_attempts);
            config.retry_budget.ratio = retry.budget_ratio.unwrap_or(config.retry_budget.ratio);
            config.retry_budget.min_per_second =
                retry.budget_min_per_second.unwrap_or(config.retry_budget.min_per_second);
        }
        if let Some(t) = &self.timeouts {
            t.apply(&mut config)?;
        }
        config.max_connections = self.max_connections.unwrap_or(config.max_connections);
        config.max_request_headers = self.max_request_headers.unwrap_or(config.max_request_headers);
        config.max_concurrent_streams = self.max_concurrent_streams.unwrap_or(config.max_concurrent_streams);
        config.workers = self.workers.unwrap_or(config.workers);
        let spec = self.strategy_spec()?;
        match spec.hash_key() {
            Some(HashKey::Header(name)) => config.affinity_header = Some(name.clone()),
            Some(HashKey::ClientAddress) => config.affinity_client_address = true,
            _ => {}
        }
        config.validate().map_err(|e| match e {
            BalancerError::InvalidConfig { field, reason } => {
                NodeError::Config { field: balancer_file_key(field), reason: reason.to_owned() }
            }
            other => NodeError::Balancer(other),
        })?;
        Ok((config, spec.build()))
    }

    /// The file's `[strategy]` as a checked spec (round robin when the file has
    /// none): the strategy a `spectrum balancer` runs while the cluster's database
    /// sets none (`spectrum balancer set-strategy` overrides it; `clear-strategy`
    /// brings it back).
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] naming the setting (`strategy.hash_key`,
    /// `strategy.load_factor`).
    pub fn strategy_spec(&self) -> Result<StrategySpec, NodeError> {
        let Some(s) = &self.strategy else { return Ok(StrategySpec::named(StrategyName::RoundRobin)) };
        StrategySpec::new(s.name, s.hash_key.as_deref(), s.load_factor).map_err(|e| match e {
            BalancerError::InvalidStrategy { field, reason } => NodeError::Config {
                field: match field {
                    "hash_key" => "strategy.hash_key",
                    "load_factor" => "strategy.load_factor",
                    _ => "strategy.name",
                },
                reason,
            },
            other => NodeError::Config { field: "strategy", reason: other.to_string() },
        })
    }

    /// How the balancer's TLS listener treats client certificates.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] naming `require_client_certificates` when it is set
    /// without `tls`.
    pub fn client_auth(&self) -> Result<ClientAuth, NodeError> {
        match (self.require_client_certificates.unwrap_or(false), &self.tls) {
            (true, None) => Err(NodeError::Config {
                field: "require_client_certificates",
                reason: "needs `tls` (the CA that client certificates must chain to)".into(),
            }),
            (true, Some(_)) => Ok(ClientAuth::Required),
            (false, _) => Ok(ClientAuth::Optional),
        }
    }

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
    fn the_change_log_limits_are_optional_with_defaults_for_what_is_left_out() {
        let cfg: NodeFileConfig = toml::from_str(NODE).unwrap();
        assert_eq!(cfg.change_log, None, "existing files keep working");
        let cfg: NodeFileConfig =
            toml::from_str(&format!("{NODE}change_log = {{ max_entries = 500 }}\n")).unwrap();
        let limits = cfg.change_log.unwrap().limits().unwrap();
        assert_eq!((limits.entries(), limits.age()), (500, ChangeLogLimits::default().age()));
        let cfg: NodeFileConfig =
            toml::from_str(&format!("{NODE}change_log = {{ max_age_s = 60 }}\n")).unwrap();
        assert_eq!(cfg.change_log.unwrap().limits().unwrap().age(), Duration::from_secs(60));
        for (zero, field) in
            [("max_entries = 0", "change_log.max_entries"), ("max_age_s = 0", "change_log.max_age_s")]
        {
            let cfg: NodeFileConfig = toml::from_str(&format!("{NODE}change_log = {{ {zero} }}\n")).unwrap();
            let err = cfg.change_log.unwrap().limits().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        let bad = format!("{NODE}change_log = {{ max_entries = -1 }}\n");
        assert!(toml::from_str::<NodeFileConfig>(&bad).is_err(), "a negative count is refused");
        let unknown = format!("{NODE}change_log = {{ entries = 5 }}\n");
        assert!(toml::from_str::<NodeFileConfig>(&unknown).unwrap_err().to_string().contains("entries"));
    }

    #[test]
    fn raft_settings_are_optional_and_a_value_out_of_range_is_refused_naming_its_key() {
        let cfg: NodeFileConfig = toml::from_str(NODE).unwrap();
        assert_eq!(cfg.raft, None, "existing files keep working");
        let cfg: NodeFileConfig = toml::from_str(&format!(
            "{NODE}raft = {{ tombstone_keep = 50, snapshot_every = 200, election_timeout_ms = [300, 600] }}\n"
        ))
        .unwrap();
        let raft = cfg.raft.unwrap();
        assert_eq!(raft.tombstone_keep().unwrap(), Some(50));
        let settings = raft.settings().unwrap();
        assert_eq!(settings.snapshot_every, 200);
        assert_eq!(settings.election_timeout, (Duration::from_millis(300), Duration::from_millis(600)));
        assert_eq!(settings.heartbeat, RaftSettings::default().heartbeat);
        for (text, key) in [
            ("tombstone_keep = 0", "raft.tombstone_keep"),
            ("snapshot_every = 0", "raft.snapshot_every"),
            ("heartbeat_ms = 0", "raft.heartbeat_ms"),
            ("election_timeout_ms = [600, 300]", "raft.election_timeout_ms"),
            ("heartbeat_ms = 500, election_timeout_ms = [300, 600]", "raft.election_timeout_ms"),
        ] {
            let raft = toml::from_str::<NodeFileConfig>(&format!("{NODE}raft = {{ {text} }}\n"))
                .unwrap()
                .raft
                .unwrap();
            let err = raft.settings().err().or(raft.tombstone_keep().err()).expect(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let err =
            toml::from_str::<NodeFileConfig>(&format!("{NODE}raft = {{ tombstones = 5 }}\n")).unwrap_err();
        assert!(err.to_string().contains("tombstones"), "{err}");
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
    fn the_replication_mode_defaults_to_lww_and_an_unknown_one_is_refused_naming_the_key() {
        let lww = toml::from_str::<NodeFileConfig>(NODE).unwrap();
        assert_eq!(lww.replication, ReplicationMode::LastWriterWins);
        let raft = toml::from_str::<NodeFileConfig>(&format!("{NODE}replication = \"raft\"\n")).unwrap();
        assert_eq!(raft.replication, ReplicationMode::Raft);
        let err = toml::from_str::<NodeFileConfig>(&format!("{NODE}replication = \"paxos\"\n")).unwrap_err();
        assert!(err.to_string().contains("replication: unknown replication mode \"paxos\""), "{err}");
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

    fn balancer(extra: &str) -> Result<BalancerFileConfig, toml::de::Error> {
        toml::from_str(&format!(
            "listen = \"127.0.0.1:7100\"\n{extra}\n[[nodes]]\nid = \"n1\"\naddr = \"127.0.0.1:7101\"\n"
        ))
    }

    #[test]
    fn every_strategy_is_chosen_by_name_with_its_parameters() {
        for name in [
            "round_robin",
            "weighted_round_robin",
            "random",
            "least_requests",
            "peak_ewma",
            "consistent_hash",
        ] {
            let cfg = balancer(&format!("[strategy]\nname = \"{name}\"")).unwrap();
            let (_, strategy) = cfg.balancer_config().unwrap();
            let debug = format!("{strategy:?}").to_ascii_lowercase();
            assert!(debug.starts_with(&name.replace('_', "")), "{name}: {debug}");
        }
        let cfg =
            balancer("[strategy]\nname = \"consistent_hash\"\nhash_key = \"X-Tenant\"\nload_factor = 1.5")
                .unwrap();
        let (config, strategy) = cfg.balancer_config().unwrap();
        assert!(format!("{strategy:?}").starts_with("ConsistentHash"), "{strategy:?}");
        assert_eq!(config.affinity_header.unwrap().as_str(), "x-tenant");
        let by_client =
            balancer("[strategy]\nname = \"consistent_hash\"\nhash_key = \"client_address\"").unwrap();
        let (config, _) = by_client.balancer_config().unwrap();
        assert!(config.affinity_client_address && config.affinity_header.is_none());
    }

    #[test]
    fn client_certificates_are_required_only_when_asked_and_only_with_tls() {
        let plain = balancer("").unwrap();
        assert_eq!(plain.client_auth().unwrap(), ClientAuth::Optional);
        let err = balancer("require_client_certificates = true").unwrap().client_auth().unwrap_err();
        assert!(err.to_string().contains("require_client_certificates"), "{err}");
        let tls = "tls = { ca = \"ca.pem\", cert = \"b.pem\", key = \"b.key\" }\nrequire_client_certificates = true";
        assert_eq!(balancer(tls).unwrap().client_auth().unwrap(), ClientAuth::Required);
    }

    #[test]
    fn bad_balancer_settings_are_refused_naming_the_setting() {
        let unknown = balancer("[strategy]\nname = \"fastest\"").unwrap_err().to_string();
        assert!(unknown.contains("fastest") && unknown.contains("round_robin"), "{unknown}");
        let typo = balancer("[retry]\nmax_attempt = 2").unwrap_err().to_string();
        assert!(typo.contains("max_attempt"), "{typo}");
        for (extra, field) in [
            ("[strategy]\nname = \"consistent_hash\"\nload_factor = 0.5", "strategy.load_factor"),
            ("[strategy]\nname = \"random\"\nload_factor = 2.0", "strategy.load_factor"),
            ("[strategy]\nname = \"random\"\nhash_key = \"bad key\"", "strategy.hash_key"),
            ("[retry]\nidempotent = [\"no-slash\"]", "retry.idempotent"),
            ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
            ("[retry]\nbudget_ratio = 2.0", "retry.budget_ratio"),
            ("health_interval_ms = 0", "health_interval_ms"),
            ("[timeouts]\nconnect_ms = 0", "timeouts.connect_ms"),
            ("[timeouts]\nidle_ms = 0", "timeouts.idle_ms"),
            ("max_concurrent_streams = 0", "max_concurrent_streams"),
            ("max_connections = 0", "max_connections"),
            ("max_request_headers = 100", "max_request_headers"),
            ("workers = 0", "workers"),
        ] {
            let err = balancer(extra).unwrap().balancer_config().unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid configuration: {field}: ")), "{extra}: {err}");
        }
    }

    #[test]
    fn connection_limits_and_client_timeouts_come_from_the_file() {
        let file = "max_connections = 500\nmax_concurrent_streams = 32\nmax_request_headers = 8192\nworkers = 3\n[timeouts]\nheader_read_ms = 2000\nidle_ms = 15000";
        let (config, _) = balancer(file).unwrap().balancer_config().unwrap();
        assert_eq!((config.max_connections, config.max_concurrent_streams), (500, 32));
        assert_eq!(config.max_request_headers, 8192);
        assert_eq!(config.workers, 3);
        assert_eq!(config.header_read_timeout, Duration::from_secs(2));
        assert_eq!(config.idle_timeout, Duration::from_secs(15));
        let (defaults, _) = balancer("").unwrap().balancer_config().unwrap();
        assert_eq!(defaults.max_concurrent_streams, BalancerConfig::default().max_concurrent_streams);
    }

    #[test]
    fn reads_and_health_checks_are_retried_by_default_and_a_file_may_replace_the_list() {
        let (config, _) = balancer("").unwrap().balancer_config().unwrap();
        let retried = |c: &BalancerConfig, path: &str| c.idempotent.iter().any(|m| m.matches(path));
        assert!(retried(&config, "/grpc.health.v1.Health/Check"));
        assert!(retried(&config, "/spectrum.management.v1.Management/Get"));
        assert!(!retried(&config, "/spectrum.management.v1.Management/Put"));
        let (config, _) =
            balancer("[retry]\nidempotent = [\"/my.Orders/Get\"]").unwrap().balancer_config().unwrap();
        assert!(retried(&config, "/my.Orders/Get") && !retried(&config, "/grpc.health.v1.Health/Check"));
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
