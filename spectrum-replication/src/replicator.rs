//! The [`Replicator`] trait: how a node's local writes reach its peers.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use spectrum_core::{Liveness, NodeId, PeerAddr};

use crate::error::ReplicationError;
use crate::record::Record;
use crate::transaction::{Committed, ReplicationMode, Transaction};

/// How many nodes must hold a write before it is acknowledged to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AckLevel {
    /// Only this node (the write is pushed to peers in the background).
    #[default]
    Local,
    /// A majority of the known members, this node included.
    Quorum,
    /// Every known member.
    All,
}

/// What a replicated write reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckReport {
    /// Nodes that hold the write, this node included.
    pub acked: usize,
    /// Known members, this node included.
    pub members: usize,
}

/// What this node knows of one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// The peer's id, once it has answered.
    pub id: Option<NodeId>,
    /// The peer's address.
    pub addr: PeerAddr,
    /// When it last answered.
    pub last_contact: Option<Instant>,
    /// Records the peer has that this node lacks, as of the last exchange.
    pub lag: u64,
    /// Estimated clock offset of the peer relative to this node, in milliseconds
    /// (positive: the peer is ahead), from its physical clock, not its HLC.
    pub clock_offset_ms: Option<i64>,
    /// How far the true offset may be from `clock_offset_ms` (half the round trip
    /// of the exchange it was measured over); `None` for a one-way estimate from
    /// a request, whose error is the unknown network delay.
    pub clock_uncertainty_ms: Option<u64>,
    /// When the offset was measured.
    pub clock_measured_at: Option<Instant>,
    /// Whether the offset is certainly beyond the cluster's maximum, in either
    /// direction. A peer flagged ahead is refused unless this node's own clock is
    /// the outlier (see [`ClockCheck`](crate::ClockCheck)).
    pub clock_skewed: bool,
    /// The last error talking to it, if the last exchange failed.
    pub last_error: Option<String>,
    /// Whether it is up, by this node's failure detector
    /// ([`liveness`](crate::liveness)), as of when the status was read.
    pub liveness: Liveness,
    /// The detector's φ (suspicion level) as of when the status was read; `None`
    /// before any contact.
    pub phi: Option<f64>,
}

/// The role a node plays in its consensus group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsensusRole {
    /// It decides what is committed.
    Leader,
    /// A voter following a leader.
    Follower,
    /// A voter standing for election.
    Candidate,
    /// It receives the log but does not vote (joining, or out of the voters).
    Learner,
    /// Its consensus node has stopped.
    Stopped,
}

impl ConsensusRole {
    /// The lower-case name used in output: `leader`, `follower`, `candidate`,
    /// `learner` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsensusRole::Leader => "leader",
            ConsensusRole::Follower => "follower",
            ConsensusRole::Candidate => "candidate",
            ConsensusRole::Learner => "learner",
            ConsensusRole::Stopped => "stopped",
        }
    }
}

/// A node's view of its consensus group (Raft mode), as of when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusStatus {
    /// What this node is in the group.
    pub role: ConsensusRole,
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The index of the last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// The highest index a majority of the voters holds, as the leader
    /// counts it; `None` on a node that is not the leader (it only learns
    /// the commit index through what it applies).
    pub committed: Option<u64>,
    /// The index of the last entry this node applied to its store.
    pub applied: Option<u64>,
    /// The last index covered by this node's snapshot (the log before it is
    /// compacted).
    pub snapshot: Option<u64>,
    /// The voters, as this node knows them.
    pub voters: Vec<NodeId>,
    /// Members that receive the log without voting.
    pub learners: Vec<NodeId>,
    /// Whether this node left the group in this run (it refuses writes).
    pub left: bool,
}

/// Moves local writes to peers and keeps replicas converged.
///
/// # Contract
///
/// - [`replicate`](Replicator::replicate) is called with the records of every local
///   write, in order; it pushes them to every peer and returns once `ack` is met.
/// - Independently of pushes, the replicator repairs anything missed (anti-entropy),
///   so replicas converge once the network heals.
///
/// It is an I/O plug-in, so it is async (`#[async_trait]`), `Send + Sync +
/// 'static`, and held as `Arc<dyn Replicator>`.
#[async_trait]
pub trait Replicator: Send + Sync + std::fmt::Debug + 'static {
    /// Replicates freshly written local records, waiting up to `timeout` for `ack`.
    ///
    /// # Errors
    ///
    /// [`ReplicationError::AckTimeout`] when the level is not met in time (the write
    /// stays applied locally and keeps replicating).
    async fn replicate(
        &self,
        records: Vec<Record>,
        ack: AckLevel,
        timeout: Duration,
    ) -> Result<AckReport, ReplicationError>;

    /// Runs one anti-entropy round with one peer now (normally done on a timer).
    ///
    /// # Errors
    ///
    /// The peer's failure, when the round failed.
    async fn sync_round(&self) -> Result<(), ReplicationError>;

    /// What this node knows of each peer.
    fn peers(&self) -> Vec<PeerStatus>;

    /// How this replicator replicates. The management layer sends writes
    /// through [`commit`](Replicator::commit) in [`ReplicationMode::Raft`], and
    /// applies them locally then [`replicate`](Replicator::replicate)s them
    /// otherwise.
    ///
    /// The default is [`ReplicationMode::LastWriterWins`].
    fn mode(&self) -> ReplicationMode {
        ReplicationMode::LastWriterWins
    }

    /// This node's view of its consensus group: leader, term, indexes,
    /// voters and learners.
    ///
    /// The default is `None`: last-writer-wins has no group.
    fn consensus_status(&self) -> Option<ConsensusStatus> {
        None
    }

    /// Commits `txn` through consensus, from any node (a follower hands it to
    /// the leader), waiting up to `timeout`; once it returns, this node's store
    /// holds the outcome. Its conditions are evaluated when it is applied, the
    /// same on every replica: either every write applies or none does.
    ///
    /// The default refuses: without consensus there is no such write.
    ///
    /// # Errors
    ///
    /// [`ReplicationError::NeedsConsensus`] from a last-writer-wins replicator;
    /// [`ReplicationError::Consensus`] when no majority decided in time (the
    /// write may still commit later); [`ReplicationError::Store`] for a
    /// transaction the store would refuse (bad key, value too large).
    async fn commit(&self, txn: Transaction, timeout: Duration) -> Result<Committed, ReplicationError> {
        let _ = (txn, timeout);
        Err(ReplicationError::NeedsConsensus { operation: "a conditional or transactional write" })
    }

    /// Returns once this node's store holds every write committed before the
    /// call began (a read index confirmed by a majority), so a read of the
    /// store that follows is linearizable. Waits up to `timeout`.
    ///
    /// The default refuses: last-writer-wins has no such point.
    ///
    /// # Errors
    ///
    /// [`ReplicationError::NeedsConsensus`] from a last-writer-wins replicator;
    /// [`ReplicationError::Consensus`] when no leader confirmed in time.
    async fn linearizable_barrier(&self, timeout: Duration) -> Result<(), ReplicationError> {
        let _ = timeout;
        Err(ReplicationError::NeedsConsensus { operation: "a consistent read" })
    }

    /// Whether member `node` could be taken out of the group that decides
    /// writes now, checked before anything is written for its removal.
    ///
    /// The default says yes: last-writer-wins has no voters.
    ///
    /// # Errors
    ///
    /// [`ReplicationError::Consensus`] saying why not (Raft mode: too few of
    /// the voters that would remain are reachable and take part).
    async fn check_removal(&self, node: &NodeId) -> Result<(), ReplicationError> {
        let _ = node;
        Ok(())
    }

    /// Takes member `node` out of the group that decides writes, for good (an
    /// operator removed it), waiting up to `timeout`.
    ///
    /// The default does nothing: last-writer-wins has no voters (the membership
    /// record's state is all there is).
    ///
    /// # Errors
    ///
    /// [`ReplicationError::Consensus`] when the change could not be committed.
    async fn remove_member(&self, node: &NodeId, timeout: Duration) -> Result<(), ReplicationError> {
        let _ = (node, timeout);
        Ok(())
    }
}
