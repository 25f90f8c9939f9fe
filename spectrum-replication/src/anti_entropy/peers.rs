//! Which peers to talk to: a pure decision over membership, the seeds and the
//! ids addresses answered as, plus reading membership from the store.

use std::collections::{BTreeMap, BTreeSet};

use spectrum_core::{MEMBERSHIP_PREFIX, Member, MemberState, NodeId, PeerAddr};
use tracing::warn;

use super::Inner;
use crate::error::StoreError;
use crate::record::VersionToken;

/// A membership record as read from the store: the member, and the write that
/// recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recorded {
    /// The member.
    pub(super) member: Member,
    /// The write that recorded it (for a member that left: its leaving).
    pub(super) token: VersionToken,
}

/// The peers writes go to and rounds pick from.
///
/// - Seeds are where to start; `members` (in key order) are what is known: every
///   member that has not left is a peer.
/// - An address a member left from is no longer a peer, unless a member later
///   in key order is active at it.
/// - An address that answered as this node (`self_id`) is this node under
///   another spelling (`localhost:P`), and is no peer.
/// - An address that answered as a node membership now records at another
///   address is that node's old address: it moved, and the old one is no peer.
/// - `self_addr` is never a peer.
pub(super) fn select_peers<'a>(
    members: impl IntoIterator<Item = &'a Member>,
    seeds: &[PeerAddr],
    self_id: &NodeId,
    self_addr: &PeerAddr,
    answered_as: &BTreeMap<PeerAddr, NodeId>,
) -> BTreeSet<PeerAddr> {
    let mut set: BTreeSet<PeerAddr> = seeds.iter().cloned().collect();
    let mut left = BTreeSet::new();
    // Where membership says each node is now.
    let mut recorded: BTreeMap<&NodeId, &PeerAddr> = BTreeMap::new();
    for member in members {
        recorded.insert(&member.id, &member.addr);
        if &member.id == self_id {
            continue;
        }
        if member.state.is_gone() {
            left.insert(&member.addr);
            continue;
        }
        left.remove(&member.addr);
        set.insert(member.addr.clone());
    }
    set.retain(|a| !left.contains(a));
    set.retain(|a| {
        let answered = answered_as.get(a);
        let me = answered == Some(self_id);
        let moved = answered.and_then(|id| recorded.get(id)).is_some_and(|now| *now != a);
        !me && !moved
    });
    set.remove(self_addr);
    set
}

/// The addresses of members that left (not those an operator removed) and
/// are no peer now, without this node and `peers`. A member that left comes
/// back when it restarts; when every member left (a whole cluster stopped,
/// each recording it), none is active to take the others back, and each
/// restarted node would stay alone. So rounds call on these now and then (see
/// [`LEFT_RECHECK_EVERY`](super::LEFT_RECHECK_EVERY)): one that is back
/// answers with its `active` record, and is a peer from then on.
pub(super) fn left_addrs(
    membership: &[Recorded],
    peers: &[PeerAddr],
    self_id: &NodeId,
    self_addr: &PeerAddr,
    answered_as: &BTreeMap<PeerAddr, NodeId>,
) -> Vec<PeerAddr> {
    let addrs: BTreeSet<&PeerAddr> = membership
        .iter()
        .filter(|r| &r.member.id != self_id && r.member.state == MemberState::Left)
        .map(|r| &r.member.addr)
        .filter(|a| *a != self_addr && !peers.contains(a) && answered_as.get(*a) != Some(self_id))
        .collect();
    addrs.into_iter().cloned().collect()
}

/// Members recorded as gone (left, or removed by an operator), each with the
/// write that recorded it.
pub(super) fn left_members(members: &[Recorded]) -> BTreeMap<NodeId, VersionToken> {
    members
        .iter()
        .filter(|r| r.member.state.is_gone())
        .map(|r| (r.member.id.clone(), r.token.clone()))
        .collect()
}

/// The peers whose acknowledgement counts for a write: those at the current
/// address of a member that is not gone (left or removed). A seed that no member
/// is recorded at (an old address of a member that moved, a node that never
/// joined) is still pushed to, but does not count. Before any other member is
/// recorded (a cluster bootstrapping), every peer counts.
pub(super) fn ack_voters(peers: &[PeerAddr], members: &[Recorded], self_id: &NodeId) -> Vec<PeerAddr> {
    let current: BTreeSet<&PeerAddr> = members
        .iter()
        .filter(|r| &r.member.id != self_id && !r.member.state.is_gone())
        .map(|r| &r.member.addr)
        .collect();
    if members.iter().all(|r| &r.member.id == self_id) {
        return peers.to_vec();
    }
    peers.iter().filter(|a| current.contains(a)).cloned().collect()
}

impl Inner {
    /// Every readable membership record, in key order (an unreadable one is
    /// logged and skipped).
    pub(super) async fn membership(&self) -> Result<Vec<Recorded>, StoreError> {
        let mut members = Vec::new();
        for rec in self.store.scan(MEMBERSHIP_PREFIX).await? {
            let Some(value) = &rec.value else { continue };
            match Member::from_record_value(value) {
                Ok(member) => members.push(Recorded { member, token: rec.token() }),
                Err(e) => warn!(key = %rec.key, error = %e, "ignoring unreadable membership entry"),
            }
        }
        Ok(members)
    }

    /// The members of `membership` that left, to call on now and then (see
    /// [`left_addrs`]), given its `peers`.
    pub(super) fn left_of(&self, membership: &[Recorded], peers: &[PeerAddr]) -> Vec<PeerAddr> {
        left_addrs(membership, peers, self.store.node_id(), &self.self_addr, &self.peers.answered_as())
    }

    /// The peers of `membership` (see [`select_peers`]), remembered as the
    /// known peers; channels to anything else are dropped.
    pub(super) fn peers_of(&self, membership: &[Recorded]) -> Vec<PeerAddr> {
        let set = select_peers(
            membership.iter().map(|r| &r.member),
            &self.seeds,
            self.store.node_id(),
            &self.self_addr,
            &self.peers.answered_as(),
        );
        self.channels.retain(|addr| set.contains(addr));
        let addrs: Vec<PeerAddr> = set.into_iter().collect();
        self.known.lock().clone_from(&addrs);
        self.peers.set_known(&addrs);
        addrs
    }
}

#[cfg(test)]
mod tests {
    use spectrum_core::MemberState;

    use super::*;

    #[test]
    fn only_current_addresses_of_members_still_in_the_cluster_vote_on_acks() {
        let members = recorded(&[
            ("me", 7009, MemberState::Active),
            ("n2", 7002, MemberState::Active),
            ("n3", 7013, MemberState::Active),
            ("n4", 7004, MemberState::Removed),
        ]);
        let peers = [addr(7002), addr(7003), addr(7004), addr(7013)];
        let me: NodeId = "me".parse().unwrap();
        assert_eq!(ack_voters(&peers, &members, &me), [addr(7002), addr(7013)], "7003 is n3's old address");
        assert_eq!(ack_voters(&peers, &members[..1], &me), peers, "bootstrapping: every peer counts");
    }

    #[test]
    fn members_that_left_are_called_on_now_and_then_but_not_removed_ones_or_this_node() {
        let members = recorded(&[
            ("me", 7000, MemberState::Left),
            ("n2", 7002, MemberState::Left),
            ("n3", 7003, MemberState::Left),
            ("n4", 7004, MemberState::Removed),
            ("n5", 7005, MemberState::Active),
            ("n6", 7006, MemberState::Left),
        ]);
        // n3's address is a peer already (a seed); 7006 answered as this node.
        let answered_as = BTreeMap::from([(addr(7006), id("me"))]);
        let left = left_addrs(&members, &[addr(7003), addr(7005)], &id("me"), &addr(7000), &answered_as);
        assert_eq!(left, [addr(7002)]);
    }

    /// Membership records of `(name, port, state)`, each recorded by one write.
    fn recorded(members: &[(&str, u16, MemberState)]) -> Vec<Recorded> {
        let token: VersionToken = "me:1".parse().unwrap();
        members
            .iter()
            .map(|(name, port, state)| Recorded { member: member(name, *port, *state), token: token.clone() })
            .collect()
    }

    fn addr(port: u16) -> PeerAddr {
        format!("127.0.0.1:{port}").parse().unwrap()
    }

    fn id(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    fn member(name: &str, port: u16, state: MemberState) -> Member {
        Member::new(id(name), addr(port), state)
    }

    fn select(members: &[Member], seeds: &[PeerAddr], answered: &[(PeerAddr, &str)]) -> Vec<PeerAddr> {
        let answered_as = answered.iter().map(|(a, n)| (a.clone(), id(n))).collect();
        select_peers(members, seeds, &id("me"), &addr(7000), &answered_as).into_iter().collect()
    }

    #[test]
    fn seeds_are_peers_until_known_otherwise_but_never_this_node() {
        assert_eq!(select(&[], &[addr(7002), addr(7001), addr(7000)], &[]), [addr(7001), addr(7002)]);
        assert!(select(&[], &[], &[]).is_empty());
    }

    #[test]
    fn members_are_peers_except_this_node_and_those_that_left() {
        let members = [
            member("me", 7009, MemberState::Active),
            member("n3", 7003, MemberState::Joining),
            member("n4", 7004, MemberState::Left),
            member("n5", 7005, MemberState::Active),
        ];
        assert_eq!(
            select(&members, &[addr(7004)], &[]),
            [addr(7003), addr(7005)],
            "a seed n4 left is no peer"
        );
    }

    #[test]
    fn an_address_left_from_is_a_peer_again_once_a_later_member_is_active_there() {
        let reused = [member("n4", 7004, MemberState::Left), member("n6", 7004, MemberState::Active)];
        assert_eq!(select(&reused, &[], &[]), [addr(7004)]);
        let reversed = [member("n6", 7004, MemberState::Active), member("n7", 7004, MemberState::Left)];
        assert!(select(&reversed, &[], &[]).is_empty(), "membership is read in key order");
    }

    #[test]
    fn a_node_that_moved_is_reached_at_its_new_address_only() {
        let members = [member("n2", 7012, MemberState::Active)];
        assert_eq!(select(&members, &[addr(7002)], &[(addr(7002), "n2")]), [addr(7012)]);
        assert_eq!(
            select(&members, &[addr(7002)], &[(addr(7002), "n3")]),
            [addr(7002), addr(7012)],
            "another node answering at a seed keeps it"
        );
    }

    #[test]
    fn this_node_under_another_spelling_is_no_peer() {
        let localhost: [PeerAddr; 1] = ["http://localhost:7000".parse().unwrap()];
        assert_eq!(select(&[], &localhost, &[]), localhost, "not known to be itself yet");
        assert!(select(&[], &localhost, &[(localhost[0].clone(), "me")]).is_empty());
    }

    #[test]
    fn left_members_are_listed_with_the_write_that_recorded_their_leaving() {
        let token = |seq| VersionToken { origin: id("n1").into(), seq };
        let members = [
            Recorded { member: member("n3", 7003, MemberState::Active), token: token(1) },
            Recorded { member: member("n4", 7004, MemberState::Left), token: token(2) },
        ];
        assert_eq!(left_members(&members), BTreeMap::from([(id("n4"), token(2))]));
    }
}
