//! The leader's proposal queue: concurrent proposals packed into one log entry.
//!
//! openraft 0.9 appends each `client_write` as an entry of its own and waits
//! for its fsync before it handles the next, so sixteen concurrent writers pay
//! sixteen fsyncs one after the other. Like etcd, which proposes everything
//! queued while the previous append was being written as one batch, every
//! proposal of this node (its own clients' and those followers forward to it)
//! goes through one queue: a proposal that arrives while
//! [`MAX_IN_FLIGHT`] entries are being committed waits, and the next entry
//! carries every proposal that waited (up to [`MAX_PROPOSALS`],
//! [`MAX_BATCH_BYTES`], and fewer writes than
//! [`SEQ_PER_ENTRY`](super::SEQ_PER_ENTRY), since an entry's writes share its
//! sequence numbers). Each proposal is decided on its own, in queue order, and
//! gets its own answer. A proposal that finds nothing queued and an entry free
//! is that entry alone, committed from its caller's task: a lone write pays no
//! hop to the queue's task and back.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::debug;

use super::codec::{Applied, Batch, Proposal};
use super::{Raft, RaftMember, SEQ_PER_ENTRY};

/// Entries being committed at once; proposals made meanwhile wait and are
/// packed into the next.
pub(crate) const MAX_IN_FLIGHT: usize = 2;
/// Most proposals in one entry.
pub(crate) const MAX_PROPOSALS: usize = 512;
/// An entry takes more proposals only while it holds fewer bytes than this
/// (a single larger proposal still goes, alone).
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 20;
/// Proposals waiting for an entry; a proposer that finds the queue full
/// waits for room (for as long as its caller waits: a forwarded proposal's
/// call has its timeout), so an overloaded leader holds a bounded number of
/// proposals rather than all that arrive.
pub(crate) const MAX_QUEUED: usize = 4 * MAX_PROPOSALS;

/// Why a proposal was not decided: openraft's refusal (not the leader, shut
/// down, a storage failure), for every proposal of the entry.
pub(crate) type ProposeError = RaftError<u64, ClientWriteError<u64, RaftMember>>;

/// A decided proposal: the index of the entry that carried it and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Decided {
    /// The log index of its entry.
    pub(crate) index: u64,
    /// What the state machine decided.
    pub(crate) applied: Applied,
}

/// What a proposer hears back.
pub(crate) type Answer = Result<Decided, ProposeError>;

struct Queued {
    proposal: Proposal,
    answer: oneshot::Sender<Answer>,
}

/// The sending side of the queue; the task packing it ends when the last
/// clone is dropped.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Queued>,
    raft: Raft,
    /// [`MAX_IN_FLIGHT`] permits, one per entry being committed. Tokio's
    /// semaphore is fair: a proposal that skips the queue takes a permit only
    /// when the queue's task is not waiting for one.
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("free_entries", &self.in_flight.available_permits())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the queue of `raft` (on the current Tokio runtime).
    pub(crate) fn start(raft: Raft) -> Self {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(run(raft.clone(), rx, in_flight.clone()));
        Self { queue, raft, in_flight }
    }

    /// Proposes `proposal` through this node's Raft (which refuses with
    /// `ForwardToLeader` unless it leads), and waits for its answer; `None`
    /// when the queue has stopped (the node is shutting down).
    ///
    /// With nothing queued and an entry free, the proposal is committed as an
    /// entry of its own from this task. Should the caller stop waiting, the
    /// entry may still commit (as through the queue), and its permit is back
    /// early: each caller that stops waiting so lets one entry more be in
    /// flight until its own commits (forwarded writes timing out under
    /// overload, say).
    pub(crate) async fn propose(&self, proposal: Proposal) -> Option<Answer> {
        if self.queue.is_closed() {
            return None;
        }
        if self.queue.capacity() == self.queue.max_capacity()
            && let Ok(permit) = self.in_flight.clone().try_acquire_owned()
        {
            let answer = decide(&self.raft, vec![proposal]).await.pop();
            drop(permit);
            return answer;
        }
        let (answer, rx) = oneshot::channel();
        self.queue.send(Queued { proposal, answer }).await.ok()?;
        rx.await.ok()
    }
}

/// Packs the queue into entries, at most [`MAX_IN_FLIGHT`] being committed at
/// once (`in_flight`'s permits).
async fn run(raft: Raft, mut rx: mpsc::Receiver<Queued>, in_flight: Arc<Semaphore>) {
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        // Everything that queued while waiting for the permit goes in this entry.
        let mut writes = first.proposal.writes() as u64;
        let mut bytes = first.proposal.size();
        let mut batch = vec![first];
        while batch.len() < MAX_PROPOSALS && bytes < MAX_BATCH_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            let more = next.proposal.writes() as u64;
            if writes + more >= SEQ_PER_ENTRY {
                carried = Some(next);
                break;
            }
            writes += more;
            bytes += next.proposal.size();
            batch.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(permit);
        });
    }
}

/// Commits `queued` as one entry and answers each proposal.
async fn commit(raft: &Raft, queued: Vec<Queued>) {
    let (proposals, answers): (Vec<_>, Vec<_>) = queued.into_iter().map(|q| (q.proposal, q.answer)).unzip();
    for (answer, decided) in answers.into_iter().zip(decide(raft, proposals).await) {
        let _ = answer.send(decided);
    }
}

/// Commits `proposals` as one entry: each one's answer, in order.
async fn decide(raft: &Raft, proposals: Vec<Proposal>) -> Vec<Answer> {
    let count = proposals.len();
    match raft.client_write(Batch::new(proposals)).await {
        Ok(done) => {
            debug!(index = done.log_id.index, proposals = count, "committed a batch of proposals");
            let index = done.log_id.index;
            let mut applied = done.data.into_iter();
            let mut answers = Vec::with_capacity(count);
            for _ in 0..count {
                answers.push(Ok(Decided { index, applied: applied.next().unwrap_or_default() }));
            }
            answers
        }
        Err(e) => vec![Err(e); count],
    }
}
