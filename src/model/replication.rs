//! How the answering node replicates: its mode and, in Raft mode, its view of
//! the consensus group.

use std::fmt;

use serde::Serialize;
use spectrum_replication::{ConsensusStatus, ReplicationMode};
use utoipa::ToSchema;

use crate::pb::{InvalidAnswer, bad, node_id, proto};

/// The answering node's replication mode, and its Raft group in Raft mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReplicationInfo {
    /// `lww` (last-writer-wins anti-entropy) or `raft`.
    pub mode: String,
    /// The Raft group as the answering node sees it; absent in `lww` mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftInfo>,
}

/// A node's view of its Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RaftInfo {
    /// What the answering node is: `leader`, `follower`, `candidate`,
    /// `learner` (not a voter) or `stopped`.
    pub role: String,
    /// The leader's node id, when one is known.
    pub leader: Option<String>,
    /// The current term.
    pub term: u64,
    /// The index of the last entry in the answering node's log.
    pub last_log_index: Option<u64>,
    /// The highest index a majority of voters holds, as the leader counts
    /// it; absent when the answering node is not the leader.
    pub committed: Option<u64>,
    /// The index of the last entry the answering node applied.
    pub applied: Option<u64>,
    /// The last index covered by its snapshot.
    pub snapshot: Option<u64>,
    /// The voters' node ids.
    pub voters: Vec<String>,
    /// Members receiving the log without a vote.
    pub learners: Vec<String>,
    /// Whether the answering node left the group (it refuses writes).
    pub left: bool,
}

impl ReplicationInfo {
    /// The info of a replicator in `mode`, with its consensus status if any.
    pub fn new(mode: ReplicationMode, consensus: Option<ConsensusStatus>) -> Self {
        Self { mode: mode.as_str().to_owned(), raft: consensus.map(RaftInfo::from) }
    }
}

impl From<ConsensusStatus> for RaftInfo {
    fn from(s: ConsensusStatus) -> Self {
        let ids = |v: Vec<spectrum_core::NodeId>| v.into_iter().map(|n| n.to_string()).collect();
        Self {
            role: s.role.as_str().to_owned(),
            leader: s.leader.map(|l| l.to_string()),
            term: s.term,
            last_log_index: s.last_log_index,
            committed: s.committed,
            applied: s.applied,
            snapshot: s.snapshot,
            voters: ids(s.voters),
            learners: ids(s.learners),
            left: s.left,
        }
    }
}

impl From<ReplicationInfo> for proto::ReplicationStatus {
    fn from(r: ReplicationInfo) -> Self {
        Self { mode: r.mode, raft: r.raft.map(Into::into) }
    }
}

impl From<RaftInfo> for proto::RaftStatus {
    fn from(r: RaftInfo) -> Self {
        Self {
            role: r.role,
            leader: r.leader.unwrap_or_default(),
            term: r.term,
            last_log_index: r.last_log_index.unwrap_or(0),
            has_last_log_index: r.last_log_index.is_some(),
            committed: r.committed.unwrap_or(0),
            has_committed: r.committed.is_some(),
            applied: r.applied.unwrap_or(0),
            has_applied: r.applied.is_some(),
            snapshot: r.snapshot.unwrap_or(0),
            has_snapshot: r.snapshot.is_some(),
            voters: r.voters,
            learners: r.learners,
            left: r.left,
        }
    }
}

/// The roles a node may report.
const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "stopped"];

impl ReplicationInfo {
    /// Reads a node's answer; a node from before the field answered without
    /// one, and its mode is then `unknown`.
    ///
    /// # Errors
    ///
    /// [`InvalidAnswer`] naming a mode, role or node id that is not one.
    pub(crate) fn from_answer(r: Option<proto::ReplicationStatus>) -> Result<Self, InvalidAnswer> {
        let Some(r) = r else {
            return Ok(Self { mode: "unknown".into(), raft: None });
        };
        let mode: ReplicationMode = r.mode.parse().map_err(|e| bad("replication.mode", e))?;
        let raft = match (mode, r.raft) {
            (ReplicationMode::Raft, Some(raft)) => Some(RaftInfo::try_from(raft)?),
            (_, None) => None,
            (_, Some(_)) => return Err(bad("replication.raft", "present in a last-writer-wins answer")),
        };
        Ok(Self { mode: mode.as_str().to_owned(), raft })
    }
}

impl TryFrom<proto::RaftStatus> for RaftInfo {
    type Error = InvalidAnswer;
    fn try_from(r: proto::RaftStatus) -> Result<Self, Self::Error> {
        if !ROLES.contains(&r.role.as_str()) {
            return Err(bad(
                "replication.raft.role",
                format!("{:?} is not one of {}", r.role, ROLES.join(", ")),
            ));
        }
        let ids = |field: &str, v: Vec<String>| {
            v.into_iter().map(|id| node_id(field, &id).map(|n| n.to_string())).collect::<Result<Vec<_>, _>>()
        };
        let leader =
            (!r.leader.is_empty()).then(|| node_id("replication.raft.leader", &r.leader)).transpose()?;
        let known = |has: bool, v: u64| has.then_some(v);
        Ok(Self {
            role: r.role,
            leader: leader.map(|l| l.to_string()),
            term: r.term,
            last_log_index: known(r.has_last_log_index, r.last_log_index),
            committed: known(r.has_committed, r.committed),
            applied: known(r.has_applied, r.applied),
            snapshot: known(r.has_snapshot, r.snapshot),
            voters: ids("replication.raft.voters", r.voters)?,
            learners: ids("replication.raft.learners", r.learners)?,
            left: r.left,
        })
    }
}

fn index(i: Option<u64>) -> String {
    i.map_or_else(|| "-".to_owned(), |i| i.to_string())
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() { "none".to_owned() } else { ids.join(", ") }
}

impl fmt::Display for ReplicationInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(r) = &self.raft else {
            return writeln!(f, "replication {} (last-writer-wins: every node takes writes)", self.mode);
        };
        let leader = r.leader.as_deref().unwrap_or("none known");
        let left = if r.left { "  LEFT THE GROUP (refusing writes)" } else { "" };
        writeln!(
            f,
            "replication {}: this node is {}, leader {leader}, term {}{left}",
            self.mode, r.role, r.term
        )?;
        writeln!(
            f,
            "raft log {}, committed {}, applied {}, snapshot {}",
            index(r.last_log_index),
            index(r.committed),
            index(r.applied),
            index(r.snapshot)
        )?;
        writeln!(f, "raft voters {}; learners {}", list(&r.voters), list(&r.learners))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_mode_shows_the_leader_term_indexes_and_the_group() {
        let info = ReplicationInfo {
            mode: "raft".into(),
            raft: Some(RaftInfo {
                role: "follower".into(),
                leader: Some("node-2".into()),
                term: 4,
                last_log_index: Some(41),
                committed: None,
                applied: Some(40),
                snapshot: None,
                voters: vec!["node-1".into(), "node-2".into(), "node-3".into()],
                learners: vec![],
                left: false,
            }),
        };
        let text = info.to_string();
        assert!(text.contains("this node is follower, leader node-2, term 4"), "{text}");
        assert!(text.contains("raft log 41, committed -, applied 40, snapshot -"), "{text}");
        assert!(text.contains("raft voters node-1, node-2, node-3; learners none"), "{text}");
        let lww = ReplicationInfo { mode: "lww".into(), raft: None };
        assert!(lww.to_string().starts_with("replication lww (last-writer-wins"), "{lww}");
        let json = serde_json::to_value(&lww).unwrap();
        assert_eq!(json, serde_json::json!({ "mode": "lww" }));
    }

    #[test]
    fn the_status_answer_round_trips_and_a_malformed_one_is_refused() {
        let info = ReplicationInfo {
            mode: "raft".into(),
            raft: Some(RaftInfo {
                role: "leader".into(),
                leader: Some("n1".into()),
                term: 2,
                last_log_index: Some(9),
                committed: Some(9),
                applied: Some(8),
                snapshot: None,
                voters: vec!["n1".into(), "n2".into()],
                learners: vec!["n3".into()],
                left: false,
            }),
        };
        let wire = proto::ReplicationStatus::from(info.clone());
        assert_eq!(ReplicationInfo::from_answer(Some(wire.clone())).unwrap(), info);
        assert_eq!(ReplicationInfo::from_answer(None).unwrap().mode, "unknown");
        let mut bad_role = wire.clone();
        bad_role.raft.as_mut().unwrap().role = "king".into();
        let err = ReplicationInfo::from_answer(Some(bad_role)).unwrap_err();
        assert_eq!(err.field, "replication.raft.role");
        let mut bad_voter = wire.clone();
        bad_voter.raft.as_mut().unwrap().voters.push("no spaces allowed".into());
        assert_eq!(
            ReplicationInfo::from_answer(Some(bad_voter)).unwrap_err().field,
            "replication.raft.voters"
        );
        let bad_mode = proto::ReplicationStatus { mode: "paxos".into(), raft: None };
        assert_eq!(ReplicationInfo::from_answer(Some(bad_mode)).unwrap_err().field, "replication.mode");
    }
}
