//! The crate's error types: [`BalancerError`] for the API, [`BoxError`] for body streams.

use std::net::SocketAddr;

use spectrum_core::NodeId;
use thiserror::Error;

/// The error type of [`ProxyBody`](crate::ProxyBody): whatever broke a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong while starting or reconfiguring a balancer.
///
/// Failures of individual requests are not errors of the API: they are answered to
/// the client (`503`, gRPC `UNAVAILABLE`) and counted in
/// [`BackendStats`](crate::BackendStats).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BalancerError {
    /// A listening address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener: `listen` (requests) or `admin_listen` (metrics).
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A worker thread (see [`BalancerConfig::workers`](crate::BalancerConfig::workers))
    /// or its runtime could not be started.
    #[error("cannot start balancer worker {worker}: {source}")]
    Worker {
        /// Which worker, from 0.
        worker: usize,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// Two backends in one list share an id.
    #[error("backend {id} is listed more than once")]
    DuplicateBackend {
        /// The repeated id.
        id: NodeId,
    },
    /// A backend's address could not be used.
    #[error("backend {id}: invalid address {addr:?}: {reason}")]
    InvalidBackendAddr {
        /// The backend.
        id: NodeId,
        /// The address as given.
        addr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No backend with this id is configured.
    #[error("no backend {id} is configured")]
    UnknownBackend {
        /// The id asked for.
        id: NodeId,
    },
    /// A [`Discovery`](crate::Discovery) source could not tell the members.
    #[error("membership discovery failed: {source}")]
    Discovery {
        /// What went wrong, as the source reported it.
        source: BoxError,
    },
    /// A [`StatsClient`](crate::stats::StatsClient) could not reach the balancer.
    #[error("cannot reach the balancer at {endpoint}: {source}")]
    Connect {
        /// The address asked for.
        endpoint: String,
        /// Why it could not be reached: an invalid URI, or a transport error.
        source: BoxError,
    },
    /// A [`StatsClient`](crate::stats::StatsClient) call was answered with a gRPC
    /// error. The code is `Unimplemented` when the endpoint is a node, not a balancer.
    #[error("the balancer's Stats call failed: {code:?}: {message}")]
    StatsCall {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A balancer's `Stats` answer held a value that could not be read.
    #[error("invalid Stats answer: {field}: {reason}")]
    InvalidStatsAnswer {
        /// Which field, as `backends[2].addr`.
        field: String,
        /// Why it could not be read.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid balancer configuration: {field} {reason}")]
    InvalidConfig {
        /// The offending [`BalancerConfig`](crate::BalancerConfig) field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A strategy name or parameter that cannot be used (see
    /// [`StrategySpec`](crate::strategy::StrategySpec)).
    #[error("invalid strategy: {field}: {reason}")]
    InvalidStrategy {
        /// `name`, `hash_key` or `load_factor`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS settings that cannot be used (see [`BalancerConfig::tls`](crate::BalancerConfig::tls)).
    #[error("invalid balancer TLS settings: {field}: {reason}")]
    Tls {
        /// `tls` or `upstream_tls`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl BalancerError {
    /// Wraps a [`Discovery`](crate::Discovery) implementation's own error.
    pub fn discovery(source: impl Into<BoxError>) -> Self {
        Self::Discovery { source: source.into() }
    }
}
