//! [`AdminError`]: why a management operation was refused or failed.

use std::time::Duration;

use spectrum_core::NodeId;
use spectrum_replication::{FailedCondition, ReplicationError, StoreError, VersionToken};
use spectrum_resources::{DefinitionError, SecretError, TransferError};
use thiserror::Error;

use crate::license::LicenseError;
use crate::namespace::KeyError;
use crate::registry::RegistryError;
use crate::session::SessionGap;

/// `a up to 4 (holds 2, 2 behind), b up to …` for an error message.
fn gaps(missing: &[SessionGap]) -> String {
    missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Why a management operation was refused or failed. Every message names what is
/// wrong, and a refused write stores nothing.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A key or value does not fit its namespace.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A license document is invalid or expired.
    #[error(transparent)]
    License(#[from] LicenseError),
    /// A resource definition is invalid.
    #[error("invalid resource definition: {0}")]
    Definition(#[from] DefinitionError),
    /// A redacted secret was sent where no stored secret can stand in for it (the
    /// error names the secret's field).
    #[error("invalid resource definition: {0}")]
    Placeholder(SecretError),
    /// An export file is malformed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// An argument is malformed (an unknown ack level, a bad node id, a bad token).
    #[error("{0}")]
    InvalidArgument(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This node's store could not take a write (a full disk, a failing
    /// device) before any of the write was done: nothing was stored or
    /// replicated, so another node may take the same write. Its answer is
    /// marked not ready, and a balancer sends the write to another node.
    #[error(transparent)]
    Unwritable(StoreError),
    /// Resource definitions could not be read, sealed or opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Nothing is stored under that name.
    #[error("{what}")]
    NotFound {
        /// What was looked for, as a sentence fragment (`no dataflow "x"`).
        what: String,
    },
    /// The name is taken and the call did not ask to replace it.
    #[error("{what} {name:?} already exists; replace it with --replace (HTTP: ?replace=true)")]
    AlreadyExists {
        /// `dataflow`, `resource`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A user of that name exists (or existed: names of revoked users are not reused).
    #[error(
        "user {name:?} {}",
        if *revoked {
            "was revoked, and names of revoked users are not reused; add the user under another name"
        } else {
            "already exists; rotate its token (spectrum user rotate) or choose another name"
        }
    )]
    UserExists {
        /// The name.
        name: String,
        /// Whether that user is revoked (its token cannot be rotated either).
        revoked: bool,
    },
    /// A revoked user's token cannot be rotated.
    #[error("user {name:?} is revoked; add a new user under another name instead")]
    UserRevoked {
        /// The name.
        name: String,
    },
    /// A stored value no longer decodes.
    #[error("the stored {what} is invalid: {reason}")]
    StoredInvalid {
        /// What it is (`license "main"`).
        what: String,
        /// Why.
        reason: String,
    },
    /// A member that left cannot be drained or undrained.
    #[error("node {id} has left the cluster; it becomes active again when it restarts")]
    MemberLeft {
        /// The member.
        id: NodeId,
    },
    /// Draining or removing this member would leave no active one: balancers
    /// would then send every request to draining nodes (answered
    /// `FAILED_PRECONDITION`).
    #[error(
        "node {id} is the last active member: drained or removed, it would leave balancers no active node \
         to send requests to; undrain another member first"
    )]
    LastActive {
        /// The member.
        id: NodeId,
    },
    /// This node has an empty store and has not heard from a peer yet.
    #[error("{node} is catching up with the cluster (no peer has answered yet{why}); retry")]
    CatchingUp {
        /// This node.
        node: NodeId,
        /// What its peers answered instead, if anything (`: peer … refused …`):
        /// a peer of another cluster, or one whose key differs, never will.
        why: String,
    },
    /// A node was asked to remove itself, which it cannot (answered
    /// `INVALID_ARGUMENT`, marked as done nothing, so that a balancer sends
    /// the call to another node, which can).
    #[error("node {node} answered this call and cannot remove itself; remove it through another node")]
    RemoveSelf {
        /// This node.
        node: NodeId,
    },
    /// This node is out of the cluster (an operator removed it, the cluster
    /// refuses to take it back, or its Raft stopped on an error): its copy is
    /// no longer kept up to date, so it refuses reads and writes (answered
    /// `UNAVAILABLE`: use another node or the balancer).
    #[error("{node} is out of the cluster ({reason}); use another node or the balancer")]
    OutOfCluster {
        /// This node.
        node: NodeId,
        /// Why, as its readiness says (`/readyz`'s `failing`, `join_error` and
        /// `consensus_error`).
        reason: String,
    },
    /// This node's copy may be behind the cluster's (its store cannot write, so it
    /// misses what its peers send): it refuses reads rather than answer stale.
    #[error("{node} may be behind the cluster ({reason}); read through another node or the balancer")]
    Stale {
        /// This node.
        node: NodeId,
        /// Why its copy may be behind.
        reason: String,
    },
    /// This node's clock is off from its peers by more than the maximum offset:
    /// it refuses writes until its clock is right (write through another node).
    #[error("{node} refuses writes: {reason}; {}", clock_advice(reason))]
    ClockFenced {
        /// This node.
        node: NodeId,
        /// The offset, as the clock check states it.
        reason: String,
    },
    /// This node has not caught up with the version or session the read asked for
    /// (answered `UNAVAILABLE`: retry, or read through another node).
    #[error(
        "node {node} has not caught up to the session within {} ms: missing {}; retry",
        waited.as_millis(),
        gaps(missing)
    )]
    NotCaughtUp {
        /// This node.
        node: NodeId,
        /// Per origin, what the session needs and what this node holds.
        missing: Vec<SessionGap>,
        /// How long it waited.
        waited: Duration,
    },
    /// The write is applied here but its acknowledgement level was not reached in time.
    #[error("write {version} is applied on {node} and keeps replicating, but: {reason}")]
    AckTimeout {
        /// The write.
        version: VersionToken,
        /// This node.
        node: NodeId,
        /// What the replicator said.
        reason: String,
    },
    /// Replication failed, or the call needs Raft mode
    /// ([`ReplicationError::NeedsConsensus`], answered FAILED_PRECONDITION).
    #[error(transparent)]
    Replication(ReplicationError),
    /// A watch could not start.
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    /// A condition of a compare-and-set write or transaction did not hold:
    /// nothing was written.
    #[error("{0}; nothing was written")]
    ConditionFailed(FailedCondition),
    /// A compare-and-set write of one key ([`Admin::put_if`](crate::admin::Admin::put_if))
    /// found the key other than it asked: nothing was written.
    #[error("{key:?} {}; nothing was written", describe_put_condition(current.as_ref(), wanted.as_ref()))]
    PutConditionFailed {
        /// The key.
        key: String,
        /// The version it holds live (`None`: no live entry).
        current: Option<VersionToken>,
        /// The version the write asked for (`None`: no live entry).
        wanted: Option<VersionToken>,
    },
    /// A fault of this node (not of the request).
    #[error("{reason}")]
    Internal {
        /// What went wrong.
        reason: String,
    },
}

impl AdminError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        AdminError::NotFound { what: what.into() }
    }
}

/// What a failed compare-and-set write of one key found, against what it asked.
fn describe_put_condition(current: Option<&VersionToken>, wanted: Option<&VersionToken>) -> String {
    match (current, wanted) {
        (Some(current), None) => format!("already holds version {current} (the write asked for no entry)"),
        (Some(current), Some(wanted)) => format!("holds version {current}, not {wanted}"),
        (None, Some(wanted)) => format!("holds no entry, not version {wanted}"),
        (None, None) => "holds no entry, yet the write was refused".to_owned(),
    }
}

/// What to do about a fenced clock: fix it, unless only its hybrid clock
/// still leads (its wall clock is right already), which time alone mends.
fn clock_advice(reason: &str) -> &'static str {
    if reason.contains("hybrid clock") {
        "write through another node meanwhile"
    } else {
        "fix its clock (NTP) or write through another node"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_compare_and_set_says_what_the_key_holds_against_what_was_asked() {
        let v = |s: &str| Some(s.parse::<VersionToken>().unwrap());
        let failed =
            |current, wanted| AdminError::PutConditionFailed { key: "settings/a".into(), current, wanted };
        assert_eq!(
            failed(v("n1:7"), None).to_string(),
            "\"settings/a\" already holds version n1:7 (the write asked for no entry); nothing was written"
        );
        assert_eq!(
            failed(v("n1:7"), v("n1:6")).to_string(),
            "\"settings/a\" holds version n1:7, not n1:6; nothing was written"
        );
        assert_eq!(
            failed(None, v("n1:6")).to_string(),
            "\"settings/a\" holds no entry, not version n1:6; nothing was written"
        );
    }
}
