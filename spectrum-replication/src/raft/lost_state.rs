//! A voter that lost its Raft state takes no part until it joins anew.
//!
//! Raft's safety rests on every voter keeping what it promised: its vote in
//! each term and the entries it acknowledged. A server that lost its state
//! "cannot safely rejoin the cluster with its prior identity" and is added
//! back through a membership change (Ongaro's thesis, §3.8). A voter back on
//! an empty disk under its old id would break both: granting a second vote in
//! a term it already voted in can elect two leaders, and a write committed on
//! it and one other voter can be lost when the two others elect a leader
//! without it. etcd refuses such a member the same way: it is removed, then
//! added again.
//!
//! So every Raft file draws an incarnation number when it is created empty,
//! and the group records each member's with its address
//! ([`RaftMember::incarnation`](super::RaftMember::incarnation)). A node whose
//! Raft file holds no group yet answers no Vote, AppendEntries or
//! InstallSnapshot ([`LostStateGate`]) until its seeds' answers show either
//! that the group does not have it as a voter (a new node, or a group still
//! being founded: it then joins as usual) or that the group has it as a voter
//! under another incarnation: it lost its state, and stays out, saying what to
//! do ([`LOST_STATE`]): an operator removes it and lets it return
//! (`spectrum node remove ID`, then `spectrum node undrain ID`), and it joins
//! as a learner that copies the log, then a voter.

use std::sync::atomic::{AtomicU8, Ordering};

use tonic::Status;

/// How a node that lost its Raft state says so (the join loop recognises it
/// by these words, as a refusal that stands until an operator acts).
pub(super) const LOST_STATE: &str = "lost its Raft state";

const OPEN: u8 = 0;
const UNCHECKED: u8 = 1;
const SHUT: u8 = 2;

/// Whether this node may answer the Raft calls that count its vote or its
/// log: Vote, AppendEntries and InstallSnapshot.
#[derive(Debug)]
pub(super) struct LostStateGate(AtomicU8);

impl LostStateGate {
    /// Open when there is nothing to check (`nothing_to_check`: the node's
    /// Raft file holds a group, so it kept its state, or it has no seeds to
    /// ask and founds a group of its own); closed until checked otherwise.
    pub(super) fn new(nothing_to_check: bool) -> Self {
        Self(AtomicU8::new(if nothing_to_check { OPEN } else { UNCHECKED }))
    }

    /// The node may take part: the group does not have it as a voter under
    /// another incarnation, or it joined.
    pub(super) fn open(&self) {
        self.0.store(OPEN, Ordering::Release);
    }

    /// The group has this node as a voter under another incarnation.
    pub(super) fn shut(&self) {
        self.0.store(SHUT, Ordering::Release);
    }

    /// Whether this node answers Vote, AppendEntries and InstallSnapshot now.
    pub(super) fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire) == OPEN
    }

    /// Whether this node has not yet heard from its seeds whether the group
    /// has it as a voter (neither open nor shut).
    pub(super) fn is_unchecked(&self) -> bool {
        self.0.load(Ordering::Acquire) == UNCHECKED
    }

    /// The refusal of a peer's Vote, AppendEntries or InstallSnapshot while
    /// this node (`node`) may not take part in them; `None` when it may.
    pub(super) fn refusal(&self, node: &str, method: &str) -> Option<Status> {
        match self.0.load(Ordering::Acquire) {
            OPEN => None,
            UNCHECKED => Some(Status::unavailable(format!(
                "node {node} answers no {method} yet: its Raft file holds no group, and it does not yet \
                 know whether the group has it as a voter (its seeds or the leader have not said)"
            ))),
            _ => Some(Status::unavailable(format!(
                "node {node} answers no {method}: it {LOST_STATE} (the group has it as a voter under \
                 another incarnation) and takes no part until it joins anew"
            ))),
        }
    }
}

/// Whether two incarnations of one node's Raft file are known to differ:
/// both recorded (0 is "not recorded", from nodes before incarnations), and
/// not the same.
pub(super) fn differ(a: u64, b: u64) -> bool {
    a != 0 && b != 0 && a != b
}

/// The refusal of a peer's Vote, AppendEntries or InstallSnapshot that
/// names this node's Raft file as incarnation `recorded` (the caller's
/// group's record; 0 when it has none) when it is `own`: the group counts on
/// state this node does not have. `None` when the two agree or nothing is
/// recorded.
pub(super) fn incarnation_refusal(node: &str, method: &str, recorded: u64, own: u64) -> Option<Status> {
    differ(recorded, own).then(|| {
        Status::unavailable(format!(
            "node {node} answers no {method}: the caller's group records its Raft file as incarnation \
             {recorded:016x}, and it is {own:016x}: it {LOST_STATE}, and takes no part until it is removed \
             and joins anew"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_with_a_group_is_open_and_one_without_is_closed_until_checked() {
        assert!(LostStateGate::new(true).refusal("n1", "Vote").is_none());
        let gate = LostStateGate::new(false);
        let refusal = gate.refusal("n1", "Vote").unwrap();
        assert_eq!(refusal.code(), tonic::Code::Unavailable);
        assert!(
            refusal.message().contains("does not yet know whether the group has it as a voter"),
            "{refusal}"
        );
        gate.shut();
        let refusal = gate.refusal("n1", "AppendEntries").unwrap();
        assert!(refusal.message().contains(LOST_STATE) && refusal.message().contains("AppendEntries"));
        gate.open();
        assert!(gate.refusal("n1", "InstallSnapshot").is_none());
    }

    #[test]
    fn a_call_naming_another_incarnation_is_refused_and_one_naming_none_is_not() {
        assert!(incarnation_refusal("n1", "Vote", 0, 7).is_none());
        assert!(incarnation_refusal("n1", "Vote", 7, 7).is_none());
        let refusal = incarnation_refusal("n1", "Vote", 6, 7).unwrap();
        assert_eq!(refusal.code(), tonic::Code::Unavailable);
        assert!(refusal.message().contains("0000000000000006") && refusal.message().contains(LOST_STATE));
    }
}
