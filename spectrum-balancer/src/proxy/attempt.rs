//! One attempt: a request sent once to one backend, and the decision it ends with.
//!
//! The decisions are named, as pingora's proxy names `fail_to_connect` and
//! `error_while_proxy`: an attempt whose request never reached the backend, or that
//! the backend refused unprocessed (HTTP/2 `REFUSED_STREAM`, or a stream its
//! `GOAWAY` left out), tries another; one that failed after the request was sent is retried or not ([`decide`]);
//! anything else is the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use tracing::{debug, trace, warn};

use super::completion::{Completion, TrackedBody};
use super::{Prepared, Proxy, may_hold_hop_by_hop, strip_hop_by_hop, timed_out, too_large, until};
use crate::body::{ProxyBody, Verdict};
use crate::h2_body::RecvBody;
use crate::h2_client::{SendError, Sender};
use crate::pool::{Counters, Entry};
use crate::refusal;
use crate::strategy::Outcome;

/// How one attempt ended, as the request loop acts on it.
#[derive(Debug)]
pub(super) enum AttemptOutcome {
    /// The answer for the client: the backend's response, or the balancer's own
    /// (no answer in time, body over the limit, a path that cannot be forwarded).
    Answered(Response<ProxyBody>),
    /// The request never reached the backend, or the backend refused it as not
    /// ready before doing anything: try another. The attempt does not count against
    /// `max_attempts`.
    NotSent,
    /// The backend failed the request after it was sent, and a retry was granted:
    /// send it to another.
    FailedRetriable,
    /// The backend failed the request, and it may not be sent again: answer
    /// "backend failed", saying what is known of its outcome.
    Failed(Failure),
}

/// How a request the balancer may not send again failed, which says what is
/// known of its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The backend refused it unprocessed (`REFUSED_STREAM`, `GOAWAY` before
    /// it): it did not take effect.
    Refused,
    /// The exchange broke after the request was sent: whether it took effect
    /// is unknown.
    Broke,
}

/// Where a request stands when an attempt starts: what a retry decision needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chances {
    /// This attempt's number, from 1 (for logs).
    pub(super) attempt: u32,
    /// Attempts that sent the request, this one included.
    pub(super) sent: u32,
    /// Backends still to choose from, this one included.
    pub(super) left: usize,
}

/// What an exchange whose request was sent showed, at a point where the proxy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exchange {
    /// The exchange broke (connection reset, `GOAWAY`, a broken body stream), with or
    /// without the client's body having gone over the limit.
    Broke {
        /// Whether the client's body went over [`max_request_body`](crate::BalancerConfig::max_request_body).
        body_too_large: bool,
    },
    /// The backend answered (headers, or trailers read ahead) with this verdict.
    Answered(Verdict),
}

/// What follows an exchange whose request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Send the request again, to another backend.
    Retry,
    /// Pass the backend's answer on to the client.
    Forward,
    /// Answer "backend failed" (HTTP 502, gRPC `UNAVAILABLE`).
    BackendFailed,
    /// Answer "request body too large" (HTTP 413, gRPC `RESOURCE_EXHAUSTED`).
    TooLarge,
}

/// The decision after `exchange`. `may_retry` is asked only when a retry could
/// follow (a broken exchange, an unavailable backend), since saying yes takes a
/// retry from the budget.
pub(super) fn decide(exchange: Exchange, may_retry: impl FnOnce() -> bool) -> Decision {
    let (retry_possible, otherwise) = match exchange {
        Exchange::Broke { body_too_large: true } => return Decision::TooLarge,
        Exchange::Broke { body_too_large: false } => (true, Decision::BackendFailed),
        Exchange::Answered(verdict) => (verdict == Verdict::Unavailable, Decision::Forward),
    };
    if retry_possible && may_retry() { Decision::Retry } else { otherwise }
}

/// What the first body frame, read ahead for a retriable request, says about the
/// exchange when it is a failure: a broken stream, or trailers saying the backend is
/// unavailable. `None` when the answer may be passed on.
pub(super) fn read_ahead_failure<E>(frame: &Option<Result<Frame<Bytes>, E>>) -> Option<Exchange> {
    match frame {
        Some(Err(_)) => Some(Exchange::Broke { body_too_large: false }),
        Some(Ok(frame)) => frame
            .trailers_ref()
            .map(|trailers| Verdict::of(None, trailers))
            .filter(|verdict| *verdict == Verdict::Unavailable)
            .map(Exchange::Answered),
        None => None,
    }
}

/// An exchange under way: where it went and how it will be reported.
struct Underway<'a> {
    entry: &'a Arc<Entry>,
    /// Which of the backend's connections carries it.
    slot: usize,
    completion: Completion,
    started: Instant,
    chances: Chances,
}

/// Whether a request a node refused as not ready ([`refusal`]) may go to another
/// node: one is left, and the whole body can be sent again. Nothing ran, so the
/// request need not be idempotent, and the retry budget is not asked.
fn may_resend_refused(request: &Prepared, chances: Chances) -> bool {
    chances.left > 1 && request.body.can_replay()
}

impl Proxy {
    /// Whether a request that failed after being sent may go to another backend now:
    /// it is retriable, its body can be sent again, it has attempts and backends
    /// left, and the budget grants a retry (which this takes).
    fn may_retry(&self, request: &Prepared, chances: Chances) -> bool {
        if !request.retriable
            || chances.sent >= self.pool.config().max_attempts
            || chances.left <= 1
            || !request.body.can_replay()
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

    /// Sends `request` once to `entry`'s backend, and says how that ended.
    pub(super) async fn attempt(
        &self,
        request: &mut Prepared,
        entry: &Arc<Entry>,
        chances: Chances,
    ) -> AttemptOutcome {
        let backend = &entry.backend;
        let (mut sender, lease) = match entry.upstream(self.worker).sender().await {
            Ok(found) => found,
            Err(error) => {
                warn!(node = %backend.id, backend = %backend.addr, %error, attempt = chances.attempt, "cannot reach backend; trying another");
                backend.load.record_failure();
                request.strategy.on_complete(backend, Outcome::ConnectFailure, Duration::ZERO);
                self.pool.eject(entry);
                return AttemptOutcome::NotSent;
            }
        };
        let outgoing = match request.outgoing(entry.upstream(self.worker).authority()) {
            Ok(outgoing) => outgoing,
            Err(answer) => return AttemptOutcome::Answered(*answer),
        };
        // Time may have run out on earlier attempts or on connecting: the request
        // is not sent at all then (a write that reached a node after its client
        // was told "timed out" would have an outcome nobody knows).
        if request.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            debug!(node = %backend.id, attempt = chances.attempt, "no time left to send the request");
            return AttemptOutcome::Answered(timed_out(request.grpc));
        }
        let slot = lease.slot();
        let completion = Completion::start(entry.clone(), self.pool.clone(), request.strategy.clone(), lease);
        let mut underway = Underway { entry, slot, completion, started: Instant::now(), chances };
        match until(request.deadline, sender.send(outgoing)).await {
            None => {
                warn!(node = %backend.id, "backend did not answer in time");
                underway.completion.set_latency(underway.started.elapsed());
                underway.completion.complete(Some(Verdict::Failed));
                AttemptOutcome::Answered(timed_out(request.grpc))
            }
            Some(Ok(resp)) => self.answered(request, underway, resp).await,
            Some(Err(error)) => self.broke(request, underway, error, &mut sender),
        }
    }

    /// The exchange failed before any response: the connection closed before the
    /// request went out on `sender` (it comes back, for the next backend), the
    /// backend refused its stream unprocessed (it may go to another whatever its
    /// method, when its body can be sent again), or it broke after being sent.
    fn broke(
        &self,
        request: &mut Prepared,
        mut underway: Underway<'_>,
        error: SendError,
        sender: &mut Sender,
    ) -> AttemptOutcome {
        let (entry, backend) = (underway.entry, &underway.entry.backend);
        underway.completion.set_latency(underway.started.elapsed());
        if let SendError::NotSent { request: unsent, error } = error {
            debug!(node = %backend.id, %error, "connection closed before the request was sent; trying another");
            entry.upstream(self.worker).invalidate(underway.slot, sender);
            underway.completion.complete(Some(Verdict::NotSent));
            // When it was taken apart, the next attempt is made from the template.
            request.pending = unsent.map(|r| *r);
            return AttemptOutcome::NotSent;
        }
        if let SendError::Refused(error) = &error {
            // Nothing of this request ran. After a GOAWAY (the backend shutting
            // down) the connection takes no new streams; after a refused stream
            // (the backend shedding load) it may.
            if sender.is_closed() {
                entry.upstream(self.worker).invalidate(underway.slot, sender);
            }
            underway.completion.complete(Some(Verdict::Unavailable));
            if may_resend_refused(request, underway.chances) {
                debug!(node = %backend.id, %error, "backend refused the stream unprocessed; sending the request to another");
                backend.load.record_retry();
                return AttemptOutcome::NotSent;
            }
            warn!(node = %backend.id, %error, "backend refused the stream unprocessed, and no other may take the request");
            return AttemptOutcome::Failed(Failure::Refused);
        }
        let body_too_large = request.body.too_large();
        // A body the client broke (too large, or its stream reset) breaks the
        // exchange with no fault of the backend's: not counted against it, so a
        // client cannot get healthy nodes ejected.
        let verdict = (!request.body.client_fault()).then_some(Verdict::Unavailable);
        underway.completion.complete(verdict);
        if !body_too_large && sender.is_closed() {
            entry.upstream(self.worker).invalidate(underway.slot, sender);
        }
        match decide(Exchange::Broke { body_too_large }, || self.may_retry(request, underway.chances)) {
            Decision::TooLarge => {
                Counters::bump(&self.pool.counters.too_large);
                AttemptOutcome::Answered(too_large(request.grpc))
            }
            Decision::Retry => {
                warn!(node = %backend.id, error = %error.error(), "backend failed a retriable request; sending it to another");
                backend.load.record_retry();
                AttemptOutcome::FailedRetriable
            }
            Decision::BackendFailed | Decision::Forward => {
                warn!(node = %backend.id, error = %error.error(), "backend failed the request");
                AttemptOutcome::Failed(Failure::Broke)
            }
        }
    }

    /// The backend answered with `resp`: retry when it says it is unavailable and a
    /// retry is granted, otherwise pass it on (for a retriable request, once its
    /// first body frame has shown the backend did not fail right after its headers).
    async fn answered(
        &self,
        request: &Prepared,
        mut underway: Underway<'_>,
        resp: Response<RecvBody>,
    ) -> AttemptOutcome {
        let backend = &underway.entry.backend;
        let latency = underway.started.elapsed();
        backend.load.record_latency(latency);
        underway.completion.set_latency(latency);
        let verdict = Verdict::of(Some(resp.status()), resp.headers());
        trace!(node = %backend.id, status = resp.status().as_u16(), latency_us = latency.as_micros() as u64, "response");
        if refusal::is_not_ready(resp.status(), resp.headers())
            && may_resend_refused(request, underway.chances)
        {
            debug!(node = %backend.id, status = resp.status().as_u16(), "node not ready; sending the request to another");
            underway.completion.complete(Some(Verdict::Unavailable));
            Counters::bump(&self.pool.counters.not_ready_retries);
            backend.load.record_retry();
            return AttemptOutcome::NotSent;
        }
        if decide(Exchange::Answered(verdict), || self.may_retry(request, underway.chances))
            == Decision::Retry
        {
            debug!(node = %backend.id, status = resp.status().as_u16(), "backend unavailable; sending the request to another");
            underway.completion.complete(Some(verdict));
            backend.load.record_retry();
            return AttemptOutcome::FailedRetriable;
        }
        let (mut parts, mut upstream) = resp.into_parts();
        let mut first = None;
        if request.retriable && verdict != Verdict::Unavailable && !upstream.is_end_stream() {
            match self.read_ahead(request, &mut underway, &mut upstream).await {
                Ok(frame) => first = Some(frame),
                Err(outcome) => return outcome,
            }
        }
        if may_hold_hop_by_hop(parts.version) {
            strip_hop_by_hop(&mut parts.headers);
        }
        parts.version = request.client_version;
        let body = TrackedBody::new(first, upstream, underway.completion, verdict, request.body.clone());
        AttemptOutcome::Answered(Response::from_parts(parts, body.boxed()))
    }

    /// Reads the first body frame of a retriable request's response (or its end), so
    /// that a backend failing right after its headers can still be retried. `Ok` is
    /// the frame to pass on first; `Err` how the attempt ended instead.
    async fn read_ahead(
        &self,
        request: &Prepared,
        underway: &mut Underway<'_>,
        upstream: &mut RecvBody,
    ) -> Result<Option<Frame<Bytes>>, AttemptOutcome> {
        let backend = &underway.entry.backend;
        let Some(frame) = until(request.deadline, upstream.frame()).await else {
            warn!(node = %backend.id, "backend did not answer in time");
            underway.completion.complete(Some(Verdict::Failed));
            return Err(AttemptOutcome::Answered(timed_out(request.grpc)));
        };
        if let Some(exchange) = read_ahead_failure(&frame) {
            underway.completion.complete(Some(Verdict::Unavailable));
            match decide(exchange, || self.may_retry(request, underway.chances)) {
                Decision::Retry => {
                    debug!(node = %backend.id, "backend failed before its first message; sending the request to another");
                    backend.load.record_retry();
                    return Err(AttemptOutcome::FailedRetriable);
                }
                Decision::BackendFailed | Decision::TooLarge => {
                    if let Some(Err(error)) = &frame {
                        warn!(node = %backend.id, %error, "backend failed the request");
                    }
                    return Err(AttemptOutcome::Failed(Failure::Broke));
                }
                Decision::Forward => {}
            }
        }
        Ok(frame.and_then(Result::ok))
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    const SENT_OK: Exchange = Exchange::Answered(Verdict::Fine);

    fn never_asked() -> bool {
        panic!("the retry budget must not be asked")
    }

    #[test]
    fn a_broken_exchange_is_retried_when_a_retry_is_granted_and_answered_backend_failed_otherwise() {
        let broke = Exchange::Broke { body_too_large: false };
        assert_eq!(decide(broke, || true), Decision::Retry);
        assert_eq!(decide(broke, || false), Decision::BackendFailed);
    }

    #[test]
    fn a_body_over_the_limit_is_answered_too_large_without_asking_for_a_retry() {
        assert_eq!(decide(Exchange::Broke { body_too_large: true }, never_asked), Decision::TooLarge);
    }

    #[test]
    fn an_unavailable_answer_is_retried_when_granted_and_passed_on_otherwise() {
        let unavailable = Exchange::Answered(Verdict::Unavailable);
        assert_eq!(decide(unavailable, || true), Decision::Retry);
        assert_eq!(decide(unavailable, || false), Decision::Forward);
    }

    #[test]
    fn other_answers_are_passed_on_without_asking_for_a_retry() {
        assert_eq!(decide(SENT_OK, never_asked), Decision::Forward);
        assert_eq!(decide(Exchange::Answered(Verdict::Failed), never_asked), Decision::Forward);
    }

    #[test]
    fn a_broken_stream_or_unavailable_trailers_read_ahead_are_failures() {
        let broken: Option<Result<Frame<Bytes>, &str>> = Some(Err("reset"));
        assert_eq!(read_ahead_failure(&broken), Some(Exchange::Broke { body_too_large: false }));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("14"));
        let unavailable: Option<Result<_, &str>> = Some(Ok(Frame::trailers(trailers)));
        assert_eq!(read_ahead_failure(&unavailable), Some(Exchange::Answered(Verdict::Unavailable)));
    }

    #[test]
    fn data_other_trailers_and_the_end_read_ahead_are_no_failure() {
        let data: Option<Result<_, &str>> = Some(Ok(Frame::data(Bytes::from_static(b"msg"))));
        assert_eq!(read_ahead_failure(&data), None);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        let not_found: Option<Result<_, &str>> = Some(Ok(Frame::trailers(trailers)));
        assert_eq!(read_ahead_failure(&not_found), None);
        assert_eq!(read_ahead_failure::<&str>(&None), None);
    }
}
