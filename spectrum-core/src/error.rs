//! Error pieces shared by every Spectrum crate.

use thiserror::Error;

/// An identifier ([`NodeId`](crate::NodeId) or [`ClusterId`](crate::ClusterId)) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The identifier was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of identifier.
        kind: &'static str,
    },
    /// The identifier was longer than allowed.
    #[error("{kind} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Which kind of identifier.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum length in bytes.
        max: usize,
    },
    /// The identifier held a character outside `[A-Za-z0-9._-]`.
    #[error("{kind} {value:?} contains {ch:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")]
    BadChar {
        /// Which kind of identifier.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// The first offending character.
        ch: char,
    },
}

/// Why a value is not an identifier (see [`check_identifier`](crate::id::check_identifier)).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdentifierError {
    /// The value was empty.
    #[error("must not be empty")]
    Empty,
    /// The value was longer than allowed.
    #[error("is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum length in bytes.
        max: usize,
    },
    /// The value held a character outside `[A-Za-z0-9._-]`.
    #[error("contains {ch:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")]
    BadChar {
        /// The first offending character.
        ch: char,
    },
}

/// An address could not be read as a [`PeerAddr`](crate::PeerAddr).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid address {addr:?}: {reason}")]
pub struct InvalidAddr {
    /// The address as given (at most its first 80 characters).
    pub addr: String,
    /// Why it was rejected.
    pub reason: String,
}

/// A membership record (a value under [`MEMBERSHIP_PREFIX`](crate::member::MEMBERSHIP_PREFIX))
/// could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid membership record: {reason}")]
pub struct InvalidMemberRecord {
    /// What is wrong, with the field where serde names one.
    pub reason: String,
}

/// A member state name was not one of `joining`, `active`, `draining`, `left`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown member state {name:?}; expected joining, active, draining, left or removed")]
pub struct UnknownMemberState {
    /// The name as given (at most its first 40 characters).
    pub name: String,
}

/// Errors from the core crate's own operations.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoreError {
    /// An identifier was invalid.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// A peer's clock is further from ours than the cluster allows.
    #[error(transparent)]
    ClockSkew(#[from] crate::hlc::ClockSkew),
    /// An address could not be used.
    #[error(transparent)]
    InvalidAddr(#[from] InvalidAddr),
    /// A transport-level failure (bind, connect).
    #[cfg(feature = "transport")]
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS material that cannot be used: a file that cannot be read, PEM that does
    /// not parse, a key that does not fit its certificate, a server without one.
    #[cfg(feature = "transport")]
    #[error("tls: {reason}")]
    Tls {
        /// What is wrong, naming the part.
        reason: String,
    },
    /// A listener could not be bound (the address in use, not this host's).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An I/O failure.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
