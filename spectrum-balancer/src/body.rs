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

use crate::backend::Backend;
use crate::strategy::{BalancingStrategy, Outcome};

/// The body type of requests sent upstream and of every response.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// gRPC status code `DEADLINE_EXCEEDED`.
pub(crate) const GRPC_DEADLINE_EXCEEDED: u32 = 4;
/// gRPC status code `UNAVAILABLE`.
pub(crate) const GRPC_UNAVAILABLE: u32 = 14;

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
    headers.get("grpc-status").is_some_and(|v| v.as_bytes() == GRPC_UNAVAILABLE.to_string().as_bytes())
}

/// Ends one proxied exchange exactly once: the backend's in-flight count goes down
/// and the strategy hears the outcome.
#[derive(Debug)]
pub(crate) struct Completion {
    backend: Backend,
    strategy: Arc<dyn BalancingStrategy>,
    latency: Duration,
    done: bool,
}

impl Completion {
    /// `backend.load.start()` must have been called for this exchange.
    pub(crate) fn new(backend: Backend, strategy: Arc<dyn BalancingStrategy>) -> Self {
        Self { backend, strategy, latency: Duration::ZERO, done: false }
    }

    /// The time the backend took to answer, reported with the outcome.
    pub(crate) fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    pub(crate) fn complete(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.backend.load.finish();
        if matches!(outcome, Outcome::Failure | Outcome::ConnectFailure) {
            self.backend.load.record_failure();
        }
        self.strategy.on_complete(&self.backend, outcome, self.latency);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.complete(Outcome::Cancelled);
    }
}

/// A backend's response body, passed through frame by frame (trailers included),
/// that completes the exchange when it ends, fails, or is dropped by the client.
#[derive(Debug)]
pub(crate) struct TrackedBody<B> {
    inner: B,
    completion: Completion,
    failed_early: bool,
}

impl<B> TrackedBody<B> {
    /// `failed_early`: the response headers already showed a backend failure.
    pub(crate) fn new(inner: B, completion: Completion, failed_early: bool) -> Self {
        Self { inner, completion, failed_early }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.failed_early |= grpc_failure(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => this.completion.complete(Outcome::Failure),
            Poll::Ready(None) => {
                let outcome = if this.failed_early { Outcome::Failure } else { Outcome::Success };
                this.completion.complete(outcome);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
    fn only_unavailable_counts_as_a_backend_failure() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert!(grpc_failure(&h));
        h.insert("grpc-status", HeaderValue::from_static("5"));
        assert!(!grpc_failure(&h));
    }
}
