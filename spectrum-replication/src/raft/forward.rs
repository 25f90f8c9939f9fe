//! A follower's writes to the leader on one long-lived stream.
//!
//! A follower hands each of its clients' proposals to the leader. As etcd's
//! members send proposals to the leader on their long-lived peer streams
//! rather than one request each, a follower keeps one `ForwardStream` per
//! leader address ([`Forwarder`]): a proposal is one message on it, numbered,
//! and the leader answers each with its number when the proposal is decided,
//! in whatever order they are. Many proposals are in flight on one stream at
//! once; a unary call each cost an HTTP/2 stream's headers, trailers and a
//! task on the leader per write.
//!
//! **What a caller hears** is what a unary `Forward` call would have told it
//! (the replicator's retry loop reads both alike):
//! - the proposal was not sent (this node stopped, the stream to that leader
//!   was still being opened by another caller, its queue stayed full, or it
//!   had ended): unreachable, not taken;
//! - the stream was refused when opened, or the call was refused on it (its
//!   header, its proposal): the leader's refusal, not taken;
//! - opening it failed in the transport: as a unary call's failure (not taken
//!   when the connection could not be made, interrupted otherwise);
//! - the stream ended, or this node stopped, with the proposal sent and not
//!   answered: interrupted (it may have been taken);
//! - no answer in time: a timeout (it may have been taken). When nothing at
//!   all came back on the stream meanwhile, the stream is retired: later
//!   proposals open another, and the leader ends the old one once it has
//!   answered or given up on the calls it carries.
//!
//! Only the stream to the leader last forwarded to is kept: opening one to a
//! new address retires the others. A leader of an older version, without the
//! method, is sent one `Forward` call per proposal for a minute, then a stream
//! is tried again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use spectrum_core::PeerAddr;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use super::batcher::Answer as ForwardAnswer;
use super::codec::Proposal;
use super::network::{Method, STREAM_RETRY_AFTER, Wire, no_answer, parse_answer};
use crate::error::{PeerFailure, ReplicationError};
use crate::proto;

/// Calls queued for one stream's transport; a caller that finds the queue
/// full waits for room (within its timeout).
const QUEUED_CALLS: usize = 64;

/// This node's ForwardStreams, by leader address.
#[derive(Debug)]
pub(crate) struct Forwarder {
    wire: Wire,
    /// The stream to each address (it may have ended since).
    links: Mutex<HashMap<PeerAddr, Slot>>,
    /// Leaders found without ForwardStream, and when.
    without_stream: Mutex<HashMap<PeerAddr, Instant>>,
    /// This node's stop signal: every stream ends with it.
    stop: watch::Receiver<bool>,
}

/// The stream to one address, and the lock its opening holds (so that
/// concurrent proposals share one new stream; proposals to other addresses do
/// not wait for it).
#[derive(Debug, Default)]
struct Slot {
    link: Option<Link>,
    opening: Arc<tokio::sync::Mutex<()>>,
}

/// One ForwardStream: its state, shared with the task that reads its answers.
#[derive(Debug, Clone)]
struct Link(Arc<Mutex<LinkState>>);

#[derive(Debug)]
struct LinkState {
    /// Where calls go in; `None` once the stream ended or was retired.
    calls: Option<mpsc::Sender<proto::RaftCall>>,
    /// The next call's number.
    next: u64,
    /// Answers handed on so far.
    answered: u64,
    /// The callers waiting for an answer, by their call's number.
    waiting: HashMap<u64, oneshot::Sender<Result<proto::RaftAnswer, PeerFailure>>>,
}

/// A call registered on a stream, waiting for its answer; its entry is
/// removed when the caller stops waiting.
struct Waiting {
    link: Link,
    sequence: u64,
    /// [`LinkState::answered`] when it was registered.
    answered_before: u64,
    answer: oneshot::Receiver<Result<proto::RaftAnswer, PeerFailure>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.link.0.lock().waiting.remove(&self.sequence);
    }
}

impl Link {
    /// A new stream's state, and the receiving end of its calls.
    fn new() -> (Self, mpsc::Receiver<proto::RaftCall>) {
        let (calls, outgoing) = mpsc::channel(QUEUED_CALLS);
        let state = LinkState { calls: Some(calls), next: 0, answered: 0, waiting: HashMap::new() };
        (Link(Arc::new(Mutex::new(state))), outgoing)
    }

    /// Numbers `call` and registers it; with where to send it. `None` when the
    /// stream ended or was retired.
    fn register(&self, call: &mut proto::RaftCall) -> Option<(Waiting, mpsc::Sender<proto::RaftCall>)> {
        let mut state = self.0.lock();
        let calls = state.calls.clone()?;
        let sequence = state.next;
        state.next += 1;
        let (tell, answer) = oneshot::channel();
        state.waiting.insert(sequence, tell);
        call.sequence = sequence;
        let answered_before = state.answered;
        Some((Waiting { link: self.clone(), sequence, answered_before, answer }, calls))
    }

    /// No call goes on this stream any more: once the leader has answered or
    /// given up on those it carries, it ends the stream.
    fn retire(&self) {
        self.0.lock().calls = None;
    }

    /// [`retire`](Self::retire)s the stream if nothing came back on it since
    /// `waiting` was registered (a stalled connection, not a slow decision).
    fn retire_if_silent(&self, waiting: &Waiting) {
        let mut state = self.0.lock();
        if state.answered == waiting.answered_before {
            state.calls = None;
        }
    }

    /// The stream ended with `failure`: every caller still waiting hears it.
    fn end(&self, failure: &PeerFailure) {
        let mut state = self.0.lock();
        state.calls = None;
        for (_, tell) in state.waiting.drain() {
            let _ = tell.send(Err(failure.clone()));
        }
    }

    /// Hands `answer` to the caller waiting for it, if it still is.
    fn deliver(&self, answer: proto::RaftAnswer) {
        let tell = {
            let mut state = self.0.lock();
            state.answered += 1;
            state.waiting.remove(&answer.sequence)
        };
        match tell {
            Some(tell) => {
                let _ = tell.send(Ok(answer));
            }
            None => {
                debug!(sequence = answer.sequence, "a forwarded proposal's answer came after its caller left")
            }
        }
    }
}

impl Forwarder {
    pub(crate) fn new(wire: Wire, stop: watch::Receiver<bool>) -> Self {
        Forwarder {
            wire,
            links: Mutex::new(HashMap::new()),
            without_stream: Mutex::new(HashMap::new()),
            stop,
        }
    }

    /// Hands `proposal` to the leader at `addr` and waits up to `timeout` for
    /// its decision. Errors as a unary `Forward` call's (see the [module
    /// docs](self)).
    pub(crate) async fn forward(
        &self,
        addr: &PeerAddr,
        proposal: &Proposal,
        timeout: Duration,
    ) -> Result<ForwardAnswer, ReplicationError> {
        // Encoded for the call that goes (a second time only for an older
        // leader's unary call, rather than copied for every write).
        let call = || proto::RaftCall { proposal: Some(proposal.into()), ..proto::RaftCall::default() };
        let unary =
            self.without_stream.lock().get(addr).is_some_and(|since| since.elapsed() < STREAM_RETRY_AFTER);
        if unary {
            return self.wire.call_json(addr, Method::Forward, call(), timeout).await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        match self.on_stream(addr, call(), deadline, timeout).await {
            // A leader of an older version, without the stream (it took nothing).
            Err(ReplicationError::Peer {
                failure: PeerFailure::Refused { code: tonic::Code::Unimplemented, .. },
                ..
            }) => {
                debug!(peer = %addr, "no ForwardStream: proposals go as one call each");
                self.without_stream(addr);
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.wire.call_json(addr, Method::Forward, call(), left.max(Duration::from_millis(1))).await
            }
            other => other,
        }
    }

    /// [`forward`](Self::forward) on the stream to `addr`, opened when there is
    /// none, all before `deadline`.
    async fn on_stream(
        &self,
        addr: &PeerAddr,
        mut call: proto::RaftCall,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<ForwardAnswer, ReplicationError> {
        if *self.stop.borrow() {
            return Err(not_sent(addr, "this node has stopped"));
        }
        call.header = Some(self.wire.handshake.header());
        call.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut waiting = match self.register(addr, &mut call) {
            Ok((waiting, calls)) => match tokio::time::timeout_at(deadline, calls.send(call)).await {
                Ok(Ok(())) => waiting,
                Ok(Err(_)) => return Err(not_sent(addr, "its ForwardStream had ended")),
                // (Sending is cancel-safe: the call did not go.)
                Err(_) => return Err(not_sent(addr, "its ForwardStream's queue stayed full")),
            },
            Err(opening) => {
                let Ok(_opening) = tokio::time::timeout_at(deadline, opening.lock_owned()).await else {
                    return Err(not_sent(addr, "its ForwardStream was still being opened"));
                };
                // Another caller may have opened it meanwhile.
                match self.register(addr, &mut call) {
                    Ok((waiting, calls)) => match calls.try_send(call) {
                        Ok(()) => waiting,
                        Err(_) => return Err(not_sent(addr, "its new ForwardStream took no call")),
                    },
                    Err(_) => match tokio::time::timeout_at(deadline, self.open(addr, call)).await {
                        Ok(Ok(waiting)) => waiting,
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err(no_answer(addr, timeout)),
                    },
                }
            }
        };
        match tokio::time::timeout_at(deadline, &mut waiting.answer).await {
            Ok(Ok(Ok(answer))) if answer.refusal_code != 0 => {
                let code = tonic::Code::from_i32(answer.refusal_code);
                Err(self.wire.refused(addr, &tonic::Status::new(code, answer.refusal)))
            }
            Ok(Ok(Ok(answer))) => {
                let json = self.wire.admit_answer(addr, answer)?;
                parse_answer(addr, &json)
            }
            Ok(Ok(Err(failure))) => Err(ReplicationError::Peer { peer: addr.clone(), failure }),
            // (Every registered caller is answered or told the stream ended.)
            Ok(Err(_)) => Err(ReplicationError::Peer {
                peer: addr.clone(),
                failure: PeerFailure::Interrupted { message: "the ForwardStream's reader ended".into() },
            }),
            Err(_) => {
                waiting.link.retire_if_silent(&waiting);
                Err(no_answer(addr, timeout))
            }
        }
    }

    /// Notes that `addr` has no ForwardStream (and forgets notes older than
    /// [`STREAM_RETRY_AFTER`]).
    fn without_stream(&self, addr: &PeerAddr) {
        let mut without = self.without_stream.lock();
        without.retain(|_, since| since.elapsed() < STREAM_RETRY_AFTER);
        without.insert(addr.clone(), Instant::now());
    }

    /// Registers `call` on the open stream to `addr`; the lock of its opening
    /// when there is none.
    #[allow(clippy::type_complexity)]
    fn register(
        &self,
        addr: &PeerAddr,
        call: &mut proto::RaftCall,
    ) -> Result<(Waiting, mpsc::Sender<proto::RaftCall>), Arc<tokio::sync::Mutex<()>>> {
        let mut links = self.links.lock();
        let slot = links.entry(addr.clone()).or_default();
        slot.link.as_ref().and_then(|link| link.register(call)).ok_or_else(|| slot.opening.clone())
    }

    /// Opens a ForwardStream to `addr` with `first` as its first call (the
    /// leader admits the stream on it), and starts the task reading its
    /// answers. Only the new stream is kept: those to other addresses are
    /// retired.
    async fn open(&self, addr: &PeerAddr, mut first: proto::RaftCall) -> Result<Waiting, ReplicationError> {
        let (link, outgoing) = Link::new();
        let Some((waiting, calls)) = link.register(&mut first) else {
            return Err(ReplicationError::consensus("a new ForwardStream took no call"));
        };
        calls
            .try_send(first)
            .map_err(|_| ReplicationError::consensus("a new ForwardStream's queue took no call"))?;
        drop(calls);
        let answers = match self.wire.client(addr).forward_stream(ReceiverStream::new(outgoing)).await {
            Ok(answers) => answers.into_inner(),
            Err(status) => return Err(self.wire.refused(addr, &status)),
        };
        tokio::spawn(read_answers(answers, link.clone(), self.wire.clone(), addr.clone(), self.stop.clone()));
        let mut links = self.links.lock();
        links.retain(|other, slot| {
            if other != addr
                && let Some(old) = &slot.link
            {
                old.retire();
            }
            other == addr
        });
        links.entry(addr.clone()).or_default().link = Some(link);
        Ok(waiting)
    }
}

/// `addr` was not sent the proposal, for `why`.
fn not_sent(addr: &PeerAddr, why: &str) -> ReplicationError {
    let failure = PeerFailure::Unreachable { message: format!("the proposal was not sent: {why}") };
    ReplicationError::Peer { peer: addr.clone(), failure }
}

/// Hands each answer on `answers` to its caller until the stream ends or
/// this node stops; then every caller still waiting hears that its proposal
/// may have been taken.
async fn read_answers(
    mut answers: tonic::Streaming<proto::RaftAnswer>,
    link: Link,
    wire: Wire,
    addr: PeerAddr,
    mut stop: watch::Receiver<bool>,
) {
    let message = loop {
        let next = tokio::select! {
            next = answers.message() => next,
            _ = stop.wait_for(|stop| *stop) => break "this node stopped".to_owned(),
        };
        match next {
            Ok(Some(answer)) => link.deliver(answer),
            Ok(None) => break "the leader ended the ForwardStream".to_owned(),
            Err(status) => {
                wire.handshake.note_refusal(&addr, &status);
                break format!("the ForwardStream ended: {}", status.message());
            }
        }
    };
    debug!(peer = %addr, reason = %message, "a ForwardStream ended");
    link.end(&PeerFailure::Interrupted { message });
}
