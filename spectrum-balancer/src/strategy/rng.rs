//! The shared pseudo-random sequence of the strategies that draw ([`Random`](super::Random),
//! [`LeastRequests`](super::LeastRequests), [`PeakEwma`](super::PeakEwma)).

use std::sync::atomic::{AtomicU64, Ordering};

/// A lock-free pseudo-random sequence (SplitMix64 over one atomic counter): the same
/// seed gives the same sequence of draws.
///
/// Hand-written rather than a `rand` generator because strategies draw through
/// `&self` on the request path: one atomic add per draw, no lock, no thread-local.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws_and_draws_stay_below_the_bound() {
        let (a, b) = (SplitMix::new(9), SplitMix::new(9));
        let draws: Vec<usize> = (0..100).map(|_| a.below(7)).collect();
        assert_eq!(draws, (0..100).map(|_| b.below(7)).collect::<Vec<_>>());
        assert!(draws.iter().all(|&d| d < 7));
        assert!((0..7).all(|n| draws.contains(&n)), "every value comes up: {draws:?}");
    }
}
