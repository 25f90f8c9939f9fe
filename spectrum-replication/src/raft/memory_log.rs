//! [`RaftMemoryLog`]: Raft's log, vote and snapshot in memory, owned by the
//! caller so that it outlives the replicators built over it.

use std::fmt;
use std::sync::Arc;

use super::log_store::RaftDb;
use crate::error::{ReplicationError, StoreError};

/// Raft's durable state (log, vote, state machine position, snapshot) kept in
/// an in-memory redb database that the caller holds, so that a replicator
/// built over it after another was dropped finds what that one stored, as a
/// node restarted after a crash finds its `raft.redb`.
///
/// It is for simulations, where a host's software crashes and restarts within
/// one process (`tests/simulation` keeps one per simulated host, beside the
/// host's store): every read and write goes through the same redb code as
/// the file does, only on redb's in-memory backend. A crash in a simulation
/// drops whatever transaction was not committed, as `kill -9` does to the
/// file. A real node keeps this state in [`RAFT_FILE`](super::RAFT_FILE)
/// ([`RaftReplicatorBuilder::data_dir`](super::RaftReplicatorBuilder::data_dir)).
///
/// Clones share one database. Two replicators must not run over it at once
/// (as two processes cannot open one file).
#[derive(Clone)]
pub struct RaftMemoryLog {
    pub(crate) db: Arc<RaftDb>,
}

impl RaftMemoryLog {
    /// An empty log.
    ///
    /// # Errors
    ///
    /// [`ReplicationError::Store`] when redb cannot create its tables.
    pub fn new() -> Result<Self, ReplicationError> {
        let db = RaftDb::in_memory().map_err(|e| StoreError::Storage {
            subject: "an in-memory raft log".to_owned(),
            verb: "open",
            source: Box::new(e),
        })?;
        Ok(Self { db: Arc::new(db) })
    }
}

impl fmt::Debug for RaftMemoryLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftMemoryLog").finish_non_exhaustive()
    }
}
