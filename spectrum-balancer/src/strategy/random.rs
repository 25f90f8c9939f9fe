//! Uniform random choice, with an injectable seed.

use super::{BalancingStrategy, RequestContext, SplitMix};
use crate::backend::Backend;

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
