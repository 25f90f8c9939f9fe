//! One anti-entropy round with one peer: pull what it has (a delta, or its
//! snapshot page by page when this node is behind its tombstone horizon), then
//! push back what its digest shows it lacks.

use spectrum_core::PeerAddr;
use tracing::debug;

use super::{Inner, malformed};
use crate::error::{ReplicationError, StoreError};
use crate::proto;
use crate::record::{Record, Snapshot, VersionVector};
use crate::service::budget_for;
use crate::wire::{InvalidMessage, records_from_wire, vv_from_wire};

/// Most request/answer exchanges in one direction of one anti-entropy round.
const MAX_EXCHANGES_PER_ROUND: usize = 64;

/// A peer's snapshot being read page by page.
#[derive(Debug)]
struct SnapshotRead {
    /// What was read so far: records in key order, the meet of the pages'
    /// digests and the join of their tombstone floors.
    snapshot: Snapshot,
    /// The last key read ("" before the first page).
    after: String,
}

impl SnapshotRead {
    /// Starts reading a snapshot whose first page shows `digest` and `floor`.
    fn new(digest: &VersionVector, floor: &VersionVector) -> Self {
        let snapshot = Snapshot { digest: digest.clone(), gc_floor: floor.clone(), ..Snapshot::default() };
        Self { snapshot, after: String::new() }
    }

    /// Adds a page (its `records`, conflict losers, `digest` and tombstone
    /// `floor`) to what was read.
    ///
    /// # Errors
    ///
    /// [`InvalidMessage`] when the page breaks [`check_page`], or a loser's key
    /// is not after the last key read before it.
    fn add_page(
        mut self,
        records: Vec<Record>,
        conflicts: Vec<Record>,
        digest: &VersionVector,
        floor: &VersionVector,
        complete: bool,
    ) -> Result<Self, InvalidMessage> {
        check_page(&records, &self.after, complete)?;
        if let Some(i) = conflicts.iter().position(|c| c.key <= self.after) {
            return Err(InvalidMessage::new(format!("conflicts[{i}].key"), "not a key of this page"));
        }
        self.snapshot.conflicts.extend(conflicts);
        self.snapshot.digest = self.snapshot.digest.meet(digest);
        self.snapshot.gc_floor = self.snapshot.gc_floor.join(floor);
        if let Some(last) = records.last() {
            self.after.clone_from(&last.key);
        }
        self.snapshot.records.extend(records);
        Ok(self)
    }
}

/// Checks a snapshot page: keys ascending, after the last key read, and no empty
/// page before the last.
fn check_page(records: &[Record], after: &str, complete: bool) -> Result<(), InvalidMessage> {
    if records.is_empty() && !complete {
        return Err(InvalidMessage::new("records", "an empty snapshot page that is not the last"));
    }
    let mut prev = after;
    for (i, r) in records.iter().enumerate() {
        if r.key.as_str() <= prev {
            return Err(InvalidMessage::new(format!("records[{i}].key"), "snapshot keys must ascend"));
        }
        prev = &r.key;
    }
    Ok(())
}

impl Inner {
    /// One round with `addr`: pull, then push back what it lacks.
    pub(super) async fn sync_with(&self, addr: &PeerAddr) -> Result<(), ReplicationError> {
        let budget = budget_for(self.channels.max_message_bytes());
        let (theirs, pulled) = self.pull(addr, budget).await?;
        let (theirs, pushed) = self.push_missing(addr, theirs, budget).await?;
        self.note_success(addr, &theirs).await;
        debug!(peer = %addr, pulled, pushed, "anti-entropy round done");
        Ok(())
    }

    /// Sends `addr` this node's digest and merges what it answers, repeating
    /// while answers are cut short by the byte budget. Returns the peer's last
    /// digest and how many records were pulled.
    async fn pull(&self, addr: &PeerAddr, budget: usize) -> Result<(VersionVector, usize), ReplicationError> {
        let mut client = self.client(addr);
        let mut theirs = VersionVector::default();
        let mut pulled = 0usize;
        let mut snapshot: Option<SnapshotRead> = None;
        for _ in 0..MAX_EXCHANGES_PER_ROUND {
            let digest = self.store.digest().await?;
            let req = proto::SyncRequest {
                header: Some(self.handshake.header()),
                digest: Some((&digest).into()),
                budget_bytes: u64::try_from(budget).unwrap_or(u64::MAX),
                snapshot_after: snapshot.as_ref().map(|s| s.after.clone()),
            };
            let resp = client.sync(req).await.map_err(|s| self.failed_call(addr, &s))?.into_inner();
            let peer = self.check_answer(addr, resp.header)?;
            let records = records_from_wire(resp.records).map_err(|e| malformed(addr, e))?;
            let conflicts = records_from_wire(resp.conflicts).map_err(|e| malformed(addr, e))?;
            theirs = vv_from_wire(resp.digest, "digest").map_err(|e| malformed(addr, e))?;
            self.peers.note_digest(addr, &peer.origin, &theirs);
            pulled += records.len();
            if !resp.snapshot {
                if snapshot.take().is_some() {
                    let stopped = InvalidMessage::new("snapshot", "a snapshot stopped mid-way");
                    return Err(malformed(addr, stopped));
                }
                let covers = vv_from_wire(resp.covers, "covers").map_err(|e| malformed(addr, e))?;
                self.store.merge(records, &covers).await?;
                if resp.complete {
                    break;
                }
                continue;
            }
            let page_digest =
                vv_from_wire(resp.snapshot_digest, "snapshot_digest").map_err(|e| malformed(addr, e))?;
            let floor = vv_from_wire(resp.gc_floor, "gc_floor").map_err(|e| malformed(addr, e))?;
            let read = snapshot.take().unwrap_or_else(|| {
                debug!(peer = %addr, "behind the peer's tombstone horizon; reading its snapshot");
                SnapshotRead::new(&page_digest, &floor)
            });
            let read = read
                .add_page(records, conflicts, &page_digest, &floor, resp.complete)
                .map_err(|e| malformed(addr, e))?;
            if resp.complete {
                let report = self.store.restore(read.snapshot).await?;
                debug!(peer = %addr, applied = report.applied, "restored the peer's snapshot");
            } else {
                snapshot = Some(read);
            }
        }
        Ok((theirs, pulled))
    }

    /// Pushes `addr` what its digest `theirs` shows it lacks, in deltas of at
    /// most `budget` bytes. Returns the peer's last digest and how many records
    /// were pushed.
    async fn push_missing(
        &self,
        addr: &PeerAddr,
        mut theirs: VersionVector,
        budget: usize,
    ) -> Result<(VersionVector, usize), ReplicationError> {
        let mut pushed = 0usize;
        for _ in 0..MAX_EXCHANGES_PER_ROUND {
            let delta = match self.store.delta(&theirs, budget).await {
                Ok(delta) => delta,
                Err(StoreError::BehindHorizon { origin, seen, floor }) => {
                    // A snapshot is pulled, never pushed: the peer reads ours (or
                    // another member's) in its own rounds.
                    debug!(peer = %addr, %origin, seen, floor, "peer is behind the tombstone horizon; it will pull a snapshot");
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if delta.records.is_empty() && delta.covers.entries.is_empty() {
                break;
            }
            pushed += delta.records.len();
            theirs = self.push_records(addr, &delta.records, &delta.covers, &theirs).await?;
            if delta.complete {
                break;
            }
        }
        Ok((theirs, pushed))
    }
}

#[cfg(test)]
mod tests {
    use spectrum_core::Timestamp;

    use super::*;

    fn record(key: &str) -> Record {
        Record {
            key: key.into(),
            value: None,
            stamp: Timestamp::new(1, 0),
            origin: "n1".parse().unwrap(),
            seq: 1,
            lineage: Default::default(),
        }
    }

    fn vv(seq: u64) -> VersionVector {
        let mut v = VersionVector::default();
        v.raise(&"n1".parse().unwrap(), seq);
        v
    }

    #[test]
    fn snapshot_pages_must_ascend_past_the_last_key_read() {
        assert!(check_page(&[record("a"), record("b")], "", false).is_ok());
        assert_eq!(check_page(&[record("b"), record("a")], "", false).unwrap_err().field, "records[1].key");
        assert_eq!(check_page(&[record("b")], "b", true).unwrap_err().field, "records[0].key");
        assert_eq!(check_page(&[], "b", false).unwrap_err().field, "records");
        assert!(check_page(&[], "b", true).is_ok(), "the last page may be empty");
    }

    #[test]
    fn pages_add_up_to_one_snapshot_with_the_meet_of_digests_and_the_join_of_floors() {
        let read = SnapshotRead::new(&vv(5), &vv(1))
            .add_page(vec![record("a"), record("b")], vec![], &vv(5), &vv(1), false)
            .unwrap();
        assert_eq!(read.after, "b");
        let read = read.add_page(vec![record("c")], vec![], &vv(4), &vv(2), true).unwrap();
        assert_eq!(read.snapshot.records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!((read.snapshot.digest, read.snapshot.gc_floor), (vv(4), vv(2)));
        let again = SnapshotRead { after: "c".into(), ..SnapshotRead::new(&vv(4), &vv(2)) };
        assert!(again.add_page(vec![record("b")], vec![], &vv(4), &vv(2), true).is_err());
    }
}
