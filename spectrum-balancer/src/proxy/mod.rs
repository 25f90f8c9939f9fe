//! Forwarding one request: header fix-ups, picking a backend, failover on
//! connection failure, and the balancer's own answers.

use std::borrow::Cow;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{debug, trace, warn};

use crate::body::{
    GRPC_DEADLINE_EXCEEDED, GRPC_RESOURCE_EXHAUSTED, GRPC_UNAVAILABLE, ProxyBody, Verdict, local_answer,
};
use crate::pool::{Candidates, Counters, Pool};
use crate::replay::{AttemptBody, RequestBody};
use crate::stats::proto::balancer_server::BalancerServer;
use crate::stats::service::{self, BalancerStatsService};
use crate::strategy::{BalancingStrategy, Outcome, RequestContext};

mod completion;

use completion::{Completion, TrackedBody};

/// gRPC status code `INTERNAL`.
const GRPC_INTERNAL: u32 = 13;
/// gRPC status code `UNIMPLEMENTED`.
const GRPC_UNIMPLEMENTED: u32 = 12;

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1, plus `proxy-connection`).
const HOP_BY_HOP: [&str; 5] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/// The header that lists the clients a request came through.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The request handler shared by every client connection.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub(crate) pool: Arc<Pool>,
    pub(crate) strategy: Arc<dyn BalancingStrategy>,
    /// The balancer's own service, answered locally, when
    /// [`BalancerConfig::serve_stats`](crate::BalancerConfig::serve_stats) is on.
    pub(crate) stats: Option<BalancerServer<BalancerStatsService>>,
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

fn backend_failed(grpc: bool) -> Response<ProxyBody> {
    local_answer(grpc, StatusCode::BAD_GATEWAY, GRPC_UNAVAILABLE, "backend failed")
}

fn too_large(grpc: bool) -> Response<ProxyBody> {
    local_answer(
        grpc,
        StatusCode::PAYLOAD_TOO_LARGE,
        GRPC_RESOURCE_EXHAUSTED,
        "request body larger than the balancer accepts",
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
/// client's `host` moved to `x-forwarded-host` (the URI authority names the backend),
/// and the client address appended to `x-forwarded-for`.
pub(crate) fn forward_headers(headers: &mut HeaderMap, client: SocketAddr) {
    strip_hop_by_hop(headers);
    add_forwarding(headers, client);
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
fn add_forwarding(headers: &mut HeaderMap, client: SocketAddr) {
    if let Some(host) = headers.remove(header::HOST) {
        headers.entry("x-forwarded-host").or_insert(host);
    }
    // Built in one buffer: this runs on every request.
    let mut value = Vec::with_capacity(64);
    if let Some(prior) = headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        if !prior.trim_ascii().is_empty() {
            value.extend_from_slice(prior);
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

impl Proxy {
    /// Whether a request that failed after being sent may go to another backend now.
    /// Takes a retry from the budget when it says yes.
    fn may_retry(&self, template: Option<&Template>, body: &RequestBody, attempt: u32, left: usize) -> bool {
        if template.is_none() || attempt >= self.pool.config().max_attempts || left <= 1 || !body.can_replay()
        {
            return false;
        }
        if self.pool.budget.try_withdraw() {
            true
        } else {
            Counters::bump(&self.pool.counters.budget_exhausted);
            debug!("retry budget spent; not retrying");
            false
        }
    }

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
    pub(crate) async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        // The balancer's own service: one prefix compare on the hot path.
        if let Some(server) = &self.stats {
            if req.uri().path().as_bytes().starts_with(service::PATH_PREFIX) {
                trace!(path = req.uri().path(), %client, "balancer's own call");
                return service::answer(server, req).await;
            }
        }
        let grpc = is_grpc(req.headers());
        let Some(pq) = req.uri().path_and_query().cloned() else {
            return local_answer(grpc, StatusCode::BAD_REQUEST, GRPC_INTERNAL, "request has no path");
        };
        if req.method() == Method::CONNECT {
            return local_answer(
                grpc,
                StatusCode::METHOD_NOT_ALLOWED,
                GRPC_UNIMPLEMENTED,
                "CONNECT is not supported",
            );
        }
        let config = self.pool.config();
        let counters = &self.pool.counters;
        Counters::bump(&counters.requests);
        self.pool.budget.deposit();
        let client_version = req.version();
        let method = req.method().clone();
        let affinity = config.affinity_header.as_ref().and_then(|name| req.headers().get(name)).cloned();
        trace!(%method, path = pq.as_str(), %client, grpc, "request");

        let (mut parts, body) = req.into_parts();
        if config.max_request_body.is_some_and(|limit| body.size_hint().lower() > limit) {
            Counters::bump(&counters.too_large);
            return too_large(grpc);
        }
        let retriable = is_safe(&method) || config.idempotent.iter().any(|m| m.matches(pq.path()));
        if may_hold_hop_by_hop(client_version) {
            forward_headers(&mut parts.headers, client);
        } else {
            add_forwarding(&mut parts.headers, client);
        }
        parts.version = Version::HTTP_2;
        let body =
            RequestBody::new(body, config.max_request_body, if retriable { config.retry_buffer } else { 0 });
        let template = retriable.then(|| Template { method: method.clone(), headers: parts.headers.clone() });
        let mut pending = Some(Request::from_parts(parts, body.attempt()));
        let deadline = config.request_timeout.map(|limit| Instant::now() + limit);

        let snapshot = self.pool.snapshot();
        let mut candidates: Cow<'_, Candidates> =
            Cow::Borrowed(if snapshot.eligible.is_empty() { &snapshot.fallback } else { &snapshot.eligible });
        let max_attempts = config.max_attempts;
        let mut attempt = 0;
        // Attempts that never sent the request (connect failure, a pooled connection
        // that had closed) do not count against `max_attempts`: each drops its
        // backend from the candidates, so they are bounded by the cluster's size.
        let mut unsent = 0;
        let mut failed_after_send = false;
        loop {
            if attempt - unsent >= max_attempts || candidates.is_empty() {
                debug!(%method, path = pq.as_str(), attempt, "no backend available");
                Counters::bump(&counters.no_backend);
                return if failed_after_send { backend_failed(grpc) } else { unavailable(grpc) };
            }
            let ctx = RequestContext {
                method: &method,
                path: pq.path(),
                affinity_key: affinity.as_ref().map(HeaderValue::as_bytes),
                attempt,
            };
            let Some(index) =
                self.strategy.pick(&candidates.backends, &ctx).filter(|&i| i < candidates.len())
            else {
                debug!(%method, path = pq.as_str(), attempt, "strategy found no backend");
                Counters::bump(&counters.no_backend);
                return unavailable(grpc);
            };
            if attempt > 0 {
                Counters::bump(&counters.retries);
            }
            attempt += 1;
            let entry = candidates.entries[index].clone();
            let backend = &entry.backend;

            let (mut sender, lease) = match entry.upstream.sender().await {
                Ok(found) => found,
                Err(error) => {
                    warn!(node = %backend.id, backend = %backend.addr, %error, attempt, "cannot reach backend; trying another");
                    backend.load.record_failure();
                    self.strategy.on_complete(backend, Outcome::ConnectFailure, Duration::ZERO);
                    self.pool.eject(&entry);
                    candidates = Cow::Owned(candidates.without(index));
                    unsent += 1;
                    continue;
                }
            };
            let mut req = match (pending.take(), &template) {
                (Some(req), _) => req,
                (None, Some(template)) => template.request(body.attempt()),
                (None, None) => return backend_failed(grpc),
            };
            if let Some(uri) = upstream_uri(entry.upstream.authority(), &pq) {
                *req.uri_mut() = uri;
            } else {
                return local_answer(
                    grpc,
                    StatusCode::BAD_REQUEST,
                    GRPC_INTERNAL,
                    "request path cannot be forwarded",
                );
            }
            let slot = lease.slot();
            let mut completion =
                Completion::start(entry.clone(), self.pool.clone(), self.strategy.clone(), lease);
            let started = Instant::now();
            let Some(result) = until(deadline, sender.try_send_request(req)).await else {
                warn!(node = %backend.id, "backend did not answer in time");
                completion.set_latency(started.elapsed());
                completion.complete(Some(Verdict::Failed));
                return timed_out(grpc);
            };
            let resp = match result {
                Ok(resp) => resp,
                Err(mut error) => {
                    completion.set_latency(started.elapsed());
                    if let Some(unsent_request) = error.take_message() {
                        debug!(node = %backend.id, error = %error.error(), "connection closed before the request was sent; trying another");
                        entry.upstream.invalidate(slot);
                        completion.complete(Some(Verdict::NotSent));
                        pending = Some(unsent_request);
                        candidates = Cow::Owned(candidates.without(index));
                        unsent += 1;
                        continue;
                    }
                    completion.complete(Some(Verdict::Unavailable));
                    if body.too_large() {
                        Counters::bump(&counters.too_large);
                        return too_large(grpc);
                    }
                    if sender.is_closed() {
                        entry.upstream.invalidate(slot);
                    }
                    failed_after_send = true;
                    if self.may_retry(template.as_ref(), &body, attempt - unsent, candidates.len()) {
                        warn!(node = %backend.id, error = %error.error(), "backend failed a retriable request; sending it to another");
                        backend.load.record_retry();
                        candidates = Cow::Owned(candidates.without(index));
                        continue;
                    }
                    warn!(node = %backend.id, error = %error.error(), "backend failed the request");
                    return backend_failed(grpc);
                }
            };
            let latency = started.elapsed();
            backend.load.record_latency(latency);
            completion.set_latency(latency);
            let verdict = Verdict::of(Some(resp.status()), resp.headers());
            trace!(node = %backend.id, status = resp.status().as_u16(), latency_us = latency.as_micros() as u64, "response");
            if verdict == Verdict::Unavailable
                && self.may_retry(template.as_ref(), &body, attempt - unsent, candidates.len())
            {
                debug!(node = %backend.id, status = resp.status().as_u16(), "backend unavailable; sending the request to another");
                completion.complete(Some(verdict));
                failed_after_send = true;
                backend.load.record_retry();
                candidates = Cow::Owned(candidates.without(index));
                continue;
            }
            let (mut parts, mut upstream) = resp.into_parts();
            let mut first = None;
            if template.is_some() && verdict != Verdict::Unavailable && !upstream.is_end_stream() {
                let Some(frame) = until(deadline, upstream.frame()).await else {
                    warn!(node = %backend.id, "backend did not answer in time");
                    completion.complete(Some(Verdict::Failed));
                    return timed_out(grpc);
                };
                let retry = match &frame {
                    Some(Err(_)) => Some(Verdict::Unavailable),
                    Some(Ok(f)) => {
                        f.trailers_ref().map(|t| Verdict::of(None, t)).filter(|v| *v == Verdict::Unavailable)
                    }
                    None => None,
                };
                if let Some(verdict) = retry {
                    completion.complete(Some(verdict));
                    failed_after_send = true;
                    if self.may_retry(template.as_ref(), &body, attempt - unsent, candidates.len()) {
                        debug!(node = %backend.id, "backend failed before its first message; sending the request to another");
                        backend.load.record_retry();
                        candidates = Cow::Owned(candidates.without(index));
                        continue;
                    }
                    if let Some(Err(error)) = &frame {
                        warn!(node = %backend.id, %error, "backend failed the request");
                        return backend_failed(grpc);
                    }
                }
                first = Some(frame.and_then(Result::ok));
            }
            if may_hold_hop_by_hop(parts.version) {
                strip_hop_by_hop(&mut parts.headers);
            }
            parts.version = client_version;
            return Response::from_parts(
                parts,
                TrackedBody::new(first, upstream, completion, verdict).boxed(),
            );
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
        forward_headers(&mut h, client);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-host"], "lb.example:80");
        assert!(h.get("host").is_none());
        forward_headers(&mut h, "10.0.0.8:1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.7, 10.0.0.8");
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
