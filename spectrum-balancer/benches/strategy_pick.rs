//! Cost of one `pick` for each reference strategy with 3, 100 and 1,000 backends
//! (every request carries an affinity key, which only `consistent_hash` reads).
//!
//! Run with `cargo bench -p spectrum-balancer --features testing --bench strategy_pick`
//! (a few seconds). Targets (see
//! DESIGN.md): ≤ 100 ns with 3 backends, ≤ 1 µs with 1,000.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use spectrum_balancer::strategy::{
    BalancingStrategy, ConsistentHash, LeastRequests, PeakEwma, Random, RequestContext, RoundRobin,
    WeightedRoundRobin,
};
use spectrum_balancer::testing::backends;

fn main() {
    let strategies: Vec<(&str, Arc<dyn BalancingStrategy>)> = vec![
        ("round_robin", Arc::new(RoundRobin::new())),
        ("random", Arc::new(Random::with_seed(1))),
        ("least_requests", Arc::new(LeastRequests::with_seed(1))),
        ("weighted_round_robin", Arc::new(WeightedRoundRobin::new())),
        ("peak_ewma", Arc::new(PeakEwma::with_seed(1))),
        ("consistent_hash", Arc::new(ConsistentHash::with_seed(1))),
    ];
    let ctx = RequestContext::new(&http::Method::POST, "/svc/Method").with_affinity_key(b"user-42");
    for n in [3, 100, 1_000] {
        let list = backends(n);
        for (name, s) in &strategies {
            let iterations = 2_000_000 / n.max(10) * 10;
            for _ in 0..iterations / 10 {
                black_box(s.pick(black_box(&list), &ctx));
            }
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(s.pick(black_box(&list), &ctx));
            }
            let per_pick = started.elapsed().as_nanos() as f64 / iterations as f64;
            println!("{name:<22} backends={n:<5} {per_pick:>8.1} ns/pick");
        }
    }
}
