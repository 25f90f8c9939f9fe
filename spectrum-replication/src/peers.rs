//! [`PeerTable`]: what this node knows of each peer, shared by the replication
//! service (inbound calls) and the replicator (outbound calls).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use spectrum_core::{Liveness, NodeId, PeerAddr};

use crate::liveness::FailureDetector;
use crate::origin::Origin;
use crate::record::VersionVector;
use crate::replicator::PeerStatus;

/// Peer statuses keyed by address, cheap to clone (clones share one table).
///
/// It also keeps the latest digest each peer showed in an exchange, which the
/// anti-entropy replicator uses to decide when tombstones may be collected.
#[derive(Debug, Clone, Default)]
pub struct PeerTable {
    inner: Arc<Mutex<Tables>>,
}

#[derive(Debug, Default)]
struct Tables {
    statuses: BTreeMap<PeerAddr, PeerStatus>,
    digests: BTreeMap<PeerAddr, PeerDigest>,
    detectors: BTreeMap<PeerAddr, FailureDetector>,
    /// The peers the replicator currently knows of (seeds, then members), heard
    /// from or not: they count in a [`ClockCheck`](crate::ClockCheck).
    known: Vec<PeerAddr>,
}

impl Tables {
    /// The status at `addr` with its liveness as of `now`.
    fn read(&self, addr: &PeerAddr, status: &PeerStatus, now: Instant) -> PeerStatus {
        let detector = self.detectors.get(addr);
        PeerStatus {
            liveness: detector.map_or(Liveness::Unknown, |d| d.liveness(now)),
            phi: detector.and_then(|d| d.phi(now)),
            ..status.clone()
        }
    }
}

/// The latest digest a peer showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDigest {
    /// The origin the peer's store writes under, as its header said: the peer
    /// is node `origin.node()`, and its own writes are numbered under it.
    pub origin: Origin,
    /// Its version vector at the time.
    pub digest: VersionVector,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The status of the peer at `addr`, if any exchange with it was recorded.
    pub fn get(&self, addr: &PeerAddr) -> Option<PeerStatus> {
        let table = self.inner.lock();
        table.statuses.get(addr).map(|s| table.read(addr, s, Instant::now()))
    }

    /// Every recorded peer, by address.
    pub fn snapshot(&self) -> Vec<PeerStatus> {
        let table = self.inner.lock();
        let now = Instant::now();
        table.statuses.iter().map(|(addr, s)| table.read(addr, s, now)).collect()
    }

    /// Every recorded peer, plus a blank status for each known peer not heard
    /// from yet: what a [`ClockCheck`](crate::ClockCheck) judges.
    pub fn with_known(&self) -> Vec<PeerStatus> {
        let table = self.inner.lock();
        let mut out: Vec<PeerStatus> = table.statuses.values().cloned().collect();
        for addr in &table.known {
            if !table.statuses.contains_key(addr) {
                out.push(blank(addr.clone()));
            }
        }
        out
    }

    /// Sets the peers the replicator knows of (see [`with_known`](Self::with_known)).
    pub(crate) fn set_known(&self, addrs: &[PeerAddr]) {
        self.inner.lock().known = addrs.to_vec();
    }

    /// The latest digest the peer at `addr` showed, if it has shown one.
    pub fn digest(&self, addr: &PeerAddr) -> Option<PeerDigest> {
        self.inner.lock().digests.get(addr).cloned()
    }

    /// The id each address answered as, for the addresses that have answered.
    pub(crate) fn answered_as(&self) -> BTreeMap<PeerAddr, NodeId> {
        let table = self.inner.lock();
        table.statuses.iter().filter_map(|(addr, p)| Some((addr.clone(), p.id.clone()?))).collect()
    }

    /// Updates (creating when new) the status of the peer at `addr`; a new
    /// `last_contact` is a contact for the failure detector.
    pub(crate) fn update(&self, addr: &PeerAddr, f: impl FnOnce(&mut PeerStatus)) {
        let mut table = self.inner.lock();
        let entry = table.statuses.entry(addr.clone()).or_insert_with(|| blank(addr.clone()));
        let before = entry.last_contact;
        f(entry);
        if let Some(contact) = entry.last_contact
            && Some(contact) != before
        {
            table.detectors.entry(addr.clone()).or_default().heard(contact);
        }
    }

    /// Records the digest the peer at `addr`, whose store writes under `origin`,
    /// just showed (the latest one wins: a peer restarted on an empty disk shows
    /// a smaller one, under a new origin).
    pub(crate) fn note_digest(&self, addr: &PeerAddr, origin: &Origin, digest: &VersionVector) {
        let entry = PeerDigest { origin: origin.clone(), digest: digest.clone() };
        self.inner.lock().digests.insert(addr.clone(), entry);
    }
}

/// A status for a peer nothing is known of yet.
pub(crate) fn blank(addr: PeerAddr) -> PeerStatus {
    PeerStatus {
        id: None,
        addr,
        last_contact: None,
        lag: 0,
        clock_offset_ms: None,
        clock_uncertainty_ms: None,
        clock_measured_at: None,
        clock_skewed: false,
        last_error: None,
        liveness: Liveness::Unknown,
        phi: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_table() {
        let t = PeerTable::new();
        let u = t.clone();
        u.update(&"127.0.0.1:1".parse().unwrap(), |p| p.lag = 3);
        assert_eq!(t.get(&"http://127.0.0.1:1/".parse().unwrap()).map(|p| p.lag), Some(3));
        assert_eq!(t.snapshot().len(), 1);
    }
}
