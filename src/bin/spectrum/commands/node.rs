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
use tracing::warn;

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
    let key = cfg.cluster_key.clone();
    if key.is_none() {
        warn!("no cluster_key configured: this node refuses to store resource secrets");
    }
    let mut builder = NodeBuilder::new(cfg.id.clone(), cfg.cluster.clone())
        .listen(cfg.listen)
        .seeds(cfg.seeds.clone())
        .sync_interval(cfg.sync_interval())
        .replication(cfg.replication)
        .leave_on_terminate(cfg.leave_on_terminate)
        .add_service_with(spectrum::demo::DataflowService::server)
        .dataflow_check(spectrum::demo::check_dataflow);
    if let Some(log) = cfg.change_log {
        builder = builder.change_log(log.limits()?);
    }
    if let Some(raft) = cfg.raft {
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
    if let Some(key) = key {
        builder = builder.cluster_key(key);
    }
    if !cfg.previous_cluster_keys.is_empty() {
        builder = builder.previous_cluster_keys(cfg.previous_cluster_keys.clone());
    }
    if let Some(dir) = cfg.data_dir.clone() {
        builder = builder.data_dir(dir);
    }
    let tls = cfg.tls.as_ref().map(|files| files.load()).transpose()?;
    if let Some(tls) = tls.clone() {
        builder = builder.tls(tls);
    }
    let node = builder.start().await?;
    // Over TLS the node is reached with https:// (membership keeps http://).
    let url = match cfg.tls {
        Some(_) => format!("https://{}", node.addr().authority()),
        None => node.url().to_owned(),
    };
    emit(&NodeStarted { node: node.id().as_str(), cluster: cfg.cluster.as_str(), addr: &url }, true)?;
    let reload = async {
        match &tls {
            Some(tls) => reload_tls_on_change(tls, |t| node.set_tls(t).map_err(|e| e.to_string())).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = wait_for_signal() => r?,
        () = reload => {}
    }
    node.shutdown().await;
    Ok(())
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
