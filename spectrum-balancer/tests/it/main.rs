//! Integration tests of the balancer: real backends and clients on loopback.

mod connections;
mod failover;
mod internal;
mod live_settings;
mod membership;
mod metrics;
mod not_ready;
mod proxying;
mod retries;
mod stats;
mod support;
