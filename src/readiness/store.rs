//! [`WatchedStore`]: a node's store, watched for whether it can still write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use spectrum_replication::{
    ChangeBatch, ConfigStore, Conflict, Delta, MergeReport, Origin, Record, Snapshot, StoreError,
    VersionToken, VersionVector, WriteBatch,
};
use tokio::sync::broadcast;
use tracing::{debug, info};

use super::Readiness;

/// First wait before asking a failed store to [recover](ConfigStore::recover);
/// it doubles up to [`RECOVER_MAX_BACKOFF`].
const RECOVER_FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Longest wait between two attempts to recover a failed store.
const RECOVER_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Forwards every call to the node's store, and records in [`Readiness`] whether
/// the last write (a local apply, a merge or a restore) reached the backing
/// storage: a [`StoreError::Storage`] makes the node not ready, the next write
/// that succeeds in storing something makes it ready again. Invalid input (a bad
/// key, a malformed record) says nothing about the storage and changes nothing,
/// nor does a merge that stores nothing (an idle sync round's): a store skips the
/// storage for it, so it succeeds on a full disk too.
///
/// While the store cannot write, a background task asks it to
/// [recover](ConfigStore::recover) (a [`RedbStore`](spectrum_replication::RedbStore)
/// reopens its file and proves a commit), with backoff up to
/// [`RECOVER_MAX_BACKOFF`], so the node serves again once the disk has room
/// even if no client writes. The task holds the store weakly: it ends with the
/// node.
#[derive(Debug)]
pub(crate) struct WatchedStore {
    inner: Arc<dyn ConfigStore>,
    readiness: Arc<Readiness>,
    /// A recovery task is running.
    recovering: Arc<AtomicBool>,
}

impl WatchedStore {
    pub(crate) fn new(inner: Arc<dyn ConfigStore>, readiness: Arc<Readiness>) -> Self {
        Self { inner, readiness, recovering: Arc::new(AtomicBool::new(false)) }
    }

    /// Starts the recovery task unless one runs.
    fn start_recovering(&self) {
        if self.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, readiness, recovering) =
            (Arc::downgrade(&self.inner), self.readiness.clone(), self.recovering.clone());
        tokio::spawn(async move {
            recover(store, &readiness).await;
            recovering.store(false, Ordering::Release);
        });
    }

    /// Records what `result` says of the storage: a storage error, or a success
    /// that `stored` finds stored something.
    async fn observe<T>(
        &self,
        result: Result<T, StoreError>,
        stored: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        let outcome = match &result {
            Ok(value) if stored(value) => Some(None),
            Ok(_) => None,
            Err(e @ StoreError::Storage { .. }) => Some(Some(e.to_string())),
            Err(_) => None,
        };
        if let Some(error) = outcome {
            let failing = error.is_some();
            if self.readiness.set_store_error(error) {
                self.readiness.publish().await;
            }
            if failing {
                self.start_recovering();
            }
        }
        result
    }
}

/// Asks `store` to recover, with backoff, until it proves it can write, a real
/// write succeeds, or the node (the last strong holder of `store`) is gone.
async fn recover(store: Weak<dyn ConfigStore>, readiness: &Readiness) {
    let mut backoff = RECOVER_FIRST_BACKOFF;
    loop {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECOVER_MAX_BACKOFF);
        if readiness.report().store_writable {
            return;
        }
        let Some(store) = store.upgrade() else { return };
        match store.recover().await {
            Ok(true) => {
                info!("store recovered: it writes again");
                if readiness.set_store_error(None) {
                    readiness.publish().await;
                }
                return;
            }
            Ok(false) => {}
            Err(e) => {
                debug!(error = %e, "store still cannot write");
                readiness.set_store_error(Some(e.to_string()));
            }
        }
    }
}

#[async_trait]
impl ConfigStore for WatchedStore {
    fn origin(&self) -> &Origin {
        self.inner.origin()
    }
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(key).await
    }
    async fn scan(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        self.inner.scan(prefix).await
    }
    async fn live_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.live_keys(prefix).await
    }
    async fn live_version(&self, key: &str) -> Result<Option<VersionToken>, StoreError> {
        self.inner.live_version(key).await
    }
    async fn live_versions(&self, keys: &[&str]) -> Result<Vec<Option<VersionToken>>, StoreError> {
        self.inner.live_versions(keys).await
    }
    async fn apply(&self, batch: WriteBatch) -> Result<Vec<Record>, StoreError> {
        let result = self.inner.apply(batch).await;
        self.observe(result, |records| !records.is_empty()).await
    }
    async fn merge(&self, records: Vec<Record>, covers: &VersionVector) -> Result<MergeReport, StoreError> {
        let result = self.inner.merge(records, covers).await;
        self.observe(result, |report| report.applied > 0).await
    }
    async fn merge_deferred(
        &self,
        records: Vec<Record>,
        covers: &VersionVector,
    ) -> Result<MergeReport, StoreError> {
        let result = self.inner.merge_deferred(records, covers).await;
        self.observe(result, |report| report.applied > 0).await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        let result = self.inner.sync().await;
        self.observe(result, |()| false).await
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
    fn subscribe_prefix(&self, prefix: &str) -> broadcast::Receiver<Record> {
        self.inner.subscribe_prefix(prefix)
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.inner.snapshot().await
    }
    async fn restore(&self, snapshot: Snapshot) -> Result<MergeReport, StoreError> {
        let result = self.inner.restore(snapshot).await;
        self.observe(result, |report| report.applied > 0).await
    }
    async fn changes_since(&self, prefix: &str, from: u64, limit: usize) -> Result<ChangeBatch, StoreError> {
        self.inner.changes_since(prefix, from, limit).await
    }
    async fn feed_head(&self) -> Result<spectrum_replication::FeedHead, StoreError> {
        self.inner.feed_head().await
    }
    async fn collect_tombstones(&self, horizon: &VersionVector) -> Result<usize, StoreError> {
        let result = self.inner.collect_tombstones(horizon).await;
        self.observe(result, |collected| *collected > 0).await
    }
    async fn conflicts(&self, prefix: &str) -> Result<Vec<Conflict>, StoreError> {
        self.inner.conflicts(prefix).await
    }
    async fn recover(&self) -> Result<bool, StoreError> {
        self.inner.recover().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use spectrum_core::{Hlc, NodeId};
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
        fn origin(&self) -> &Origin {
            self.inner.origin()
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
            // Like `RedbStore`, a merge with nothing to store touches no storage.
            if !records.is_empty() {
                self.check()?;
            }
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
        async fn recover(&self) -> Result<bool, StoreError> {
            self.check().map(|()| true)
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

    #[tokio::test]
    async fn a_merge_that_stores_nothing_leaves_a_store_that_cannot_write_not_ready() {
        let id: NodeId = "n1".parse().unwrap();
        let disk = Arc::new(FullDisk {
            inner: MemoryStore::new(id, Arc::new(Hlc::system())),
            full: AtomicBool::new(true),
        });
        let (reporter, _) = tonic_health::server::health_reporter();
        let readiness = Arc::new(Readiness::new(Arc::new(AtomicBool::new(true)), reporter));
        let store = WatchedStore::new(disk.clone(), readiness.clone());
        assert!(store.apply(WriteBatch::new().put("settings/a", "1")).await.is_err());
        assert!(!readiness.is_ready());

        // An idle sync round: nothing to merge, so the disk was never asked.
        let report = store.merge(vec![], &VersionVector::default()).await.unwrap();
        assert_eq!(report.applied, 0);
        assert!(!readiness.is_ready(), "{:?}", readiness.report());
    }

    #[tokio::test]
    async fn a_store_that_cannot_write_is_retried_in_the_background_until_it_recovers() {
        let id: NodeId = "n1".parse().unwrap();
        let disk = Arc::new(FullDisk {
            inner: MemoryStore::new(id, Arc::new(Hlc::system())),
            full: AtomicBool::new(true),
        });
        let (reporter, _) = tonic_health::server::health_reporter();
        let service = HealthService::from_health_reporter(reporter.clone());
        let readiness = Arc::new(Readiness::new(Arc::new(AtomicBool::new(true)), reporter));
        let store = WatchedStore::new(disk.clone(), readiness.clone());
        assert!(store.apply(WriteBatch::new().put("settings/a", "1")).await.is_err());
        tokio::time::sleep(RECOVER_FIRST_BACKOFF * 4).await;
        assert!(!readiness.is_ready(), "still full: still not ready");

        // Room again, and no client writes: the retry finds out by itself.
        disk.full.store(false, Ordering::Release);
        let deadline = tokio::time::Instant::now() + RECOVER_MAX_BACKOFF * 3;
        while !readiness.is_ready() {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", readiness.report());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(health(&service).await, ServingStatus::Serving);
    }
}
