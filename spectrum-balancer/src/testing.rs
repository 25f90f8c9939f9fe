//! The conformance suite every [`BalancingStrategy`] runs (feature `testing`).
//!
//! ```
//! use std::sync::Arc;
//! use spectrum_balancer::{strategy::RoundRobin, testing::conformance_suite};
//!
//! conformance_suite(|| Arc::new(RoundRobin::new()));
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use spectrum_core::NodeId;

use crate::backend::Backend;
use crate::strategy::{BalancingStrategy, Outcome, RequestContext};

/// Picks per backend in the spread check.
const PICKS_PER_BACKEND: usize = 2_000;
/// Allowed deviation from an even share in the spread check: ±20 %.
const SPREAD_TOLERANCE: f64 = 0.20;

/// `n` backends of weight 1 named `b0`, `b1`, … on loopback ports 10000, 10001, ….
pub fn backends(n: usize) -> Vec<Backend> {
    (0..n).map(|i| backend(&format!("b{i}"), 10_000 + i)).collect()
}

fn backend(name: &str, port: usize) -> Backend {
    let id = NodeId::new(name).unwrap_or_else(|e| panic!("test backend name {name:?}: {e}"));
    let port = u16::try_from(port % 60_000).unwrap_or(1);
    Backend::new(id, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), 1)
}

/// Runs every check of the [`BalancingStrategy`] contract against fresh strategies
/// from `make`, panicking with a description of the first violation.
///
/// Checks:
/// - `None` on an empty list; for a non-empty list of equal backends, always an
///   index in range (for many list sizes, attempts and affinity keys);
/// - failover: picking again among the backends not yet tried reaches every backend;
/// - spread: over many picks on equal backends, each gets an even share within
///   ±20 %;
/// - membership changes: after the list grows, shrinks or is replaced, picks stay in
///   range and reach every backend of the new list;
/// - feedback of every [`Outcome`] is accepted, and picks stay in range when made
///   from several threads at once.
pub fn conformance_suite(make: impl Fn() -> Arc<dyn BalancingStrategy>) {
    empty_list_gives_none(&*make());
    picks_are_in_range(&*make());
    failover_reaches_every_backend(&*make());
    equal_backends_share_evenly(&*make());
    membership_changes_are_followed(&*make());
    feedback_is_accepted(&*make());
    concurrent_picks_are_in_range(make());
}

fn ctx(attempt: u32) -> RequestContext<'static> {
    RequestContext { method: &http::Method::POST, path: "/svc/Method", affinity_key: None, attempt }
}

fn empty_list_gives_none(s: &dyn BalancingStrategy) {
    assert_eq!(s.pick(&[], &ctx(0)), None, "{s:?}: pick on an empty list must be None");
    assert_eq!(s.pick(&[], &ctx(2)), None, "{s:?}: pick on an empty list must be None on failover too");
}

fn picks_are_in_range(s: &dyn BalancingStrategy) {
    let keys: [Option<&[u8]>; 3] = [None, Some(b"user-1"), Some(b"")];
    for n in 1..=12 {
        let list = backends(n);
        for attempt in 0..3 {
            for key in keys {
                let c = RequestContext { affinity_key: key, ..ctx(attempt) };
                for _ in 0..50 {
                    match s.pick(&list, &c) {
                        Some(i) => assert!(i < n, "{s:?}: picked {i} of {n} backends"),
                        None => panic!("{s:?}: no pick among {n} equal, eligible backends"),
                    }
                }
            }
        }
    }
}

fn failover_reaches_every_backend(s: &dyn BalancingStrategy) {
    for n in [1, 2, 3, 7] {
        let mut untried = backends(n);
        let mut attempt = 0;
        while !untried.is_empty() {
            let i = s
                .pick(&untried, &ctx(attempt))
                .unwrap_or_else(|| panic!("{s:?}: no pick with {} untried backends", untried.len()));
            assert!(i < untried.len(), "{s:?}: picked {i} of {}", untried.len());
            untried.remove(i);
            attempt += 1;
        }
    }
}

fn assert_even_spread(s: &dyn BalancingStrategy, list: &[Backend], what: &str) {
    let n = list.len();
    let total = PICKS_PER_BACKEND * n;
    let mut counts = vec![0usize; n];
    for _ in 0..total {
        let i = s.pick(list, &ctx(0)).unwrap_or_else(|| panic!("{s:?}: no pick ({what})"));
        assert!(i < n, "{s:?}: picked {i} of {n} ({what})");
        counts[i] += 1;
    }
    let low = (PICKS_PER_BACKEND as f64 * (1.0 - SPREAD_TOLERANCE)) as usize;
    let high = (PICKS_PER_BACKEND as f64 * (1.0 + SPREAD_TOLERANCE)) as usize;
    for (i, &c) in counts.iter().enumerate() {
        assert!(
            (low..=high).contains(&c),
            "{s:?}: backend {i} got {c} of {total} picks ({what}); expected {low}..={high}: {counts:?}"
        );
    }
}

fn equal_backends_share_evenly(s: &dyn BalancingStrategy) {
    for n in [2, 3, 5] {
        assert_even_spread(s, &backends(n), &format!("{n} equal backends"));
    }
}

fn membership_changes_are_followed(s: &dyn BalancingStrategy) {
    let all = backends(6);
    assert_even_spread(s, &all[..3], "first three");
    assert_even_spread(s, &all, "grown to six");
    assert_even_spread(s, &all[4..], "shrunk to two");
    let replaced: Vec<Backend> = (0..4).map(|i| backend(&format!("new{i}"), 20_000 + i)).collect();
    assert_even_spread(s, &replaced, "replaced by four new backends");
}

fn feedback_is_accepted(s: &dyn BalancingStrategy) {
    let list = backends(3);
    for outcome in [Outcome::Success, Outcome::Failure, Outcome::ConnectFailure, Outcome::Cancelled] {
        for b in &list {
            s.on_complete(b, outcome, Duration::from_millis(3));
        }
    }
    let i = s.pick(&list, &ctx(0)).unwrap_or_else(|| panic!("{s:?}: no pick after feedback"));
    assert!(i < list.len());
}

fn concurrent_picks_are_in_range(s: Arc<dyn BalancingStrategy>) {
    let list = Arc::new(backends(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (s, list) = (s.clone(), list.clone());
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    let i = s.pick(&list, &ctx(0));
                    assert!(matches!(i, Some(i) if i < list.len()), "{s:?}: bad concurrent pick {i:?}");
                }
            })
        })
        .collect();
    for t in threads {
        if let Err(panic) = t.join() {
            std::panic::resume_unwind(panic);
        }
    }
}
