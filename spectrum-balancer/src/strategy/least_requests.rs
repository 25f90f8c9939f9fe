//! Least requests: prefer the backend with the fewest requests in flight.

use super::{BalancingStrategy, RequestContext, SplitMix};
use crate::backend::Backend;

/// Backend lists up to this size are scanned exactly by default.
const DEFAULT_EXACT_SCAN_UP_TO: usize = 4;

/// Sends each request to the backend with the fewest requests in flight.
///
/// Small lists (up to [`exact_scan_up_to`](Self::exact_scan_up_to), default 4) are
/// scanned exactly, starting at a random position so ties spread evenly. Larger lists
/// use the *power of two choices*: two backends drawn at random (with replacement),
/// the less loaded one wins. That costs O(1) per pick yet avoids herding on a single
/// idle backend. Draws come from a seedable, lock-free generator.
#[derive(Debug)]
pub struct LeastRequests {
    rng: SplitMix,
    exact_scan_up_to: usize,
}

impl LeastRequests {
    /// A strategy seeded from the operating system's randomness.
    pub fn new() -> Self {
        Self::with_seed(rand::random())
    }

    /// A strategy whose draws are fully determined by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self { rng: SplitMix::new(seed), exact_scan_up_to: DEFAULT_EXACT_SCAN_UP_TO }
    }

    /// Scans lists of up to `n` backends exactly instead of sampling two (`0` always samples).
    #[must_use]
    pub fn exact_scan_up_to(mut self, n: usize) -> Self {
        self.exact_scan_up_to = n;
        self
    }
}

impl Default for LeastRequests {
    fn default() -> Self {
        Self::new()
    }
}

impl BalancingStrategy for LeastRequests {
    fn pick(&self, backends: &[Backend], _ctx: &RequestContext<'_>) -> Option<usize> {
        let len = backends.len();
        if len == 0 {
            return None;
        }
        if len <= self.exact_scan_up_to {
            let start = self.rng.below(len);
            let mut best = start;
            let mut best_load = backends[start].load.in_flight();
            for step in 1..len {
                let i = (start + step) % len;
                let load = backends[i].load.in_flight();
                if load < best_load {
                    best = i;
                    best_load = load;
                }
            }
            return Some(best);
        }
        let a = self.rng.below(len);
        let b = self.rng.below(len);
        if backends[b].load.in_flight() < backends[a].load.in_flight() { Some(b) } else { Some(a) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::{backends, conformance_suite};

    #[test]
    fn least_requests_passes_the_conformance_suite() {
        conformance_suite(|| Arc::new(LeastRequests::with_seed(1)));
        conformance_suite(|| Arc::new(LeastRequests::with_seed(1).exact_scan_up_to(0)));
    }

    #[test]
    fn the_exact_scan_finds_the_idle_backend() {
        let list = backends(4);
        for (i, b) in list.iter().enumerate() {
            if i != 2 {
                b.load.start();
            }
        }
        let s = LeastRequests::with_seed(9);
        let ctx = RequestContext::new(&http::Method::GET, "/");
        for _ in 0..20 {
            assert_eq!(s.pick(&list, &ctx), Some(2));
        }
    }

    #[test]
    fn two_choices_avoid_the_busiest_backend() {
        let list = backends(50);
        for _ in 0..10 {
            list[7].load.start();
        }
        let s = LeastRequests::with_seed(3).exact_scan_up_to(0);
        let ctx = RequestContext::new(&http::Method::GET, "/");
        // The busy backend wins only when drawn twice: about 1 in 2,500 picks.
        let hits = (0..5_000).filter(|_| s.pick(&list, &ctx) == Some(7)).count();
        assert!(hits <= 10, "busy backend picked {hits} times");
    }
}
