//! Peak EWMA: prefer the backend expected to answer soonest.

use std::time::Duration;

use super::{BalancingStrategy, RequestContext, SplitMix};
use crate::backend::{Backend, monotonic_us};

/// Backend lists up to this size are scanned exactly by default.
const DEFAULT_EXACT_SCAN_UP_TO: usize = 4;
/// Latency assumed for a backend not measured yet.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// Sends each request to the backend with the lowest expected cost: its *peak*
/// latency average times its requests in flight plus one, as in Finagle and
/// tower's `PeakEwma`.
///
/// The peak average ([`BackendLoad::peak_latency_ewma_ns`](crate::BackendLoad::peak_latency_ewma_ns))
/// jumps up at once when a backend turns slow, and decays with time (time constant
/// [`PEAK_EWMA_DECAY`](crate::backend::PEAK_EWMA_DECAY)) so a backend that was slow
/// is tried again later. Multiplying by the in-flight count spreads load over
/// backends of equal speed. Backends not measured yet count as
/// [`default_rtt`](Self::default_rtt) (1 ms by default).
///
/// Small lists are scanned exactly from a random start (so ties spread evenly);
/// larger ones use the power of two choices. The figures live in
/// [`Backend::load`], maintained by the balancer, so this strategy needs no
/// [`on_complete`](BalancingStrategy::on_complete) of its own.
#[derive(Debug)]
pub struct PeakEwma {
    rng: SplitMix,
    default_rtt_ns: u64,
    exact_scan_up_to: usize,
}

impl PeakEwma {
    /// A strategy seeded from the operating system's randomness.
    pub fn new() -> Self {
        Self::with_seed(rand::random())
    }

    /// A strategy whose random draws are fully determined by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            rng: SplitMix::new(seed),
            default_rtt_ns: DEFAULT_RTT.as_nanos() as u64,
            exact_scan_up_to: DEFAULT_EXACT_SCAN_UP_TO,
        }
    }

    /// The latency assumed for backends not measured yet (default 1 ms). A high
    /// value makes new backends wait for measured ones to slow down; a low one
    /// sends them traffic at once.
    #[must_use]
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt_ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        self
    }

    /// Scans lists of up to `n` backends exactly instead of sampling two (`0` always samples).
    #[must_use]
    pub fn exact_scan_up_to(mut self, n: usize) -> Self {
        self.exact_scan_up_to = n;
        self
    }

    fn cost(&self, backend: &Backend, now_us: u64) -> u128 {
        let rtt = match backend.load.peak_latency_ewma_ns_at(now_us) {
            0 => self.default_rtt_ns,
            measured => measured,
        };
        u128::from(rtt) * u128::from(backend.load.in_flight().saturating_add(1))
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new()
    }
}

impl BalancingStrategy for PeakEwma {
    fn pick(&self, backends: &[Backend], _ctx: &RequestContext<'_>) -> Option<usize> {
        let len = backends.len();
        match len {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        let now = monotonic_us();
        if len <= self.exact_scan_up_to {
            let start = self.rng.below(len);
            let mut best = start;
            let mut best_cost = self.cost(&backends[start], now);
            for step in 1..len {
                let i = (start + step) % len;
                let cost = self.cost(&backends[i], now);
                if cost < best_cost {
                    best = i;
                    best_cost = cost;
                }
            }
            return Some(best);
        }
        let a = self.rng.below(len);
        let b = self.rng.below(len);
        if self.cost(&backends[b], now) < self.cost(&backends[a], now) { Some(b) } else { Some(a) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::{backends, conformance_suite};

    #[test]
    fn peak_ewma_passes_the_conformance_suite() {
        conformance_suite(|| Arc::new(PeakEwma::with_seed(1)));
        conformance_suite(|| Arc::new(PeakEwma::with_seed(1).exact_scan_up_to(0)));
    }

    #[test]
    fn the_fastest_backend_wins_and_load_evens_it_out() {
        let list = backends(3);
        list[0].load.record_latency(Duration::from_millis(10));
        list[1].load.record_latency(Duration::from_millis(2));
        list[2].load.record_latency(Duration::from_millis(5));
        let s = PeakEwma::with_seed(7);
        let ctx = RequestContext::new(&http::Method::GET, "/");
        assert_eq!(s.pick(&list, &ctx), Some(1));
        // Three requests in flight make the fast backend cost 8 ms: the 5 ms one wins.
        for _ in 0..3 {
            list[1].load.start();
        }
        assert_eq!(s.pick(&list, &ctx), Some(2));
    }

    #[test]
    fn one_slow_answer_counts_at_once() {
        let list = backends(2);
        for _ in 0..20 {
            list[0].load.record_latency(Duration::from_millis(1));
            list[1].load.record_latency(Duration::from_millis(2));
        }
        list[0].load.record_latency(Duration::from_millis(50));
        let s = PeakEwma::with_seed(3);
        let ctx = RequestContext::new(&http::Method::GET, "/");
        assert_eq!(s.pick(&list, &ctx), Some(1), "the peak is taken, not averaged away");
    }

    #[test]
    fn unmeasured_backends_cost_the_default_latency() {
        let list = backends(2);
        list[0].load.record_latency(Duration::from_millis(3));
        let ctx = RequestContext::new(&http::Method::GET, "/");
        let eager = PeakEwma::with_seed(1).default_rtt(Duration::from_micros(10));
        assert_eq!(eager.pick(&list, &ctx), Some(1));
        let wary = PeakEwma::with_seed(1).default_rtt(Duration::from_secs(1));
        assert_eq!(wary.pick(&list, &ctx), Some(0));
    }
}
