//! One module per command group; each `run` takes a connected client (or, for
//! `node` and `balancer`, its arguments), does one thing, and emits one value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{Result, bail};
use serde::Serialize;
use spectrum::auth::Token;
use spectrum::client::{AckLevel, AdminClient, Session};
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
mod logging;
mod node;
mod resources;
mod status;
mod transfer;
mod user;

/// Runs the parsed command line; with a session file, loads it first and saves
/// it back when the command's writes added to it (even if the command then failed).
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let Cli {
        endpoint,
        ca_cert,
        client_cert,
        client_key,
        token,
        json,
        ack,
        session,
        read_wait_ms,
        idempotency_key,
        token_from_env,
        command,
    } = cli;
    // Checked here, not by clap: its `requires` on global arguments names no
    // argument in its message (a trial saw an empty list).
    match (&client_cert, &client_key) {
        (Some(_), None) => anyhow::bail!("--client-cert needs its private key: give --client-key FILE too"),
        (None, Some(_)) => anyhow::bail!("--client-key needs its certificate: give --client-cert FILE too"),
        _ => {}
    }
    let kept = session.as_deref().map(crate::session::load).transpose()?;
    let target = Target {
        endpoint,
        ca_cert,
        client_identity: client_cert.zip(client_key),
        token,
        session: kept.clone(),
        read_wait: read_wait_ms.map(std::time::Duration::from_millis),
        idempotency_key,
        made: Mutex::new(Vec::new()),
    };
    let done = dispatch(&target, command, AckLevel::from(ack), json, token_from_env).await;
    if let (Some(path), Some(before)) = (session, kept) {
        let mut after = before.clone();
        for client in target.made.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            after.merge(&client.session().unwrap_or_default());
        }
        if after != before {
            crate::session::save(&path, &after)?;
        }
    }
    done
}

/// Runs one command against `target`.
async fn dispatch(
    target: &Target,
    command: Command,
    ack: AckLevel,
    json: bool,
    token_from_env: bool,
) -> Result<()> {
    let token = target.token.clone();
    match command {
        Command::Node(NodeArgs { action: Some(action), .. }) => {
            node::set_state(&target.client().await?, action, ack, json).await
        }
        Command::Node(args) => node::run(args, token.filter(|_| !token_from_env), token_from_env).await,
        Command::Balancer(BalancerArgs { action: Some(action), .. }) => {
            balancer::manage(&target.client().await?, action, ack, json).await
        }
        Command::Balancer(args) => balancer::run(args, token).await,
        Command::GenerateKey | Command::Key(KeyCommand::Generate) => generate_key(json),
        Command::Key(KeyCommand::Rotate) => {
            let report = target.client().await?.reseal_secrets(ack).await?;
            emit(&report, json)?;
            if !report.unreadable.is_empty() {
                bail!(
                    "{} definition(s) hold secrets no key of the answering node opens; give every node \
                     the key they were sealed with in previous_cluster_keys, then run this again",
                    report.unreadable.len()
                );
            }
            Ok(())
        }
        Command::Cert(cmd) => cert::run(cmd, json),
        Command::Status => {
            let channel = target.remote()?.connect().await?;
            let admin = AdminClient::from_channel(channel.clone(), token.clone());
            status::run(&admin, channel, token.as_ref(), json).await
        }
        Command::Config(cmd) => config::run(&target.client().await?, cmd, ack, json).await,
        Command::License(cmd) => license::run(&target.client().await?, cmd, ack, json).await,
        Command::Dataflow(cmd) => dataflow::run(&target.client().await?, cmd, ack, json).await,
        Command::Resources(cmd) => resources::run(&target.client().await?, cmd, ack, json).await,
        Command::User(cmd) => user::run(&target.client().await?, cmd, ack, json).await,
        Command::Audit(args) => audit::run(&target.client().await?, args, json).await,
        Command::Export { output } => transfer::export(&target.client().await?, output, json).await,
        Command::Import { file, dry_run } => {
            transfer::import(&target.client().await?, &file, dry_run, ack, json).await
        }
    }
}

/// What management commands connect to and with what: the endpoint (checked only
/// when a command needs it), the token, and the session kept, if any.
struct Target {
    endpoint: Endpoint,
    ca_cert: Option<PathBuf>,
    /// The client certificate and key to present, if any.
    client_identity: Option<(PathBuf, PathBuf)>,
    token: Option<Token>,
    session: Option<Session>,
    read_wait: Option<std::time::Duration>,
    /// The key every call of the command carries, if any.
    idempotency_key: Option<spectrum::management::idempotency::IdempotencyKey>,
    /// The clients handed out, whose sessions are saved back after the command.
    made: Mutex<Vec<AdminClient>>,
}

impl Target {
    fn remote(&self) -> Result<Remote> {
        let mut remote = Remote::new(&self.endpoint, self.ca_cert.as_deref(), self.client_identity.as_ref())?;
        // A read may wait up to `read_wait` on a node, and a balancer may try
        // it on as many nodes as its default `retry.max_attempts`: the call's
        // own timeout must outlast that, or the node's answer (what is
        // missing) never arrives.
        if let (Some(wait), Some(timeout)) = (self.read_wait, remote.transport.request_timeout) {
            let attempts = spectrum_balancer::BalancerConfig::default().max_attempts;
            remote.transport.request_timeout = Some(timeout + wait * attempts);
        }
        Ok(remote)
    }

    /// The management client, keeping the session and read wait asked for.
    async fn client(&self) -> Result<AdminClient> {
        let mut client = self.remote()?.client(self.token.clone()).await?;
        if let Some(session) = &self.session {
            client = client.with_session(session.clone());
        }
        if let Some(wait) = self.read_wait {
            client = client.with_read_wait(wait);
        }
        if let Some(key) = &self.idempotency_key {
            client = client.with_idempotency_key(key.clone());
        }
        self.made.lock().unwrap_or_else(PoisonError::into_inner).push(client.clone());
        Ok(client)
    }
}

/// The endpoint management commands talk to, and how.
struct Remote {
    addr: PeerAddr,
    transport: TransportConfig,
}

impl Remote {
    /// `https://` endpoints need the CA; `--ca-cert` goes with `https://` only, so
    /// a CA never silently goes unused on a plaintext connection; a client
    /// certificate (`identity`) goes with `https://` only too.
    fn new(
        endpoint: &Endpoint,
        ca_cert: Option<&Path>,
        identity: Option<&(PathBuf, PathBuf)>,
    ) -> Result<Self> {
        if identity.is_some() && !endpoint.https {
            bail!("--client-cert (or SPECTRUM_CLIENT_CERT) is set but the endpoint is {}", endpoint.addr);
        }
        let transport = match (endpoint.https, ca_cert) {
            (true, Some(ca)) => TransportConfig::default().with_tls(match identity {
                Some((cert, key)) => TlsConfig::from_files(ca, cert, key)?,
                None => TlsConfig::from_ca_file(ca)?,
            }),
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
        Ok(spectrum::client::connect_channel(&self.addr, &self.transport).await?)
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
