//! [`ClockCheck`]: is this node's clock the one that is wrong?
//!
//! Each exchange with a peer measures the peer's physical clock offset from this
//! node's (round-trip corrected when this node dialled, one way when the peer
//! did; see [`ClockOffset`](spectrum_core::ClockOffset)) and records it in the
//! [`PeerTable`](crate::PeerTable). One peer far off says nothing about who is
//! wrong; a majority of peers far off does: then this node is the
//! [outlier](ClockCheck::outlier), and it accepts its peers' data (its HLC moves
//! forward to their stamps), so it converges. A node that is not the outlier
//! refuses only peers whose clocks are too far *ahead* (their stamps would drag
//! every clock forward); peers behind are harmless.
//!
//! Writes are held to a stricter rule: a node is [fenced](ClockCheck::fenced),
//! refusing writes and reporting not ready, as soon as more of its freshly
//! measured peers are far off than agree with it. So a node behind stops taking
//! writes on the first far measurement, before it could stamp a write older than
//! what its peers already hold; and it recovers by itself once its clock is right
//! (the next exchanges measure it in bounds).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use spectrum_core::{NodeId, PeerAddr};

use crate::replicator::PeerStatus;

/// How long a measured offset counts towards a [`ClockCheck`]: older ones (from a
/// peer not heard from since) say nothing about the clocks now.
pub const OFFSET_FRESH: Duration = Duration::from_secs(30);

/// This node's clock against its peers', from the offsets recorded in its peer
/// table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClockCheck {
    /// The peers this node knows of (by id once they have answered, by address
    /// before).
    pub peers: usize,
    /// The peers whose clocks, freshly measured, are certainly more than the
    /// maximum away from this node's.
    pub far: usize,
    /// The peers whose clocks, freshly measured, are not.
    pub agreeing: usize,
    /// The median offset of those far peers, in milliseconds (positive: they are
    /// ahead, this node is behind), and its uncertainty.
    pub offset_ms: Option<(i64, u64)>,
    /// The largest offset tolerated, in milliseconds.
    pub max_ms: u64,
    /// How far this node's hybrid clock runs ahead of its wall clock, in
    /// milliseconds (see [`with_hlc_lead`](Self::with_hlc_lead)); 0 unless set.
    pub hlc_lead_ms: u64,
}

impl ClockCheck {
    /// Judges `peers` (as [`Replicator::peers`](crate::Replicator::peers) or
    /// [`PeerTable::snapshot`](crate::PeerTable::snapshot) give them) against
    /// `max`, counting offsets measured since `now - OFFSET_FRESH`. Entries that
    /// answered under the same id are one peer, judged by its latest measurement.
    pub fn of(peers: &[PeerStatus], max: Duration, now: Instant) -> Self {
        let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Key<'a> {
            Id(&'a NodeId),
            Addr(&'a PeerAddr),
        }
        let mut latest: BTreeMap<Key<'_>, Option<&PeerStatus>> = BTreeMap::new();
        for p in peers {
            let key = p.id.as_ref().map_or(Key::Addr(&p.addr), Key::Id);
            let fresh = p.clock_measured_at.filter(|at| now.saturating_duration_since(*at) <= OFFSET_FRESH);
            let slot = latest.entry(key).or_insert(None);
            if fresh.is_some() && slot.is_none_or(|q| q.clock_measured_at < p.clock_measured_at) {
                *slot = Some(p);
            }
        }
        let measured: Vec<(i64, u64)> = latest
            .values()
            .flatten()
            .filter_map(|p| Some((p.clock_offset_ms?, p.clock_uncertainty_ms.unwrap_or(0))))
            .collect();
        let mut far: Vec<(i64, u64)> = measured
            .iter()
            .copied()
            .filter(|(offset, uncertainty)| offset.unsigned_abs().saturating_sub(*uncertainty) > max_ms)
            .collect();
        far.sort_unstable();
        let offset_ms = far.get(far.len() / 2).copied();
        let agreeing = measured.len() - far.len();
        Self { peers: latest.len(), far: far.len(), agreeing, offset_ms, max_ms, hlc_lead_ms: 0 }
    }

    /// The check with this node's hybrid clock `lead_ms` ahead of its wall
    /// clock. A hybrid clock never goes back (nor does the high-water mark a
    /// store restores it to), so a node whose wall clock ran ahead, once
    /// corrected, still stamps writes that far ahead: each would outlast the
    /// cluster's newer writes to its key, and an operator's later removal of
    /// it. Beyond twice the maximum offset (the most two clocks in bounds of
    /// the majority can differ) it is [fenced](Self::fenced) until its wall
    /// clock catches up, as a CockroachDB node waits out its persisted clock
    /// upper bound before it serves.
    #[must_use]
    pub fn with_hlc_lead(mut self, lead_ms: u64) -> Self {
        self.hlc_lead_ms = lead_ms;
        self
    }

    /// Whether the hybrid clock runs too far ahead of the wall clock (see
    /// [`with_hlc_lead`](Self::with_hlc_lead)).
    pub fn hlc_ahead(&self) -> bool {
        self.hlc_lead_ms > self.max_ms.saturating_mul(2)
    }

    /// Whether this node's clock is the outlier: more than half of the peers it
    /// knows (measured or not) are certainly more than the maximum away. An
    /// outlier accepts peers whose clocks are far ahead of its own.
    pub fn outlier(&self) -> bool {
        self.far > 0 && self.far * 2 > self.peers
    }

    /// Whether this node must refuse writes and report not ready: more of its
    /// freshly measured peers are far off than agree with it (this node counts
    /// on its own side, so a lone dissenter among three does not fence the other
    /// two). With a single peer, far off, both are fenced: neither can tell
    /// whose clock is wrong, and neither writes.
    ///
    /// A node whose hybrid clock runs too far ahead is fenced too
    /// ([`hlc_ahead`](Self::hlc_ahead)).
    pub fn fenced(&self) -> bool {
        self.far > self.agreeing || self.hlc_ahead()
    }
}

impl fmt::Display for ClockCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset_ms {
            Some((offset, uncertainty)) => {
                let (by, way) = if offset > 0 { (offset, "behind") } else { (-offset, "ahead of") };
                write!(
                    f,
                    "this node's clock is {by} ms (± {uncertainty} ms) {way} {} of its {} peers; at most {} ms is allowed",
                    self.far, self.peers, self.max_ms
                )
            }
            None if self.hlc_ahead() => write!(
                f,
                "this node's hybrid clock is {} ms ahead of its wall clock (the wall clock ran ahead \
                 earlier, and a hybrid clock never goes back): it takes writes again in about {} s, once \
                 its wall clock has caught up to within {} ms",
                self.hlc_lead_ms,
                (self.hlc_lead_ms - self.max_ms.saturating_mul(2)).div_ceil(1000),
                self.max_ms.saturating_mul(2)
            ),
            None => write!(f, "this node's clock is within {} ms of its {} peers", self.max_ms, self.peers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::blank;

    const MAX: Duration = Duration::from_millis(500);

    fn peer(id: &str, port: u16, offset: Option<(i64, u64)>, at: Instant) -> PeerStatus {
        let mut p = blank(format!("127.0.0.1:{port}").parse().unwrap());
        p.id = Some(id.parse().unwrap());
        if let Some((o, u)) = offset {
            p.clock_offset_ms = Some(o);
            p.clock_uncertainty_ms = Some(u);
            p.clock_measured_at = Some(at);
        }
        p
    }

    #[test]
    fn a_hybrid_clock_ahead_of_the_wall_clock_by_more_than_twice_the_maximum_fences_saying_for_how_long() {
        let now = Instant::now();
        let peers = [peer("a", 1, Some((3, 1)), now), peer("b", 2, Some((-2, 1)), now)];
        let within = ClockCheck::of(&peers, MAX, now).with_hlc_lead(1_000);
        assert!(!within.fenced(), "{within}");
        let ahead = ClockCheck::of(&peers, MAX, now).with_hlc_lead(600_000);
        assert!(ahead.fenced() && !ahead.outlier(), "{ahead:?}");
        let said = ahead.to_string();
        assert!(said.contains("hybrid clock is 600000 ms ahead of its wall clock"), "{said}");
        assert!(said.contains("in about 599 s"), "{said}");
    }

    #[test]
    fn a_node_behind_both_of_its_peers_is_fenced_and_says_by_how_much() {
        let now = Instant::now();
        let check = ClockCheck::of(
            &[peer("a", 1, Some((600_000, 3)), now), peer("b", 2, Some((600_010, 5)), now)],
            MAX,
            now,
        );
        assert!(check.fenced() && check.outlier(), "{check:?}");
        let said = check.to_string();
        assert!(said.contains("600010 ms (± 5 ms) behind 2 of its 2 peers"), "{said}");
    }

    #[test]
    fn one_skewed_peer_among_two_does_not_fence_the_node() {
        let now = Instant::now();
        let check = ClockCheck::of(
            &[peer("a", 1, Some((-600_000, 3)), now), peer("b", 2, Some((20, 5)), now)],
            MAX,
            now,
        );
        assert_eq!((check.peers, check.far, check.agreeing), (2, 1, 1));
        assert!(!check.fenced() && !check.outlier());
    }

    #[test]
    fn one_far_peer_fences_writes_at_once_but_makes_no_outlier_until_most_peers_agree() {
        let now = Instant::now();
        let unmeasured = blank("127.0.0.1:3".parse().unwrap());
        let check = ClockCheck::of(&[peer("a", 1, Some((600_000, 3)), now), unmeasured], MAX, now);
        assert!(check.fenced() && !check.outlier(), "{check:?}");
    }

    #[test]
    fn stale_offsets_are_ignored() {
        let now = Instant::now();
        if let Some(stale) = now.checked_sub(OFFSET_FRESH * 2) {
            let check = ClockCheck::of(&[peer("a", 1, Some((600_000, 3)), stale)], MAX, now);
            assert!(!check.fenced() && !check.outlier(), "{check:?}");
        }
    }

    #[test]
    fn one_peer_under_two_addresses_counts_once_by_its_latest_offset() {
        let now = Instant::now();
        let earlier = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let check = ClockCheck::of(
            &[
                peer("a", 1, Some((600_000, 3)), earlier),
                peer("a", 2, Some((10, 3)), now),
                peer("b", 3, Some((5, 1)), now),
            ],
            MAX,
            now,
        );
        assert_eq!((check.peers, check.far, check.agreeing), (2, 0, 2));
    }

    #[test]
    fn an_offset_within_its_uncertainty_of_the_maximum_is_not_far() {
        let now = Instant::now();
        let check = ClockCheck::of(&[peer("a", 1, Some((700, 300)), now)], MAX, now);
        assert_eq!(check.far, 0);
    }
}
