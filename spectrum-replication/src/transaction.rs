//! Transactions: conditions and writes committed atomically through consensus,
//! and the [`ReplicationMode`] that says whether a replicator can commit them.
//!
//! Last-writer-wins replication applies every write at once on the node that
//! takes it, so it cannot promise "only if nobody changed it since": two nodes
//! may each see the condition hold. A consensus replicator
//! ([`RaftReplicator`](crate::RaftReplicator)) orders every write in one log and
//! evaluates the conditions of each [`Transaction`] when its entry is applied,
//! against the state every replica holds at that point of the log, so every
//! replica decides the same, and either applies all of its writes or none.
//!
//! ```
//! use spectrum_replication::{Condition, Transaction, WriteBatch};
//!
//! // Create the dataflow only if the name is free, and bump a counter only if
//! // it still holds the version read earlier.
//! let txn = Transaction::new(WriteBatch::new().put("dataflows/orders", "{}").put("settings/n", "2"))
//!     .when(Condition::absent("dataflows/orders"))
//!     .when(Condition::version("settings/n", "raft~00000000000000aa:65536".parse()?));
//! assert_eq!(txn.conditions.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::record::{Record, VersionToken, WriteBatch};

/// How a cluster replicates its configuration database; chosen when the
/// cluster is created, the same on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplicationMode {
    /// Last-writer-wins anti-entropy ([`AntiEntropy`](crate::AntiEntropy)):
    /// every node writable through partial failures, replicas converge.
    #[default]
    LastWriterWins,
    /// Raft consensus ([`RaftReplicator`](crate::RaftReplicator)): writes need
    /// a majority, and gain compare-and-set, transactions and linearizable reads.
    Raft,
}

impl ReplicationMode {
    /// The name used in node files and messages: `lww` or `raft`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::LastWriterWins => "lww",
            ReplicationMode::Raft => "raft",
        }
    }
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A replication mode name that is neither `lww` nor `raft`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown replication mode {given:?}: expected \"lww\" (last writer wins) or \"raft\"")]
pub struct UnknownMode {
    /// The name given (cut to 40 characters).
    pub given: String,
}

impl FromStr for ReplicationMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lww" | "last-writer-wins" => Ok(ReplicationMode::LastWriterWins),
            "raft" => Ok(ReplicationMode::Raft),
            other => Err(UnknownMode { given: other.chars().take(40).collect() }),
        }
    }
}

/// One condition of a [`Transaction`], evaluated when its log entry is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// `key` holds no live entry (nothing, or a tombstone).
    Absent {
        /// The key.
        key: String,
    },
    /// `key` holds a live entry whose version is `version`.
    Version {
        /// The key.
        key: String,
        /// The version it must hold.
        version: VersionToken,
    },
}

impl Condition {
    /// `key` must hold no live entry.
    pub fn absent(key: impl Into<String>) -> Self {
        Condition::Absent { key: key.into() }
    }

    /// `key` must hold a live entry of version `version`.
    pub fn version(key: impl Into<String>, version: VersionToken) -> Self {
        Condition::Version { key: key.into(), version }
    }

    /// The key the condition is about.
    pub fn key(&self) -> &str {
        match self {
            Condition::Absent { key } | Condition::Version { key, .. } => key,
        }
    }

    /// Whether the condition holds when `key` holds `current` (its record,
    /// tombstone included, or nothing).
    pub fn holds(&self, current: Option<&Record>) -> bool {
        let live = current.filter(|r| !r.is_tombstone());
        match self {
            Condition::Absent { .. } => live.is_none(),
            Condition::Version { version, .. } => live.is_some_and(|r| r.token() == *version),
        }
    }
}

/// Writes applied all together only if every condition holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transaction {
    /// Conditions that must all hold (none: the writes always apply).
    pub conditions: Vec<Condition>,
    /// The writes, in order.
    pub writes: WriteBatch,
    /// The write's id, when its client names it so that a retry of the same
    /// write carries the same id (see [`with_request_id`](Self::with_request_id));
    /// `None`: the replicator draws a fresh one, used by its own retries only.
    pub request_id: Option<u128>,
}

impl Transaction {
    /// A transaction of `writes` with no condition yet.
    pub fn new(writes: WriteBatch) -> Self {
        Self { conditions: Vec::new(), writes, request_id: None }
    }

    /// Names the write `id`, 128 bits its client chose (at random, or derived
    /// from an idempotency key): in Raft mode a transaction whose id the state
    /// machine decided lately is not decided again, and gets the first
    /// decision's answer (the Raft thesis, Ongaro 2014, §6.3). So a client
    /// whose first attempt timed out with its outcome unknown retries under
    /// the same id, and the write applies once. Ids are remembered for a minute
    /// of the log's stamps and at most 65,536 of them. Last-writer-wins mode
    /// does not commit transactions.
    pub fn with_request_id(mut self, id: u128) -> Self {
        self.request_id = Some(id);
        self
    }

    /// Adds a condition.
    pub fn when(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }
}

/// A condition that did not hold, so nothing of its transaction was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCondition {
    /// Its position among the transaction's conditions.
    pub index: usize,
    /// The key it was about.
    pub key: String,
    /// The version the key held live when the condition was evaluated (`None`:
    /// no live entry).
    pub current: Option<VersionToken>,
}

impl fmt::Display for FailedCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.current {
            Some(v) => write!(f, "condition {} on {:?} failed: it holds version {v}", self.index, self.key),
            None => write!(f, "condition {} on {:?} failed: it holds no entry", self.index, self.key),
        }
    }
}

/// What became of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every condition held: the writes are applied, with these versions (one
    /// per write, in order).
    Applied {
        /// The version of each write.
        versions: Vec<VersionToken>,
    },
    /// A condition failed: nothing was written.
    ConditionFailed(FailedCondition),
}

/// A transaction decided by consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Its position in the replicated log.
    pub index: u64,
    /// Applied, or which condition failed.
    pub outcome: Outcome,
    /// Voters that hold it durably (at least a majority).
    pub acked: usize,
    /// Voters of the cluster.
    pub members: usize,
}
