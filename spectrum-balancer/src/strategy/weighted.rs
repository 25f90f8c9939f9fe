//! Weighted round robin, smoothly interleaved.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{BalancingStrategy, RequestContext};
use crate::backend::Backend;

/// The golden ratio's fractional part as a 64-bit fixed-point number.
const GOLDEN_FRACTION: u64 = 0x9E37_79B9_7F4A_7C15;

/// Sends requests to backends in proportion to their [`Backend::weight`], interleaved
/// smoothly: with weights 5, 1 and 2 the heavy backend gets short runs spread over
/// the sequence, never five requests in a row followed by the rest.
///
/// Lock-free: the n-th request maps to the point `frac(n·φ)` of the circle of
/// cumulated weights (a low-discrepancy sequence), so any window of requests is
/// spread in proportion to the weights, whatever the list looked like before. Each
/// pick costs one pass over the list. Backends of weight `0` get requests only when
/// every backend has weight `0` (then it behaves as plain round robin).
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    n: AtomicU64,
}

impl WeightedRoundRobin {
    /// A fresh rotation.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BalancingStrategy for WeightedRoundRobin {
    fn pick(&self, backends: &[Backend], _ctx: &RequestContext<'_>) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return Some((n % backends.len() as u64) as usize);
        }
        let point = n.wrapping_mul(GOLDEN_FRACTION);
        // Scale the 64-bit point onto 0..total.
        let target = ((u128::from(point) * u128::from(total)) >> 64) as u64;
        let mut acc = 0u64;
        for (i, b) in backends.iter().enumerate() {
            acc += u64::from(b.weight);
            if target < acc {
                return Some(i);
            }
        }
        Some(backends.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::{backends, conformance_suite};

    #[test]
    fn weighted_round_robin_passes_the_conformance_suite() {
        conformance_suite(|| Arc::new(WeightedRoundRobin::new()));
    }

    #[test]
    fn picks_follow_the_weights_and_interleave() {
        let mut list = backends(3);
        list[0].weight = 5;
        list[1].weight = 1;
        list[2].weight = 2;
        let s = WeightedRoundRobin::new();
        let ctx = RequestContext::new(&http::Method::GET, "/");
        let picks: Vec<usize> = (0..8_000).map(|_| s.pick(&list, &ctx).unwrap()).collect();
        let count = |i| picks.iter().filter(|&&p| p == i).count();
        assert!((4_900..=5_100).contains(&count(0)), "{}", count(0));
        assert!((900..=1_100).contains(&count(1)), "{}", count(1));
        assert!((1_900..=2_100).contains(&count(2)), "{}", count(2));
        let longest_run = picks.chunk_by(|a, b| a == b).map(<[usize]>::len).max().unwrap();
        assert!(longest_run <= 4, "runs of the heavy backend should stay short, got {longest_run}");
    }

    #[test]
    fn zero_weights_only_when_nothing_else() {
        let mut list = backends(3);
        list[1].weight = 0;
        let s = WeightedRoundRobin::new();
        let ctx = RequestContext::new(&http::Method::GET, "/");
        assert!((0..300).all(|_| s.pick(&list, &ctx) != Some(1)));
        for b in &mut list {
            b.weight = 0;
        }
        assert!((0..300).any(|_| s.pick(&list, &ctx) == Some(1)));
    }
}
