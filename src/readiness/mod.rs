//! Readiness: whether a node should be sent requests, as any balancer sees it.
//!
//! A node is *ready* when it has joined (pulled the cluster's state and recorded
//! itself in membership), is not draining (its own membership record says
//! `active` and it is not stopping), its store is writable as far as it knows
//! (the last write or merge did not fail in the backing storage), and its clock
//! is not fenced (off from its peers by more than the maximum, see
//! [`ClockCheck::fenced`]; the management service refuses writes then too). The same answer
//! is served three ways on the node's public port:
//!
//! - `grpc.health.v1` for the empty service name: `SERVING` or `NOT_SERVING`;
//! - `GET /readyz` over plain HTTP/1.1 or HTTP/2: 200, or 503 naming each failing
//!   condition ([`ReadinessReport`] as JSON);
//! - `GET /healthz`: 200 while the process runs (liveness, not readiness).
//!
//! [`Readiness`] holds the conditions; the node follows its own
//! membership record, so an operator's `spectrum node drain` turns the node
//! not-ready whichever node the drain was written through.

mod http;
mod store;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use spectrum_core::{Member, MemberState, NodeId};
use spectrum_replication::{ClockCheck, ConfigStore};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{debug, info};

pub(crate) use http::routes;
pub use http::{HEALTHZ, READYZ};
pub(crate) use store::WatchedStore;

/// Judges this node's clock against its peers' now.
pub(crate) type ClockSource = Arc<dyn Fn() -> ClockCheck + Send + Sync>;

/// Says why this node's consensus stopped on an error, if it did.
pub(crate) type ConsensusSource = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What this node's peers last answered it with, when they answered with
/// errors (`ADDR: error` each).
pub(crate) type PeerErrorsSource = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How often the node re-reads its own membership record even when the store's
/// change feed said nothing (the feed may lag), and republishes its health (which
/// follows the clock check too).
const MEMBERSHIP_RECHECK: Duration = Duration::from_secs(1);

/// The conditions of one node's readiness, shared by the node, its health
/// service, its HTTP endpoints and its store.
pub struct Readiness {
    /// Set once the node has joined (shared with the management service, which
    /// refuses writes until then).
    joined: Arc<AtomicBool>,
    /// The node's own membership state is not `active`.
    draining: AtomicBool,
    /// The node's own membership record says an operator removed it.
    removed: AtomicBool,
    /// Why the cluster refuses to take this node (back), while it does.
    join_refused: Mutex<Option<String>>,
    /// The node is stopping.
    stopping: AtomicBool,
    /// Why the store last failed to write, until a write succeeds again.
    store_error: Mutex<Option<String>>,
    /// This node's clock against its peers', once the replicator exists.
    clock: OnceLock<ClockSource>,
    /// Why this node's consensus stopped on an error, if it did (Raft mode).
    consensus: OnceLock<ConsensusSource>,
    /// What its peers answered it with, while it has not joined.
    peer_errors: OnceLock<PeerErrorsSource>,
    health: HealthReporter,
    /// The status last given to the health service; held across the update so
    /// that concurrent publishers cannot leave an older answer last.
    reported: tokio::sync::Mutex<Option<ServingStatus>>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness").field("report", &self.report()).finish_non_exhaustive()
    }
}

/// What `/readyz` answers: each condition, and whether all hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReadinessReport {
    /// Every condition holds: the node should be sent requests.
    pub ready: bool,
    /// The node has pulled the cluster's state and recorded itself in membership.
    pub joined: bool,
    /// The node is draining or stopping (an operator drained or removed it, or
    /// it is shutting down).
    pub draining: bool,
    /// Why the cluster refuses to take this node (back), while it does (Raft
    /// mode: an operator removed it while it was down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_error: Option<String>,
    /// The node's store accepted its last write or merge.
    pub store_writable: bool,
    /// Why the store last failed, while it is not writable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// This node's clock is within the maximum offset of its peers (it is not
    /// [fenced](ClockCheck::fenced)).
    pub clock_in_bounds: bool,
    /// How far off the clock is, while it is not in bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_error: Option<String>,
    /// Why this node's Raft stopped, when it stopped on an error (Raft mode: a
    /// log that could not be written, such as on a full disk). It takes no
    /// part in the group until it is restarted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consensus_error: Option<String>,
    /// While the node has not joined: what its peers (its seeds, in Raft
    /// mode) answered it with instead, when they answered with errors
    /// (`ADDR: error` each), such as a peer of another cluster or with another
    /// cluster key, which retrying never cures. Empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peer_errors: Vec<String>,
    /// The conditions that fail, in words (empty when ready).
    pub failing: Vec<&'static str>,
}

impl Readiness {
    /// Readiness reported through `health`, joined once `joined` is set.
    pub(crate) fn new(joined: Arc<AtomicBool>, health: HealthReporter) -> Self {
        Self {
            joined,
            draining: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            join_refused: Mutex::new(None),
            stopping: AtomicBool::new(false),
            store_error: Mutex::new(None),
            clock: OnceLock::new(),
            consensus: OnceLock::new(),
            peer_errors: OnceLock::new(),
            health,
            reported: tokio::sync::Mutex::new(None),
        }
    }

    /// Each condition as it stands now.
    pub fn report(&self) -> ReadinessReport {
        let joined = self.joined.load(Ordering::Acquire);
        let removed = self.removed.load(Ordering::Acquire);
        let draining =
            removed || self.draining.load(Ordering::Acquire) || self.stopping.load(Ordering::Acquire);
        let join_error = self.join_refused.lock().clone();
        let store_error = self.store_error.lock().clone();
        let store_writable = store_error.is_none();
        let clock_error = self.clock_fence();
        let clock_in_bounds = clock_error.is_none();
        let consensus_error = self.consensus_error();
        let peer_errors = match (joined, self.peer_errors.get()) {
            (false, Some(source)) => source(),
            _ => Vec::new(),
        };
        let failing = [
            (
                !joined && join_error.is_none() && peer_errors.is_empty(),
                "not joined (catching up with the cluster)",
            ),
            (
                !joined && join_error.is_none() && !peer_errors.is_empty(),
                "not joined: its peers refused it or could not be reached (see peer_errors)",
            ),
            (join_error.is_some(), "refused by the cluster (see join_error)"),
            (removed, "removed from the cluster"),
            (draining && !removed, "draining"),
            (!store_writable, "store not writable"),
            (!clock_in_bounds, "clock off (see clock_error)"),
            (
                consensus_error.is_some(),
                "consensus stopped (see consensus_error); `spectrum node` restarts the node once its data \
                 directory takes a write (an embedding restarts its Node)",
            ),
        ]
        .into_iter()
        .filter_map(|(fails, what)| fails.then_some(what))
        .collect::<Vec<_>>();
        ReadinessReport {
            ready: failing.is_empty(),
            joined,
            draining,
            join_error,
            store_writable,
            store_error,
            clock_in_bounds,
            clock_error,
            consensus_error,
            peer_errors,
            failing,
        }
    }

    /// Follows `consensus` for whether this node's Raft stopped on an error
    /// (set once, in Raft mode).
    pub(crate) fn set_consensus_source(&self, consensus: ConsensusSource) {
        let _ = self.consensus.set(consensus);
    }

    /// Follows `peer_errors` for what the peers answered while this node
    /// has not joined (set once).
    pub(crate) fn set_peer_errors_source(&self, peer_errors: PeerErrorsSource) {
        let _ = self.peer_errors.set(peer_errors);
    }

    /// Why this node's Raft stopped on an error, if it did.
    pub fn consensus_error(&self) -> Option<String> {
        (self.consensus.get()?)()
    }

    /// Follows `clock` for the clock condition (set once, when the replicator
    /// that measures the offsets exists; until then the clock counts as in bounds).
    pub(crate) fn set_clock_source(&self, clock: ClockSource) {
        let _ = self.clock.set(clock);
    }

    /// Why this node's clock is fenced, if it is.
    pub fn clock_fence(&self) -> Option<String> {
        let check = (self.clock.get()?)();
        check.fenced().then(|| check.to_string())
    }

    /// Why this node is out of the cluster, while it is: its own membership
    /// record says an operator removed it, the cluster refuses to take it
    /// (back) (`join_error`), or its Raft stopped on an error
    /// (`consensus_error`). Its copy of the database is not kept up to date
    /// then, so its management calls refuse to read or write it.
    pub fn out_of_cluster(&self) -> Option<String> {
        if let Some(error) = self.consensus_error() {
            return Some(format!(
                "its consensus stopped: {error}; `spectrum node` restarts the node once its data directory takes a \
                 write (an embedding restarts its Node)"
            ));
        }
        if self.removed.load(Ordering::Acquire) {
            return Some(
                "an operator removed it; `spectrum node undrain` through another node lets it return".into(),
            );
        }
        self.join_refused
            .lock()
            .as_ref()
            .map(|reason| format!("the cluster refuses to take it back: {reason}"))
    }

    /// Why the store last failed to write, while it cannot write.
    pub fn store_error(&self) -> Option<String> {
        self.store_error.lock().clone()
    }

    /// Whether the node should be sent requests.
    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    /// Records the node's own membership state.
    pub(crate) fn set_member_state(&self, state: MemberState) {
        self.removed.store(state == MemberState::Removed, Ordering::Release);
        let draining = state != MemberState::Active;
        if self.draining.swap(draining, Ordering::AcqRel) != draining {
            info!(%state, "own membership state changed");
        }
    }

    /// Records why the cluster refuses to take this node (back), or `None`
    /// once it does not; returns whether that changed.
    pub(crate) fn set_join_refused(&self, reason: Option<String>) -> bool {
        let mut held = self.join_refused.lock();
        let changed = *held != reason;
        *held = reason;
        changed
    }

    /// Marks the node stopping: not ready from now on.
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Records the outcome of a store write (`None` for success, else why it
    /// failed); returns whether writability changed.
    pub(crate) fn set_store_error(&self, error: Option<String>) -> bool {
        let mut held = self.store_error.lock();
        let changed = held.is_some() != error.is_some();
        if changed {
            match &error {
                Some(e) => info!(error = %e, "store cannot write: not ready"),
                None => info!("store writes again"),
            }
        }
        *held = error;
        changed
    }

    /// Brings `grpc.health.v1` in line with [`report`](Self::report).
    pub(crate) async fn publish(&self) {
        let mut reported = self.reported.lock().await;
        let status = if self.is_ready() { ServingStatus::Serving } else { ServingStatus::NotServing };
        if reported.replace(status) != Some(status) {
            debug!(?status, "health status");
            self.health.set_service_status("", status).await;
        }
    }
}

/// Follows node `id`'s own membership record in `store` (through the change feed,
/// and by re-reading every [`MEMBERSHIP_RECHECK`] in case the feed lagged), and
/// republishes health whenever readiness may have changed, until aborted.
pub(crate) fn watch_membership(
    id: NodeId,
    store: Arc<dyn ConfigStore>,
    readiness: Arc<Readiness>,
) -> JoinHandle<()> {
    let key = Member::key_of(&id);
    let mut feed = store.subscribe_prefix(&key);
    tokio::spawn(async move {
        loop {
            match store.get(&key).await {
                Ok(record) => {
                    let member =
                        record.and_then(|r| r.value).and_then(|v| Member::from_record_value(&v).ok());
                    if let Some(member) = member {
                        readiness.set_member_state(member.state);
                    }
                }
                Err(e) => debug!(node = %id, error = %e, "cannot read own membership record"),
            }
            readiness.publish().await;
            // Wait for a change to this node's record, a lagging feed, or the recheck.
            let deadline = tokio::time::Instant::now() + MEMBERSHIP_RECHECK;
            loop {
                match tokio::time::timeout_at(deadline, feed.recv()).await {
                    Ok(Ok(record)) if record.key != key => {}
                    Ok(Err(RecvError::Closed)) => {
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                    Ok(Ok(_) | Err(RecvError::Lagged(_))) | Err(_) => break,
                }
            }
        }
    })
}
