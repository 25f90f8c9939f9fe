//! `spectrum node`: run a node from its TOML file, or drain / undrain a member.

use std::fmt;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use spectrum::NodeBuilder;
use spectrum::auth::Token;
use spectrum::client::{AckLevel, AdminClient, NodeStateChange};
use spectrum::config::{NodeFileConfig, NodeOverrides, load};
use spectrum::resources::ClusterKey;
use tracing::{error, info, warn};

use super::{logging, reload_tls_on_change, wait_for_signal};
use crate::cli::{NodeAction, NodeArgs};
use crate::output::emit;

/// The first line a running node prints (always JSON: scripts wait for it).
#[derive(Serialize)]
struct NodeStarted<'a> {
    node: &'a str,
    cluster: &'a str,
    addr: &'a str,
}

impl fmt::Display for NodeStarted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} of cluster {} serving at {}", self.node, self.cluster, self.addr)
    }
}

/// Runs a node until Ctrl-C or SIGTERM. `token` is `--token`'s; with
/// `client_token_set`, `SPECTRUM_TOKEN` is set in the environment, which a node
/// does not read (see `NodeArgs::bootstrap_token`).
pub(super) async fn run(args: NodeArgs, token: Option<Token>, client_token_set: bool) -> Result<()> {
    let Some(path) = args.config else {
        bail!("spectrum node needs --config FILE to run a node, or `drain ID` / `undrain ID`");
    };
    logging::init();
    let cfg: NodeFileConfig = load(&path)?;
    let cfg = cfg.with_overrides(NodeOverrides {
        id: args.id,
        cluster: args.cluster,
        listen: args.listen,
        advertise: args.advertise,
        seeds: args.seeds,
        data_dir: args.data_dir,
        token: token.or(args.bootstrap_token),
        // Parsed here rather than by clap, whose error would echo the value.
        cluster_key: args
            .cluster_key
            .map(|k| {
                k.parse::<ClusterKey>().map_err(|e| anyhow!("--cluster-key (or SPECTRUM_CLUSTER_KEY): {e}"))
            })
            .transpose()?,
    });
    if client_token_set {
        if cfg.token.is_none() {
            bail!(
                "SPECTRUM_TOKEN is set, but a node does not take its bootstrap token from it (it is the \
                 token management commands send); give the node its own in its file (`token`), \
                 SPECTRUM_BOOTSTRAP_TOKEN or --token, or unset SPECTRUM_TOKEN to run it in development mode"
            );
        }
        warn!(
            "SPECTRUM_TOKEN (the token management commands send) is not read by a node; its bootstrap token is its own"
        );
    }
    if cfg.cluster_key.is_none() {
        warn!("no cluster_key configured: this node refuses to store resource secrets");
    }
    let mut tls = cfg.tls.as_ref().map(|files| files.load()).transpose()?;
    let mut node = builder(&cfg, tls.clone())?.start().await?;
    // Over TLS the node is reached with https:// (membership keeps http://).
    let url = match cfg.tls {
        Some(_) => format!("https://{}", node.addr().authority()),
        None => node.url().to_owned(),
    };
    emit(&NodeStarted { node: node.id().as_str(), cluster: cfg.cluster.as_str(), addr: &url }, true)?;
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let mut restarts = Restarts::default();
    loop {
        let reload = async {
            match &tls {
                Some(tls) => reload_tls_on_change(tls, |t| node.set_tls(t).map_err(|e| e.to_string())).await,
                None => std::future::pending().await,
            }
        };
        let error = tokio::select! {
            r = &mut signal => {
                r?;
                break;
            }
            () = reload => continue,
            error = consensus_stopped(&node) => error,
        };
        // Only a node with a data directory restarts: one in memory would
        // come back with its Raft state lost. And only after a full disk: a
        // write that failed for lack of room wrote nothing, while after
        // another I/O error (a failed fsync) the page cache may hold entries
        // the disk does not, which a reopened log would read back as durable.
        let full_disk = error.contains("No space left on device") || error.contains("os error 28");
        let Some(dir) = cfg.data_dir.clone().filter(|_| full_disk) else {
            error!(%error, "consensus stopped; not restarted by itself (only a full disk is): check the disk, then restart the node");
            (&mut signal).await?;
            break;
        };
        error!(%error, "consensus stopped: restarting the node once its data directory takes a write");
        // Meanwhile the stopped node keeps its port, answering not ready
        // and saying why (`/readyz`, status).
        tokio::select! {
            r = &mut signal => {
                r?;
                break;
            }
            () = restarts.wait(&dir) => {}
        }
        node.kill().await;
        let restarted = async {
            loop {
                // Certificates renewed meanwhile are read again; the old ones if not readable.
                if let Some(files) = &cfg.tls {
                    match files.load() {
                        Ok(fresh) => tls = Some(fresh),
                        Err(e) => warn!(error = %e, "kept the TLS certificate the node had"),
                    }
                }
                match builder(&cfg, tls.clone())?.start().await {
                    Ok(node) => return anyhow::Ok(node),
                    Err(e) => error!(error = %e, "the node did not start again; trying again"),
                }
                restarts.wait(&dir).await;
            }
        };
        tokio::select! {
            r = &mut signal => return r,
            started = restarted => {
                node = started?;
                restarts.count += 1;
                info!(node = %node.id(), restarts = restarts.count, "node restarted after its consensus stopped");
            }
        }
    }
    node.shutdown().await;
    Ok(())
}

/// The node `cfg` describes, serving `tls` when given.
fn builder(cfg: &NodeFileConfig, tls: Option<spectrum::core::tls::TlsConfig>) -> Result<NodeBuilder> {
    let mut builder = NodeBuilder::new(cfg.id.clone(), cfg.cluster.clone())
        .listen(cfg.listen)
        .seeds(cfg.seeds.clone())
        .sync_interval(cfg.sync_interval())
        .replication(cfg.replication)
        .leave_on_terminate(cfg.leave_on_terminate)
        .add_service_with(spectrum::demo::DataflowService::server)
        .dataflow_check(spectrum::demo::check_dataflow);
    if let Some(log) = &cfg.change_log {
        builder = builder.change_log(log.limits()?);
    }
    if let Some(raft) = &cfg.raft {
        builder = builder.raft_settings(raft.settings()?);
        if let Some(keep) = raft.tombstone_keep()? {
            builder = builder.raft_tombstone_keep(keep);
        }
    }
    if let Some(ms) = cfg.max_clock_offset_ms {
        builder = builder.max_clock_offset(Duration::from_millis(ms));
    }
    if let Some(advertise) = cfg.advertise.clone() {
        builder = builder.advertise(advertise);
    }
    if let Some(token) = cfg.token.clone() {
        builder = builder.management_token(token);
    }
    if let Some(key) = cfg.cluster_key.clone() {
        builder = builder.cluster_key(key);
    }
    if !cfg.previous_cluster_keys.is_empty() {
        builder = builder.previous_cluster_keys(cfg.previous_cluster_keys.clone());
    }
    if let Some(dir) = cfg.data_dir.clone() {
        builder = builder.data_dir(dir);
    }
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    Ok(builder)
}

/// Resolves with the error its Raft node stopped on, should it stop on one
/// (a log append that failed on a full disk: openraft treats every storage
/// error as fatal); never in last-writer-wins mode, whose store recovers by
/// itself.
async fn consensus_stopped(node: &spectrum::Node) -> String {
    let Some(raft) = node.raft() else { return std::future::pending().await };
    let mut poll = tokio::time::interval(CONSENSUS_POLL);
    loop {
        poll.tick().await;
        if let Some(error) = raft.stopped_on_error() {
            return error;
        }
    }
}

/// How often a running node's consensus is checked for a stop on an error.
const CONSENSUS_POLL: Duration = Duration::from_millis(500);

/// The in-process restarts of a node whose consensus stopped: as a
/// supervisor restarts etcd, which exits when its WAL cannot be written, but
/// only once the data directory takes a write (so a full disk is waited out
/// rather than restarted into), and later after each restart that did not
/// last ([`RESTART_LASTS`]).
#[derive(Debug, Default)]
struct Restarts {
    /// Restarts that started the node again.
    count: u64,
    /// When the last wait ended (a restart was tried).
    last: Option<tokio::time::Instant>,
    /// The least time before the next restart (grows while restarts do not last).
    backoff: Duration,
}

/// A restart that ran this long without stopping again resets the backoff.
const RESTART_LASTS: Duration = Duration::from_secs(60);
/// The most time between two restarts, and between two probes of a data
/// directory that takes no write.
const MAX_RESTART_WAIT: Duration = Duration::from_secs(30);
/// Bytes a probe of the data directory writes and syncs (then removes).
const PROBE_BYTES: usize = 1 << 20;

impl Restarts {
    /// Waits out the backoff, then until `dir` takes a write of
    /// [`PROBE_BYTES`], synced.
    async fn wait(&mut self, dir: &std::path::Path) {
        let now = tokio::time::Instant::now();
        self.backoff = match self.last {
            Some(last) if now.duration_since(last) < RESTART_LASTS => {
                (self.backoff * 2).clamp(Duration::from_millis(500), MAX_RESTART_WAIT)
            }
            _ => Duration::ZERO,
        };
        tokio::time::sleep(self.backoff).await;
        let mut probe_every = Duration::from_millis(250);
        let mut told = false;
        loop {
            let dir = dir.to_path_buf();
            let probed = tokio::task::spawn_blocking(move || probe_write(&dir)).await;
            match probed {
                Ok(Ok(())) => break,
                Ok(Err(e)) if !told => {
                    warn!(error = %e, "the data directory takes no write yet (a full disk?); the node restarts once it does");
                    told = true;
                }
                _ => {}
            }
            tokio::time::sleep(probe_every).await;
            probe_every = (probe_every * 2).min(MAX_RESTART_WAIT);
        }
        self.last = Some(tokio::time::Instant::now());
    }
}

/// Writes [`PROBE_BYTES`] to a file in `dir`, syncs it and removes it.
fn probe_write(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".spectrum-write-probe");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    written?;
    removed
}

/// `node drain ID` / `node undrain ID` / `node remove ID`.
pub(super) async fn set_state(
    client: &AdminClient,
    action: NodeAction,
    ack: AckLevel,
    json: bool,
) -> Result<()> {
    let (id, change) = match action {
        NodeAction::Drain { id } => (id, NodeStateChange::Drain),
        NodeAction::Undrain { id } => (id, NodeStateChange::Undrain),
        NodeAction::Remove { id } => (id, NodeStateChange::Remove),
    };
    emit(&client.set_node_state(&id, change, ack).await?, json)
}
