//! [`PeerTable`]: what this node knows of each peer, shared by the replication
//! service (inbound calls) and the replicator (outbound calls).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use spectrum_core::NodeId;

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
    statuses: BTreeMap<String, PeerStatus>,
    digests: BTreeMap<String, PeerDigest>,
}

/// The latest digest a peer showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDigest {
    /// The peer that showed it.
    pub id: NodeId,
    /// Its version vector at the time.
    pub digest: VersionVector,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The status of the peer at `addr`, if any exchange with it was recorded.
    pub fn get(&self, addr: &str) -> Option<PeerStatus> {
        self.inner.lock().statuses.get(&canonical_addr(addr)).cloned()
    }

    /// Every recorded peer, by address.
    pub fn snapshot(&self) -> Vec<PeerStatus> {
        self.inner.lock().statuses.values().cloned().collect()
    }

    /// The latest digest the peer at `addr` showed, if it has shown one.
    pub fn digest(&self, addr: &str) -> Option<PeerDigest> {
        self.inner.lock().digests.get(&canonical_addr(addr)).cloned()
    }

    /// Updates (creating when new) the status of the peer at `addr`.
    pub(crate) fn update(&self, addr: &str, f: impl FnOnce(&mut PeerStatus)) {
        let addr = canonical_addr(addr);
        let mut table = self.inner.lock();
        let entry = table.statuses.entry(addr.clone()).or_insert_with(|| blank(addr));
        f(entry);
    }

    /// Records the digest the peer `id` at `addr` just showed (the latest one wins:
    /// a peer that lost its memory shows a smaller one).
    pub(crate) fn note_digest(&self, addr: &str, id: &NodeId, digest: &VersionVector) {
        if addr.is_empty() {
            return;
        }
        let entry = PeerDigest { id: id.clone(), digest: digest.clone() };
        self.inner.lock().digests.insert(canonical_addr(addr), entry);
    }
}

/// A status for a peer nothing is known of yet.
pub(crate) fn blank(addr: String) -> PeerStatus {
    PeerStatus {
        id: None,
        addr,
        last_contact: None,
        lag: 0,
        clock_offset_ms: None,
        clock_skewed: false,
        last_error: None,
    }
}

/// One spelling per address: an `http://` scheme and no trailing slash, so
/// `127.0.0.1:7000`, `http://127.0.0.1:7000` and `http://127.0.0.1:7000/` name
/// the same peer.
pub fn canonical_addr(addr: &str) -> String {
    let addr = addr.trim().trim_end_matches('/');
    if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_compared_in_one_spelling() {
        assert_eq!(canonical_addr("127.0.0.1:7000"), "http://127.0.0.1:7000");
        assert_eq!(canonical_addr("http://127.0.0.1:7000/"), "http://127.0.0.1:7000");
    }

    #[test]
    fn clones_share_one_table() {
        let t = PeerTable::new();
        let u = t.clone();
        u.update("127.0.0.1:1", |p| p.lag = 3);
        assert_eq!(t.get("http://127.0.0.1:1/").map(|p| p.lag), Some(3));
        assert_eq!(t.snapshot().len(), 1);
    }
}
