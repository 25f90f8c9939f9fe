//! Conflicts: two writes to one key made without seeing each other.
//!
//! Last-writer-wins picks one of them, and the other used to be lost
//! silently. Now every write carries its [`Lineage`]:
//! the version its store held for the key, and a causal context saying which
//! earlier writes to the key it supersedes. A store keeps, per key, the
//! *frontier* of the writes it has seen: every write no other seen write
//! supersedes. The last-writer-wins greatest of the frontier is the key's
//! record (what [`get`](crate::ConfigStore::get) and
//! [`scan`](crate::ConfigStore::scan) return, exactly as before); every other
//! member of the frontier is a conflict loser, kept beside it and listed by
//! [`conflicts`](crate::ConfigStore::conflicts) as a [`Conflict`].
//!
//! # Why every replica agrees
//!
//! "`y` supersedes `x`" (`y` saw `x` by its context, and wins over it) depends
//! only on the two records, and it is transitive (a write's context includes
//! the contexts of everything it saw). The frontier of a union of sets is
//! therefore the frontier of the union of their frontiers: merging frontiers
//! is commutative, associative and idempotent, and a store holding the
//! frontier of what it has seen holds the same set as any other store that
//! has seen the same writes, whatever the order of delivery.
//!
//! Losers are records with their own `(origin, seq)`, so they replicate like
//! any record: a [`delta`](crate::ConfigStore::delta) carries every stored
//! loser the peer's digest lacks, and a [`Snapshot`](crate::Snapshot) carries
//! them too. A replica that never received the losing write itself (its
//! writer's node had it overwritten before passing it on) still gets it from
//! any replica that kept it as a loser: the store invariant becomes "a store
//! holds every write of the frontier that its digest covers".
//!
//! # Clearing
//!
//! A local write to a key supersedes everything its store held for the key,
//! the winner and every loser: it saw both sides, so the conflict is gone
//! wherever that write arrives (and a loser arriving later is superseded on
//! arrival). A write that only saw one side (its node had not yet received the
//! other) leaves the conflict open, now against the new write.
//!
//! # Deletes and tombstone collection
//!
//! A tombstone that wins keeps its key deleted; the put it beat is listed as a
//! loser, never returned as the key's value. A winning tombstone with open
//! conflicts is not collected until a later write clears them (collecting it
//! would bring the put back); every other tombstone is collected as before,
//! including one that lost a conflict: it is dropped from the key's losers once
//! the horizon covers it, and that conflict ends. Else replicas could disagree
//! for good: a member that lost its disk and writes before catching up makes a
//! write concurrent with a tombstone that peers may have collected already (on
//! the strength of its digest from before the loss), and the replicas that had
//! not yet collected it would list it as the new write's loser forever while
//! the others never could. A write to a key its store holds nothing for takes the
//! store's tombstone floor as its context: every write to that key below the
//! floor was superseded and its tombstone collected, so the new write saw it.

use std::collections::BTreeSet;

use crate::origin::Origin;
use crate::record::{Lineage, Record, VersionToken, VersionVector};

/// One open conflict: a write to `key` that lost to the key's current record
/// without its writer having seen it (or the reverse).
///
/// `winner` is the record stored for the key (what reads return); `loser` a
/// write concurrent with it that last-writer-wins would have dropped. Both are
/// whole records: version (`origin:seq`), writer's HLC stamp, value (or `None`
/// for a delete) and lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The key both wrote.
    pub key: String,
    /// The record stored for the key.
    pub winner: Record,
    /// The write that lost to it without either having seen the other.
    pub loser: Record,
}

/// Whether `y` supersedes `x` (two records for one key): `y`'s writer saw `x`,
/// and `y` wins over it. The second condition only matters for a record whose
/// context claims to have seen a newer one, which an honest writer never
/// makes (it raises its clock past what it saw): such a pair stays a conflict
/// and last-writer-wins still decides the key.
pub(crate) fn supersedes(y: &Record, x: &Record) -> bool {
    !same_version(y, x) && y.saw(x) && y.wins_over(x)
}

fn same_version(a: &Record, b: &Record) -> bool {
    a.seq == b.seq && a.origin == b.origin
}

/// The frontier of `versions` (records for one key): the last-writer-wins
/// winner and the losers, in `(origin, seq)` order, that nothing in `versions`
/// supersedes. Versions named twice count once (the first copy is kept).
/// `None` for no versions.
pub(crate) fn frontier(versions: Vec<Record>) -> Option<(Record, Vec<Record>)> {
    let mut unique: Vec<Record> = Vec::with_capacity(versions.len());
    for v in versions {
        if !unique.iter().any(|u| same_version(u, &v)) {
            unique.push(v);
        }
    }
    let keep: Vec<bool> = unique.iter().map(|x| !unique.iter().any(|y| supersedes(y, x))).collect();
    let mut kept: Vec<Record> = unique.into_iter().zip(keep).filter_map(|(r, k)| k.then_some(r)).collect();
    let best = (0..kept.len()).reduce(|a, b| if kept[b].wins_over(&kept[a]) { b } else { a })?;
    let winner = kept.swap_remove(best);
    kept.sort_by(|a, b| (&a.origin, a.seq).cmp(&(&b.origin, b.seq)));
    Some((winner, kept))
}

/// The lineage of a local write to a key for which its store holds `held`
/// (the winner first, then the losers), with tombstone floor `gc_floor`.
pub(crate) fn lineage_of(held: &[&Record], gc_floor: &VersionVector) -> Lineage {
    let Some(first) = held.first() else {
        return Lineage { replaces: None, context: gc_floor.clone() };
    };
    let mut context = VersionVector::default();
    for r in held {
        context = context.join(&r.lineage.context);
        context.raise(&r.origin, r.seq);
    }
    Lineage { replaces: Some(first.token()), context }
}

/// Whether two lists of records name the same versions.
pub(crate) fn same_versions(a: &[Record], b: &[Record]) -> bool {
    let names =
        |l: &[Record]| l.iter().map(|r| (r.origin.clone(), r.seq)).collect::<BTreeSet<(Origin, u64)>>();
    a.len() == b.len() && names(a) == names(b)
}

/// Builds the conflicts of one key.
pub(crate) fn conflicts_of(winner: &Record, losers: &[Record]) -> Vec<Conflict> {
    losers
        .iter()
        .map(|l| Conflict { key: winner.key.clone(), winner: winner.clone(), loser: l.clone() })
        .collect()
}

impl Conflict {
    /// The winner's version.
    pub fn winner_version(&self) -> VersionToken {
        self.winner.token()
    }

    /// The loser's version.
    pub fn loser_version(&self) -> VersionToken {
        self.loser.token()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spectrum_core::Timestamp;

    use super::*;

    fn rec(origin: &str, seq: u64, wall: u64, saw: &[(&str, u64)]) -> Record {
        let mut context = VersionVector::default();
        for (o, s) in saw {
            context.raise(&o.parse().unwrap(), *s);
        }
        Record {
            key: "k".into(),
            value: Some(Bytes::from_static(b"v")),
            stamp: Timestamp::new(wall, 0),
            origin: origin.parse().unwrap(),
            seq,
            lineage: Lineage { replaces: None, context },
        }
    }

    fn names(f: &(Record, Vec<Record>)) -> (String, Vec<String>) {
        (f.0.token().to_string(), f.1.iter().map(|r| r.token().to_string()).collect())
    }

    #[test]
    fn a_write_that_saw_the_other_supersedes_it_and_concurrent_ones_stay_as_losers() {
        let a1 = rec("a", 1, 10, &[]);
        let b1 = rec("b", 1, 11, &[]);
        let a2 = rec("a", 2, 12, &[("a", 1)]);
        let f = frontier(vec![a1.clone(), b1.clone()]).unwrap();
        assert_eq!(names(&f), ("b:1".into(), vec!["a:1".into()]));
        let f = frontier(vec![a1.clone(), b1.clone(), a2.clone()]).unwrap();
        assert_eq!(names(&f), ("a:2".into(), vec!["b:1".into()]), "a:2 saw a:1 only");
        let c1 = rec("c", 1, 13, &[("a", 2), ("b", 1)]);
        let f = frontier(vec![a1, b1, a2, c1]).unwrap();
        assert_eq!(names(&f), ("c:1".into(), vec![]), "a write that saw both clears it");
    }

    #[test]
    fn the_frontier_of_a_union_is_the_frontier_of_the_frontiers_in_any_order() {
        let all = [
            rec("a", 1, 10, &[]),
            rec("b", 1, 11, &[]),
            rec("a", 2, 12, &[("a", 1)]),
            rec("c", 1, 15, &[("b", 1)]),
            rec("b", 2, 14, &[("a", 1), ("b", 1)]),
        ];
        let whole = names(&frontier(all.to_vec()).unwrap());
        for split in 1..all.len() {
            let (x, y) = all.split_at(split);
            let fx = frontier(x.to_vec()).unwrap();
            let fy = frontier(y.to_vec()).unwrap();
            let mut joined: Vec<Record> = vec![fy.0, fx.0];
            joined.extend(fy.1);
            joined.extend(fx.1);
            assert_eq!(names(&frontier(joined).unwrap()), whole, "split at {split}");
        }
        let mut reversed = all.to_vec();
        reversed.reverse();
        assert_eq!(names(&frontier(reversed).unwrap()), whole);
    }

    #[test]
    fn a_context_claiming_a_newer_record_does_not_overturn_last_writer_wins() {
        let newer = rec("a", 1, 20, &[]);
        let odd = rec("b", 1, 10, &[("a", 1)]);
        let f = frontier(vec![odd, newer]).unwrap();
        assert_eq!(names(&f), ("a:1".into(), vec!["b:1".into()]));
    }

    #[test]
    fn a_write_takes_the_join_of_what_its_store_held_or_the_tombstone_floor() {
        let w = rec("a", 3, 10, &[("c", 4)]);
        let l = rec("b", 2, 9, &[("a", 1)]);
        let lineage = lineage_of(&[&w, &l], &VersionVector::default());
        assert_eq!(lineage.replaces, Some(w.token()));
        let got: Vec<(String, u64)> =
            lineage.context.entries.iter().map(|(o, s)| (o.to_string(), *s)).collect();
        assert_eq!(got, [("a".into(), 3), ("b".into(), 2), ("c".into(), 4)]);
        let mut floor = VersionVector::default();
        floor.raise(&"a".parse().unwrap(), 7);
        let fresh = lineage_of(&[], &floor);
        assert_eq!((fresh.replaces, fresh.context), (None, floor));
    }
}
