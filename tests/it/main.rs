//! Whole-cluster tests: nodes and the balancer in this process, on loopback.

mod addresses;
mod cluster;
mod haproxy;
mod management;
mod protocols;
mod readiness;
mod serve;
mod support;
mod tls;
mod users;
