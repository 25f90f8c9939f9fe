//! Taking a voter out of the Raft group without losing the group: an
//! operator's removal and a node's own clean leave.
//!
//! A removal is openraft's joint-consensus membership change: the leader
//! commits a configuration with both the old and the new voter sets, then the
//! new one alone. Each step needs a majority of *every* set involved, so a
//! removal that starts while a majority of the new set (or of the old) is
//! unreachable would leave the group stuck in the joint configuration, unable
//! to commit anything until those nodes return. The leader therefore checks
//! first, with its failure detector, that both sets have a reachable majority
//! ([`removal_check`]), and refuses the change otherwise (nothing is
//! proposed; the caller may retry).
//!
//! A leaving leader removes itself: openraft keeps it leading until the
//! configuration without it is committed (so the remaining voters hold it),
//! then it steps down and the remaining voters elect a leader among
//! themselves. openraft 0.9 has no leadership transfer; stepping down after
//! the commit is the handover the Raft paper (§6) describes for a leader
//! outside the new configuration.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use spectrum_core::{Member, MemberState, NodeId, PeerAddr};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::codec::to_json;
use super::network::Method;
use super::raft_node_id;
use super::replicator::{GroupView, Inner, ProbeAnswer, RaftReplicator, refused_as_removed};
use crate::error::ReplicationError;
use crate::proto;

/// Between two attempts of a removal refused for want of a reachable majority
/// or of a leader.
const REMOVAL_RETRY: Duration = Duration::from_millis(100);
/// How long a removal refused for want of a reachable majority is tried
/// again before the refusal is final (a voter that just came back is found
/// alive within it).
const UNREACHABLE_GRACE: Duration = Duration::from_secs(2);
/// How long a voter has to answer the probe that tells the leader it is
/// reachable before a removal.
const REACH_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a node goes without hearing from a member of its group before it
/// probes that member (see [`Inner::keep_in_touch`]).
const CONTACT_EVERY: Duration = Duration::from_secs(1);
/// How often a node out of its group asks to be taken back (see
/// [`Inner::rejoin_if_out`]).
const REJOIN_EVERY: Duration = Duration::from_secs(5);

/// Why the leader refused to take a voter out of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemovalRefused {
    /// The voter is the only one: there is no group left to hand writes to.
    LastVoter,
    /// Too few of the voters of one configuration are reachable: the change
    /// could not commit, and the group would be stuck between the two.
    NoReachableMajority {
        /// `"remaining"` or `"current"`: the configuration that lacks one.
        which: &'static str,
        /// Reachable voters of it.
        reachable: usize,
        /// Its voters.
        voters: usize,
    },
}

impl fmt::Display for RemovalRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemovalRefused::LastVoter => {
                f.write_str("it is the only voter: the group would have nobody left to decide writes")
            }
            RemovalRefused::NoReachableMajority { which, reachable, voters } => write!(
                f,
                "only {reachable} of the {voters} {which} voters are reachable and take part, not a \
                 majority: the change could not commit and writes would stop; bring a voter back first"
            ),
        }
    }
}

/// Whether the voter `leaving` may be taken out of `voters` now, given the
/// voters the leader can reach (`reachable`, the leader included): the
/// remaining voters, and the current ones, must each have a reachable
/// majority, and someone must remain.
pub(crate) fn removal_check(
    voters: &BTreeSet<u64>,
    leaving: u64,
    reachable: &BTreeSet<u64>,
) -> Result<(), RemovalRefused> {
    let remaining: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != leaving).collect();
    if remaining.is_empty() {
        return Err(RemovalRefused::LastVoter);
    }
    for (which, set) in [("remaining", &remaining), ("current", voters)] {
        let up = set.intersection(reachable).count();
        if up < set.len() / 2 + 1 {
            return Err(RemovalRefused::NoReachableMajority { which, reachable: up, voters: set.len() });
        }
    }
    Ok(())
}

/// What a removal attempt on one node came to.
enum Attempt {
    Done,
    /// Not the leader: ask the one at this address.
    Forward(Option<spectrum_core::PeerAddr>),
    /// Refused or failed for now; try again (this is why).
    Retry(String),
    /// Refused for good (this is why).
    Refused(String),
    /// Refused while too few voters are reachable (this is why): tried again
    /// for [`UNREACHABLE_GRACE`] (a voter may have just come back), then refused.
    Unreachable(String),
}

impl Inner {
    /// The voters this node (the leader) can reach now: itself, and every
    /// voter that answers a probe within [`REACH_TIMEOUT`]. Asked, not read
    /// off the failure detector: that one takes seconds to stop calling a
    /// node that just died alive, and a removal started meanwhile would
    /// leave a joint configuration that cannot commit (every write stalls).
    async fn reachable_voters(&self) -> BTreeSet<u64> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let probes = membership.nodes().filter(|(id, _)| **id != self.id && voters.contains(id)).map(
            |(id, node)| async move {
                let addr = self.wire.resolve(node)?;
                let call = proto::RaftCall::default();
                let answer =
                    self.wire.call_json::<ProbeAnswer>(&addr, Method::Probe, call, REACH_TIMEOUT).await;
                // A voter that answers but takes no part (it lost its Raft
                // state: see `lost_state`) cannot help commit the change.
                let recorded = node.incarnation;
                answer
                    .ok()
                    .filter(|a| {
                        let own = a.member.incarnation;
                        a.takes_part && !super::lost_state::differ(recorded, own)
                    })
                    .map(|_| *id)
            },
        );
        let mut reachable: BTreeSet<u64> =
            futures::future::join_all(probes).await.into_iter().flatten().collect();
        reachable.insert(self.id);
        reachable
    }

    /// One attempt to take `node` out of the group on this node, when it
    /// leads: checked with [`removal_check`], then a joint-consensus change.
    async fn try_remove(&self, node: u64, deadline: Instant) -> Attempt {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        if !membership.nodes().any(|(n, _)| *n == node) {
            return Attempt::Done;
        }
        if !self.is_leader() {
            let leader = self.raft.metrics().borrow().current_leader;
            let addr = leader
                .and_then(|l| membership.nodes().find(|(id, _)| **id == l).map(|(_, n)| n.clone()))
                .and_then(|n| self.wire.resolve(&n));
            return Attempt::Forward(addr);
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if voters.contains(&node)
            && let Err(refused) = removal_check(&voters, node, &self.reachable_voters().await)
        {
            return match refused {
                RemovalRefused::LastVoter => Attempt::Refused(refused.to_string()),
                RemovalRefused::NoReachableMajority { .. } => Attempt::Unreachable(refused.to_string()),
            };
        }
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([node]));
        match tokio::time::timeout_at(deadline, self.raft.change_membership(change, false)).await {
            Ok(Ok(_)) => Attempt::Done,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Attempt::Forward(f.leader_node.and_then(|n| self.wire.resolve(&n)))
            }
            Ok(Err(e)) => Attempt::Retry(e.to_string()),
            Err(_) => Attempt::Retry("the membership change did not commit in time".into()),
        }
    }

    /// Whether this node leads now.
    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == openraft::ServerState::Leader
    }

    /// Whether the group could take voter `node` out now, as this node sees
    /// it (the leader checks again when it makes the change): checked before
    /// anything is written, since a write proposed without a majority may
    /// still commit once one returns, long after its caller was told its
    /// outcome is unknown (a trial's removal left the record saying removed
    /// while the node still voted). `Err` says why not.
    pub(crate) async fn removal_precheck(&self, node: &NodeId) -> Result<(), String> {
        let id = raft_node_id(node);
        let voters: BTreeSet<u64> = self.raft.metrics().borrow().membership_config.voter_ids().collect();
        if !voters.contains(&id) {
            return Ok(());
        }
        let reachable = self.reachable_voters().await;
        removal_check(&voters, id, &reachable).map_err(|refused| refused.to_string())
    }

    /// Takes `node` out of the group (voters and learners), from any node:
    /// the leader checks that the group keeps a reachable majority and
    /// commits the change; another node asks the leader. Retries while
    /// refused or leaderless, until `timeout`.
    pub(crate) async fn remove_voter(&self, node: &NodeId, timeout: Duration) -> Result<(), String> {
        let id = raft_node_id(node);
        let deadline = Instant::now() + timeout;
        let mut unreachable_since = None;
        loop {
            let last = match self.try_remove(id, deadline).await {
                Attempt::Done => return Ok(()),
                Attempt::Refused(why) => return Err(why),
                Attempt::Unreachable(why) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= UNREACHABLE_GRACE {
                        return Err(why);
                    }
                    why
                }
                Attempt::Retry(why) => why,
                Attempt::Forward(None) => "no leader is known".to_owned(),
                Attempt::Forward(Some(addr)) => {
                    let call =
                        proto::RaftCall { json: to_json(&node.to_string()), ..proto::RaftCall::default() };
                    let left =
                        deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                    match self.wire.call_json::<Result<(), String>>(&addr, Method::Remove, call, left).await {
                        Ok(Ok(())) => return Ok(()),
                        // The leader's refusal, or what was left after its own
                        // retries until the same deadline: asking again would
                        // only outlast the caller.
                        Ok(Err(why)) => return Err(why),
                        Err(e) => e.to_string(),
                    }
                }
            };
            if Instant::now() + REMOVAL_RETRY > deadline {
                return Err(last);
            }
            debug!(node = %node, reason = %last, "removal from the raft group not done yet; retrying");
            tokio::time::sleep(REMOVAL_RETRY).await;
        }
    }

    /// Whether this node's own membership record says it left the cluster
    /// (it then asks to join again when it restarts, whatever its Raft log
    /// still says).
    pub(crate) async fn recorded_as_left(&self) -> bool {
        self.recorded_state(&self.node).await == Some(MemberState::Left)
    }

    /// The state `node`'s membership record has in this node's store (`None`
    /// when there is no readable record).
    pub(crate) async fn recorded_state(&self, node: &NodeId) -> Option<MemberState> {
        let store = self.store.upgrade()?;
        let record = store.get(&Member::key_of(node)).await.ok()??;
        record.value.and_then(|v| Member::from_record_value(&v).ok()).map(|m| m.state)
    }
}

impl Inner {
    /// Probes every member of the group this node has not heard from for
    /// [`CONTACT_EVERY`], once per that interval, until the node stops: a
    /// follower exchanges nothing else with the other followers, so without it
    /// their liveness (and clock offsets) as this node sees them would go
    /// stale, and `status` through a follower would call a healthy follower
    /// down. A probe goes through the handshake on both sides, so it is a
    /// contact and a clock measurement for both.
    pub(crate) async fn keep_in_touch(&self) {
        let mut stop = self.stop.subscribe();
        let mut last_rejoin = None;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(CONTACT_EVERY) => {}
            }
            let now = std::time::Instant::now();
            let quiet: Vec<PeerAddr> = self
                .member_addrs()
                .into_iter()
                .filter(|addr| {
                    self.peers
                        .get(addr)
                        .and_then(|p| p.last_contact)
                        .is_none_or(|at| now.saturating_duration_since(at) >= CONTACT_EVERY)
                })
                .collect();
            let probes = quiet.iter().map(|addr| async move {
                let call = proto::RaftCall::default();
                match self.wire.call_json::<ProbeAnswer>(addr, Method::Probe, call, CONTACT_EVERY).await {
                    Ok(answer) => Some((addr, answer)),
                    Err(e) => {
                        debug!(peer = %addr, error = %e, "no answer to a contact probe");
                        None
                    }
                }
            });
            let answers: Vec<(&PeerAddr, ProbeAnswer)> =
                futures::future::join_all(probes).await.into_iter().flatten().collect();
            self.rejoin_if_out(&answers, &mut last_rejoin).await;
        }
    }

    /// A member taken out of the group while it ran (`spectrum node remove`)
    /// hears from nobody any more, so it probes every member, and their newer
    /// configuration without it says it is out: it then stops standing for
    /// election, and every [`REJOIN_EVERY`] asks the leader to take it back,
    /// which the leader does once an operator has undrained it (until then the
    /// refusal is kept for [`RaftReplicator::join_refused`]). A member the
    /// group holds as a learner only (taken back, but its promotion to voter
    /// failed) asks the same way, and the leader makes it a voter.
    async fn rejoin_if_out(&self, answers: &[(&PeerAddr, ProbeAnswer)], last: &mut Option<Instant>) {
        if !self.joined.load(Ordering::Acquire) || self.left.load(Ordering::Acquire) {
            return;
        }
        let (own_index, listed) = self.own_configuration();
        let me = self.me.id.as_str();
        let shown = |keep: &dyn Fn(&GroupView) -> bool| -> Vec<&PeerAddr> {
            answers
                .iter()
                .filter(|(_, a)| a.initialized && a.group.as_ref().is_some_and(keep))
                .map(|(addr, _)| *addr)
                .collect()
        };
        let excluded = shown(&|g| g.excludes(me, own_index, listed));
        // In the group as a learner only: taken back, but not yet a voter again.
        let learner = listed && !self.is_voter();
        let as_learner = if learner { shown(&|g| g.has_as_learner_only(me)) } else { Vec::new() };
        if excluded.is_empty() && as_learner.is_empty() {
            // Asked before, and a member shows this node a voter now (an ask
            // whose answer was lost may still have made it one): it stands
            // for election again.
            if last.is_some()
                && self.is_voter()
                && !shown(&|g| g.index >= own_index && g.has_as_voter(me)).is_empty()
            {
                *last = None;
                self.in_the_group();
                info!(node = %self.me.id, "a voter of the raft group again");
            }
            return;
        }
        if last.is_some_and(|at| at.elapsed() < REJOIN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        // Out of the group, it stands for no election (a learner stands for none anyway).
        let members = if excluded.is_empty() {
            as_learner
        } else {
            self.raft.runtime_config().elect(false);
            excluded
        };
        match self.join_through(&members).await {
            Ok(true) => {
                *last = None;
                self.in_the_group();
                info!(node = %self.me.id, "taken back into the raft group");
            }
            Ok(false) => {}
            Err(e) => match refused_as_removed(&e) {
                Some(reason) => {
                    debug!(node = %self.me.id, %reason, "out of the raft group, and refused");
                    *self.join_refused.lock() = Some(reason.to_owned());
                }
                None => {
                    debug!(node = %self.me.id, error = %e, "out of the raft group; could not ask to join")
                }
            },
        }
    }

    /// The addresses of the other members of the group (voters and
    /// learners), as this node knows them.
    pub(crate) fn member_addrs(&self) -> Vec<PeerAddr> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        membership
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .filter_map(|(_, node)| node.addr.parse::<PeerAddr>().ok())
            .collect()
    }
}

impl RaftReplicator {
    /// Leaves the Raft group cleanly, waiting up to `timeout`: from now on
    /// this node refuses writes and consistent reads
    /// ([`ReplicationError::NotAMember`]), then the leader takes it out of
    /// the voters through a joint-consensus membership change (a leaving
    /// leader does it itself and steps down once the group without it has
    /// committed it: openraft 0.9 has no leadership transfer), and this node stops
    /// standing for election. The remaining voters keep deciding writes.
    ///
    /// The node asks to join again when it restarts with a membership record
    /// that says it left.
    ///
    /// # Errors
    ///
    /// [`ReplicationError::Consensus`] when the change was refused (this is
    /// the last voter, or the group without it would have no reachable
    /// majority) or did not commit in time: the node then stays a voter, and
    /// still refuses writes.
    pub async fn leave(&self, timeout: Duration) -> Result<(), ReplicationError> {
        let inner = &self.inner;
        inner.left.store(true, Ordering::Release);
        let me: NodeId = inner.node.clone();
        match inner.remove_voter(&me, timeout).await {
            Ok(()) => {
                inner.raft.runtime_config().elect(false);
                info!(node = %me, "left the raft group");
                Ok(())
            }
            Err(reason) => {
                warn!(node = %me, %reason, "could not leave the raft group; still a voter");
                Err(ReplicationError::Consensus { reason: format!("node {me} could not leave: {reason}") })
            }
        }
    }

    /// Whether this node left the group ([`leave`](Self::leave)) in this run.
    pub fn has_left(&self) -> bool {
        self.inner.left.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_voter_leaves_when_the_remaining_voters_have_a_reachable_majority() {
        assert_eq!(removal_check(&set(&[1, 2, 3]), 3, &set(&[1, 2, 3])), Ok(()));
        // The leaving node itself may be down (an operator removes a dead node).
        assert_eq!(removal_check(&set(&[1, 2, 3]), 3, &set(&[1, 2])), Ok(()));
    }

    #[test]
    fn a_removal_that_would_leave_no_reachable_majority_is_refused() {
        let refused = removal_check(&set(&[1, 2, 3]), 3, &set(&[1, 3])).unwrap_err();
        assert_eq!(
            refused,
            RemovalRefused::NoReachableMajority { which: "remaining", reachable: 1, voters: 2 }
        );
        assert!(refused.to_string().contains("only 1 of the 2 remaining voters"), "{refused}");
        // Four voters, two reachable: the three remaining have a majority,
        // the four current ones (the joint configuration's old half) not.
        let refused = removal_check(&set(&[1, 2, 3, 4]), 4, &set(&[1, 2])).unwrap_err();
        assert_eq!(
            refused,
            RemovalRefused::NoReachableMajority { which: "current", reachable: 2, voters: 4 }
        );
        let refused = removal_check(&set(&[1, 2, 3, 4, 5]), 5, &set(&[1, 2, 5])).unwrap_err();
        assert_eq!(
            refused,
            RemovalRefused::NoReachableMajority { which: "remaining", reachable: 2, voters: 4 }
        );
        assert_eq!(removal_check(&set(&[1, 2, 3, 4, 5]), 5, &set(&[1, 2, 3])), Ok(()));
    }

    #[test]
    fn the_last_voter_cannot_leave() {
        assert_eq!(removal_check(&set(&[7]), 7, &set(&[7])), Err(RemovalRefused::LastVoter));
    }
}
