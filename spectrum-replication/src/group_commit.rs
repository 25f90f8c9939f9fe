//! Group commit: writes that arrive while another is being committed wait, and
//! the next writer to lead commits all of them together, in one transaction and
//! one fsync.
//!
//! This is LevelDB's write path (`DBImpl::Write` and `BuildBatchGroup`): every
//! writer queues its operation and waits until it is answered or its operation
//! is at the front of the queue. The writer at the front leads: it takes the
//! store's writer lock, then takes its operation and those queued behind it
//! (within limits) as one group, commits them, answers each and wakes the
//! writers of its group and the writer now at the front, who leads next; the
//! group leaves the queue only then, so the next leader's group takes
//! everything that queued meanwhile. Each writer waits on a condition variable
//! of its own, so a group's end wakes only those it concerns, never the whole
//! queue. A disk that takes a millisecond per
//! fsync then costs concurrent writers one fsync per group instead of one
//! each, while a lone writer waits for nobody.
//!
//! What a group means is the caller's: a durable store plans the group's
//! operations one after the other, each seeing those before it, and commits
//! them in one transaction, all or nothing (see [`RedbStore`](crate::RedbStore)).
//! Each operation's writer is told its own result only once the group is
//! committed, or the group's error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

/// Where a queued operation's result is left for its writer, and how the writer
/// is woken (with the queue's lock: [`Condvar::wait`] on it).
struct Waiter<Out, E> {
    result: Mutex<Option<Result<Out, E>>>,
    /// Signalled when the writer is answered or comes to the front of the queue.
    wake: Condvar,
}

impl<Out, E> Default for Waiter<Out, E> {
    fn default() -> Self {
        Self { result: Mutex::new(None), wake: Condvar::new() }
    }
}

type Slot<Out, E> = Arc<Waiter<Out, E>>;

/// An operation waiting to be committed.
struct Queued<Op, Out, E> {
    /// Taken by the leader of its group (the entry stays queued until answered).
    op: Option<Op>,
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
    /// Groups committed (or failed) so far.
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

    /// How many operations wait to be committed (those being committed included).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().len()
    }

    /// Commits `op` (of size `weight`) in a group, blocking until it is done,
    /// and returns its result.
    ///
    /// The writer whose operation reaches the front of the queue leads: it
    /// takes `writer`, then calls `commit` with the operations queued by then
    /// (its own first, in the order queued, within the limits), `writer` held;
    /// `commit` returns one result per operation, in the same order. Should
    /// `commit` panic, or return too few results, the writers left without one
    /// get `lost()`.
    pub(crate) fn submit(
        &self,
        op: Op,
        weight: usize,
        writer: &Mutex<()>,
        commit: impl FnOnce(Vec<Op>) -> Vec<Result<Out, E>>,
        lost: impl Fn() -> E,
    ) -> Result<Out, E> {
        let slot: Slot<Out, E> = Arc::default();
        {
            let mut queue = self.queue.lock();
            queue.push_back(Queued { op: Some(op), weight, slot: slot.clone() });
            loop {
                // Answered by the leader of its group: done.
                if let Some(done) = slot.result.lock().take() {
                    return done;
                }
                // At the front, not taken by a group under way: this writer leads.
                if queue.front().is_some_and(|q| Arc::ptr_eq(&q.slot, &slot) && q.op.is_some()) {
                    break;
                }
                slot.wake.wait(&mut queue);
            }
        }
        {
            let _writer = writer.lock();
            // Operations that queued while the lock was awaited join the group.
            let ops = self.take_group();
            self.groups.fetch_add(1, Ordering::Relaxed);
            let mut answers = Answers { group: self, count: ops.len(), results: None, lost: &lost };
            answers.results = Some(commit(ops));
            // Dropping `answers` answers every writer of the group.
        }
        let done = slot.result.lock().take();
        done.unwrap_or_else(|| Err(lost()))
    }

    /// Takes the operations of the next group out of the front of the queue
    /// (leaving their entries, to be answered): the first, then as many as the
    /// limits allow.
    fn take_group(&self) -> Vec<Op> {
        let mut queue = self.queue.lock();
        let mut weight = 0usize;
        let mut ops = Vec::new();
        for q in queue.iter_mut() {
            if !ops.is_empty()
                && (ops.len() == self.max_ops || weight.saturating_add(q.weight) > self.max_weight)
            {
                break;
            }
            let Some(op) = q.op.take() else { break };
            weight = weight.saturating_add(q.weight);
            ops.push(op);
        }
        ops
    }
}

/// A group being committed: its `count` entries at the front of the queue.
/// Dropped (after its commit, or while a panicking commit unwinds), it gives
/// each writer its result in order, `lost()` to those without one, takes the
/// group off the queue and wakes its writers and the writer now at the front
/// (the next leader), so no writer waits for an answer that never comes.
struct Answers<'a, Op, Out, E> {
    group: &'a GroupCommit<Op, Out, E>,
    count: usize,
    results: Option<Vec<Result<Out, E>>>,
    lost: &'a dyn Fn() -> E,
}

impl<Op, Out, E> Drop for Answers<'_, Op, Out, E> {
    fn drop(&mut self) {
        // Every answer first, outside the queue's lock: `lost` is the caller's code.
        let mut results = self.results.take().unwrap_or_default();
        results.truncate(self.count);
        while results.len() < self.count {
            results.push(Err((self.lost)()));
        }
        let mut queue = self.group.queue.lock();
        for result in results {
            let Some(q) = queue.pop_front() else { break };
            *q.slot.result.lock() = Some(result);
            q.slot.wake.notify_one();
        }
        // The writer now at the front leads the next group. (Its wake-up, as the
        // others', takes effect once the queue's lock is released below.)
        if let Some(next) = queue.front() {
            next.slot.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

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

    /// Writers queued behind a held writer lock are committed in one group,
    /// each told its own result.
    #[test]
    fn writers_queued_behind_a_commit_share_the_next_group() {
        let groups: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let group = Arc::new(GroupCommit::<u32, u32, String>::new(64, usize::MAX));
        let writer = Arc::new(Mutex::new(()));
        let held = writer.lock();
        let threads: Vec<_> = (0..8u32)
            .map(|i| {
                let (group, writer, groups) = (group.clone(), writer.clone(), groups.clone());
                std::thread::spawn(move || {
                    let commit = |ops: Vec<u32>| {
                        groups.lock().push(ops.clone());
                        ops.into_iter().map(|op| Ok(op * 10)).collect()
                    };
                    group.submit(i, 1, &writer, commit, || "lost".into())
                })
            })
            .collect();
        until_queued(&group, 8);
        drop(held);
        let results: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        assert_eq!(results, (0..8).map(|i| i * 10).collect::<Vec<_>>(), "each writer got its own result");
        let groups = groups.lock();
        assert_eq!(groups.len(), 1, "one group: {groups:?}");
        assert_eq!(group.groups(), 1);
        let mut ops = groups[0].clone();
        ops.sort_unstable();
        assert_eq!(ops, (0..8).collect::<Vec<_>>());
        assert_eq!(group.queued(), 0);
    }

    /// A group's end wakes the writer now at the front, who leads the next:
    /// groups cut by the limit follow one another with no writer left waiting.
    /// Then, under contention (16 writers, 100 writes each, groups of at most
    /// 4), every writer is answered with its own result.
    #[test]
    fn each_group_hands_the_lead_to_the_writer_at_the_front() {
        let group = Arc::new(GroupCommit::<u32, u32, String>::new(2, usize::MAX));
        let writer = Arc::new(Mutex::new(()));
        let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
        let held = writer.lock();
        let (tx, results) = mpsc::channel();
        for i in 0..5u32 {
            let (group, writer, sizes, tx) = (group.clone(), writer.clone(), sizes.clone(), tx.clone());
            std::thread::spawn(move || {
                let commit = |ops: Vec<u32>| {
                    sizes.lock().push(ops.len());
                    ops.into_iter().map(|op| Ok(op + 100)).collect()
                };
                let _ = tx.send((i, group.submit(i, 1, &writer, commit, || "lost".into())));
            });
        }
        until_queued(&group, 5);
        drop(held);
        let mut answered: Vec<_> = (0..5)
            .map(|_| results.recv_timeout(Duration::from_secs(10)).expect("a writer was left waiting"))
            .collect();
        answered.sort_unstable_by_key(|(i, _)| *i);
        assert!(answered.iter().all(|(i, result)| result == &Ok(i + 100)), "{answered:?}");
        assert_eq!(*sizes.lock(), vec![2, 2, 1], "three groups in turn");

        let group = Arc::new(GroupCommit::<(u32, u32), (u32, u32), String>::new(4, usize::MAX));
        let (tx, done) = mpsc::channel();
        for t in 0..16u32 {
            let (group, writer, tx) = (group.clone(), writer.clone(), tx.clone());
            std::thread::spawn(move || {
                let all_own = (0..100u32).all(|n| {
                    let commit = |ops: Vec<(u32, u32)>| {
                        assert!(ops.len() <= 4);
                        ops.into_iter().map(Ok).collect()
                    };
                    group.submit((t, n), 1, &writer, commit, || "lost".into()) == Ok((t, n))
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

    /// The limits cut groups: by count, and by weight (a heavy operation still
    /// goes, alone). A group's entries stay queued until answered, so nothing
    /// behind them is taken meanwhile.
    #[test]
    fn groups_stay_within_their_limits() {
        let group = GroupCommit::<usize, (), ()>::new(3, 100);
        for weight in [10, 10, 10, 10, 200, 50, 60] {
            group.queue.lock().push_back(Queued { op: Some(weight), weight, slot: Arc::default() });
        }
        let mut groups = Vec::new();
        loop {
            let ops = group.take_group();
            if ops.is_empty() {
                break;
            }
            assert!(group.take_group().is_empty(), "nothing is taken while a group is under way");
            drop(Answers { group: &group, count: ops.len(), results: None, lost: &|| () });
            groups.push(ops);
        }
        assert_eq!(groups, vec![vec![10, 10, 10], vec![10], vec![200], vec![50], vec![60]]);
        assert_eq!(group.queued(), 0);
    }

    /// A commit that panics answers every other writer of its group with
    /// `lost()`, as does one that returns too few results; nobody is left waiting.
    #[test]
    fn a_commit_that_panics_or_answers_too_few_leaves_no_writer_waiting() {
        for panics in [true, false] {
            let group = Arc::new(GroupCommit::<u32, u32, String>::new(64, usize::MAX));
            let writer = Arc::new(Mutex::new(()));
            let calls = Arc::new(AtomicUsize::new(0));
            let held = writer.lock();
            let (tx, outcomes) = mpsc::channel();
            for i in 0..4u32 {
                let (group, writer, calls, tx) = (group.clone(), writer.clone(), calls.clone(), tx.clone());
                std::thread::spawn(move || {
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let commit = |ops: Vec<u32>| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            if panics {
                                panic!("the group's commit fails");
                            }
                            ops.into_iter().take(1).map(Ok).collect()
                        };
                        group.submit(i, 1, &writer, commit, || "lost".to_owned())
                    }));
                    let _ = tx.send(outcome);
                });
            }
            until_queued(&group, 4);
            drop(held);
            let outcomes: Vec<_> = (0..4)
                .map(|_| outcomes.recv_timeout(Duration::from_secs(10)).expect("a writer was left waiting"))
                .collect();
            assert_eq!(calls.load(Ordering::SeqCst), 1, "one group");
            let unwound = outcomes.iter().filter(|o| o.is_err()).count();
            let lost = outcomes.iter().filter(|o| matches!(o, Ok(Err(lost)) if lost == "lost")).count();
            let answered = outcomes.iter().filter(|o| matches!(o, Ok(Ok(_)))).count();
            match panics {
                true => {
                    assert_eq!((unwound, lost, answered), (1, 3, 0), "the leader unwinds, the rest are lost")
                }
                false => assert_eq!((unwound, lost, answered), (0, 3, 1), "one answered, the rest lost"),
            }
            assert_eq!(group.queued(), 0);
        }
    }
}
