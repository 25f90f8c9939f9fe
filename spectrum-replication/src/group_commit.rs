//! Group commit: writes that arrive while another is being committed wait, and
//! the next writer to run commits all of them together, in one transaction and
//! one fsync.
//!
//! This is LevelDB's write path (`DBImpl::Write` and `BuildBatchGroup`): every
//! writer queues its operation, then takes the store's writer lock; the first
//! to get it finds its own operation and those queued behind it, commits them
//! as one group, and answers each; the writers of that group find their
//! answers when they get the lock in turn and return at once. A disk that
//! takes a millisecond per fsync then costs concurrent writers one fsync per
//! group instead of one each, while a lone writer waits for nobody.
//!
//! What a group means is the caller's: a durable store plans the group's
//! operations one after the other, each seeing those before it, and commits
//! them in one transaction, all or nothing (see [`RedbStore`](crate::RedbStore)).
//! Each operation's writer is told its own result only once the group is
//! committed, or the group's error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Where a queued operation's result is left for its writer.
type Slot<Out, E> = Arc<Mutex<Option<Result<Out, E>>>>;

/// An operation waiting to be committed.
struct Queued<Op, Out, E> {
    op: Op,
    /// Its size (bytes written, roughly), held against [`GroupCommit::max_weight`].
    weight: usize,
    slot: Slot<Out, E>,
}

/// Operations of type `Op` waiting to be committed in groups; each answered
/// with a `Result<Out, E>`.
pub(crate) struct GroupCommit<Op, Out, E> {
    queue: Mutex<VecDeque<Queued<Op, Out, E>>>,
    /// Most operations in one group.
    max_ops: usize,
    /// Most weight in one group (a group always takes its first operation).
    max_weight: usize,
    /// Groups committed so far.
    groups: AtomicU64,
}

impl<Op, Out, E> GroupCommit<Op, Out, E> {
    /// Groups of at most `max_ops` operations (at least 1) and `max_weight`
    /// (past which a group takes no second operation).
    pub(crate) fn new(max_ops: usize, max_weight: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            max_ops: max_ops.max(1),
            max_weight,
            groups: AtomicU64::new(0),
        }
    }

    /// How many groups were committed (or failed) so far.
    #[cfg(test)]
    pub(crate) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// How many operations wait to be committed.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().len()
    }

    /// Commits `op` (of size `weight`) in a group, blocking until it is done,
    /// and returns its result.
    ///
    /// The group is committed by whichever writer takes `writer` first: it
    /// calls `commit` with the operations queued by then (its own among them,
    /// in the order queued, within the limits), `writer` held; `commit` returns
    /// one result per operation, in the same order. Should `commit` panic, or
    /// return too few results, the writers left without one get `lost()`.
    pub(crate) fn submit(
        &self,
        op: Op,
        weight: usize,
        writer: &Mutex<()>,
        mut commit: impl FnMut(Vec<Op>) -> Vec<Result<Out, E>>,
        lost: impl Fn() -> E,
    ) -> Result<Out, E> {
        let slot: Slot<Out, E> = Arc::new(Mutex::new(None));
        self.queue.lock().push_back(Queued { op, weight, slot: slot.clone() });
        loop {
            let _writer = writer.lock();
            // Answered by the writer that held the lock before: done. Else this
            // operation is still queued (an operation leaves the queue only in
            // a group, and its slot is filled before the lock is released).
            if let Some(done) = slot.lock().take() {
                return done;
            }
            let group = self.take_group();
            self.groups.fetch_add(1, Ordering::Relaxed);
            let mut answers = Answers { slots: Vec::with_capacity(group.len()), lost: &lost };
            let ops: Vec<Op> = group
                .into_iter()
                .map(|q| {
                    answers.slots.push(q.slot);
                    q.op
                })
                .collect();
            answers.fill(commit(ops));
        }
    }

    /// Takes the next group off the queue: the first operation, then as many
    /// as the limits allow.
    fn take_group(&self) -> Vec<Queued<Op, Out, E>> {
        let mut queue = self.queue.lock();
        let mut weight = 0usize;
        let mut count = 0;
        for q in queue.iter() {
            if count > 0 && (count == self.max_ops || weight.saturating_add(q.weight) > self.max_weight) {
                break;
            }
            weight = weight.saturating_add(q.weight);
            count += 1;
        }
        queue.drain(..count).collect()
    }
}

/// The slots of a group being committed. Dropped before each is filled (a
/// panicking `commit`), it fills the rest with `lost()`, so no writer waits
/// for an answer that never comes.
struct Answers<'a, Out, E> {
    slots: Vec<Slot<Out, E>>,
    lost: &'a dyn Fn() -> E,
}

impl<Out, E> Answers<'_, Out, E> {
    /// Gives each writer its result, in order.
    fn fill(&mut self, results: Vec<Result<Out, E>>) {
        for (slot, result) in self.slots.drain(..).zip(results) {
            *slot.lock() = Some(result);
        }
    }
}

impl<Out, E> Drop for Answers<'_, Out, E> {
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            *slot.lock() = Some(Err((self.lost)()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Writers queued behind a writer that holds the lock are committed in one
    /// group, each told its own result.
    #[test]
    fn writers_queued_behind_a_commit_share_the_next_group() {
        let groups: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let commit_group = {
            let groups = groups.clone();
            move |ops: Vec<u32>| {
                groups.lock().push(ops.clone());
                ops.into_iter().map(|op| Ok::<u32, String>(op * 10)).collect()
            }
        };
        let group = Arc::new(GroupCommit::<u32, u32, String>::new(64, usize::MAX));
        let writer = Arc::new(Mutex::new(()));
        let held = writer.lock();
        let threads: Vec<_> = (0..8u32)
            .map(|i| {
                let (group, writer, commit_group) = (group.clone(), writer.clone(), commit_group.clone());
                std::thread::spawn(move || group.submit(i, 1, &writer, commit_group, || "lost".into()))
            })
            .collect();
        // Every writer queued (bounded wait), then the lock is let go.
        for _ in 0..1000 {
            if group.queue.lock().len() == 8 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(group.queue.lock().len(), 8, "every writer queued behind the held lock");
        drop(held);
        let results: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        assert_eq!(results, (0..8).map(|i| i * 10).collect::<Vec<_>>(), "each writer got its own result");
        let groups = groups.lock();
        assert_eq!(groups.len(), 1, "one group: {groups:?}");
        assert_eq!(group.groups(), 1);
        let mut ops = groups[0].clone();
        ops.sort_unstable();
        assert_eq!(ops, (0..8).collect::<Vec<_>>());
    }

    /// The limits cut groups: by count, and by weight (a heavy operation still
    /// goes, alone).
    #[test]
    fn groups_stay_within_their_limits() {
        let group = GroupCommit::<usize, (), ()>::new(3, 100);
        for weight in [10, 10, 10, 10, 200, 50, 60] {
            group.queue.lock().push_back(Queued { op: weight, weight, slot: Arc::default() });
        }
        let sizes: Vec<Vec<usize>> = std::iter::from_fn(|| {
            let g = group.take_group();
            (!g.is_empty()).then(|| g.into_iter().map(|q| q.op).collect())
        })
        .collect();
        assert_eq!(sizes, vec![vec![10, 10, 10], vec![10], vec![200], vec![50], vec![60]]);
    }

    /// A commit that panics answers every writer of its group with `lost()`;
    /// later writers are committed as usual.
    #[test]
    fn a_panicking_commit_leaves_no_writer_waiting() {
        let group = Arc::new(GroupCommit::<u32, u32, String>::new(64, usize::MAX));
        let writer = Arc::new(Mutex::new(()));
        let calls = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4u32)
            .map(|i| {
                let (group, writer, calls, start) =
                    (group.clone(), writer.clone(), calls.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        group.submit(
                            i,
                            1,
                            &writer,
                            |ops: Vec<u32>| {
                                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                                    panic!("the first group's commit fails");
                                }
                                ops.into_iter().map(Ok).collect()
                            },
                            || "lost".to_owned(),
                        )
                    }))
                })
            })
            .collect();
        let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let panicked = outcomes.iter().filter(|o| o.is_err()).count();
        assert_eq!(panicked, 1, "only the writer whose commit panicked unwinds");
        for outcome in outcomes.into_iter().flatten() {
            // Lost with the first group, or committed in a later one: never left waiting.
            assert!(matches!(&outcome, Err(lost) if lost == "lost") || outcome.is_ok(), "{outcome:?}");
        }
        assert!(group.queue.lock().is_empty());
    }
}
