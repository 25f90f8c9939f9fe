//! When tombstones may be collected: a pure policy over the digests this node
//! knows and the members that left, plus the step that applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use spectrum_core::{NodeId, PeerAddr};
use tracing::{debug, trace};

use super::Inner;
use super::peers::left_members;
use crate::error::ReplicationError;
use crate::horizon::tombstone_horizon;
use crate::origin::Origin;
use crate::peers::PeerDigest;
use crate::record::{VersionToken, VersionVector};

/// Why tombstones may not be collected yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hold {
    /// A current peer has not shown a digest yet.
    NoDigest(PeerAddr),
    /// An origin whose writes are known here belongs to a node that is neither a
    /// member with a known digest nor recorded as having left: it may still
    /// have writes in flight.
    UnknownWriter(Origin),
    /// A member that left has writes (up to the one recording its leaving) that
    /// not every member has seen.
    LeftMemberUnsettled {
        /// The member.
        member: NodeId,
        /// The write that recorded its leaving.
        token: VersionToken,
    },
    /// Members have not yet seen each other's writes, or every write of a
    /// retired origin (see [`tombstone_horizon`]).
    NoHorizon,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::NoDigest(peer) => write!(f, "no digest from member {peer} yet"),
            Hold::UnknownWriter(w) => {
                write!(f, "writer {w} belongs to node {}, not a member with a known digest", w.node())
            }
            Hold::LeftMemberUnsettled { member, token } => {
                write!(f, "member {member} left with writes up to {token} not seen everywhere")
            }
            Hold::NoHorizon => write!(f, "members have not yet seen each other's writes"),
        }
    }
}

/// The horizon up to which tombstones may be collected, or why they must wait.
///
/// `own` is the origin this node's store writes under, with its digest;
/// `peers` every current peer with the latest digest it showed (under the
/// origin its store writes under), if any; `left` the members that left, each
/// with the write recording its leaving. Members are nodes, origins are their
/// store incarnations: each digest is read as its member's, through the
/// member's current origin. Collection waits until:
///
/// 1. every current peer has shown a digest;
/// 2. every origin whose writes appear in a digest belongs to a node that is a
///    member with a digest here (through any of its incarnations), or has left;
/// 3. every member that left is settled: every digest covers the write that
///    recorded its leaving (its last write), and so every write it made;
/// 4. the digests have a [`tombstone_horizon`] (which also waits for every
///    member to agree on the writes of retired incarnations).
///
/// A peer's digest is the latest one it showed, so a peer that lost its disk
/// is read through its old store's digest until its new store shows one. That
/// is sound: the new store's first write waits for
/// [`FirstWrite`](crate::horizon::FirstWrite), so it follows every tombstone
/// the old digest lets this node collect. Forgetting the old digest as soon as
/// a message shows the new origin would not be enough on its own (the new
/// store may write before any message reaches this node), so it is not done.
pub(super) fn collection_horizon(
    own: (&Origin, &VersionVector),
    peers: &[(PeerAddr, Option<PeerDigest>)],
    left: &BTreeMap<NodeId, VersionToken>,
) -> Result<VersionVector, Hold> {
    let mut digests = BTreeMap::new();
    for (addr, digest) in peers {
        let d = digest.as_ref().ok_or_else(|| Hold::NoDigest(addr.clone()))?;
        digests.insert(d.origin.clone(), d.digest.clone());
    }
    digests.insert(own.0.clone(), own.1.clone());
    let members: BTreeSet<&NodeId> = digests.keys().map(Origin::node).collect();
    let writers: BTreeSet<&Origin> = digests.values().flat_map(|d| d.entries.keys()).collect();
    if let Some(unknown) =
        writers.into_iter().find(|w| !members.contains(w.node()) && !left.contains_key(w.node()))
    {
        return Err(Hold::UnknownWriter(unknown.clone()));
    }
    if let Some((member, token)) = left.iter().find(|(_, token)| digests.values().any(|d| !d.covers(token))) {
        return Err(Hold::LeftMemberUnsettled { member: member.clone(), token: token.clone() });
    }
    tombstone_horizon(&digests).ok_or(Hold::NoHorizon)
}

impl Inner {
    /// Collects the tombstones every member has seen, once this node knows a
    /// digest of every current member (see [`collection_horizon`]).
    pub(super) async fn collect_tombstones(&self) -> Result<(), ReplicationError> {
        // Membership as it is now: the round may have brought news of a member.
        let membership = self.membership().await?;
        let peers: Vec<(PeerAddr, Option<PeerDigest>)> = self
            .peers_of(&membership)
            .into_iter()
            .map(|addr| {
                let digest = self.peers.digest(&addr);
                (addr, digest)
            })
            .collect();
        let own = self.store.digest().await?;
        let left = left_members(&membership);
        match collection_horizon((self.store.origin(), &own), &peers, &left) {
            Ok(horizon) => {
                let collected = self.store.collect_tombstones(&horizon).await?;
                if collected > 0 {
                    debug!(collected, "collected tombstones every member has seen");
                }
            }
            Err(hold) => trace!(%hold, "tombstones wait"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    fn o(s: &str) -> Origin {
        s.parse().unwrap()
    }

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        let mut v = VersionVector::default();
        for (origin, seq) in entries {
            v.raise(&o(origin), *seq);
        }
        v
    }

    fn peer(port: u16, name: &str, digest: Option<VersionVector>) -> (PeerAddr, Option<PeerDigest>) {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        (addr, digest.map(|digest| PeerDigest { origin: o(name), digest }))
    }

    #[test]
    fn tombstones_wait_for_a_digest_of_every_peer() {
        let own = vv(&[("a", 3)]);
        let peers = [peer(7002, "b", Some(vv(&[("a", 3)]))), peer(7003, "c", None)];
        let hold = collection_horizon((&o("a"), &own), &peers, &BTreeMap::new()).unwrap_err();
        assert_eq!(hold, Hold::NoDigest("127.0.0.1:7003".parse().unwrap()));
    }

    #[test]
    fn tombstones_every_member_has_seen_may_be_collected() {
        let own = vv(&[("a", 3), ("b", 2)]);
        let peers = [peer(7002, "b", Some(vv(&[("a", 3), ("b", 2)])))];
        let horizon = collection_horizon((&o("a"), &own), &peers, &BTreeMap::new()).unwrap();
        assert_eq!(horizon, own);
        let behind = [peer(7002, "b", Some(vv(&[("a", 2), ("b", 2)])))];
        let hold = collection_horizon((&o("a"), &own), &behind, &BTreeMap::new()).unwrap_err();
        assert_eq!(hold, Hold::NoHorizon, "b has not seen a:3 yet");
    }

    #[test]
    fn a_writer_that_is_neither_a_member_nor_gone_holds_collection_back() {
        let own = vv(&[("a", 3), ("x", 1)]);
        let peers = [peer(7002, "b", Some(vv(&[("a", 3), ("x", 1)])))];
        let hold = collection_horizon((&o("a"), &own), &peers, &BTreeMap::new()).unwrap_err();
        assert_eq!(hold, Hold::UnknownWriter(o("x")));
    }

    #[test]
    fn a_member_that_left_holds_collection_back_until_its_leaving_is_seen_everywhere() {
        let left = BTreeMap::from([(id("x"), VersionToken { origin: o("x"), seq: 4 })]);
        let own = vv(&[("a", 3), ("x", 4)]);
        let behind = [peer(7002, "b", Some(vv(&[("a", 3), ("x", 3)])))];
        let hold = collection_horizon((&o("a"), &own), &behind, &left).unwrap_err();
        assert!(matches!(hold, Hold::LeftMemberUnsettled { ref member, .. } if *member == id("x")), "{hold}");
        let settled = [peer(7002, "b", Some(vv(&[("a", 3), ("x", 4)])))];
        assert_eq!(collection_horizon((&o("a"), &own), &settled, &left), Ok(vv(&[("a", 3), ("x", 4)])));
    }

    #[test]
    fn a_member_restarted_on_an_empty_disk_is_read_through_its_new_origin() {
        let (old, new) = ("b~00000000000000aa", "b~00000000000000bb");
        let own = vv(&[("a", 3), (old, 2)]);
        // b's old incarnation is no unknown writer: b is a member, now writing as `new`.
        let catching_up = [peer(7002, new, Some(vv(&[("a", 3)])))];
        let hold = collection_horizon((&o("a"), &own), &catching_up, &BTreeMap::new()).unwrap_err();
        assert_eq!(hold, Hold::NoHorizon, "b's new store has not seen its old writes yet");
        let caught_up = [peer(7002, new, Some(vv(&[("a", 3), (old, 2), (new, 1)])))];
        let hold = collection_horizon((&o("a"), &own), &caught_up, &BTreeMap::new()).unwrap_err();
        assert_eq!(hold, Hold::NoHorizon, "a has not seen b's first new write");
        let own = vv(&[("a", 3), (old, 2), (new, 1)]);
        assert_eq!(collection_horizon((&o("a"), &own), &caught_up, &BTreeMap::new()), Ok(own.clone()));
    }

    #[test]
    fn a_lone_node_collects_what_it_has_seen() {
        let own = vv(&[("a", 3)]);
        assert_eq!(collection_horizon((&o("a"), &own), &[], &BTreeMap::new()), Ok(own.clone()));
    }
}
