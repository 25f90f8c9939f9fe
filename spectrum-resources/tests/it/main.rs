//! Integration tests of spectrum-resources: one binary, one module per concern.

mod bad_definitions;
mod conformance;
mod endpoints;
mod round_trip;
mod secrets;
mod transfer;
