//! [`Session`]: read your own writes across a whole client session.
//!
//! A session is a version vector (origin → highest sequence number) that covers
//! every write a client made. Each write's version token is a session of one
//! entry; the client merges the tokens of its writes (pointwise maximum) and sends
//! the session with each read, and the answering node waits until its own
//! version vector covers the session, so a read sees every earlier write of the
//! session whichever node the balancer picks.
//!
//! Its text form lists the entries as version tokens separated by commas, in
//! origin order: `n1~3f09c2d4a1b87e65:42,n2~00000000000000a1:7`. The empty string
//! is the empty session. A session names at most [`MAX_SESSION_ORIGINS`] origins
//! and its text is at most [`MAX_SESSION_LEN`] bytes; anything else is refused
//! with a [`InvalidSession`] that says what is wrong.
//!
//! ```
//! use spectrum::session::Session;
//!
//! let mut session = Session::default();
//! session.merge_token(&"n1:4".parse()?);
//! session.merge(&"n1:2,n2:9".parse()?);
//! assert_eq!(session.to_string(), "n1:4,n2:9");
//! assert!(session.covers(&"n2:9".parse()?));
//! assert!("n1:4,,n2".parse::<Session>().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use spectrum_replication::{Origin, VersionToken, VersionVector};
use thiserror::Error;

/// Most origins a session may name (each store incarnation that took one of the
/// session's writes is one origin).
pub const MAX_SESSION_ORIGINS: usize = 64;

/// Longest text form of a session accepted, in bytes.
pub const MAX_SESSION_LEN: usize = 8 * 1024;

/// What a client session has written: per origin, the highest sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    vector: VersionVector,
}

/// How far a node is behind a session on one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGap {
    /// The origin the node lags on.
    pub origin: Origin,
    /// The sequence number the session needs.
    pub wanted: u64,
    /// The sequence number the node holds (0 for none).
    pub held: u64,
}

impl fmt::Display for SessionGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let behind = self.wanted - self.held.min(self.wanted);
        write!(f, "{} up to {} (holds {}, {} behind)", self.origin, self.wanted, self.held, behind)
    }
}

/// A session's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidSession {
    /// The text is longer than [`MAX_SESSION_LEN`].
    #[error("session is {len} bytes, at most {MAX_SESSION_LEN} are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// It names more than [`MAX_SESSION_ORIGINS`] origins.
    #[error("session names {count} origins, at most {MAX_SESSION_ORIGINS} are accepted")]
    TooManyOrigins {
        /// How many it names.
        count: usize,
    },
    /// One entry is not a version token `origin:seq`.
    #[error("session entry {index} ({entry:?}) is not a version token origin:seq")]
    Entry {
        /// Its position, from 0.
        index: usize,
        /// The entry (cut to 80 characters).
        entry: String,
    },
    /// One origin appears twice.
    #[error("session names origin {origin} twice")]
    Duplicate {
        /// The origin.
        origin: Origin,
    },
}

impl Session {
    /// The session of every write `vector` names.
    pub fn from_vector(vector: VersionVector) -> Self {
        Self { vector }
    }

    /// Whether the session names no write.
    pub fn is_empty(&self) -> bool {
        self.vector.entries.is_empty()
    }

    /// The sequence number the session holds for each origin.
    pub fn vector(&self) -> &VersionVector {
        &self.vector
    }

    /// Adds one write (a version token) to the session.
    pub fn merge_token(&mut self, token: &VersionToken) {
        if token.seq > 0 {
            self.vector.raise(&token.origin, token.seq);
        }
    }

    /// Adds every write of `other` (the pointwise maximum).
    pub fn merge(&mut self, other: &Session) {
        for (origin, seq) in &other.vector.entries {
            self.vector.raise(origin, *seq);
        }
    }

    /// Whether the session includes the write named by `token`.
    pub fn covers(&self, token: &VersionToken) -> bool {
        self.vector.covers(token)
    }

    /// What `held` (a node's version vector) lacks of this session; empty when it
    /// covers the session.
    pub fn missing_from(&self, held: &VersionVector) -> Vec<SessionGap> {
        self.vector
            .entries
            .iter()
            .filter(|(origin, wanted)| held.get(origin) < **wanted)
            .map(|(origin, wanted)| SessionGap {
                origin: origin.clone(),
                wanted: *wanted,
                held: held.get(origin),
            })
            .collect()
    }
}

impl From<&VersionToken> for Session {
    fn from(token: &VersionToken) -> Self {
        let mut session = Session::default();
        session.merge_token(token);
        session
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (origin, seq)) in self.vector.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{origin}:{seq}")?;
        }
        Ok(())
    }
}

impl FromStr for Session {
    type Err = InvalidSession;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_SESSION_LEN {
            return Err(InvalidSession::TooLong { len: s.len() });
        }
        let mut session = Session::default();
        if s.is_empty() {
            return Ok(session);
        }
        let count = s.split(',').count();
        if count > MAX_SESSION_ORIGINS {
            return Err(InvalidSession::TooManyOrigins { count });
        }
        for (index, entry) in s.split(',').enumerate() {
            let bad = || InvalidSession::Entry { index, entry: entry.chars().take(80).collect() };
            let token: VersionToken = entry.trim().parse().map_err(|_| bad())?;
            if token.seq == 0 {
                return Err(bad());
            }
            if session.vector.entries.contains_key(&token.origin) {
                return Err(InvalidSession::Duplicate { origin: token.origin });
            }
            session.merge_token(&token);
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(text: &str) -> Session {
        text.parse().unwrap()
    }

    #[test]
    fn text_form_round_trips_in_origin_order() {
        let s = session("n2~00000000000000a1:7, n1:4");
        assert_eq!(s.to_string(), "n1:4,n2~00000000000000a1:7");
        assert_eq!(session(&s.to_string()), s);
        assert_eq!(session("").to_string(), "");
        assert!(session("  ").is_empty());
    }

    #[test]
    fn a_version_token_is_a_session_of_one_entry() {
        let token: VersionToken = "n1~3f09c2d4a1b87e65:42".parse().unwrap();
        assert_eq!(Session::from(&token).to_string(), token.to_string());
    }

    #[test]
    fn merge_keeps_the_pointwise_maximum() {
        let mut s = session("n1:4,n2:1");
        s.merge(&session("n1:2,n2:9,n3:1"));
        assert_eq!(s, session("n1:4,n2:9,n3:1"));
        assert!(s.covers(&"n2:9".parse().unwrap()));
        assert!(!s.covers(&"n2:10".parse().unwrap()));
    }

    #[test]
    fn missing_names_each_origin_and_how_far_behind() {
        let mut held = VersionVector::default();
        held.raise(&"n1".parse().unwrap(), 4);
        held.raise(&"n2".parse().unwrap(), 3);
        let gaps = session("n1:4,n2:9,n3:1").missing_from(&held);
        let shown: Vec<String> = gaps.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["n2 up to 9 (holds 3, 6 behind)", "n3 up to 1 (holds 0, 1 behind)"]);
        assert!(session("n1:4").missing_from(&held).is_empty());
    }

    #[test]
    fn malformed_sessions_are_refused_with_what_is_wrong() {
        for (text, expected) in [
            ("n1:4,,n2:1", "entry 1"),
            ("n1", "entry 0"),
            ("n1:x", "entry 0"),
            ("n1:0", "entry 0"),
            ("bad id!:3", "entry 0"),
            ("n1:1,n1:2", "twice"),
        ] {
            let error = text.parse::<Session>().unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let many = (0..=MAX_SESSION_ORIGINS).map(|i| format!("n{i}:1")).collect::<Vec<_>>().join(",");
        assert!(matches!(many.parse::<Session>(), Err(InvalidSession::TooManyOrigins { .. })));
        let long = "n".repeat(MAX_SESSION_LEN + 1);
        assert!(matches!(long.parse::<Session>(), Err(InvalidSession::TooLong { .. })));
    }
}
