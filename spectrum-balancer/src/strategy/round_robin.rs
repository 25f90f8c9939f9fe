//! Round robin: each backend in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{BalancingStrategy, RequestContext};
use crate::backend::Backend;

/// Sends each request to the next backend in turn.
///
/// One atomic counter, shared by all requests; when the backend list changes the
/// rotation simply continues over the new list. On failover the next pick lands on
/// another untried backend.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A rotation starting at the first backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BalancingStrategy for RoundRobin {
    fn pick(&self, backends: &[Backend], _ctx: &RequestContext<'_>) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % backends.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::{backends, conformance_suite};

    #[test]
    fn round_robin_passes_the_conformance_suite() {
        conformance_suite(|| Arc::new(RoundRobin::new()));
    }

    #[test]
    fn round_robin_visits_backends_in_order() {
        let rr = RoundRobin::new();
        let list = backends(3);
        let ctx = RequestContext::new(&http::Method::GET, "/");
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&list, &ctx).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
