//! The leader writes its log to disk in parallel with replicating it.
//!
//! openraft 0.9 appends a leader's new entries to its own log, waits for the
//! fsync, and only then hands them to the replication streams; each follower
//! then fsyncs in turn, so a write waits for two fsyncs one after the other.
//! Raft does not need that order: "the leader can write to its disk in
//! parallel with replicating to the followers and them writing to their
//! disks" (Ongaro, *Consensus: Bridging Theory and Practice*, 2014, §10.2.1),
//! which etcd does. An entry still counts as committed only once a majority
//! *including the leader's own flush* holds it, as openraft counts it: the
//! leader's progress moves when its fsync completes, a follower's when it
//! answers openraft's own replication.
//!
//! So when the leader's log store is asked to append the leader's own new
//! entries, it first queues them to each caught-up peer as an ordinary
//! `AppendEntries` (the leader's vote, the previous entry's log id, no commit
//! index), then fsyncs. The follower appends and fsyncs meanwhile; when
//! openraft's replication stream sends the same entries after the leader's
//! fsync, the follower finds them already in its log (same log ids), appends
//! nothing, and answers at once.
//!
//! Nothing here can break safety, because every such message is one the
//! leader's replication stream could itself have sent, and Raft tolerates
//! messages that are duplicated, delayed or reordered: a follower with a
//! newer vote refuses it; one whose log does not reach the previous entry
//! refuses it without truncating anything (openraft deletes only entries that
//! conflict); the answer is ignored. It only saves time: a message that is
//! lost, refused or late costs nothing but the bytes. A peer's messages go out
//! one at a time, in order, from a bounded queue that drops (rather than waits)
//! when the peer is slow; peers far behind the leader are skipped.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetwork};
use openraft::raft::AppendEntriesRequest;
use openraft::{LogId, RaftMetrics, ServerState, Vote};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tracing::trace;

use super::network::{Network, PeerLink};
use super::{Entry, RaftMember, TypeConfig};

/// Messages queued per peer before more are dropped.
const QUEUE: usize = 32;
/// A peer whose matched index is further than this behind the new entries is
/// left to openraft's replication (it would refuse them anyway).
const MAX_LAG: u64 = 64;
/// How long one early message may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Entries the leader is about to fsync, for every caught-up peer.
struct Early {
    vote: Vote<u64>,
    prev: Option<LogId<u64>>,
    entries: Arc<Vec<Entry>>,
}

/// What sending needs, known once the Raft node is built.
struct Started {
    id: u64,
    metrics: watch::Receiver<RaftMetrics<u64, RaftMember>>,
    network: Network,
}

/// The log store's handle on early replication: inert until
/// [`start`](ParallelAppend::start), and for every append that is not the
/// leader's own.
#[derive(Default)]
pub(crate) struct ParallelAppend {
    started: OnceLock<Started>,
    queues: Mutex<HashMap<u64, mpsc::Sender<Early>>>,
}

impl std::fmt::Debug for ParallelAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelAppend").field("started", &self.started.get().is_some()).finish()
    }
}

impl ParallelAppend {
    /// Enables early replication for node `id`, which reaches its peers
    /// through `network` and learns its role from `metrics`.
    pub(crate) fn start(
        &self,
        id: u64,
        metrics: watch::Receiver<RaftMetrics<u64, RaftMember>>,
        network: Network,
    ) {
        let _ = self.started.set(Started { id, metrics, network });
    }

    /// Queues `entries`, about to be appended after `prev`, to every caught-up
    /// peer, when this node leads and they are its own; does nothing
    /// otherwise. Never waits.
    pub(crate) fn send(&self, prev: Option<LogId<u64>>, entries: &[Entry]) {
        let (Some(started), Some(first), Some(last)) = (self.started.get(), entries.first(), entries.last())
        else {
            return;
        };
        if prev.map_or(0, |p| p.index + 1) != first.log_id.index {
            return;
        }
        let m = started.metrics.borrow();
        // Only a leader's own entries of its current term, under the vote it
        // leads with: exactly what its replication stream will send.
        let leads = m.state == ServerState::Leader
            && m.vote.is_committed()
            && m.vote.leader_id().voted_for() == Some(started.id)
            && first.log_id.leader_id.term == m.vote.leader_id().term
            && first.log_id.leader_id.node_id == started.id
            && last.log_id.leader_id == first.log_id.leader_id;
        if !leads {
            return;
        }
        let matched = m.replication.clone().unwrap_or_default();
        let nodes: Vec<(u64, RaftMember)> = m
            .membership_config
            .nodes()
            .filter(|(id, _)| **id != started.id)
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let vote = m.vote;
        drop(m);
        let entries = Arc::new(entries.to_vec());
        let prev_index = prev.map_or(0, |p| p.index);
        let mut queues = self.queues.lock();
        queues.retain(|id, _| nodes.iter().any(|(n, _)| n == id));
        for (target, member) in nodes {
            let caught_up = matched
                .get(&target)
                .copied()
                .flatten()
                .is_some_and(|done| done.index + MAX_LAG >= prev_index);
            if !caught_up {
                continue;
            }
            let queue = queues.entry(target).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let link = started.network.link(target, member);
                tokio::spawn(deliver(link, rx));
                tx
            });
            let early = Early { vote, prev, entries: entries.clone() };
            if queue.try_send(early).is_err() {
                trace!(target, "early append queue full or closed; left to replication");
            }
        }
    }
}

/// Sends one peer's early appends in order, ignoring the answers; ends when
/// the queue is dropped.
async fn deliver(mut link: PeerLink, mut rx: mpsc::Receiver<Early>) {
    while let Some(early) = rx.recv().await {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: early.vote,
            prev_log_id: early.prev,
            entries: early.entries.as_ref().clone(),
            leader_commit: None,
        };
        if let Err(e) = link.append_entries(rpc, RPCOption::new(TIMEOUT)).await {
            trace!(error = %e, "early append not delivered; left to replication");
        }
    }
}
