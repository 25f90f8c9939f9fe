//! The state machine every store shares: what is stored, what has been seen, and
//! how local writes, merges, snapshots and tombstone collection change it.
//!
//! Each operation is planned against the current [`State`] without touching it,
//! yielding the [`Changes`] it makes; the store then makes them durable (or not,
//! for [`MemoryStore`](crate::MemoryStore)) and only then [commits](State::commit)
//! them. A failed write therefore changes nothing, and both stores run exactly
//! the same logic. The invariants it keeps are described in the
//! [`memory`](crate::memory) module docs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use spectrum_core::Hlc;

use crate::conflict::{self, Conflict};
use crate::error::StoreError;
use crate::origin::Origin;
use crate::record::{
    Change, Delta, MAX_SEQ, MAX_WALL_MS, MergeReport, Record, Snapshot, VersionVector, Write, WriteBatch,
    validate_key,
};

/// One node's copy: the records and everything known about them.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The winning record per key.
    records: Records,
    /// The conflict losers per key (see [`conflict`](crate::conflict)), in
    /// `(origin, seq)` order; a key is absent when it has none.
    losers: BTreeMap<String, Vec<Record>>,
    /// Per origin, sequence number → key of the stored records (winners and
    /// losers) written there.
    by_origin: BTreeMap<Origin, BTreeMap<u64, String>>,
    /// `(origin, seq)` of every stored tombstone.
    tombstones: BTreeSet<(Origin, u64)>,
    /// Highest contiguous sequence number seen per origin.
    vv: VersionVector,
    /// Sequence numbers seen above a gap, per origin.
    pending: BTreeMap<Origin, BTreeSet<u64>>,
    /// Per origin, the highest sequence number of a collected tombstone.
    gc_floor: VersionVector,
    /// Index of the last change (0: none yet). The changes themselves are kept
    /// by the store's change log (see [`changelog`](crate::changelog)).
    head: u64,
}

/// The winning record per key: hashed, for the lookups and replacements every
/// write makes (deciding it, planning it, storing it), with the keys also kept
/// in order, for prefix scans and ordered copies. In one ordered map each
/// lookup compared the key with a dozen or more others, each stored apart
/// from its node (a cache miss apiece): under 16 writers, with about 14,000
/// keys, reading the live versions alone went from 8.6 to 3.6 µs per put
/// (the three nodes' CPU, `bench_consensus --perf`).
#[derive(Debug, Default)]
struct Records {
    by_key: HashMap<Arc<str>, Record>,
    /// The keys of `by_key`, in order.
    order: BTreeSet<Arc<str>>,
}

impl Records {
    fn len(&self) -> usize {
        self.by_key.len()
    }

    fn get(&self, key: &str) -> Option<&Record> {
        self.by_key.get(key)
    }

    fn contains_key(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// Stores `rec` under its key; returns the record it replaced. A key
    /// stored before is replaced in place, without touching the order.
    fn insert(&mut self, rec: Record) -> Option<Record> {
        if let Some(slot) = self.by_key.get_mut(rec.key.as_str()) {
            return Some(std::mem::replace(slot, rec));
        }
        let key: Arc<str> = Arc::from(rec.key.as_str());
        self.order.insert(key.clone());
        self.by_key.insert(key, rec);
        None
    }

    fn remove(&mut self, key: &str) -> Option<Record> {
        let rec = self.by_key.remove(key)?;
        self.order.remove(key);
        Some(rec)
    }

    /// Every record, in no particular order (cheaper than [`values`](Self::values)).
    fn unordered(&self) -> impl Iterator<Item = &Record> {
        self.by_key.values()
    }

    /// Every record, in key order.
    fn values(&self) -> impl Iterator<Item = &Record> {
        self.order.iter().filter_map(|k| self.by_key.get(k))
    }

    /// The records whose key starts with `prefix`, in key order.
    fn under<'s>(&'s self, prefix: &'s str) -> impl Iterator<Item = &'s Record> + 's {
        self.order
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |k| k.starts_with(prefix))
            .filter_map(|k| self.by_key.get(k))
    }
}

/// What one operation changes. Built by the `plan_*` methods, applied by
/// [`State::commit`].
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Records stored (`Some`) or dropped (`None`), in order, with their feed indexes.
    pub(crate) feed: Vec<Change>,
    /// New version-vector entries of the origins that advanced.
    pub(crate) vv: BTreeMap<Origin, u64>,
    /// New pending sets of the origins whose set changed (empty: none left).
    pub(crate) pending: BTreeMap<Origin, BTreeSet<u64>>,
    /// New tombstone-floor entries of the origins whose floor rose.
    pub(crate) gc_floor: BTreeMap<Origin, u64>,
    /// The feed's last index afterwards.
    pub(crate) head: u64,
    /// New conflict losers of the keys whose losers changed (empty: none left).
    pub(crate) losers: BTreeMap<String, Vec<Record>>,
}

impl Changes {
    /// Whether committing would change nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.feed.is_empty()
            && self.vv.is_empty()
            && self.pending.is_empty()
            && self.gc_floor.is_empty()
            && self.losers.is_empty()
    }
}

/// Everything a durable store persisted, to rebuild a [`State`] from.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    pub(crate) records: Vec<Record>,
    pub(crate) losers: Vec<Record>,
    pub(crate) vv: VersionVector,
    pub(crate) pending: BTreeMap<Origin, BTreeSet<u64>>,
    pub(crate) gc_floor: VersionVector,
    pub(crate) head: u64,
}

/// Checks a remote record against the limits.
pub(crate) fn check_record(r: &Record, max_value_bytes: usize) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::InvalidRecord { origin: r.origin.clone(), reason };
    validate_key(&r.key).map_err(|e| invalid(e.to_string()))?;
    if r.seq == 0 {
        return Err(invalid(format!("record for {:?} has sequence number 0; they start at 1", r.key)));
    }
    if r.seq > MAX_SEQ {
        return Err(invalid(format!(
            "record for {:?} has sequence number {}; at most {MAX_SEQ}",
            r.key, r.seq
        )));
    }
    if r.stamp.wall_ms > MAX_WALL_MS {
        return Err(invalid(format!("record for {:?} is stamped {}, after the year 10000", r.key, r.stamp)));
    }
    if let Some(v) = &r.value
        && v.len() > max_value_bytes
    {
        return Err(invalid(format!(
            "value for {:?} is {} bytes; at most {} are allowed",
            r.key,
            v.len(),
            max_value_bytes
        )));
    }
    Ok(())
}

impl State {
    /// Rebuilds a state from what a durable store persisted.
    ///
    /// # Errors
    ///
    /// A description of the first inconsistency (two keys claiming one
    /// `(origin, seq)`).
    pub(crate) fn from_parts(parts: Parts) -> Result<Self, String> {
        let mut st = State {
            vv: parts.vv,
            pending: parts.pending,
            gc_floor: parts.gc_floor,
            head: parts.head,
            ..State::default()
        };
        let mut named: BTreeMap<(&Origin, u64), &str> = BTreeMap::new();
        for rec in parts.records.iter().chain(&parts.losers) {
            if let Some(other) = named.insert((&rec.origin, rec.seq), &rec.key) {
                return Err(format!(
                    "keys {other:?} and {:?} both hold record {}:{}",
                    rec.key, rec.origin, rec.seq
                ));
            }
        }
        drop(named);
        for rec in parts.records {
            st.store(rec);
        }
        let mut losers: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for rec in parts.losers {
            if !st.records.contains_key(&rec.key) {
                return Err(format!("conflict loser {} of key {:?} has no winner", rec.token(), rec.key));
            }
            losers.entry(rec.key.clone()).or_default().push(rec);
        }
        for (key, list) in losers {
            st.index_losers(&key, list);
        }
        Ok(st)
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn vv(&self) -> &VersionVector {
        &self.vv
    }

    #[cfg(test)]
    pub(crate) fn gc_floor(&self) -> &VersionVector {
        &self.gc_floor
    }

    /// The feed's last index.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The greatest stamp of any stored record.
    pub(crate) fn max_stamp(&self) -> Option<spectrum_core::Timestamp> {
        self.records.unordered().map(|r| r.stamp).max()
    }

    pub(crate) fn get(&self, key: &str) -> Option<Record> {
        self.records.get(key).cloned()
    }

    /// The version of the live value at `key`, if any.
    pub(crate) fn live_version(&self, key: &str) -> Option<crate::record::VersionToken> {
        self.records.get(key).filter(|r| !r.is_tombstone()).map(Record::token)
    }

    pub(crate) fn scan(&self, prefix: &str) -> Vec<Record> {
        self.records.under(prefix).cloned().collect()
    }

    /// The keys starting with `prefix` that hold a live value, in key order.
    pub(crate) fn live_keys(&self, prefix: &str) -> Vec<String> {
        self.records.under(prefix).filter(|r| !r.is_tombstone()).map(|r| r.key.clone()).collect()
    }

    /// The open conflicts of the keys starting with `prefix`, in key order.
    pub(crate) fn conflicts(&self, prefix: &str) -> Vec<Conflict> {
        self.losers
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, losers)| self.records.get(k).map(|w| conflict::conflicts_of(w, losers)))
            .flatten()
            .collect()
    }

    /// The stored record of `key` written as `(origin, seq)`: its winner or one
    /// of its losers.
    fn at(&self, key: &str, origin: &Origin, seq: u64) -> Option<&Record> {
        let is = |r: &&Record| r.seq == seq && r.origin == *origin;
        self.records.get(key).filter(is).or_else(|| self.losers.get(key)?.iter().find(is))
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            records: self.records.values().cloned().collect(),
            conflicts: self.losers.values().flatten().cloned().collect(),
            digest: self.vv.clone(),
            gc_floor: self.gc_floor.clone(),
            position: self.head,
        }
    }

    /// What a peer with digest `since` lacks; see [`ConfigStore::delta`](crate::ConfigStore::delta).
    ///
    /// Per origin, the peer's range `(since, ours]` is walked in order: a held
    /// record is sent, and a gap (sequence numbers held nowhere here because they
    /// were superseded) is vouched for in `covers`. A gap may be vouched only if
    /// every record the peer lacks that could supersede it is in the delta too:
    /// otherwise a cut could leave the peer counting a write as seen without
    /// holding it or anything newer, and if the cut superseding record is then lost
    /// (its writer's disk, before it spread) the peer never gets the write back
    /// while others still hold it. Which key a gap was on is unknown here, so
    /// every lacked record whose context reaches the gap counts, and goes first
    /// (an origin's first gap needs them all; a later gap of the origin needs a
    /// subset). Each such group, like a record, is sent even over budget when the
    /// delta is still empty, so every answer advances the peer's digest or is
    /// complete: repeated small deltas reach a complete one.
    pub(crate) fn delta(&self, since: &VersionVector, budget_bytes: usize) -> Result<Delta, StoreError> {
        if let Some((origin, &floor)) = self.gc_floor.entries.iter().find(|(o, f)| since.get(o) < **f) {
            return Err(StoreError::BehindHorizon { origin: origin.clone(), seen: since.get(origin), floor });
        }
        // Every record the peer's digest lacks, in (origin, seq) order.
        let lacked: Vec<&Record> = self.held_above(since).collect();
        let mut page = Page { budget: budget_bytes, ..Page::default() };
        let mut covers = VersionVector::default();
        let origins: BTreeSet<&Origin> = self.by_origin.keys().chain(self.vv.entries.keys()).collect();
        for origin in origins {
            let from = since.get(origin);
            let claim = self.walk(origin, from, &lacked, &mut page);
            if claim > from {
                covers.raise(origin, claim);
            }
        }
        // Records above our own contiguous digest: we cannot vouch for the gap below
        // them, so the receiver's digest will not move past them. They go last, all
        // together (else a budget cut among them would resend the first forever).
        let tail: Vec<&Record> = lacked.iter().copied().filter(|r| r.seq > self.vv.get(&r.origin)).collect();
        page.offer(&tail);
        Ok(Delta { complete: !page.cut, records: page.records, covers })
    }

    /// The records held here (winners and losers) that a peer with digest
    /// `since` lacks, in `(origin, seq)` order.
    fn held_above<'s>(&'s self, since: &'s VersionVector) -> impl Iterator<Item = &'s Record> + 's {
        self.by_origin.iter().flat_map(move |(origin, idx)| {
            idx.range((Bound::Excluded(since.get(origin)), Bound::Unbounded))
                .filter_map(move |(&seq, key)| self.at(key, origin, seq))
        })
    }

    /// Walks `origin`'s range `(from, ours]` for [`State::delta`], adding to
    /// `page`, and returns how far the delta may claim the origin (`from`:
    /// nothing).
    fn walk(&self, origin: &Origin, from: u64, lacked: &[&Record], page: &mut Page) -> u64 {
        let ours = self.vv.get(origin);
        if ours <= from {
            return from;
        }
        let held = self
            .by_origin
            .get(origin)
            .into_iter()
            .flat_map(|idx| idx.range((Bound::Excluded(from), Bound::Included(ours))))
            .filter_map(|(&seq, key)| self.at(key, origin, seq).map(|r| (seq, r)));
        let mut claim = from;
        let mut gaps_vouched = false;
        // Each held record, then the end of the range (a gap may end it).
        for (next, rec) in held.map(|(s, r)| (s, Some(r))).chain([(ours + 1, None)]) {
            if next > claim + 1 && !gaps_vouched {
                // The first gap: every lacked record that saw it or anything
                // later of this origin goes first (later gaps need a subset).
                let first_gap = claim + 1;
                let rivals: Vec<&Record> =
                    lacked.iter().copied().filter(|r| r.lineage.context.get(origin) >= first_gap).collect();
                if !page.offer(&rivals) {
                    return claim;
                }
                gaps_vouched = true;
            }
            // Any gap below `next` is vouched for now.
            claim = claim.max(next - 1);
            if let Some(r) = rec {
                if !page.offer(&[r]) {
                    return claim;
                }
                claim = next;
            }
        }
        claim
    }

    /// Plans a local batch (already validated): stamps each write with `hlc` and
    /// numbers it as the next sequence number of `me`, the store's origin.
    pub(crate) fn plan_apply(&self, me: &Origin, hlc: &Hlc, batch: WriteBatch) -> (Changes, Vec<Record>) {
        let mut d = self.draft();
        let out = d.apply(me, hlc, batch);
        (d.finish(), out)
    }

    /// Plans merging remote records (already checked) and a sender's `covers`.
    pub(crate) fn plan_merge(&self, records: Vec<Record>, covers: &VersionVector) -> (Changes, MergeReport) {
        let mut d = self.draft();
        let report = d.merge(records, covers);
        (d.finish(), report)
    }

    /// A draft over this state, to plan several local batches and merges one
    /// after the other, each seeing those before it, into one [`Changes`]
    /// (what a durable store commits together: a group commit).
    pub(crate) fn draft(&self) -> Draft<'_> {
        Draft::new(self)
    }

    /// Plans restoring a snapshot (records already checked): last-writer-wins per
    /// key, then every stored record the snapshot's digest covers but whose key
    /// the snapshot lacks is dropped (its maker saw it superseded by a tombstone
    /// it has since collected), then the digest and floor rise to the snapshot's.
    pub(crate) fn plan_restore(&self, snapshot: Snapshot, hlc: &Hlc) -> (Changes, MergeReport) {
        let mut d = Draft::new(self);
        let mut report = MergeReport::default();
        let keys: BTreeSet<String> = snapshot.records.iter().map(|r| r.key.clone()).collect();
        let held: BTreeSet<(Origin, u64)> =
            snapshot.records.iter().chain(&snapshot.conflicts).map(|r| (r.origin.clone(), r.seq)).collect();
        for r in snapshot.records.into_iter().chain(snapshot.conflicts) {
            d.merge_one(r, &mut report);
        }
        let dead: Vec<&Record> = self
            .records
            .values()
            .filter(|r| !keys.contains(&r.key) && snapshot.digest.get(&r.origin) >= r.seq)
            .collect();
        for r in dead {
            hlc.restore(r.stamp);
            d.remove(&r.key);
            d.raise_floor(&r.origin, r.seq);
        }
        // A loser the maker saw but no longer holds was superseded there.
        for key in self.losers.keys() {
            let versions: Vec<Record> = d.get(key).into_iter().chain(d.losers_of(key)).cloned().collect();
            let gone = |r: &Record| {
                snapshot.digest.get(&r.origin) >= r.seq && !held.contains(&(r.origin.clone(), r.seq))
            };
            let winner_dropped = d.get(key).is_none();
            if winner_dropped || versions.iter().any(gone) {
                versions.iter().filter(|r| gone(r)).for_each(|r| hlc.restore(r.stamp));
                d.reset_key(key, versions.into_iter().filter(|r| !gone(r)).collect());
            }
        }
        for (origin, &seq) in &snapshot.digest.entries {
            d.raise_to(origin, seq);
        }
        for (origin, &seq) in &snapshot.gc_floor.entries {
            d.raise_floor(origin, seq);
        }
        (d.finish(), report)
    }

    /// Plans dropping every tombstone whose `(origin, seq)` both `horizon` and this
    /// store cover: a key's winning tombstone once it has no conflict losers, and
    /// every conflict loser that is a tombstone. The clock rises past each dropped
    /// stamp, so a later local write to the key wins over the tombstone wherever it
    /// is still held.
    ///
    /// A losing tombstone is collected like any other: whether it stays listed
    /// must not depend on when each replica collected it. A member that lost its
    /// disk and writes before catching up makes a write concurrent with a
    /// tombstone its peers may already have collected (its last digest, from
    /// before the loss, covered it): replicas that collected the tombstone first
    /// take the write without a conflict, replicas that had not list the
    /// tombstone as its loser, and only collecting that loser too makes them agree.
    pub(crate) fn plan_collect(&self, horizon: &VersionVector, hlc: &Hlc) -> (Changes, usize) {
        let mut d = Draft::new(self);
        let mut count = self.plan_collect_losers(&mut d, horizon, hlc);
        for (origin, seq) in &self.tombstones {
            if horizon.get(origin) < *seq || self.vv.get(origin) < *seq {
                continue;
            }
            // A tombstone with open conflicts waits until a write clears them.
            let Some(rec) = self
                .by_origin
                .get(origin)
                .and_then(|i| i.get(seq))
                .filter(|k| !self.losers.contains_key(*k))
                .and_then(|k| self.records.get(k))
            else {
                continue;
            };
            hlc.restore(rec.stamp);
            d.remove(&rec.key);
            d.raise_floor(origin, *seq);
            count += 1;
        }
        (d.finish(), count)
    }

    /// Drops into `d` every conflict loser that is a tombstone `horizon` and this
    /// store cover (see [`plan_collect`](Self::plan_collect)); returns how many.
    fn plan_collect_losers(&self, d: &mut Draft<'_>, horizon: &VersionVector, hlc: &Hlc) -> usize {
        let mut count = 0;
        for (key, losers) in &self.losers {
            let covered = |r: &Record| horizon.get(&r.origin) >= r.seq && self.vv.get(&r.origin) >= r.seq;
            let (gone, kept): (Vec<&Record>, Vec<&Record>) =
                losers.iter().partition(|r| r.is_tombstone() && covered(r));
            if gone.is_empty() {
                continue;
            }
            for r in &gone {
                hlc.restore(r.stamp);
                d.raise_floor(&r.origin, r.seq);
            }
            d.set_losers(key, kept.into_iter().cloned().collect());
            count += gone.len();
        }
        count
    }

    /// Applies planned changes.
    pub(crate) fn commit(&mut self, changes: &Changes) {
        for key in changes.losers.keys() {
            self.unindex_losers(key);
        }
        for c in &changes.feed {
            match &c.record {
                Some(r) => self.store(r.clone()),
                None => self.unstore(&c.key),
            }
        }
        for (origin, &seq) in &changes.vv {
            self.vv.raise(origin, seq);
        }
        for (origin, set) in &changes.pending {
            if set.is_empty() {
                self.pending.remove(origin);
            } else {
                self.pending.insert(origin.clone(), set.clone());
            }
        }
        for (origin, &seq) in &changes.gc_floor {
            self.gc_floor.raise(origin, seq);
        }
        for (key, list) in &changes.losers {
            self.index_losers(key, list.clone());
        }
        self.head = changes.head;
    }

    /// Stores `rec`, replacing whatever was stored for its key.
    fn store(&mut self, rec: Record) {
        let key = rec.key.clone();
        let (origin, seq, tombstone) = (rec.origin.clone(), rec.seq, rec.is_tombstone());
        if let Some(old) = self.records.insert(rec) {
            self.unindex(&old);
        }
        if tombstone {
            self.tombstones.insert((origin.clone(), seq));
        }
        self.by_origin.entry(origin).or_default().insert(seq, key);
    }

    /// Drops the losers stored for `key` and their index entries.
    fn unindex_losers(&mut self, key: &str) {
        for old in self.losers.remove(key).unwrap_or_default() {
            if let Some(idx) = self.by_origin.get_mut(&old.origin) {
                idx.remove(&old.seq);
                if idx.is_empty() {
                    self.by_origin.remove(&old.origin);
                }
            }
        }
    }

    /// Stores `list` as the losers of `key` (after [`State::unindex_losers`]).
    fn index_losers(&mut self, key: &str, list: Vec<Record>) {
        if list.is_empty() {
            return;
        }
        for r in &list {
            self.by_origin.entry(r.origin.clone()).or_default().insert(r.seq, r.key.clone());
        }
        self.losers.insert(key.to_owned(), list);
    }

    /// Removes the record stored for `key`, if any.
    fn unstore(&mut self, key: &str) {
        if let Some(old) = self.records.remove(key) {
            self.unindex(&old);
        }
    }

    /// Drops the index entries of `old`, a record no longer stored.
    fn unindex(&mut self, old: &Record) {
        if let Some(idx) = self.by_origin.get_mut(&old.origin) {
            idx.remove(&old.seq);
            if idx.is_empty() {
                self.by_origin.remove(&old.origin);
            }
        }
        if old.is_tombstone() {
            self.tombstones.remove(&(old.origin.clone(), old.seq));
        }
    }
}

/// The records of a [`State::delta`] being built, within a byte budget.
#[derive(Default)]
struct Page {
    records: Vec<Record>,
    /// `(origin, seq)` of the records in `records`.
    sent: BTreeSet<(Origin, u64)>,
    used: usize,
    budget: usize,
    /// Whether something the peer lacks was left out.
    cut: bool,
}

impl Page {
    /// Adds those of `group` not yet added, all or none: all when they fit the
    /// budget or the page is still empty and nothing was cut before. Returns
    /// whether all of `group` is now in the page.
    fn offer(&mut self, group: &[&Record]) -> bool {
        let new: Vec<&Record> =
            group.iter().copied().filter(|r| !self.sent.contains(&(r.origin.clone(), r.seq))).collect();
        if new.is_empty() {
            return true;
        }
        let len = new.iter().fold(0usize, |n, r| n.saturating_add(r.encoded_len()));
        if self.cut || (!self.records.is_empty() && self.used.saturating_add(len) > self.budget) {
            self.cut = true;
            return false;
        }
        self.used = self.used.saturating_add(len);
        for r in new {
            self.sent.insert((r.origin.clone(), r.seq));
            self.records.push(r.clone());
        }
        true
    }
}

/// A copy-on-touch overlay over a [`State`], turned into [`Changes`]: the
/// operations planned on it see each other's changes, and the state sees none
/// until the changes are [committed](State::commit).
pub(crate) struct Draft<'a> {
    base: &'a State,
    /// Per key touched, the position in `feed` of its latest change (whose
    /// record is the key's, or none when it was dropped).
    records: HashMap<String, usize>,
    losers: BTreeMap<String, Vec<Record>>,
    vv: BTreeMap<Origin, u64>,
    pending: BTreeMap<Origin, BTreeSet<u64>>,
    floor: BTreeMap<Origin, u64>,
    feed: Vec<Change>,
    head: u64,
}

impl<'a> Draft<'a> {
    fn new(base: &'a State) -> Self {
        Draft {
            base,
            records: HashMap::new(),
            losers: BTreeMap::new(),
            vv: BTreeMap::new(),
            pending: BTreeMap::new(),
            floor: BTreeMap::new(),
            feed: Vec::new(),
            head: base.head,
        }
    }

    /// Plans a local batch (see [`State::plan_apply`]) on top of what the
    /// draft holds. Not after a tombstone collection or a restore in the same
    /// draft: a write's lineage is read against the state's tombstone floor.
    pub(crate) fn apply(&mut self, me: &Origin, hlc: &Hlc, batch: WriteBatch) -> Vec<Record> {
        debug_assert!(self.floor.is_empty(), "a local write planned after a floor change");
        // A local write must win over the record it replaces, even one stamped by
        // a peer whose clock runs ahead of ours.
        // It supersedes the key's conflict losers too, so it wins over them.
        for w in &batch.writes {
            for held in self.get(w.key()).into_iter().chain(self.losers_of(w.key())) {
                hlc.restore(held.stamp);
            }
        }
        let mut out = Vec::with_capacity(batch.writes.len());
        for w in batch.writes {
            let seq = self.next_local_seq(me);
            let (key, value) = match w {
                Write::Put { key, value } => (key, Some(value)),
                Write::Delete { key } => (key, None),
            };
            let held: Vec<&Record> = self.get(&key).into_iter().chain(self.losers_of(&key)).collect();
            let lineage = conflict::lineage_of(&held, &self.base.gc_floor);
            let rec = Record { key, value, stamp: hlc.now(), origin: me.clone(), seq, lineage };
            self.set_losers(&rec.key, Vec::new());
            self.put(rec.clone());
            self.mark_seen(me, seq);
            out.push(rec);
        }
        out
    }

    /// Plans merging remote records (see [`State::plan_merge`]) on top of what
    /// the draft holds.
    pub(crate) fn merge(&mut self, records: Vec<Record>, covers: &VersionVector) -> MergeReport {
        let mut report = MergeReport::default();
        for r in records {
            self.merge_one(r, &mut report);
        }
        for (origin, &seq) in &covers.entries {
            self.raise_to(origin, seq);
        }
        report
    }

    fn get(&self, key: &str) -> Option<&Record> {
        match self.records.get(key) {
            // Positions in `records` are of changes pushed to `feed`.
            Some(&at) => self.feed[at].record.as_ref(),
            None => self.base.records.get(key),
        }
    }

    fn losers_of(&self, key: &str) -> &[Record] {
        match self.losers.get(key) {
            Some(l) => l,
            None => self.base.losers.get(key).map_or(&[], Vec::as_slice),
        }
    }

    /// Sets the losers of `key`, noting a change only when they differ.
    fn set_losers(&mut self, key: &str, list: Vec<Record>) {
        if !conflict::same_versions(self.losers_of(key), &list) {
            self.losers.insert(key.to_owned(), list);
        }
    }

    /// Stores the frontier of `versions` (records of `key`) as the key's
    /// winner and losers, or drops the key when there are none.
    fn reset_key(&mut self, key: &str, versions: Vec<Record>) {
        match conflict::frontier(versions) {
            Some((winner, losers)) => {
                self.set_losers(key, losers);
                let same = self.get(key).is_some_and(|w| w.origin == winner.origin && w.seq == winner.seq);
                if !same {
                    self.put(winner);
                }
            }
            None => {
                self.set_losers(key, Vec::new());
                if self.get(key).is_some() {
                    self.remove(key);
                }
            }
        }
    }

    fn seen(&self, origin: &Origin) -> u64 {
        self.vv.get(origin).copied().unwrap_or_else(|| self.base.vv.get(origin))
    }

    fn pending_last(&self, origin: &Origin) -> Option<u64> {
        match self.pending.get(origin) {
            Some(p) => p.last().copied(),
            None => self.base.pending.get(origin).and_then(|p| p.last().copied()),
        }
    }

    fn pending_mut(&mut self, origin: &Origin) -> &mut BTreeSet<u64> {
        let base = self.base;
        self.pending
            .entry(origin.clone())
            .or_insert_with(|| base.pending.get(origin).cloned().unwrap_or_default())
    }

    fn put(&mut self, rec: Record) {
        self.head += 1;
        self.records.insert(rec.key.clone(), self.feed.len());
        self.feed.push(Change {
            index: self.head,
            key: rec.key.clone(),
            record: Some(rec),
            dropped_tombstone: false,
        });
    }

    fn remove(&mut self, key: &str) {
        self.head += 1;
        let dropped_tombstone = self.get(key).is_some_and(Record::is_tombstone);
        self.records.insert(key.to_owned(), self.feed.len());
        self.feed.push(Change { index: self.head, key: key.to_owned(), record: None, dropped_tombstone });
    }

    /// Merges one remote record: ignored when this store already covers it (it
    /// holds it or something newer, or will receive something newer), else
    /// joined into the key's frontier (see [`conflict`](crate::conflict)): it
    /// is stored when it wins under last-writer-wins, kept as a loser when it
    /// loses to a write that did not see it, and dropped when superseded.
    fn merge_one(&mut self, r: Record, report: &mut MergeReport) {
        if r.seq <= self.seen(&r.origin) {
            report.ignored += 1;
            return;
        }
        let (origin, seq) = (r.origin.clone(), r.seq);
        // The common case, a write that saw what its key holds (every Raft
        // write; a last-writer-wins write made on top of the current value):
        // the frontier is the write alone, as `reset_key` would find, without
        // copying what is held.
        if self.losers_of(&r.key).is_empty() && self.get(&r.key).is_none_or(|h| conflict::supersedes(&r, h)) {
            report.applied += 1;
            self.put(r);
            self.mark_seen(&origin, seq);
            return;
        }
        let key = r.key.clone();
        let held = self.get(&key).cloned();
        if held.as_ref().is_none_or(|h| r.wins_over(h)) {
            report.applied += 1;
        } else {
            report.ignored += 1;
        }
        let mut versions: Vec<Record> =
            held.into_iter().chain(self.losers_of(&key).iter().cloned()).collect();
        versions.push(r);
        self.reset_key(&key, versions);
        self.mark_seen(&origin, seq);
    }

    /// The sequence number of the next local write: above everything seen from
    /// this origin. A store created empty writes under a fresh origin, so this
    /// is 1 then; it matters for a legacy origin (the bare node id), whose
    /// earlier writes peers may hand back.
    fn next_local_seq(&self, me: &Origin) -> u64 {
        // Peers' numbers are capped at MAX_SEQ on the way in, so this cannot saturate.
        self.seen(me).max(self.pending_last(me).unwrap_or(0)).saturating_add(1)
    }

    /// Notes that record `(origin, seq)` was merged or written here.
    fn mark_seen(&mut self, origin: &Origin, seq: u64) {
        let cur = self.seen(origin);
        if seq <= cur {
            return;
        }
        if seq == cur + 1 {
            self.vv.insert(origin.clone(), seq);
            self.drain(origin);
        } else {
            self.pending_mut(origin).insert(seq);
        }
    }

    /// Raises the vector for `origin` to `seq` on a sender's word (`covers`).
    fn raise_to(&mut self, origin: &Origin, seq: u64) {
        if seq > self.seen(origin) {
            self.vv.insert(origin.clone(), seq);
        }
        self.drain(origin);
    }

    /// Advances the vector for `origin` over pending sequence numbers that are now
    /// contiguous, and drops those already covered.
    fn drain(&mut self, origin: &Origin) {
        if !self.pending.contains_key(origin) && !self.base.pending.contains_key(origin) {
            return;
        }
        let start = self.seen(origin);
        let p = self.pending_mut(origin);
        let mut cur = start;
        while let Some(&first) = p.first() {
            if first <= cur {
                p.pop_first();
            } else if first == cur + 1 {
                p.pop_first();
                cur = first;
            } else {
                break;
            }
        }
        if cur > start {
            self.vv.insert(origin.clone(), cur);
        }
    }

    fn raise_floor(&mut self, origin: &Origin, seq: u64) {
        let cur = self.floor.get(origin).copied().unwrap_or_else(|| self.base.gc_floor.get(origin));
        if seq > cur {
            self.floor.insert(origin.clone(), seq);
        }
    }

    /// The changes of everything planned on the draft, in the order planned.
    pub(crate) fn finish(self) -> Changes {
        let base = self.base;
        let vv = self.vv.into_iter().filter(|(o, s)| *s > base.vv.get(o)).collect();
        let pending = self
            .pending
            .into_iter()
            .filter(|(o, set)| match base.pending.get(o) {
                Some(old) => old != set,
                None => !set.is_empty(),
            })
            .collect();
        Changes { feed: self.feed, vv, pending, gc_floor: self.floor, head: self.head, losers: self.losers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use spectrum_core::{ManualClock, Timestamp};
    use std::sync::Arc;

    fn node(id: &str) -> Origin {
        id.parse().unwrap()
    }

    fn rec(key: &str, value: Option<&str>, origin: &str, seq: u64, wall: u64) -> Record {
        Record {
            key: key.into(),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            stamp: Timestamp::new(wall, 0),
            origin: node(origin),
            seq,
            lineage: Default::default(),
        }
    }

    #[test]
    fn records_with_absurd_sequence_numbers_or_stamps_are_refused() {
        let too_far = rec("k", Some("v"), "n1", MAX_SEQ + 1, 5);
        let err = check_record(&too_far, 1024).unwrap_err();
        assert!(err.to_string().contains("sequence number"), "{err}");
        let mut future = rec("k", Some("v"), "n1", 1, 5);
        future.stamp = Timestamp::new(u64::MAX, u32::MAX);
        let err = check_record(&future, 1024).unwrap_err();
        assert!(err.to_string().contains("year 10000"), "{err}");
        assert!(check_record(&rec("k", Some("v"), "n1", MAX_SEQ, MAX_WALL_MS), 1024).is_ok());
    }

    fn hlc() -> Hlc {
        Hlc::new(Arc::new(ManualClock::new(1_000)))
    }

    fn merged(records: Vec<Record>) -> State {
        let mut st = State::default();
        let (c, _) = st.plan_merge(records, &VersionVector::default());
        st.commit(&c);
        st
    }

    #[test]
    fn planning_changes_nothing_until_committed() {
        let st = merged(vec![rec("k", Some("v"), "b", 1, 5)]);
        let (c, _) = st.plan_merge(vec![rec("j", Some("v"), "b", 2, 6)], &VersionVector::default());
        assert_eq!(st.len(), 1);
        assert_eq!(st.vv().get(&node("b")), 1);
        assert_eq!(c.feed.len(), 1);
        assert_eq!(c.vv.get(&node("b")), Some(&2));
    }

    #[test]
    fn a_merge_of_nothing_new_plans_no_change() {
        let st = merged(vec![rec("k", Some("v"), "b", 1, 5), rec("z", Some("v"), "b", 3, 5)]);
        let (c, report) = st.plan_merge(vec![rec("k", Some("v"), "b", 1, 5)], &VersionVector::default());
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(report.ignored, 1);
    }

    #[test]
    fn collection_drops_only_tombstones_the_horizon_covers_and_raises_the_floor() {
        let mut st = merged(vec![
            rec("gone", None, "b", 1, 5),
            rec("kept", Some("v"), "b", 2, 6),
            rec("later", None, "b", 3, 7),
        ]);
        let mut horizon = VersionVector::default();
        horizon.raise(&node("b"), 2);
        let clock = hlc();
        let (c, n) = st.plan_collect(&horizon, &clock);
        assert_eq!(n, 1);
        st.commit(&c);
        assert!(st.get("gone").is_none());
        assert!(st.get("later").is_some() && st.get("kept").is_some());
        assert_eq!(st.gc_floor().get(&node("b")), 1);
        assert!(clock.last() >= Timestamp::new(5, 0));
        let err = st.delta(&VersionVector::default(), usize::MAX).unwrap_err();
        assert!(matches!(err, StoreError::BehindHorizon { floor: 1, .. }), "{err}");
    }

    #[test]
    fn a_losing_tombstone_is_collected_so_replicas_that_collected_it_first_agree() {
        // b:1 deleted `k`; c:1, a put concurrent with it (its writer had lost its
        // disk and not yet seen the delete), won. A replica that collected b:1
        // before c:1 arrived holds c:1 alone; this one lists b:1 as its loser.
        let mut listing = merged(vec![rec("k", None, "b", 1, 5), rec("k", Some("new"), "c", 1, 9)]);
        assert_eq!(listing.conflicts("").len(), 1, "a delete concurrent with a put is a conflict");
        let mut collected_first = merged(vec![rec("k", None, "b", 1, 5)]);
        let mut horizon = VersionVector::default();
        horizon.raise(&node("b"), 1);
        horizon.raise(&node("c"), 1);
        for st in [&mut listing, &mut collected_first] {
            let (c, _) = st.plan_collect(&horizon, &hlc());
            st.commit(&c);
        }
        let (c, _) =
            collected_first.plan_merge(vec![rec("k", Some("new"), "c", 1, 9)], &VersionVector::default());
        collected_first.commit(&c);
        for st in [&listing, &collected_first] {
            assert!(st.conflicts("").is_empty(), "{:?}", st.conflicts(""));
            assert_eq!(st.get("k").and_then(|r| r.value), Some(Bytes::from_static(b"new")));
            assert_eq!(st.gc_floor().get(&node("b")), 1);
        }
        assert_eq!(listing.snapshot().records, collected_first.snapshot().records);
        // A put that lost to a tombstone is never collected: the key stays deleted
        // and the conflict listed until a write clears it.
        let mut deleted = merged(vec![rec("d", Some("old"), "e", 1, 5), rec("d", None, "f", 1, 9)]);
        horizon.raise(&node("e"), 1);
        horizon.raise(&node("f"), 1);
        let (c, n) = deleted.plan_collect(&horizon, &hlc());
        deleted.commit(&c);
        assert_eq!(n, 0);
        assert_eq!(deleted.conflicts("").len(), 1);
    }

    #[test]
    fn a_restore_drops_records_its_digest_covers_but_it_lacks() {
        let st = merged(vec![rec("stale", Some("old"), "c", 1, 5), rec("fresh", Some("new"), "c", 2, 6)]);
        let mut digest = VersionVector::default();
        digest.raise(&node("c"), 1);
        digest.raise(&node("a"), 4);
        let snap =
            Snapshot { records: vec![rec("other", Some("x"), "a", 4, 9)], digest, ..Snapshot::default() };
        let (c, _) = st.plan_restore(snap, &hlc());
        let mut st = st;
        st.commit(&c);
        assert!(st.get("stale").is_none(), "covered and absent: superseded at the maker");
        assert!(st.get("fresh").is_some(), "not covered: the maker has not seen it");
        assert_eq!(st.vv().get(&node("a")), 4);
        assert_eq!(st.gc_floor().get(&node("c")), 1);
    }

    /// `rec` with a lineage whose context has seen `origin` up to `seq`.
    fn saw(mut r: Record, origin: &str, seq: u64) -> Record {
        r.lineage.context.raise(&node(origin), seq);
        r
    }

    /// Pulls from `sender` into `receiver` with `budget` until a delta is
    /// complete, returning how many pulls it took (at most `limit`).
    fn pull_until_complete(sender: &State, receiver: &mut State, budget: usize, limit: usize) -> usize {
        for round in 1..=limit {
            let delta = sender.delta(receiver.vv(), budget).unwrap();
            let (c, _) = receiver.plan_merge(delta.records, &delta.covers);
            receiver.commit(&c);
            if delta.complete {
                return round;
            }
        }
        panic!("no complete delta after {limit} pulls");
    }

    #[test]
    fn a_cut_delta_vouches_for_no_gap_whose_superseding_record_it_left_out() {
        // a:1 was superseded by b:2, which saw it; the sender holds neither a:1 nor b:1.
        let sender = merged(vec![
            rec("x", Some("1"), "a", 1, 1),
            rec("y", Some("1"), "b", 1, 2),
            saw(rec("x", Some("2"), "b", 2, 3), "a", 1),
            saw(rec("y", Some("2"), "a", 2, 4), "b", 1),
        ]);
        assert!(sender.get("x").is_some_and(|r| r.origin == node("b")));
        let none = VersionVector::default();
        for budget in [1, 60, 1 << 20] {
            let delta = sender.delta(&VersionVector::default(), budget).unwrap();
            for (origin, &claim) in &delta.covers.entries {
                for gap in 1..=claim {
                    let lacking = sender
                        .held_above(&none)
                        .filter(|r| r.lineage.context.get(origin) >= gap)
                        .find(|r| !delta.records.iter().any(|d| d.token() == r.token()));
                    assert!(lacking.is_none(), "budget {budget}: vouched {origin}:{gap} without {lacking:?}");
                }
            }
        }
        let mut receiver = State::default();
        pull_until_complete(&sender, &mut receiver, 1, 10);
        assert_eq!(receiver.vv(), sender.vv());
        assert_eq!(receiver.snapshot().records, sender.snapshot().records);
    }

    #[test]
    fn a_gap_at_the_start_of_a_long_range_is_crossed_with_a_small_budget() {
        // a:1 was overwritten by b:1; then a writes 40 more records.
        let mut records =
            vec![rec("k", Some("old"), "a", 1, 1), saw(rec("k", Some("new"), "b", 1, 2), "a", 1)];
        records.extend((2..=41).map(|seq| rec(&format!("key{seq}"), Some("v"), "a", seq, 10 + seq)));
        let sender = merged(records);
        let mut receiver = State::default();
        let pulls = pull_until_complete(&sender, &mut receiver, 1, 60);
        assert!(pulls <= 43, "{pulls} pulls of one record for 41 records and a gap");
        assert_eq!(receiver.vv(), sender.vv());
        assert_eq!(receiver.snapshot().records, sender.snapshot().records);
    }

    #[test]
    fn rebuilding_refuses_two_keys_with_one_sequence_number() {
        let parts = Parts {
            records: vec![rec("x", Some("1"), "b", 1, 1), rec("y", Some("1"), "b", 1, 1)],
            ..Parts::default()
        };
        let err = State::from_parts(parts).unwrap_err();
        assert!(err.contains("b:1"), "{err}");
    }
}
