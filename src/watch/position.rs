//! [`WatchPosition`]: where a watcher resumes, on the node that issued it or on any other.

use std::fmt;
use std::str::FromStr;

use spectrum_replication::{InvalidOrigin, Origin, VersionVector};
use thiserror::Error;

use crate::session::{InvalidSession, Session};

/// Where a watch resumes: the store (its [`Origin`], one incarnation of one
/// node) whose change feed issued it, the feed index of the last change the
/// watcher was given, and `seen`, a version vector of writes the watcher has
/// been shown (or that were superseded by writes it was shown).
///
/// On the node that issued it, a watch resumes exactly from `index` in the
/// node's durable change log. Any other node (the balancer may send a
/// reconnecting client anywhere) has other feed positions, so it resumes from
/// `seen`: it waits until it holds every write `seen` names, then sends, for each
/// key under the prefix, the newest record it holds that `seen` does not cover,
/// and follows its own feed from there. See the [module docs](crate::watch) for
/// what such a resume coalesces.
///
/// Its text form is `origin@index/seen`, with `seen` written as a session
/// (`n1~3f09c2d4a1b87e65@42/n1~3f09c2d4a1b87e65:40,n2~00000000000000a1:7`); the
/// `/seen` part may be empty. At most [`MAX_SESSION_LEN`](crate::session::MAX_SESSION_LEN)
/// bytes for `seen`.
///
/// ```
/// use spectrum::watch::WatchPosition;
///
/// let p: WatchPosition = "n1~3f09c2d4a1b87e65@42/n1~3f09c2d4a1b87e65:40,n2:7".parse()?;
/// assert_eq!(p.index, 42);
/// assert_eq!(p.seen.entries.len(), 2);
/// assert_eq!(p.to_string().parse::<WatchPosition>()?, p);
/// assert!("n1@x/".parse::<WatchPosition>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchPosition {
    /// The store whose feed `index` belongs to.
    pub origin: Origin,
    /// The feed index of the last change given (0: none yet).
    pub index: u64,
    /// Writes the watcher has been shown.
    pub seen: VersionVector,
}

/// A watch position's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidWatchPosition {
    /// No `@` separates the origin from the index.
    #[error("watch position {0:?} is not origin@index/seen")]
    Shape(String),
    /// The origin is malformed.
    #[error("watch position origin: {0}")]
    Origin(#[from] InvalidOrigin),
    /// The index is not a number.
    #[error("watch position index {0:?} is not a number")]
    Index(String),
    /// The seen vector is malformed.
    #[error("watch position seen vector: {0}")]
    Seen(#[from] InvalidSession),
}

impl WatchPosition {
    /// The position `index` of `origin`'s feed, having seen `seen`.
    pub fn new(origin: Origin, index: u64, seen: VersionVector) -> Self {
        Self { origin, index, seen }
    }
}

impl fmt::Display for WatchPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}/", self.origin, self.index)?;
        for (i, (origin, seq)) in self.seen.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{origin}:{seq}")?;
        }
        Ok(())
    }
}

impl FromStr for WatchPosition {
    type Err = InvalidWatchPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let shape = || InvalidWatchPosition::Shape(s.chars().take(80).collect());
        let (origin, rest) = s.split_once('@').ok_or_else(shape)?;
        let (index, seen) = rest.split_once('/').unwrap_or((rest, ""));
        let origin: Origin = origin.parse()?;
        let index =
            index.parse().map_err(|_| InvalidWatchPosition::Index(index.chars().take(24).collect()))?;
        let seen: Session = seen.parse()?;
        Ok(Self { origin, index, seen: seen.vector().clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::MAX_SESSION_LEN;

    #[test]
    fn positions_round_trip_and_malformed_ones_say_what_is_wrong() {
        let p: WatchPosition = "n1@0/".parse().unwrap();
        assert_eq!((p.index, p.seen.entries.len()), (0, 0));
        assert_eq!(p.to_string(), "n1@0/");
        assert_eq!("n1@5".parse::<WatchPosition>().unwrap().index, 5, "the seen part may be left out");
        for (text, expected) in [
            ("n1", "origin@index"),
            ("bad id!@1/", "origin"),
            ("n1@-1/", "index"),
            ("n1@1/n2", "seen"),
            ("n1@1/n2:1,n2:2", "seen"),
        ] {
            let e = text.parse::<WatchPosition>().unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
        let long = format!("n1@1/{}", "n".repeat(MAX_SESSION_LEN + 1));
        assert!(long.parse::<WatchPosition>().is_err());
    }
}
