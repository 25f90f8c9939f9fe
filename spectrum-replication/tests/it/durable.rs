//! The durable store: what survives a restart, a `kill -9`, and a damaged file.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spectrum_core::{Hlc, ManualClock, NodeId, Timestamp};
use spectrum_replication::{
    ChangeLogLimits, ConfigStore, Origin, Record, RedbStore, StoreError, VersionVector, WriteBatch,
};

/// Selects the child mode of [`kill_9_child_writer`]: the store file to write to.
const CHILD_ENV: &str = "SPECTRUM_REPLICATION_KILL9_CHILD_PATH";

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn origin(text: &str) -> Origin {
    text.parse().unwrap()
}

fn clock_at(ms: u64) -> Arc<Hlc> {
    Arc::new(Hlc::new(Arc::new(ManualClock::new(ms))))
}

fn open(path: &Path, id: &str, hlc: Arc<Hlc>) -> RedbStore {
    RedbStore::open(path, node(id), hlc).unwrap()
}

fn remote(key: &str, origin: &str, seq: u64, wall_ms: u64) -> Record {
    Record {
        key: key.into(),
        value: Some(Bytes::from_static(b"theirs")),
        stamp: Timestamp::new(wall_ms, 0),
        origin: self::origin(origin),
        seq,
        lineage: Default::default(),
    }
}

#[tokio::test]
async fn a_reopened_store_keeps_its_conflicts_and_the_lineage_of_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1.redb");
    let store = open(&path, "n1", clock_at(1_000));
    let mine = store.apply(WriteBatch::new().put("k", "mine")).await.unwrap().remove(0);
    // A peer's write to the key that never saw ours, stamped later: it wins, ours is the loser.
    store.merge(vec![remote("k", "n2~0000000000000002", 1, 5_000)], &VersionVector::default()).await.unwrap();
    let before = store.conflicts("").await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].loser, mine);
    let later = store.apply(WriteBatch::new().put("j", "a").put("j", "b")).await.unwrap();
    drop(store);

    let store = open(&path, "n1", clock_at(1_000));
    assert_eq!(store.conflicts("").await.unwrap(), before, "the loser survives a restart");
    assert_eq!(store.get("j").await.unwrap().unwrap().lineage, later[1].lineage, "and lineages do");
    assert_eq!(later[1].lineage.replaces, Some(later[0].token()));
    // A write through this store saw both sides: the conflict is gone, on disk too.
    store.apply(WriteBatch::new().put("k", "settled")).await.unwrap();
    drop(store);
    let store = open(&path, "n1", clock_at(1_000));
    assert!(store.conflicts("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reopened_store_keeps_every_write_its_digest_tombstones_and_clock_floor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1.redb");
    let s = open(&path, "n1", clock_at(5_000_000));
    s.apply(WriteBatch::new().put("a", "1").put("b", "2")).await.unwrap();
    let del = s.apply(WriteBatch::new().delete("a")).await.unwrap();
    // A record above a gap (pending), and one a peer stamped ahead of us.
    s.merge(vec![remote("far", "peer", 3, 5_000_100)], &VersionVector::default()).await.unwrap();
    s.merge(vec![remote("near", "peer", 1, 9_000_000)], &VersionVector::default()).await.unwrap();
    s.apply(WriteBatch::new().delete("gone")).await.unwrap();
    let mut horizon = VersionVector::default();
    horizon.raise(s.origin(), 4);
    assert_eq!(s.collect_tombstones(&horizon).await.unwrap(), 2);
    let before = (s.scan("").await.unwrap(), s.digest().await.unwrap(), s.snapshot().await.unwrap());
    let written_as = s.origin().clone();
    let last_stamp = s.hlc().last();
    drop(s);

    // The clock restarts far behind: the store lifts it to the high-water mark.
    let hlc = clock_at(1_000);
    let s = open(&path, "n1", hlc.clone());
    assert!(hlc.last() >= last_stamp, "the clock floor survives: {} < {}", hlc.last(), last_stamp);
    assert_eq!(*s.origin(), written_as, "the store keeps its origin");
    let after = (s.scan("").await.unwrap(), s.digest().await.unwrap(), s.snapshot().await.unwrap());
    assert_eq!(before.0, after.0, "every record, tombstones included");
    assert_eq!(before.1, after.1, "the digest");
    assert_eq!(before.2.gc_floor, after.2.gc_floor, "the tombstone floor");
    assert_eq!(before.2.position, after.2.position, "the change-feed position");
    assert!(s.get("b").await.unwrap().is_some());
    assert!(s.get("a").await.unwrap().is_none(), "a collected tombstone stays collected");
    assert!(
        matches!(s.delta(&VersionVector::default(), 1 << 20).await, Err(StoreError::BehindHorizon { .. })),
        "the floor still sends stale peers to a snapshot"
    );

    // The pending b:3 is still pending: b:2 completes the run.
    assert_eq!(s.digest().await.unwrap().get(&origin("peer")), 1);
    s.merge(vec![remote("mid", "peer", 2, 5_000_050)], &VersionVector::default()).await.unwrap();
    assert_eq!(s.digest().await.unwrap().get(&origin("peer")), 3, "pending sequence numbers survive");

    let w = s.apply(WriteBatch::new().put("a", "back")).await.unwrap();
    assert_eq!(w[0].seq, 5, "sequence numbers continue");
    assert!(w[0].stamp > del[0].stamp && w[0].stamp > last_stamp, "stamps never go backwards");
    let feed = s.changes_since("", after.2.position, 10).await.unwrap();
    assert_eq!(feed.changes.len(), 2, "the feed continues from the old position");
    let all = s.changes_since("", 0, 100).await.unwrap();
    assert_eq!(all.changes.len() as u64, all.position, "changes from before the restart are kept");
    assert_eq!(all.changes[0].key, "a", "from the very first");
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1.redb");
    let s = open(&path, "n1", clock_at(1_000));
    let big = Bytes::from(vec![0u8; spectrum_replication::record::DEFAULT_MAX_VALUE_BYTES + 1]);
    s.apply(WriteBatch::new().put("x", "1").put("y", big)).await.unwrap_err();
    let batch = (0..50).fold(WriteBatch::new(), |b, i| b.put(format!("k/{i:02}"), format!("{i}")));
    s.apply(batch).await.unwrap();
    drop(s);
    let s = open(&path, "n1", clock_at(1_000));
    assert!(s.get("x").await.unwrap().is_none(), "the rejected batch left nothing");
    assert_eq!(s.scan("k/").await.unwrap().len(), 50, "the whole batch is there");
    assert_eq!(s.digest().await.unwrap().get(s.origin()), 50);
}

#[tokio::test]
async fn a_file_of_another_node_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let s = open(&path, "n1", clock_at(1_000));
    s.apply(WriteBatch::new().put("k", "v")).await.unwrap();
    drop(s);
    let e = RedbStore::open(&path, node("n2"), clock_at(1_000)).unwrap_err();
    assert!(matches!(&e, StoreError::NodeMismatch { stored, .. } if stored == "n1"), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("n1") && msg.contains("n2") && msg.contains("store.redb"), "{msg}");
    assert!(open(&path, "n1", clock_at(1_000)).get("k").await.unwrap().is_some(), "the file is untouched");
}

#[tokio::test]
async fn a_damaged_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    let e = RedbStore::open(&garbage, node("n1"), clock_at(1_000)).unwrap_err();
    assert!(matches!(e, StoreError::Storage { .. }), "{e}");
    assert!(e.to_string().contains("garbage.redb"), "{e}");

    let good = dir.path().join("good.redb");
    let s = open(&good, "n1", clock_at(1_000));
    for i in 0..200 {
        s.apply(WriteBatch::new().put(format!("k/{i}"), vec![b'v'; 512])).await.unwrap();
    }
    drop(s);
    let bytes = std::fs::read(&good).unwrap();
    for cut in [bytes.len() / 2, 4096, 100] {
        let truncated = dir.path().join(format!("truncated-{cut}.redb"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let res = RedbStore::open(&truncated, node("n1"), clock_at(1_000));
        assert!(res.is_err(), "a file cut to {cut} bytes opened");
    }

    let flipped = dir.path().join("flipped.redb");
    let mut damaged = bytes.clone();
    for b in damaged.iter_mut().skip(bytes.len() / 3).take(4096) {
        *b ^= 0xff;
    }
    std::fs::write(&flipped, &damaged).unwrap();
    if let Ok(s) = RedbStore::open(&flipped, node("n1"), clock_at(1_000)) {
        // Damage in unused pages is harmless; what opened must be whole.
        assert_eq!(s.scan("k/").await.unwrap().len(), 200);
    }
}

/// The child half of [`acknowledged_writes_survive_kill_9`]: with [`CHILD_ENV`]
/// set, writes until killed, printing `acked N` once write N is acknowledged.
/// Without it, does nothing.
#[tokio::test]
async fn kill_9_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let s = open(Path::new(&path), "victim", Arc::new(Hlc::system()));
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0u64.. {
        if Instant::now() > deadline {
            break;
        }
        s.apply(WriteBatch::new().put(format!("k/{i:06}"), format!("{i}")).put("last", format!("{i}")))
            .await
            .unwrap();
        writeln!(out, "acked {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("victim.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["durable::kill_9_child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: Option<u64> = None;
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("acked ") {
            acked = Some(n.parse().unwrap());
        }
        // Kill mid-stream, after a fair number of acknowledged writes.
        if acked.is_some_and(|n| n >= 40) || started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on unix
    child.wait().unwrap();
    let acked = acked.expect("the child acknowledged no write");

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let s = open(&path, "victim", Arc::new(Hlc::system()));
        let stored = s.scan("k/").await.unwrap();
        for i in 0..=acked {
            let rec = s.get(&format!("k/{i:06}")).await.unwrap();
            assert!(rec.is_some(), "acknowledged write {i} of {acked} is missing after kill -9");
        }
        assert!(stored.len() as u64 > acked);
        let digest = s.digest().await.unwrap().get(s.origin());
        assert!(digest >= 2 * (acked + 1), "digest {digest} lost acknowledged writes");
        // The store carries on numbering after whatever made it to disk.
        let w = s.apply(WriteBatch::new().put("after", "restart")).await.unwrap();
        assert_eq!(w[0].seq, digest + 1);
        let last = s.get("last").await.unwrap().unwrap();
        assert!(w[0].stamp > last.stamp);
        // The change log survived with the writes: every acknowledged one is in
        // it, in order, and a watcher resumes from any position it was given.
        let mut keys = Vec::new();
        let mut pos = 0;
        for _ in 0..10_000 {
            let page = s.changes_since("k/", pos, 256).await.unwrap();
            if page.position == pos {
                break;
            }
            pos = page.position;
            keys.extend(page.changes.into_iter().map(|c| c.key));
        }
        let want: Vec<String> = (0..stored.len()).map(|i| format!("k/{i:06}")).collect();
        assert_eq!(keys, want, "the log holds every stored write, in order");
    });
}

#[tokio::test]
async fn a_watcher_resumes_from_its_position_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1.redb");
    let s = open(&path, "n1", clock_at(1_000));
    s.apply(WriteBatch::new().put("watched/a", "1").put("other/x", "1")).await.unwrap();
    let seen = s.changes_since("watched/", 0, 100).await.unwrap();
    assert_eq!(seen.changes.len(), 1);
    s.apply(WriteBatch::new().put("watched/b", "2").delete("watched/a")).await.unwrap();
    drop(s);

    let s = open(&path, "n1", clock_at(1_000));
    let missed = s.changes_since("watched/", seen.position, 100).await.unwrap();
    let keys: Vec<(&str, bool)> = missed
        .changes
        .iter()
        .map(|c| (c.key.as_str(), c.record.as_ref().is_some_and(|r| r.is_tombstone())))
        .collect();
    assert_eq!(
        keys,
        [("watched/b", false), ("watched/a", true)],
        "what happened while it was away, once, in order"
    );
    assert_eq!(missed.position, s.feed_head().await.unwrap().position);
}

#[tokio::test]
async fn the_log_keeps_what_its_limits_say_and_refuses_older_positions_naming_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1.redb");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let hlc = Arc::new(Hlc::new(clock.clone()));
    let limits = ChangeLogLimits::default().max_entries(5).max_age(Duration::from_secs(60));
    let s = RedbStore::open(&path, node("n1"), hlc.clone()).unwrap().with_change_log(limits);
    for i in 0..8 {
        s.apply(WriteBatch::new().put(format!("k/{i}"), "v")).await.unwrap();
    }
    let head = s.feed_head().await.unwrap();
    assert_eq!((head.position, head.oldest), (8, 3), "by count: the newest five");
    let e = s.changes_since("", 2, 10).await.unwrap_err();
    assert!(matches!(e, StoreError::FeedCompacted { from: 2, oldest: 3 }), "{e}");
    assert_eq!(s.changes_since("", 3, 10).await.unwrap().changes.len(), 5);

    // By age: a commit a minute later drops every change older than a minute.
    clock.advance(Duration::from_secs(61));
    s.apply(WriteBatch::new().put("k/late", "v")).await.unwrap();
    assert_eq!(s.feed_head().await.unwrap().oldest, 8, "only the new change is left");
    drop(s);
    // The limits are the store's settings: a reopened store keeps what is on disk.
    let s = RedbStore::open(&path, node("n1"), hlc).unwrap();
    let e = s.changes_since("", 7, 10).await.unwrap_err();
    assert!(matches!(e, StoreError::FeedCompacted { oldest: 8, .. }), "{e}");
    assert_eq!(s.changes_since("", 8, 10).await.unwrap().changes[0].key, "k/late");
}
