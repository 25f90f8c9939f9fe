//! # spectrum-balancer
//!
//! The front door of a Spectrum cluster: clients talk to the balancer's address as
//! if it were one server, and each request goes to one of the cluster's nodes.
//!
//! - [`strategy`]: the [`BalancingStrategy`] trait that picks a node for each
//!   request, and the reference strategies ([`RoundRobin`], [`Random`],
//!   [`LeastRequests`], [`WeightedRoundRobin`]).
//! - [`Balancer`]: a reverse proxy on hyper serving HTTP/1.1 and HTTP/2 (h2c, so gRPC
//!   with streaming and trailers) on one port. It forwards paths byte for byte,
//!   health-checks the nodes with `grpc.health.v1`, retries on another node when a
//!   connection fails before the request was sent, honours draining, and takes
//!   membership changes while it runs.
//! - [`Backend`] and [`BackendLoad`]: what a strategy sees of each node, including
//!   live load figures kept in a [`LoadRegistry`] so they survive membership changes.
//!
//! ## Why strategies are synchronous
//!
//! The key design decision: [`BalancingStrategy::pick`] is a plain synchronous
//! `&self` method, not an `async` one. It runs on every request, so it must cost
//! nanoseconds and never wait: reference strategies use one or two atomics. Anything
//! that needs I/O (health, membership, load) is done by the balancer beside the
//! request path, which hands the strategy a ready snapshot of eligible backends and
//! per-backend figures in [`Backend::load`]. "No backend available" is an explicit
//! `None`, answered to clients as `503` or gRPC `UNAVAILABLE` at once.
//!
//! ## Writing a strategy
//!
//! A strategy is a `Debug + Send + Sync` type with a `pick` method. This one sends
//! each request to the backend with the lowest latency average and falls back to the
//! first backend while nothing has been measured:
//!
//! ```
//! use std::time::Duration;
//! use spectrum_balancer::{Backend, strategy::{BalancingStrategy, RequestContext, RoundRobin}};
//!
//! #[derive(Debug)]
//! struct Fastest;
//!
//! impl BalancingStrategy for Fastest {
//!     fn pick(&self, backends: &[Backend], _ctx: &RequestContext<'_>) -> Option<usize> {
//!         (0..backends.len()).min_by_key(|&i| backends[i].load.latency_ewma_us())
//!     }
//! }
//!
//! let backends: Vec<Backend> = (1..=3)
//!     .map(|i| Backend::new(format!("node-{i}").parse().unwrap(), ([127, 0, 0, 1], 7000 + i).into(), 1))
//!     .collect();
//! backends[0].load.record_latency(Duration::from_millis(9));
//! backends[1].load.record_latency(Duration::from_millis(2));
//! backends[2].load.record_latency(Duration::from_millis(5));
//!
//! let ctx = RequestContext::new(&http::Method::POST, "/demo.Greeter/Hello");
//! assert_eq!(Fastest.pick(&backends, &ctx), Some(1));
//! assert_eq!(Fastest.pick(&[], &ctx), None, "no backend is an explicit answer");
//!
//! // The reference round robin takes each backend in turn.
//! let rr = RoundRobin::new();
//! let picks: Vec<_> = (0..4).map(|_| rr.pick(&backends, &ctx).unwrap()).collect();
//! assert_eq!(picks, [0, 1, 2, 0]);
//! ```
//!
//! Check a strategy against the contract with the conformance suite (feature
//! `testing`): `spectrum_balancer::testing::conformance_suite(|| Arc::new(MyStrategy))`.
//! Hand it to a balancer with [`BalancerBuilder::strategy`].
//!
//! ## Running a balancer
//!
//! ```no_run
//! use std::sync::Arc;
//! use spectrum_balancer::{Balancer, BalancerConfig, BackendConfig, strategy::RoundRobin};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let nodes = vec![
//!     BackendConfig::new("node-1".parse()?, "127.0.0.1:7001".parse()?),
//!     BackendConfig::new("node-2".parse()?, "127.0.0.1:7002".parse()?),
//! ];
//! let balancer = Balancer::builder(BalancerConfig::default())
//!     .backends(nodes)
//!     .strategy(Arc::new(RoundRobin::new()))
//!     .start()
//!     .await?;
//! println!("clients connect to {}", balancer.url());
//!
//! // A node leaves gracefully: drain it, then drop it from the list.
//! balancer.set_draining(&"node-2".parse()?, true)?;
//! for b in balancer.stats() {
//!     println!("{} healthy={} in_flight={} requests={}", b.id, b.healthy, b.in_flight, b.requests);
//! }
//! balancer.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Logging
//!
//! The crate logs with [`tracing`] (per request at `trace`, state changes at `debug`
//! and `info`, misbehaving backends at `warn`) and never installs a subscriber.

pub mod backend;
mod balancer;
mod body;
pub mod config;
pub mod error;
mod health;
mod pool;
mod proxy;
pub mod strategy;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod upstream;

pub use backend::{Backend, BackendLoad, LoadRegistry};
pub use balancer::{BackendStats, Balancer, BalancerBuilder, BalancerHandle};
pub use body::ProxyBody;
pub use config::{BackendConfig, BalancerConfig};
pub use error::BalancerError;
pub use strategy::{
    BalancingStrategy, LeastRequests, Outcome, Random, RequestContext, RoundRobin, WeightedRoundRobin,
};
