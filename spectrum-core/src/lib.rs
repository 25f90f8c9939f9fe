//! # spectrum-core
//!
//! The shared vocabulary of a Spectrum cluster. Every other Spectrum crate builds on
//! this one, and it deliberately changes rarely (as `tracing-core` and
//! `tower-service` do): it has few dependencies and holds only what *all* parts of a
//! cluster must agree on.
//!
//! - [`NodeId`] and [`ClusterId`]: validated identifiers, and the one identifier
//!   rule ([`check_identifier`]) every name in a cluster follows.
//! - [`PeerAddr`]: a node's address, validated and in one canonical spelling.
//! - [`Member`] and [`MemberState`]: how a node appears in cluster membership, and
//!   the codec of its membership record.
//! - [`hlc`]: a hybrid logical clock ([`Hlc`]) over an injectable physical
//!   [`Clock`], so tests can step time and every node can detect skew.
//! - `transport` (the default `transport` feature): gRPC server and channel
//!   builders with HTTP/2 keepalive and message size limits, and the seams that let
//!   a test or simulator supply its own listeners and connectors.
//! - `tls` (with `transport`): the cluster's TLS settings (`TlsConfig`) for those
//!   servers and channels, on rustls with ring (no system libraries), the name a
//!   node certificate carries for its id, and a listener whose certificate can be
//!   replaced while it serves.
//!
//! ## Features
//!
//! - `transport` (on by default): the [tonic](https://docs.rs/tonic) plumbing, and
//!   TLS through tonic's `tls-ring` feature.
//!   Crates that need only the vocabulary (`spectrum-resources`) turn it off with
//!   `default-features = false`, and so build without tonic, hyper or h2.
//!
//! ```
//! use std::sync::Arc;
//! use spectrum_core::{Hlc, ManualClock, NodeId};
//!
//! let clock = Arc::new(ManualClock::new(1_000));
//! let hlc = Hlc::new(clock.clone());
//! let a = hlc.now();
//! let b = hlc.now();
//! assert!(b > a, "stamps from one clock strictly increase");
//!
//! clock.set(5_000);
//! assert_eq!(hlc.now().wall_ms, 5_000);
//!
//! let id: NodeId = "node-1".parse().unwrap();
//! assert_eq!(id.as_str(), "node-1");
//! assert!("".parse::<NodeId>().is_err());
//! ```

pub mod addr;
#[cfg(feature = "transport")]
pub mod channels;
pub mod error;
pub mod hlc;
pub mod id;
pub mod member;
#[cfg(feature = "transport")]
pub mod tls;
#[cfg(feature = "transport")]
pub mod tls_accept;
#[cfg(feature = "transport")]
pub mod transport;

pub use addr::PeerAddr;
pub use error::{
    CoreError, IdentifierError, InvalidAddr, InvalidId, InvalidMemberRecord, UnknownMemberState,
};
pub use hlc::{Clock, ClockOffset, ClockSkew, Hlc, ManualClock, SystemClock, Timestamp};
pub use id::{ClusterId, NodeId, check_identifier};
pub use member::{Liveness, MEMBERSHIP_PREFIX, Member, MemberState};
#[cfg(feature = "transport")]
pub use transport::{ChannelConnector, TransportConfig};
