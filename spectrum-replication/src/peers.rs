//! [`PeerTable`]: what this node knows of each peer, shared by the replication
//! service (inbound calls) and the replicator (outbound calls).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::replicator::PeerStatus;

/// Peer statuses keyed by address, cheap to clone (clones share one table).
#[derive(Debug, Clone, Default)]
pub struct PeerTable {
    inner: Arc<Mutex<BTreeMap<String, PeerStatus>>>,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The status of the peer at `addr`, if any exchange with it was recorded.
    pub fn get(&self, addr: &str) -> Option<PeerStatus> {
        self.inner.lock().get(&canonical_addr(addr)).cloned()
    }

    /// Every recorded peer, by address.
    pub fn snapshot(&self) -> Vec<PeerStatus> {
        self.inner.lock().values().cloned().collect()
    }

    /// Updates (creating when new) the status of the peer at `addr`.
    pub(crate) fn update(&self, addr: &str, f: impl FnOnce(&mut PeerStatus)) {
        let addr = canonical_addr(addr);
        let mut table = self.inner.lock();
        let entry = table.entry(addr.clone()).or_insert_with(|| blank(addr));
        f(entry);
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
