//! Records, writes, version vectors and deltas: the data the store and the
//! replicator exchange.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use spectrum_core::Timestamp;

use crate::error::StoreError;
use crate::origin::Origin;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest sequence number accepted from a peer: far beyond any real writer, and
/// far enough from `u64::MAX` that numbering can never overflow.
pub const MAX_SEQ: u64 = u64::MAX / 2;
/// Largest stamp (milliseconds since the epoch) accepted from a peer: the year
/// 10,000. A stamp past it is corrupt or hostile, and would pin a key forever.
pub const MAX_WALL_MS: u64 = 253_402_300_800_000;
/// Default largest value accepted, in bytes (1 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// One replicated entry: a value or a tombstone, stamped by its writer.
///
/// Two records for the same key are ordered by `(stamp, origin)`: the greater one
/// wins (last writer wins), which makes merge commutative, associative and
/// idempotent. `(origin, seq)` names the write: each store incarnation writes
/// under an [`Origin`] of its own, so no two writes ever share it. Its
/// [`lineage`](Record::lineage) says which earlier writes to the key it saw, so
/// that two writes that did not see each other are kept as a
/// [conflict](crate::conflict) rather than lost silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The value, or `None` for a tombstone (a delete).
    pub value: Option<Bytes>,
    /// The writer's HLC stamp.
    pub stamp: Timestamp,
    /// The store that wrote it: its node and incarnation (see [`Origin`]).
    pub origin: Origin,
    /// The writer's per-origin sequence number (1, 2, 3, … per origin).
    pub seq: u64,
    /// What the writer's store held for the key when it wrote: see [`Lineage`].
    pub lineage: Lineage,
}

/// Which earlier writes to its key a write saw (and so replaced), recorded by
/// the writer's store when it applied the write.
///
/// - `replaces` names the record the store held for the key (the winner), or
///   `None` when it held none.
/// - `context` is the causal context of the write for its key: per origin, the
///   highest sequence number of a write to this key that this write supersedes.
///   It is the join of the held winner's and every held conflict loser's
///   context and version (so a write that saw a conflict supersedes both
///   sides), or, for a key the store holds nothing for, its tombstone floor
///   (every write to the key below it was deleted and collected). One
///   origin's writes to one key are ordered on that origin, so a vector per
///   key is exact: the dotted version vectors of Preguiça et al., "Dotted
///   Version Vectors: Logical Clocks for Optimistic Replication" (2010), as
///   Riak uses them for siblings.
///
/// Records written before lineages existed (or by a node that predates them)
/// have an empty lineage: they supersede nothing by context, so such a write
/// and a concurrent one show as a conflict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// The version (`origin:seq`) the writer's store held for the key, if any.
    pub replaces: Option<VersionToken>,
    /// Per origin, the highest sequence number of a write to this key that this
    /// write supersedes.
    pub context: VersionVector,
}

impl Record {
    /// Whether this record beats `other` for the same key under last-writer-wins.
    pub fn wins_over(&self, other: &Record) -> bool {
        (self.stamp, &self.origin) > (other.stamp, &other.origin)
    }

    /// Whether this record's writer saw `other` (a record for the same key)
    /// before writing, by this record's [`Lineage::context`]: `other` is then
    /// superseded, not in conflict. A record does not supersede itself.
    pub fn saw(&self, other: &Record) -> bool {
        self.lineage.context.get(&other.origin) >= other.seq
    }

    /// Whether this record is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Approximate encoded size, used for byte budgets.
    pub fn encoded_len(&self) -> usize {
        let lineage = self.lineage.replaces.as_ref().map_or(0, |t| t.origin.text_len() + 12)
            + self.lineage.context.entries.keys().map(|o| o.text_len() + 14).sum::<usize>();
        self.key.len() + self.value.as_ref().map_or(0, Bytes::len) + self.origin.text_len() + 24 + lineage
    }

    /// The version token naming this write.
    pub fn token(&self) -> VersionToken {
        VersionToken { origin: self.origin.clone(), seq: self.seq }
    }
}

/// One local write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// Delete `key` (writes a tombstone).
    Delete {
        /// The key.
        key: String,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }
}

/// Local writes applied atomically, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The writes, in order.
    pub writes: Vec<Write>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.writes.push(Write::Put { key: key.into(), value: value.into() });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.writes.push(Write::Delete { key: key.into() });
        self
    }

    /// Checks every key and value against the limits.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidKey`] or [`StoreError::ValueTooLarge`] for the first bad write.
    pub fn validate(&self, max_value_bytes: usize) -> Result<(), StoreError> {
        if self.writes.is_empty() {
            return Err(StoreError::EmptyBatch);
        }
        for w in &self.writes {
            validate_key(w.key())?;
            if let Write::Put { key, value } = w
                && value.len() > max_value_bytes
            {
                return Err(StoreError::ValueTooLarge {
                    key: key.clone(),
                    len: value.len(),
                    max: max_value_bytes,
                });
            }
        }
        Ok(())
    }
}

/// Checks a key: 1 to [`MAX_KEY_BYTES`] bytes, no control characters.
///
/// # Errors
///
/// [`StoreError::InvalidKey`] with the reason.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        "key must not be empty"
    } else if key.len() > MAX_KEY_BYTES {
        "key is longer than 512 bytes"
    } else if key.chars().any(char::is_control) {
        "key holds a control character"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey { key: key.chars().take(80).collect(), reason })
}

/// Per origin, the highest contiguous sequence number a store has seen: the store
/// holds (or holds something newer than) every record `(origin, seq <= vv[origin])`.
///
/// It is the digest two nodes exchange: one entry per [`Origin`], that is per
/// store incarnation that ever wrote (a node that lost its disk adds one), so
/// its size is O(nodes), not O(keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector {
    /// Highest contiguous sequence number per origin.
    pub entries: BTreeMap<Origin, u64>,
}

impl VersionVector {
    /// The sequence number seen for `origin` (0 when none).
    pub fn get(&self, origin: &Origin) -> u64 {
        self.entries.get(origin).copied().unwrap_or(0)
    }

    /// Raises the entry for `origin` to at least `seq`.
    pub fn raise(&mut self, origin: &Origin, seq: u64) {
        let e = self.entries.entry(origin.clone()).or_insert(0);
        if seq > *e {
            *e = seq;
        }
    }

    /// Whether this vector covers the write named by `token`.
    pub fn covers(&self, token: &VersionToken) -> bool {
        self.get(&token.origin) >= token.seq
    }

    /// Whether this vector covers every entry of `other`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(o, s)| self.get(o) >= *s)
    }

    /// The element-wise minimum: what both vectors cover.
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        let entries = self
            .entries
            .iter()
            .map(|(o, s)| (o.clone(), (*s).min(other.get(o))))
            .filter(|(_, s)| *s > 0)
            .collect();
        VersionVector { entries }
    }

    /// The element-wise maximum: what either vector covers.
    pub fn join(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.clone();
        for (o, s) in &other.entries {
            out.raise(o, *s);
        }
        out
    }

    /// How many records `other` has seen that this vector has not.
    pub fn lag_behind(&self, other: &VersionVector) -> u64 {
        other.entries.iter().map(|(o, s)| s.saturating_sub(self.get(o))).sum()
    }
}

/// Names one acknowledged write: a read carrying it is answered only by a node
/// whose state covers it. Its text form is `origin:seq`, such as
/// `n1~3f09c2d4a1b87e65:42` (or `n1:42` for a store from before incarnations; see
/// [`Origin`]).
///
/// ```
/// use spectrum_replication::VersionToken;
///
/// let token: VersionToken = "n1~3f09c2d4a1b87e65:42".parse()?;
/// assert_eq!((token.origin.node().as_str(), token.seq), ("n1", 42));
/// assert_eq!(token.to_string(), "n1~3f09c2d4a1b87e65:42");
/// assert!("n1~3f09c2d4a1b87e65".parse::<VersionToken>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionToken {
    /// The store that accepted the write (its node is `origin.node()`).
    pub origin: Origin,
    /// Its sequence number there.
    pub seq: u64,
}

impl fmt::Display for VersionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.origin, self.seq)
    }
}

impl FromStr for VersionToken {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The reason is cut like the token: it may quote what it was given.
        let bad = |reason: String| StoreError::InvalidToken {
            token: s.chars().take(80).collect(),
            reason: reason.chars().take(160).collect(),
        };
        let (origin, seq) = s.rsplit_once(':').ok_or_else(|| bad("expected ORIGIN:SEQ".into()))?;
        Ok(VersionToken {
            origin: origin.parse().map_err(|e| bad(format!("its origin: {e}")))?,
            seq: seq.parse().map_err(|e| bad(format!("its sequence number: {e}")))?,
        })
    }
}

/// What a peer lacks, computed from its digest: records plus, per origin, the
/// sequence number up to which the sender has sent everything it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// The records, ascending by sequence number within each origin.
    pub records: Vec<Record>,
    /// Per origin, the receiver may raise its version vector to this value once it
    /// has merged `records`.
    pub covers: VersionVector,
    /// `false` when the byte budget cut the delta short; ask again for the rest.
    pub complete: bool,
}

/// What merging remote records changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Records that won and were stored.
    pub applied: usize,
    /// Records that lost to, or equalled, what was stored.
    pub ignored: usize,
}

/// A consistent copy of a whole store: every record (tombstones included) and
/// the vectors that say what those records stand for.
///
/// [`ConfigStore::restore`](crate::ConfigStore::restore) merges one into another
/// store; the replicator sends one (in pages) to a peer that is behind the
/// tombstone horizon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every stored record, in key order.
    pub records: Vec<Record>,
    /// Every stored conflict loser (see [`conflict`](crate::conflict)), in key
    /// order: records kept beside the winner of their key because neither saw
    /// the other.
    pub conflicts: Vec<Record>,
    /// The maker's version vector when the copy was taken: the records stand for
    /// every write it covers (a write it covers whose key has no record here was
    /// superseded by a collected tombstone).
    pub digest: VersionVector,
    /// Per origin, the highest sequence number of a tombstone the maker has
    /// collected (see [`ConfigStore::collect_tombstones`](crate::ConfigStore::collect_tombstones)).
    pub gc_floor: VersionVector,
    /// The maker's change-feed position when the copy was taken: reading
    /// [`changes_since`](crate::ConfigStore::changes_since) from here on the same
    /// store continues the copy with no gap. Meaningless on another store.
    pub position: u64,
}

/// One entry of a store's change feed (see
/// [`ConfigStore::changes_since`](crate::ConfigStore::changes_since)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its position in this store's feed: 1, 2, 3, … with no gaps. Positions are
    /// local to one store (a durable store keeps numbering across restarts).
    pub index: u64,
    /// The key that changed.
    pub key: String,
    /// The record now stored for `key`, or `None` when the store dropped the key's
    /// record: a collected tombstone, or a record a restored snapshot showed to
    /// be superseded.
    pub record: Option<Record>,
    /// For a dropped record (`record` is `None`): whether what was dropped was a
    /// tombstone (a collected delete), which changes nothing a reader sees: the
    /// key was already deleted. `false` for a stored record.
    pub dropped_tombstone: bool,
}

/// A page of the change feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeBatch {
    /// The changes, in feed order.
    pub changes: Vec<Change>,
    /// Where to resume: pass it as `from` to the next call. Past every change read,
    /// including those skipped because their key did not match the prefix.
    pub position: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tokens_round_trip_with_or_without_an_incarnation() {
        for text in ["n1:42", "n1~3f09c2d4a1b87e65:42", "node-1.eu_west~0000000000000001:1"] {
            let token: VersionToken = text.parse().unwrap();
            assert_eq!(token.to_string(), text);
        }
        let legacy: VersionToken = "n1:7".parse().unwrap();
        assert!(legacy.origin.is_legacy());
    }

    #[test]
    fn hostile_version_tokens_are_refused_without_panicking() {
        let huge = format!("{}:1", "n".repeat(1 << 16));
        for bad in [
            "",
            ":",
            "n1",
            "n1:",
            ":5",
            "n1:x",
            "n1:-1",
            "n1:18446744073709551616",
            "n1~:5",
            "n1~1:5",
            "n1~0000000000000000:5",
            "n 1:5",
            "n1~3f09c2d4a1b87e65",
            huge.as_str(),
        ] {
            let err = bad.parse::<VersionToken>().unwrap_err();
            assert!(
                matches!(&err, StoreError::InvalidToken { token, reason } if token.len() <= 80 && reason.len() <= 160),
                "{bad:?}: {err}"
            );
        }
        // The reason says which part is wrong.
        let origin = "raft~0000000000000000:1".parse::<VersionToken>().unwrap_err().to_string();
        assert!(origin.contains(": its origin: "), "{origin}");
        let seq = "n1:x".parse::<VersionToken>().unwrap_err().to_string();
        assert!(seq.contains(": its sequence number: "), "{seq}");
        assert!("n1".parse::<VersionToken>().unwrap_err().to_string().ends_with("expected ORIGIN:SEQ"));
    }

    #[test]
    fn a_version_vector_covers_per_incarnation() {
        let old: Origin = "n1".parse().unwrap();
        let new: Origin = "n1~0000000000000001".parse().unwrap();
        let mut vv = VersionVector::default();
        vv.raise(&old, 5);
        assert!(vv.covers(&VersionToken { origin: old.clone(), seq: 5 }));
        assert!(!vv.covers(&VersionToken { origin: new.clone(), seq: 1 }), "another incarnation's writes");
        vv.raise(&new, 1);
        assert_eq!(vv.entries.len(), 2);
    }
}
