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

use std::collections::{BTreeMap, BTreeSet};

use crate::origin::Origin;
use crate::record::VersionVector;

/// The vector to pass to
/// [`ConfigStore::collect_tombstones`](crate::ConfigStore::collect_tombstones),
/// given the latest digest of every current member (this node included), each
/// keyed by the origin its store writes under now, or `None` when collecting now
/// would be unsafe: no digests, some member has not yet seen a write another
/// member had made, or the members do not yet agree on what a retired origin
/// (one no member writes under now) wrote.
///
/// Digests may have been read at different times: a member's digest only grows,
/// so an older one is a lower bound on what it has seen.
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
    use super::*;

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
