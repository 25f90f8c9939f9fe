//! Benchmark: the cost of one strategy pick with 3, 100 and 1,000 backends.
//!
//! ```text
//! cargo run --release --example bench_strategies
//! ```
//!
//! Targets (DESIGN.md): at most 100 ns with 3 backends, 1 µs with 1,000.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use spectrum::balancer::strategy::{LeastRequests, Random, RoundRobin, WeightedRoundRobin};
use spectrum::balancer::{Backend, BalancingStrategy, RequestContext};

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16));
            let b = Backend::new(format!("node-{i}").parse().expect("valid id"), addr, 1 + (i % 3) as u32);
            for _ in 0..(i % 5) {
                b.load.start();
            }
            b
        })
        .collect()
}

/// Median nanoseconds per pick over several timed rounds.
fn measure(strategy: &dyn BalancingStrategy, backends: &[Backend]) -> f64 {
    let method = http::Method::POST;
    let ctx = RequestContext::new(&method, "/spectrum.demo.v1.Dataflow/Run");
    let picks = 200_000;
    for _ in 0..picks / 10 {
        black_box(strategy.pick(black_box(backends), &ctx));
    }
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..picks {
                black_box(strategy.pick(black_box(backends), &ctx));
            }
            start.elapsed().as_nanos() as f64 / picks as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn main() {
    let strategies: Vec<(&str, Arc<dyn BalancingStrategy>)> = vec![
        ("round_robin", Arc::new(RoundRobin::new())),
        ("weighted_round_robin", Arc::new(WeightedRoundRobin::new())),
        ("random", Arc::new(Random::with_seed(7))),
        ("least_requests", Arc::new(LeastRequests::with_seed(7))),
    ];
    let sizes = [3usize, 100, 1_000];
    println!("strategy pick cost, median of 7 rounds of 200,000 picks (ns/pick)");
    print!("{:<24}", "strategy");
    for n in sizes {
        print!("{:>12}", format!("{n} backends"));
    }
    println!();
    let started = Instant::now();
    for (name, s) in &strategies {
        print!("{name:<24}");
        for n in sizes {
            let b = backends(n);
            print!("{:>12.1}", measure(s.as_ref(), &b));
        }
        println!();
    }
    println!(
        "targets: <= 100 ns at 3 backends, <= 1000 ns at 1,000 backends ({:.1?} total)",
        started.elapsed()
    );
}
