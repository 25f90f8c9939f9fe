//! Whole-cluster tests: nodes and the balancer in this process, on loopback.

mod cluster;
mod management;
mod protocols;
mod security;
mod serve;
mod support;
