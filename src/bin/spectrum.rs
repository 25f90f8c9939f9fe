//! The `spectrum` command: run a node or a balancer as its own process, and manage
//! a running cluster through its balancer.
//!
//! ```text
//! spectrum node --config node-1.toml
//! spectrum balancer --config balancer.toml
//! spectrum --endpoint http://127.0.0.1:7100 --token T status
//! spectrum --endpoint http://127.0.0.1:7100 config put settings/greeting hello --ack all
//! spectrum resources create orders.json
//! spectrum resources export --output east.json
//! spectrum resources import east.json --dry-run
//! spectrum node drain node-2
//! ```
//!
//! `status` through a balancer also shows the balancer's own figures per node (a
//! `BALANCER` table; `"balancer"` in `--json` output), read from the balancer's
//! `spectrum.balancer.v1.Balancer/Stats`, which needs no token.
//!
//! Tables for people, `--json` for scripts; exit code 0 on success, and on failure a
//! non-zero code with one line `error: …` on standard error.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use spectrum::NodeBuilder;
use spectrum::balancer::stats::proto::{
    BackendStats as BalancerBackend, StatsRequest, StatsResponse, balancer_client::BalancerClient,
};
use spectrum::balancer::strategy::RoundRobin;
use spectrum::balancer::{BackendConfig, Balancer, BalancerConfig};
use spectrum::config::{BalancerFileConfig, BalancerOverrides, NodeFileConfig, NodeOverrides, load};
use spectrum::discovery::ManagementDiscovery;
use spectrum::management::proto::{self, management_client::ManagementClient};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::warn;

#[derive(Debug, Parser)]
#[command(name = "spectrum", version, about = "Run and manage a Spectrum cluster")]
struct Cli {
    /// The balancer (or any node) to manage the cluster through.
    #[arg(long, global = true, env = "SPECTRUM_ENDPOINT", default_value = "http://127.0.0.1:7100")]
    endpoint: String,
    /// Bearer token for the management API (for `node` and `balancer`: overrides the file's).
    #[arg(long, global = true, env = "SPECTRUM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node from a TOML file (`--config FILE`), or drain / undrain a member.
    Node(NodeArgs),
    /// Run a balancer from a TOML file.
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
    /// Print a new random cluster key (64 hex digits) for `cluster_key`.
    GenerateKey,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct NodeArgs {
    /// The node's configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `id`.
    #[arg(long, env = "SPECTRUM_NODE_ID")]
    id: Option<String>,
    /// Overrides `cluster`.
    #[arg(long, env = "SPECTRUM_CLUSTER")]
    cluster: Option<String>,
    /// Overrides `listen`.
    #[arg(long, env = "SPECTRUM_LISTEN")]
    listen: Option<SocketAddr>,
    /// Overrides `seeds` (comma-separated `http://host:port`).
    #[arg(long, env = "SPECTRUM_SEEDS", value_delimiter = ',')]
    seeds: Option<Vec<spectrum::core::PeerAddr>>,
    /// Overrides `data_dir`.
    #[arg(long, env = "SPECTRUM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `cluster_key` (prefer the environment variable to the flag: flags show in `ps`).
    #[arg(long, env = "SPECTRUM_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    #[command(subcommand)]
    action: Option<NodeAction>,
}

#[derive(Debug, Subcommand)]
enum NodeAction {
    /// Stop sending new requests to a member (it finishes those it has).
    Drain {
        /// The member's id.
        id: String,
    },
    /// Put a drained member back in service.
    Undrain {
        /// The member's id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct BalancerArgs {
    /// The balancer's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Overrides `listen`.
    #[arg(long, env = "SPECTRUM_BALANCER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Overrides `health_interval_ms`.
    #[arg(long, env = "SPECTRUM_HEALTH_INTERVAL_MS")]
    health_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Ack {
    Local,
    Quorum,
    All,
}

impl Ack {
    fn wire(self) -> i32 {
        match self {
            Ack::Local => proto::AckLevel::Local as i32,
            Ack::Quorum => proto::AckLevel::Quorum as i32,
            Ack::All => proto::AckLevel::All as i32,
        }
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print one entry's value.
    Get { key: String },
    /// Set an entry (VALUE, or `-` to read standard input).
    Put {
        key: String,
        value: String,
        #[arg(long, value_enum, default_value = "all")]
        ack: Ack,
    },
    /// Delete an entry.
    Delete {
        key: String,
        #[arg(long, value_enum, default_value = "all")]
        ack: Ack,
    },
    /// List entries under a prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
enum LicenseCommand {
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
enum DataflowCommand {
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
enum ResourcesCommand {
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
        file: String,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Clone)]
struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

type Client = ManagementClient<InterceptedService<Channel, Token>>;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see spectrum --help)");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        let reason = format!("{e:#}").replace(['\n', '\r'], " ");
        eprintln!("error: {reason}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Node(NodeArgs { action: Some(action), .. }) => {
            let (mut client, _) = connect(&cli.endpoint, cli.token.as_deref()).await?;
            set_node_state(&mut client, action, cli.json).await
        }
        Command::Node(args) => run_node(args, cli.token).await,
        Command::Balancer(args) => run_balancer(args, cli.token).await,
        Command::GenerateKey => {
            let key = spectrum::resources::ClusterKey::generate().to_hex();
            if cli.json {
                println!("{}", json!({"cluster_key": key}));
            } else {
                println!("{key}");
            }
            Ok(())
        }
        command => {
            let (mut client, channel) = connect(&cli.endpoint, cli.token.as_deref()).await?;
            manage(&mut client, channel, command, cli.json).await
        }
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn run_node(args: NodeArgs, token: Option<String>) -> Result<()> {
    let Some(path) = args.config else {
        bail!("spectrum node needs --config FILE to run a node, or `drain ID` / `undrain ID`");
    };
    init_tracing();
    let cfg: NodeFileConfig = load(&path)?;
    let cfg = cfg.with_overrides(NodeOverrides {
        id: args.id,
        cluster: args.cluster,
        listen: args.listen,
        seeds: args.seeds,
        data_dir: args.data_dir,
        token,
        cluster_key: args.cluster_key,
    });
    let key = cfg.cluster_key()?;
    if key.is_none() {
        warn!("no cluster_key configured: this node refuses to store resource secrets");
    }
    let mut builder = NodeBuilder::new(
        cfg.id.parse().with_context(|| format!("id {:?}", cfg.id))?,
        cfg.cluster.parse().with_context(|| format!("cluster {:?}", cfg.cluster))?,
    )
    .listen(cfg.listen)
    .seeds(cfg.seeds.clone())
    .sync_interval(cfg.sync_interval())
    .add_service_with(spectrum::demo::DataflowService::server);
    if let Some(ms) = cfg.max_clock_offset_ms {
        builder = builder.max_clock_offset(Duration::from_millis(ms));
    }
    if let Some(token) = cfg.token.clone() {
        builder = builder.management_token(token.parse()?);
    }
    if let Some(key) = key {
        builder = builder.cluster_key(key);
    }
    if let Some(dir) = cfg.data_dir.clone() {
        builder = builder.data_dir(dir);
    }
    let node = builder.start().await?;
    println!("{}", json!({"node": node.id().as_str(), "cluster": cfg.cluster, "addr": node.url()}));
    std::io::stdout().flush().ok();
    wait_for_signal().await?;
    node.shutdown().await;
    Ok(())
}

async fn run_balancer(args: BalancerArgs, token: Option<String>) -> Result<()> {
    init_tracing();
    let cfg: BalancerFileConfig = load(&args.config)?;
    let cfg = cfg.with_overrides(BalancerOverrides {
        listen: args.listen,
        health_interval_ms: args.health_interval_ms,
        token,
    });
    let config = BalancerConfig {
        listen: cfg.listen,
        health_interval: cfg.health_interval(),
        ..BalancerConfig::default()
    };
    let backends = static_backends(&cfg)?;
    let mut builder = Balancer::builder(config).backends(backends).strategy(Arc::new(RoundRobin::new()));
    if cfg.follow_membership.unwrap_or(true) {
        let seeds = cfg.nodes.iter().map(|n| spectrum::core::PeerAddr::from(n.addr));
        let mut discovery = ManagementDiscovery::new(seeds);
        if let Some(token) = cfg.token.as_deref() {
            discovery = discovery.with_token(token)?;
        }
        builder = builder.discovery(Arc::new(discovery), cfg.health_interval());
    }
    let handle = builder.start().await?;
    println!("{}", json!({"balancer": handle.url()}));
    std::io::stdout().flush().ok();
    wait_for_signal().await?;
    handle.shutdown().await;
    Ok(())
}

fn static_backends(cfg: &BalancerFileConfig) -> Result<Vec<BackendConfig>> {
    cfg.nodes
        .iter()
        .map(|n| {
            Ok(BackendConfig {
                id: n.id.parse().with_context(|| format!("node id {:?}", n.id))?,
                addr: n.addr,
                weight: n.weight.unwrap_or(1),
            })
        })
        .collect()
}

/// A management client for `endpoint` (sending `token`), and the plain channel it
/// uses (for the balancer's own service, which checks no token).
async fn connect(endpoint: &str, token: Option<&str>) -> Result<(Client, Channel)> {
    let token = token
        .map(|t| {
            MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| anyhow!("the token holds characters not allowed in a header"))
        })
        .transpose()?;
    let addr: spectrum::core::PeerAddr = endpoint.parse()?;
    let channel = spectrum::core::TransportConfig::default()
        .endpoint(&addr)
        .connect()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    Ok((ManagementClient::with_interceptor(channel.clone(), Token(token)), channel))
}

async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn read_input(arg: &str) -> Result<Vec<u8>> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(arg).with_context(|| format!("reading {arg}"))
    }
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{} ({:?})", s.message(), s.code())
}

/// A JSON value for bytes that are JSON, else a string.
fn json_value(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn one_line(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes).replace(['\n', '\r'], " ");
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    } else {
        text
    }
}

fn write_json(write: &proto::WriteResult) -> Value {
    json!({"version": write.version, "acked": write.acked, "members": write.members, "served_by": write.served_by})
}

fn write_text(write: &proto::WriteResult) -> String {
    format!("version {}, acknowledged by {}/{} nodes", write.version, write.acked, write.members)
}

async fn put(client: &mut Client, key: String, value: Vec<u8>, ack: Ack, json: bool) -> Result<()> {
    let out = client
        .put(proto::PutRequest { key: key.clone(), value, ack: ack.wire() })
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        println!(
            "{}",
            json!({"key": key, "version": out.version, "acked": out.acked, "members": out.members})
        );
    } else {
        println!("{key} set (version {}, acknowledged by {}/{} nodes)", out.version, out.acked, out.members);
    }
    Ok(())
}

async fn list(client: &mut Client, prefix: &str) -> Result<Vec<proto::Entry>> {
    Ok(client
        .list(proto::ListRequest { prefix: prefix.to_owned(), min_version: String::new() })
        .await
        .map_err(status_error)?
        .into_inner()
        .entries)
}

async fn manage(client: &mut Client, channel: Channel, command: Command, json: bool) -> Result<()> {
    match command {
        Command::Node(_) | Command::Balancer(_) | Command::GenerateKey => {
            bail!("this command does not manage a cluster")
        }
        Command::Status => status(client, channel, json).await,
        Command::Config(cmd) => config(client, cmd, json).await,
        Command::License(cmd) => license(client, cmd, json).await,
        Command::Dataflow(cmd) => dataflow(client, cmd, json).await,
        Command::Resources(cmd) => resources(client, cmd, json).await,
    }
}

async fn config(client: &mut Client, cmd: ConfigCommand, json: bool) -> Result<()> {
    match cmd {
        ConfigCommand::Get { key } => {
            let entry = client
                .get(proto::GetRequest { key, min_version: String::new() })
                .await
                .map_err(status_error)?
                .into_inner()
                .entry
                .ok_or_else(|| anyhow!("empty answer"))?;
            if json {
                println!(
                    "{}",
                    json!({"key": entry.key, "version": entry.version, "value": json_value(&entry.value)})
                );
            } else {
                println!("{}", String::from_utf8_lossy(&entry.value));
            }
        }
        ConfigCommand::Put { key, value, ack } => {
            let value = if value == "-" { read_input("-")? } else { value.into_bytes() };
            put(client, key, value, ack, json).await?;
        }
        ConfigCommand::Delete { key, ack } => {
            let out = client
                .delete(proto::DeleteRequest { key: key.clone(), ack: ack.wire() })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", json!({"key": key, "version": out.version, "deleted": true}));
            } else {
                println!("{key} deleted (version {})", out.version);
            }
        }
        ConfigCommand::List { prefix } => {
            let entries = list(client, &prefix).await?;
            if json {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|e| json!({"key": e.key, "version": e.version, "value": json_value(&e.value)}))
                    .collect();
                println!("{}", Value::Array(rows));
            } else {
                println!("{:<40} {:<16} VALUE", "KEY", "VERSION");
                for e in &entries {
                    println!("{:<40} {:<16} {}", e.key, e.version, one_line(&e.value, 60));
                }
            }
        }
    }
    Ok(())
}

fn license_json(l: &proto::LicenseInfo) -> Value {
    json!({
        "name": l.name, "owner": l.owner, "seats": l.seats, "expires": l.expires,
        "days_left": l.days_left, "expired": l.expired, "version": l.version,
        "document": json_value(&l.document),
    })
}

fn license_text(l: &proto::LicenseInfo) -> String {
    let state = if l.expired {
        format!("EXPIRED {} days ago", -l.days_left)
    } else {
        format!("{} days left", l.days_left)
    };
    format!("license {}: {} ({} seats), expires {} ({state})", l.name, l.owner, l.seats, l.expires)
}

async fn license(client: &mut Client, cmd: LicenseCommand, json: bool) -> Result<()> {
    match cmd {
        LicenseCommand::Set { file, name } => {
            let out = client
                .set_license(proto::SetLicenseRequest {
                    license: read_input(&file)?,
                    name,
                    ack: Ack::All.wire(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let info = out.license.ok_or_else(|| anyhow!("empty answer"))?;
            let write = out.write.unwrap_or_default();
            if json {
                println!("{}", json!({"license": license_json(&info), "write": write_json(&write)}));
            } else {
                println!("{} installed ({})", license_text(&info), write_text(&write));
            }
        }
        LicenseCommand::Show { name } => {
            let out = client
                .show_license(proto::ShowLicenseRequest { name, min_version: String::new() })
                .await
                .map_err(status_error)?
                .into_inner();
            let info = out.license.ok_or_else(|| anyhow!("empty answer"))?;
            if json {
                println!("{}", license_json(&info));
            } else {
                println!("{}", license_text(&info));
            }
        }
    }
    Ok(())
}

async fn dataflow(client: &mut Client, cmd: DataflowCommand, json: bool) -> Result<()> {
    match cmd {
        DataflowCommand::Create { name, file, replace } => {
            let write = client
                .create_dataflow(proto::CreateDataflowRequest {
                    name: name.clone(),
                    definition: read_input(&file)?,
                    replace,
                    ack: Ack::All.wire(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", json!({"dataflow": name, "write": write_json(&write)}));
            } else {
                println!("dataflow {name} stored ({})", write_text(&write));
            }
        }
        DataflowCommand::List => {
            let out = client
                .list_dataflows(proto::ListDataflowsRequest { min_version: String::new() })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                let rows: Vec<_> = out
                    .dataflows
                    .iter()
                    .map(|d| json!({"name": d.name, "version": d.version, "definition": json_value(&d.definition)}))
                    .collect();
                println!("{}", Value::Array(rows));
            } else {
                println!("{:<32} {:<16} DEFINITION", "NAME", "VERSION");
                for d in &out.dataflows {
                    println!("{:<32} {:<16} {}", d.name, d.version, one_line(&d.definition, 60));
                }
            }
        }
        DataflowCommand::Show { name } => {
            let out = client
                .show_dataflow(proto::ShowDataflowRequest { name, min_version: String::new() })
                .await
                .map_err(status_error)?
                .into_inner();
            let d = out.dataflow.ok_or_else(|| anyhow!("empty answer"))?;
            if json {
                println!(
                    "{}",
                    json!({"name": d.name, "version": d.version, "definition": json_value(&d.definition)})
                );
            } else {
                println!("{}", String::from_utf8_lossy(&d.definition));
            }
        }
        DataflowCommand::Delete { name } => {
            let write = client
                .delete_dataflow(proto::DeleteDataflowRequest { name: name.clone(), ack: Ack::All.wire() })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", json!({"dataflow": name, "deleted": true, "write": write_json(&write)}));
            } else {
                println!("dataflow {name} deleted ({})", write_text(&write));
            }
        }
    }
    Ok(())
}

fn resource_json(r: &proto::Resource) -> Value {
    json!({
        "name": r.name, "kind": r.kind, "description": r.description, "version": r.version,
        "has_secret": r.has_secret, "definition": json_value(&r.definition),
    })
}

async fn resources(client: &mut Client, cmd: ResourcesCommand, json: bool) -> Result<()> {
    match cmd {
        ResourcesCommand::Create { file, replace } => {
            let out = client
                .create_resource(proto::CreateResourceRequest {
                    definition: read_input(&file)?,
                    replace,
                    ack: Ack::All.wire(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let r = out.resource.ok_or_else(|| anyhow!("empty answer"))?;
            let write = out.write.unwrap_or_default();
            if json {
                println!("{}", json!({"resource": resource_json(&r), "write": write_json(&write)}));
            } else {
                let secret = if r.has_secret { ", secret encrypted" } else { "" };
                println!("resource {} ({}{secret}) stored ({})", r.name, r.kind, write_text(&write));
            }
        }
        ResourcesCommand::List => {
            let out = client
                .list_resources(proto::ListResourcesRequest { min_version: String::new() })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", Value::Array(out.resources.iter().map(resource_json).collect()));
            } else {
                println!("{:<24} {:<12} {:<7} {:<14} DESCRIPTION", "NAME", "KIND", "SECRET", "VERSION");
                for r in &out.resources {
                    let secret = if r.has_secret { "***" } else { "-" };
                    println!(
                        "{:<24} {:<12} {:<7} {:<14} {}",
                        r.name,
                        r.kind,
                        secret,
                        r.version,
                        one_line(r.description.as_bytes(), 50)
                    );
                }
            }
        }
        ResourcesCommand::Show { name } => {
            let out = client
                .show_resource(proto::ShowResourceRequest { name, min_version: String::new() })
                .await
                .map_err(status_error)?
                .into_inner();
            let r = out.resource.ok_or_else(|| anyhow!("empty answer"))?;
            if json {
                println!("{}", resource_json(&r));
            } else {
                let pretty = serde_json::to_string_pretty(&json_value(&r.definition))?;
                println!("{pretty}");
            }
        }
        ResourcesCommand::Delete { name } => {
            let write = client
                .delete_resource(proto::DeleteResourceRequest { name: name.clone(), ack: Ack::All.wire() })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", json!({"resource": name, "deleted": true, "write": write_json(&write)}));
            } else {
                println!("resource {name} deleted ({})", write_text(&write));
            }
        }
        ResourcesCommand::Check { names } => {
            let out = client
                .check_resources(proto::CheckResourcesRequest {
                    names,
                    local_only: false,
                    min_version: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                let nodes: Vec<_> = out
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({
                            "node": n.node_id, "addr": n.addr,
                            "error": (!n.error.is_empty()).then_some(&n.error),
                            "resources": n.resources.iter().map(|r| json!({
                                "name": r.name, "kind": r.kind, "available": r.available, "detail": r.detail,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", json!({"nodes": nodes}));
            } else {
                println!("{:<24} {:<16} {:<10} DETAIL", "RESOURCE", "NODE", "AVAILABLE");
                for n in &out.nodes {
                    if !n.error.is_empty() {
                        println!("{:<24} {:<16} {:<10} node not reachable: {}", "*", n.node_id, "?", n.error);
                    }
                    for r in &n.resources {
                        let yes = if r.available { "yes" } else { "NO" };
                        println!("{:<24} {:<16} {:<10} {}", r.name, n.node_id, yes, r.detail);
                    }
                }
            }
        }
        ResourcesCommand::Export { output } => {
            let out = client
                .export_resources(proto::ExportResourcesRequest { min_version: String::new() })
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                Some(path) => {
                    std::fs::write(&path, &out.file)
                        .with_context(|| format!("writing {}", path.display()))?;
                    if json {
                        println!("{}", json!({"file": path, "count": out.count, "served_by": out.served_by}));
                    } else {
                        println!("exported {} resources to {} (secrets redacted)", out.count, path.display());
                    }
                }
                None => {
                    std::io::stdout().write_all(&out.file)?;
                    println!();
                }
            }
        }
        ResourcesCommand::Import { file, dry_run } => {
            let out = client
                .import_resources(proto::ImportResourcesRequest {
                    file: read_input(&file)?,
                    dry_run,
                    ack: Ack::All.wire(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let plan = out.plan.unwrap_or_default();
            if json {
                println!(
                    "{}",
                    json!({
                        "dry_run": dry_run, "applied": out.applied, "source_cluster": out.source_cluster,
                        "add": plan.add, "change": plan.change, "unchanged": plan.unchanged,
                        "needs_secret": plan.needs_secret, "kept": plan.kept,
                        "write": out.write.as_ref().map(write_json),
                    })
                );
            } else {
                let what = if dry_run { "would" } else { "import from" };
                println!("{what} cluster {}:", out.source_cluster);
                for (label, names) in [
                    ("add", &plan.add),
                    ("change", &plan.change),
                    ("unchanged", &plan.unchanged),
                    ("needs secret", &plan.needs_secret),
                    ("kept", &plan.kept),
                ] {
                    let names = if names.is_empty() { "-".to_owned() } else { names.join(", ") };
                    println!("  {label:<13} {names}");
                }
                match (&out.write, dry_run) {
                    (_, true) => println!("dry run: nothing was changed"),
                    (Some(write), false) => println!("imported ({})", write_text(write)),
                    (None, false) => println!("nothing to change"),
                }
            }
        }
    }
    Ok(())
}

async fn set_node_state(client: &mut Client, action: NodeAction, json: bool) -> Result<()> {
    let (id, state) = match action {
        NodeAction::Drain { id } => (id, proto::NodeState::Draining),
        NodeAction::Undrain { id } => (id, proto::NodeState::Active),
    };
    let out = client
        .set_node_state(proto::SetNodeStateRequest { node_id: id, state: state as i32, ack: Ack::All.wire() })
        .await
        .map_err(status_error)?
        .into_inner();
    let member = out.member.unwrap_or_default();
    let write = out.write.unwrap_or_default();
    if json {
        println!(
            "{}",
            json!({"node": member.id, "addr": member.addr, "state": member.state, "write": write_json(&write)})
        );
    } else {
        println!("node {} is now {} ({})", member.id, member.state, write_text(&write));
    }
    Ok(())
}

/// How long `status` waits for the balancer's own figures before leaving them out.
const BALANCER_STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The balancer's figures when the endpoint is a balancer; `None` when it is a node
/// (it answers `UNIMPLEMENTED`) or the call fails or takes too long.
async fn balancer_stats(channel: Channel) -> Option<StatsResponse> {
    let mut client = BalancerClient::new(channel);
    match tokio::time::timeout(BALANCER_STATS_TIMEOUT, client.stats(StatsRequest {})).await {
        Ok(Ok(resp)) => Some(resp.into_inner()),
        _ => None,
    }
}

/// A backend's health as the balancer sees it: `healthy`, `ejected` or `down`.
fn backend_health(b: &BalancerBackend) -> &'static str {
    if b.ejected {
        "ejected"
    } else if b.healthy {
        "healthy"
    } else {
        "down"
    }
}

fn balancer_json(stats: &StatsResponse) -> Value {
    let nodes: Vec<_> = stats
        .backends
        .iter()
        .map(|b| {
            json!({
                "id": b.id, "addr": b.addr, "weight": b.weight, "health": backend_health(b),
                "healthy": b.healthy, "ejected": b.ejected, "draining": b.draining,
                "in_flight": b.in_flight, "requests": b.requests, "failures": b.failures,
                "retries": b.retries, "latency_ewma_us": b.latency_ewma_us,
            })
        })
        .collect();
    json!({
        "requests": stats.requests, "retries": stats.retries,
        "retry_budget_exhausted": stats.retry_budget_exhausted, "no_backend": stats.no_backend,
        "request_too_large": stats.request_too_large, "nodes": nodes,
    })
}

fn print_balancer(stats: &StatsResponse) {
    println!(
        "\nBALANCER  ({} requests, {} retries, {} with no backend, {} too large)",
        stats.requests, stats.retries, stats.no_backend, stats.request_too_large
    );
    println!(
        "{:<16} {:<22} {:<8} {:<8} {:>9} {:>9} {:>9} {:>8} {:>11}",
        "NODE", "ADDRESS", "HEALTH", "DRAINING", "IN FLIGHT", "REQUESTS", "FAILURES", "RETRIES", "LATENCY µs"
    );
    for b in &stats.backends {
        println!(
            "{:<16} {:<22} {:<8} {:<8} {:>9} {:>9} {:>9} {:>8} {:>11}",
            b.id,
            b.addr,
            backend_health(b),
            if b.draining { "yes" } else { "no" },
            b.in_flight,
            b.requests,
            b.failures,
            b.retries,
            b.latency_ewma_us
        );
    }
}

/// Prints the answering node's status and, when the endpoint is a balancer, the
/// balancer's own per-node figures (`spectrum.balancer.v1.Balancer/Stats`, which
/// needs no token; a node answers it `UNIMPLEMENTED` and the table is left out).
async fn status(client: &mut Client, channel: Channel, json: bool) -> Result<()> {
    let s = client.status(proto::StatusRequest {}).await.map_err(status_error)?.into_inner();
    let balancer = balancer_stats(channel).await;
    if json {
        let members: Vec<_> =
            s.members.iter().map(|m| json!({"id": m.id, "addr": m.addr, "state": m.state})).collect();
        let peers: Vec<_> = s
            .peers
            .iter()
            .map(|p| {
                json!({
                    "id": p.id, "addr": p.addr, "lag": p.lag,
                    "last_contact_ms_ago": (p.last_contact_ms_ago >= 0).then_some(p.last_contact_ms_ago),
                    "clock_offset_ms": p.has_clock_offset.then_some(p.clock_offset_ms),
                    "clock_skewed": p.clock_skewed,
                    "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
                })
            })
            .collect();
        let resources: Vec<_> = s
            .resources
            .iter()
            .map(|r| json!({"name": r.name, "kind": r.kind, "available": r.available, "detail": r.detail}))
            .collect();
        let mut out = json!({
            "cluster": s.cluster_id, "node": s.node_id, "addr": s.addr, "version": s.version,
            "keys": s.keys, "digest": s.digest, "members": members, "peers": peers,
            "resources": resources,
        });
        if let (Some(stats), Some(map)) = (&balancer, out.as_object_mut()) {
            map.insert("balancer".into(), balancer_json(stats));
        }
        println!("{out}");
        return Ok(());
    }
    println!("cluster {}  (answered by {} at {}, version {})", s.cluster_id, s.node_id, s.addr, s.version);
    println!("{} live keys", s.keys);
    println!("\n{:<16} {:<28} STATE", "MEMBER", "ADDRESS");
    for m in &s.members {
        println!("{:<16} {:<28} {}", m.id, m.addr, m.state);
    }
    println!("\n{:<16} {:<28} {:>8} {:>14} {:>12}  ERROR", "PEER", "ADDRESS", "LAG", "LAST CONTACT", "CLOCK");
    for p in &s.peers {
        let contact = if p.last_contact_ms_ago >= 0 {
            format!("{} ms ago", p.last_contact_ms_ago)
        } else {
            "never".into()
        };
        let clock = match (p.has_clock_offset, p.clock_skewed) {
            (false, _) => "?".to_owned(),
            (true, false) => format!("{:+} ms", p.clock_offset_ms),
            (true, true) => format!("{:+} ms SKEW", p.clock_offset_ms),
        };
        println!("{:<16} {:<28} {:>8} {:>14} {:>12}  {}", p.id, p.addr, p.lag, contact, clock, p.last_error);
    }
    if !s.resources.is_empty() {
        println!("\n{:<24} {:<12} {:<10} DETAIL (on {})", "RESOURCE", "KIND", "AVAILABLE", s.node_id);
        for r in &s.resources {
            let yes = if r.available { "yes" } else { "NO" };
            println!("{:<24} {:<12} {:<10} {}", r.name, r.kind, yes, r.detail);
        }
    }
    if let Some(stats) = &balancer {
        print_balancer(stats);
    }
    Ok(())
}
