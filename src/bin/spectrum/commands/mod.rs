//! One module per command group; each `run` takes a connected client (or, for
//! `node` and `balancer`, its arguments), does one thing, and emits one value.

use std::fmt;

use anyhow::Result;
use serde::Serialize;
use spectrum::auth::Token;
use spectrum::client::{AckLevel, AdminClient, ClientError};
use spectrum::core::{PeerAddr, TransportConfig};
use tonic::transport::Channel;

use crate::cli::{Cli, Command, KeyCommand, NodeArgs};
use crate::output::emit;

mod audit;
mod balancer;
mod config;
mod dataflow;
mod license;
mod node;
mod resources;
mod status;
mod user;

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let Cli { endpoint, token, json, ack, command } = cli;
    let ack = AckLevel::from(ack);
    match command {
        Command::Node(NodeArgs { action: Some(action), .. }) => {
            node::set_state(&client(&endpoint, token).await?, action, ack, json).await
        }
        Command::Node(args) => node::run(args, token).await,
        Command::Balancer(args) => balancer::run(args, token).await,
        Command::GenerateKey | Command::Key(KeyCommand::Generate) => generate_key(json),
        Command::Key(KeyCommand::Rotate) => {
            emit(&client(&endpoint, token).await?.reseal_secrets(ack).await?, json)
        }
        Command::Status => {
            let channel = connect(&endpoint).await?;
            let admin = AdminClient::from_channel(channel.clone(), token.clone());
            status::run(&admin, channel, token.as_ref(), json).await
        }
        Command::Config(cmd) => config::run(&client(&endpoint, token).await?, cmd, ack, json).await,
        Command::License(cmd) => license::run(&client(&endpoint, token).await?, cmd, ack, json).await,
        Command::Dataflow(cmd) => dataflow::run(&client(&endpoint, token).await?, cmd, ack, json).await,
        Command::Resources(cmd) => resources::run(&client(&endpoint, token).await?, cmd, ack, json).await,
        Command::User(cmd) => user::run(&client(&endpoint, token).await?, cmd, ack, json).await,
        Command::Audit(args) => audit::run(&client(&endpoint, token).await?, args, json).await,
    }
}

/// A channel to `endpoint`, failing as [`AdminClient::connect`] does when it is
/// unreachable (`status` shares it with the balancer's stats client).
async fn connect(endpoint: &PeerAddr) -> Result<Channel> {
    TransportConfig::default()
        .endpoint(endpoint)
        .connect()
        .await
        .map_err(|source| ClientError::Connect { endpoint: endpoint.clone(), source }.into())
}

/// The management client for `endpoint`, sending `token`.
async fn client(endpoint: &PeerAddr, token: Option<Token>) -> Result<AdminClient> {
    Ok(AdminClient::connect(endpoint, token).await?)
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
