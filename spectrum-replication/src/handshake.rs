//! The handshake every replication message carries, written once for both sides.
//!
//! Each request and each answer starts with a header: the sender's cluster, node
//! id, the origin its store writes under, address, HLC stamp and physical send
//! time ([`Handshake::header`]); an
//! answer also echoes when its request was sent and received
//! ([`Handshake::answer`]). Before anything else in a message is looked at, the
//! receiver [admits](Handshake::admit) the header:
//!
//! 1. it must be well formed (a malformed one is [`Refusal::Malformed`]);
//! 2. the sender must belong to this cluster ([`Refusal::WrongCluster`]);
//! 3. the sender's physical clock offset is measured: over the round trip for an
//!    answer (NTP-style, with its uncertainty), one way for a request, and
//!    recorded in the [`PeerTable`];
//! 4. a sender whose clock is certainly more than the maximum offset *ahead* is
//!    [`Refusal::ClockSkew`], unless this node's own clock is the outlier (a
//!    majority of its peers are far off, see [`ClockCheck::outlier`]): a node that is
//!    merely behind must take its peers' data to converge. Otherwise the sender's
//!    HLC stamp is observed, so this node's clock moves past it.
//!
//! Offsets are measured on physical clocks, never on HLC stamps: a node's HLC
//! follows the cluster (and a restarted node's follows its saved high-water
//! mark), so it says nothing about whether its own clock is right.
//!
//! A refusal for clock skew carries, in its metadata, when the request was sent
//! and received, so the refused caller measures the offset over the round trip
//! too ([`Handshake::note_refusal`]): a node running far ahead learns it at its
//! first exchange, and is fenced before it takes a write no peer would accept.
//!
//! The contact (id, time, offset, skew) is recorded once the cluster matches,
//! skewed or not, so a skewed peer shows up flagged. The service admits requests
//! ([`Contact::Inbound`]), the replicator admits answers ([`Contact::Dialled`]);
//! each turns a [`Refusal`] into its own error.

use std::sync::Arc;
use std::time::Instant;

use spectrum_core::{ClockOffset, ClockSkew, ClusterId, Hlc, NodeId, PeerAddr, Timestamp};
use tonic::Status;
use tracing::{debug, warn};

use crate::clock::{ClockCheck, OFFSET_FRESH};
use crate::error::{PeerFailure, ReplicationError};
use crate::log_limit::{LogLimiter, REPEAT_EVERY};
use crate::origin::Origin;
use crate::peers::PeerTable;
use crate::proto;
use crate::wire::{Echo, InvalidMessage, PeerHeader};

/// Metadata of a clock-skew refusal: the refused request's `sent_ms`.
const REFUSAL_SENT_MS: &str = "spectrum-echo-sent-ms";
/// Metadata of a clock-skew refusal: when the refuser received the request.
const REFUSAL_RECEIVED_MS: &str = "spectrum-echo-received-ms";

/// This node's side of the handshake: what it says about itself, and where it
/// records whom it heard from.
#[derive(Debug, Clone)]
pub(crate) struct Handshake {
    cluster: ClusterId,
    /// The origin this node's store writes under (its node is the sender).
    origin: Origin,
    /// The address this node is reached at, when it serves one.
    addr: Option<PeerAddr>,
    hlc: Arc<Hlc>,
    peers: PeerTable,
    /// Holds back repeats of a refused peer's warning.
    logged: Arc<LogLimiter>,
    /// Whether a sender whose hybrid clock runs far ahead is refused (see
    /// [`admit`](Self::admit)): where stamps order writes (last-writer-wins).
    refuse_hybrid_ahead: bool,
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
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    /// The validated header.
    pub(crate) header: PeerHeader,
    /// The address the contact was recorded under, if any.
    pub(crate) recorded_as: Option<PeerAddr>,
    /// This node's physical clock when the header arrived.
    pub(crate) received_ms: u64,
}

/// Why a header was refused; nothing in its message may be merged.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The header is missing or malformed.
    Malformed(InvalidMessage),
    /// The sender belongs to another cluster.
    WrongCluster { node: NodeId, ours: ClusterId, theirs: String },
    /// The sender's clock is too far ahead (and this node's is not the outlier);
    /// `echo` is when its request was sent (its clock) and received (ours).
    ClockSkew { node: NodeId, skew: ClockSkew, echo: Option<Echo> },
}

impl Handshake {
    /// The handshake of the node whose store writes under `origin`, of
    /// `cluster`, stamping with `hlc`.
    pub(crate) fn new(cluster: ClusterId, origin: Origin, hlc: Arc<Hlc>) -> Self {
        Self {
            cluster,
            origin,
            addr: None,
            hlc,
            peers: PeerTable::new(),
            logged: Arc::default(),
            refuse_hybrid_ahead: true,
        }
    }

    /// Takes a sender whose wall clock is in bounds whatever its hybrid clock
    /// says: Raft mode, where the log, not stamps, orders writes, and a node
    /// refused for a stamp would only be a voter fewer.
    pub(crate) fn taking_hybrid_stamps_ahead(mut self) -> Self {
        self.refuse_hybrid_ahead = false;
        self
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

    /// The header of a request this node sends, stamped now.
    pub(crate) fn header(&self) -> proto::Header {
        proto::Header {
            cluster_id: self.cluster.to_string(),
            node_id: self.origin.node().to_string(),
            origin: self.origin.to_string(),
            addr: self.addr.as_ref().map(ToString::to_string).unwrap_or_default(),
            hlc: Some(self.hlc.now().into()),
            sent_ms: self.hlc.physical_now_ms(),
            ..proto::Header::default()
        }
    }

    /// The header of the answer to the `request` admitted: stamped now, and
    /// echoing when the request was sent and received, so its sender can measure
    /// the clock offset over the round trip.
    pub(crate) fn answer(&self, request: &Admitted) -> proto::Header {
        proto::Header {
            echo_sent_ms: request.header.sent_ms.unwrap_or(0),
            echo_received_ms: if request.header.sent_ms.is_some() { request.received_ms } else { 0 },
            ..self.header()
        }
    }

    /// Measures the clock of the peer at `addr` from its refusal of this node's
    /// request for clock skew (`status`), which says when the request was sent
    /// and received: the refusal is the answer's half of the round trip. Any
    /// other status changes nothing.
    pub(crate) fn note_refusal(&self, addr: &PeerAddr, status: &Status) {
        let read = |key: &str| status.metadata().get(key)?.to_str().ok()?.parse::<u64>().ok();
        let (Some(sent), Some(received)) = (read(REFUSAL_SENT_MS), read(REFUSAL_RECEIVED_MS)) else {
            return;
        };
        let offset = ClockOffset::round_trip(sent, received, received, self.hlc.physical_now_ms());
        let skewed = offset.beyond(self.hlc.max_offset());
        let now = Instant::now();
        self.peers.update(addr, |p| {
            p.clock_offset_ms = Some(offset.offset_ms);
            p.clock_uncertainty_ms = Some(offset.uncertainty_ms);
            p.clock_measured_at = Some(now);
            p.clock_skewed = skewed;
        });
        debug!(peer = %addr, %offset, "refused for clock skew; measured the peer's clock");
    }

    /// This node's clock against its peers', as recorded so far.
    pub(crate) fn clock_check(&self) -> ClockCheck {
        ClockCheck::of(&self.peers.with_known(), self.hlc.max_offset(), Instant::now())
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
            if let Some(held_back) =
                self.logged.admit(&format!("cluster|{}|{:?}", h.node_id, seen_at), Instant::now())
            {
                warn!(peer = %h.node_id, addr = ?seen_at, theirs = %h.cluster_id, ours = %self.cluster, held_back, repeats_logged_every_s = REPEAT_EVERY.as_secs(), "refused peer of another cluster");
            }
            return Err(Refusal::WrongCluster {
                node: h.node_id,
                ours: self.cluster.clone(),
                theirs: h.cluster_id,
            });
        }
        let received_ms = self.hlc.physical_now_ms();
        let offset = match (from, h.echo, h.sent_ms) {
            (Contact::Dialled(_), Some(echo), Some(sent)) => {
                ClockOffset::round_trip(echo.sent_ms, echo.received_ms, sent, received_ms)
            }
            (_, _, Some(sent)) => ClockOffset::one_way(sent, received_ms),
            // A sender that predates `sent_ms`: its HLC is the best guess.
            (_, _, None) => ClockOffset::one_way(h.hlc.wall_ms, received_ms),
        };
        let max = self.hlc.max_offset();
        let recorded_as = match from {
            Contact::Dialled(addr) => Some(addr.clone()),
            Contact::Inbound => h.addr.clone().filter(|a| Some(a) != self.addr.as_ref()),
        };
        if let Some(addr) = &recorded_as {
            let now = Instant::now();
            self.peers.update(addr, |p| {
                p.id = Some(h.node_id.clone());
                p.last_contact = Some(now);
                // A one-way estimate does not replace a fresh round-trip measurement.
                let keep = !offset.round_trip
                    && p.clock_uncertainty_ms.is_some()
                    && p.clock_measured_at
                        .is_some_and(|at| now.saturating_duration_since(at) <= OFFSET_FRESH);
                if !keep {
                    p.clock_offset_ms = Some(offset.offset_ms);
                    p.clock_uncertainty_ms = offset.round_trip.then_some(offset.uncertainty_ms);
                    p.clock_measured_at = Some(now);
                    p.clock_skewed = offset.beyond(max);
                }
            });
        }
        let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        // A sender whose wall clock is right may still carry a hybrid clock
        // far ahead (its wall clock ran ahead earlier: a hybrid clock never
        // goes back). Observed, it would drag this node's, and then every
        // node's, stamps that far ahead, as a wall clock ahead would: refused
        // the same way. Three times the maximum: a sender takes writes again
        // once its lead over its own wall clock is at most twice the maximum
        // (`ClockCheck::hlc_ahead`), and its wall clock may be up to the
        // maximum ahead of this node's; refused beyond that, it could never
        // learn what it missed (an operator's removal) before writing.
        let hlc_lead = h.hlc.wall_ms.saturating_sub(received_ms);
        let hlc_ahead = self.refuse_hybrid_ahead && hlc_lead > max_ms.saturating_mul(3);
        if offset.ahead_beyond(max) || hlc_ahead {
            let check = self.clock_check();
            if !check.outlier() {
                let skew = if offset.ahead_beyond(max) {
                    ClockSkew {
                        remote: Timestamp::new(
                            received_ms.saturating_add(offset.offset_ms.unsigned_abs()),
                            0,
                        ),
                        local_ms: received_ms,
                        offset_ms: offset.offset_ms.unsigned_abs(),
                        max_ms,
                    }
                } else {
                    ClockSkew {
                        remote: h.hlc,
                        local_ms: received_ms,
                        offset_ms: hlc_lead,
                        max_ms: max_ms.saturating_mul(3),
                    }
                };
                if let Some(held_back) =
                    self.logged.admit(&format!("skew|{}|{:?}", h.node_id, seen_at), Instant::now())
                {
                    if offset.ahead_beyond(max) {
                        warn!(peer = %h.node_id, addr = ?seen_at, %offset, max_ms = skew.max_ms, held_back, repeats_logged_every_s = REPEAT_EVERY.as_secs(), "refused peer with a clock too far ahead");
                    } else {
                        warn!(peer = %h.node_id, addr = ?seen_at, %offset, hybrid_lead_ms = hlc_lead, max_ms = skew.max_ms, held_back, repeats_logged_every_s = REPEAT_EVERY.as_secs(), "refused peer whose hybrid clock runs too far ahead (its wall clock ran ahead earlier)");
                    }
                }
                let echo = h.sent_ms.map(|sent_ms| Echo { sent_ms, received_ms });
                return Err(Refusal::ClockSkew { node: h.node_id, skew, echo });
            }
            debug!(peer = %h.node_id, %offset, %check, "admitting a peer far ahead: this node's clock is the outlier");
        }
        self.hlc.observe_unchecked(h.hlc);
        Ok(Admitted { header: h, recorded_as, received_ms })
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
            Refusal::ClockSkew { node, skew, echo } => {
                let mut status =
                    Status::failed_precondition(format!("refused writes from node {node}: {skew}"));
                if let Some(echo) = echo {
                    let metadata = status.metadata_mut();
                    metadata.insert(REFUSAL_SENT_MS, echo.sent_ms.into());
                    metadata.insert(REFUSAL_RECEIVED_MS, echo.received_ms.into());
                }
                status
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
    fn a_sender_whose_clock_runs_ahead_of_the_majority_is_refused_but_flagged() {
        let a = node("a", "c", Arc::new(Hlc::system()));
        let c = node("c", "c", Arc::new(Hlc::system())).with_addr(addr("127.0.0.1:7004"));
        a.admit(Some(c.header()), Contact::Inbound).unwrap();
        let ahead = Arc::new(ManualClock::new(SystemClock.now_ms() + 60_000));
        let s = node("s", "c", Arc::new(Hlc::new(ahead))).with_addr(addr("127.0.0.1:7002"));
        let refusal = a.admit(Some(s.header()), Contact::Inbound).unwrap_err();
        let flagged = a.peers().get(&addr("127.0.0.1:7002")).expect("flagged");
        assert!(flagged.clock_skewed && flagged.clock_offset_ms.unwrap() > 50_000, "{flagged:?}");
        assert!(a.hlc.now().wall_ms < SystemClock.now_ms() + 50_000, "its stamp was not observed");
        let err = refusal.into_error(&addr("127.0.0.1:7002"));
        assert!(matches!(err, ReplicationError::ClockSkew { .. }), "{err}");
    }

    #[test]
    fn a_caller_refused_for_running_ahead_measures_its_clock_from_the_refusal() {
        let a = node("a", "c", Arc::new(Hlc::system()));
        let c = node("c", "c", Arc::new(Hlc::system())).with_addr(addr("127.0.0.1:7005"));
        a.admit(Some(c.header()), Contact::Inbound).unwrap();
        let ahead = Arc::new(ManualClock::new(SystemClock.now_ms() + 60_000));
        let s = node("s", "c", Arc::new(Hlc::new(ahead))).with_addr(addr("127.0.0.1:7006"));
        let status = a.admit(Some(s.header()), Contact::Inbound).unwrap_err().into_status();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let dialled = addr("127.0.0.1:7007");
        s.note_refusal(&dialled, &status);
        let measured = s.peers().get(&dialled).expect("measured from the refusal");
        let offset = measured.clock_offset_ms.unwrap();
        assert!((-60_100..=-59_900).contains(&offset) && measured.clock_skewed, "{measured:?}");
        assert!(measured.clock_uncertainty_ms.is_some());
        assert!(s.clock_check().fenced(), "its one peer says it is far off: no writes");
        // Any other failure measures nothing.
        s.note_refusal(&addr("127.0.0.1:7008"), &Status::unavailable("down"));
        assert!(s.peers().get(&addr("127.0.0.1:7008")).is_none());
    }

    #[test]
    fn a_node_behind_the_majority_admits_its_peers_and_its_clock_follows_theirs() {
        let behind = Arc::new(Hlc::new(Arc::new(ManualClock::new(SystemClock.now_ms() - 600_000))));
        let me = node("me", "c", behind.clone()).with_addr(addr("127.0.0.1:7010"));
        let p1 = node("p1", "c", Arc::new(Hlc::system())).with_addr(addr("127.0.0.1:7011"));
        let p2 = node("p2", "c", Arc::new(Hlc::system())).with_addr(addr("127.0.0.1:7012"));
        // It knows two peers (its seeds); the first heard from might be the wrong one.
        me.peers().update(&addr("127.0.0.1:7012"), |_| {});
        assert!(me.admit(Some(p1.header()), Contact::Inbound).is_err());
        assert!(!me.clock_check().outlier() && me.clock_check().fenced());
        // Once most peers disagree with this node, it is the outlier: it takes their data.
        let admitted = me.admit(Some(p2.header()), Contact::Inbound).unwrap();
        assert!(me.clock_check().outlier(), "{}", me.clock_check());
        assert!(behind.now() > admitted.header.hlc, "the HLC moved past the peer's stamp");
        assert!(me.admit(Some(p1.header()), Contact::Inbound).is_ok());
        // Its own messages carry its physical clock: the peers see it behind, and admit it.
        let seen = p1.admit(Some(me.header()), Contact::Inbound).unwrap();
        let status = p1.peers().get(&addr("127.0.0.1:7010")).unwrap();
        assert!(status.clock_skewed && status.clock_offset_ms.unwrap() < -590_000, "{status:?}");
        assert_eq!(seen.header.node_id.as_str(), "me");
    }

    #[test]
    fn an_answer_measures_the_offset_over_the_round_trip() {
        let caller = node("a", "c", Arc::new(Hlc::system()));
        let ahead = Arc::new(Hlc::new(Arc::new(ManualClock::new(SystemClock.now_ms() + 2_000))));
        let answerer = node("b", "c", ahead);
        let request = answerer.admit(Some(caller.header()), Contact::Inbound).unwrap();
        let dialled = addr("127.0.0.1:7020");
        // One peer, and it is far ahead: the caller cannot tell whose clock is wrong.
        caller.admit(Some(answerer.answer(&request)), Contact::Dialled(&dialled)).unwrap();
        let status = caller.peers().get(&dialled).unwrap();
        let (offset, uncertainty) = (status.clock_offset_ms.unwrap(), status.clock_uncertainty_ms.unwrap());
        assert!((1_900..=2_100).contains(&offset), "{status:?}");
        assert!(uncertainty < 100, "{status:?}");
        assert!(status.clock_skewed);
        // A later one-way estimate does not replace the round-trip measurement.
        caller.admit(Some(answerer.header()), Contact::Dialled(&dialled)).unwrap();
        assert_eq!(caller.peers().get(&dialled).unwrap().clock_uncertainty_ms, Some(uncertainty));
    }

    /// A node restarted with its wall clock right but its saved hybrid clock
    /// ten minutes ahead takes its peers; they refuse its stamps (which would
    /// drag theirs ahead) in last-writer-wins mode, and take them in Raft mode.
    #[test]
    fn a_restarted_node_whose_saved_clock_is_ahead_admits_peers_behind_it_and_only_raft_peers_admit_it() {
        let hlc = Arc::new(Hlc::system());
        hlc.restore(Timestamp::new(SystemClock.now_ms() + 600_000, 0));
        let restarted = node("r", "c", hlc).with_addr(addr("127.0.0.1:7030"));
        let p1 = node("p1", "c", Arc::new(Hlc::system())).with_addr(addr("127.0.0.1:7031"));
        let p2 = node("p2", "c", Arc::new(Hlc::system())).with_addr(addr("127.0.0.1:7032"));
        for p in [&p1, &p2] {
            restarted.admit(Some(p.header()), Contact::Inbound).unwrap();
            match p.admit(Some(restarted.header()), Contact::Inbound) {
                Err(Refusal::ClockSkew { skew, .. }) => assert!(skew.offset_ms > 590_000, "{skew}"),
                other => panic!("admitted a hybrid clock ten minutes ahead: {other:?}"),
            }
            assert!(p.hlc.last().wall_ms < SystemClock.now_ms() + 60_000, "its stamp was not observed");
        }
        assert!(!restarted.clock_check().fenced() && !restarted.clock_check().outlier());
        assert!(restarted.peers().snapshot().iter().all(|p| !p.clock_skewed));
        let raft = node("p3", "c", Arc::new(Hlc::system())).taking_hybrid_stamps_ahead();
        raft.admit(Some(restarted.header()), Contact::Inbound).unwrap();
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
