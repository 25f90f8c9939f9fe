//! The change log behind [`ConfigStore::changes_since`](crate::ConfigStore::changes_since):
//! every stored or dropped record of a store, numbered 1, 2, 3, … with no gaps,
//! kept by count and by age.
//!
//! [`RedbStore`](crate::RedbStore) keeps its log in its file, written in the same
//! transaction as the change it describes (see `redb_log.rs`), so a position
//! stays valid across a restart or a `kill -9`: a watcher resumes where it left
//! off. [`MemoryStore`](crate::MemoryStore) keeps it in memory (`MemoryLog`),
//! under the same limits. Both compact as part of their normal commits: after a
//! commit, the log holds at most [`ChangeLogLimits::max_entries`] entries and
//! none older than [`ChangeLogLimits::max_age`] (by the store's clock). A
//! position older than what is kept is answered with
//! [`StoreError::FeedCompacted`], carrying the oldest position still available.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::StoreError;
use crate::record::{Change, ChangeBatch, VersionVector};

/// Default number of changes [`MemoryStore`](crate::MemoryStore)'s feed keeps.
pub const DEFAULT_CHANGE_LOG_CAPACITY: usize = 4096;

/// Default number of changes [`RedbStore`](crate::RedbStore)'s durable log keeps.
pub const DEFAULT_CHANGE_LOG_ENTRIES: usize = 100_000;

/// Default age past which a change leaves the log: 7 days.
pub const DEFAULT_CHANGE_LOG_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most entries one commit drops while compacting: a commit after the limits were
/// lowered stays short, and the rest goes with the next commits.
pub(crate) const MAX_COMPACTED_PER_COMMIT: usize = 4096;

/// How much of its history a store's change log keeps: an entry leaves the log
/// once more than `max_entries` newer ones exist, or once it is older than
/// `max_age` (measured on the store's clock when a later commit runs).
///
/// ```
/// use std::time::Duration;
/// use spectrum_replication::ChangeLogLimits;
///
/// let limits = ChangeLogLimits::default().max_entries(10_000).max_age(Duration::from_secs(3600));
/// assert_eq!(limits.entries(), 10_000);
/// assert_eq!(ChangeLogLimits::default().max_entries(0).entries(), 1, "at least one");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLogLimits {
    entries: usize,
    age: Duration,
}

impl Default for ChangeLogLimits {
    /// [`DEFAULT_CHANGE_LOG_ENTRIES`] entries, [`DEFAULT_CHANGE_LOG_MAX_AGE`].
    fn default() -> Self {
        Self { entries: DEFAULT_CHANGE_LOG_ENTRIES, age: DEFAULT_CHANGE_LOG_MAX_AGE }
    }
}

impl ChangeLogLimits {
    /// Keeps at most `entries` changes (at least one).
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.entries = entries.max(1);
        self
    }

    /// Drops changes older than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// How many changes are kept at most.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// How old a change may be.
    pub fn age(&self) -> Duration {
        self.age
    }

    /// The time (ms since the Unix epoch) before which an entry is too old, at `now_ms`.
    pub(crate) fn cut_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(u64::try_from(self.age.as_millis()).unwrap_or(u64::MAX))
    }

    /// The first index the count limit keeps when the last change is `head`.
    pub(crate) fn first_kept(&self, head: u64) -> u64 {
        let entries = u64::try_from(self.entries).unwrap_or(u64::MAX);
        head.saturating_sub(entries).saturating_add(1)
    }
}

/// Where a store's change feed stands, read at one instant: its last position,
/// the oldest position it can resume from, and the version vector of the store
/// at that last position (what a reader who has read the feed up to `position`
/// has been shown, together with what it held before).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedHead {
    /// The feed's last position (0: no change yet).
    pub position: u64,
    /// The oldest position [`changes_since`](crate::ConfigStore::changes_since)
    /// accepts.
    pub oldest: u64,
    /// The store's digest at `position`.
    pub digest: VersionVector,
}

/// Refuses a resume position the log cannot answer.
pub(crate) fn check_from(from: u64, head: u64, oldest: u64) -> Result<(), StoreError> {
    if from > head {
        return Err(StoreError::FeedAhead { from, head });
    }
    if from < oldest {
        return Err(StoreError::FeedCompacted { from, oldest });
    }
    Ok(())
}

/// One page of changes after the resume position: `changes` are the log's
/// entries after it, in order; at most `limit` of those under `prefix` are kept,
/// and the position stops before the first one left out.
pub(crate) fn page(
    changes: impl Iterator<Item = Result<Change, StoreError>>,
    prefix: &str,
    limit: usize,
    head: u64,
) -> Result<ChangeBatch, StoreError> {
    let mut batch = ChangeBatch { changes: Vec::new(), position: head };
    for c in changes {
        let c = c?;
        if batch.changes.len() >= limit {
            batch.position = c.index - 1;
            break;
        }
        if c.key.starts_with(prefix) {
            batch.changes.push(c);
        }
    }
    Ok(batch)
}

/// The change log of a store held in memory: the newest changes, oldest first,
/// contiguous up to the store's head, each with the time it was made.
#[derive(Debug)]
pub(crate) struct MemoryLog {
    entries: VecDeque<(u64, Change)>,
    limits: ChangeLogLimits,
}

impl MemoryLog {
    pub(crate) fn new(limits: ChangeLogLimits) -> Self {
        Self { entries: VecDeque::new(), limits }
    }

    pub(crate) fn limits(&self) -> ChangeLogLimits {
        self.limits
    }

    pub(crate) fn set_limits(&mut self, limits: ChangeLogLimits, now_ms: u64) {
        self.limits = limits;
        self.compact(now_ms);
    }

    /// Adds the changes of one commit made at `now_ms`, then compacts.
    pub(crate) fn append(&mut self, feed: &[Change], now_ms: u64) {
        self.entries.extend(feed.iter().map(|c| (now_ms, c.clone())));
        self.compact(now_ms);
    }

    fn compact(&mut self, now_ms: u64) {
        while self.entries.len() > self.limits.entries {
            self.entries.pop_front();
        }
        let cut = self.limits.cut_ms(now_ms);
        while self.entries.front().is_some_and(|(at, _)| *at < cut) {
            self.entries.pop_front();
        }
    }

    /// The oldest position it can resume from, when the store's last change is `head`.
    pub(crate) fn oldest(&self, head: u64) -> u64 {
        self.entries.front().map_or(head, |(_, c)| c.index - 1)
    }

    /// See [`ConfigStore::changes_since`](crate::ConfigStore::changes_since).
    pub(crate) fn changes_since(
        &self,
        prefix: &str,
        from: u64,
        limit: usize,
        head: u64,
    ) -> Result<ChangeBatch, StoreError> {
        let oldest = self.oldest(head);
        check_from(from, head, oldest)?;
        let skip = usize::try_from(from - oldest).unwrap_or(usize::MAX);
        page(self.entries.iter().skip(skip).map(|(_, c)| Ok(c.clone())), prefix, limit, head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(index: u64) -> Change {
        Change { index, key: format!("k{index}"), record: None, dropped_tombstone: false }
    }

    #[test]
    fn the_log_is_gap_free_and_reports_compaction_by_count() {
        let mut log = MemoryLog::new(ChangeLogLimits::default().max_entries(3));
        for i in 1..=5 {
            log.append(&[change(i)], 1_000);
        }
        let b = log.changes_since("", 2, 10, 5).unwrap();
        assert_eq!(b.changes.iter().map(|c| c.index).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(b.position, 5);
        assert_eq!(log.changes_since("", 2, 2, 5).unwrap().position, 4);
        assert!(matches!(log.changes_since("", 1, 10, 5), Err(StoreError::FeedCompacted { oldest: 2, .. })));
        assert!(matches!(log.changes_since("", 6, 10, 5), Err(StoreError::FeedAhead { head: 5, .. })));
        let b = log.changes_since("k4", 2, 10, 5).unwrap();
        assert_eq!((b.changes.len(), b.position), (1, 5));
    }

    #[test]
    fn changes_older_than_the_age_limit_leave_with_the_next_commit() {
        let mut log = MemoryLog::new(ChangeLogLimits::default().max_age(Duration::from_secs(60)));
        log.append(&[change(1), change(2)], 1_000);
        log.append(&[change(3)], 50_000);
        assert_eq!(log.oldest(3), 0, "nothing is old yet");
        log.append(&[change(4)], 61_500);
        assert_eq!(log.oldest(4), 2, "the first commit's changes are gone");
        assert!(matches!(log.changes_since("", 1, 10, 4), Err(StoreError::FeedCompacted { oldest: 2, .. })));
        log.set_limits(ChangeLogLimits::default().max_age(Duration::ZERO), 61_501);
        assert_eq!(log.oldest(4), 4, "an empty log resumes only from the head");
        assert!(log.changes_since("", 4, 10, 4).unwrap().changes.is_empty());
    }
}
