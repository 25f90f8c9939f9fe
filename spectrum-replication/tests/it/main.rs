//! Integration tests of spectrum-replication: one binary, one module per concern.

mod conformance;
mod grpc;
mod props;
