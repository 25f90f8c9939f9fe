//! Uniform random choice, with an injectable seed.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{BalancingStrategy, RequestContext};
use crate::backend::Backend;

/// A lock-free pseudo-random sequence (SplitMix64 over one atomic counter): the same
/// seed gives the same sequence of draws.
#[derive(Debug)]
pub(crate) struct SplitMix {
    state: AtomicU64,
}

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: AtomicU64::new(seed) }
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw in `0..n` (`n > 0`), without modulo bias worth mentioning for any
    /// realistic `n` (multiply-shift).
    pub(crate) fn below(&self, n: usize) -> usize {
        let n64 = n as u64;
        ((u128::from(self.next_u64()) * u128::from(n64)) >> 64) as usize
    }
}

/// Sends each request to a backend drawn uniformly at random.
///
/// Use [`Random::with_seed`] in tests for a reproducible sequence.
#[derive(Debug)]
pub struct Random {
    rng: SplitMix,
}

impl Random {
    /// A strategy seeded from the operating system's randomness.
    pub fn new() -> Self {
        Self::with_seed(rand::random())
    }

    /// A strategy whose draws are fully determined by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self { rng: SplitMix::new(seed) }
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

impl BalancingStrategy for Random {
    fn pick(&self, backends: &[Backend], _ctx: &RequestContext<'_>) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        Some(self.rng.below(backends.len()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::{backends, conformance_suite};

    #[test]
    fn random_passes_the_conformance_suite() {
        conformance_suite(|| Arc::new(Random::with_seed(7)));
        conformance_suite(|| Arc::new(Random::new()));
    }

    #[test]
    fn the_same_seed_gives_the_same_picks() {
        let list = backends(5);
        let ctx = RequestContext::new(&http::Method::GET, "/");
        let run = |seed| {
            let r = Random::with_seed(seed);
            (0..50).map(|_| r.pick(&list, &ctx).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
