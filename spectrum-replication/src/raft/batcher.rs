//! The leader's proposal queue: concurrent proposals packed into one log entry.
//!
//! openraft 0.9 appends each `client_write` as an entry of its own and waits
//! for its fsync before it handles the next, so sixteen concurrent writers pay
//! sixteen fsyncs one after the other. Like etcd, which proposes everything
//! queued while the previous append was being written as one batch, every
//! proposal of this node (its own clients' and those followers forward to it)
//! goes through one queue: a proposal that may not start an entry yet (see
//! below) waits, and the next entry carries every proposal that waited (up to
//! [`MAX_PROPOSALS`], [`MAX_BATCH_BYTES`], and fewer writes than
//! [`SEQ_PER_ENTRY`](super::SEQ_PER_ENTRY), since an entry's writes share its
//! sequence numbers). Each proposal is decided on its own, in queue order, and
//! gets its own answer. A proposal that finds nothing queued and may start an
//! entry is that entry alone, committed from its caller's task: a lone write
//! pays no hop to the queue's task and back.
//!
//! **One entry in flight, or two lone ones** ([`Slots::may_start`]): an entry
//! of several proposals starts only when no other is being committed, while
//! an entry of one proposal may start beside another of one, up to
//! [`MAX_IN_FLIGHT`], unless the last entry the queue's task started carried
//! several (writes are queuing up: the lone one joins the next batch).
//!
//! Under load, waiting for the entry in flight packs the proposals that
//! arrive meanwhile into one entry twice the size, and each entry costs every
//! member an AppendEntries, an append, an fsync and an apply. Measured with
//! `bench_consensus` against two entries in flight of any size (the rule
//! before): one entry in flight at most made 4,855 against 4,483 and 5,128
//! against 4,645 puts/s with 16 writers (CPU per put 0.280 against 0.307 ms),
//! 2,179 against 2,042 with 4, but 1,361 against 1,527 with 2 (the second
//! writer waited for the first one's whole commit). This rule made 4,940
//! against 4,765 with 16 writers (and 5,010 against one entry in flight's
//! 4,973), 2,044 against 2,008 with 4, and 1,557 against 1,523 and 1,523
//! against 1,444 with 2.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::debug;

use super::codec::{Applied, Batch, Proposal};
use super::{Raft, RaftMember, SEQ_PER_ENTRY};

/// Entries being committed at once, at most: two only when each carries one
/// proposal (see the [module docs](self)); proposals made meanwhile wait and
/// are packed into the next.
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

/// The entries being committed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Slots {
    /// How many.
    entries: usize,
    /// Whether one of them carries more than one proposal (then it is the
    /// only one).
    batch: bool,
    /// Proposals sent to the queue (or being sent) that no entry has taken
    /// yet: a proposal skips the queue only when there are none, so it never
    /// goes ahead of them.
    queued: usize,
    /// Whether the last entry the queue's task started carried more than one
    /// proposal: writes are queuing up, and a lone proposal waits for the
    /// entry in flight too, to join the next batch.
    loaded: bool,
}

impl Slots {
    /// Whether an entry of `proposals` proposals may start now: any entry
    /// when none is being committed; an entry of one proposal beside other
    /// entries of one, up to [`MAX_IN_FLIGHT`], unless writes are queuing
    /// up (`loaded`).
    fn may_start(&self, proposals: usize) -> bool {
        self.entries == 0 || (proposals == 1 && !self.batch && !self.loaded && self.entries < MAX_IN_FLIGHT)
    }
}

/// The entries in flight, shared by the proposers and the queue's task.
#[derive(Debug, Default)]
struct InFlight {
    slots: Mutex<Slots>,
    /// Told when an entry ends (the queue's task waits on it).
    ended: Notify,
}

impl InFlight {
    /// Starts an entry of `proposals` proposals if it may start now, or
    /// `None`: the queue's task's entry (of proposals it took from the
    /// queue), or a lone proposal skipping the queue, which it may only when
    /// nothing is queued.
    fn try_start(self: &Arc<Self>, proposals: usize, from_queue: bool) -> Option<Slot> {
        let mut slots = self.slots.lock();
        if (!from_queue && slots.queued > 0) || !slots.may_start(proposals) {
            return None;
        }
        slots.entries += 1;
        slots.batch |= proposals > 1;
        if from_queue {
            slots.queued = slots.queued.saturating_sub(proposals);
            slots.loaded = proposals > 1;
        }
        Some(Slot { flight: self.clone(), proposals })
    }
}

/// One proposal counted in [`Slots::queued`] while it is being sent to the
/// queue; dropped unsent (its caller stopped waiting, or the queue closed),
/// it is counted out again.
struct Sending<'a> {
    flight: &'a InFlight,
    sent: bool,
}

impl<'a> Sending<'a> {
    fn new(flight: &'a InFlight) -> Self {
        flight.slots.lock().queued += 1;
        Self { flight, sent: false }
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.sent {
            let mut slots = self.flight.slots.lock();
            slots.queued = slots.queued.saturating_sub(1);
        }
    }
}

/// One entry being committed; it ends when this is dropped.
#[derive(Debug)]
struct Slot {
    flight: Arc<InFlight>,
    proposals: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut slots = self.flight.slots.lock();
            slots.entries = slots.entries.saturating_sub(1);
            if self.proposals > 1 {
                slots.batch = false;
            }
        }
        self.flight.ended.notify_one();
    }
}

/// The sending side of the queue; the task packing it ends when the last
/// clone is dropped.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Queued>,
    raft: Raft,
    in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("in_flight", &*self.in_flight.slots.lock()).finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the queue of `raft` (on the current Tokio runtime).
    pub(crate) fn start(raft: Raft) -> Self {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        let in_flight = Arc::new(InFlight::default());
        tokio::spawn(run(raft.clone(), rx, in_flight.clone()));
        Self { queue, raft, in_flight }
    }

    /// Proposes `proposal` through this node's Raft (which refuses with
    /// `ForwardToLeader` unless it leads), and waits for its answer; `None`
    /// when the queue has stopped (the node is shutting down).
    ///
    /// With nothing queued and an entry of one proposal free to start, the
    /// proposal is committed as an entry of its own from this task. Should the
    /// caller stop waiting, the entry may still commit (as through the queue),
    /// and its slot is free early: each caller that stops waiting so lets one
    /// entry more be in flight until its own commits (forwarded writes timing
    /// out under overload, say).
    pub(crate) async fn propose(&self, proposal: Proposal) -> Option<Answer> {
        if self.queue.is_closed() {
            return None;
        }
        if let Some(slot) = self.in_flight.try_start(1, false) {
            let answer = decide(&self.raft, vec![proposal]).await.pop();
            drop(slot);
            return answer;
        }
        let (answer, rx) = oneshot::channel();
        let mut sending = Sending::new(&self.in_flight);
        self.queue.send(Queued { proposal, answer }).await.ok()?;
        sending.sent = true;
        rx.await.ok()
    }
}

/// Packs the queue into entries, started as [`Slots::may_start`] allows.
async fn run(raft: Raft, mut rx: mpsc::Receiver<Queued>, in_flight: Arc<InFlight>) {
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut writes = first.proposal.writes() as u64;
        let mut bytes = first.proposal.size();
        let mut batch = vec![first];
        // Everything that queues while waiting for an entry to start goes in it.
        let slot = loop {
            while carried.is_none() && batch.len() < MAX_PROPOSALS && bytes < MAX_BATCH_BYTES {
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
            if let Some(slot) = in_flight.try_start(batch.len(), true) {
                break slot;
            }
            // (A permit stored by an end that came before this wait wakes it
            // at once: no end goes unseen.)
            in_flight.ended.notified().await;
        };
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{InFlight, MAX_IN_FLIGHT, Sending, Slots};

    #[test]
    fn an_entry_of_several_proposals_starts_alone_and_lone_ones_pair_up() {
        let idle = Slots::default();
        assert!(idle.may_start(1) && idle.may_start(8), "anything starts when nothing is in flight");
        let lone = Slots { entries: 1, ..Slots::default() };
        assert!(lone.may_start(1), "a second writer does not wait for the first's commit");
        assert!(!lone.may_start(2), "a batch waits for the entry in flight, and grows meanwhile");
        let batch = Slots { entries: 1, batch: true, ..Slots::default() };
        assert!(!batch.may_start(1) && !batch.may_start(3), "nothing starts beside a batch");
        let full = Slots { entries: MAX_IN_FLIGHT, ..Slots::default() };
        assert!(!full.may_start(1));
        let loaded = Slots { entries: 1, loaded: true, ..Slots::default() };
        assert!(!loaded.may_start(1), "under load a lone proposal joins the next batch");
        assert!(Slots { loaded: true, ..Slots::default() }.may_start(1));
    }

    #[tokio::test]
    async fn slots_end_when_dropped_and_queued_proposals_are_not_overtaken() {
        let flight = Arc::new(InFlight::default());
        let first = flight.try_start(1, false).unwrap();
        let second = flight.try_start(1, false).unwrap();
        assert!(flight.try_start(1, false).is_none(), "two lone entries at most");
        // Three proposals are queued, and one was dropped while being sent
        // (its caller stopped waiting): it is counted out.
        for _ in 0..3 {
            Sending::new(&flight).sent = true;
        }
        drop(Sending::new(&flight));
        assert_eq!(flight.slots.lock().queued, 3);
        // A lone proposal that skips the queue does not take the slot that frees.
        drop(first);
        flight.ended.notified().await;
        assert!(flight.try_start(1, false).is_none());
        assert!(flight.try_start(3, true).is_none(), "a batch waits for every entry in flight");
        drop(second);
        flight.ended.notified().await;
        let batch = flight.try_start(3, true).unwrap();
        assert_eq!(*flight.slots.lock(), Slots { entries: 1, batch: true, queued: 0, loaded: true });
        assert!(flight.try_start(1, false).is_none(), "nothing beside a batch");
        drop(batch);
        // Loaded: one entry at a time, until the queue's task starts a lone one.
        let lone = flight.try_start(1, false).unwrap();
        assert!(flight.try_start(1, false).is_none());
        drop(lone);
        Sending::new(&flight).sent = true;
        drop(flight.try_start(1, true).unwrap());
        let _pair = (flight.try_start(1, false).unwrap(), flight.try_start(1, false).unwrap());
    }
}
