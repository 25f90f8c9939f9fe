//! Whole-cluster tests: nodes and the balancer in this process, on loopback.

mod addresses;
mod balancer_settings;
mod balancer_stats;
mod clocks;
mod cluster;
mod conflicts;
mod disk;
mod first_write;
mod haproxy;
mod http_api;
mod management;
mod protocols;
mod raft;
mod raft_ops;
mod readiness;
mod security;
mod serve;
mod sessions;
mod support;
mod tls;
mod transfer;
mod users;
mod watch;
