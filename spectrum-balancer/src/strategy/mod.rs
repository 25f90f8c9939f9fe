//! Balancing strategies: the [`BalancingStrategy`] trait and its reference
//! implementations.
//!
//! # The contract
//!
//! - [`pick`](BalancingStrategy::pick) receives the backends that may take the request
//!   (healthy, not draining, not yet tried for this request) and returns the index of
//!   one of them, or `None` for "no backend available" (never a panic, never an index
//!   out of range). The slice may differ from one call to the next: membership and
//!   health change, and on failover the balancer calls `pick` again with the backends
//!   not yet tried and [`RequestContext::attempt`] increased.
//! - It is synchronous and must not block or take locks that another request may hold
//!   for long: it runs on the request path. Use atomics for state, and read per-backend
//!   load from [`Backend::load`], which lives outside the strategy and survives
//!   membership changes.
//! - [`on_complete`](BalancingStrategy::on_complete) is feedback when a request ends.
//!
//! Every reference strategy runs the conformance suite in
//! `spectrum_balancer::testing` (feature `testing`); run it on yours too.

mod consistent_hash;
mod least_requests;
mod peak_ewma;
mod random;
mod rng;
mod round_robin;
mod spec;
mod weighted;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use consistent_hash::{ConsistentHash, DEFAULT_LOAD_FACTOR};
pub use least_requests::LeastRequests;
pub use peak_ewma::PeakEwma;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use spec::{CLIENT_ADDRESS, HashKey, StrategyName, StrategySpec};
pub use weighted::WeightedRoundRobin;

pub(crate) use rng::SplitMix;

use crate::backend::Backend;

/// What a strategy may know about the request it places.
///
/// Non-exhaustive so that more of the request can be offered later; build one with
/// [`RequestContext::new`] and the `with_…` methods.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestContext<'a> {
    /// The request method.
    pub method: &'a http::Method,
    /// The request path, exactly as received (percent-encoding untouched).
    pub path: &'a str,
    /// The affinity key, taken from the configured header or gRPC metadata entry, if any.
    pub affinity_key: Option<&'a [u8]>,
    /// `0` for the first pick of a request, then `1`, `2`, … on failover.
    pub attempt: u32,
}

impl<'a> RequestContext<'a> {
    /// A context for a first attempt without affinity key.
    pub fn new(method: &'a http::Method, path: &'a str) -> Self {
        Self { method, path, affinity_key: None, attempt: 0 }
    }

    /// The same context with an affinity key.
    #[must_use]
    pub fn with_affinity_key(self, key: &'a [u8]) -> Self {
        Self { affinity_key: Some(key), ..self }
    }

    /// The same context for failover attempt `attempt` (`0` is the first pick).
    #[must_use]
    pub fn with_attempt(self, attempt: u32) -> Self {
        Self { attempt, ..self }
    }
}

/// How a request ended, as fed back to [`BalancingStrategy::on_complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The backend answered and the response ended normally.
    Success,
    /// The backend answered with a server error (HTTP 5xx, gRPC `UNAVAILABLE`), or the
    /// exchange broke after the request was sent.
    Failure,
    /// The balancer could not connect to the backend; the request was not sent and
    /// was offered to another backend.
    ConnectFailure,
    /// The client went away before the response ended; says nothing about the backend.
    Cancelled,
}

/// Chooses which backend serves a request. See the [module docs](self) for the contract.
///
/// ```
/// use spectrum_balancer::{Backend, strategy::{BalancingStrategy, RequestContext}};
///
/// /// Always the first backend: fine for a primary/standby pair.
/// #[derive(Debug)]
/// struct First;
///
/// impl BalancingStrategy for First {
///     fn pick(&self, backends: &[Backend], _ctx: &RequestContext<'_>) -> Option<usize> {
///         if backends.is_empty() { None } else { Some(0) }
///     }
/// }
/// ```
pub trait BalancingStrategy: Send + Sync + fmt::Debug + 'static {
    /// Picks one of `backends` (all eligible: healthy, not draining, not yet tried for
    /// this request) and returns its index, or `None` for "no backend available".
    ///
    /// Must return `None` when `backends` is empty and otherwise an index below
    /// `backends.len()`; the balancer treats anything else as `None`.
    fn pick(&self, backends: &[Backend], ctx: &RequestContext<'_>) -> Option<usize>;

    /// Feedback when a request ends: how, and how long the backend took to answer
    /// (time to response headers, so long streams do not skew it).
    ///
    /// The default does nothing. Strategies that only read [`Backend::load`] (in
    /// flight, latency average, failures, which the balancer maintains) lose nothing;
    /// override it to keep figures of your own, such as a decaying error rate.
    fn on_complete(&self, backend: &Backend, outcome: Outcome, latency: Duration) {
        let _ = (backend, outcome, latency);
    }
}

impl<T: BalancingStrategy + ?Sized> BalancingStrategy for Arc<T> {
    fn pick(&self, backends: &[Backend], ctx: &RequestContext<'_>) -> Option<usize> {
        (**self).pick(backends, ctx)
    }
    fn on_complete(&self, backend: &Backend, outcome: Outcome, latency: Duration) {
        (**self).on_complete(backend, outcome, latency);
    }
}

impl<T: BalancingStrategy + ?Sized> BalancingStrategy for Box<T> {
    fn pick(&self, backends: &[Backend], ctx: &RequestContext<'_>) -> Option<usize> {
        (**self).pick(backends, ctx)
    }
    fn on_complete(&self, backend: &Backend, outcome: Outcome, latency: Duration) {
        (**self).on_complete(backend, outcome, latency);
    }
}

impl<T: BalancingStrategy> BalancingStrategy for &'static T {
    fn pick(&self, backends: &[Backend], ctx: &RequestContext<'_>) -> Option<usize> {
        (**self).pick(backends, ctx)
    }
    fn on_complete(&self, backend: &Backend, outcome: Outcome, latency: Duration) {
        (**self).on_complete(backend, outcome, latency);
    }
}
