//! Collecting deletes' tombstones in Raft mode.
//!
//! Last-writer-wins keeps a tombstone until every member has seen it (see
//! [`horizon`](crate::horizon)), because any peer may still send the value it
//! deleted. In Raft mode no peer sends records: a store changes only by
//! applying committed log entries, in log order, or by installing a snapshot
//! of another replica at a log index. So a tombstone only has to outlive the
//! entries that could still put the deleted value back in front of it, and
//! those are all *before* it in the log: once the delete is applied, nothing
//! later in the log resurrects the key unless it writes the key anew.
//!
//! Each node therefore collects, by itself, the tombstones written by entries
//! at least `keep` entries behind its applied index (rounded down to a step of
//! `keep / 4`, so a busy node sweeps once per step, not once per entry). The
//! horizon is a function of the applied index alone, so replicas that applied
//! the same entries collect the same tombstones and hold the same records.
//!
//! Why this cannot bring a deleted key back:
//!
//! - A replay after a crash merges records the store's digest already covers,
//!   and a merge ignores them; the digest is never lowered by collection.
//! - A snapshot carries the maker's tombstone floor. A node installing it
//!   drops every record the snapshot's digest covers but the snapshot lacks
//!   ([`restore`](crate::ConfigStore::restore)), so a node that was away
//!   holding the deleted value loses it, whether the snapshot still had the
//!   tombstone or had collected it.
//! - Conditions of later transactions read a collected tombstone and a
//!   present one alike (the key is absent), so every replica decides them the
//!   same way. For the same reason a sweep may run while the state machine
//!   decides a batch of entries from live versions it read before it (see
//!   `StateMachine::live_versions`): a sweep changes no live version. Any
//!   other write to the store in Raft mode would have to keep to that too.

use std::time::Duration;

use tracing::{debug, warn};

use super::SEQ_PER_ENTRY;
use super::replicator::Inner;
use crate::record::VersionVector;

/// Entries a tombstone outlives by default: the delete's entry is at least
/// this far behind the applied index when it is collected.
pub const DEFAULT_TOMBSTONE_KEEP: u64 = 1_000;

/// The last log index whose tombstones may be collected once `applied` is
/// applied, keeping `keep` entries: `applied - keep`, rounded down to a
/// multiple of `max(keep / 4, 1)`; `None` while nothing is that old.
pub(crate) fn collectable_through(applied: u64, keep: u64) -> Option<u64> {
    let step = (keep / 4).max(1);
    let through = applied.checked_sub(keep)? / step * step;
    (through > 0).then_some(through)
}

impl Inner {
    /// Collects tombstones as the applied index advances (see the [module
    /// docs](self)), until the node stops.
    pub(crate) async fn sweep_tombstones(&self) {
        let mut metrics = self.raft.metrics();
        let mut stop = self.stop.subscribe();
        let mut swept = 0;
        loop {
            let applied = metrics.borrow_and_update().last_applied.map_or(0, |l| l.index);
            if let Some(through) = collectable_through(applied, self.tombstone_keep)
                && through > swept
            {
                let mut horizon = VersionVector::default();
                horizon.raise(&self.origin, through.saturating_mul(SEQ_PER_ENTRY) + SEQ_PER_ENTRY - 1);
                let Some(store) = self.store.upgrade() else { return };
                let collected = store.collect_tombstones(&horizon).await;
                drop(store);
                match collected {
                    Ok(collected) => {
                        swept = through;
                        if collected > 0 {
                            debug!(collected, through, "collected tombstones of old raft entries");
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "could not collect tombstones; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_wait_until_their_entry_is_keep_entries_behind() {
        assert_eq!(collectable_through(999, 1_000), None);
        assert_eq!(collectable_through(1_000, 1_000), None);
        assert_eq!(collectable_through(1_250, 1_000), Some(250));
        // Rounded down to a step of keep / 4: the same on every replica at the same index.
        assert_eq!(collectable_through(1_499, 1_000), Some(250));
        assert_eq!(collectable_through(1_500, 1_000), Some(500));
        assert_eq!(collectable_through(12, 8), Some(4));
        assert_eq!(collectable_through(13, 0), Some(13), "keep 0 collects at once");
    }
}
