//! Body types: the boxed body the proxy speaks, canned answers, and the response
//! body wrapper that reports when a proxied exchange ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::pool::{Entry, Pool};
use crate::strategy::{BalancingStrategy, Outcome};
use crate::upstream::Lease;

/// The error type of [`ProxyBody`]: whatever broke a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests sent upstream and of every response.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// gRPC status code `DEADLINE_EXCEEDED`.
pub(crate) const GRPC_DEADLINE_EXCEEDED: u32 = 4;
/// gRPC status code `UNAVAILABLE`.
pub(crate) const GRPC_UNAVAILABLE: u32 = 14;
/// gRPC status code `RESOURCE_EXHAUSTED`.
pub(crate) const GRPC_RESOURCE_EXHAUSTED: u32 = 8;

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(text: &'static str) -> ProxyBody {
    Full::new(Bytes::from_static(text.as_bytes())).map_err(|never| match never {}).boxed()
}

/// An answer made by the balancer itself: a trailers-only gRPC status for gRPC
/// clients, otherwise `http_status` with a short text body.
pub(crate) fn local_answer(
    grpc: bool,
    http_status: StatusCode,
    grpc_status: u32,
    message: &'static str,
) -> Response<ProxyBody> {
    let mut resp = if grpc {
        let mut resp = Response::new(empty());
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(grpc_status));
        h.insert("grpc-message", HeaderValue::from_static(message));
        resp
    } else {
        let mut resp = Response::new(full(message));
        *resp.status_mut() = http_status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    };
    resp.headers_mut().insert("x-spectrum-balancer", HeaderValue::from_static("local"));
    resp
}

/// Whether a gRPC status (in headers of a trailers-only answer, or in trailers)
/// says the backend failed rather than the call.
pub(crate) fn grpc_failure(headers: &HeaderMap) -> bool {
    // Compared as bytes: this runs on every response, and formatting the code
    // would allocate each time.
    const UNAVAILABLE: &[u8] = b"14";
    const _: () = assert!(GRPC_UNAVAILABLE == 14);
    headers.get("grpc-status").is_some_and(|v| v.as_bytes() == UNAVAILABLE)
}

/// How a response's status says the exchange went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing wrong so far.
    Fine,
    /// A server error that says nothing about the backend's health (HTTP 500, …).
    Failed,
    /// The backend could not serve: gRPC `UNAVAILABLE`, HTTP 502, 503 or 504, or the
    /// exchange broke.
    Unavailable,
    /// The connection closed before the request was sent.
    NotSent,
}

impl Verdict {
    /// The verdict of response headers (or trailers) with this HTTP status.
    pub(crate) fn of(status: Option<StatusCode>, headers: &HeaderMap) -> Verdict {
        if grpc_failure(headers)
            || status.is_some_and(|s| {
                matches!(
                    s,
                    StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                )
            })
        {
            Verdict::Unavailable
        } else if status.is_some_and(|s| s.is_server_error()) {
            Verdict::Failed
        } else {
            Verdict::Fine
        }
    }

    fn worst(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Unavailable, _) | (_, Verdict::Unavailable) => Verdict::Unavailable,
            (Verdict::Failed, _) | (_, Verdict::Failed) => Verdict::Failed,
            (Verdict::NotSent, _) | (_, Verdict::NotSent) => Verdict::NotSent,
            _ => Verdict::Fine,
        }
    }
}

/// Ends one proxied exchange exactly once: the backend's in-flight count goes down,
/// the strategy hears the outcome, and the pool counts failures towards passive
/// ejection.
#[derive(Debug)]
pub(crate) struct Completion {
    entry: Arc<Entry>,
    pool: Arc<Pool>,
    strategy: Arc<dyn BalancingStrategy>,
    latency: Duration,
    /// The exchange's claim on its upstream connection, released on completion.
    lease: Option<Lease>,
    done: bool,
}

impl Completion {
    /// Starts an exchange on the connection `lease` claims: the backend's `requests`
    /// and `in_flight` go up.
    pub(crate) fn start(
        entry: Arc<Entry>,
        pool: Arc<Pool>,
        strategy: Arc<dyn BalancingStrategy>,
        lease: Lease,
    ) -> Self {
        entry.backend.load.start();
        Self { entry, pool, strategy, latency: Duration::ZERO, lease: Some(lease), done: false }
    }

    /// The time the backend took to answer, reported with the outcome.
    pub(crate) fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    /// Ends the exchange with `verdict` (the client cancelled if `None`).
    pub(crate) fn complete(&mut self, verdict: Option<Verdict>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        drop(self.lease.take());
        let backend = &self.entry.backend;
        backend.load.finish();
        let outcome = match verdict {
            None => Outcome::Cancelled,
            Some(Verdict::Fine) => {
                self.entry.health.exchange_succeeded();
                Outcome::Success
            }
            Some(Verdict::Failed) => Outcome::Failure,
            Some(Verdict::Unavailable) => {
                self.pool.exchange_failed(&self.entry);
                Outcome::Failure
            }
            Some(Verdict::NotSent) => Outcome::ConnectFailure,
        };
        if matches!(outcome, Outcome::Failure | Outcome::ConnectFailure) {
            backend.load.record_failure();
        }
        self.strategy.on_complete(backend, outcome, self.latency);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.complete(None);
    }
}

/// A backend's response body, passed through frame by frame (trailers included),
/// that completes the exchange when it ends, fails, or is dropped by the client.
/// What the proxy already read of the body (to decide about a retry) comes first.
#[derive(Debug)]
pub(crate) struct TrackedBody<B> {
    /// `Some(Some(frame))`: a frame read ahead; `Some(None)`: the body already ended.
    first: Option<Option<Frame<Bytes>>>,
    inner: B,
    completion: Completion,
    verdict: Verdict,
}

impl<B: Body> TrackedBody<B> {
    /// `first`: what was read ahead, if anything; `verdict`: what the response
    /// headers said.
    pub(crate) fn new(
        first: Option<Option<Frame<Bytes>>>,
        inner: B,
        mut completion: Completion,
        verdict: Verdict,
    ) -> Self {
        let ended = match &first {
            None => inner.is_end_stream(),
            Some(None) => true,
            Some(Some(_)) => false,
        };
        if ended {
            // Nobody may poll a body that is already over (a trailers-only answer).
            completion.complete(Some(verdict));
        }
        Self { first, inner, completion, verdict }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = match this.first.take() {
            Some(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(None) => {
                this.first = Some(None);
                Poll::Ready(None)
            }
            None => Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.verdict = this.verdict.worst(Verdict::of(None, trailers));
                    // Trailers are the last frame: the exchange is over now, not
                    // when the client's side polls once more (which may come after
                    // the client has its answer and asks for figures).
                    this.completion.complete(Some(this.verdict));
                }
            }
            Poll::Ready(Some(Err(_))) => this.completion.complete(Some(Verdict::Unavailable)),
            Poll::Ready(None) => this.completion.complete(Some(this.verdict)),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.first {
            None => self.inner.is_end_stream(),
            Some(None) => true,
            Some(Some(_)) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            None => self.inner.size_hint(),
            Some(None) => SizeHint::with_exact(0),
            Some(Some(_)) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_clients_get_a_trailers_only_unavailable_status() {
        let resp =
            local_answer(true, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "no backend available");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert!(resp.body().is_end_stream());
    }

    #[test]
    fn http_clients_get_the_status_and_a_text_body() {
        let resp =
            local_answer(false, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "no backend available");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().get("grpc-status").is_none());
    }

    #[test]
    fn verdicts_tell_unavailable_backends_from_failed_calls() {
        let none = HeaderMap::new();
        assert_eq!(Verdict::of(Some(StatusCode::OK), &none), Verdict::Fine);
        assert_eq!(Verdict::of(Some(StatusCode::INTERNAL_SERVER_ERROR), &none), Verdict::Failed);
        assert_eq!(Verdict::of(Some(StatusCode::SERVICE_UNAVAILABLE), &none), Verdict::Unavailable);
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(Verdict::of(Some(StatusCode::OK), &grpc), Verdict::Unavailable);
        assert_eq!(Verdict::Failed.worst(Verdict::Unavailable), Verdict::Unavailable);
    }

    #[test]
    fn only_unavailable_counts_as_a_backend_failure() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert!(grpc_failure(&h));
        h.insert("grpc-status", HeaderValue::from_static("5"));
        assert!(!grpc_failure(&h));
    }
}
