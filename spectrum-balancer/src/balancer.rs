//! Starting, observing, reconfiguring and stopping a balancer: the assembly that
//! binds the ports, spawns the tasks and wires discovery sources to the pool.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use spectrum_core::tls::TlsConfig;
use spectrum_core::{Member, NodeId};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn};

use crate::config::{BackendConfig, BalancerConfig};
use crate::discovery::{BalancingSettings, Discovery};
use crate::error::BalancerError;
use crate::metrics;
use crate::pool::Pool;
use crate::proxy::Proxy;
use crate::routing::{Routing, StrategyInForce};
use crate::serve::{self, ConnectionLimits, Workers};
use crate::stats::{BackendStats, BalancerStatsService};
use crate::strategy::{BalancingStrategy, RoundRobin, StrategyName, StrategySpec};
use crate::tls::SharedAcceptor;

/// The load balancer. Start one with [`Balancer::builder`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Balancer;

impl Balancer {
    /// A builder for a balancer with this configuration, no backends yet, and the
    /// [`RoundRobin`] strategy.
    pub fn builder(config: BalancerConfig) -> BalancerBuilder {
        BalancerBuilder { config, backends: Vec::new(), strategy: None, spec: None, discovery: None }
    }
}

/// Configures and starts a balancer; see [`Balancer::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct BalancerBuilder {
    config: BalancerConfig,
    backends: Vec<BackendConfig>,
    strategy: Option<Arc<dyn BalancingStrategy>>,
    /// The spec `strategy` was built from, when it was given as one.
    spec: Option<StrategySpec>,
    discovery: Option<(Arc<dyn Discovery>, Duration)>,
}

/// How often [`BalancerBuilder::discovery`] sources are polled unless told otherwise.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

impl BalancerBuilder {
    /// Learns the backends from cluster membership: `source` is asked at start and
    /// then every `interval` (one second is a good value, see
    /// [`DEFAULT_DISCOVERY_INTERVAL`]). New active members are health-checked, then
    /// get traffic; draining members get no new requests while their open ones
    /// finish; left and absent members are removed. Load figures survive.
    ///
    /// When the source also knows the cluster's [`BalancingSettings`]
    /// ([`Discovery::settings`]), the balancer follows them at the same pace:
    /// their strategy and weights override the ones it was built with, and are
    /// swapped while serving, without failing a request.
    ///
    /// Backends given with [`backends`](Self::backends) serve until the first
    /// successful poll replaces them.
    pub fn discovery(mut self, source: Arc<dyn Discovery>, interval: Duration) -> Self {
        self.discovery = Some((source, interval));
        self
    }

    /// The initial backends (replace them later with [`BalancerHandle::set_backends`]).
    pub fn backends(mut self, backends: Vec<BackendConfig>) -> Self {
        self.backends = backends;
        self
    }

    /// The strategy that picks a backend for each request. Default [`RoundRobin`].
    /// Status reports it by its type name (`Debug`'s first word); give a reference
    /// strategy with [`strategy_spec`](Self::strategy_spec) to have it reported by
    /// name with its parameters.
    pub fn strategy(mut self, strategy: Arc<dyn BalancingStrategy>) -> Self {
        self.strategy = Some(strategy);
        self.spec = None;
        self
    }

    /// A reference strategy by name with its parameters, in place of
    /// [`strategy`](Self::strategy). Its hash key, when it sets one, replaces
    /// [`BalancerConfig::affinity_header`] and
    /// [`BalancerConfig::affinity_client_address`].
    pub fn strategy_spec(mut self, spec: StrategySpec) -> Self {
        self.strategy = Some(spec.build());
        self.spec = Some(spec);
        self
    }

    /// Binds the listening port, starts health checks and begins serving.
    ///
    /// New backends are not yet checked: until a first check passes, requests go
    /// to them anyway if no backend is known healthy (so traffic flows from the
    /// start), and to checked backends otherwise.
    ///
    /// # Errors
    ///
    /// [`BalancerError::InvalidConfig`] for an out-of-range setting (a zero discovery
    /// interval included),
    /// [`BalancerError::DuplicateBackend`] when two backends share an id, and
    /// [`BalancerError::Bind`] when the address (or the metrics address) cannot be bound.
    #[instrument(skip_all, fields(listen = %self.config.listen))]
    pub async fn start(self) -> Result<BalancerHandle, BalancerError> {
        self.config.validate()?;
        if self.discovery.as_ref().is_some_and(|(_, interval)| interval.is_zero()) {
            return Err(BalancerError::InvalidConfig {
                field: "discovery interval",
                reason: "must be greater than zero",
            });
        }
        let listen = self.config.listen;
        let listener = TcpListener::bind(listen).await.map_err(|source| BalancerError::Bind {
            what: "listen",
            addr: listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| BalancerError::Bind {
            what: "listen",
            addr: listen,
            source,
        })?;
        let limits = ConnectionLimits::of(&self.config);
        let admin_listen = self.config.admin_listen;
        let serve_stats = self.config.serve_stats;
        let acceptor = self.config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let acceptor = acceptor.map(|a| Arc::new(SharedAcceptor::new(a)));
        let connector = self.config.upstream_tls.as_ref().map(crate::tls::connector).transpose()?;
        let (strategy, spec) = match self.strategy {
            Some(strategy) => (strategy, self.spec),
            None => (
                Arc::new(RoundRobin::new()) as Arc<dyn BalancingStrategy>,
                Some(StrategySpec::named(StrategyName::RoundRobin)),
            ),
        };
        let routing = Routing::configured(&self.config, strategy, spec);
        let pool = Pool::new(self.config, connector, routing);
        pool.set_backends(self.backends)?;
        let stats = serve_stats.then(|| BalancerStatsService::new(pool.clone()).into_server());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let workers = Workers::start(pool.config().workers, limits, &shutdown_rx, |worker| {
            Arc::new(Proxy {
                pool: pool.clone(),
                stats: stats.clone(),
                worker,
                admitted: Default::default(),
                snapshot: Default::default(),
            })
        })?;
        let mut tasks = Vec::new();
        let mut admin_addr = None;
        if let Some(addr) = admin_listen {
            let listener = TcpListener::bind(addr).await.map_err(|source| BalancerError::Bind {
                what: "admin_listen",
                addr,
                source,
            })?;
            let bound = listener.local_addr().map_err(|source| BalancerError::Bind {
                what: "admin_listen",
                addr,
                source,
            })?;
            if bound.ip().is_loopback() {
                info!(%bound, "admin listener: /metrics and Stats");
            } else {
                warn!(%bound, "the admin listener (/metrics and Stats, no token) is not on loopback: anyone who reaches it reads the balancer's figures");
            }
            admin_addr = Some(bound);
            let stats = BalancerStatsService::new(pool.clone()).into_server();
            tasks.push(tokio::spawn(metrics::serve(listener, pool.clone(), stats)));
        }
        if let Some((source, interval)) = self.discovery {
            tasks.push(tokio::spawn(poll_discovery(source, interval, Arc::downgrade(&pool))));
        }
        let tls = acceptor.clone();
        let accept =
            tokio::spawn(serve::accept_loop(listener, acceptor, workers, shutdown_rx, limits, pool.clone()));
        info!(%local_addr, tls = tls.is_some(), "balancer listening");
        Ok(BalancerHandle { local_addr, tls, admin_addr, pool, shutdown, accept: Some(accept), tasks })
    }
}

/// A running balancer.
///
/// Dropping the handle stops the balancer as [`shutdown`](Self::shutdown) does, but
/// without waiting for open requests.
#[derive(Debug)]
pub struct BalancerHandle {
    local_addr: SocketAddr,
    /// The listener's TLS, replaceable while serving.
    tls: Option<Arc<SharedAcceptor>>,
    admin_addr: Option<SocketAddr>,
    pool: Arc<Pool>,
    shutdown: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    /// Discovery and metrics tasks, stopped with the balancer.
    tasks: Vec<JoinHandle<()>>,
}

impl BalancerHandle {
    /// The address the balancer listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The balancer's address as a URL: `http://IP:PORT`, or `https://IP:PORT`
    /// when it serves TLS ([`BalancerConfig::tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Serves `tls`'s certificate (and its CA for client certificates) to every
    /// client connection accepted from now on; open connections keep theirs. For
    /// certificate rotation without a restart. The certificate presented to nodes
    /// ([`BalancerConfig::upstream_tls`]) is the one the balancer started with.
    ///
    /// # Errors
    ///
    /// [`BalancerError::Tls`] when the balancer was started without TLS or `tls`
    /// cannot be served (the current certificate stays).
    pub fn set_tls(&self, tls: &TlsConfig) -> Result<(), BalancerError> {
        let shared = self.tls.as_ref().ok_or_else(|| BalancerError::Tls {
            field: "tls",
            reason: "the balancer was started without TLS".into(),
        })?;
        shared.replace(crate::tls::acceptor(tls)?);
        Ok(())
    }

    /// The address of the admin listener (`/metrics` and Stats), when
    /// [`BalancerConfig::admin_listen`] is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Every figure of the balancer in the Prometheus text format, as the metrics
    /// listener serves it at `/metrics` (request, retry and refusal counters; per
    /// backend: requests, failures, retries, in flight, latency average, health,
    /// ejection and draining).
    pub fn metrics_text(&self) -> String {
        metrics::render(&self.pool)
    }

    /// Figures for every configured backend, in configuration order.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.pool.stats()
    }

    /// The balancer's own gRPC service (`spectrum.balancer.v1.Balancer`) over this
    /// balancer's figures, to serve on another server too. The balancer already
    /// answers it on its own port unless
    /// [`BalancerConfig::serve_stats`] is off; see [`stats`](crate::stats).
    pub fn stats_service(&self) -> BalancerStatsService {
        BalancerStatsService::new(self.pool.clone())
    }

    /// Replaces the backend list while serving. Backends that stay (same id and
    /// address) keep their health, draining flag, connection and figures; new ones
    /// are health-checked at once and get traffic after their first good check;
    /// removed ones get no new requests while their open ones finish.
    ///
    /// # Errors
    ///
    /// [`BalancerError::DuplicateBackend`] when two backends share an id; the
    /// previous list then stays in force.
    pub fn set_backends(&self, backends: Vec<BackendConfig>) -> Result<(), BalancerError> {
        self.pool.set_backends(backends)
    }

    /// Applies a membership record at once, as a [`Discovery`] poll does: active and
    /// draining members become backends (draining ones get no new requests), and
    /// joining, left and absent members are removed. Members whose address is not
    /// `http://IP:PORT` are skipped with a warning.
    ///
    /// # Errors
    ///
    /// [`BalancerError::DuplicateBackend`] when two members share an id; the
    /// previous list then stays in force.
    pub fn apply_members(&self, members: &[Member]) -> Result<(), BalancerError> {
        self.pool.apply_members(members)
    }

    /// Follows `settings` at once, as a [`Discovery::settings`] poll does: the
    /// database's strategy (while set) replaces the one the balancer was built
    /// with, and its weights override the backend list's. Both change together in
    /// one step; requests under way finish with the strategy they started with, and
    /// load figures stay with the backends. Settings equal to those in force change
    /// nothing (a running strategy keeps its state).
    pub fn apply_settings(&self, settings: &BalancingSettings) {
        self.pool.apply_settings(settings);
    }

    /// The strategy in force and where it comes from.
    pub fn strategy(&self) -> StrategyInForce {
        self.pool.strategy()
    }

    /// Marks a backend draining (no new requests; open ones finish) or back in service.
    ///
    /// # Errors
    ///
    /// [`BalancerError::UnknownBackend`] when no backend has this id.
    pub fn set_draining(&self, id: &NodeId, draining: bool) -> Result<(), BalancerError> {
        self.pool.set_draining(id, draining)
    }

    /// Stops accepting connections, lets open requests finish for up to
    /// [`BalancerConfig::shutdown_grace`], then closes everything and stops health checks.
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let _ = self.shutdown.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.pool.close();
        info!(local_addr = %self.local_addr, "balancer stopped");
    }
}

impl Drop for BalancerHandle {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(accept) = self.accept.take() {
            accept.abort();
            self.pool.close();
        }
    }
}

/// Polls `source` every `interval` and applies what it says to the pool (members,
/// then balancing settings, unless the members could not be read), until the pool
/// is gone (or the task is aborted). A failed poll changes nothing.
async fn poll_discovery(source: Arc<dyn Discovery>, interval: Duration, pool: Weak<Pool>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = source.members().await;
        let Some(live) = pool.upgrade() else { return };
        match result.and_then(|members| live.apply_members(&members)) {
            Ok(()) => debug!("membership applied"),
            Err(error) => {
                // The source is likely unreachable: no second wait for the settings.
                warn!(%error, "membership poll failed; keeping the current members, strategy and weights");
                continue;
            }
        }
        drop(live);
        let result = source.settings().await;
        let Some(live) = pool.upgrade() else { return };
        match result {
            Ok(Some(settings)) => live.apply_settings(&settings),
            Ok(None) => {}
            Err(error) => {
                warn!(%error, "balancing settings poll failed; keeping the strategy and weights in force")
            }
        }
    }
}
