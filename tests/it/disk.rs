//! A full disk: a node whose store cannot write is not ready and refuses writes
//! with the store named, keeps trying, and serves again once the disk has room,
//! without a restart and with nothing acknowledged lost. On a real 2 MiB tmpfs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spectrum::NodeBuilder;
use spectrum::client::{AckLevel, AdminClient, ReadAfter};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{grpc_health, readyz_becomes};

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one; panics where this process may not mount (the test needs
    /// root, as CI runs it: it fails rather than pass without running).
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "cannot mount a tmpfs at {} (the full-disk tests need root)", dir.path().display());
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a filler file; returns its path.
    fn fill(&self) -> PathBuf {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_full_disk_is_not_ready_refuses_writes_and_serves_again_once_space_is_freed() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let fs = Tmpfs::mount("2m");
    let node = NodeBuilder::new("disk-1".parse().unwrap(), "it-full-disk".parse().unwrap())
        .data_dir(fs.path())
        .drain_grace(Duration::ZERO)
        .start()
        .await
        .expect("starts");
    let addr = node.local_addr().to_string();
    let client = AdminClient::connect(node.addr(), None).await.unwrap();
    let before = client.put("settings/before", "kept", AckLevel::Local).await.expect("written");
    readyz_becomes(&addr, 200).await;

    let filler = fs.fill();
    let big = vec![7u8; 200 * 1024];
    let mut refused = None;
    for i in 0..10 {
        if let Err(e) = client.put(&format!("settings/big-{i}"), big.clone(), AckLevel::Local).await {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("a write on a full disk fails");
    let code = refused.code();
    assert!(
        matches!(code, Some(tonic::Code::ResourceExhausted | tonic::Code::Unavailable)),
        "{code:?}: {refused}"
    );
    assert!(refused.to_string().contains("config.redb"), "names the store: {refused}");
    let body = readyz_becomes(&addr, 503).await;
    assert!(body.contains("store not writable"), "{body}");
    assert_eq!(grpc_health(node.url()).await, ServingStatus::NotServing);
    let again = client.put("settings/big", big.clone(), AckLevel::Local).await.unwrap_err();
    assert!(again.code() != Some(tonic::Code::Internal), "{again}");

    // Room again: ready without a restart or a client's write, and writes succeed.
    std::fs::remove_file(filler).unwrap();
    readyz_becomes(&addr, 200).await;
    let after = client.put("settings/after", big.clone(), AckLevel::Local).await.expect("writes again");
    let kept = client.get("settings/before", ReadAfter::from(&before.write)).await.unwrap();
    assert_eq!(kept.value, b"kept");
    client.get("settings/after", ReadAfter::from(&after.write)).await.unwrap();
    node.shutdown_without_drain().await;
}
