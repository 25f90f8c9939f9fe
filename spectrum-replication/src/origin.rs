//! [`Origin`]: the writer a record's sequence number belongs to, one per store
//! incarnation.
//!
//! A sequence number means something only with the writer that issued it: a
//! version vector says "I hold every write of origin `o` up to `n`". If a node
//! numbered its writes under its node id alone, a node that came back on an empty
//! disk would number its next write 1 again, under an id its peers' digests
//! already cover past 1: they would ignore the new write, and the node would never
//! be sent the old one. The copies would differ for good while every digest looked
//! equal.
//!
//! So each **store incarnation** writes under an origin of its own: the node id
//! plus an incarnation number drawn at random when the store is created empty,
//! saved with the store, and kept for as long as that store lives (a durable
//! store keeps it across restarts, so numbering simply continues). A node
//! restarted on an empty disk gets a new incarnation and starts a new, unused
//! sequence. This is Corrosion's *site id* (each cr-sqlite database has its own,
//! not each host), and Riak's rule of one actor per vnode incarnation in its
//! dotted version vectors.
//!
//! What it costs: a version vector holds one entry per incarnation that ever
//! wrote, not per node. Old incarnations' entries are kept (the records they
//! wrote may still be stored); there is one more per lost disk, so an idle sync
//! round still costs O(nodes), with a few extra bytes per entry.
//!
//! The node an origin belongs to stays explicit ([`Origin::node`]): membership,
//! liveness, clock offsets and acknowledgements are about nodes, and the
//! tombstone horizon maps each member to the origin its store writes under now
//! (see [`horizon`](crate::horizon)).
//!
//! # Text form
//!
//! `node` or `node~incarnation`, the incarnation as 16 lowercase hex digits:
//! `n1~3f09c2d4a1b87e65`. `~` is not in the node-id alphabet (see
//! [`check_identifier`](spectrum_core::id::check_identifier)), so the split is
//! unambiguous. Incarnation 0 is written `node`: it is the origin of a store
//! created before incarnations existed, whose records name the bare node id, so
//! those records, digests and version tokens (`n1:42`) stay valid. Every text
//! form parses back to the same origin and every origin has exactly one text
//! form (`n1~0000000000000000` is refused).
//!
//! ```
//! use spectrum_replication::Origin;
//!
//! let origin: Origin = "n1~3f09c2d4a1b87e65".parse()?;
//! assert_eq!(origin.node().as_str(), "n1");
//! assert_eq!(origin.incarnation(), 0x3f09_c2d4_a1b8_7e65);
//! assert_eq!(origin.to_string(), "n1~3f09c2d4a1b87e65");
//!
//! // A store from before incarnations writes under the bare node id.
//! let legacy: Origin = "n1".parse()?;
//! assert!(legacy.is_legacy());
//!
//! // A fresh store gets a fresh one.
//! let fresh = Origin::fresh(origin.node().clone());
//! assert_eq!(fresh.node(), origin.node());
//! assert!(!fresh.is_legacy());
//! assert!("n1~xyz".parse::<Origin>().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use spectrum_core::{InvalidId, NodeId};
use thiserror::Error;

/// Separates the node id from the incarnation in an origin's text form.
const SEPARATOR: char = '~';
// Display writes it as one byte.
const _: () = assert!(SEPARATOR.is_ascii());

/// Hex digits of an incarnation in the text form.
const INCARNATION_DIGITS: usize = 16;

/// The writer of a record: a node's store incarnation. Sequence numbers are
/// per origin. See the [module docs](crate::origin).
///
/// Origins order by node id, then incarnation (the legacy incarnation 0
/// first); last-writer-wins breaks equal stamps with this order.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    node: NodeId,
    incarnation: u64,
}

impl Origin {
    /// The origin of incarnation `incarnation` of `node`'s store (0: the legacy
    /// origin, see [`legacy`](Self::legacy)).
    pub fn new(node: NodeId, incarnation: u64) -> Self {
        Self { node, incarnation }
    }

    /// The origin of a store created before incarnations existed: the bare
    /// node id (incarnation 0).
    pub fn legacy(node: NodeId) -> Self {
        Self::new(node, 0)
    }

    /// A new origin for a store of `node` created empty: a random, non-zero
    /// incarnation (64 bits, so two stores of one node never share one in
    /// practice).
    pub fn fresh(node: NodeId) -> Self {
        Self::new(node, rand::rng().random_range(1..=u64::MAX))
    }

    /// The node whose store writes under this origin.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The store incarnation (0 for the legacy origin).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether this is the legacy origin: the bare node id, written by a store
    /// created before incarnations existed.
    pub fn is_legacy(&self) -> bool {
        self.incarnation == 0
    }

    /// The length of the text form, in bytes.
    pub fn text_len(&self) -> usize {
        let suffix = if self.is_legacy() { 0 } else { 1 + INCARNATION_DIGITS };
        self.node.as_str().len() + suffix
    }
}

impl From<NodeId> for Origin {
    /// The legacy origin of `node` (see [`Origin::legacy`]).
    fn from(node: NodeId) -> Self {
        Self::legacy(node)
    }
}

impl fmt::Display for Origin {
    /// `node~incarnation`, the incarnation as 16 lower-case hex digits (the
    /// bare node for the legacy origin). Written without the formatting
    /// machinery's padding: every record a store writes to its file or sends
    /// names its origin this way, two or three times.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.node.as_str())?;
        if self.is_legacy() {
            return Ok(());
        }
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 17];
        text[0] = SEPARATOR as u8;
        for (i, digit) in text[1..].iter_mut().enumerate() {
            *digit = DIGITS[((self.incarnation >> (60 - 4 * i)) & 0xf) as usize];
        }
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({:?})", self.to_string())
    }
}

/// A text that is not an origin (see the [text form](crate::origin#text-form)).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidOrigin {
    /// The part before `~` (or the whole text) is not a node id.
    #[error("invalid origin {origin:?}: {source}")]
    Node {
        /// The text (cut to 80 characters).
        origin: String,
        /// Why the node id was refused.
        source: InvalidId,
    },
    /// The part after `~` is not 16 lowercase hex digits, or is all zeros
    /// (incarnation 0 is written without `~`).
    #[error(
        "invalid origin {origin:?}: the incarnation after '~' must be 16 lowercase hex digits, not all zero"
    )]
    Incarnation {
        /// The text (cut to 80 characters).
        origin: String,
    },
}

impl FromStr for Origin {
    type Err = InvalidOrigin;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = || s.chars().take(80).collect::<String>();
        let (node, incarnation) = match s.split_once(SEPARATOR) {
            None => (s, 0),
            Some((node, digits)) => {
                let valid = digits.len() == INCARNATION_DIGITS
                    && digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                let incarnation = u64::from_str_radix(digits, 16).ok().filter(|i| valid && *i != 0);
                (node, incarnation.ok_or_else(|| InvalidOrigin::Incarnation { origin: shown() })?)
            }
        };
        let node = NodeId::new(node).map_err(|source| InvalidOrigin::Node { origin: shown(), source })?;
        Ok(Self::new(node, incarnation))
    }
}

impl TryFrom<&str> for Origin {
    type Error = InvalidOrigin;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        id.parse().unwrap()
    }

    #[test]
    fn origins_round_trip_through_their_text_form() {
        for origin in [
            Origin::legacy(node("n1")),
            Origin::new(node("node-1.eu_west"), 1),
            Origin::new(node("n1"), u64::MAX),
            Origin::new(node(&"x".repeat(64)), 0x0123_4567_89ab_cdef),
            Origin::fresh(node("n2")),
        ] {
            let text = origin.to_string();
            assert_eq!(text.len(), origin.text_len(), "{text}");
            assert_eq!(text.parse::<Origin>().unwrap(), origin, "{text}");
        }
        assert_eq!(Origin::new(node("n1"), 1).to_string(), "n1~0000000000000001");
        assert_eq!(Origin::from(node("n1")).to_string(), "n1");
        assert_eq!(format!("{:?}", Origin::legacy(node("n1"))), "Origin(\"n1\")");
    }

    #[test]
    fn hostile_or_non_canonical_text_is_refused_without_panicking() {
        let long = format!("{}~{}", "x".repeat(65), "1".repeat(16));
        let huge = "~".repeat(100_000);
        for bad in [
            "",
            "~",
            "n1~",
            "~0000000000000001",
            "n1~0000000000000000",
            "n1~1",
            "n1~00000000000000001",
            "n1~000000000000000G",
            "n1~ABCDEF0123456789",
            "n1~+000000000000001",
            "n1~abcdef0123456789~abcdef0123456789",
            "n1~abcdef012345678é",
            "no spaces",
            "n1:3",
            long.as_str(),
            huge.as_str(),
        ] {
            let err = bad.parse::<Origin>().unwrap_err();
            assert!(err.to_string().len() < 400, "{bad:?}: the message stays short");
        }
        assert!(matches!("n1~1".parse::<Origin>(), Err(InvalidOrigin::Incarnation { .. })));
        assert!(matches!("a b~0000000000000001".parse::<Origin>(), Err(InvalidOrigin::Node { .. })));
    }

    #[test]
    fn fresh_origins_differ_and_are_never_legacy() {
        let a = Origin::fresh(node("n1"));
        let b = Origin::fresh(node("n1"));
        assert_ne!(a, b);
        assert!(!a.is_legacy() && !b.is_legacy());
    }

    #[test]
    fn origins_order_by_node_then_incarnation() {
        let mut all = [
            Origin::new(node("b"), 1),
            Origin::new(node("a"), 2),
            Origin::legacy(node("b")),
            Origin::new(node("a"), 1),
        ];
        all.sort();
        let text: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["a~0000000000000001", "a~0000000000000002", "b", "b~0000000000000001"]);
    }
}
