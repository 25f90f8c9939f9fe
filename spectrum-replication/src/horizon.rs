//! When tombstones may be collected: the tombstone horizon.
//!
//! A tombstone may be dropped once no member holds, and no member will ever
//! receive, a write it superseded. Two conditions give that:
//!
//! 1. every member has seen the tombstone (each member's digest covers it), so
//!    every member holds it or something newer for its key; and
//! 2. every member has seen every write each member had made when the digests
//!    were read. A write still on its way somewhere (a delayed push) was then made
//!    before its origin's digest was read, so every member covers it and ignores
//!    it when it arrives; and a write made after its origin had seen the tombstone
//!    carries a greater stamp, so it is a new write, not a resurrection.
//!
//! [`tombstone_horizon`] checks the second condition and returns the vector for
//! the first.

use std::collections::{BTreeMap, BTreeSet};

use spectrum_core::NodeId;

use crate::record::VersionVector;

/// The vector to pass to
/// [`ConfigStore::collect_tombstones`](crate::ConfigStore::collect_tombstones),
/// given the latest digest of every current member (this node included), or
/// `None` when collecting now would be unsafe: no digests, or some member has not
/// yet seen a write another member had made.
///
/// Digests may have been read at different times: a member's digest only grows,
/// so an older one is a lower bound on what it has seen.
///
/// ```
/// use std::collections::BTreeMap;
/// use spectrum_replication::{VersionVector, horizon::tombstone_horizon};
///
/// let vv = |a: u64, b: u64| {
///     let mut v = VersionVector::default();
///     v.raise(&"a".parse().unwrap(), a);
///     v.raise(&"b".parse().unwrap(), b);
///     v
/// };
/// let mut digests = BTreeMap::new();
/// digests.insert("a".parse()?, vv(5, 3));
/// digests.insert("b".parse()?, vv(4, 3));
/// // b has not seen a:5 yet, and a made it: not safe.
/// assert_eq!(tombstone_horizon(&digests), None);
/// digests.insert("b".parse()?, vv(5, 3));
/// assert_eq!(tombstone_horizon(&digests), Some(vv(5, 3)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tombstone_horizon(digests: &BTreeMap<NodeId, VersionVector>) -> Option<VersionVector> {
    if digests.is_empty() {
        return None;
    }
    let origins: BTreeSet<&NodeId> = digests.values().flat_map(|d| d.entries.keys()).collect();
    let mut horizon = VersionVector::default();
    for origin in origins {
        let min = digests.values().map(|d| d.get(origin)).min().unwrap_or(0);
        if min > 0 {
            horizon.raise(origin, min);
        }
    }
    let settled = digests.iter().all(|(member, d)| horizon.get(member) >= d.get(member));
    settled.then_some(horizon)
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

    #[test]
    fn the_horizon_is_the_element_wise_minimum_once_members_have_seen_each_others_writes() {
        let mut d = BTreeMap::new();
        d.insert("a".parse().unwrap(), vv(&[("a", 2), ("b", 1), ("gone", 7)]));
        d.insert("b".parse().unwrap(), vv(&[("a", 2), ("b", 1), ("gone", 4)]));
        assert_eq!(tombstone_horizon(&d), Some(vv(&[("a", 2), ("b", 1), ("gone", 4)])));
        d.insert("c".parse().unwrap(), vv(&[("a", 2)]));
        assert_eq!(tombstone_horizon(&d), None, "c has not seen b:1");
        assert_eq!(tombstone_horizon(&BTreeMap::new()), None);
    }
}
