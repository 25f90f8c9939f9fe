//! # spectrum-replication
//!
//! (crate docs: to be written by the replication implementation)

pub mod error;
pub mod memory;
pub mod record;
pub mod replicator;
pub mod store;

/// Generated protobuf types and gRPC stubs of the replication protocol.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("spectrum.replication.v1");
}

pub use error::{ReplicationError, StoreError};
pub use memory::MemoryStore;
pub use record::{Delta, MergeReport, Record, VersionToken, VersionVector, Write, WriteBatch};
pub use replicator::{AckLevel, AckReport, PeerStatus, Replicator};
pub use store::ConfigStore;
