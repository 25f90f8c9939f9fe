//! Ending a proxied exchange: the [`Completion`] that reports it exactly once, and
//! the response body wrapper that triggers it when the backend's answer ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::Verdict;
use crate::error::BoxError;
use crate::pool::{Entry, Pool};
use crate::replay::RequestBody;
use crate::strategy::{BalancingStrategy, Outcome};
use crate::upstream::Lease;

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
    /// The request's body: when it broke through the client's fault, so did
    /// this one, and the backend is not blamed.
    request: RequestBody,
}

impl<B: Body> TrackedBody<B> {
    /// `first`: what was read ahead, if anything; `verdict`: what the response
    /// headers said.
    pub(crate) fn new(
        first: Option<Option<Frame<Bytes>>>,
        inner: B,
        mut completion: Completion,
        verdict: Verdict,
        request: RequestBody,
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
        Self { first, inner, completion, verdict, request }
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
                if frame.is_data() && this.first.is_none() && this.inner.is_end_stream() {
                    // The last data frame (HTTP/2's END_STREAM on it): the
                    // client's side need not poll again to end the exchange.
                    this.completion.complete(Some(this.verdict));
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.verdict = this.verdict.worst(Verdict::of(None, trailers));
                    // Trailers are the last frame: the exchange is over now, not
                    // when the client's side polls once more (which may come after
                    // the client has its answer and asks for figures).
                    this.completion.complete(Some(this.verdict));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                let verdict = (!this.request.client_fault()).then_some(Verdict::Unavailable);
                this.completion.complete(verdict);
            }
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
