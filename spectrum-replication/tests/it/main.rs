//! Integration tests of spectrum-replication: one binary, one module per concern.

mod conformance;
mod durable;
mod grpc;
mod props;
