//! Cluster members, their states, and the membership record every node keeps.
//!
//! Membership lives in the configuration database like everything else: one
//! record per node under [`MEMBERSHIP_PREFIX`], keyed by node id, whose value is
//! the JSON form of a [`Member`] (`{"id":"node-1","addr":"http://127.0.0.1:7001",
//! "state":"active"}`). This module owns that record's codec; replication (which
//! picks peers from it), the balancer's discovery and the management API all read
//! it through [`Member::from_record_value`], so a bad record is refused the same
//! way everywhere.
//!
//! ```
//! use spectrum_core::{Member, MemberState, member::MEMBERSHIP_PREFIX};
//!
//! let m = Member::new("node-1".parse()?, "127.0.0.1:7001".parse()?, MemberState::Active);
//! assert_eq!(m.record_key(), format!("{MEMBERSHIP_PREFIX}node-1"));
//! let back = Member::from_record_value(&m.to_record_value())?;
//! assert_eq!(back, m);
//! assert!(Member::from_record_value(br#"{"id":"n","addr":"nowhere","state":"active"}"#).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::addr::PeerAddr;
use crate::error::{InvalidMemberRecord, UnknownMemberState};
use crate::id::NodeId;

/// The key prefix of membership records in the configuration database.
pub const MEMBERSHIP_PREFIX: &str = "membership/";

/// Longest membership record accepted, in bytes.
pub const MAX_MEMBER_RECORD_LEN: usize = 4096;

/// How a member takes part in the cluster.
///
/// The balancer sends new requests only to [`MemberState::Active`] members; a
/// [`MemberState::Draining`] member finishes what it has and gets nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MemberState {
    /// Started, catching up; not yet serving.
    Joining,
    /// Serving requests.
    Active,
    /// Finishing in-flight work; gets no new requests.
    Draining,
    /// Left the cluster cleanly.
    Left,
    /// Removed for good by an operator (a node that died and will not come back).
    /// It counts for nothing, and it is refused if it returns, until an operator
    /// makes it active again.
    Removed,
}

impl MemberState {
    /// Whether a balancer may send new requests to a member in this state.
    pub fn accepts_requests(self) -> bool {
        matches!(self, MemberState::Active)
    }

    /// Whether the member is gone (left or removed): it counts neither for
    /// acknowledgements nor as a peer, and tombstone collection does not wait for it.
    pub fn is_gone(self) -> bool {
        matches!(self, MemberState::Left | MemberState::Removed)
    }

    /// The lower-case name used on the wire and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Active => "active",
            MemberState::Draining => "draining",
            MemberState::Left => "left",
            MemberState::Removed => "removed",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemberState {
    type Err = UnknownMemberState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "joining" => MemberState::Joining,
            "active" => MemberState::Active,
            "draining" => MemberState::Draining,
            "left" => MemberState::Left,
            "removed" => MemberState::Removed,
            other => return Err(UnknownMemberState { name: other.chars().take(40).collect() }),
        })
    }
}

/// Whether a member is up, as one node's failure detector sees it (separate from
/// its [`MemberState`], which is the operator's and the member's own decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Liveness {
    /// Heard from recently enough.
    Alive,
    /// Silent for longer than usual.
    Suspect,
    /// Silent for so long that it is taken to be down.
    Down,
    /// Never heard from.
    Unknown,
}

impl Liveness {
    /// The lower-case name used on the wire and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Down => "down",
            Liveness::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Liveness {
    type Err = UnknownMemberState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "alive" => Liveness::Alive,
            "suspect" => Liveness::Suspect,
            "down" => Liveness::Down,
            "unknown" | "" => Liveness::Unknown,
            other => return Err(UnknownMemberState { name: other.chars().take(40).collect() }),
        })
    }
}

/// One node as recorded in cluster membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's identity.
    pub id: NodeId,
    /// The node's gRPC address.
    pub addr: PeerAddr,
    /// Its state.
    pub state: MemberState,
    /// With [`MemberState::Draining`]: the node drained itself to stop (a Raft
    /// voter stopped cleanly stays one, recorded as draining while it is
    /// down), and becomes active again when it restarts. `false` (the
    /// default, left out of the record) for an operator's drain, which lasts
    /// across restarts until undrained.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

impl Member {
    /// A member in the given state.
    pub fn new(id: NodeId, addr: PeerAddr, state: MemberState) -> Self {
        Self { id, addr, state, stopped: false }
    }

    /// A node draining itself to stop: [`MemberState::Draining`] with
    /// [`stopped`](Self::stopped) set, so that it is active again when it
    /// restarts.
    pub fn stopping(id: NodeId, addr: PeerAddr) -> Self {
        Self { id, addr, state: MemberState::Draining, stopped: true }
    }

    /// Whether the member was drained by an operator (and stays drained across
    /// its restarts), not by its own stop.
    pub fn drained_by_operator(&self) -> bool {
        self.state == MemberState::Draining && !self.stopped
    }

    /// The key of this member's record: `membership/<id>`.
    pub fn record_key(&self) -> String {
        Self::key_of(&self.id)
    }

    /// The key of the record of the node `id`: `membership/<id>`.
    pub fn key_of(id: &NodeId) -> String {
        format!("{MEMBERSHIP_PREFIX}{id}")
    }

    /// The record's value: this member as JSON.
    pub fn to_record_value(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("a member always serialises"))
    }

    /// Decodes a record's value, validating the id, the address and the state.
    ///
    /// # Errors
    ///
    /// [`InvalidMemberRecord`] when the value is larger than
    /// [`MAX_MEMBER_RECORD_LEN`], not JSON of a member, or holds an invalid field
    /// (the reason names it).
    pub fn from_record_value(bytes: &[u8]) -> Result<Self, InvalidMemberRecord> {
        if bytes.len() > MAX_MEMBER_RECORD_LEN {
            return Err(InvalidMemberRecord {
                reason: format!("{} bytes; at most {MAX_MEMBER_RECORD_LEN} are allowed", bytes.len()),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| InvalidMemberRecord { reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_members_accept_requests() {
        assert!(MemberState::Active.accepts_requests());
        for s in [MemberState::Joining, MemberState::Draining, MemberState::Left, MemberState::Removed] {
            assert!(!s.accepts_requests(), "{s}");
        }
    }

    #[test]
    fn member_state_names_round_trip() {
        for s in [
            MemberState::Joining,
            MemberState::Active,
            MemberState::Draining,
            MemberState::Left,
            MemberState::Removed,
        ] {
            assert_eq!(s.as_str().parse::<MemberState>().unwrap(), s);
        }
        assert!("sleeping".parse::<MemberState>().unwrap_err().to_string().contains("sleeping"));
    }

    #[test]
    fn bad_membership_records_are_refused_with_the_field_named() {
        for (value, why) in [
            (&br#"{"id":"a b","addr":"127.0.0.1:1","state":"active"}"#[..], "node id"),
            (br#"{"id":"n","addr":"http://n","state":"active"}"#, "port"),
            (br#"{"id":"n","addr":"127.0.0.1:1","state":"asleep"}"#, "asleep"),
            (br#"{"id":"n","addr":"127.0.0.1:1"}"#, "state"),
            (b"not json", "expected"),
        ] {
            let err = Member::from_record_value(value).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        assert!(Member::from_record_value(&vec![b' '; MAX_MEMBER_RECORD_LEN + 1]).is_err());
    }

    #[test]
    fn a_stop_drain_is_told_from_an_operators_and_old_records_read_as_an_operators() {
        let (id, addr): (NodeId, PeerAddr) = ("n".parse().unwrap(), "127.0.0.1:1".parse().unwrap());
        let stopping = Member::stopping(id.clone(), addr.clone());
        let back = Member::from_record_value(&stopping.to_record_value()).unwrap();
        assert_eq!(back, stopping);
        assert!(!back.drained_by_operator());
        let drained = Member::new(id, addr, MemberState::Draining);
        let json = String::from_utf8(drained.to_record_value()).unwrap();
        assert!(!json.contains("stopped"), "the default is left out, as older builds wrote it: {json}");
        let old =
            Member::from_record_value(br#"{"id":"n","addr":"127.0.0.1:1","state":"draining"}"#).unwrap();
        assert!(old.drained_by_operator());
    }

    #[test]
    fn records_written_before_addresses_were_typed_still_decode_canonically() {
        let m = Member::from_record_value(br#"{"id":"n","addr":"127.0.0.1:7001/","state":"left"}"#).unwrap();
        assert_eq!(m.addr.as_str(), "http://127.0.0.1:7001");
        assert_eq!(m.state, MemberState::Left);
    }
}
