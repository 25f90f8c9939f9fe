//! `spectrum balancer`: run a balancer from its TOML file, or set the strategy
//! and weights every balancer follows (`set-strategy`, `clear-strategy`,
//! `set-weight`, `clear-weight`, `show`).

use std::fmt;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use spectrum::auth::Token;
use spectrum::balancer::{BackendConfig, Balancer};
use spectrum::client::{AckLevel, AdminClient, ReadAfter, StrategySpec};
use spectrum::config::{BalancerFileConfig, BalancerOverrides, TlsFiles, load};
use spectrum::core::tls::TlsConfig;
use spectrum::discovery::ManagementDiscovery;
use spectrum::resolve::resolve;

use super::{logging, reload_tls_on_change, wait_for_signal};
use crate::cli::{BalancerAction, BalancerArgs};
use crate::output::emit;

/// The first line a running balancer prints (always JSON: scripts wait for it).
#[derive(Serialize)]
struct BalancerStarted<'a> {
    balancer: &'a str,
}

impl fmt::Display for BalancerStarted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "balancer serving at {}", self.balancer)
    }
}

/// Runs a balancer until Ctrl-C or SIGTERM; unless `follow_membership = false`,
/// it follows membership from the nodes it is given, and the strategy and weights
/// the database sets (which override the file's while set).
pub(super) async fn run(args: BalancerArgs, token: Option<Token>) -> Result<()> {
    let Some(path) = args.config else {
        bail!(
            "spectrum balancer needs --config FILE to run a balancer, or one of set-strategy, \
             clear-strategy, set-weight, clear-weight, show"
        );
    };
    logging::init();
    let cfg: BalancerFileConfig = load(&path)?;
    let cfg = cfg.with_overrides(BalancerOverrides {
        listen: args.listen,
        health_interval_ms: args.health_interval_ms,
        token,
    });
    let tls = cfg.tls.as_ref().map(TlsFiles::load).transpose()?;
    let files = tls.clone();
    let (mut config, _) = cfg.balancer_config()?;
    let spec = cfg.strategy_spec()?;
    let client_auth = cfg.client_auth()?;
    config.tls = tls.clone().map(|t| t.client_auth(client_auth));
    // The CA alone towards the nodes: the balancer forwards public services only
    // and needs no node identity (nor a certificate that could expire unnoticed).
    config.upstream_tls = tls.as_ref().map(|t| TlsConfig::from_ca_pem(t.ca_pem())).transpose()?;
    let towards_nodes = config.upstream_tls.clone();
    let mut builder = Balancer::builder(config).backends(static_backends(&cfg).await?).strategy_spec(spec);
    if cfg.follow_membership.unwrap_or(true) {
        let mut discovery = ManagementDiscovery::new(cfg.nodes.iter().map(|n| n.addr.clone()));
        if let Some(token) = cfg.token.clone() {
            discovery = discovery.with_token(token);
        }
        // Membership is read with the CA alone too: the balancer's certificate
        // may be a server-only one, which a node refuses as a client's.
        if let Some(tls) = towards_nodes {
            discovery = discovery.with_tls(tls);
        }
        builder = builder.discovery(Arc::new(discovery), cfg.health_interval());
    }
    let handle = builder.start().await?;
    emit(&BalancerStarted { balancer: &handle.url() }, true)?;
    let reload = async {
        match &files {
            Some(tls) => {
                let apply = |t: TlsConfig| handle.set_tls(&t.client_auth(client_auth));
                reload_tls_on_change(tls, |t| apply(t).map_err(|e| e.to_string())).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = wait_for_signal() => r?,
        () = reload => {}
    }
    handle.shutdown().await;
    Ok(())
}

/// The file's nodes as backends, host names resolved now (a name that does not
/// resolve stops the balancer with its error).
async fn static_backends(cfg: &BalancerFileConfig) -> Result<Vec<BackendConfig>> {
    let mut backends = Vec::with_capacity(cfg.nodes.len());
    for (i, n) in cfg.nodes.iter().enumerate() {
        let addr = resolve(&n.addr).await.with_context(|| {
            format!("nodes[{i}].addr: cannot resolve {} (node {})", n.addr.authority(), n.id)
        })?;
        backends.push(BackendConfig { id: n.id.clone(), addr, weight: n.weight.unwrap_or(1) });
    }
    Ok(backends)
}

/// `balancer set-strategy|clear-strategy|set-weight|clear-weight|show`, through
/// the management API.
pub(super) async fn manage(
    client: &AdminClient,
    action: BalancerAction,
    ack: AckLevel,
    json: bool,
) -> Result<()> {
    match action {
        BalancerAction::SetStrategy { name, hash_key, load_factor } => {
            let spec = StrategySpec::new(name, hash_key.as_deref(), load_factor)?;
            emit(&client.set_balancer_strategy(&spec, ack).await?, json)
        }
        BalancerAction::ClearStrategy => emit(&client.clear_balancer_strategy(ack).await?, json),
        BalancerAction::SetWeight { node, weight } => {
            emit(&client.set_balancer_weight(&node, weight, ack).await?, json)
        }
        BalancerAction::ClearWeight { node } => emit(&client.clear_balancer_weight(&node, ack).await?, json),
        BalancerAction::Show => emit(&client.balancer_settings(ReadAfter::Anything).await?, json),
    }
}
