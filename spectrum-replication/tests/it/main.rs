//! Integration tests of spectrum-replication: one binary, one module per concern.

mod conformance;
mod durable;
mod full_disk;
mod grpc;
mod lost_disk;
mod props;
mod raft;
mod raft_ops;
