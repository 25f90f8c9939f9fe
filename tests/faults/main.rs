//! The fault-injection suite on real processes: `spectrum node` processes (three
//! and five) and a `spectrum balancer` in a private network namespace, faults on
//! a seeded schedule, a concurrent workload, and a checker over the recorded
//! history (see `harness`). Two scenarios run the nodes in Raft mode
//! (`harness::raft`): their workers' puts, deletes, compare-and-sets and
//! consistent reads must form a linearizable history (the checker of
//! `spectrum_replication::linearizability`), and the healed replicas must be
//! identical and agree with a final consistent read of every key, so no
//! acknowledged write is lost. Each test runs one short scenario; each runs this
//! binary again inside its own namespace (needs root, as CI has), one at a time.
//! The histories land in `target/tmp/faults/seed-<seed>/` (Raft mode's in
//! `raft-seed-<seed>/linearizability.jsonl`).
//!
//! The longer run is `cargo run --release --example faults -- --scenarios 50`.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use harness::nemesis::FaultKind;
use harness::scenario::{self, Scenario};
use harness::{raft, sandbox};

/// One namespaced scenario at a time: the machine is small.
static SERIAL: Mutex<()> = Mutex::new(());

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults")
}

/// Outside the namespace: runs this binary again inside a fresh one, running
/// only `test`, and asserts it passed; returns `true` then. Inside: `false`.
fn rerun_outside(test: &str, seed: u64) -> bool {
    if sandbox::inside() {
        return false;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let args: Vec<String> =
        [test, "--exact", "--nocapture", "--include-ignored", "--test-threads=1"].map(String::from).to_vec();
    let status = sandbox::rerun_inside(&args, Duration::from_secs(170));
    assert!(status.success(), "fault scenario {test} (seed {seed}) failed: see its report above");
    true
}

/// Runs `scenario` inside a fresh namespace (this binary again, running only
/// `test`), and fails with the checker's report when it found an anomaly.
fn run_in_namespace(test: &str, scenario: Scenario) {
    if rerun_outside(test, scenario.seed) {
        return;
    }
    let report = scenario::run(&scenario, Path::new(env!("CARGO_BIN_EXE_spectrum")), &out_dir());
    println!("{}", report.text());
    assert!(report.anomalies.is_empty(), "{}", report.text());
}

/// Runs `scenario` in Raft mode inside a fresh namespace, and fails when its
/// history is not linearizable or anything else went wrong.
fn run_raft_in_namespace(test: &str, scenario: Scenario) {
    if rerun_outside(test, scenario.seed) {
        return;
    }
    let report = raft::run(&scenario, Path::new(env!("CARGO_BIN_EXE_spectrum")), &out_dir());
    println!("{}", report.text());
    assert!(report.clean(), "{}", report.text());
    assert!(report.acknowledged >= 20, "too few writes acknowledged: {}", report.text());
    assert!(report.reads >= 10, "too few consistent reads answered: {}", report.text());
    if scenario.kinds == [FaultKind::DiskFull] {
        // Writes go on throughout: the full disk stops the node's Raft at
        // its next append, and `spectrum node` must have restarted it (the
        // final heal found every node ready).
        assert!(report.restarts >= 1, "the full disk never stopped a node's consensus: {}", report.text());
    }
}

fn scenario(seed: u64, nodes: usize, kinds: &[FaultKind]) -> Scenario {
    Scenario { seed, nodes, kinds: kinds.to_vec(), span: Duration::from_secs(10), workers: 3 }
}

/// A Raft scenario: long enough for every kind of `kinds` to be drawn once.
fn raft_scenario(seed: u64, nodes: usize, kinds: &[FaultKind]) -> Scenario {
    Scenario { seed, nodes, kinds: kinds.to_vec(), span: Duration::from_secs(16), workers: 4 }
}

#[test]
fn partitions_lose_no_acknowledged_write_and_replicas_converge() {
    let kinds = [FaultKind::Isolate, FaultKind::Split, FaultKind::OneWay, FaultKind::Bridge];
    run_in_namespace("partitions_lose_no_acknowledged_write_and_replicas_converge", scenario(1, 3, &kinds));
}

#[test]
fn kill_pause_and_leave_lose_nothing_and_fail_no_idempotent_call() {
    let kinds = [FaultKind::Kill, FaultKind::Pause, FaultKind::LeaveJoin];
    run_in_namespace("kill_pause_and_leave_lose_nothing_and_fail_no_idempotent_call", scenario(2, 3, &kinds));
}

#[test]
fn skewed_and_jumping_clocks_and_a_full_disk_lose_nothing() {
    let kinds = [FaultKind::ClockSkew, FaultKind::ClockJump, FaultKind::DiskFull];
    run_in_namespace("skewed_and_jumping_clocks_and_a_full_disk_lose_nothing", scenario(3, 3, &kinds));
}

#[test]
fn five_nodes_survive_splits_bridges_pauses_and_a_leave() {
    let kinds = [FaultKind::Split, FaultKind::Bridge, FaultKind::Pause, FaultKind::LeaveJoin];
    run_in_namespace("five_nodes_survive_splits_bridges_pauses_and_a_leave", scenario(4, 5, &kinds));
}

#[test]
fn a_node_restarted_on_an_empty_disk_loses_nothing_acknowledged_by_a_quorum() {
    let kinds = [FaultKind::EmptyDisk, FaultKind::Isolate, FaultKind::Kill];
    run_in_namespace(
        "a_node_restarted_on_an_empty_disk_loses_nothing_acknowledged_by_a_quorum",
        scenario(5, 3, &kinds),
    );
}

#[test]
fn raft_mode_under_partitions_kills_and_pauses_records_a_linearizable_history() {
    let kinds = [FaultKind::Isolate, FaultKind::Split, FaultKind::Kill, FaultKind::Pause];
    run_raft_in_namespace(
        "raft_mode_under_partitions_kills_and_pauses_records_a_linearizable_history",
        raft_scenario(6, 3, &kinds),
    );
}

#[test]
fn raft_mode_on_five_nodes_under_splits_and_kills_records_a_linearizable_history() {
    let kinds = [FaultKind::Split, FaultKind::Kill, FaultKind::OneWay, FaultKind::Isolate];
    run_raft_in_namespace(
        "raft_mode_on_five_nodes_under_splits_and_kills_records_a_linearizable_history",
        raft_scenario(7, 5, &kinds),
    );
}

#[test]
fn raft_mode_through_a_full_disk_restarts_the_node_and_records_a_linearizable_history() {
    let kinds = [FaultKind::DiskFull];
    run_raft_in_namespace(
        "raft_mode_through_a_full_disk_restarts_the_node_and_records_a_linearizable_history",
        raft_scenario(8, 3, &kinds),
    );
}
