//! [`WatchedStore`]: a node's store, watched for whether it can still write.

use std::sync::Arc;

use async_trait::async_trait;
use spectrum_core::NodeId;
use spectrum_replication::{
    ChangeBatch, ConfigStore, Delta, MergeReport, Record, Snapshot, StoreError, VersionVector, WriteBatch,
};
use tokio::sync::broadcast;

use super::Readiness;

/// Forwards every call to the node's store, and records in [`Readiness`] whether
/// the last write (a local apply, a merge or a restore) reached the backing
/// storage: a [`StoreError::Storage`] makes the node not ready, the next write
/// that succeeds makes it ready again. Invalid input (a bad key, a malformed
/// record) says nothing about the storage and changes nothing.
#[derive(Debug)]
pub(crate) struct WatchedStore {
    inner: Arc<dyn ConfigStore>,
    readiness: Arc<Readiness>,
}

impl WatchedStore {
    pub(crate) fn new(inner: Arc<dyn ConfigStore>, readiness: Arc<Readiness>) -> Self {
        Self { inner, readiness }
    }

    async fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let outcome = match &result {
            Ok(_) => Some(None),
            Err(e @ StoreError::Storage { .. }) => Some(Some(e.to_string())),
            Err(_) => None,
        };
        if let Some(error) = outcome {
            if self.readiness.set_store_error(error) {
                self.readiness.publish().await;
            }
        }
        result
    }
}

#[async_trait]
impl ConfigStore for WatchedStore {
    fn node_id(&self) -> &NodeId {
        self.inner.node_id()
    }
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(key).await
    }
    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        self.inner.scan(prefix).await
    }
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError> {
        let result = self.inner.apply(batch).await;
        self.observe(result).await
    }
    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError> {
        let result = self.inner.merge(records, covers).await;
        self.observe(result).await
    }
    async fn digest(&self) -> Result<VersionVector, StoreError> {
        self.inner.digest().await
    }
    async fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError> {
        self.inner.delta(since, budget_bytes).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.inner.subscribe()
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.inner.snapshot().await
    }
    async fn restore(&self, snapshot: Snapshot) -> Result<MergeReport, StoreError> {
        let result = self.inner.restore(snapshot).await;
        self.observe(result).await
    }
    async fn changes_since(&self, prefix: &str, from: u64, limit: usize) -> Result<ChangeBatch, StoreError> {
        self.inner.changes_since(prefix, from, limit).await
    }
    async fn collect_tombstones(&self, horizon: &VersionVector) -> Result<usize, StoreError> {
        let result = self.inner.collect_tombstones(horizon).await;
        self.observe(result).await
    }
}
