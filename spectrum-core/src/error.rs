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
    #[error("{kind} {value:?} holds {ch:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")]
    BadChar {
        /// Which kind of identifier.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// The first offending character.
        ch: char,
    },
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
    /// An address could not be used as a gRPC endpoint.
    #[error("invalid endpoint address {addr:?}: {reason}")]
    InvalidEndpoint {
        /// The address as given.
        addr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A transport-level failure (bind, connect).
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// An I/O failure, such as binding a listener.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
