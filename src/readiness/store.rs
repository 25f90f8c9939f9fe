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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use spectrum_core::Hlc;
    use spectrum_replication::MemoryStore;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_health::server::HealthService;

    use super::*;

    /// A memory store whose writes fail in storage while `full` is set.
    #[derive(Debug)]
    struct FullDisk {
        inner: MemoryStore,
        full: AtomicBool,
    }

    impl FullDisk {
        fn check(&self) -> Result<(), StoreError> {
            if self.full.load(Ordering::Acquire) {
                let source = std::io::Error::other("No space left on device");
                return Err(StoreError::Storage {
                    subject: "config.redb".into(),
                    verb: "write",
                    source: source.into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ConfigStore for FullDisk {
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
            self.check()?;
            self.inner.apply(batch).await
        }
        async fn merge(
            &self,
            records: Vec<Record>,
            covers: &VersionVector,
        ) -> Result<MergeReport, StoreError> {
            self.check()?;
            self.inner.merge(records, covers).await
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
        async fn restore(&self, snapshot: Snapshot) -> Result<MergeReport, StoreError> {
            self.inner.restore(snapshot).await
        }
        async fn changes_since(
            &self,
            prefix: &str,
            from: u64,
            limit: usize,
        ) -> Result<ChangeBatch, StoreError> {
            self.inner.changes_since(prefix, from, limit).await
        }
    }

    async fn health(service: &HealthService) -> ServingStatus {
        let request = tonic::Request::new(HealthCheckRequest { service: String::new() });
        service.check(request).await.unwrap().into_inner().status()
    }

    #[tokio::test]
    async fn a_storage_failure_makes_the_node_not_ready_until_a_write_succeeds() {
        let id: NodeId = "n1".parse().unwrap();
        let disk = Arc::new(FullDisk {
            inner: MemoryStore::new(id, Arc::new(Hlc::system())),
            full: AtomicBool::new(false),
        });
        let (reporter, _) = tonic_health::server::health_reporter();
        let service = HealthService::from_health_reporter(reporter.clone());
        let readiness = Arc::new(Readiness::new(Arc::new(AtomicBool::new(true)), reporter));
        readiness.publish().await;
        let store = WatchedStore::new(disk.clone(), readiness.clone());
        assert!(readiness.is_ready());
        assert_eq!(health(&service).await, ServingStatus::Serving);

        disk.full.store(true, Ordering::Release);
        assert!(store.apply(WriteBatch::new().put("settings/a", "1")).await.is_err());
        let report = readiness.report();
        assert!(!report.ready && !report.store_writable, "{report:?}");
        assert_eq!(report.failing, ["store not writable"]);
        assert!(report.store_error.unwrap().contains("No space left"));
        assert_eq!(health(&service).await, ServingStatus::NotServing);

        // A bad key says nothing about the disk.
        disk.full.store(false, Ordering::Release);
        assert!(store.apply(WriteBatch::new().put("", "1")).await.is_err());
        assert!(!readiness.is_ready());

        store.apply(WriteBatch::new().put("settings/a", "2")).await.unwrap();
        assert!(readiness.is_ready());
        assert_eq!(health(&service).await, ServingStatus::Serving);
    }
}
