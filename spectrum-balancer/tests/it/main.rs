//! Integration tests of the balancer: real backends and clients on loopback.

mod failover;
mod membership;
mod proxying;
mod support;
