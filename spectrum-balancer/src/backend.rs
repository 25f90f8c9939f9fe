//! Backends as strategies see them, and the per-backend load figures that outlive
//! membership changes.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use spectrum_core::NodeId;

/// One node the balancer may send requests to, as a strategy sees it.
///
/// Cloning is cheap (two reference counts). The [`load`](Backend::load) figures are
/// shared with the balancer, which updates them as requests start and end.
#[derive(Clone)]
pub struct Backend {
    /// The node's identity.
    pub id: NodeId,
    /// The node's address (plain-text HTTP/2).
    pub addr: SocketAddr,
    /// Relative weight for weighted strategies; `0` means "never, unless nothing else".
    pub weight: u32,
    /// Live load figures, kept in a [`LoadRegistry`] so they survive membership changes.
    pub load: Arc<BackendLoad>,
}

impl Backend {
    /// A backend with fresh load figures (useful in tests and custom strategies).
    pub fn new(id: NodeId, addr: SocketAddr, weight: u32) -> Self {
        Self { id, addr, weight, load: Arc::new(BackendLoad::default()) }
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("weight", &self.weight)
            .field("in_flight", &self.load.in_flight())
            .finish()
    }
}

/// Weight of a new sample in the latency average, in 1/1024ths (here 1/8).
const EWMA_NEW_SAMPLE_1024THS: u64 = 128;

/// Time constant of the peak latency average: without new samples it falls to
/// 1/e of its value in this time (as in tower's and Finagle's peak EWMA).
pub const PEAK_EWMA_DECAY: Duration = Duration::from_secs(10);

/// Microseconds on a monotonic clock shared by the whole crate.
pub(crate) fn monotonic_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Load figures of one backend, updated with atomics only (no lock on the request path).
#[derive(Debug, Default)]
pub struct BackendLoad {
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    latency_ewma_us: AtomicU64,
    /// Peak EWMA of the latency in nanoseconds, as of `peak_stamp_us`.
    peak_ewma_ns: AtomicU64,
    peak_stamp_us: AtomicU64,
}

impl BackendLoad {
    /// Requests sent to the backend whose responses have not ended yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests sent to the backend since it was first seen.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests to the backend that failed (connection failures included).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Requests that failed on this backend and were sent again to another.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Counts one request retried elsewhere after failing here.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The *peak* EWMA of the time to response headers, in nanoseconds, decayed to
    /// now (`0` until the first response).
    ///
    /// A sample above the average replaces it at once (so a backend that turns slow
    /// is avoided at once); lower samples and the passing of time pull it down
    /// with time constant [`PEAK_EWMA_DECAY`] (so a backend that was slow is tried
    /// again after a while). This is the figure [`PeakEwma`](crate::strategy::PeakEwma) uses.
    pub fn peak_latency_ewma_ns(&self) -> u64 {
        self.peak_latency_ewma_ns_at(monotonic_us())
    }

    /// [`peak_latency_ewma_ns`](Self::peak_latency_ewma_ns) as of `now_us` on the
    /// crate's clock (read the clock once per pick, not once per backend).
    pub(crate) fn peak_latency_ewma_ns_at(&self, now_us: u64) -> u64 {
        let value = self.peak_ewma_ns.load(Ordering::Relaxed);
        if value == 0 {
            return 0;
        }
        let elapsed_us = now_us.saturating_sub(self.peak_stamp_us.load(Ordering::Relaxed));
        decay(value, elapsed_us)
    }

    /// Exponentially weighted moving average of the time to response headers, in
    /// microseconds (`0` until the first response).
    pub fn latency_ewma_us(&self) -> u64 {
        self.latency_ewma_us.load(Ordering::Relaxed)
    }

    /// Records that a request was sent: `requests` and `in_flight` go up by one.
    pub fn start(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that a request started with [`start`](Self::start) ended.
    pub fn finish(&self) {
        // Never wraps below zero even if `finish` is called without `start`.
        let _ = self.in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Counts one failure.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Folds one latency sample into the moving average (weight 1/8 for the new
    /// sample) and into the peak EWMA.
    pub fn record_latency(&self, latency: Duration) {
        self.record_peak(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1));
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.latency_ewma_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            if old == 0 {
                return Some(sample);
            }
            let mixed = (u128::from(old) * u128::from(1024 - EWMA_NEW_SAMPLE_1024THS)
                + u128::from(sample) * u128::from(EWMA_NEW_SAMPLE_1024THS))
                / 1024;
            Some(u64::try_from(mixed).unwrap_or(u64::MAX).max(1))
        });
    }
}

impl BackendLoad {
    fn record_peak(&self, sample_ns: u64) {
        let now = monotonic_us();
        let stamp = self.peak_stamp_us.swap(now, Ordering::Relaxed);
        let _ = self.peak_ewma_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            if sample_ns >= old {
                return Some(sample_ns);
            }
            let elapsed_us = now.saturating_sub(stamp);
            let w = (-(elapsed_us as f64) / PEAK_EWMA_DECAY.as_micros() as f64).exp();
            Some(((old as f64) * w + (sample_ns as f64) * (1.0 - w)).max(1.0) as u64)
        });
    }
}

/// `value` decayed over `elapsed_us` with time constant [`PEAK_EWMA_DECAY`].
fn decay(value: u64, elapsed_us: u64) -> u64 {
    if elapsed_us == 0 {
        return value;
    }
    let w = (-(elapsed_us as f64) / PEAK_EWMA_DECAY.as_micros() as f64).exp();
    ((value as f64) * w) as u64
}

/// The load figures of every backend, keyed by node id.
///
/// Strategies see snapshots of the backend list that are rebuilt whenever membership
/// or health changes; the figures live here instead, so a membership change does not
/// reset them.
#[derive(Debug, Default)]
pub struct LoadRegistry {
    loads: Mutex<HashMap<NodeId, Arc<BackendLoad>>>,
}

impl LoadRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The figures for `id`, created on first use.
    pub fn get_or_insert(&self, id: &NodeId) -> Arc<BackendLoad> {
        self.loads.lock().entry(id.clone()).or_default().clone()
    }

    /// The figures for `id`, if it is known.
    pub fn get(&self, id: &NodeId) -> Option<Arc<BackendLoad>> {
        self.loads.lock().get(id).cloned()
    }

    /// Forgets every backend for which `keep` returns false. Requests still running on
    /// a forgotten backend keep updating their own copy of its figures.
    pub fn retain(&self, mut keep: impl FnMut(&NodeId) -> bool) {
        self.loads.lock().retain(|id, _| keep(id));
    }

    /// How many backends the registry holds.
    pub fn len(&self) -> usize {
        self.loads.lock().len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_goes_up_and_down_and_never_below_zero() {
        let load = BackendLoad::default();
        load.start();
        load.start();
        assert_eq!((load.in_flight(), load.requests()), (2, 2));
        load.finish();
        load.finish();
        load.finish();
        assert_eq!((load.in_flight(), load.requests()), (0, 2));
    }

    #[test]
    fn latency_average_starts_at_the_first_sample_and_moves_towards_new_ones() {
        let load = BackendLoad::default();
        load.record_latency(Duration::from_micros(800));
        assert_eq!(load.latency_ewma_us(), 800);
        load.record_latency(Duration::from_micros(1600));
        assert_eq!(load.latency_ewma_us(), 900);
    }

    #[test]
    fn the_peak_average_jumps_up_at_once_and_decays_with_time() {
        let load = BackendLoad::default();
        assert_eq!(load.peak_latency_ewma_ns(), 0);
        load.record_latency(Duration::from_micros(100));
        load.record_latency(Duration::from_millis(5));
        let peak = load.peak_latency_ewma_ns();
        assert!(peak <= 5_000_000 && peak > 4_900_000, "{peak}");
        assert_eq!(decay(1_000_000, 0), 1_000_000);
        let later = decay(1_000_000, PEAK_EWMA_DECAY.as_micros() as u64);
        assert!((367_000..=369_000).contains(&later), "one time constant leaves 1/e: {later}");
    }

    #[test]
    fn the_registry_hands_out_the_same_figures_for_the_same_node() {
        let reg = LoadRegistry::new();
        let a: NodeId = "a".parse().unwrap();
        let b: NodeId = "b".parse().unwrap();
        reg.get_or_insert(&a).start();
        assert_eq!(reg.get_or_insert(&a).requests(), 1);
        reg.get_or_insert(&b);
        reg.retain(|id| id == &a);
        assert_eq!(reg.len(), 1);
        assert!(reg.get(&b).is_none());
    }
}
