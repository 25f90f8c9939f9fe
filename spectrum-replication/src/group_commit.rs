//! Group commit: writes that arrive while another is being committed wait, and
//! are then committed together, in one transaction and one fsync.
//!
//! This is LevelDB's write path (`DBImpl::Write` and `BuildBatchGroup`), with
//! writers that wait without a thread: every writer queues its operation and
//! awaits its answer. The writer that finds nobody leading becomes the
//! [`Leader`] and runs it on a thread that may block: it takes the store's
//! writer lock, then every operation queued by then (within limits) as one
//! group, commits them, sends each writer its result, and goes on with the
//! next group, made of everything that queued meanwhile, until the queue is
//! empty. So a writer costs a channel, not a blocked thread and its wake-ups,
//! and a run of groups costs one thread. A disk that takes a millisecond per
//! fsync then costs concurrent writers one fsync per group instead of one
//! each, while a lone writer waits for nobody.
//!
//! What a group means is the caller's: a durable store plans the group's
//! operations one after the other, each seeing those before it, and commits
//! them in one transaction, all or nothing (see [`RedbStore`](crate::RedbStore)).
//! Each operation's writer is told its own result only once the group is
//! committed, or the group's error.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::warn;

/// An operation waiting to be committed.
struct Queued<Op, Out, E> {
    op: Op,
    /// Its size (bytes written, roughly), held against [`GroupCommit::max_weight`].
    weight: usize,
    /// Where its writer waits for the result. Dropped unanswered (its group's
    /// commit panicked or answered too few, the lead was dropped before it
    /// ran, the store was gone), the writer hears that its write was lost.
    answer: oneshot::Sender<Result<Out, E>>,
}

/// The queue, and whether a [`Leader`] is draining it.
struct Queue<Op, Out, E> {
    waiting: VecDeque<Queued<Op, Out, E>>,
    leading: bool,
}

/// Operations of type `Op` waiting to be committed in groups; each answered
/// with a `Result<Out, E>`.
pub(crate) struct GroupCommit<Op, Out, E> {
    queue: Mutex<Queue<Op, Out, E>>,
    /// Most operations in one group.
    max_ops: usize,
    /// Most weight in one group (a group always takes its first operation).
    max_weight: usize,
    /// Groups committed (or failed) so far.
    groups: AtomicU64,
}

/// A queued operation: where its result comes, and, for the writer that found
/// nobody leading, the lead.
pub(crate) struct Enqueued<Op, Out, E> {
    /// The operation's result; an error when it was lost (see [`Queued::answer`]).
    pub(crate) answer: oneshot::Receiver<Result<Out, E>>,
    /// Present when no leader was running: this writer must have
    /// [`Leader::lead`] run, on a thread that may block. Dropped instead, it
    /// loses everything queued.
    pub(crate) leader: Option<Leader<Op, Out, E>>,
}

impl<Op, Out, E> GroupCommit<Op, Out, E> {
    /// Groups of at most `max_ops` operations (at least 1) and `max_weight`
    /// (past which a group takes no second operation).
    pub(crate) fn new(max_ops: usize, max_weight: usize) -> Self {
        Self {
            queue: Mutex::new(Queue { waiting: VecDeque::new(), leading: false }),
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

    /// How many operations wait for a group (not those being committed).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().waiting.len()
    }

    /// Queues `op` (of size `weight`). Its writer awaits [`Enqueued::answer`];
    /// the writer that finds nobody leading also gets the [`Leader`], to run.
    /// Nothing here blocks, so a writer waits for its group without holding a
    /// thread.
    pub(crate) fn enqueue(self: &Arc<Self>, op: Op, weight: usize) -> Enqueued<Op, Out, E> {
        let (answer, answered) = oneshot::channel();
        let mut queue = self.queue.lock();
        queue.waiting.push_back(Queued { op, weight, answer });
        let lead = !queue.leading;
        queue.leading = true;
        drop(queue);
        Enqueued { answer: answered, leader: lead.then(|| Leader { group: self.clone(), done: false }) }
    }

    /// Takes the next group out of the front of the queue: the first
    /// operation, then as many as the limits allow.
    fn take_group(&self, queue: &mut Queue<Op, Out, E>) -> Vec<Queued<Op, Out, E>> {
        let mut weight = 0usize;
        let mut group = Vec::new();
        while let Some(next) = queue.waiting.front() {
            if !group.is_empty()
                && (group.len() == self.max_ops || weight.saturating_add(next.weight) > self.max_weight)
            {
                break;
            }
            weight = weight.saturating_add(next.weight);
            group.extend(queue.waiting.pop_front());
        }
        group
    }
}

/// The right and duty to commit what is queued: one at a time per
/// [`GroupCommit`]. Dropped without [`lead`](Self::lead) running to its end (a
/// blocking pool that shut down before running it, a store already gone), it
/// gives up the lead and drops what is queued, whose writers hear their writes
/// were lost (none of them was committed), so no writer waits for an answer
/// that never comes.
pub(crate) struct Leader<Op, Out, E> {
    group: Arc<GroupCommit<Op, Out, E>>,
    done: bool,
}

/// What commits a [`GroupCommit`]'s groups: a store, held by its users and
/// only borrowed by the [`Leader`].
pub(crate) trait Committer<Op, Out, E> {
    /// Held across each group's commit (and by whatever else writes).
    fn writer(&self) -> &Mutex<()>;

    /// Commits `ops`, `writer` held; one result per operation, in the same order.
    fn commit(&self, ops: Vec<Op>) -> Vec<Result<Out, E>>;
}

impl<Op, Out, E> Leader<Op, Out, E> {
    /// Commits groups until the queue is empty, blocking: for each, takes the
    /// committer's writer lock, then the operations queued by then (in the
    /// order queued, within the limits), commits them and sends each writer its
    /// own result. Operations left without a result (too few results) are
    /// answered as lost. A commit that panics loses its own group only: the
    /// panic is caught (the committer must stay usable after one: the store
    /// closes its file and reloads it), logged, and the next group goes on.
    ///
    /// The committer is held only while a group is committed, and let go
    /// before its writers are answered: a writer that closes the store once
    /// answered closes it then, not once the leader is done. A committer
    /// already gone (its users dropped it, giving up their writes) loses what
    /// is queued.
    pub(crate) fn lead<C: Committer<Op, Out, E>>(mut self, committer: &std::sync::Weak<C>) {
        let group = &self.group;
        loop {
            {
                let mut queue = group.queue.lock();
                if queue.waiting.is_empty() {
                    queue.leading = false;
                    self.done = true;
                    return;
                }
            }
            let Some(committer) = committer.upgrade() else { return };
            let writer = committer.writer().lock();
            // Operations that queued while the lock was awaited join the group.
            let taken = group.take_group(&mut group.queue.lock());
            group.groups.fetch_add(1, Ordering::Relaxed);
            let (ops, answers): (Vec<Op>, Vec<_>) = taken.into_iter().map(|q| (q.op, q.answer)).unzip();
            // Unwind-safe as far as this loop goes: nothing of it is shared
            // with the commit but the committer, whose contract covers a panic.
            let results = std::panic::catch_unwind(AssertUnwindSafe(|| committer.commit(ops)));
            drop(writer);
            drop(committer);
            match results {
                Ok(results) => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        // A writer that stopped waiting (its caller gave up) needs no answer.
                        let _ = answer.send(result);
                    }
                }
                Err(_) => {
                    warn!(
                        writes = answers.len(),
                        "a group's commit panicked; its writes are answered as lost"
                    );
                    drop(answers);
                }
            }
        }
    }
}

impl<Op, Out, E> Drop for Leader<Op, Out, E> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let lost = {
            let mut queue = self.group.queue.lock();
            queue.leading = false;
            std::mem::take(&mut queue.waiting)
        };
        // Outside the queue's lock: each dropped answer wakes its writer.
        drop(lost);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    type Group = Arc<GroupCommit<u32, u32, String>>;

    /// Waits (bounded) until `group` holds `count` operations.
    fn until_queued<Op, Out, E>(group: &GroupCommit<Op, Out, E>, count: usize) {
        for _ in 0..1000 {
            if group.queued() == count {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{} operations queued, not {count}", group.queued());
    }

    /// A committer of the tests: its writer lock, and a commit function.
    struct Test<F> {
        writer: Arc<Mutex<()>>,
        commit: F,
    }

    impl<F: Fn(Vec<u32>) -> Vec<Result<u32, String>>> Committer<u32, u32, String> for Test<F> {
        fn writer(&self) -> &Mutex<()> {
            &self.writer
        }

        fn commit(&self, ops: Vec<u32>) -> Vec<Result<u32, String>> {
            (self.commit)(ops)
        }
    }

    /// A writer on a thread of its own: queues `op`, leads when told to, and
    /// waits for its answer; `"lost"` when the answer never came.
    fn submit(
        group: &Group,
        op: u32,
        writer: &Arc<Mutex<()>>,
        commit: impl Fn(Vec<u32>) -> Vec<Result<u32, String>>,
    ) -> Result<u32, String> {
        let committer = Arc::new(Test { writer: writer.clone(), commit });
        let Enqueued { answer, leader } = group.enqueue(op, 1);
        if let Some(leader) = leader {
            leader.lead(&Arc::downgrade(&committer));
        }
        answer.blocking_recv().unwrap_or_else(|_| Err("lost".into()))
    }

    /// Starts `count` writers on threads of their own, writing 0, 1, … behind
    /// `writer` (held until all are queued), each committing with `commit`,
    /// and returns their outcomes in that order. Fails when a writer is left
    /// waiting (bounded), or unwinds (it never answers).
    fn writers_behind_the_lock<F>(
        group: &Group,
        writer: &Arc<Mutex<()>>,
        count: u32,
        commit: F,
    ) -> Vec<Result<u32, String>>
    where
        F: Fn(Vec<u32>) -> Vec<Result<u32, String>> + Clone + Send + 'static,
    {
        let held = writer.lock();
        let (tx, outcomes) = mpsc::channel();
        for i in 0..count {
            let (group, writer, commit, tx) = (group.clone(), writer.clone(), commit.clone(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send((i, submit(&group, i, &writer, commit)));
            });
        }
        until_queued(group, count as usize);
        drop(held);
        let mut outcomes: Vec<_> = (0..count)
            .map(|_| outcomes.recv_timeout(Duration::from_secs(10)).expect("a writer was left waiting"))
            .collect();
        outcomes.sort_unstable_by_key(|(i, _)| *i);
        outcomes.into_iter().map(|(_, outcome)| outcome).collect()
    }

    /// Writers queued behind a held writer lock are committed in one group,
    /// each told its own result.
    #[test]
    fn writers_queued_behind_a_commit_share_the_next_group() {
        let groups: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let group: Group = Arc::new(GroupCommit::new(64, usize::MAX));
        let writer = Arc::new(Mutex::new(()));
        let recorded = groups.clone();
        let results = writers_behind_the_lock(&group, &writer, 8, move |ops: Vec<u32>| {
            recorded.lock().push(ops.clone());
            ops.into_iter().map(|op| Ok(op * 10)).collect()
        });
        assert_eq!(results, (0..8).map(|i| Ok(i * 10)).collect::<Vec<_>>(), "each writer got its own result");
        let groups = groups.lock();
        assert_eq!(groups.len(), 1, "one group: {groups:?}");
        assert_eq!(group.groups(), 1);
        let mut ops = groups[0].clone();
        ops.sort_unstable();
        assert_eq!(ops, (0..8).collect::<Vec<_>>());
        assert_eq!(group.queued(), 0);
    }

    /// The limits cut groups: by count, and by weight (a heavy operation still
    /// goes, alone).
    #[test]
    fn groups_stay_within_their_limits() {
        let group = Arc::new(GroupCommit::<usize, (), ()>::new(3, 100));
        let mut answers = Vec::new();
        for weight in [10, 10, 10, 10, 200, 50, 60] {
            answers.push(group.enqueue(weight, weight));
        }
        let mut groups = Vec::new();
        loop {
            let taken = group.take_group(&mut group.queue.lock());
            if taken.is_empty() {
                break;
            }
            groups.push(taken.into_iter().map(|q| q.op).collect::<Vec<_>>());
        }
        assert_eq!(groups, vec![vec![10, 10, 10], vec![10], vec![200], vec![50], vec![60]]);
        assert_eq!(group.queued(), 0);
    }

    /// A commit that panics answers every writer of its group as lost (the
    /// panic stays in the leader), as does one that returns too few results;
    /// nobody is left waiting, and the next writer leads.
    #[test]
    fn a_commit_that_panics_or_answers_too_few_leaves_no_writer_waiting() {
        for panics in [true, false] {
            let group: Group = Arc::new(GroupCommit::new(64, usize::MAX));
            let writer = Arc::new(Mutex::new(()));
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = calls.clone();
            let outcomes = writers_behind_the_lock(&group, &writer, 4, move |ops: Vec<u32>| {
                counted.fetch_add(1, Ordering::SeqCst);
                if panics {
                    panic!("the group's commit fails");
                }
                ops.into_iter().take(1).map(Ok).collect()
            });
            assert_eq!(calls.load(Ordering::SeqCst), 1, "one group");
            let lost = outcomes.iter().filter(|o| matches!(o, Err(lost) if lost == "lost")).count();
            let answered = outcomes.iter().filter(|o| o.is_ok()).count();
            match panics {
                true => assert_eq!((lost, answered), (4, 0), "all lost, none unwinds"),
                false => assert_eq!((lost, answered), (3, 1), "one answered, the rest lost"),
            }
            assert_eq!(group.queued(), 0);
            let next = submit(&group, 7, &writer, |ops| ops.into_iter().map(Ok).collect());
            assert_eq!(next, Ok(7), "the next writer leads");
        }
    }

    /// A group whose commit panics loses its own writes only: those queued
    /// behind it are committed by the next groups.
    #[test]
    fn a_panicking_group_loses_only_its_own_writes() {
        let group: Group = Arc::new(GroupCommit::new(2, usize::MAX));
        let writer = Arc::new(Mutex::new(()));
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let outcomes = writers_behind_the_lock(&group, &writer, 4, move |ops: Vec<u32>| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("the first group's commit fails");
            }
            ops.into_iter().map(Ok).collect()
        });
        let lost = outcomes.iter().filter(|o| matches!(o, Err(lost) if lost == "lost")).count();
        assert_eq!((lost, outcomes.len() - lost), (2, 2), "{outcomes:?}");
        assert_eq!((calls.load(Ordering::SeqCst), group.groups()), (2, 2), "two groups of two");
    }

    /// A lead dropped before it ran (a blocking pool that shut down) answers
    /// every queued write as lost and is given to the next writer.
    #[test]
    fn a_lead_that_never_runs_loses_what_is_queued_and_passes_on() {
        let group: Group = Arc::new(GroupCommit::new(64, usize::MAX));
        let first = group.enqueue(1, 1);
        let second = group.enqueue(2, 1);
        assert!(first.leader.is_some() && second.leader.is_none(), "one lead at a time");
        drop(first.leader);
        assert!(first.answer.blocking_recv().is_err(), "lost");
        assert!(second.answer.blocking_recv().is_err(), "lost");
        assert_eq!(group.queued(), 0);
        let writer = Arc::new(Mutex::new(()));
        assert_eq!(submit(&group, 3, &writer, |ops| ops.into_iter().map(Ok).collect()), Ok(3));
    }

    /// One leader commits group after group, each made of what queued
    /// meanwhile, until the queue is empty: groups cut by the limit follow one
    /// another with no writer left waiting. Then, under contention (16
    /// writers, 100 writes each, groups of at most 4), every writer is answered
    /// with its own result.
    #[test]
    fn a_leader_commits_group_after_group_until_the_queue_is_empty() {
        let group: Group = Arc::new(GroupCommit::new(2, usize::MAX));
        let writer = Arc::new(Mutex::new(()));
        let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
        let recorded = sizes.clone();
        let answered = writers_behind_the_lock(&group, &writer, 5, move |ops: Vec<u32>| {
            recorded.lock().push(ops.len());
            ops.into_iter().map(|op| Ok(op + 100)).collect()
        });
        assert_eq!(answered, (0..5).map(|i| Ok(i + 100)).collect::<Vec<_>>());
        assert_eq!(*sizes.lock(), vec![2, 2, 1], "three groups in turn");

        let group: Group = Arc::new(GroupCommit::new(4, usize::MAX));
        let (tx, done) = mpsc::channel();
        for t in 0..16u32 {
            let (group, writer, tx) = (group.clone(), writer.clone(), tx.clone());
            std::thread::spawn(move || {
                let all_own = (0..100u32).all(|n| {
                    let op = t * 1000 + n;
                    let commit = |ops: Vec<u32>| {
                        assert!(ops.len() <= 4);
                        ops.into_iter().map(Ok).collect()
                    };
                    submit(&group, op, &writer, commit) == Ok(op)
                });
                let _ = tx.send(all_own);
            });
        }
        for _ in 0..16 {
            let all_own = done.recv_timeout(Duration::from_secs(30)).expect("a writer was left waiting");
            assert!(all_own, "a writer got another's result");
        }
        assert_eq!(group.queued(), 0);
    }
}
