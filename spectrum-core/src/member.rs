//! Cluster members and their states.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

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
}

impl MemberState {
    /// Whether a balancer may send new requests to a member in this state.
    pub fn accepts_requests(self) -> bool {
        matches!(self, MemberState::Active)
    }

    /// The lower-case name used on the wire and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Active => "active",
            MemberState::Draining => "draining",
            MemberState::Left => "left",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemberState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "joining" => MemberState::Joining,
            "active" => MemberState::Active,
            "draining" => MemberState::Draining,
            "left" => MemberState::Left,
            other => return Err(format!("unknown member state {other:?}")),
        })
    }
}

/// One node as recorded in cluster membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's identity.
    pub id: NodeId,
    /// The node's gRPC address, as `http://host:port`.
    pub addr: String,
    /// Its state.
    pub state: MemberState,
}

impl Member {
    /// A member in the given state.
    pub fn new(id: NodeId, addr: impl Into<String>, state: MemberState) -> Self {
        Self { id, addr: addr.into(), state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_members_accept_requests() {
        assert!(MemberState::Active.accepts_requests());
        for s in [MemberState::Joining, MemberState::Draining, MemberState::Left] {
            assert!(!s.accepts_requests(), "{s}");
        }
    }

    #[test]
    fn member_state_names_round_trip() {
        for s in [MemberState::Joining, MemberState::Active, MemberState::Draining, MemberState::Left] {
            assert_eq!(s.as_str().parse::<MemberState>().unwrap(), s);
        }
        assert!("sleeping".parse::<MemberState>().is_err());
    }
}
