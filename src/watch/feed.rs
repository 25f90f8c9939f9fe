//! The serving side of a watch: a task that follows one node's change feed and
//! queues events in a bounded channel; [`WatchStream`] reads them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use parking_lot::Mutex;
use spectrum_core::Timestamp;
use spectrum_replication::{Change, ConfigStore, Origin, Record, StoreError, VersionVector};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::task::JoinHandle;
use tracing::debug;

use super::{EventKind, WatchError, WatchEvent, WatchPosition};
use crate::session::Session;

/// Changes read from the feed at a time.
const PAGE: usize = 256;

/// How a node bounds each watch it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Events queued for a watcher at most (default 256): a watcher that does not
    /// take them holds no more than this on the node.
    pub buffer: usize,
    /// How long the queue may stay full before the watch ends with
    /// [`WatchError::FellBehind`] (default 30 s).
    pub stall: Duration,
    /// How often, at most, a progress event tells an idle watcher of a newer
    /// resume position (default 1 s).
    pub progress: Duration,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self { buffer: 256, stall: Duration::from_secs(30), progress: Duration::from_secs(1) }
    }
}

/// The events of one watch: `Ok` events in the node's apply order, then at most
/// one `Err` that ended it. Dropping it stops the watch on the node.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<WatchEvent>,
    failed: Arc<Mutex<Option<WatchError>>>,
    task: JoinHandle<()>,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(Ok(event))),
            Poll::Ready(None) => Poll::Ready(self.failed.lock().take().map(Err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Starts watching `prefix` on `store` from `from` (from now when `None`).
///
/// # Errors
///
/// [`WatchError::Compacted`], [`WatchError::Ahead`] for a position of this store
/// it cannot resume from; [`WatchError::BelowHorizon`] or
/// [`WatchError::NotCaughtUp`] for a position of another store; store failures.
pub async fn watch(
    store: Arc<dyn ConfigStore>,
    prefix: &str,
    from: Option<WatchPosition>,
    limits: WatchLimits,
) -> Result<WatchStream, WatchError> {
    let (cursor, backlog) = Cursor::start(store, prefix.to_owned(), from).await?;
    let (tx, rx) = mpsc::channel(limits.buffer.max(1));
    let failed = Arc::new(Mutex::new(None));
    let slot = failed.clone();
    let task = tokio::spawn(async move {
        if let Err(Stop::Failed(e)) = cursor.run(backlog, &tx, limits).await {
            debug!(error = %e, "watch ended");
            *slot.lock() = Some(e);
        }
    });
    Ok(WatchStream { rx, failed, task })
}

/// Why the task stopped.
enum Stop {
    /// The watcher went away.
    Closed,
    Failed(WatchError),
}

impl From<WatchError> for Stop {
    fn from(e: WatchError) -> Self {
        Stop::Failed(e)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e.into())
    }
}

/// Where a watch stands in this node's feed.
struct Cursor {
    store: Arc<dyn ConfigStore>,
    prefix: String,
    origin: Origin,
    /// The feed position read up to.
    pos: u64,
    /// Writes the watcher has been shown.
    seen: VersionVector,
    /// The position of the last event queued.
    last: Option<WatchPosition>,
}

fn merged(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = a.clone();
    for (origin, seq) in &b.entries {
        out.raise(origin, *seq);
    }
    out
}

/// The `seen` vector each of `due`'s events carries, from `seen` (what the
/// watcher was shown before them: a digest this store had at some point of
/// its feed, and events since): each event's write extends it when it is
/// the next of its origin's, so the event's position covers the event. A
/// write that is not the next (one of its origin's writes in between went
/// elsewhere, or has not arrived) leaves it alone: a vector covers a prefix of
/// each origin's writes, and claiming a write never shown here would keep it
/// from a watcher that resumes on another node.
fn seen_through_each<'a>(
    seen: &VersionVector,
    due: impl Iterator<Item = Option<&'a Record>>,
) -> Vec<VersionVector> {
    let mut seen = seen.clone();
    due.map(|record| {
        if let Some(r) = record
            && seen.get(&r.origin).checked_add(1) == Some(r.seq)
        {
            seen.raise(&r.origin, r.seq);
        }
        seen.clone()
    })
    .collect()
}

impl Cursor {
    /// Validates `from` and works out where to follow the feed from, with the
    /// events due first when `from` is another store's.
    async fn start(
        store: Arc<dyn ConfigStore>,
        prefix: String,
        from: Option<WatchPosition>,
    ) -> Result<(Self, Vec<WatchEvent>), WatchError> {
        let origin = store.origin().clone();
        let mut cursor = Cursor { store, prefix, origin, pos: 0, seen: VersionVector::default(), last: None };
        match from {
            None => {
                let head = cursor.store.feed_head().await?;
                (cursor.pos, cursor.seen) = (head.position, head.digest);
                Ok((cursor, Vec::new()))
            }
            Some(p) if p.origin == cursor.origin => {
                match cursor.store.changes_since(&cursor.prefix, p.index, 0).await {
                    Ok(_) => {}
                    Err(StoreError::FeedCompacted { oldest, .. }) => {
                        let oldest =
                            WatchPosition::new(cursor.origin.clone(), oldest, VersionVector::default());
                        return Err(WatchError::Compacted { from: p, oldest });
                    }
                    Err(StoreError::FeedAhead { head, .. }) => {
                        return Err(WatchError::Ahead { from: p, head });
                    }
                    Err(e) => return Err(e.into()),
                }
                (cursor.pos, cursor.seen) = (p.index, p.seen);
                Ok((cursor, Vec::new()))
            }
            Some(p) => {
                let backlog = cursor.elsewhere(p).await?;
                Ok((cursor, backlog))
            }
        }
    }

    /// Resumes a position another store issued: per key under the prefix, the
    /// newest record held here that the watcher's `seen` does not cover, oldest
    /// stamp first. Until the last of them, events carry `from` itself, so a
    /// watcher cut off among them resumes with the same delta.
    async fn elsewhere(&mut self, from: WatchPosition) -> Result<Vec<WatchEvent>, WatchError> {
        let snapshot = self.store.snapshot().await?;
        let missing = Session::from_vector(from.seen.clone()).missing_from(&snapshot.digest);
        if !missing.is_empty() {
            return Err(WatchError::NotCaughtUp { from, missing });
        }
        if let Some((origin, &floor)) = snapshot.gc_floor.entries.iter().find(|(o, f)| from.seen.get(o) < **f)
        {
            let seen = from.seen.get(origin);
            return Err(WatchError::BelowHorizon { origin: origin.clone(), seen, floor, from });
        }
        let mut due: Vec<Record> = snapshot
            .records
            .into_iter()
            .filter(|r| r.key.starts_with(&self.prefix) && !from.seen.covers(&r.token()))
            .collect();
        due.sort_by(|a, b| (a.stamp, &a.origin).cmp(&(b.stamp, &b.origin)));
        self.pos = snapshot.position;
        self.seen = merged(&from.seen, &snapshot.digest);
        let here = self.position();
        let count = due.len();
        // Until the last, events carry `from` itself: this node's feed holds
        // them nowhere after `here`, and `from`'s node follows its own feed.
        let mut events: Vec<WatchEvent> = due
            .iter()
            .enumerate()
            .map(|(i, r)| event_of(r, if i + 1 == count { here.clone() } else { from.clone() }))
            .collect();
        if events.is_empty() {
            events.push(WatchEvent::progress(here));
        }
        debug!(from = %from, events = events.len(), "watch resumed from another node's position");
        Ok(events)
    }

    fn position(&self) -> WatchPosition {
        WatchPosition::new(self.origin.clone(), self.pos, self.seen.clone())
    }

    /// Queues `event`, waiting at most `limits.stall` for room.
    async fn send(
        &mut self,
        tx: &mpsc::Sender<WatchEvent>,
        event: WatchEvent,
        limits: &WatchLimits,
    ) -> Result<(), Stop> {
        let position = event.position.clone();
        match tx.send_timeout(event, limits.stall).await {
            Ok(()) => {
                self.last = Some(position);
                Ok(())
            }
            Err(SendTimeoutError::Closed(_)) => Err(Stop::Closed),
            Err(SendTimeoutError::Timeout(_)) => {
                let last = self.last.clone().unwrap_or_else(|| self.position());
                Err(Stop::Failed(WatchError::FellBehind { last, stalled: limits.stall }))
            }
        }
    }

    /// Follows the feed until the watcher goes away or the watch fails.
    async fn run(
        mut self,
        backlog: Vec<WatchEvent>,
        tx: &mpsc::Sender<WatchEvent>,
        limits: WatchLimits,
    ) -> Result<(), Stop> {
        for event in backlog {
            self.send(tx, event, &limits).await?;
        }
        let mut progressed = Instant::now();
        loop {
            // Subscribe before reading, so no write slips between the read and the wait.
            let mut wake = self.store.subscribe();
            let batch = match self.store.changes_since(&self.prefix, self.pos, PAGE).await {
                Err(StoreError::FeedCompacted { oldest, .. }) => {
                    let oldest = WatchPosition::new(self.origin.clone(), oldest, VersionVector::default());
                    return Err(WatchError::Compacted { from: self.position(), oldest }.into());
                }
                other => other?,
            };
            // Read after the page: when nothing came in between, the digest is the
            // store's at the page's end, so the page's last event can carry it.
            let head = self.store.feed_head().await?;
            let exact = head.position == batch.position;
            let after = merged(&self.seen, &head.digest);
            let due: Vec<Change> = batch.changes.into_iter().filter(|c| self.emits(c)).collect();
            // Each event carries what it extends of what was shown before the
            // page; the last, when nothing came in between, the digest at the
            // page's end (which covers every write the page held, and no more).
            let mut seens = seen_through_each(&self.seen, due.iter().map(|c| c.record.as_ref()));
            if exact && let Some(last) = seens.last_mut() {
                *last = after.clone();
            }
            for (change, seen) in due.into_iter().zip(seens) {
                let position = WatchPosition::new(self.origin.clone(), change.index, seen);
                self.send(tx, event_of_change(change, position), &limits).await?;
            }
            self.pos = batch.position;
            if !exact {
                continue;
            }
            self.seen = after;
            let here = self.position();
            if self.last.as_ref() != Some(&here) && progressed.elapsed() >= limits.progress {
                self.send(tx, WatchEvent::progress(here), &limits).await?;
                progressed = Instant::now();
            }
            tokio::select! {
                () = record_under(&mut wake, &self.prefix) => {}
                () = tokio::time::sleep(limits.progress) => {}
                () = tx.closed() => return Err(Stop::Closed),
            }
        }
    }

    /// Whether a feed entry makes an event: not a record the watcher has seen
    /// (delivered before a resume on another node), nor a collected tombstone
    /// (its delete was delivered when it was written).
    fn emits(&self, change: &Change) -> bool {
        match &change.record {
            Some(r) => !self.seen.covers(&r.token()),
            None => !change.dropped_tombstone,
        }
    }
}

/// Waits until `feed` carries a record under `prefix`, lags or ends, or
/// [`SKIP_AT_MOST`] records elsewhere have gone by (then the store is read
/// again either way). Writes elsewhere do not wake the watch, one by one, to
/// read nothing: under load that was 1.7 % of a node's CPU. Its resume
/// position advances past them every [`SKIP_AT_MOST`] records or at the next
/// progress event, so it stays well within the store's change log
/// (`DEFAULT_CHANGE_LOG_CAPACITY`, 4,096 changes, in memory) however fast
/// others write. A change with no record (a
/// key a restored snapshot dropped) is sent then too, up to one progress
/// interval later.
async fn record_under(feed: &mut tokio::sync::broadcast::Receiver<Record>, prefix: &str) {
    for _ in 0..SKIP_AT_MOST {
        match feed.recv().await {
            Ok(record) if !record.key.starts_with(prefix) => {}
            _ => return,
        }
    }
}

/// Most records elsewhere a watch lets go by before it reads the store again.
const SKIP_AT_MOST: usize = 256;

/// The event of a feed entry: its record's put or delete, or a delete (with no
/// version) for a record the store dropped without a write of its own.
fn event_of_change(change: Change, position: WatchPosition) -> WatchEvent {
    match change.record {
        Some(r) => event_of(&r, position),
        None => WatchEvent {
            kind: EventKind::Delete,
            key: change.key,
            value: Vec::new(),
            version: None,
            stamp: Timestamp::ZERO,
            position,
        },
    }
}

fn event_of(r: &Record, position: WatchPosition) -> WatchEvent {
    let (kind, value) = match &r.value {
        Some(v) => (EventKind::Put, v.to_vec()),
        None => (EventKind::Delete, Vec::new()),
    };
    WatchEvent { kind, key: r.key.clone(), value, version: Some(r.token()), stamp: r.stamp, position }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use spectrum_core::{Hlc, ManualClock};
    use spectrum_replication::{MemoryStore, WriteBatch};

    fn store(node: &str, at_ms: u64) -> Arc<MemoryStore> {
        let hlc = Arc::new(Hlc::new(Arc::new(ManualClock::new(at_ms))));
        Arc::new(MemoryStore::new(node.parse().unwrap(), hlc))
    }

    async fn sync(from: &MemoryStore, to: &MemoryStore) {
        let d = from.delta(&to.digest().await.unwrap(), usize::MAX).await.unwrap();
        to.merge(d.records, &d.covers).await.unwrap();
    }

    /// The next `n` change events (progress skipped), within 5 s.
    async fn changes(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            if out.len() == n {
                break;
            }
            let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("an event within 5 s")
                .expect("the stream goes on")
                .expect("no error");
            if event.kind != EventKind::Progress {
                out.push(event);
            }
        }
        out
    }

    fn shown(events: &[WatchEvent]) -> Vec<(EventKind, &str, &[u8])> {
        events.iter().map(|e| (e.kind, e.key.as_str(), e.value.as_slice())).collect()
    }

    #[tokio::test]
    async fn a_watch_keeps_up_with_writes_elsewhere_faster_than_its_store_keeps_changes() {
        let hlc = Arc::new(Hlc::new(Arc::new(ManualClock::new(1_000))));
        let s = Arc::new(MemoryStore::new("a".parse().unwrap(), hlc).with_change_log_capacity(600));
        let dyn_store: Arc<dyn ConfigStore> = s.clone();
        let mut w = watch(dyn_store, "k/", None, WatchLimits::default()).await.unwrap();
        // Far more than the change log holds, in less than a progress interval.
        for i in 0..3_000 {
            s.apply(WriteBatch::new().put(format!("other/{i}"), "x")).await.unwrap();
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        s.apply(WriteBatch::new().put("k/1", "one")).await.unwrap();
        let got = changes(&mut w, 1).await;
        assert_eq!(shown(&got), vec![(EventKind::Put, "k/1", &b"one"[..])], "not compacted away");
    }

    #[tokio::test]
    async fn a_watch_sends_puts_and_deletes_under_its_prefix_in_apply_order_and_resumes_exactly() {
        let s = store("a", 1_000);
        let dyn_store: Arc<dyn ConfigStore> = s.clone();
        let mut w = watch(dyn_store.clone(), "k/", None, WatchLimits::default()).await.unwrap();
        s.apply(WriteBatch::new().put("k/1", "one").put("other", "x")).await.unwrap();
        s.apply(WriteBatch::new().delete("k/1").put("k/2", "two")).await.unwrap();
        let got = changes(&mut w, 3).await;
        let want: Vec<(EventKind, &str, &[u8])> = vec![
            (EventKind::Put, "k/1", b"one"),
            (EventKind::Delete, "k/1", b""),
            (EventKind::Put, "k/2", b"two"),
        ];
        assert_eq!(shown(&got), want);
        assert!(got.iter().all(|e| e.version.is_some()));
        drop(w);

        // Resume from the first event: the rest, once.
        s.apply(WriteBatch::new().put("k/3", "three")).await.unwrap();
        let mut w =
            watch(dyn_store, "k/", Some(got[0].position.clone()), WatchLimits::default()).await.unwrap();
        let rest = changes(&mut w, 3).await;
        let versions = |events: &[WatchEvent]| events.iter().map(|e| e.version.clone()).collect::<Vec<_>>();
        assert_eq!(shown(&rest[..2]), shown(&got[1..]), "the changes after the position, once");
        assert_eq!(versions(&rest[..2]), versions(&got[1..]));
        assert_eq!((rest[2].key.as_str(), rest[2].value.as_slice()), ("k/3", &b"three"[..]));
    }

    #[tokio::test]
    async fn a_compacted_or_unissued_position_is_refused_naming_the_oldest() {
        let hlc = Arc::new(Hlc::new(Arc::new(ManualClock::new(1_000))));
        let s = MemoryStore::new("a".parse().unwrap(), hlc).with_change_log_capacity(2);
        let s: Arc<dyn ConfigStore> = Arc::new(s);
        let origin = s.origin().clone();
        for i in 0..5 {
            s.apply(WriteBatch::new().put(format!("k/{i}"), "v")).await.unwrap();
        }
        let old = WatchPosition::new(origin.clone(), 1, VersionVector::default());
        let e = watch(s.clone(), "", Some(old), WatchLimits::default()).await.unwrap_err();
        match &e {
            WatchError::Compacted { oldest, .. } => assert_eq!(oldest.index, 3),
            other => panic!("{other}"),
        }
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::OutOfRange);
        let ahead = WatchPosition::new(origin, 9, VersionVector::default());
        assert!(matches!(
            watch(s, "", Some(ahead), WatchLimits::default()).await,
            Err(WatchError::Ahead { .. })
        ));
    }

    #[tokio::test]
    async fn on_another_store_a_watch_resumes_from_what_its_vector_lacks_coalesced_per_key() {
        let (a, b) = (store("a", 1_000), store("b", 1_000));
        let (a_dyn, b_dyn): (Arc<dyn ConfigStore>, Arc<dyn ConfigStore>) = (a.clone(), b.clone());
        let mut w = watch(a_dyn, "k/", None, WatchLimits::default()).await.unwrap();
        a.apply(WriteBatch::new().put("k/seen", "1")).await.unwrap();
        let seen = changes(&mut w, 1).await;
        drop(w);
        // While the watcher is away: two values of one key, a delete, and a key
        // outside the prefix; all of it reaches b.
        a.apply(WriteBatch::new().put("k/x", "old").put("other", "o")).await.unwrap();
        a.apply(WriteBatch::new().put("k/x", "new").delete("k/seen")).await.unwrap();
        sync(&a, &b).await;

        let mut w =
            watch(b_dyn.clone(), "k/", Some(seen[0].position.clone()), WatchLimits::default()).await.unwrap();
        let got = changes(&mut w, 2).await;
        let want: Vec<(EventKind, &str, &[u8])> =
            vec![(EventKind::Put, "k/x", b"new"), (EventKind::Delete, "k/seen", b"")];
        assert_eq!(shown(&got), want, "the latest of each key, oldest stamp first");
        assert_eq!(&got[1].position.origin, b.origin(), "the last one is a position of b's feed");
        b.apply(WriteBatch::new().put("k/live", "l")).await.unwrap();
        assert_eq!(changes(&mut w, 1).await[0].key, "k/live", "then b's own feed, live");
        drop(w);

        // A store that lacks what the watcher saw refuses rather than go back in time.
        let c: Arc<dyn ConfigStore> = store("c", 1_000);
        let e = watch(c, "k/", Some(got[1].position.clone()), WatchLimits::default()).await.unwrap_err();
        assert!(matches!(e, WatchError::NotCaughtUp { .. }), "{e}");
        // And one that collected deletes the watcher has not seen refuses as compacted.
        let horizon = b.digest().await.unwrap();
        assert_eq!(b.collect_tombstones(&horizon).await.unwrap(), 1);
        let e = watch(b_dyn, "k/", Some(seen[0].position.clone()), WatchLimits::default()).await.unwrap_err();
        assert!(matches!(e, WatchError::BelowHorizon { .. }), "{e}");
        assert!(e.to_string().contains("list the prefix again"), "{e}");
    }

    #[tokio::test]
    async fn a_collected_tombstone_sends_nothing_more() {
        let s = store("a", 1_000);
        let dyn_store: Arc<dyn ConfigStore> = s.clone();
        let mut w = watch(dyn_store, "", None, WatchLimits::default()).await.unwrap();
        s.apply(WriteBatch::new().put("k", "v")).await.unwrap();
        s.apply(WriteBatch::new().delete("k")).await.unwrap();
        let horizon = s.digest().await.unwrap();
        assert_eq!(s.collect_tombstones(&horizon).await.unwrap(), 1);
        s.apply(WriteBatch::new().put("z", "after")).await.unwrap();
        let got = changes(&mut w, 3).await;
        let keys: Vec<(EventKind, &str)> = got.iter().map(|e| (e.kind, e.key.as_str())).collect();
        assert_eq!(keys, [(EventKind::Put, "k"), (EventKind::Delete, "k"), (EventKind::Put, "z")]);
    }

    #[tokio::test]
    async fn a_watcher_that_takes_nothing_holds_a_bounded_queue_then_is_told_to_resume() {
        let s = store("a", 1_000);
        let dyn_store: Arc<dyn ConfigStore> = s.clone();
        let limits =
            WatchLimits { buffer: 2, stall: Duration::from_millis(200), progress: Duration::from_secs(60) };
        let mut w = watch(dyn_store, "", None, limits).await.unwrap();
        for i in 0..10 {
            s.apply(WriteBatch::new().put(format!("k/{i}"), "v")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut got = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("no hang")
        {
            got.push(item);
        }
        assert!(got.len() <= 3, "at most the queue and the error: {got:?}");
        let Some(Err(e)) = got.pop() else { panic!("the watch ends with an error: {got:?}") };
        let WatchError::FellBehind { last, .. } = &e else { panic!("{e}") };
        assert_eq!(
            last,
            &got.last().unwrap().as_ref().unwrap().position,
            "resume from the last event queued"
        );
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::ResourceExhausted);
    }

    /// Each event's position covers the event and what came before it, and
    /// nothing after it: resumed from any event on another node, a watch sends
    /// exactly what came after (coalesced per key), with no repeat.
    #[tokio::test]
    async fn every_event_s_position_covers_it_so_a_resume_elsewhere_neither_repeats_nor_skips() {
        let (a, b) = (store("a", 1_000), store("b", 1_000));
        let a_dyn: Arc<dyn ConfigStore> = a.clone();
        let mut w = watch(a_dyn, "", None, WatchLimits::default()).await.unwrap();
        // All read in one page: a write with a companion record of the same
        // origin (as a management write's audit record), then more.
        a.apply(WriteBatch::new().put("k/1", "one").put("audit/1", "x")).await.unwrap();
        a.apply(WriteBatch::new().put("k/2", "two")).await.unwrap();
        a.apply(WriteBatch::new().put("k/1", "uno")).await.unwrap();
        let got = changes(&mut w, 4).await;
        assert_eq!(keys(&got), ["k/1", "audit/1", "k/2", "k/1"]);
        for e in &got {
            assert!(e.position.seen.covers(e.version.as_ref().unwrap()), "{} at {}", e.key, e.position);
        }
        sync(&a, &b).await;
        for (i, e) in got.iter().enumerate() {
            let b_dyn: Arc<dyn ConfigStore> = b.clone();
            let mut resumed =
                watch(b_dyn, "", Some(e.position.clone()), WatchLimits::default()).await.unwrap();
            if i + 1 == got.len() {
                let first = tokio::time::timeout(Duration::from_secs(5), resumed.next()).await.unwrap();
                assert_eq!(
                    first.unwrap().unwrap().kind,
                    EventKind::Progress,
                    "nothing is due after the last"
                );
            } else {
                let again = changes(&mut resumed, got.len() - i - 1).await;
                assert_eq!(keys(&again), keys(&got[i + 1..]), "resumed on b after event {i}");
            }
        }
    }

    /// A position never covers a write the watcher was not shown: here `a`
    /// holds only the second of two writes of `y` to one key (the first was
    /// superseded before it arrived), and an event before it in the page must
    /// not claim the first, which another node may still serve.
    #[tokio::test]
    async fn a_position_does_not_claim_a_write_this_node_never_showed() {
        let (x, y, a, c) = (store("x", 1_000), store("y", 1_000), store("a", 1_000), store("c", 1_000));
        x.apply(WriteBatch::new().put("k/a", "a")).await.unwrap();
        y.apply(WriteBatch::new().put("k/b", "6")).await.unwrap();
        sync(&x, &c).await;
        sync(&y, &c).await;
        y.apply(WriteBatch::new().put("k/b", "7")).await.unwrap();
        let a_dyn: Arc<dyn ConfigStore> = a.clone();
        let mut w = watch(a_dyn, "k/", None, WatchLimits::default()).await.unwrap();
        sync(&x, &a).await;
        sync(&y, &a).await;
        let got = changes(&mut w, 2).await;
        assert_eq!(keys(&got), ["k/a", "k/b"]);
        assert_eq!(got[1].value, b"7");
        // c holds k/a and y's first write only (the second never reached it).
        let c_dyn: Arc<dyn ConfigStore> = c.clone();
        let mut resumed =
            watch(c_dyn, "k/", Some(got[0].position.clone()), WatchLimits::default()).await.unwrap();
        let again = changes(&mut resumed, 1).await;
        assert_eq!(
            (again[0].key.as_str(), again[0].value.as_slice()),
            ("k/b", &b"6"[..]),
            "c's value of k/b"
        );
    }

    fn keys(events: &[WatchEvent]) -> Vec<String> {
        events.iter().map(|e| e.key.clone()).collect()
    }
}
