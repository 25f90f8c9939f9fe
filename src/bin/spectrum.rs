//! The `spectrum` command: run a node or a balancer as its own process, and manage
//! a running cluster through its balancer.
//!
//! ```text
//! spectrum node --config node-1.toml
//! spectrum balancer --config balancer.toml
//! spectrum --endpoint http://127.0.0.1:7100 --token T status
//! spectrum --endpoint http://127.0.0.1:7100 config put settings/greeting hello --ack all
//! ```

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use spectrum::NodeBuilder;
use spectrum::balancer::strategy::RoundRobin;
use spectrum::balancer::{BackendConfig, Balancer, BalancerConfig};
use spectrum::config::{BalancerFileConfig, NodeFileConfig, load};
use spectrum::management::proto::{
    self, DeleteRequest, GetRequest, ListRequest, PutRequest, StatusRequest,
    management_client::ManagementClient,
};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(name = "spectrum", version, about = "Run and manage a Spectrum cluster")]
struct Cli {
    /// The balancer (or any node) to manage the cluster through.
    #[arg(long, global = true, env = "SPECTRUM_ENDPOINT", default_value = "http://127.0.0.1:7100")]
    endpoint: String,
    /// Bearer token for the management API.
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
    /// Run a node from a TOML file.
    Node(NodeArgs),
    /// Run a balancer from a TOML file.
    Balancer(BalancerArgs),
    /// Show the cluster's status as the answering node sees it.
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
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// The node's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Overrides `id`.
    #[arg(long, env = "SPECTRUM_NODE_ID")]
    id: Option<String>,
    /// Overrides `listen`.
    #[arg(long, env = "SPECTRUM_LISTEN")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct BalancerArgs {
    /// The balancer's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Overrides `listen`.
    #[arg(long, env = "SPECTRUM_BALANCER_LISTEN")]
    listen: Option<SocketAddr>,
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
    /// Install a license (a JSON file, or `-` for standard input).
    Set {
        file: String,
        #[arg(long, default_value = "main")]
        name: String,
    },
    /// Show the installed license.
    Show {
        #[arg(long, default_value = "main")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum DataflowCommand {
    /// Create or replace a dataflow from a JSON file (or `-`).
    Create { name: String, file: String },
    /// List dataflows.
    List,
    /// Show one dataflow.
    Show { name: String },
    /// Delete a dataflow.
    Delete { name: String },
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
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        let reason = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {reason}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Node(args) => run_node(args).await,
        Command::Balancer(args) => run_balancer(args).await,
        command => {
            let mut client = connect(&cli.endpoint, cli.token.as_deref()).await?;
            manage(&mut client, command, cli.json).await
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

async fn run_node(args: NodeArgs) -> Result<()> {
    init_tracing();
    let mut cfg: NodeFileConfig = load(&args.config)?;
    if let Some(id) = args.id {
        cfg.id = id;
    }
    if let Some(listen) = args.listen {
        cfg.listen = listen;
    }
    let mut builder =
        NodeBuilder::new(cfg.id.parse().context("id")?, cfg.cluster.parse().context("cluster")?)
            .listen(cfg.listen)
            .seeds(cfg.seeds.clone())
            .sync_interval(cfg.sync_interval())
            .add_service_with(spectrum::demo::DataflowService::server);
    if let Some(ms) = cfg.max_clock_offset_ms {
        builder = builder.max_clock_offset(Duration::from_millis(ms));
    }
    if let Some(token) = cfg.token.clone() {
        builder = builder.management_token(token);
    }
    let node = builder.start().await?;
    println!("{}", serde_json::json!({"node": node.id().as_str(), "addr": node.url()}));
    wait_for_signal().await?;
    node.shutdown().await;
    Ok(())
}

async fn run_balancer(args: BalancerArgs) -> Result<()> {
    init_tracing();
    let cfg: BalancerFileConfig = load(&args.config)?;
    let mut config =
        BalancerConfig { listen: args.listen.unwrap_or(cfg.listen), ..BalancerConfig::default() };
    if let Some(ms) = cfg.health_interval_ms {
        config.health_interval = Duration::from_millis(ms);
    }
    let backends = cfg
        .nodes
        .iter()
        .map(|n| {
            Ok(BackendConfig {
                id: n.id.parse().context("node id")?,
                addr: n.addr,
                weight: n.weight.unwrap_or(1),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let handle =
        Balancer::builder(config).backends(backends).strategy(Arc::new(RoundRobin::new())).start().await?;
    println!("{}", serde_json::json!({"balancer": handle.url()}));
    wait_for_signal().await?;
    handle.shutdown().await;
    Ok(())
}

async fn connect(endpoint: &str, token: Option<&str>) -> Result<Client> {
    let token = token
        .map(|t| {
            MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| anyhow!("the token holds invalid characters"))
        })
        .transpose()?;
    let channel = spectrum::core::TransportConfig::default()
        .endpoint(endpoint)?
        .connect()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    Ok(ManagementClient::with_interceptor(channel, Token(token)))
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

async fn put(client: &mut Client, key: String, value: Vec<u8>, ack: Ack, json: bool) -> Result<()> {
    let out = client
        .put(PutRequest { key: key.clone(), value, ack: ack.wire() })
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::json!({"key": key, "version": out.version, "acked": out.acked, "members": out.members})
        );
    } else {
        println!("{key} set (version {}, acknowledged by {}/{} nodes)", out.version, out.acked, out.members);
    }
    Ok(())
}

async fn get(client: &mut Client, key: String) -> Result<proto::Entry> {
    client
        .get(GetRequest { key, min_version: String::new() })
        .await
        .map_err(status_error)?
        .into_inner()
        .entry
        .ok_or_else(|| anyhow!("empty answer"))
}

async fn list(client: &mut Client, prefix: &str) -> Result<Vec<proto::Entry>> {
    Ok(client
        .list(ListRequest { prefix: prefix.to_owned(), min_version: String::new() })
        .await
        .map_err(status_error)?
        .into_inner()
        .entries)
}

fn print_entries(entries: &[proto::Entry], strip: &str, json: bool) {
    if json {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                let value = serde_json::from_slice::<serde_json::Value>(&e.value)
                    .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&e.value).into_owned()));
                serde_json::json!({"key": e.key, "name": e.key.trim_start_matches(strip), "version": e.version, "value": value})
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("{:<40} {:<16} VALUE", "NAME", "VERSION");
        for e in entries {
            let value = String::from_utf8_lossy(&e.value);
            let value: String = value.chars().take(60).collect();
            println!(
                "{:<40} {:<16} {}",
                e.key.trim_start_matches(strip),
                e.version,
                value.replace('\n', " ")
            );
        }
    }
}

fn print_value(entry: &proto::Entry, json: bool) {
    if json {
        let value = serde_json::from_slice::<serde_json::Value>(&entry.value).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&entry.value).into_owned())
        });
        println!("{}", serde_json::json!({"key": entry.key, "version": entry.version, "value": value}));
    } else {
        println!("{}", String::from_utf8_lossy(&entry.value));
    }
}

async fn manage(client: &mut Client, command: Command, json: bool) -> Result<()> {
    match command {
        Command::Node(_) | Command::Balancer(_) => unreachable_command(),
        Command::Status => status(client, json).await,
        Command::Config(cmd) => match cmd {
            ConfigCommand::Get { key } => {
                print_value(&get(client, key).await?, json);
                Ok(())
            }
            ConfigCommand::Put { key, value, ack } => {
                let value = if value == "-" { read_input("-")? } else { value.into_bytes() };
                put(client, key, value, ack, json).await
            }
            ConfigCommand::Delete { key, ack } => {
                let out = client
                    .delete(DeleteRequest { key: key.clone(), ack: ack.wire() })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if json {
                    println!("{}", serde_json::json!({"key": key, "version": out.version, "deleted": true}));
                } else {
                    println!("{key} deleted (version {})", out.version);
                }
                Ok(())
            }
            ConfigCommand::List { prefix } => {
                print_entries(&list(client, &prefix).await?, "", json);
                Ok(())
            }
        },
        Command::License(cmd) => match cmd {
            LicenseCommand::Set { file, name } => {
                put(client, format!("license/{name}"), read_input(&file)?, Ack::All, json).await
            }
            LicenseCommand::Show { name } => {
                print_value(&get(client, format!("license/{name}")).await?, json);
                Ok(())
            }
        },
        Command::Dataflow(cmd) => match cmd {
            DataflowCommand::Create { name, file } => {
                put(client, format!("dataflows/{name}"), read_input(&file)?, Ack::All, json).await
            }
            DataflowCommand::List => {
                print_entries(&list(client, "dataflows/").await?, "dataflows/", json);
                Ok(())
            }
            DataflowCommand::Show { name } => {
                print_value(&get(client, format!("dataflows/{name}")).await?, json);
                Ok(())
            }
            DataflowCommand::Delete { name } => {
                let key = format!("dataflows/{name}");
                let out = client
                    .delete(DeleteRequest { key: key.clone(), ack: Ack::All.wire() })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if json {
                    println!("{}", serde_json::json!({"key": key, "version": out.version, "deleted": true}));
                } else {
                    println!("dataflow {name} deleted (version {})", out.version);
                }
                Ok(())
            }
        },
    }
}

fn unreachable_command() -> Result<()> {
    bail!("this command runs a process and does not manage a cluster")
}

async fn status(client: &mut Client, json: bool) -> Result<()> {
    let s = client.status(StatusRequest {}).await.map_err(status_error)?.into_inner();
    if json {
        let members: Vec<_> = s
            .members
            .iter()
            .map(|m| serde_json::json!({"id": m.id, "addr": m.addr, "state": m.state}))
            .collect();
        let peers: Vec<_> = s
            .peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id, "addr": p.addr, "lag": p.lag,
                    "last_contact_ms_ago": (p.last_contact_ms_ago >= 0).then_some(p.last_contact_ms_ago),
                    "clock_offset_ms": p.has_clock_offset.then_some(p.clock_offset_ms),
                    "clock_skewed": p.clock_skewed,
                    "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "cluster": s.cluster_id, "node": s.node_id, "addr": s.addr, "version": s.version,
                "keys": s.keys, "digest": s.digest, "members": members, "peers": peers,
            })
        );
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
    Ok(())
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
