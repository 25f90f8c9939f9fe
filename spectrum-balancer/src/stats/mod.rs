//! The balancer's own gRPC service, `spectrum.balancer.v1.Balancer`, answered by the
//! balancer itself on its main port.
//!
//! Calls whose path starts with `/spectrum.balancer.v1.Balancer/` never reach a
//! node: the balancer answers them (unless [`BalancerConfig::serve_stats`] is off,
//! in which case they are proxied like any other call). Its one method, `Stats`,
//! returns the figures [`BalancerHandle::stats`] gives, for every backend, and the
//! balancer's totals. The service checks no bearer token: like `/metrics`, it shows
//! figures, not data, and changes nothing.
//!
//! Call it with the generated client, [`proto::balancer_client::BalancerClient`]:
//!
//! ```no_run
//! use spectrum_balancer::stats::proto::{StatsRequest, balancer_client::BalancerClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = BalancerClient::connect("http://127.0.0.1:7100").await?;
//! let stats = client.stats(StatsRequest {}).await?.into_inner();
//! for b in &stats.backends {
//!     println!("{} {} in_flight={} requests={}", b.id, b.addr, b.in_flight, b.requests);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A node answers the same call `UNIMPLEMENTED`, which tells a client that the
//! endpoint it talks to is not a balancer.
//!
//! [`BalancerConfig::serve_stats`]: crate::BalancerConfig::serve_stats
//! [`BalancerHandle::stats`]: crate::BalancerHandle::stats

use std::net::SocketAddr;

use spectrum_core::NodeId;

pub(crate) mod service;

pub use service::BalancerStatsService;

/// The generated protocol types, server and client of `spectrum.balancer.v1`
/// (`proto/balancer.proto` in this crate).
///
/// - [`BalancerClient`](proto::balancer_client::BalancerClient): calls `Stats` on a
///   balancer.
/// - [`BalancerServer`](proto::balancer_server::BalancerServer): the tonic server
///   the balancer answers with, over a [`BalancerStatsService`].
/// - [`StatsRequest`](proto::StatsRequest), [`StatsResponse`](proto::StatsResponse)
///   and [`BackendStats`](proto::BackendStats): the messages.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("spectrum.balancer.v1");
}

/// Figures for one backend, as [`BalancerHandle::stats`](crate::BalancerHandle::stats) reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStats {
    /// The node.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its weight.
    pub weight: u32,
    /// Whether it may take requests: health checks pass and it is not ejected.
    pub healthy: bool,
    /// Whether it is passively ejected (failed connections or `UNAVAILABLE` answers)
    /// and still within its backoff.
    pub ejected: bool,
    /// Whether it is draining (gets no new requests), by the operator or membership.
    pub draining: bool,
    /// Requests sent to it whose responses have not ended.
    pub in_flight: u64,
    /// Requests sent to it (attempts included).
    pub requests: u64,
    /// Failed requests and failed connection attempts.
    pub failures: u64,
    /// Requests that failed on it and were sent again to another backend.
    pub retries: u64,
    /// Moving average of its time to response headers, in microseconds.
    pub latency_ewma_us: u64,
}
