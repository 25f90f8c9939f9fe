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

    /// The refusal of a peer's Vote, AppendEntries or InstallSnapshot while
    /// this node (`node`) may not take part in them; `None` when it may.
    pub(super) fn refusal(&self, node: &str, method: &str) -> Option<Status> {
        match self.0.load(Ordering::Acquire) {
            OPEN => None,
            UNCHECKED => Some(Status::unavailable(format!(
                "node {node} answers no {method} yet: its Raft file holds no group, and it has not yet \
                 heard from its seeds whether the group has it as a voter"
            ))),
            _ => Some(Status::unavailable(format!(
                "node {node} answers no {method}: it {LOST_STATE} (the group has it as a voter under \
                 another incarnation) and takes no part until it joins anew"
            ))),
        }
    }
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
        assert!(refusal.message().contains("has not yet heard from its seeds"), "{refusal}");
        gate.shut();
        let refusal = gate.refusal("n1", "AppendEntries").unwrap();
        assert!(refusal.message().contains(LOST_STATE) && refusal.message().contains("AppendEntries"));
        gate.open();
        assert!(gate.refusal("n1", "InstallSnapshot").is_none());
    }
}
