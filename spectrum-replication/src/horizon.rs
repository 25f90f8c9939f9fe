//! When tombstones may be collected: the tombstone horizon.
//!
//! A tombstone may be dropped once no member holds, and no member will ever
//! receive, a write it superseded. Three conditions give that:
//!
//! 1. every member has seen the tombstone (each member's digest covers it), so
//!    every member holds it or something newer for its key;
//! 2. every member has seen every write each member had made when the digests
//!    were read. A write still on its way somewhere (a delayed push) was then made
//!    before its origin's digest was read, so every member covers it and ignores
//!    it when it arrives; and a write made after its origin had seen the tombstone
//!    carries a greater stamp, so it is a new write, not a resurrection;
//! 3. every member has seen every write of a *retired* origin that any member has
//!    seen. Writes are numbered per store incarnation (see
//!    [`Origin`]), and a member's own digest vouches only for the
//!    origin its store writes under now: the writes of an earlier incarnation (a
//!    store lost with its disk), or of a node gone from the cluster, have no
//!    digest of their maker to check against. They make no new writes, so every
//!    member showing the same entry for them is the settled state; a write of
//!    theirs that no member has seen died with its store.
//!
//! Members are nodes; the digests are keyed by the origin each member's store
//! writes under now (the replicator learns it from the member's messages), which
//! is how a member's acknowledgement of its own writes is read through its
//! current incarnation.
//!
//! [`tombstone_horizon`] checks the second and third conditions and returns the
//! vector for the first.
//!
//! # A member that lost its disk
//!
//! A digest vouches for the store it was read from. A member that loses its
//! disk comes back with an empty store under a new incarnation: its real digest
//! shrank, and a peer that has not heard from the new store yet still holds the
//! old one, which may cover a tombstone. Collecting on its strength is sound for
//! what the digest says (the old store did see the tombstone, and its writes
//! are settled under condition 3), but the old store also carried a promise
//! that the new one lost with the disk: its clock had moved past every stamp it
//! saw, and it kept that high-water mark, so every later write of that member
//! was stamped above the tombstone. Were the new store to write the key with an
//! earlier stamp (its clock behind, within the allowed offset), replicas that
//! had collected the tombstone would show the write and replicas still holding
//! it would show the key deleted, for good.
//!
//! Peers cannot close this from the collecting side: nothing tells them a
//! member has a new store until it reports, and its first write may be made
//! (and held up in a partition) before then. Catching up first does not close
//! it either: the peer it catches up from may not have seen the tombstone yet,
//! or the tombstone may be the lost store's own write, still on its way. What
//! closes it is time: a store incarnation makes its first write only once
//! [`FirstWrite`] is due, twice the maximum clock offset after it began. Every
//! stamp issued before it began, by any node whose clock is within bounds
//! (others are fenced and write nothing), is below the stamps it issues then; a
//! tombstone its predecessor saw was issued before it began; so its writes win
//! over every such tombstone wherever it is still held, and replicas agree
//! whether they collected it or not. (A tombstone collected on the strength of
//! the new store's own digest was seen by it, and its clock moved past it.)
//!
//! The idea is CockroachDB's (its `server.clock.persist_upper_bound_interval`
//! setting): a node persists an upper bound of its clock and, when it starts,
//! waits until its clock has passed it, so it never issues a timestamp below
//! one it issued before. A lost disk takes the bound with it, so the wait is
//! for the clock uncertainty instead, as in Spanner's commit wait. A node pays
//! it once per store incarnation, before its first write; a restart over the
//! same store does not (the store keeps its clock's high-water mark).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use spectrum_core::Hlc;

use crate::origin::Origin;
use crate::record::VersionVector;

/// When a store incarnation that has not written yet may make its first
/// write: twice the maximum clock offset plus one millisecond after it began,
/// on its own physical clock (1,001 ms with the default 500 ms offset). See
/// [the module docs](self#a-member-that-lost-its-disk) for why.
///
/// Whoever writes to a store (a node's joiner, a simulated node) takes one
/// with [`from_now`](Self::from_now) when it finds the store's own origin has
/// no writes yet, and [`wait`](Self::wait)s for it before the first write.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use spectrum_core::{Hlc, ManualClock};
/// use spectrum_replication::horizon::FirstWrite;
///
/// let clock = Arc::new(ManualClock::new(10_000));
/// let hlc = Hlc::new(clock.clone()); // 500 ms maximum offset
/// let first = FirstWrite::from_now(&hlc);
/// assert_eq!(first.not_before_ms(), 11_001);
/// assert!(!first.due(&hlc));
/// clock.advance(Duration::from_millis(1_001));
/// assert!(first.due(&hlc));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstWrite {
    not_before_ms: u64,
}

/// Longest single sleep of [`FirstWrite::wait`], so a clock that jumps is
/// re-read soon.
const FIRST_WRITE_POLL: Duration = Duration::from_millis(100);

impl FirstWrite {
    /// For an incarnation beginning now on `hlc`'s physical clock.
    pub fn from_now(hlc: &Hlc) -> Self {
        let margin = hlc.max_offset().saturating_mul(2).saturating_add(Duration::from_millis(1));
        let margin_ms = u64::try_from(margin.as_millis()).unwrap_or(u64::MAX);
        Self { not_before_ms: hlc.physical_now_ms().saturating_add(margin_ms) }
    }

    /// The physical time (milliseconds since the Unix epoch) the first write
    /// waits for.
    pub fn not_before_ms(&self) -> u64 {
        self.not_before_ms
    }

    /// Whether a write stamped by `hlc` now would be stamped at or after
    /// [`not_before_ms`](Self::not_before_ms): its physical clock has reached
    /// it, or the clock has already observed a stamp that has.
    pub fn due(&self, hlc: &Hlc) -> bool {
        hlc.physical_now_ms().max(hlc.last().wall_ms) >= self.not_before_ms
    }

    /// Returns once [`due`](Self::due), sleeping (Tokio time) in steps of at most
    /// 100 ms. A physical clock that does not advance keeps it waiting: that
    /// node's stamps could not be trusted to follow anything.
    pub async fn wait(&self, hlc: &Hlc) {
        while !self.due(hlc) {
            let left = self.not_before_ms.saturating_sub(hlc.physical_now_ms()).max(1);
            tokio::time::sleep(Duration::from_millis(left).min(FIRST_WRITE_POLL)).await;
        }
    }
}

/// The vector to pass to
/// [`ConfigStore::collect_tombstones`](crate::ConfigStore::collect_tombstones),
/// given the latest digest of every current member (this node included), each
/// keyed by the origin its store writes under now, or `None` when collecting now
/// would be unsafe: no digests, some member has not yet seen a write another
/// member had made, or the members do not yet agree on what a retired origin
/// (one no member writes under now) wrote.
///
/// Digests may have been read at different times. A store's digest only grows,
/// so an older digest of a member's current store is a lower bound on what it
/// has seen. A digest of a store the member has since lost is not: the new
/// store starts empty. Such a digest is still sound to collect on, because the
/// new store's writes wait for [`FirstWrite`] (see
/// [the module docs](self#a-member-that-lost-its-disk)).
///
/// ```
/// use std::collections::BTreeMap;
/// use spectrum_replication::{Origin, VersionVector, horizon::tombstone_horizon};
///
/// let (a, b): (Origin, Origin) = ("a~0000000000000001".parse()?, "b~0000000000000001".parse()?);
/// let vv = |x: u64, y: u64| {
///     let mut v = VersionVector::default();
///     v.raise(&a, x);
///     v.raise(&b, y);
///     v
/// };
/// let mut digests = BTreeMap::new();
/// digests.insert(a.clone(), vv(5, 3));
/// digests.insert(b.clone(), vv(4, 3));
/// // b has not seen a:5 yet, and a made it: not safe.
/// assert_eq!(tombstone_horizon(&digests), None);
/// digests.insert(b.clone(), vv(5, 3));
/// assert_eq!(tombstone_horizon(&digests), Some(vv(5, 3)));
///
/// // a restarts on an empty disk, under a new origin: a's old writes are
/// // retired, and wait until every member has seen the same of them.
/// let a2: Origin = "a~0000000000000002".parse()?;
/// digests.remove(&a);
/// digests.insert(a2.clone(), vv(0, 3));
/// assert_eq!(tombstone_horizon(&digests), None);
/// digests.insert(a2, vv(5, 3));
/// assert_eq!(tombstone_horizon(&digests), Some(vv(5, 3)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tombstone_horizon(digests: &BTreeMap<Origin, VersionVector>) -> Option<VersionVector> {
    if digests.is_empty() {
        return None;
    }
    let origins: BTreeSet<&Origin> = digests.values().flat_map(|d| d.entries.keys()).collect();
    let mut horizon = VersionVector::default();
    let mut retired_settled = true;
    for origin in origins {
        let seen = digests.values().map(|d| d.get(origin));
        let (min, max) = seen.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
        if min > 0 {
            horizon.raise(origin, min);
        }
        if !digests.contains_key(origin) && min < max {
            retired_settled = false;
        }
    }
    let settled = digests.iter().all(|(member, d)| horizon.get(member) >= d.get(member));
    (settled && retired_settled).then_some(horizon)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spectrum_core::{ManualClock, Timestamp};

    use super::*;

    fn manual(ms: u64, max_offset_ms: u64) -> (Arc<ManualClock>, Arc<Hlc>) {
        let clock = Arc::new(ManualClock::new(ms));
        let hlc = Hlc::with_max_offset(clock.clone(), Duration::from_millis(max_offset_ms));
        (clock, Arc::new(hlc))
    }

    #[test]
    fn a_first_write_is_due_twice_the_maximum_offset_after_the_store_began() {
        let (clock, hlc) = manual(50_000, 200);
        let first = FirstWrite::from_now(&hlc);
        assert_eq!(first.not_before_ms(), 50_401);
        clock.set(50_400);
        assert!(!first.due(&hlc), "one millisecond short");
        clock.set(50_401);
        assert!(first.due(&hlc));
        assert!(hlc.now().wall_ms >= first.not_before_ms(), "the write is stamped at or after it");
    }

    #[test]
    fn a_first_write_is_due_once_the_clock_has_observed_a_stamp_past_it() {
        let (_clock, hlc) = manual(50_000, 500);
        let first = FirstWrite::from_now(&hlc);
        hlc.observe_unchecked(Timestamp::new(first.not_before_ms(), 0));
        assert!(first.due(&hlc));
        assert!(hlc.now() > Timestamp::new(first.not_before_ms(), 0));
    }

    #[tokio::test]
    async fn waiting_for_a_first_write_returns_once_the_clock_reaches_it() {
        let (clock, hlc) = manual(50_000, 500);
        let first = FirstWrite::from_now(&hlc);
        let mover = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            clock.set(51_001);
        });
        tokio::time::timeout(Duration::from_secs(10), first.wait(&hlc)).await.expect("the wait ends");
        assert!(first.due(&hlc));
        mover.await.expect("mover");
    }

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        let mut v = VersionVector::default();
        for (o, s) in entries {
            v.raise(&o.parse().unwrap(), *s);
        }
        v
    }

    fn digests(members: &[(&str, VersionVector)]) -> BTreeMap<Origin, VersionVector> {
        members.iter().map(|(o, d)| (o.parse().unwrap(), d.clone())).collect()
    }

    #[test]
    fn the_horizon_is_the_element_wise_minimum_once_members_have_seen_each_others_writes() {
        let mut d = digests(&[
            ("a", vv(&[("a", 2), ("b", 1), ("gone", 4)])),
            ("b", vv(&[("a", 2), ("b", 1), ("gone", 4)])),
        ]);
        assert_eq!(tombstone_horizon(&d), Some(vv(&[("a", 2), ("b", 1), ("gone", 4)])));
        d.insert("c".parse().unwrap(), vv(&[("a", 2), ("gone", 4)]));
        assert_eq!(tombstone_horizon(&d), None, "c has not seen b:1");
        assert_eq!(tombstone_horizon(&BTreeMap::new()), None);
    }

    #[test]
    fn a_retired_origin_holds_collection_back_until_every_member_has_seen_the_same_of_it() {
        let old = "a~00000000000000aa";
        let new = "a~00000000000000bb";
        let mut d = digests(&[
            (new, vv(&[(old, 3), (new, 1), ("b", 2)])),
            ("b", vv(&[(old, 2), (new, 1), ("b", 2)])),
        ]);
        assert_eq!(tombstone_horizon(&d), None, "b has not seen a's old third write");
        d.insert("b".parse().unwrap(), vv(&[(old, 3), (new, 1), ("b", 2)]));
        assert_eq!(tombstone_horizon(&d), Some(vv(&[(old, 3), (new, 1), ("b", 2)])));
        // A member's current origin may run ahead in others' digests read later:
        // only its own digest has to be covered.
        d.insert("b".parse().unwrap(), vv(&[(old, 3), (new, 2), ("b", 2)]));
        assert_eq!(tombstone_horizon(&d), Some(vv(&[(old, 3), (new, 1), ("b", 2)])));
    }
}
