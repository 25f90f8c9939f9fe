//! The set of backends, their health and draining flags, the snapshot of
//! candidates that requests read without locking out each other, and the
//! per-backend health-check loops, which record their results here.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::tls::Connector;
use parking_lot::{Mutex, RwLock};
use spectrum_core::tls::TlsConfig;
use spectrum_core::{Member as ClusterMember, MemberState, NodeId};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::backend::{Backend, LoadRegistry};
use crate::config::{BackendConfig, BalancerConfig};
use crate::discovery::BalancingSettings;
use crate::error::BalancerError;
use crate::health::{self, Backoff, Check, HealthState, Thresholds, now_ms};
use crate::retry::RetryBudget;
use crate::routing::{Routing, Settings, StrategyInForce};
use crate::stats::{BackendHealth, BackendStats};
use crate::upstream::Upstream;

/// One configured backend with everything the proxy needs to reach it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) backend: Backend,
    pub(crate) health: Arc<HealthState>,
    /// Drained by the operator ([`Pool::set_draining`]).
    pub(crate) draining: Arc<AtomicBool>,
    /// Drained because cluster membership says so ([`Pool::apply_members`]).
    pub(crate) member_draining: Arc<AtomicBool>,
    /// The backend's connections, one set per worker (see
    /// [`BalancerConfig::workers`]).
    upstreams: Arc<[Upstream]>,
}

impl Entry {
    /// Worker `worker`'s connections to the backend.
    pub(crate) fn upstream(&self, worker: usize) -> &Upstream {
        &self.upstreams[worker % self.upstreams.len()]
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.member_draining.load(Ordering::Acquire)
    }
}

/// Balancer-wide counters, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests received from clients.
    pub(crate) requests: AtomicU64,
    /// Attempts beyond the first, for any reason.
    pub(crate) retries: AtomicU64,
    /// Retries after failure refused because the budget was spent.
    pub(crate) budget_exhausted: AtomicU64,
    /// Requests answered by the balancer because no backend could take them.
    pub(crate) no_backend: AtomicU64,
    /// Requests refused because their body or headers were too large.
    pub(crate) too_large: AtomicU64,
    /// Requests for an internal service, refused by the balancer.
    pub(crate) internal_refused: AtomicU64,
    /// Requests a node refused as not ready ([`crate::refusal`]), sent to another.
    pub(crate) not_ready_retries: AtomicU64,
    /// Client connections refused at the connection limit.
    pub(crate) connections_refused: AtomicU64,
    /// Picks where the strategy broke its contract (an index out of range, a
    /// panic): each such request is answered `INTERNAL`.
    pub(crate) strategy_faults: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
/// Backends a strategy may pick from, with the entries they stand for (same order).
#[derive(Debug, Default, Clone)]
pub(crate) struct Candidates {
    pub(crate) backends: Vec<Backend>,
    pub(crate) entries: Vec<Arc<Entry>>,
}

impl Candidates {
    fn push(&mut self, entry: &Arc<Entry>) {
        self.backends.push(entry.backend.clone());
        self.entries.push(entry.clone());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// These candidates without the one at `index`.
    pub(crate) fn without(&self, index: usize) -> Candidates {
        let mut rest = self.clone();
        if index < rest.len() {
            rest.backends.remove(index);
            rest.entries.remove(index);
        }
        rest
    }
}

/// One worker's copy of the pool's snapshot, with the generation it was taken at
/// (see [`Pool::local_snapshot`]).
#[derive(Debug, Default)]
pub(crate) struct LocalSnapshot(Mutex<Option<(u64, Arc<Snapshot>)>>);

impl LocalSnapshot {
    /// Drops this copy if `pool` has published a newer snapshot since. An idle
    /// worker calls this on every change ([`Pool::changes`]): its copy would
    /// otherwise keep removed backends, and their open connections, until its next
    /// request.
    pub(crate) fn forget_if_stale(&self, pool: &Pool) {
        let generation = pool.generation.load(Ordering::Acquire);
        let stale = {
            let mut cached = self.0.lock();
            match &*cached {
                Some((seen, _)) if *seen != generation => cached.take(),
                _ => None,
            }
        };
        // Dropped outside the lock: the last reference to a removed backend closes
        // its connections here.
        drop(stale);
    }
}

/// What requests read: rebuilt whenever membership, health, draining, weights or
/// the strategy in force change.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Healthy and not draining.
    pub(crate) eligible: Candidates,
    /// Not draining, whatever their health: used when no backend is eligible, since
    /// trying a backend marked down beats refusing every request. When every
    /// member is draining, the draining ones.
    pub(crate) fallback: Candidates,
    /// The strategy in force, and where affinity keys come from.
    pub(crate) routing: Arc<Routing>,
}

impl Snapshot {
    fn empty(routing: Arc<Routing>) -> Self {
        Self { eligible: Candidates::default(), fallback: Candidates::default(), routing }
    }
}

#[derive(Debug)]
struct Member {
    entry: Arc<Entry>,
    checks: AbortHandle,
}

impl Member {
    fn stop_checks(&self) {
        self.checks.abort();
    }

    /// This member with weight `weight`: the same health, flags, connections and
    /// load figures in a new entry (requests under way keep the old one).
    fn with_weight(self, weight: u32) -> Member {
        if self.entry.backend.weight == weight {
            return self;
        }
        let mut backend = self.entry.backend.clone();
        backend.weight = weight;
        let entry = Arc::new(Entry {
            backend,
            health: self.entry.health.clone(),
            draining: self.entry.draining.clone(),
            member_draining: self.entry.member_draining.clone(),
            upstreams: self.entry.upstreams.clone(),
        });
        Member { entry, checks: self.checks }
    }
}

/// When and how long a check loop waits, read from the configuration once when the
/// loop starts.
#[derive(Debug, Clone, Copy)]
struct CheckTiming {
    interval: Duration,
    timeout: Duration,
    connect_timeout: Duration,
}

impl CheckTiming {
    fn of(config: &BalancerConfig) -> Self {
        Self {
            interval: config.health_interval,
            timeout: config.health_timeout,
            connect_timeout: config.connect_timeout,
        }
    }
}

/// All backends of one balancer.
#[derive(Debug)]
pub(crate) struct Pool {
    members: Mutex<Vec<Member>>,
    /// The strategy and weights configured and set by the database. Locked after
    /// `members` when both are.
    settings: Mutex<Settings>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Bumped after each new snapshot, so workers can keep a copy of their own
    /// ([`LocalSnapshot`]) and look at one shared word per request.
    generation: AtomicU64,
    /// The generation again, for workers to wait on ([`Pool::changes`]).
    published: watch::Sender<u64>,
    loads: LoadRegistry,
    config: BalancerConfig,
    pub(crate) counters: Counters,
    pub(crate) budget: RetryBudget,
    me: Weak<Pool>,
    /// TLS to backends, built once from [`BalancerConfig::upstream_tls`].
    upstream_tls: Option<Connector>,
}

impl Pool {
    /// A pool with no backends yet, routing with `routing` until the database
    /// sets another strategy.
    pub(crate) fn new(
        config: BalancerConfig,
        upstream_tls: Option<Connector>,
        routing: Routing,
    ) -> Arc<Self> {
        let settings = Settings::new(routing);
        let snapshot = Snapshot::empty(settings.routing());
        Arc::new_cyclic(|me| Self {
            upstream_tls,
            members: Mutex::new(Vec::new()),
            settings: Mutex::new(settings),
            snapshot: RwLock::new(Arc::new(snapshot)),
            generation: AtomicU64::new(0),
            published: watch::Sender::new(0),
            loads: LoadRegistry::new(),
            budget: RetryBudget::new(config.retry_budget),
            counters: Counters::default(),
            config,
            me: me.clone(),
        })
    }

    pub(crate) fn config(&self) -> &BalancerConfig {
        &self.config
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    /// Changes whenever a new snapshot is published (membership, health, draining,
    /// weights, strategy), for workers that keep a copy ([`LocalSnapshot`]).
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Counts a new snapshot: workers' copies are stale from now on.
    fn bump_generation(&self) {
        let generation = self.generation.fetch_add(1, Ordering::Release) + 1;
        self.published.send_replace(generation);
    }

    /// The snapshot in force, from `local` while it is current: one worker's
    /// requests then share a copy no other thread touches, instead of every
    /// request of every worker counting references on one shared snapshot.
    pub(crate) fn local_snapshot(&self, local: &LocalSnapshot) -> Arc<Snapshot> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut cached = local.0.lock();
        match &*cached {
            Some((seen, snapshot)) if *seen == generation => snapshot.clone(),
            _ => {
                let copy = Arc::new(Snapshot::clone(&self.snapshot()));
                *cached = Some((generation, copy.clone()));
                copy
            }
        }
    }

    /// The health state of backend `id` if it is still configured at `addr`.
    fn health_of(&self, id: &NodeId, addr: SocketAddr) -> Option<Arc<HealthState>> {
        let members = self.members.lock();
        members
            .iter()
            .find(|m| &m.entry.backend.id == id && m.entry.backend.addr == addr)
            .map(|m| m.entry.health.clone())
    }

    /// Recomputes the snapshot from the current members and flags.
    fn rebuild(&self) {
        let members = self.members.lock();
        self.publish(&members);
    }

    /// Publishes the snapshot of `members` (the locked list) with the routing in force.
    fn publish(&self, members: &[Member]) {
        let mut snap = Snapshot::empty(self.settings.lock().routing());
        let mut draining = Candidates::default();
        for m in members {
            if m.entry.is_draining() {
                draining.push(&m.entry);
                continue;
            }
            snap.fallback.push(&m.entry);
            if m.entry.health.is_up() {
                snap.eligible.push(&m.entry);
            }
        }
        if snap.fallback.is_empty() {
            // Every member is draining (the last active one stopped, or drains
            // raced on two nodes): a draining node still answers, and refusing
            // every request would leave no way to undrain one through here.
            snap.fallback = draining;
        }
        *self.snapshot.write() = Arc::new(snap);
        self.bump_generation();
    }

    fn backoff(&self) -> Backoff {
        Backoff { base: self.config.ejection_backoff, max: self.config.max_ejection_backoff }
    }

    /// Passive ejection after a failed connection, or too many failed exchanges.
    pub(crate) fn eject(&self, entry: &Entry) {
        if entry.health.eject(self.backoff(), now_ms()) {
            warn!(node = %entry.backend.id, backend = %entry.backend.addr, "backend ejected");
            self.rebuild();
        }
    }

    /// Counts a failed exchange (gRPC `UNAVAILABLE`, a broken connection), and
    /// ejects the backend after enough of them in a row.
    pub(crate) fn exchange_failed(&self, entry: &Entry) {
        if entry.health.exchange_failed(self.config.eject_after_failures) {
            self.eject(entry);
        }
    }

    /// Replaces the backend list. Backends that stay (same id and address) keep their
    /// health, draining flag, connection and load figures.
    /// Weights given here apply where the database sets none.
    pub(crate) fn set_backends(&self, mut configs: Vec<BackendConfig>) -> Result<(), BalancerError> {
        check_unique(&configs)?;
        {
            let mut settings = self.settings.lock();
            settings.configure_weights(&configs);
            for c in &mut configs {
                c.weight = settings.weight_of(&c.id);
            }
        }
        self.replace(configs, None)
    }

    /// Replaces the backend list; with `member_draining`, also sets each backend's
    /// membership draining flag.
    fn replace(
        &self,
        configs: Vec<BackendConfig>,
        member_draining: Option<&HashMap<NodeId, bool>>,
    ) -> Result<(), BalancerError> {
        check_unique(&configs)?;
        let mut members = self.members.lock();
        let mut old: HashMap<NodeId, Member> =
            members.drain(..).map(|m| (m.entry.backend.id.clone(), m)).collect();
        for c in configs {
            let member = match old.remove(&c.id) {
                Some(m) if m.entry.backend.addr == c.addr => m.with_weight(c.weight),
                previous => {
                    let draining = previous.as_ref().map(|m| m.entry.draining.clone()).unwrap_or_default();
                    let member_draining =
                        previous.as_ref().map(|m| m.entry.member_draining.clone()).unwrap_or_default();
                    if let Some(m) = previous {
                        m.stop_checks();
                    }
                    info!(node = %c.id, backend = %c.addr, "backend added");
                    self.new_member(c, draining, member_draining)
                }
            };
            members.push(member);
        }
        for (id, gone) in old.drain() {
            gone.stop_checks();
            info!(node = %id, "backend removed");
        }
        if let Some(flags) = member_draining {
            for m in members.iter() {
                let d = flags.get(&m.entry.backend.id).copied().unwrap_or(false);
                if m.entry.member_draining.swap(d, Ordering::AcqRel) != d {
                    debug!(node = %m.entry.backend.id, draining = d, "membership draining changed");
                }
            }
        }
        let present: HashSet<NodeId> = members.iter().map(|m| m.entry.backend.id.clone()).collect();
        self.loads.retain(|id| present.contains(id));
        self.publish(&members);
        Ok(())
    }

    fn new_member(
        &self,
        c: BackendConfig,
        draining: Arc<AtomicBool>,
        member_draining: Arc<AtomicBool>,
    ) -> Member {
        let backend =
            Backend { load: self.loads.get_or_insert(&c.id), id: c.id, addr: c.addr, weight: c.weight };
        let entry = Arc::new(Entry {
            upstreams: self.upstreams(backend.addr),
            health: Arc::default(),
            draining,
            member_draining,
            backend,
        });
        let checks = tokio::spawn(Pool::check_loop(
            self.me.clone(),
            entry.backend.id.clone(),
            entry.backend.addr,
            CheckTiming::of(&self.config),
            self.config.upstream_tls.clone(),
        ));
        Member { entry, checks: checks.abort_handle() }
    }

    /// A set of connections to `addr` for each worker, which share
    /// [`BalancerConfig::upstream_connections`] (at least one each).
    fn upstreams(&self, addr: SocketAddr) -> Arc<[Upstream]> {
        let workers = self.config.workers.max(1);
        let each = self.config.upstream_connections.div_ceil(workers);
        (0..workers)
            .map(|_| Upstream::new(addr, self.config.connect_timeout, each, self.upstream_tls.clone()))
            .collect()
    }

    /// Checks backend `id` at `addr` every interval and records each result, until
    /// aborted, the backend is no longer configured at that address, or the pool
    /// is gone.
    async fn check_loop(
        pool: Weak<Pool>,
        id: NodeId,
        addr: SocketAddr,
        timing: CheckTiming,
        tls: Option<TlsConfig>,
    ) {
        let mut client = health::client(addr, timing.connect_timeout, timing.timeout, tls);
        let mut ticks = tokio::time::interval(timing.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = health::check_once(&mut client, timing.timeout).await;
            let Some(pool) = pool.upgrade() else { return };
            if !pool.record_check(&id, addr, result) {
                return;
            }
        }
    }

    /// Records one health-check result of backend `id` at `addr`, and rebuilds the
    /// snapshot when the backend became eligible or stopped being so. False when
    /// no such backend is configured any more (its check loop then ends).
    fn record_check(&self, id: &NodeId, addr: SocketAddr, result: Result<(), String>) -> bool {
        let Some(state) = self.health_of(id, addr) else { return false };
        let thresholds = Thresholds { rise: self.config.rise, fall: self.config.fall };
        let check = if result.is_ok() { Check::Passed } else { Check::Failed };
        let changed = state.record(check, thresholds, now_ms());
        match (&result, changed) {
            (Ok(()), true) => info!(node = %id, backend = %addr, "backend healthy"),
            (Err(detail), true) => warn!(node = %id, backend = %addr, detail = %detail, "backend unhealthy"),
            (Err(detail), false) => {
                debug!(node = %id, backend = %addr, detail = %detail, "health check failed")
            }
            (Ok(()), false) => {}
        }
        if changed {
            self.rebuild();
        }
        true
    }

    pub(crate) fn set_draining(&self, id: &NodeId, draining: bool) -> Result<(), BalancerError> {
        {
            let members = self.members.lock();
            let m = members
                .iter()
                .find(|m| &m.entry.backend.id == id)
                .ok_or_else(|| BalancerError::UnknownBackend { id: id.clone() })?;
            if m.entry.draining.swap(draining, Ordering::AcqRel) == draining {
                return Ok(());
            }
        }
        debug!(node = %id, draining, "draining changed");
        self.rebuild();
        Ok(())
    }

    /// Applies a membership record: active and draining members become backends
    /// (draining ones get no new requests), joining, left and absent ones are
    /// removed. Members whose address cannot be used are skipped with a warning.
    ///
    /// # Errors
    ///
    /// [`BalancerError::DuplicateBackend`] when two members share an id.
    pub(crate) fn apply_members(&self, members: &[ClusterMember]) -> Result<(), BalancerError> {
        let mut configs = Vec::new();
        let mut draining = HashMap::new();
        for m in members {
            let member_draining = match m.state {
                MemberState::Active => false,
                MemberState::Draining => true,
                _ => continue,
            };
            match BackendConfig::try_from(m) {
                Ok(c) => {
                    draining.insert(c.id.clone(), member_draining);
                    configs.push(c);
                }
                Err(error) => warn!(node = %m.id, %error, "member skipped"),
            }
        }
        // The database's weights, else those given by hand, else 1.
        {
            let settings = self.settings.lock();
            for c in &mut configs {
                c.weight = settings.weight_of(&c.id);
            }
        }
        self.replace(configs, Some(&draining))
    }

    /// Follows the strategy and weights the database sets: both change in one new
    /// snapshot, so a request sees the old settings or the new ones, never half.
    /// Requests under way finish with the strategy they started with; load figures
    /// stay with the backends.
    pub(crate) fn apply_settings(&self, database: &BalancingSettings) {
        let mut members = self.members.lock();
        let mut settings = self.settings.lock();
        let changed = settings.follow(database);
        if changed.weights {
            let weights: Vec<u32> = members.iter().map(|m| settings.weight_of(&m.entry.backend.id)).collect();
            let old = std::mem::take(&mut *members);
            members.extend(old.into_iter().zip(weights).map(|(m, w)| m.with_weight(w)));
        }
        let routing = settings.routing();
        drop(settings);
        if changed.strategy || changed.weights {
            self.publish(&members);
            let in_force = routing.in_force();
            info!(strategy = %in_force.name, source = %in_force.source, weights = ?database.weights, "balancing settings applied");
        }
    }

    /// The strategy in force and where it comes from.
    pub(crate) fn strategy(&self) -> StrategyInForce {
        self.snapshot().routing.in_force()
    }

    pub(crate) fn stats(&self) -> Vec<BackendStats> {
        self.members
            .lock()
            .iter()
            .map(|m| {
                let e = &m.entry;
                let load = &e.backend.load;
                let (healthy, ejected) = (e.health.is_up(), e.health.is_ejected(now_ms()));
                BackendStats {
                    id: e.backend.id.clone(),
                    addr: e.backend.addr,
                    weight: e.backend.weight,
                    health: BackendHealth::of(healthy, ejected),
                    healthy,
                    ejected,
                    draining: e.is_draining(),
                    retries: load.retries(),
                    in_flight: load.in_flight(),
                    requests: load.requests(),
                    failures: load.failures(),
                    latency_ewma_us: load.latency_ewma_us(),
                }
            })
            .collect()
    }

    /// Stops every health task and forgets the backends.
    pub(crate) fn close(&self) {
        for m in self.members.lock().drain(..) {
            m.stop_checks();
        }
        *self.snapshot.write() = Arc::new(Snapshot::empty(self.settings.lock().routing()));
        self.bump_generation();
    }
}

/// Refuses a list in which two backends share an id.
fn check_unique(configs: &[BackendConfig]) -> Result<(), BalancerError> {
    let mut seen = HashSet::new();
    match configs.iter().find(|c| !seen.insert(&c.id)) {
        Some(c) => Err(BalancerError::DuplicateBackend { id: c.id.clone() }),
        None => Ok(()),
    }
}
