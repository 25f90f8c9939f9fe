//! # spectrum-balancer
//!
//! The front door of a Spectrum cluster: clients talk to the balancer's address as
//! if it were one server, and each request goes to one of the cluster's nodes.
//!
//! - [`strategy`]: the [`BalancingStrategy`] trait that picks a node for each
//!   request, and the reference strategies ([`RoundRobin`], [`Random`],
//!   [`LeastRequests`], [`WeightedRoundRobin`], [`PeakEwma`], [`ConsistentHash`]).
//! - [`Balancer`]: a reverse proxy serving HTTP/1.1 and HTTP/2 (h2c, so gRPC with
//!   streaming and trailers) on one port (HTTP/1.1 with hyper, HTTP/2 with `h2`
//!   directly: a task per stream, no service layer), and speaking HTTP/2 to the
//!   nodes with `h2` directly (each request's own task opens its stream and awaits
//!   the answer). It forwards paths byte for byte,
//!   health-checks the nodes with `grpc.health.v1`, ejects nodes that fail
//!   connections or answer `UNAVAILABLE` (with exponential backoff), fails over, and
//!   limits request bodies and waiting times. Client connections are served by
//!   [`BalancerConfig::workers`] threads (one per core by default), each running its
//!   own single-threaded runtime with its own connections to the nodes, so a request
//!   never crosses threads; strategies and load figures are shared by all.
//! - [`Discovery`]: where the balancer learns the cluster's members, polled while it
//!   runs, so nodes join, drain and leave with no restart; and, optionally, the
//!   strategy and weights the cluster sets ([`BalancingSettings`]), swapped while
//!   serving (see "Live strategy and weights" below).
//! - [`Backend`] and [`BackendLoad`]: what a strategy sees of each node, including
//!   live load figures kept in a [`LoadRegistry`] so they survive membership changes.
//! - Observability: [`BalancerHandle::stats`] per node, the same figures over gRPC
//!   from the balancer's own service ([`stats`]), and Prometheus text at `/metrics`
//!   on the admin listener, [`BalancerConfig::admin_listen`]; see "Observing the
//!   balancer" below.
//! - Security: the cluster's internal services (replication) are never forwarded:
//!   the balancer answers them `PERMISSION_DENIED` itself
//!   ([`BalancerConfig::internal_paths`]); its own `Stats` on the public port
//!   needs its token ([`BalancerConfig::stats_token`]).
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
//! Discovery is the other trait, and it is asynchronous on purpose: it does I/O
//! (asking a node's management service), off the request path, so it is an
//! `#[async_trait]` held as `Arc<dyn Discovery>`.
//!
//! ## Failover and retries
//!
//! - A request whose connection failed before it was sent goes to the next
//!   candidate, always (nothing reached the backend).
//! - A request that failed *after* it was sent (connection reset, `GOAWAY`, a gRPC
//!   `UNAVAILABLE` or HTTP 502/503/504 answer before any message) goes to another
//!   node only if it is *retriable*: a safe HTTP method, or a path listed in
//!   [`BalancerConfig::idempotent`]. Its body must fit
//!   [`BalancerConfig::retry_buffer`] (64 KiB), which keeps a copy while it streams,
//!   and retries are limited by a budget ([`RetryBudgetConfig`]: 20 % of requests
//!   plus 10 per second), so retries never multiply load on a struggling cluster.
//! - A request a node refused because it is not ready, before doing any of its
//!   work (marked so, see [`refusal`]), goes to another node whatever it is: nothing
//!   ran. That takes nothing from the budget; its body must fit the retry buffer.
//! - A node that fails a connection is ejected at once; one that fails
//!   [`BalancerConfig::eject_after_failures`] exchanges in a row too. It comes back
//!   after a backoff that doubles with each ejection in a row *and* passing health
//!   checks. When every node is out, the balancer still tries them rather than
//!   refuse everything.
//!
//! ```
//! use spectrum_balancer::{BalancerConfig, PathMatcher};
//!
//! let config = BalancerConfig {
//!     // Reads are safe to run twice: retry them on another node if one dies.
//!     idempotent: vec![
//!         PathMatcher::grpc_method("grpc.health.v1.Health", "Check"),
//!         PathMatcher::grpc_service("shop.v1.Catalog"),
//!     ],
//!     max_request_body: Some(8 * 1024 * 1024),
//!     ..BalancerConfig::default()
//! };
//! assert!(config.idempotent[1].matches("/shop.v1.Catalog/ListItems"));
//! ```
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
//! print!("{}", balancer.metrics_text());
//! for b in balancer.stats() {
//!     println!("{} healthy={} in_flight={} requests={}", b.id, b.healthy, b.in_flight, b.requests);
//! }
//! balancer.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Live membership
//!
//! Instead of a fixed list, give the balancer a [`Discovery`] source; it is asked
//! once a second (or at the interval you choose) for the membership record. A node
//! that leaves has its connections closed as soon as the requests under way on them
//! end, by every worker, idle ones included.
//! [`StaticDiscovery`] is the fixed list in that form:
//!
//! ```no_run
//! use std::sync::Arc;
//! use spectrum_balancer::{Balancer, BalancerConfig, StaticDiscovery, DEFAULT_DISCOVERY_INTERVAL};
//! use spectrum_core::{Member, MemberState};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let members = vec![
//!     Member::new("node-1".parse()?, "http://127.0.0.1:7001".parse()?, MemberState::Active),
//!     Member::new("node-2".parse()?, "http://127.0.0.1:7002".parse()?, MemberState::Draining),
//! ];
//! let balancer = Balancer::builder(BalancerConfig::default())
//!     .discovery(Arc::new(StaticDiscovery::new(members)), DEFAULT_DISCOVERY_INTERVAL)
//!     .start()
//!     .await?;
//! # balancer.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Live strategy and weights
//!
//! A [`StrategySpec`] names a reference strategy with its parameters, checked when
//! it is made. [`BalancingSettings`] (a spec, or none, and weights by node) override
//! the balancer's own strategy and its backend list's weights; a [`Discovery`]
//! source that knows them answers [`Discovery::settings`], or apply them yourself
//! with [`BalancerHandle::apply_settings`]. The strategy in force travels in the
//! snapshot each request reads once, so a switch fails no request: requests under
//! way finish with the strategy they started with. [`BalancerHandle::strategy`]
//! says which one is in force and where it comes from ([`StrategySource`]):
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use spectrum_balancer::{Balancer, BalancerConfig, BalancingSettings, StrategySource};
//! use spectrum_balancer::strategy::{StrategyName, StrategySpec};
//!
//! let balancer = Balancer::builder(BalancerConfig::default())
//!     .strategy_spec(StrategySpec::named(StrategyName::LeastRequests))
//!     .start()
//!     .await?;
//! assert_eq!(balancer.strategy().source, StrategySource::Configured);
//!
//! let hashed = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), None)?;
//! let node: spectrum_core::NodeId = "node-2".parse()?;
//! let weights = [(node, 0)].into();
//! balancer.apply_settings(&BalancingSettings::new(Some(hashed), weights));
//! let in_force = balancer.strategy();
//! assert_eq!((in_force.name.as_str(), in_force.source), ("consistent_hash", StrategySource::Database));
//!
//! balancer.apply_settings(&BalancingSettings::default()); // cleared: least_requests again
//! assert_eq!(balancer.strategy().name, "least_requests");
//! balancer.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! ## Observing the balancer
//!
//! Every figure is kept per backend node: requests in flight, requests sent,
//! failures, retries, the latency average, and the health state (healthy, ejected,
//! draining). Read them three ways:
//!
//! - in process, with [`BalancerHandle::stats`] (and [`BalancerHandle::metrics_text`]);
//! - over gRPC on the balancer's own port: the balancer answers
//!   `spectrum.balancer.v1.Balancer/Stats` itself (it is never proxied to a node),
//!   with the typed client [`stats::StatsClient`] (its answers serialize with
//!   serde and print as a table; the generated [`stats::proto`] stays for
//!   interop). The
//!   `spectrum status` command calls it and prints a `BALANCER` table when its
//!   endpoint is a balancer. On the public port the call needs the balancer's
//!   token ([`BalancerConfig::stats_token`], sent as `authorization: Bearer …`);
//!   with no token set it is off there unless [`BalancerConfig::open_stats`] is
//!   on. Turn the local answer off with [`BalancerConfig::serve_stats`], and the
//!   path is then proxied like any other;
//! - on the admin listener, [`BalancerConfig::admin_listen`]: a separate, optional
//!   port (keep it on loopback) that serves Prometheus text at `/metrics` and
//!   `Stats`, with no token.
//!
//! Checking whether a request is for the balancer's own service is one byte-prefix
//! comparison of its path, so proxied requests pay next to nothing for it.
//!
//! ## Logging
//!
//! The crate logs with [`tracing`] (per request at `trace`, state changes at `debug`
//! and `info`, misbehaving backends at `warn`) and never installs a subscriber.

pub mod backend;
mod balancer;
mod body;
pub mod config;
pub mod discovery;
pub mod error;
mod h2_body;
mod h2_client;
mod h2_server;
mod health;
mod metrics;
mod pool;
mod proxy;
pub mod refusal;
mod replay;
mod retry;
mod routing;
mod serve;
pub mod stats;
pub mod strategy;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls;
mod upstream;

pub use backend::{Backend, BackendLoad, LoadRegistry};
pub use balancer::{Balancer, BalancerBuilder, BalancerHandle, DEFAULT_DISCOVERY_INTERVAL};
pub use body::ProxyBody;
pub use config::{BackendConfig, BalancerConfig, BearerToken, PathMatcher, RetryBudgetConfig};
pub use discovery::{BalancingSettings, Discovery, StaticDiscovery};
pub use error::{BalancerError, BoxError};
pub use routing::{StrategyInForce, StrategySource};
pub use stats::{BackendStats, BalancerStatsService};
pub use strategy::{
    BalancingStrategy, ConsistentHash, LeastRequests, Outcome, PeakEwma, Random, RequestContext, RoundRobin,
    StrategyName, StrategySpec, WeightedRoundRobin,
};
