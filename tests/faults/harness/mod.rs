//! The fault-injection harness, shared by the `faults` test binary and the
//! `faults` example: real `spectrum node` and `spectrum balancer` processes in a
//! private network namespace ([`sandbox`]), controlled by [`process`], faulted by
//! the [`nemesis`] on a seeded schedule (partitions through [`network`]), loaded by
//! the [`workload`], recorded in the [`history`], judged by the [`checker`];
//! [`scenario`] ties one run together and [`summary`] adds many up. [`raft`]
//! runs a cluster in Raft mode under the same nemesis, with clients doing
//! writes, compare-and-sets and consistent reads, and checks their history for
//! linearizability.

pub(crate) mod checker;
pub(crate) mod history;
pub(crate) mod nemesis;
pub(crate) mod network;
pub(crate) mod process;
// Raft mode's scenario is the test suite's; the example runs last-writer-wins.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod raft;
pub(crate) mod sandbox;
pub(crate) mod scenario;
// The summary table is the long run's (the example's); the tests report one
// scenario each.
#[cfg_attr(test, allow(dead_code))]
pub(crate) mod summary;
pub(crate) mod workload;
