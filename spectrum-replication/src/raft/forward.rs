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
//! - the stream could not be opened: the leader's refusal, or unreachable (the
//!   proposal was not taken);
//! - the stream ended, or this node stopped, with the proposal sent and not
//!   answered: interrupted (it may have been taken);
//! - no answer in time: a timeout (it may have been taken), and the stream is
//!   retired: later proposals open another, while the old one still answers
//!   those it carries.
//!
//! A leader of an older version, without the method, is sent one `Forward`
//! call per proposal for a minute, then a stream is tried again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use spectrum_core::PeerAddr;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use super::batcher::Answer as ForwardAnswer;
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
    /// The stream to each address (the newest; it may have ended since).
    /// Held across opening one, so that concurrent proposals share it.
    links: tokio::sync::Mutex<HashMap<PeerAddr, Link>>,
    /// Leaders found without ForwardStream, and when.
    without_stream: Mutex<HashMap<PeerAddr, Instant>>,
    /// This node's stop signal: every stream ends with it.
    stop: watch::Receiver<bool>,
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
    /// The callers waiting for an answer, by their call's number.
    waiting: HashMap<u64, oneshot::Sender<Result<proto::RaftAnswer, PeerFailure>>>,
}

/// A call registered on a stream, waiting for its answer; its entry is
/// removed when the caller stops waiting.
struct Waiting {
    link: Link,
    sequence: u64,
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
        let state = LinkState { calls: Some(calls), next: 0, waiting: HashMap::new() };
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
        Some((Waiting { link: self.clone(), sequence, answer }, calls))
    }

    /// No call goes on this stream any more: once those it carries are
    /// answered (or their callers stop waiting), the leader ends it.
    fn retire(&self) {
        self.0.lock().calls = None;
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
        let tell = self.0.lock().waiting.remove(&answer.sequence);
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
            links: tokio::sync::Mutex::new(HashMap::new()),
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
        proposal: proto::RaftProposal,
        timeout: Duration,
    ) -> Result<ForwardAnswer, ReplicationError> {
        let call = proto::RaftCall { proposal: Some(proposal), ..proto::RaftCall::default() };
        let unary =
            self.without_stream.lock().get(addr).is_some_and(|since| since.elapsed() < STREAM_RETRY_AFTER);
        if unary {
            return self.wire.call_json(addr, Method::Forward, call, timeout).await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        match self.on_stream(addr, call.clone(), deadline, timeout).await {
            // A leader of an older version, without the stream (it took nothing).
            Err(ReplicationError::Peer {
                failure: PeerFailure::Refused { code: tonic::Code::Unimplemented, .. },
                ..
            }) => {
                debug!(peer = %addr, "no ForwardStream: proposals go as one call each");
                self.without_stream.lock().insert(addr.clone(), Instant::now());
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.wire.call_json(addr, Method::Forward, call, left.max(Duration::from_millis(1))).await
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
        call.header = Some(self.wire.handshake.header());
        call.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut links = match tokio::time::timeout_at(deadline, self.links.lock()).await {
            Ok(links) => links,
            Err(_) => return Err(no_answer(addr, timeout)),
        };
        let open = links.get(addr).and_then(|link| link.register(&mut call));
        let mut waiting = match open {
            Some((waiting, calls)) => {
                drop(links);
                let sent = tokio::time::timeout_at(deadline, calls.send(call)).await;
                match sent {
                    Ok(Ok(())) => waiting,
                    // The stream ended before the call went: not taken.
                    Ok(Err(_)) => {
                        let message = "the ForwardStream had ended".into();
                        return Err(ReplicationError::Peer {
                            peer: addr.clone(),
                            failure: PeerFailure::Unreachable { message },
                        });
                    }
                    Err(_) => {
                        waiting.link.retire();
                        return Err(no_answer(addr, timeout));
                    }
                }
            }
            None => {
                let opened = tokio::time::timeout_at(deadline, self.open(addr, call)).await;
                match opened {
                    Ok(Ok((link, waiting))) => {
                        links.insert(addr.clone(), link);
                        waiting
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(no_answer(addr, timeout)),
                }
            }
        };
        match tokio::time::timeout_at(deadline, &mut waiting.answer).await {
            Ok(Ok(Ok(answer))) => {
                let json = self.wire.admit_answer(addr, answer)?;
                parse_answer(addr, &json)
            }
            Ok(Ok(Err(failure))) => Err(ReplicationError::Peer { peer: addr.clone(), failure }),
            // The reader left without a word: it ended with this node.
            Ok(Err(_)) => Err(ReplicationError::Peer {
                peer: addr.clone(),
                failure: PeerFailure::Interrupted { message: "this node stopped".into() },
            }),
            Err(_) => {
                waiting.link.retire();
                Err(no_answer(addr, timeout))
            }
        }
    }

    /// Opens a ForwardStream to `addr` with `first` as its first call (the
    /// leader admits the stream on it), and starts the task reading its
    /// answers.
    async fn open(
        &self,
        addr: &PeerAddr,
        mut first: proto::RaftCall,
    ) -> Result<(Link, Waiting), ReplicationError> {
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
        Ok((link, waiting))
    }
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
