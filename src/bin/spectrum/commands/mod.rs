//! One module per command group; each `run` takes a connected client (or, for
//! `node` and `balancer`, its arguments), does one thing, and emits one value.

use std::fmt;

use std::path::Path;

use anyhow::{Result, bail};
use serde::Serialize;
use spectrum::auth::Token;
use spectrum::client::{AckLevel, AdminClient, ClientError};
use spectrum::core::tls::TlsConfig;
use spectrum::core::{PeerAddr, TransportConfig};
use tonic::transport::Channel;

use tracing::{info, warn};

use crate::cli::{BalancerArgs, Cli, Command, Endpoint, KeyCommand, NodeArgs};
use crate::output::emit;

mod audit;
mod balancer;
mod cert;
mod config;
mod dataflow;
mod license;
mod node;
mod resources;
mod status;
mod transfer;
mod user;

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let Cli { endpoint, ca_cert, token, json, ack, command } = cli;
    let ack = AckLevel::from(ack);
    let remote = || Remote::new(&endpoint, ca_cert.as_deref());
    match command {
        Command::Node(NodeArgs { action: Some(action), .. }) => {
            node::set_state(&remote()?.client(token).await?, action, ack, json).await
        }
        Command::Node(args) => node::run(args, token).await,
        Command::Balancer(BalancerArgs { action: Some(action), .. }) => {
            balancer::manage(&remote()?.client(token).await?, action, ack, json).await
        }
        Command::Balancer(args) => balancer::run(args, token).await,
        Command::GenerateKey | Command::Key(KeyCommand::Generate) => generate_key(json),
        Command::Key(KeyCommand::Rotate) => {
            emit(&remote()?.client(token).await?.reseal_secrets(ack).await?, json)
        }
        Command::Cert(cmd) => cert::run(cmd, json),
        Command::Status => {
            let channel = remote()?.connect().await?;
            let admin = AdminClient::from_channel(channel.clone(), token.clone());
            status::run(&admin, channel, token.as_ref(), json).await
        }
        Command::Config(cmd) => config::run(&remote()?.client(token).await?, cmd, ack, json).await,
        Command::License(cmd) => license::run(&remote()?.client(token).await?, cmd, ack, json).await,
        Command::Dataflow(cmd) => dataflow::run(&remote()?.client(token).await?, cmd, ack, json).await,
        Command::Resources(cmd) => resources::run(&remote()?.client(token).await?, cmd, ack, json).await,
        Command::User(cmd) => user::run(&remote()?.client(token).await?, cmd, ack, json).await,
        Command::Audit(args) => audit::run(&remote()?.client(token).await?, args, json).await,
        Command::Export { output } => transfer::export(&remote()?.client(token).await?, output, json).await,
        Command::Import { file, dry_run } => {
            transfer::import(&remote()?.client(token).await?, &file, dry_run, ack, json).await
        }
    }
}

/// The endpoint management commands talk to, and how.
struct Remote {
    addr: PeerAddr,
    transport: TransportConfig,
}

impl Remote {
    /// `https://` endpoints need the CA; `--ca-cert` goes with `https://` only, so
    /// a CA never silently goes unused on a plaintext connection.
    fn new(endpoint: &Endpoint, ca_cert: Option<&Path>) -> Result<Self> {
        let transport = match (endpoint.https, ca_cert) {
            (true, Some(ca)) => TransportConfig::default().with_tls(TlsConfig::from_ca_file(ca)?),
            (true, None) => bail!("an https:// endpoint needs --ca-cert FILE (or SPECTRUM_CA_CERT)"),
            (false, Some(_)) => bail!(
                "--ca-cert (or SPECTRUM_CA_CERT) is set but the endpoint is {}; use https://{}",
                endpoint.addr,
                endpoint.addr.authority()
            ),
            (false, None) => TransportConfig::default(),
        };
        Ok(Self { addr: endpoint.addr.clone(), transport })
    }

    /// A channel to the endpoint, failing as [`AdminClient::connect`] does when it
    /// is unreachable (`status` shares it with the balancer's stats client).
    async fn connect(&self) -> Result<Channel> {
        self.transport
            .endpoint(&self.addr)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { endpoint: self.addr.clone(), source }.into())
    }

    /// The management client, sending `token`.
    async fn client(&self, token: Option<Token>) -> Result<AdminClient> {
        Ok(AdminClient::connect_with(&self.addr, token, &self.transport).await?)
    }
}

/// A new cluster key: `{"cluster_key": …}`, or the hex digits alone.
#[derive(Serialize)]
struct GeneratedKey {
    cluster_key: String,
}

impl fmt::Display for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cluster_key)
    }
}

fn generate_key(json: bool) -> Result<()> {
    emit(&GeneratedKey { cluster_key: spectrum::resources::ClusterKey::generate().to_hex() }, json)
}

/// How often a TLS process looks at its certificate files' modification times.
const TLS_FILE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the certificate files of `tls` again on SIGHUP and when they change, and
/// hands each new configuration to `apply` (a failure keeps the current one, with
/// a warning). Never returns.
async fn reload_tls_on_change(tls: &TlsConfig, apply: impl Fn(TlsConfig) -> Result<(), String>) {
    let Some(mut seen) = tls.files_modified() else { return std::future::pending().await };
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut poll = tokio::time::interval(TLS_FILE_POLL);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            _ = hangup => "SIGHUP",
            _ = poll.tick() => match tls.files_modified() {
                Some(now) if now != seen => { seen = now; "the files changed" }
                _ => continue,
            },
        };
        match tls.reload().map(|r| r.map_err(|e| e.to_string()).and_then(&apply)) {
            Some(Ok(())) => info!(reason = why, "reloaded the TLS certificate files"),
            Some(Err(e)) => warn!(reason = why, error = %e, "kept the current TLS certificate"),
            None => {}
        }
    }
}

/// Waits for Ctrl-C or, on Unix, SIGTERM.
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

/// Logs to standard error, at `info` unless `RUST_LOG` says otherwise.
fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
