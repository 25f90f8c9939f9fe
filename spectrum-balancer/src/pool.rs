//! The set of backends, their health and draining flags, and the snapshot of
//! candidates that requests read without locking out each other.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use spectrum_core::NodeId;
use tokio::task::AbortHandle;
use tracing::{debug, info};

use crate::backend::{Backend, LoadRegistry};
use crate::balancer::BackendStats;
use crate::config::{BackendConfig, BalancerConfig};
use crate::error::BalancerError;
use crate::health::{self, CheckSettings, HealthState};
use crate::upstream::Upstream;

/// One configured backend with everything the proxy needs to reach it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) backend: Backend,
    pub(crate) health: Arc<HealthState>,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) upstream: Arc<Upstream>,
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

/// What requests read: rebuilt whenever membership, health or draining changes.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Healthy and not draining.
    pub(crate) eligible: Candidates,
    /// Not draining, whatever their health: used when no backend is eligible, since
    /// trying a backend marked down beats refusing every request.
    pub(crate) fallback: Candidates,
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
}

/// All backends of one balancer.
#[derive(Debug)]
pub(crate) struct Pool {
    members: Mutex<Vec<Member>>,
    snapshot: RwLock<Arc<Snapshot>>,
    loads: LoadRegistry,
    config: BalancerConfig,
    me: Weak<Pool>,
}

impl Pool {
    pub(crate) fn new(config: BalancerConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            members: Mutex::new(Vec::new()),
            snapshot: RwLock::new(Arc::default()),
            loads: LoadRegistry::new(),
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

    /// The health state of backend `id` if it is still configured at `addr`.
    pub(crate) fn health_of(&self, id: &NodeId, addr: SocketAddr) -> Option<Arc<HealthState>> {
        let members = self.members.lock();
        members
            .iter()
            .find(|m| &m.entry.backend.id == id && m.entry.backend.addr == addr)
            .map(|m| m.entry.health.clone())
    }

    /// Recomputes the snapshot from the current members and flags.
    pub(crate) fn rebuild(&self) {
        let members = self.members.lock();
        let mut snap = Snapshot::default();
        for m in members.iter() {
            if m.entry.draining.load(Ordering::Acquire) {
                continue;
            }
            snap.fallback.push(&m.entry);
            if m.entry.health.is_up() {
                snap.eligible.push(&m.entry);
            }
        }
        *self.snapshot.write() = Arc::new(snap);
    }

    /// Passive ejection after a failed connection.
    pub(crate) fn eject(&self, entry: &Entry) {
        if entry.health.mark_down() {
            info!(node = %entry.backend.id, backend = %entry.backend.addr, "backend ejected after a failed connection");
            self.rebuild();
        }
    }

    /// Replaces the backend list. Backends that stay (same id and address) keep their
    /// health, draining flag, connection and load figures.
    pub(crate) fn set_backends(&self, configs: Vec<BackendConfig>) -> Result<(), BalancerError> {
        let mut seen = HashSet::new();
        for c in &configs {
            if !seen.insert(&c.id) {
                return Err(BalancerError::DuplicateBackend { id: c.id.clone() });
            }
        }
        let mut members = self.members.lock();
        let mut old: HashMap<NodeId, Member> =
            members.drain(..).map(|m| (m.entry.backend.id.clone(), m)).collect();
        for c in configs {
            let member = match old.remove(&c.id) {
                Some(m) if m.entry.backend.addr == c.addr => {
                    if m.entry.backend.weight == c.weight {
                        m
                    } else {
                        let mut backend = m.entry.backend.clone();
                        backend.weight = c.weight;
                        let entry = Arc::new(Entry {
                            backend,
                            health: m.entry.health.clone(),
                            draining: m.entry.draining.clone(),
                            upstream: m.entry.upstream.clone(),
                        });
                        Member { entry, checks: m.checks }
                    }
                }
                previous => {
                    let draining = previous.as_ref().map(|m| m.entry.draining.clone()).unwrap_or_default();
                    if let Some(m) = previous {
                        m.stop_checks();
                    }
                    info!(node = %c.id, backend = %c.addr, "backend added");
                    self.new_member(c, draining)
                }
            };
            members.push(member);
        }
        for (id, gone) in old.drain() {
            gone.stop_checks();
            info!(node = %id, "backend removed");
        }
        let present: HashSet<NodeId> = members.iter().map(|m| m.entry.backend.id.clone()).collect();
        self.loads.retain(|id| present.contains(id));
        drop(members);
        self.rebuild();
        Ok(())
    }

    fn new_member(&self, c: BackendConfig, draining: Arc<AtomicBool>) -> Member {
        let backend =
            Backend { load: self.loads.get_or_insert(&c.id), id: c.id, addr: c.addr, weight: c.weight };
        let entry = Arc::new(Entry {
            upstream: Arc::new(Upstream::new(backend.addr, self.config.connect_timeout)),
            health: Arc::default(),
            draining,
            backend,
        });
        let settings = CheckSettings {
            interval: self.config.health_interval,
            timeout: self.config.health_timeout,
            connect_timeout: self.config.connect_timeout,
            rise: self.config.rise,
            fall: self.config.fall,
        };
        let task = tokio::spawn(health::run_checks(
            entry.backend.id.clone(),
            entry.backend.addr,
            settings,
            self.me.clone(),
        ));
        Member { entry, checks: task.abort_handle() }
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

    pub(crate) fn stats(&self) -> Vec<BackendStats> {
        self.members
            .lock()
            .iter()
            .map(|m| {
                let e = &m.entry;
                let load = &e.backend.load;
                BackendStats {
                    id: e.backend.id.clone(),
                    addr: e.backend.addr,
                    weight: e.backend.weight,
                    healthy: e.health.is_up(),
                    draining: e.draining.load(Ordering::Acquire),
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
        *self.snapshot.write() = Arc::default();
    }
}
