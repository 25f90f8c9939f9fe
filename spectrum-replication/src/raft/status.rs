//! What a Raft node reports about its group (`spectrum status`).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use openraft::ServerState;
use spectrum_core::NodeId;

use super::RaftMember;
use super::replicator::RaftReplicator;
use crate::replicator::{ConsensusRole, ConsensusStatus};

/// The highest index held by a majority of `matched` (one entry per voter).
fn majority_index(mut matched: Vec<u64>) -> Option<u64> {
    if matched.is_empty() {
        return None;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(matched.len() / 2).copied()
}

fn node_ids<'a>(members: impl Iterator<Item = &'a RaftMember>) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = members.filter_map(|m| m.id.parse().ok()).collect();
    ids.sort();
    ids
}

impl RaftReplicator {
    /// This node's view of the group, from openraft's metrics.
    pub fn status(&self) -> ConsensusStatus {
        let inner = &self.inner;
        let m = inner.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => ConsensusRole::Leader,
            ServerState::Follower => ConsensusRole::Follower,
            ServerState::Candidate => ConsensusRole::Candidate,
            ServerState::Learner => ConsensusRole::Learner,
            ServerState::Shutdown => ConsensusRole::Stopped,
        };
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let committed = (role == ConsensusRole::Leader)
            .then(|| {
                let matched = m.replication.clone().unwrap_or_default();
                let of = |v: &u64| {
                    if *v == inner.id {
                        m.last_log_index.unwrap_or(0)
                    } else {
                        matched.get(v).copied().flatten().map_or(0, |l| l.index)
                    }
                };
                majority_index(voters.iter().map(of).collect())
            })
            .flatten();
        let leader = m.current_leader.and_then(|l| membership.get_node(&l)).and_then(|n| n.id.parse().ok());
        ConsensusStatus {
            role,
            leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed,
            applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            voters: node_ids(membership.nodes().filter(|(id, _)| voters.contains(id)).map(|(_, n)| n)),
            learners: node_ids(membership.learner_ids().filter_map(|id| membership.get_node(&id))),
            left: inner.left.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::majority_index;

    #[test]
    fn the_commit_index_is_what_a_majority_of_voters_holds() {
        assert_eq!(majority_index(vec![9, 7, 3]), Some(7));
        assert_eq!(majority_index(vec![9, 3]), Some(3), "two voters: both");
        assert_eq!(majority_index(vec![5]), Some(5));
        assert_eq!(majority_index(vec![10, 10, 2, 1]), Some(2), "four voters: three");
        assert_eq!(majority_index(vec![]), None);
    }
}
