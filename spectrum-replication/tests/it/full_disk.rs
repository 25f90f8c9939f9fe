//! The durable store on a real full disk (a 2 MiB tmpfs): writes fail with the
//! file named, nothing half-written shows, and once space is freed the store
//! writes again without being reopened by its owner, keeping every acknowledged
//! write.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use spectrum_core::{Hlc, NodeId};
use spectrum_replication::{ConfigStore, RedbStore, StoreError, WriteBatch};

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one; panics where this process may not mount (the test needs
    /// root, as CI runs it: it fails rather than pass without running).
    pub(crate) fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "cannot mount a tmpfs at {} (the full-disk tests need root)", dir.path().display());
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a filler file; returns its path.
    pub(crate) fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_store_on_a_full_disk_fails_naming_its_file_and_writes_again_once_space_is_freed() {
    let fs = Tmpfs::mount("2m");
    let path = fs.path().join("config.redb");
    let id: NodeId = "n1".parse().unwrap();
    let store = RedbStore::open(&path, id.clone(), Arc::new(Hlc::system())).unwrap();
    let acked = store.apply(WriteBatch::new().put("settings/before", "kept")).await.unwrap();
    let filler = fs.fill();

    // Writes that need room fail, each of them, with the file named.
    let big = vec![7u8; 256 * 1024];
    let mut failures = 0;
    for i in 0..8 {
        match store.apply(WriteBatch::new().put(format!("settings/big-{i}"), big.clone())).await {
            Ok(_) => {}
            Err(e @ StoreError::Storage { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
                failures += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(failures > 0, "a full disk made no write fail");
    assert!(store.apply(WriteBatch::new().put("settings/big", big.clone())).await.is_err());
    assert!(store.recover().await.is_err(), "still full: recovery cannot prove a write");

    // Room again: the store writes, without its owner reopening it.
    std::fs::remove_file(filler).unwrap();
    assert!(store.recover().await.unwrap(), "recovered");
    let after =
        store.apply(WriteBatch::new().put("settings/after", big.clone())).await.expect("writes again");
    let digest = store.digest().await.unwrap();
    assert!(digest.covers(&acked[0].token()) && digest.covers(&after[0].token()));
    drop(store);

    // Every acknowledged write is on disk.
    let store = RedbStore::open(&path, id, Arc::new(Hlc::system())).unwrap();
    for key in ["settings/before", "settings/after"] {
        assert!(store.get(key).await.unwrap().is_some(), "{key} survived");
    }
    let again = store.digest().await.unwrap();
    assert_eq!(again, digest, "the file holds what memory held");
}

/// Whether `e` carries the I/O error of a full disk somewhere in its chain.
fn is_full_disk(e: &StoreError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Concurrent writers on a full disk share group commits: every write of a
/// failed group fails as a full disk naming the file (the same failure for
/// each), none of them shows, and those acknowledged are all on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_a_full_disk_fail_alike_and_only_acknowledged_ones_remain() {
    let fs = Tmpfs::mount("2m");
    let path = fs.path().join("config.redb");
    let id: NodeId = "n1".parse().unwrap();
    let store = Arc::new(RedbStore::open(&path, id.clone(), Arc::new(Hlc::system())).unwrap());
    store.apply(WriteBatch::new().put("settings/before", "kept")).await.unwrap();
    let filler = fs.fill();

    let mut writers = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = store.clone();
        writers.spawn(async move {
            let key = format!("settings/w{i}");
            (key.clone(), store.apply(WriteBatch::new().put(key, vec![i as u8; 64 * 1024])).await)
        });
    }
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    while let Some(done) = writers.join_next().await {
        match done.unwrap() {
            (key, Ok(_)) => acked.push(key),
            (key, Err(e)) => {
                assert!(is_full_disk(&e), "{key}: not told the disk is full: {e:?}");
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
                failed.push(key);
            }
        }
    }
    assert!(!failed.is_empty(), "a full disk made no write fail");
    for key in &failed {
        assert!(store.get(key).await.unwrap().is_none(), "{key} failed, yet shows");
    }

    std::fs::remove_file(filler).unwrap();
    assert!(store.recover().await.unwrap(), "recovered");
    let digest = store.digest().await.unwrap();
    drop(store);
    let store = RedbStore::open(&path, id, Arc::new(Hlc::system())).unwrap();
    for key in acked.iter().map(String::as_str).chain(["settings/before"]) {
        assert!(store.get(key).await.unwrap().is_some(), "{key} was acknowledged, and lost");
    }
    for key in &failed {
        assert!(store.get(key).await.unwrap().is_none(), "{key} failed, yet came back");
    }
    assert_eq!(store.digest().await.unwrap(), digest, "the file holds what memory held");
}
