//! The command line: every command, subcommand and flag of `spectrum`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use spectrum::auth::{Role, Token};
use spectrum::client::{AckLevel, StrategyName};
use spectrum::core::PeerAddr;

#[derive(Debug, Parser)]
#[command(name = "spectrum", version, about = "Run and manage a Spectrum cluster")]
pub(crate) struct Cli {
    /// The balancer (or any node) to manage the cluster through: `http://host:port`,
    /// or `https://host:port` for a cluster with TLS (with `--ca-cert`).
    #[arg(long, global = true, env = "SPECTRUM_ENDPOINT", default_value = "http://127.0.0.1:7100")]
    pub(crate) endpoint: Endpoint,
    /// The cluster CA's certificate (PEM) to verify an `https://` endpoint with.
    #[arg(long, global = true, env = "SPECTRUM_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// A client certificate (PEM) to present to an `https://` endpoint that
    /// requires one (`spectrum cert issue NAME --client-only`), with `--client-key`.
    #[arg(long, global = true, env = "SPECTRUM_CLIENT_CERT", value_name = "FILE")]
    pub(crate) client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with `--client-cert`.
    #[arg(long, global = true, env = "SPECTRUM_CLIENT_KEY", value_name = "FILE")]
    pub(crate) client_key: Option<PathBuf>,
    /// Bearer token for the management API (for `node` and `balancer`: overrides
    /// the file's; a node never takes it from SPECTRUM_TOKEN, see `node --help`).
    #[arg(long, global = true, env = "SPECTRUM_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<Token>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// How many members must hold a write before it is acknowledged: `local` (the
    /// answering node), `quorum` (a majority of the members not left or removed) or
    /// `all`. Last-writer-wins mode only: in Raft mode every write is acknowledged
    /// once a majority of the voters holds it, whatever this says.
    #[arg(long, global = true, value_enum, env = "SPECTRUM_ACK", default_value = "quorum")]
    pub(crate) ack: Ack,
    /// Keep a session in FILE: each command reads after every write recorded there
    /// (read your writes through the balancer across commands) and records its own
    /// writes. Created when missing.
    #[arg(long, global = true, env = "SPECTRUM_SESSION", value_name = "FILE")]
    pub(crate) session: Option<PathBuf>,
    /// How long the answering node may wait to catch up with the session before
    /// refusing a read, in ms (the node's default 2000 when unset; at most 30000).
    #[arg(
        long,
        global = true,
        env = "SPECTRUM_READ_WAIT_MS",
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(0..=30_000)
    )]
    pub(crate) read_wait_ms: Option<u64>,
    /// Name this command's write KEY (a UUID, say; visible ASCII, at most 255
    /// bytes) so that running the same command again with the same key, after
    /// an answer that left its outcome unknown, applies it once: in Raft mode
    /// the retry gets the first attempt's answer. Keys are kept about a minute;
    /// a retry after that is a new write.
    #[arg(long, global = true, value_name = "KEY")]
    pub(crate) idempotency_key: Option<spectrum::management::idempotency::IdempotencyKey>,
    /// Whether `token` came from `SPECTRUM_TOKEN` rather than `--token` (set
    /// after parsing; a node does not take its bootstrap token from there).
    #[arg(skip)]
    pub(crate) token_from_env: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a node from a TOML file (`--config FILE`), or drain / undrain a member.
    Node(NodeArgs),
    /// Run a balancer from a TOML file (`--config FILE`), or set the strategy and
    /// weights every balancer follows.
    Balancer(BalancerArgs),
    /// Show the cluster's status as the answering node sees it, and, when the
    /// endpoint is a balancer, the balancer's figures for each node.
    Status,
    /// Read and change raw configuration entries.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// License information.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Dataflow definitions.
    #[command(subcommand)]
    Dataflow(DataflowCommand),
    /// External resource definitions.
    #[command(subcommand, alias = "resource")]
    Resources(ResourcesCommand),
    /// Users of the management API and their roles (needs the admin role).
    #[command(subcommand, alias = "users")]
    User(UserCommand),
    /// The audit log of management writes, newest first (needs the operator role).
    Audit(AuditArgs),
    /// Export the whole configuration (licenses, dataflows, settings, resources;
    /// secrets redacted) to a file, or to standard output.
    Export {
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Import a configuration export file (or `-`) in one write (needs the admin
    /// role); with --dry-run, only show what would be added, changed or left alone.
    Import {
        /// The file `spectrum export` wrote (`format` and `version` at its top),
        /// or `-` for standard input.
        file: String,
        /// Show what the import would add, change and leave alone; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a new random cluster key (64 hex digits) for `cluster_key`.
    GenerateKey,
    /// Cluster key rotation.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Certificates for TLS: a cluster CA, and a certificate per node and balancer.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// `--endpoint`: a node or balancer address, and whether it speaks TLS.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The address (membership's `http://` form).
    pub(crate) addr: PeerAddr,
    /// Whether it was given as `https://`.
    pub(crate) https: bool,
}

impl std::str::FromStr for Endpoint {
    type Err = spectrum::core::InvalidAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let https = s.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let addr = if https { format!("http://{}", &s[8..]).parse()? } else { s.parse()? };
        Ok(Self { addr, https })
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Create a cluster CA in DIR: `ca.pem` (give it to every node, balancer and
    /// client) and `ca.key` (mode 0600; keep it off the nodes).
    Init {
        /// The directory to write to (created if missing; nothing is overwritten).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Issue a certificate for node ID with the CA in DIR: `ID.pem` and `ID.key`
    /// (mode 0600). It names `ID.spectrum.internal`, which peers check against the
    /// node id a replication call claims, and each `--san`.
    Issue {
        /// The node's id (for a balancer, any name, such as `balancer`).
        id: spectrum::core::NodeId,
        /// The directory holding `ca.pem` and `ca.key`.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// A host name or IP address the node is reached at (repeat for several):
        /// clients verify the host they dial.
        #[arg(long = "san", value_name = "HOST")]
        sans: Vec<String>,
        /// A server-only certificate, for a balancer: it names no node id and is not
        /// valid as a client certificate, so its key can never pass for a node.
        #[arg(long)]
        server_only: bool,
        /// A client-only certificate, for `--client-cert` (a balancer with
        /// `require_client_certificates`): it names no host and no node id, and
        /// can neither serve nor pass for a node.
        #[arg(long, conflicts_with_all = ["server_only", "sans"])]
        client_only: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct NodeArgs {
    /// The node's configuration file.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Overrides `id`.
    #[arg(long, env = "SPECTRUM_NODE_ID")]
    pub(crate) id: Option<spectrum::core::NodeId>,
    /// Overrides `cluster`.
    #[arg(long, env = "SPECTRUM_CLUSTER")]
    pub(crate) cluster: Option<spectrum::core::ClusterId>,
    /// Overrides `listen`.
    #[arg(long, env = "SPECTRUM_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Overrides `advertise` (`host:port` peers and balancers reach this node at).
    #[arg(long, env = "SPECTRUM_ADVERTISE")]
    pub(crate) advertise: Option<PeerAddr>,
    /// Overrides `seeds` (comma-separated, each `host:port` or `http://host:port`).
    #[arg(long, env = "SPECTRUM_SEEDS", value_delimiter = ',')]
    pub(crate) seeds: Option<Vec<PeerAddr>>,
    /// Overrides `data_dir`.
    #[arg(long, env = "SPECTRUM_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Overrides `cluster_key` (prefer the environment variable to the flag: flags show in `ps`).
    #[arg(long, env = "SPECTRUM_CLUSTER_KEY", hide_env_values = true)]
    pub(crate) cluster_key: Option<String>,
    /// Overrides `token`, the bootstrap admin token (prefer the environment
    /// variable: flags show in `ps`). SPECTRUM_TOKEN, the variable management
    /// commands send, is not read here: a shell that manages the cluster with a
    /// user's token would otherwise make it this node's bootstrap token.
    #[arg(long, env = "SPECTRUM_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub(crate) bootstrap_token: Option<Token>,
    #[command(subcommand)]
    pub(crate) action: Option<NodeAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeAction {
    /// Stop sending new requests to a member (it finishes those it has).
    Drain {
        /// The member's id.
        id: String,
    },
    /// Put a drained member back in service (or let a removed one return).
    Undrain {
        /// The member's id.
        id: String,
    },
    /// Remove a member that died for good: it no longer counts for acknowledgements,
    /// tombstone collection stops waiting for it, the balancer forgets it, and it is
    /// refused if it comes back (until `undrain`).
    Remove {
        /// The member's id.
        id: String,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BalancerArgs {
    /// The balancer's configuration file.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Overrides `listen`.
    #[arg(long, env = "SPECTRUM_BALANCER_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Overrides `health_interval_ms`.
    #[arg(long, env = "SPECTRUM_HEALTH_INTERVAL_MS")]
    pub(crate) health_interval_ms: Option<u64>,
    #[command(subcommand)]
    pub(crate) action: Option<BalancerAction>,
}

/// What the database sets for every balancer. Balancers that follow membership
/// apply it within one discovery interval; it overrides their files until cleared.
#[derive(Debug, Subcommand)]
pub(crate) enum BalancerAction {
    /// Set the strategy every balancer uses, replacing each file's `[strategy]`.
    SetStrategy {
        /// round_robin, weighted_round_robin, random, least_requests, peak_ewma or consistent_hash.
        name: StrategyName,
        /// The header (or gRPC metadata key) whose value routes a request, or `client_address`.
        #[arg(long)]
        hash_key: Option<String>,
        /// consistent_hash only: no node gets more than this times the mean load (at least 1).
        #[arg(long)]
        load_factor: Option<f64>,
    },
    /// Clear the strategy set with set-strategy: every balancer goes back to its file's.
    ClearStrategy,
    /// Set a member's weight for every balancer (0: no requests while another node can take them).
    SetWeight {
        /// The member's id.
        node: String,
        /// Its weight (used by weighted_round_robin).
        weight: u32,
    },
    /// Clear a member's weight: balancer files decide it again (default 1).
    ClearWeight {
        /// The member's id.
        node: String,
    },
    /// Show the strategy and weights the database sets.
    Show,
}

/// `--ack`: how many members must acknowledge a write.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Ack {
    Local,
    Quorum,
    All,
}

impl From<Ack> for AckLevel {
    fn from(ack: Ack) -> Self {
        match ack {
            Ack::Local => AckLevel::Local,
            Ack::Quorum => AckLevel::Quorum,
            Ack::All => AckLevel::All,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print one entry's value.
    Get {
        key: String,
        /// Linearizable: see every write committed before the read (Raft mode).
        #[arg(long)]
        consistent: bool,
    },
    /// Set an entry (VALUE, or `-` to read standard input).
    Put {
        key: String,
        value: String,
        /// Compare-and-set (Raft mode): only if KEY holds this live version now.
        #[arg(long, value_name = "VERSION", conflicts_with = "if_absent")]
        if_version: Option<String>,
        /// Compare-and-set (Raft mode): only if KEY holds no live entry.
        #[arg(long)]
        if_absent: bool,
    },
    /// Apply a transaction from a JSON file (or `-`): {"conditions": [{"key": …,
    /// "version": …}], "writes": [{"key": …, "value": …} or {"key": …, "delete": true}]}.
    /// Every write applies only if every condition holds (a condition without
    /// "version" asks for no live entry). Raft mode only.
    Txn { file: String },
    /// Delete an entry.
    Delete { key: String },
    /// List entries under a prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
        /// Linearizable (Raft mode), as for `get`.
        #[arg(long)]
        consistent: bool,
    },
    /// Print every change under a prefix as it happens (a table, or with --json
    /// one JSON object per line), until Ctrl-C; reconnects and resumes by itself.
    /// Each event carries a position to resume from with --from.
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        /// Resume from this position (an event's `position`); from now when absent.
        #[arg(long)]
        from: Option<String>,
    },
    /// List open conflicts under a prefix: writes to one key made on different
    /// nodes without seeing each other (key, winner and loser versions, nodes,
    /// times). A later write to the key clears its conflict.
    Conflicts {
        #[arg(default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum LicenseCommand {
    /// Install a license: a JSON file (or `-`) {"owner":…, "seats":…, "expires":"YYYY-MM-DD"}.
    Set {
        file: String,
        #[arg(long, default_value = "main")]
        name: String,
    },
    /// Show the installed license and the days it has left.
    Show {
        #[arg(long, default_value = "main")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DataflowCommand {
    /// Create a dataflow from a JSON file (or `-`).
    Create {
        name: String,
        file: String,
        /// Replace an existing dataflow of that name.
        #[arg(long)]
        replace: bool,
    },
    /// List dataflows.
    List,
    /// Show one dataflow.
    Show { name: String },
    /// Delete a dataflow.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ResourcesCommand {
    /// Create a resource from a JSON definition file (or `-`); secrets are encrypted by the cluster.
    Create {
        file: String,
        /// Replace an existing resource of that name (a secret given as "***" keeps the current one).
        #[arg(long)]
        replace: bool,
    },
    /// List resources (secrets redacted).
    List,
    /// Show one resource (secrets redacted).
    Show { name: String },
    /// Delete a resource.
    Delete { name: String },
    /// Check resources on every node (all of them, or those named).
    Check { names: Vec<String> },
    /// Export every definition (secrets redacted) to a file, or to standard output.
    Export {
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Import an export file (or `-`); with --dry-run, only show what would change.
    Import {
        /// The file `spectrum resources export` wrote (`format_version` at its
        /// top), or `-` for standard input.
        file: String,
        /// Show what the import would add, change and leave alone; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Print a new random cluster key (as `generate-key` does).
    Generate,
    /// Reseal every resource secret still sealed with a previous key with the
    /// current one, once every node runs with the new `cluster_key` and the old one
    /// in `previous_cluster_keys`.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Add a user with a new random token, printed once (the cluster keeps only its hash).
    Add {
        name: String,
        /// viewer (reads, status), operator (also drain, undrain, resource checks, audit) or admin.
        #[arg(long)]
        role: Role,
    },
    /// List users and their roles (never their tokens).
    List,
    /// Revoke a user's token on every node.
    Revoke { name: String },
    /// Give a user a new token, printed once; the old one stops working.
    Rotate { name: String },
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only records at or after this time: RFC 3339 (`2026-12-01T09:00:00Z`) or ms since the Unix epoch.
    #[arg(long, value_parser = parse_since)]
    pub(crate) since: Option<u64>,
    /// Only records of this user.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
}

/// `--since`: ms since the Unix epoch, or an RFC 3339 time.
fn parse_since(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time: jiff::Timestamp =
        text.parse().map_err(|e| format!("expected RFC 3339 (2026-12-01T09:00:00Z) or ms: {e}"))?;
    u64::try_from(time.as_millisecond()).map_err(|_| "a time before 1970".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_milliseconds_or_rfc_3339() {
        assert_eq!(parse_since("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(parse_since("2026-12-01T09:00:00+01:00"), Ok(1_796_112_000_000));
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("1969-12-31T23:59:59Z").is_err());
    }
}
