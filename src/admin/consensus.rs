//! Writes through consensus (Raft mode), and the operations only consensus
//! offers: compare-and-set, transactions and consistent reads. In
//! last-writer-wins mode these answer [`AdminError::Replication`] with
//! [`ReplicationError::NeedsConsensus`] (FAILED_PRECONDITION, naming Raft
//! mode): never a weaker version of the call.

use bytes::Bytes;
use spectrum_replication::{
    Condition, Outcome, ReplicationError, ReplicationMode, Transaction, VersionToken, WriteBatch,
};
use tracing::debug;

use super::{Admin, AdminError};
use crate::management::idempotency;
use crate::model::{Entry, WriteReceipt};
use crate::namespace::{self, Namespace};

impl Admin {
    /// Whether this node's cluster replicates through consensus.
    pub fn consensus(&self) -> bool {
        self.replicator.mode() == ReplicationMode::Raft
    }

    /// Commits `batch` (its audit record included) only if `conditions` hold.
    pub(super) async fn commit_write(
        &self,
        batch: WriteBatch,
        conditions: Vec<Condition>,
    ) -> Result<WriteReceipt, AdminError> {
        // The write's version is its own last write's, not its audit record's.
        let own = batch.writes.iter().rposition(|w| !w.key().starts_with(Namespace::Audit.prefix()));
        let mut txn = Transaction::new(batch);
        txn.conditions = conditions;
        // A call that carries an idempotency key names each of its commits,
        // so that its retry is answered with the first decision.
        let own_writes = txn.writes.writes.iter().filter(|w| !w.key().starts_with(Namespace::Audit.prefix()));
        if let Some(id) = idempotency::next_request_id(|| idempotency::digest(&txn.conditions, own_writes)) {
            txn = txn.with_request_id(id);
        }
        let committed =
            self.replicator.commit(txn, self.write_timeout).await.map_err(AdminError::Replication)?;
        let versions = match committed.outcome {
            Outcome::Applied { versions } => versions,
            Outcome::ConditionFailed(failed) => return Err(AdminError::ConditionFailed(failed)),
            _ => return Err(AdminError::Internal { reason: "unknown transaction outcome".into() }),
        };
        let version = own.or(versions.len().checked_sub(1)).and_then(|i| versions.get(i).cloned());
        let Some(version) = version else {
            return Err(AdminError::Internal { reason: "the transaction wrote nothing".into() });
        };
        Ok(WriteReceipt {
            version,
            acked: u32::try_from(committed.acked).unwrap_or(u32::MAX),
            members: u32::try_from(committed.members).unwrap_or(u32::MAX),
            served_by: self.ctx.id.clone(),
        })
    }

    /// Writes `value` at `key` only if `key` holds no live entry (`version`
    /// `None`) or holds exactly `version`; checked like [`put`](Self::put).
    ///
    /// # Errors
    ///
    /// [`AdminError::PutConditionFailed`] naming what the key holds (nothing
    /// was written); [`AdminError::Replication`] with
    /// [`ReplicationError::NeedsConsensus`] in last-writer-wins mode; as
    /// [`put`](Self::put).
    pub async fn put_if(
        &self,
        key: &str,
        value: Bytes,
        version: Option<VersionToken>,
    ) -> Result<WriteReceipt, AdminError> {
        let condition = match &version {
            Some(v) => Condition::version(key, v.clone()),
            None => Condition::absent(key),
        };
        match self.transaction(vec![condition], vec![(key.to_owned(), Some(value))]).await {
            Err(AdminError::ConditionFailed(failed)) => Err(AdminError::PutConditionFailed {
                key: failed.key,
                current: failed.current,
                wanted: version,
            }),
            other => other,
        }
    }

    /// Applies `writes` (a value to put, or `None` to delete) all together,
    /// only if every condition holds. Each write is checked like
    /// [`put`](Self::put) and [`delete`](Self::delete).
    ///
    /// # Errors
    ///
    /// [`AdminError::ConditionFailed`] naming the first condition that does
    /// not hold (nothing was written); as [`put_if`](Self::put_if) otherwise;
    /// [`AdminError::InvalidArgument`] for a transaction without writes, or
    /// with two writes to one key.
    pub async fn transaction(
        &self,
        conditions: Vec<Condition>,
        writes: Vec<(String, Option<Bytes>)>,
    ) -> Result<WriteReceipt, AdminError> {
        if !self.consensus() {
            return Err(AdminError::Replication(ReplicationError::NeedsConsensus {
                operation: "a transaction (conditions and writes applied together)",
            }));
        }
        if writes.is_empty() {
            return Err(AdminError::InvalidArgument("a transaction needs at least one write".into()));
        }
        // As etcd does: two writes to one key would leave the outcome to their order.
        let mut keys = std::collections::HashSet::with_capacity(writes.len());
        if let Some((key, _)) = writes.iter().find(|(key, _)| !keys.insert(key.as_str())) {
            return Err(AdminError::InvalidArgument(format!(
                "{key:?} is written twice in one transaction; give each key one write"
            )));
        }
        for c in &conditions {
            namespace::classify(c.key())?;
        }
        let mut batch = WriteBatch::new();
        for (key, value) in writes {
            batch = match value {
                Some(value) => batch.put(key.clone(), self.checked_value(&key, value).await?),
                None => {
                    namespace::validate_write(&key, None)?;
                    batch.delete(key)
                }
            };
        }
        let write = self.write_if(batch, conditions).await?;
        debug!(version = %write.version, "transaction committed");
        Ok(write)
    }

    /// Writes `value` at `key`, a new `what` called `name` unless `replace`:
    /// in Raft mode the name must still be free when the write is applied, so
    /// two nodes creating the same name at once cannot both succeed.
    pub(super) async fn create(
        &self,
        key: String,
        value: Bytes,
        replace: bool,
        ack: spectrum_replication::AckLevel,
        what: &'static str,
        name: &str,
    ) -> Result<WriteReceipt, AdminError> {
        let batch = WriteBatch::new().put(key.clone(), value);
        if replace || !self.consensus() {
            return self.write(batch, ack).await;
        }
        match self.write_if(batch, vec![Condition::absent(key)]).await {
            Err(AdminError::ConditionFailed(_)) => {
                Err(AdminError::AlreadyExists { what, name: name.to_owned() })
            }
            other => other,
        }
    }

    /// Waits until this node holds every write committed before the call
    /// (a read index confirmed by a majority): a read that follows is
    /// linearizable.
    ///
    /// # Errors
    ///
    /// [`AdminError::OutOfCluster`] on a node out of the cluster;
    /// [`AdminError::Replication`]: [`ReplicationError::NeedsConsensus`] in
    /// last-writer-wins mode, [`ReplicationError::Consensus`] when no
    /// majority answered in time.
    pub async fn barrier(&self) -> Result<(), AdminError> {
        self.refuse_if_out()?;
        self.replicator.linearizable_barrier(self.write_timeout).await.map_err(AdminError::Replication)
    }

    /// The live entry at `key`, linearizably: every write committed before
    /// the call is seen.
    ///
    /// # Errors
    ///
    /// As [`barrier`](Self::barrier) and [`get`](Self::get).
    pub async fn get_consistent(&self, key: &str) -> Result<Entry, AdminError> {
        namespace::classify(key)?;
        self.barrier().await?;
        self.get(key, &crate::model::ReadAfter::Anything).await
    }

    /// Every live entry under `prefix`, linearizably.
    ///
    /// # Errors
    ///
    /// As [`barrier`](Self::barrier) and [`list`](Self::list).
    pub async fn list_consistent(&self, prefix: &str) -> Result<Vec<Entry>, AdminError> {
        self.barrier().await?;
        self.list(prefix, &crate::model::ReadAfter::Anything).await
    }
}
