//! Configuration of the balancer and of its backends.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use spectrum_core::tls::TlsConfig;
use subtle::ConstantTimeEq;

use spectrum_core::{Member, NodeId};

use crate::error::BalancerError;

/// How the balancer listens, checks health and retries.
///
/// Start from [`BalancerConfig::default`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// use spectrum_balancer::BalancerConfig;
///
/// let config = BalancerConfig { health_interval: Duration::from_millis(200), ..Default::default() };
/// assert_eq!(config.max_attempts, 3);
/// ```
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// Address to listen on (HTTP/1.1 and HTTP/2 on the same port). Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Time between two active health checks of a backend. Default 1 s.
    pub health_interval: Duration,
    /// Longest time a health check may take before it counts as failed. Default 500 ms.
    pub health_timeout: Duration,
    /// Consecutive successful checks that bring a backend marked down back. Default 2.
    /// A backend never checked before is admitted after its first successful check.
    pub rise: u32,
    /// Consecutive failed checks that mark a healthy backend down. Default 2.
    pub fall: u32,
    /// Longest time to connect (TCP and HTTP/2 handshake) to a backend. Default 1 s.
    pub connect_timeout: Duration,
    /// Longest time to wait for a backend's response headers, or `None` for no limit.
    /// Response bodies (streams) are not limited. Default `None`.
    pub request_timeout: Option<Duration>,
    /// Most backends tried for one request when connections fail before it is sent.
    /// Default 3; at least 1.
    pub max_attempts: u32,
    /// Header (or gRPC metadata entry) whose value is handed to strategies as
    /// [`RequestContext::affinity_key`](crate::strategy::RequestContext::affinity_key).
    /// Default `None`.
    pub affinity_header: Option<http::HeaderName>,
    /// Without an [`affinity_header`](Self::affinity_header): whether the client's
    /// IP address is the affinity key (for consistent hashing by client). Default
    /// `false`.
    pub affinity_client_address: bool,
    /// How long [`BalancerHandle::shutdown`](crate::BalancerHandle::shutdown) lets open
    /// requests finish before closing their connections. Default 5 s.
    pub shutdown_grace: Duration,
    /// Requests that may be sent again after a backend failed them *after* they were
    /// sent (connection reset, `GOAWAY`, a gRPC `UNAVAILABLE` answer before any
    /// message): matched on the request path. Safe HTTP methods (`GET`, `HEAD`,
    /// `OPTIONS`, `TRACE`) are always retriable. Default: none.
    ///
    /// Mark only calls that are harmless to run twice, such as reads. The response
    /// to a retriable request is forwarded once its first message (or its end) has
    /// arrived, so that a backend dying right after its headers is retried too; a
    /// streaming method that sends headers long before its first message is better
    /// left unmarked.
    pub idempotent: Vec<PathMatcher>,
    /// Largest request body kept for sending again: retriable requests with a larger
    /// body are not retried after a failure. Default 64 KiB.
    pub retry_buffer: usize,
    /// Limits retries after failure, so that retries cannot multiply load on a
    /// struggling cluster. Default 20 % of requests plus 10 per second.
    pub retry_budget: RetryBudgetConfig,
    /// Largest request body accepted, in bytes, or `None` for no limit. Larger
    /// requests are answered `413 Payload Too Large` (gRPC `RESOURCE_EXHAUSTED`).
    /// Default 32 MiB.
    pub max_request_body: Option<u64>,
    /// Consecutive failed exchanges (gRPC `UNAVAILABLE`, HTTP 502/503/504, a
    /// connection broken mid-request) after which a backend is ejected. A failed
    /// connection attempt ejects at once. Default 3; at least 1.
    pub eject_after_failures: u32,
    /// How long an ejected backend stays out before a passing health check may
    /// bring it back; doubled for each further ejection in a row, up to
    /// [`max_ejection_backoff`](Self::max_ejection_backoff). Default 1 s.
    pub ejection_backoff: Duration,
    /// The longest ejection. Default 30 s.
    pub max_ejection_backoff: Duration,
    /// Most HTTP/2 connections the balancer opens to each backend. Requests go to
    /// the connection with the fewest in flight; further connections open only
    /// while the first ones are busy. One connection is served by one task, so more
    /// than one lets a busy backend's traffic use more than one core. Default 2;
    /// at least 1. With several [`workers`](Self::workers), each worker keeps its
    /// own connections to each backend, `upstream_connections / workers` of them
    /// (rounded up, at least one).
    pub upstream_connections: usize,
    /// Threads that serve client connections, each running its own single-threaded
    /// runtime with its own connections to the backends, so that a request is read,
    /// forwarded and answered on one thread, without waking another (the layout
    /// of HAProxy's and nginx's worker threads). One acceptor hands each new client
    /// connection to the worker with the fewest open. Health checks, discovery and
    /// the admin listener stay on the runtime that starts the balancer. Default: one
    /// per core ([`std::thread::available_parallelism`]); at least 1.
    pub workers: usize,
    /// TLS for clients: the listener serves TLS only, with this certificate and
    /// key, offering ALPN `h2` and `http/1.1` on the one port. With
    /// [`ClientAuth::Required`](spectrum_core::tls::ClientAuth::Required), every
    /// client presents a certificate chaining to its CA; with `Optional`, none is
    /// needed. `None` (the default) serves plaintext (h2c and HTTP/1.1).
    pub tls: Option<TlsConfig>,
    /// TLS to the backends, for nodes that serve TLS: each backend's certificate
    /// must chain to this CA and name the backend's IP address; its own certificate
    /// (when it has one) is presented. Health checks use it too. `None` (the
    /// default) speaks h2c.
    pub upstream_tls: Option<TlsConfig>,
    /// Address of the balancer's *admin listener*, or `None` for none. Default
    /// `None`.
    ///
    /// It is a separate plain-text port (HTTP/1.1 and h2c) that serves Prometheus
    /// metrics at `/metrics` and the balancer's own gRPC service
    /// (`spectrum.balancer.v1.Balancer/Stats`) to anyone who reaches it, with no
    /// token: bind it to loopback (`127.0.0.1:PORT`) or to a management network,
    /// never to the clients' network. The balancer warns at start when it is not
    /// on a loopback address.
    pub admin_listen: Option<SocketAddr>,
    /// Whether the balancer answers its own gRPC service,
    /// `spectrum.balancer.v1.Balancer` (method `Stats`: per-backend figures), on
    /// [`listen`](Self::listen), itself instead of proxying it; see
    /// [`stats`](crate::stats). Who may call it there is set by
    /// [`stats_token`](Self::stats_token) and [`open_stats`](Self::open_stats).
    /// When `false`, those calls are proxied to the nodes like any other. Default
    /// `true`.
    pub serve_stats: bool,
    /// The token that admits a `Stats` call on the public port
    /// ([`listen`](Self::listen)) at once, carried as `authorization: Bearer
    /// <token>` (compared in constant time). A call with another token is
    /// answered when the nodes admit that token (a user's token of any role,
    /// checked on a node's HTTP API and remembered for a few seconds, as for the
    /// JSON figures at `/api/v1/balancer/stats`: see [`stats`](crate::stats)); a call without one,
    /// or with one the nodes refuse, is answered `UNAUTHENTICATED`. Give it the
    /// cluster's management token. Default `None`: see
    /// [`open_stats`](Self::open_stats).
    pub stats_token: Option<BearerToken>,
    /// With no [`stats_token`](Self::stats_token): whether `Stats` on the public
    /// port answers anyone (`true`), or is off there (`false`: answered
    /// `PERMISSION_DENIED`; the [admin listener](Self::admin_listen) still serves
    /// it). Ignored when a token is set. Default `false`.
    pub open_stats: bool,
    /// Path prefixes of the cluster's *internal* services, which the balancer never
    /// forwards: a request whose path starts with one of them is answered by the
    /// balancer itself, without touching a node, with gRPC `PERMISSION_DENIED`
    /// (HTTP 403 for a request that is not gRPC), and counted as
    /// [`internal_refused`](crate::stats::BalancerStats::internal_refused).
    ///
    /// Nodes authenticate these calls from their peers on their own; this keeps
    /// them off the public address altogether. Default
    /// [`DEFAULT_INTERNAL_PATHS`] (`/spectrum.replication.v1.`: replication).
    /// Add the prefix of any node-to-node service of your own. Each prefix must
    /// start with `/`.
    pub internal_paths: Vec<String>,
    /// Longest a new client connection may take to show its protocol (its first
    /// bytes: the HTTP/2 connection preface, or an HTTP/1.1 request line), and
    /// longest an HTTP/1.1 client may take to send a request's headers. So a
    /// connection that sends nothing, half a request line or half a preface is
    /// closed after this long (HAProxy's `timeout http-request`, nginx's
    /// `client_header_timeout`). An HTTP/1.1 keep-alive connection waits this
    /// long for its next request too (hyper times the wait for the next
    /// request's headers). Default 10 s.
    pub header_read_timeout: Duration,
    /// A client connection with no request in flight for this long is closed
    /// (an idle HTTP/2 connection, which gets `GOAWAY` first). A request is in
    /// flight until its response has been written to the end, so a long
    /// download or gRPC stream keeps its connection open. Default 60 s.
    pub idle_timeout: Duration,
    /// Most client connections open at once. A connection beyond it is refused:
    /// accepted and closed at once (the client sees the connection closed or
    /// reset), counted in `spectrum_balancer_connections_refused_total` and
    /// logged, so that a flood of connections can neither exhaust the
    /// balancer's file descriptors nor leave newcomers waiting unanswered
    /// (Envoy's overload manager refuses the same way). Default 10,000.
    pub max_connections: usize,
    /// Largest request header section accepted, in bytes, counted as HTTP/2
    /// does (RFC 9113 §6.5.2: each field's name and value plus 32, pseudo-header
    /// fields included, the node's address counted as 261 bytes: the longest
    /// host name and a port), after the balancer's own `x-forwarded-*` fields
    /// are added. A larger request is answered `431 Request Header Fields Too
    /// Large` (gRPC `RESOURCE_EXHAUSTED`) and never sent to a node: a node
    /// refuses one over its own limit (16 KiB for Spectrum's nodes, as for any
    /// hyper server) with `REFUSED_STREAM`, or, when its headers span many
    /// frames, by closing its whole connection to the balancer, failing other
    /// clients' calls on it; either would count against a healthy node. Keep
    /// it no larger than the nodes' own limit. Default 16 KiB (16,384); at
    /// least 1 KiB.
    pub max_request_headers: usize,
    /// Most requests in flight at once on one HTTP/2 client connection (the
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` the balancer announces; a client that
    /// opens more has them refused with `REFUSED_STREAM`, which it may retry), so
    /// one connection cannot claim an unbounded share of the balancer. Default 256
    /// (HAProxy's `tune.h2.max-concurrent-streams` is 100).
    pub max_concurrent_streams: u32,
}

/// The default of [`BalancerConfig::internal_paths`]: every service of the
/// replication protocol (`spectrum.replication.v1`).
pub const DEFAULT_INTERNAL_PATHS: &[&str] = &["/spectrum.replication.v1."];

/// A bearer token the balancer requires (see [`BalancerConfig::stats_token`]).
/// `Debug` never shows it.
///
/// ```
/// use spectrum_balancer::config::BearerToken;
///
/// let token = BearerToken::new("s3cret");
/// assert_eq!(format!("{token:?}"), "BearerToken(***)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    /// A token with this value.
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }

    /// Whether `headers` carry `authorization: Bearer <this token>` (the scheme
    /// in any case; the token compared in constant time).
    pub(crate) fn admits(&self, headers: &http::HeaderMap) -> bool {
        let Some(value) = headers.get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes) else {
            return false;
        };
        let Some((scheme, presented)) = value.split_at_checked(7) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(presented.ct_eq(self.0.as_bytes()))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

/// Matches request paths, for [`BalancerConfig::idempotent`].
///
/// ```
/// use spectrum_balancer::config::PathMatcher;
///
/// let check = PathMatcher::grpc_method("grpc.health.v1.Health", "Check");
/// assert!(check.matches("/grpc.health.v1.Health/Check"));
/// assert!(!check.matches("/grpc.health.v1.Health/Watch"));
/// assert!(PathMatcher::grpc_service("demo.v1.Reader").matches("/demo.v1.Reader/Get"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathMatcher {
    /// The path equals this string (query excluded).
    Exact(String),
    /// The path starts with this string.
    Prefix(String),
}

impl PathMatcher {
    /// One gRPC method: the path `/{service}/{method}`, `service` fully qualified.
    pub fn grpc_method(service: &str, method: &str) -> Self {
        Self::Exact(format!("/{service}/{method}"))
    }

    /// Every method of a gRPC service: paths starting with `/{service}/`.
    pub fn grpc_service(service: &str) -> Self {
        Self::Prefix(format!("/{service}/"))
    }

    /// Paths starting with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self::Prefix(prefix.into())
    }

    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// A retry budget, as in Finagle and Envoy: each request earns
/// [`ratio`](Self::ratio) of a retry, and [`min_per_second`](Self::min_per_second)
/// retries are earned each second whatever the traffic, so that a quiet balancer
/// can still retry. Retries spend what was earned; with nothing left, a failed
/// request is answered with its failure instead of being retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries earned per request, between 0 and 1 (0.2: at most 20 % extra load).
    pub ratio: f64,
    /// Retries earned per second regardless of traffic.
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self { ratio: 0.2, min_per_second: 10 }
    }
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            connect_timeout: Duration::from_secs(1),
            request_timeout: None,
            max_attempts: 3,
            affinity_header: None,
            affinity_client_address: false,
            shutdown_grace: Duration::from_secs(5),
            idempotent: Vec::new(),
            retry_buffer: 64 * 1024,
            retry_budget: RetryBudgetConfig::default(),
            max_request_body: Some(32 * 1024 * 1024),
            eject_after_failures: 3,
            ejection_backoff: Duration::from_secs(1),
            max_ejection_backoff: Duration::from_secs(30),
            admin_listen: None,
            serve_stats: true,
            stats_token: None,
            open_stats: false,
            upstream_connections: 2,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            internal_paths: DEFAULT_INTERNAL_PATHS.iter().map(|p| (*p).to_owned()).collect(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_request_headers: 16 * 1024,
            max_concurrent_streams: 256,
            tls: None,
            upstream_tls: None,
        }
    }
}

impl BalancerConfig {
    /// Checks every setting (the builder does too, when the balancer starts).
    ///
    /// # Errors
    ///
    /// [`BalancerError::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), BalancerError> {
        let invalid = |field, reason| Err(BalancerError::InvalidConfig { field, reason });
        if self.health_interval.is_zero() {
            return invalid("health_interval", "must be greater than zero");
        }
        if self.health_timeout.is_zero() {
            return invalid("health_timeout", "must be greater than zero");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be greater than zero");
        }
        if self.rise == 0 {
            return invalid("rise", "must be at least 1");
        }
        if self.fall == 0 {
            return invalid("fall", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if self.eject_after_failures == 0 {
            return invalid("eject_after_failures", "must be at least 1");
        }
        if self.upstream_connections == 0 {
            return invalid("upstream_connections", "must be at least 1");
        }
        if self.workers == 0 {
            return invalid("workers", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.retry_budget.ratio) {
            return invalid("retry_budget.ratio", "must be between 0 and 1");
        }
        if self.internal_paths.iter().any(|p| !p.starts_with('/')) {
            return invalid("internal_paths", "every prefix must start with '/'");
        }
        if self.max_concurrent_streams == 0 {
            return invalid("max_concurrent_streams", "must be at least 1");
        }
        if self.header_read_timeout.is_zero() {
            return invalid("header_read_timeout", "must be greater than zero");
        }
        if self.idle_timeout.is_zero() {
            return invalid("idle_timeout", "must be greater than zero");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_request_headers < 1024 {
            return invalid("max_request_headers", "must be at least 1024 bytes");
        }
        if self.max_ejection_backoff < self.ejection_backoff {
            return invalid("max_ejection_backoff", "must not be shorter than ejection_backoff");
        }
        Ok(())
    }
}

/// One backend node the balancer may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The node's identity (keys its health and load figures across changes).
    pub id: NodeId,
    /// The node's plain-text HTTP/2 (gRPC) address.
    pub addr: SocketAddr,
    /// Relative weight for weighted strategies. `1` is the usual value.
    pub weight: u32,
}

impl BackendConfig {
    /// A backend of weight 1.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        Self { id, addr, weight: 1 }
    }
}

impl TryFrom<&Member> for BackendConfig {
    type Error = BalancerError;

    /// A backend of weight 1 for a member whose address has an IP host.
    ///
    /// # Errors
    ///
    /// [`BalancerError::InvalidBackendAddr`] when the address's host is a name (the
    /// balancer does not resolve names: record members by IP).
    fn try_from(member: &Member) -> Result<Self, Self::Error> {
        let addr = member.addr.socket_addr().ok_or_else(|| BalancerError::InvalidBackendAddr {
            id: member.id.clone(),
            addr: member.addr.to_string(),
            reason: "expected IP:PORT (host names are not resolved)".into(),
        })?;
        Ok(Self::new(member.id.clone(), addr))
    }
}

#[cfg(test)]
mod tests {
    use spectrum_core::MemberState;

    use super::*;

    #[test]
    fn the_default_config_is_valid_and_listens_on_loopback() {
        let c = BalancerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert_eq!((c.rise, c.fall, c.max_attempts), (2, 2, 3));
        assert_eq!(c.internal_paths, ["/spectrum.replication.v1."]);
    }

    #[test]
    fn a_bearer_token_admits_only_itself() {
        let token = BearerToken::new("s3cret");
        let with = |value: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static(value));
            h
        };
        assert!(token.admits(&with("Bearer s3cret")));
        assert!(token.admits(&with("bearer s3cret")));
        assert!(!token.admits(&with("Bearer s3cret!")));
        assert!(!token.admits(&with("Bearer s3cre")));
        assert!(!token.admits(&with("Basic s3cret")));
        assert!(!token.admits(&with("s3cret")));
        assert!(!token.admits(&http::HeaderMap::new()));
    }

    #[test]
    fn an_internal_path_without_a_leading_slash_is_rejected() {
        let c =
            BalancerConfig { internal_paths: vec!["spectrum.replication.v1.".into()], ..Default::default() };
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("internal_paths"), "{err}");
    }

    #[test]
    fn zero_attempts_are_rejected_with_the_field_name() {
        let c = BalancerConfig { max_attempts: 0, ..Default::default() };
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("max_attempts"), "{err}");
    }

    #[test]
    fn members_with_ip_addresses_become_backends() {
        let id: NodeId = "n1".parse().unwrap();
        let m = Member::new(id.clone(), "http://127.0.0.1:7001".parse().unwrap(), MemberState::Active);
        let b = BackendConfig::try_from(&m).unwrap();
        assert_eq!(b, BackendConfig::new(id.clone(), "127.0.0.1:7001".parse().unwrap()));
        let named = Member::new(id, "http://node-1.local:7001".parse().unwrap(), MemberState::Active);
        assert!(matches!(BackendConfig::try_from(&named), Err(BalancerError::InvalidBackendAddr { .. })));
    }
}
