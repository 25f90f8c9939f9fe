//! Pushing records to one peer: cut into messages that fit the size limit, and
//! retried briefly when the failure may pass.

use std::time::Duration;

use spectrum_core::PeerAddr;
use tokio::time::Instant;
use tracing::{debug, trace};

use super::{Inner, malformed};
use crate::error::{PeerFailure, ReplicationError};
use crate::proto;
use crate::record::{Record, VersionVector};
use crate::service::budget_for;
use crate::wire::{records_to_wire, vv_from_wire};

/// The first wait before a push is retried; each retry doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two tries of a push.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Cuts `records` into runs of at most `budget` encoded bytes each, in order. A
/// record larger than the budget gets a run of its own; there is always at least
/// one run (empty when `records` is).
pub(super) fn chunks(records: &[Record], budget: usize) -> Vec<&[Record]> {
    let mut chunks: Vec<&[Record]> = Vec::new();
    let (mut start, mut used) = (0usize, 0usize);
    for (i, r) in records.iter().enumerate() {
        let len = r.encoded_len();
        if i > start && used.saturating_add(len) > budget {
            chunks.push(&records[start..i]);
            (start, used) = (i, 0);
        }
        used = used.saturating_add(len);
    }
    chunks.push(&records[start..]);
    chunks
}

impl Inner {
    /// Pushes `records` to `addr` in messages that fit the size limit; `covers`
    /// (with the digest `since` it was computed against) goes with the last one
    /// only, once everything it vouches for was sent. Returns the peer's digest.
    pub(super) async fn push_records(
        &self,
        addr: &PeerAddr,
        records: &[Record],
        covers: &VersionVector,
        since: &VersionVector,
    ) -> Result<VersionVector, ReplicationError> {
        let mut client = self.client(addr);
        let chunks = chunks(records, budget_for(self.channels.max_message_bytes()));
        let mut theirs = VersionVector::default();
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let req = proto::PushRequest {
                header: Some(self.handshake.header()),
                records: records_to_wire(chunk),
                covers: (i == last).then(|| covers.into()),
                since: (i == last).then(|| since.into()),
            };
            let resp = client.push(req).await.map_err(|s| self.failed_call(addr, &s))?.into_inner();
            let peer = self.check_answer(addr, resp.header)?;
            theirs = vv_from_wire(resp.digest, "digest").map_err(|e| malformed(addr, e))?;
            self.peers.note_digest(addr, &peer.origin, &theirs);
        }
        Ok(theirs)
    }

    /// Pushes until acknowledged, a failure that is not
    /// [retryable](PeerFailure::retryable), `until`, or stop. Returns whether
    /// the peer acknowledged.
    pub(super) async fn push_with_retry(&self, addr: &PeerAddr, records: &[Record], until: Instant) -> bool {
        let mut backoff = FIRST_BACKOFF;
        let mut stop = self.stop.subscribe();
        loop {
            let nothing = VersionVector::default();
            let attempt =
                tokio::time::timeout_at(until, self.push_records(addr, records, &nothing, &nothing));
            let failure = match attempt.await {
                Ok(Ok(theirs)) => {
                    self.note_success(addr, &theirs).await;
                    trace!(peer = %addr, records = records.len(), "pushed");
                    return true;
                }
                Ok(Err(e)) => e,
                Err(_) => ReplicationError::Peer {
                    peer: addr.clone(),
                    failure: PeerFailure::Timeout { message: "the push's retry window passed".into() },
                },
            };
            self.note_failure(addr, &failure);
            if !failure.retryable() || Instant::now() + backoff >= until || *stop.borrow_and_update() {
                debug!(peer = %addr, error = %failure, "push failed; anti-entropy will repair");
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spectrum_core::Timestamp;

    use super::*;

    fn record(key: &str, value_len: usize) -> Record {
        Record {
            key: key.into(),
            value: Some(Bytes::from(vec![b'x'; value_len])),
            stamp: Timestamp::new(1, 0),
            origin: "n1".parse().unwrap(),
            seq: 1,
            lineage: Default::default(),
        }
    }

    #[test]
    fn records_are_cut_into_runs_that_fit_the_budget_in_order() {
        let records: Vec<Record> = (0..5).map(|i| record(&format!("k{i}"), 100)).collect();
        let one = records[0].encoded_len();
        let runs = chunks(&records, 2 * one);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(runs.concat(), records);
        assert_eq!(chunks(&records, usize::MAX).len(), 1);
    }

    #[test]
    fn a_record_larger_than_the_budget_goes_alone_and_nothing_is_a_single_empty_run() {
        let records = [record("small", 1), record("big", 1000), record("small2", 1)];
        let runs = chunks(&records, 100);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [1, 1, 1]);
        let none = chunks(&[], 100);
        assert_eq!(none.len(), 1);
        assert!(none[0].is_empty());
    }
}
