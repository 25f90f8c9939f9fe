//! # spectrum-core
//!
//! The shared vocabulary of a Spectrum cluster. Every other Spectrum crate builds on
//! this one, and it deliberately changes rarely (as `tracing-core` and
//! `tower-service` do): it has few dependencies and holds only what *all* parts of a
//! cluster must agree on.
//!
//! - [`NodeId`] and [`ClusterId`]: validated identifiers.
//! - [`Member`] and [`MemberState`]: how a node appears in cluster membership.
//! - [`hlc`]: a hybrid logical clock ([`Hlc`]) over an injectable physical
//!   [`Clock`], so tests can step time and every node can detect skew.
//! - [`transport`]: gRPC server and channel builders with HTTP/2 keepalive and
//!   message size limits, and the seams that let a test or simulator supply its own
//!   listeners and connectors.
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

pub mod error;
pub mod hlc;
pub mod id;
pub mod member;
pub mod transport;

pub use error::{CoreError, InvalidId};
pub use hlc::{Clock, ClockSkew, Hlc, ManualClock, SystemClock, Timestamp};
pub use id::{ClusterId, NodeId};
pub use member::{Member, MemberState};
pub use transport::{ChannelConnector, TransportConfig};
