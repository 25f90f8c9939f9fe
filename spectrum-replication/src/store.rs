//! The [`ConfigStore`] trait: one node's copy of the configuration database.

use std::sync::Arc;

use async_trait::async_trait;
use spectrum_core::NodeId;
use tokio::sync::broadcast;

use crate::error::StoreError;
use crate::record::{Delta, MergeReport, Record, VersionVector, WriteBatch};

/// One node's full copy of the replicated configuration database.
///
/// # Contract
///
/// - Local writes ([`apply`](ConfigStore::apply)) are stamped by the node's HLC and
///   numbered by a per-origin sequence (1, 2, 3, …); a batch applies atomically and,
///   in a durable store, is on disk before `apply` returns.
/// - Remote records ([`merge`](ConfigStore::merge)) are kept when they win under
///   last-writer-wins by `(stamp, origin)`; merging is commutative, associative and
///   idempotent, so replicas that have merged the same records hold the same state,
///   whatever the order.
/// - The [`digest`](ConfigStore::digest) is a version vector; a
///   [`delta`](ConfigStore::delta) for a peer's digest holds every stored record
///   that peer may lack, and [`merge`](ConfigStore::merge) of that delta with its
///   `covers` brings the peer's digest up to ours.
/// - Tombstones are records: a delete replicates like a put and a deleted key
///   never comes back.
///
/// It is an I/O plug-in, so it is async (`#[async_trait]`), `Send + Sync +
/// 'static`, and held as `Arc<dyn ConfigStore>`.
#[async_trait]
pub trait ConfigStore: Send + Sync + std::fmt::Debug + 'static {
    /// The node whose copy this is (the origin of its local writes).
    fn node_id(&self) -> &NodeId;

    /// The record stored for `key`, tombstone included.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// Every record whose key starts with `prefix`, tombstones included, in key order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError>;

    /// Applies local writes atomically and returns the stamped records, in batch order.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidKey`], [`StoreError::ValueTooLarge`] or
    /// [`StoreError::EmptyBatch`] for bad input, and nothing is written;
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError>;

    /// Merges records from peers. `covers` (empty for a push) lets the digest
    /// advance over sequence numbers the sender has no record for because they were
    /// superseded.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidRecord`] for malformed input (nothing is merged);
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError>;

    /// This copy's version vector.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn digest(&self) -> Result<VersionVector, StoreError>;

    /// The records a peer with digest `since` lacks, at most about `budget_bytes`
    /// of them (always at least one record when any is due).
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] when the backing storage fails.
    async fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError>;

    /// A feed of records as they are stored here, local or merged, in the order
    /// they were stored. A slow receiver may lag (see
    /// [`broadcast::error::RecvError::Lagged`]) and should then re-read with
    /// [`scan`](ConfigStore::scan).
    fn subscribe(&self) -> broadcast::Receiver<Record>;
}

#[async_trait]
impl<T: ConfigStore + ?Sized> ConfigStore for Arc<T> {
    fn node_id(&self) -> &NodeId {
        (**self).node_id()
    }
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        (**self).get(key).await
    }
    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        (**self).scan(prefix).await
    }
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError> {
        (**self).apply(batch).await
    }
    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError> {
        (**self).merge(records, covers).await
    }
    async fn digest(&self) -> Result<VersionVector, StoreError> {
        (**self).digest().await
    }
    async fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError> {
        (**self).delta(since, budget_bytes).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Record> {
        (**self).subscribe()
    }
}
