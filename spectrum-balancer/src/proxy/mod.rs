//! Forwarding one request: header fix-ups, picking a backend, failover on
//! connection failure, and the balancer's own answers.
//!
//! `Proxy::handle` reads as its steps: `prepare` makes the client's request ready
//! (headers, body, retry template), `forward` picks backends in turn, and each
//! `attempt` (`attempt.rs`) sends the request once and names how it ended (an
//! `AttemptOutcome`). `completion.rs` reports each exchange when it ends.

use std::borrow::Cow;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tracing::{debug, error, trace};

use crate::body::{
    ClientBody, GRPC_DEADLINE_EXCEEDED, GRPC_RESOURCE_EXHAUSTED, GRPC_UNAVAILABLE, ProxyBody, local_answer,
};
use crate::pool::{Candidates, Counters, LocalSnapshot, Pool, Snapshot};
use crate::replay::{AttemptBody, RequestBody};
use crate::routing::Routing;
use crate::stats::proto::balancer_server::BalancerServer;
use crate::stats::service::{self, BalancerStatsService};
use crate::strategy::{BalancingStrategy, HashKey, RequestContext};

mod attempt;
mod completion;
mod stats_api;

use attempt::{AttemptOutcome, Chances, Failure};

/// gRPC status code `INTERNAL`.
const GRPC_INTERNAL: u32 = 13;
/// gRPC status code `UNIMPLEMENTED`.
const GRPC_UNIMPLEMENTED: u32 = 12;
/// gRPC status code `PERMISSION_DENIED`.
const GRPC_PERMISSION_DENIED: u32 = 7;

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1, plus `proxy-connection`):
/// the fields HTTP/2 forbids, which the client to nodes also strips from trailers.
const HOP_BY_HOP: [&str; 5] = crate::h2_body::CONNECTION_SPECIFIC;

/// The header that lists the clients a request came through.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request handler shared by every client connection. The strategy comes with
/// each request's snapshot of the pool, so it can be swapped while serving.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub(crate) pool: Arc<Pool>,
    /// The balancer's own service, answered locally, when
    /// [`BalancerConfig::serve_stats`](crate::BalancerConfig::serve_stats) is on.
    pub(crate) stats: Option<BalancerServer<BalancerStatsService>>,
    /// The worker this proxy serves on (see `serve.rs`): its requests go on that
    /// worker's connections to the backends ([`Entry::upstream`](crate::pool::Entry::upstream)).
    pub(crate) worker: usize,
    /// Callers the nodes lately admitted to the balancer's JSON figures.
    pub(crate) admitted: stats_api::Admitted,
    /// This worker's copy of the pool's snapshot.
    pub(crate) snapshot: LocalSnapshot,
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Methods that change nothing on the server (RFC 9110 §9.2.1), so a failed one may
/// be sent again.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

fn unavailable(grpc: bool) -> Response<ProxyBody> {
    local_answer(grpc, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "no backend available")
}

/// The answer when backends failed a request (HTTP 502, gRPC `UNAVAILABLE`),
/// saying what is known of its outcome: `None` when every node tried failed
/// it after it was sent (a retriable request, so safe to send again).
fn backend_failed(grpc: bool, failure: Option<Failure>) -> Response<ProxyBody> {
    let message = match failure {
        Some(Failure::Refused) => {
            "backend failed: the node refused the request unprocessed and no other node could take it; it \
             did not take effect"
        }
        Some(Failure::Broke) => {
            "backend failed: the node failed after the request was sent, which was not sent again (not \
             idempotent, or no retry left); whether it took effect is unknown"
        }
        None => "backend failed: every node tried failed the request",
    };
    local_answer(grpc, StatusCode::BAD_GATEWAY, GRPC_UNAVAILABLE, message)
}

fn too_large(grpc: bool) -> Response<ProxyBody> {
    local_answer(
        grpc,
        StatusCode::PAYLOAD_TOO_LARGE,
        GRPC_RESOURCE_EXHAUSTED,
        "request body larger than the balancer accepts",
    )
}

fn headers_too_large(grpc: bool, size: usize, limit: usize) -> Response<ProxyBody> {
    local_answer(
        grpc,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        GRPC_RESOURCE_EXHAUSTED,
        &format!("request headers of {size} bytes are over the balancer's limit of {limit} bytes"),
    )
}

/// What the `:authority` of a request to a node is counted as: the longest
/// host name (253 bytes), a colon and a port, rounded up to 261.
const AUTHORITY_ALLOWANCE: usize = 261;

/// The size of the header section `parts` makes on its way to a node, as
/// HTTP/2 counts it (RFC 9113 §6.5.2): every field's name and value plus 32
/// bytes, the pseudo-header fields included (`:scheme` as `https`, the
/// longest; `:authority` as [`AUTHORITY_ALLOWANCE`]).
fn header_list_size(parts: &http::request::Parts, pq: &http::uri::PathAndQuery) -> usize {
    const FIELD: usize = 32;
    let pseudo = (":method".len() + parts.method.as_str().len() + FIELD)
        + (":scheme".len() + "https".len() + FIELD)
        + (":authority".len() + AUTHORITY_ALLOWANCE + FIELD)
        + (":path".len() + pq.as_str().len() + FIELD);
    parts.headers.iter().fold(pseudo, |size, (name, value)| size + name.as_str().len() + value.len() + FIELD)
}

fn internal(grpc: bool) -> Response<ProxyBody> {
    local_answer(
        grpc,
        StatusCode::FORBIDDEN,
        GRPC_PERMISSION_DENIED,
        "this service is internal to the cluster and not reachable through the balancer",
    )
}

fn timed_out(grpc: bool) -> Response<ProxyBody> {
    local_answer(grpc, StatusCode::GATEWAY_TIMEOUT, GRPC_DEADLINE_EXCEEDED, "backend did not answer in time")
}

/// Runs `fut` until `deadline`, if there is one; `None` when time ran out.
async fn until<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Removes hop-by-hop headers, including those the `connection` header names.
/// `te: trailers` is kept (gRPC needs it); other `te` values are dropped.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Every HTTP/1.1 request comes through here, and few hold any of these:
    // one pass over the names present, without hashing, before any lookup.
    if !headers.keys().any(crate::h2_body::is_connection_specific) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| name != header::TE)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let wants_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers")));
    headers.remove(header::TE);
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Prepares a client's request headers for a backend: no hop-by-hop headers, the
/// client's `host` (or, over HTTP/2, its `:authority`) moved to `x-forwarded-host`
/// (the URI authority names the backend), the client address appended to
/// `x-forwarded-for`, and `x-forwarded-proto` set to how the client reached the
/// balancer (`https` when it terminates TLS; a client's own value is replaced,
/// so none can claim TLS it did not use).
pub(crate) fn forward_headers(
    headers: &mut HeaderMap,
    authority: Option<&Authority>,
    client: SocketAddr,
    proto: ClientProto,
) {
    strip_hop_by_hop(headers);
    add_forwarding(headers, authority, client, proto);
}

/// How clients reach the balancer: the value of `x-forwarded-proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientProto {
    /// Plaintext (HTTP/1.1 or h2c).
    Http,
    /// TLS terminated by the balancer.
    Https,
}

impl ClientProto {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

/// Whether headers received over this HTTP version may hold hop-by-hop headers.
/// HTTP/2 forbids them (RFC 9113 §8.2.2) and the `h2` decoder refuses a header
/// block that has any (or a `te` other than `trailers`), so HTTP/2 requests and the
/// HTTP/2 backends' responses and trailers are passed as they are, saving a scan of
/// every header map on the hot path.
fn may_hold_hop_by_hop(version: Version) -> bool {
    version < Version::HTTP_2
}

/// [`forward_headers`] without the hop-by-hop stripping.
fn add_forwarding(
    headers: &mut HeaderMap,
    authority: Option<&Authority>,
    client: SocketAddr,
    proto: ClientProto,
) {
    headers.insert(X_FORWARDED_PROTO, proto.header());
    let host = headers
        .remove(header::HOST)
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    if let Some(host) = host {
        headers.entry(X_FORWARDED_HOST).or_insert(host);
    }
    // Built in one buffer: this runs on every request. Several `x-forwarded-for`
    // lines are one list (RFC 9110 §5.3): every one is kept, in order.
    let mut value = Vec::with_capacity(64);
    for prior in headers.get_all(X_FORWARDED_FOR).iter().map(HeaderValue::as_bytes) {
        if !prior.trim_ascii().is_empty() {
            value.extend_from_slice(prior.trim_ascii());
            value.extend_from_slice(b", ");
        }
    }
    // Writing to a `Vec` cannot fail.
    let _ = write!(value, "{}", client.ip());
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// The URI for a backend: `http://BACKEND` plus the original path and query, byte for byte.
pub(crate) fn upstream_uri(authority: &http::uri::Authority, pq: &PathAndQuery) -> Option<Uri> {
    Uri::builder().scheme(Scheme::HTTP).authority(authority.clone()).path_and_query(pq.clone()).build().ok()
}

/// What the proxy keeps of a retriable request to send it again.
#[derive(Debug)]
struct Template {
    method: Method,
    headers: HeaderMap,
}

impl Template {
    fn request(&self, body: AttemptBody) -> Request<AttemptBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// A client's request made ready for backends: what every attempt needs.
#[derive(Debug)]
struct Prepared {
    /// Whether the client speaks gRPC; the balancer's own answers follow suit.
    grpc: bool,
    method: Method,
    pq: PathAndQuery,
    /// The affinity key (a header's value, or the client's address), for strategies
    /// that hash it.
    affinity: Option<HeaderValue>,
    /// The strategy in force when the request arrived: it picks every attempt and
    /// hears every outcome of this request, even if another one takes over meanwhile.
    strategy: Arc<dyn BalancingStrategy>,
    /// The client's HTTP version, given back on the response.
    client_version: Version,
    body: RequestBody,
    /// Whether the request may be sent again after a backend failed it once sent
    /// (a safe method, or an idempotent path). Any request may be sent again after
    /// a not-ready refusal ([`crate::refusal`]), since nothing ran.
    retriable: bool,
    /// How to send the request again.
    template: Template,
    /// The request for the next attempt while it has not been sent (or came back unsent).
    pending: Option<Request<AttemptBody>>,
    /// When the backend must have answered by, if there is a limit.
    deadline: Option<Instant>,
}

impl Prepared {
    /// What the strategy sees of the request on attempt number `attempt` (from 0).
    fn context(&self, attempt: u32) -> RequestContext<'_> {
        RequestContext {
            method: &self.method,
            path: self.pq.path(),
            affinity_key: self.affinity.as_ref().map(HeaderValue::as_bytes),
            attempt,
        }
    }

    /// The request for the next attempt, addressed to `authority`: the unsent one, or
    /// a copy made from the template. `Err` is the balancer's answer when the path
    /// cannot be forwarded (boxed: it is rare, and large).
    fn outgoing(
        &mut self,
        authority: &http::uri::Authority,
    ) -> Result<Request<AttemptBody>, Box<Response<ProxyBody>>> {
        let mut req = match self.pending.take() {
            Some(req) => req,
            None => self.template.request(self.body.attempt()),
        };
        let Some(uri) = upstream_uri(authority, &self.pq) else {
            return Err(Box::new(local_answer(
                self.grpc,
                StatusCode::BAD_REQUEST,
                GRPC_INTERNAL,
                "request path cannot be forwarded",
            )));
        };
        *req.uri_mut() = uri;
        Ok(req)
    }
}

impl Proxy {
    /// Forwards `req` from `client` to a backend and returns its response, or the
    /// balancer's own answer when no backend can take it. Never fails.
    ///
    /// Retriable requests (safe methods, [`BalancerConfig::idempotent`] paths) whose
    /// body fits the retry buffer are sent again to another backend when the first
    /// one fails them after they were sent, within the retry budget. Their response is
    /// forwarded once its first body frame (or its end) has arrived, so a backend
    /// that dies right after its response headers is retried too.
    ///
    /// [`BalancerConfig::idempotent`]: crate::BalancerConfig::idempotent
    pub(crate) async fn handle(&self, req: Request<ClientBody>, client: SocketAddr) -> Response<ProxyBody> {
        // The balancer's own service: one prefix compare on the hot path.
        if let Some(server) = &self.stats {
            if req.uri().path() == crate::stats::JSON_PATH {
                // Boxed, as the other local answers: rare, and their futures
                // would otherwise swell every request's.
                return Box::pin(self.stats_json(req, client)).await;
            }
            if req.uri().path().as_bytes().starts_with(service::PATH_PREFIX) {
                trace!(path = req.uri().path(), %client, "balancer's own call");
                if let Some(refusal) = service::refusal(self.pool.config(), req.headers()) {
                    // Another token than the balancer's own: admitted when the
                    // nodes admit it, as for the JSON figures (a viewer's too).
                    let ask_nodes = self.pool.config().stats_token.is_some();
                    if !ask_nodes || Box::pin(self.admit(req.headers())).await.is_err() {
                        debug!(%client, "Stats refused on the public port");
                        return refusal;
                    }
                }
                return Box::pin(service::answer(server, req)).await;
            }
        }
        let path = req.uri().path().as_bytes();
        if self.pool.config().internal_paths.iter().any(|prefix| path.starts_with(prefix.as_bytes())) {
            Counters::bump(&self.pool.counters.internal_refused);
            debug!(path = req.uri().path(), %client, "internal service refused");
            return internal(is_grpc(req.headers()));
        }
        let snapshot = self.pool.local_snapshot(&self.snapshot);
        match self.prepare(req, client, &snapshot.routing) {
            Ok(request) => self.forward(request, &snapshot).await,
            Err(answer) => *answer,
        }
    }

    /// Checks a client's request and makes it ready for backends: counts it, fixes
    /// its headers, wraps its body (keeping a copy for retries when the request is
    /// retriable) and keeps a template to send it again. `Err` is the balancer's own
    /// answer (boxed: it is rare, and large): no path, `CONNECT`, or a body announced
    /// over the limit.
    fn prepare(
        &self,
        req: Request<ClientBody>,
        client: SocketAddr,
        routing: &Routing,
    ) -> Result<Prepared, Box<Response<ProxyBody>>> {
        let grpc = is_grpc(req.headers());
        let Some(pq) = req.uri().path_and_query().cloned() else {
            return Err(Box::new(local_answer(
                grpc,
                StatusCode::BAD_REQUEST,
                GRPC_INTERNAL,
                "request has no path",
            )));
        };
        if req.method() == Method::CONNECT {
            return Err(Box::new(local_answer(
                grpc,
                StatusCode::METHOD_NOT_ALLOWED,
                GRPC_UNIMPLEMENTED,
                "CONNECT is not supported",
            )));
        }
        let config = self.pool.config();
        Counters::bump(&self.pool.counters.requests);
        self.pool.budget.deposit();
        let client_version = req.version();
        let method = req.method().clone();
        let affinity = match &routing.affinity {
            Some(HashKey::Header(name)) => req.headers().get(name).cloned(),
            // The client's address as the key: the same client goes to the same node.
            Some(HashKey::ClientAddress) => HeaderValue::try_from(client.ip().to_string()).ok(),
            None => None,
        };
        let strategy = routing.strategy.clone();
        trace!(%method, path = pq.as_str(), %client, grpc, "request");

        let (mut parts, body) = req.into_parts();
        if config.max_request_body.is_some_and(|limit| body.size_hint().lower() > limit) {
            Counters::bump(&self.pool.counters.too_large);
            return Err(Box::new(too_large(grpc)));
        }
        let retriable = is_safe(&method) || config.idempotent.iter().any(|m| m.matches(pq.path()));
        let proto = if config.tls.is_some() { ClientProto::Https } else { ClientProto::Http };
        if may_hold_hop_by_hop(client_version) {
            forward_headers(&mut parts.headers, parts.uri.authority(), client, proto);
        } else {
            add_forwarding(&mut parts.headers, parts.uri.authority(), client, proto);
        }
        // Checked as the nodes will see it, `x-forwarded-*` included: a node
        // would refuse a larger one by failing the stream or its whole
        // connection, which counts against it (see `max_request_headers`).
        let size = header_list_size(&parts, &pq);
        if size > config.max_request_headers {
            Counters::bump(&self.pool.counters.too_large);
            debug!(%client, size, limit = config.max_request_headers, "request headers too large");
            return Err(Box::new(headers_too_large(grpc, size, config.max_request_headers)));
        }
        parts.version = Version::HTTP_2;
        // Every request keeps up to `retry_buffer` of its body (references to the
        // client's buffers, not copies): a not-ready refusal is sent elsewhere whatever
        // the request.
        let body = RequestBody::new(body, config.max_request_body, config.retry_buffer);
        let template = Template { method: method.clone(), headers: parts.headers.clone() };
        let pending = Some(Request::from_parts(parts, body.attempt()));
        let deadline = config.request_timeout.map(|limit| Instant::now() + limit);
        Ok(Prepared {
            grpc,
            method,
            pq,
            affinity,
            strategy,
            client_version,
            body,
            retriable,
            template,
            pending,
            deadline,
        })
    }

    /// Tries backends the strategy picks among `snapshot`'s, one after the other,
    /// until one answers or the request may not be tried again.
    async fn forward(&self, mut request: Prepared, snapshot: &Snapshot) -> Response<ProxyBody> {
        let counters = &self.pool.counters;
        let mut candidates: Cow<'_, Candidates> =
            Cow::Borrowed(if snapshot.eligible.is_empty() { &snapshot.fallback } else { &snapshot.eligible });
        let max_attempts = self.pool.config().max_attempts;
        let mut attempt = 0;
        // Attempts that never sent the request (connect failure, a pooled connection
        // that had closed) do not count against `max_attempts`: each drops its
        // backend from the candidates, so they are bounded by the cluster's size.
        let mut unsent = 0;
        let mut failed_after_send = false;
        loop {
            if attempt - unsent >= max_attempts || candidates.is_empty() {
                debug!(method = %request.method, path = request.pq.as_str(), attempt, "no backend available");
                Counters::bump(&counters.no_backend);
                return if failed_after_send {
                    backend_failed(request.grpc, None)
                } else {
                    unavailable(request.grpc)
                };
            }
            let picked = match checked_pick(
                &*request.strategy,
                &candidates.backends,
                &request.context(attempt),
            ) {
                Ok(picked) => picked,
                Err(fault) => {
                    let faults = counters.strategy_faults.fetch_add(1, Ordering::Relaxed) + 1;
                    // The 1st, 2nd, 4th, 8th… fault: a broken strategy fails every
                    // request, and the log need not say so each time.
                    if faults.is_power_of_two() {
                        error!(strategy = ?request.strategy, %fault, faults, "the balancing strategy broke its contract");
                    }
                    return local_answer(
                        request.grpc,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        GRPC_INTERNAL,
                        &format!("the balancer's strategy failed: {fault}"),
                    );
                }
            };
            let Some(index) = picked else {
                debug!(method = %request.method, path = request.pq.as_str(), attempt, "strategy found no backend");
                Counters::bump(&counters.no_backend);
                return unavailable(request.grpc);
            };
            if attempt > 0 {
                Counters::bump(&counters.retries);
            }
            attempt += 1;
            let entry = candidates.entries[index].clone();
            let chances = Chances { attempt, sent: attempt - unsent, left: candidates.len() };
            match self.attempt(&mut request, &entry, chances).await {
                AttemptOutcome::Answered(resp) => return resp,
                AttemptOutcome::NotSent => unsent += 1,
                AttemptOutcome::FailedRetriable => failed_after_send = true,
                AttemptOutcome::Failed(failure) => return backend_failed(request.grpc, Some(failure)),
            }
            candidates = Cow::Owned(candidates.without(index));
        }
    }
}

/// `strategy`'s pick among `backends`, held to the contract of
/// [`BalancingStrategy::pick`]: an index out of range, or a panic, is the
/// strategy's fault, never a backend's or the client's.
fn checked_pick(
    strategy: &dyn BalancingStrategy,
    backends: &[crate::Backend],
    context: &RequestContext<'_>,
) -> Result<Option<usize>, String> {
    let picked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| strategy.pick(backends, context)));
    match picked {
        Ok(Some(i)) if i >= backends.len() => Err(format!("it picked backend {i} of {}", backends.len())),
        Ok(picked) => Ok(picked),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            Err(format!("it panicked: {message}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_dropped() {
        for name in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert("x-app", HeaderValue::from_static("kept"));
            h.insert(name, HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
        let mut plain = HeaderMap::new();
        plain.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain["x-app"], "kept");
    }

    #[test]
    fn te_without_trailers_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn x_forwarded_for_is_appended_and_host_moves_aside() {
        let client: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("lb.example:80"));
        forward_headers(&mut h, None, client, ClientProto::Http);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-host"], "lb.example:80");
        assert!(h.get("host").is_none());
        forward_headers(&mut h, None, "10.0.0.8:1".parse().unwrap(), ClientProto::Http);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7, 10.0.0.8");
    }

    #[test]
    fn repeated_x_forwarded_for_lines_are_all_kept_in_order() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static(" 10.0.0.2 "));
        h.append("x-forwarded-for", HeaderValue::from_static(""));
        forward_headers(&mut h, None, "127.0.0.1:9".parse().unwrap(), ClientProto::Http);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
    }

    #[test]
    fn an_http2_authority_becomes_x_forwarded_host() {
        let mut h = HeaderMap::new();
        let authority: Authority = "lb.example:443".parse().unwrap();
        add_forwarding(&mut h, Some(&authority), "127.0.0.1:9".parse().unwrap(), ClientProto::Https);
        assert_eq!(h["x-forwarded-host"], "lb.example:443");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn x_forwarded_proto_says_how_the_client_came_whatever_the_client_claims() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        forward_headers(&mut h, None, "127.0.0.1:9".parse().unwrap(), ClientProto::Http);
        assert_eq!(h.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(), ["http"]);
    }

    #[test]
    fn only_http1_headers_are_scanned_for_hop_by_hop_ones() {
        assert!(may_hold_hop_by_hop(Version::HTTP_10));
        assert!(may_hold_hop_by_hop(Version::HTTP_11));
        assert!(!may_hold_hop_by_hop(Version::HTTP_2));
    }

    #[test]
    fn the_upstream_uri_keeps_the_path_bytes() {
        let pq = PathAndQuery::from_static("/a%2Fb//c?x=%2F&y");
        let authority = http::uri::Authority::from_static("127.0.0.1:9000");
        let uri = upstream_uri(&authority, &pq).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:9000/a%2Fb//c?x=%2F&y");
    }
}
