//! The handshake every replication message carries, written once for both sides.
//!
//! Each request and each answer starts with a header: the sender's cluster, node
//! id, address and HLC stamp ([`Handshake::header`]). Before anything else in a
//! message is looked at, the receiver [admits](Handshake::admit) the header:
//!
//! 1. it must be well formed (a malformed one is [`Refusal::Malformed`]);
//! 2. the sender must belong to this cluster ([`Refusal::WrongCluster`]);
//! 3. the sender's stamp is observed by this node's HLC, and its clock offset
//!    noted; a sender further ahead than the HLC's maximum offset is
//!    [`Refusal::ClockSkew`].
//!
//! The contact (id, time, offset, skew) is recorded in the [`PeerTable`] once the
//! cluster matches, skewed or not, so a skewed peer shows up flagged. The
//! service admits requests ([`Contact::Inbound`]), the replicator admits answers
//! ([`Contact::Dialled`]); each turns a [`Refusal`] into its own error.

use std::sync::Arc;
use std::time::Instant;

use spectrum_core::{ClockSkew, ClusterId, Hlc, NodeId, PeerAddr};
use tonic::Status;
use tracing::warn;

use crate::error::{PeerFailure, ReplicationError};
use crate::peers::PeerTable;
use crate::proto;
use crate::wire::{InvalidMessage, PeerHeader};

/// This node's side of the handshake: what it says about itself, and where it
/// records whom it heard from.
#[derive(Debug, Clone)]
pub(crate) struct Handshake {
    cluster: ClusterId,
    node: NodeId,
    /// The address this node is reached at, when it serves one.
    addr: Option<PeerAddr>,
    hlc: Arc<Hlc>,
    peers: PeerTable,
}

/// Where a header came from, which decides the address its contact is
/// recorded under.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Contact<'a> {
    /// An answer from the peer this node dialled: recorded under the dialled
    /// address, whatever the answer's header says.
    Dialled(&'a PeerAddr),
    /// A request: recorded under the address its header gives, unless it gives
    /// none or this node's own.
    Inbound,
}

/// A header that passed the checks.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The validated header.
    pub(crate) header: PeerHeader,
    /// The address the contact was recorded under, if any.
    pub(crate) recorded_as: Option<PeerAddr>,
}

/// Why a header was refused; nothing in its message may be merged.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The header is missing or malformed.
    Malformed(InvalidMessage),
    /// The sender belongs to another cluster.
    WrongCluster { node: NodeId, ours: ClusterId, theirs: String },
    /// The sender's clock is too far ahead.
    ClockSkew { node: NodeId, skew: ClockSkew },
}

impl Handshake {
    /// The handshake of node `node` of `cluster`, stamping with `hlc`.
    pub(crate) fn new(cluster: ClusterId, node: NodeId, hlc: Arc<Hlc>) -> Self {
        Self { cluster, node, addr: None, hlc, peers: PeerTable::new() }
    }

    /// Sends `addr` as this node's address, and never records it as a peer.
    pub(crate) fn with_addr(mut self, addr: PeerAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Records contacts in `peers`.
    pub(crate) fn with_peer_table(mut self, peers: PeerTable) -> Self {
        self.peers = peers;
        self
    }

    /// The table contacts are recorded in.
    pub(crate) fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// The header of a message this node sends, stamped now.
    pub(crate) fn header(&self) -> proto::Header {
        proto::Header {
            cluster_id: self.cluster.to_string(),
            node_id: self.node.to_string(),
            addr: self.addr.as_ref().map(ToString::to_string).unwrap_or_default(),
            hlc: Some(self.hlc.now().into()),
        }
    }

    /// Checks a received header (form, cluster, clock), observes its stamp and
    /// records the contact.
    pub(crate) fn admit(
        &self,
        header: Option<proto::Header>,
        from: Contact<'_>,
    ) -> Result<Admitted, Refusal> {
        let h = PeerHeader::try_from(header).map_err(Refusal::Malformed)?;
        let seen_at = match from {
            Contact::Dialled(addr) => Some(addr),
            Contact::Inbound => h.addr.as_ref(),
        };
        if h.cluster_id != self.cluster.as_str() {
            warn!(peer = %h.node_id, addr = ?seen_at, theirs = %h.cluster_id, ours = %self.cluster, "refused peer of another cluster");
            return Err(Refusal::WrongCluster {
                node: h.node_id,
                ours: self.cluster.clone(),
                theirs: h.cluster_id,
            });
        }
        let offset = offset_ms(h.hlc.wall_ms, self.hlc.physical_now_ms());
        let observed = self.hlc.observe(h.hlc);
        let recorded_as = match from {
            Contact::Dialled(addr) => Some(addr.clone()),
            Contact::Inbound => h.addr.clone().filter(|a| Some(a) != self.addr.as_ref()),
        };
        if let Some(addr) = &recorded_as {
            let skewed = observed.is_err();
            self.peers.update(addr, |p| {
                p.id = Some(h.node_id.clone());
                p.last_contact = Some(Instant::now());
                p.clock_offset_ms = Some(offset);
                p.clock_skewed = skewed;
            });
        }
        if let Err(skew) = observed {
            warn!(peer = %h.node_id, addr = ?seen_at, offset_ms = skew.offset_ms, max_ms = skew.max_ms, "refused peer with a skewed clock");
            return Err(Refusal::ClockSkew { node: h.node_id, skew });
        }
        Ok(Admitted { header: h, recorded_as })
    }
}

impl Refusal {
    /// The status the service answers a refused request with: `invalid_argument`
    /// for a malformed header, `failed_precondition` otherwise.
    pub(crate) fn into_status(self) -> Status {
        match self {
            Refusal::Malformed(e) => e.into(),
            Refusal::WrongCluster { node, ours, theirs } => Status::failed_precondition(format!(
                "wrong cluster: node {node} belongs to cluster {theirs:?}, but this node belongs to cluster {:?}",
                ours.as_str()
            )),
            Refusal::ClockSkew { node, skew } => {
                Status::failed_precondition(format!("refused writes from node {node}: {skew}"))
            }
        }
    }

    /// The error the replicator reports for a refused answer from `peer`.
    pub(crate) fn into_error(self, peer: &PeerAddr) -> ReplicationError {
        match self {
            Refusal::Malformed(e) => ReplicationError::Peer { peer: peer.clone(), failure: e.into() },
            Refusal::WrongCluster { ours, theirs, .. } => {
                ReplicationError::WrongCluster { peer: peer.clone(), ours, theirs }
            }
            Refusal::ClockSkew { skew, .. } => ReplicationError::ClockSkew { peer: peer.clone(), skew },
        }
    }
}

impl From<InvalidMessage> for PeerFailure {
    fn from(e: InvalidMessage) -> Self {
        PeerFailure::Malformed { field: e.field, reason: e.reason }
    }
}

/// `remote - local`, in milliseconds.
fn offset_ms(remote_ms: u64, local_ms: u64) -> i64 {
    if remote_ms >= local_ms {
        i64::try_from(remote_ms - local_ms).unwrap_or(i64::MAX)
    } else {
        i64::try_from(local_ms - remote_ms).map_or(i64::MIN, |d| -d)
    }
}

#[cfg(test)]
mod tests {
    use spectrum_core::{Clock, ManualClock, SystemClock};

    use super::*;

    fn addr(s: &str) -> PeerAddr {
        s.parse().unwrap()
    }

    fn node(name: &str, cluster: &str, hlc: Arc<Hlc>) -> Handshake {
        Handshake::new(cluster.parse().unwrap(), name.parse().unwrap(), hlc)
    }

    #[test]
    fn offsets_are_signed_and_saturate() {
        assert_eq!(offset_ms(1_500, 1_000), 500);
        assert_eq!(offset_ms(1_000, 1_500), -500);
        assert_eq!(offset_ms(u64::MAX, 0), i64::MAX);
    }

    #[test]
    fn a_header_of_this_cluster_is_admitted_and_its_sender_recorded() {
        let a = node("a", "c", Arc::new(Hlc::system())).with_addr(addr("127.0.0.1:7001"));
        let b = node("b", "c", Arc::new(Hlc::system()));
        let admitted = b.admit(Some(a.header()), Contact::Inbound).unwrap();
        assert_eq!(admitted.header.node_id.as_str(), "a");
        assert_eq!(admitted.recorded_as, Some(addr("http://127.0.0.1:7001")));
        let status = b.peers().get(&addr("127.0.0.1:7001")).expect("recorded");
        assert_eq!(status.id, admitted.header.node_id.clone().into());
        assert!(status.last_contact.is_some() && !status.clock_skewed);
    }

    #[test]
    fn an_answer_is_recorded_under_the_dialled_address() {
        let a = node("a", "c", Arc::new(Hlc::system())).with_addr(addr("127.0.0.1:7001"));
        let b = node("b", "c", Arc::new(Hlc::system()));
        let dialled = addr("http://localhost:7001");
        let admitted = b.admit(Some(a.header()), Contact::Dialled(&dialled)).unwrap();
        assert_eq!(admitted.recorded_as, Some(dialled.clone()));
        assert!(b.peers().get(&dialled).is_some());
        assert!(b.peers().get(&addr("127.0.0.1:7001")).is_none());
    }

    #[test]
    fn a_request_without_an_address_or_from_this_node_itself_is_not_recorded() {
        let me = addr("127.0.0.1:7001");
        let anonymous = node("x", "c", Arc::new(Hlc::system()));
        let itself = node("a", "c", Arc::new(Hlc::system())).with_addr(me.clone());
        let a = node("a", "c", Arc::new(Hlc::system())).with_addr(me);
        for h in [anonymous.header(), itself.header()] {
            assert_eq!(a.admit(Some(h), Contact::Inbound).unwrap().recorded_as, None);
        }
        assert!(a.peers().snapshot().is_empty());
    }

    #[test]
    fn another_cluster_is_refused_before_the_clock_is_touched() {
        let ours = Arc::new(Hlc::new(Arc::new(ManualClock::new(1_000))));
        let a = node("a", "c", ours.clone());
        let far_ahead = Arc::new(Hlc::new(Arc::new(ManualClock::new(1_000_000))));
        let x = node("x", "other", far_ahead).with_addr(addr("127.0.0.1:7009"));
        let refusal = a.admit(Some(x.header()), Contact::Inbound).unwrap_err();
        assert!(matches!(refusal, Refusal::WrongCluster { .. }), "{refusal:?}");
        assert!(ours.now().wall_ms < 1_000_000, "the stamp was not observed");
        assert!(a.peers().snapshot().is_empty());
        let status = refusal.into_status();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().starts_with("wrong cluster:"), "{}", status.message());
    }

    #[test]
    fn a_sender_whose_clock_runs_ahead_is_refused_but_flagged() {
        let a = node("a", "c", Arc::new(Hlc::system()));
        let ahead = Arc::new(ManualClock::new(SystemClock.now_ms() + 60_000));
        let s = node("s", "c", Arc::new(Hlc::new(ahead))).with_addr(addr("127.0.0.1:7002"));
        let refusal = a.admit(Some(s.header()), Contact::Inbound).unwrap_err();
        let flagged = a.peers().get(&addr("127.0.0.1:7002")).expect("flagged");
        assert!(flagged.clock_skewed && flagged.clock_offset_ms.unwrap() > 50_000, "{flagged:?}");
        let err = refusal.into_error(&addr("127.0.0.1:7002"));
        assert!(matches!(err, ReplicationError::ClockSkew { .. }), "{err}");
    }

    #[test]
    fn a_malformed_header_is_invalid_argument_for_the_service_and_malformed_for_the_replicator() {
        let a = node("a", "c", Arc::new(Hlc::system()));
        let bad_addr =
            proto::Header { addr: "not an address".into(), ..node("b", "c", a.hlc.clone()).header() };
        let refusal = a.admit(Some(bad_addr), Contact::Inbound).unwrap_err();
        assert_eq!(refusal.into_status().code(), tonic::Code::InvalidArgument);
        let peer = addr("127.0.0.1:7003");
        let err = a.admit(None, Contact::Dialled(&peer)).unwrap_err().into_error(&peer);
        assert!(
            matches!(&err, ReplicationError::Peer { failure: PeerFailure::Malformed { field, .. }, .. } if field == "header"),
            "{err}"
        );
        assert!(a.peers().snapshot().is_empty());
    }
}
