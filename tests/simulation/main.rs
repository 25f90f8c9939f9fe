//! Deterministic simulation of the replicated configuration database: the real
//! gRPC replication service and anti-entropy replicator, on 3 to 5 simulated
//! hosts ([turmoil]), through partitions, crashes and restarts; and Raft mode
//! under the same faults, its clients' history checked for linearizability.
//!
//! Each node is a turmoil host serving `ReplicationService` with tonic on
//! turmoil's `TcpListener` (`serve_with_incoming`) and running `AntiEntropy`,
//! whose channels dial turmoil's `TcpStream` through the transport's
//! `ChannelConnector`. Time is simulated: HLC stamps come from the simulation's
//! clock (a fixed epoch, plus a per-node offset within the allowed skew), and
//! each replicator draws its jitter and peer choices from a seeded generator
//! (`AntiEntropyBuilder::rng_seed`). A node's store and clock survive its crashes,
//! as the durable store's do (`RedbStore` is not simulated: it commits on real
//! threads that turmoil cannot schedule; `tests/durability` kills it with
//! `kill -9`).
//!
//! A script writes on random nodes (puts and deletes, acknowledged locally or
//! by all), cuts and restores links, and crashes and restarts nodes; then
//! every link is restored, every node restarted, and the simulation runs until
//! the copies are identical. The runs prove that:
//!
//! - the copies converge, to the last-writer-wins result of every applied
//!   write: nothing acknowledged is lost, no deleted key comes back; and every
//!   copy lists the same conflicts (converged means that too);
//! - a write acknowledged by all nodes is held by all nodes when acknowledged;
//! - stamps from each node strictly increase, across restarts;
//! - a node restarted over an empty store is refilled by anti-entropy, and one
//!   that writes before catching up converges too: its new store writes under
//!   an origin of its own (a new incarnation), so it never reuses a sequence
//!   number its peers hold (a sweep of seeds plays it on 3 to 5 nodes);
//! - a seed reproduces its run exactly: the same trace (every scripted change,
//!   applied write and answer, with simulated times and stamps) and the same
//!   final copies.
//!
//! **Raft mode** (`raft`, `raft_scenario`): each host runs the real
//! `RaftReplicator` (openraft) and serves its gRPC `RaftService` on turmoil's
//! listener; its peers are dialled through the same `ChannelConnector`. Its
//! log, vote and snapshot live in a `RaftMemoryLog` (the production redb code
//! on redb's in-memory backend; its `spawn_blocking` calls run on real
//! threads, and tokio holds simulated time still while one runs), which the
//! host keeps across crashes beside its store and clock, as `raft.redb` and
//! the durable store are kept. Sequential clients send puts, deletes,
//! compare-and-sets (with the version they last saw, as `--if-version`, or
//! `--if-absent`) and consistent reads to random running nodes while the
//! script cuts and restores links and crashes and restarts nodes (one outage
//! of a majority in every run, others drawn at random; a snapshot every 40
//! entries, so lagging nodes install snapshots). Every operation is recorded
//! with its invocation and completion in simulated microseconds, or of unknown
//! outcome when it failed, timed out or its node crashed under it. Then every
//! link is restored and every node restarted, and the runs prove that:
//!
//! - the healed cluster commits again, through every node;
//! - every replica converges to an identical copy (holding the last write, so
//!   every entry before it);
//! - a consistent read of every key, recorded last, agrees with every copy;
//! - the whole history is linearizable (the checker of
//!   `spectrum_replication::linearizability`): every acknowledged write took
//!   effect once within its interval and is present unless a later operation
//!   replaced it, no read was stale, no compare-and-set was decided against a
//!   value the key did not hold. (With the read-index barrier removed from the
//!   consistent read, three of the first four seeds find a stale read.)
//!
//! openraft draws its election timeouts from its own thread-local generator,
//! which cannot be seeded, so a Raft seed replays the same script but not
//! necessarily the same elections: Raft runs claim no exact replay.
//!
//! To replay one seed (a failure message names it), with the replicator's logs,
//! or to explore a range of seeds:
//!
//! ```text
//! SIM_SEED=1234 RUST_LOG=spectrum_replication=debug cargo test -p spectrum --test simulation
//! SIM_SEED=1..500 cargo test -p spectrum --test simulation random -- --nocapture
//! SIM_SEED=1..500 cargo test -p spectrum --test simulation sweep -- --nocapture
//! SIM_SEED=1..100 cargo test -p spectrum --test simulation raft_mode -- --nocapture
//! ```
//!
//! Each run prints a fingerprint of its trace and copies (with `--nocapture`):
//! the same seed prints the same fingerprint in every process.
//!
//! [turmoil]: https://docs.rs/turmoil

mod cluster;
mod hosts;
mod raft;
mod raft_scenario;
mod scenario;

use std::collections::BTreeSet;
use std::time::Duration;

use spectrum_replication::AckLevel;

use crate::cluster::{ClientWrite, Cluster, Event};
use crate::hosts::Hosts;
use crate::raft_scenario::{run_leader_crash_rounds, run_raft_seed};
use crate::scenario::{Step, heal_and_converge, play, run_lost_store_seed, run_seed};

/// The seeds every run plays: 3, 4 and 5 nodes (`3 + seed % 3`).
const SEEDS: [u64; 5] = [1, 2, 3, 2024, 90_125];

/// The seeds of the lost-store sweep: 3, 4 and 5 nodes, one or two lost disks.
const LOST_STORE_SEEDS: std::ops::Range<u64> = 100..112;

/// The seeds the Raft sweep plays on 3 nodes (even seeds play on 3 nodes).
const RAFT_SEEDS_THREE: [u64; 3] = [2, 4, 6];
/// The seeds the Raft sweep plays on 5 nodes (odd seeds play on 5 nodes).
const RAFT_SEEDS_FIVE: [u64; 3] = [1, 3, 5];

/// Simulated time for the nodes to start and meet each other.
const BOOT: Duration = Duration::from_millis(500);

/// The seeds to play: `SIM_SEED` when set (one seed, or a range `first..end`
/// to explore), else [`SEEDS`].
fn seeds() -> Vec<u64> {
    seeds_or(&SEEDS)
}

/// `SIM_SEED` when set, else `default`.
fn seeds_or(default: &[u64]) -> Vec<u64> {
    init_logs();
    let Ok(var) = std::env::var("SIM_SEED") else {
        return default.to_vec();
    };
    let parse = |s: &str| s.trim().parse::<u64>().expect("SIM_SEED is a u64 or a range first..end");
    match var.split_once("..") {
        Some((first, end)) => (parse(first)..parse(end)).collect(),
        None => vec![parse(&var)],
    }
}

/// Logs to the test output when `RUST_LOG` is set.
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A script step: `write` on `node`.
fn write(node: usize, write: ClientWrite) -> Step {
    Step::Write { node, write }
}

#[test]
fn random_partitions_crashes_and_restarts_converge_to_the_last_writes() {
    for seed in seeds() {
        let run = run_seed(seed);
        let writes = run.trace.iter().filter(|e| matches!(e, Event::Applied { .. })).count();
        let unmet = run.trace.iter().filter(|e| matches!(e, Event::Answered { outcome: Err(_), .. })).count();
        let crashes = run
            .trace
            .iter()
            .filter(|e| matches!(e, Event::Script { what, .. } if what.starts_with("crash")))
            .count();
        println!(
            "seed {seed}: {} nodes, {writes} writes ({unmet} not acknowledged at their level), {crashes} crashes, \
             converged {:?} after healing at {:?}; fingerprint {:016x}",
            run.replicas.len(),
            run.converged_at - run.healed_at,
            run.healed_at,
            run.fingerprint()
        );
        assert!(writes >= 20, "seed {seed}: only {writes} writes were applied");
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let seed = seeds()[0];
    let first = run_seed(seed);
    let second = run_seed(seed);
    assert_eq!(first.converged_at, second.converged_at, "seed {seed}");
    assert_eq!(first.trace, second.trace, "seed {seed}: the traces differ");
    assert_eq!(first.replicas, second.replicas, "seed {seed}: the final copies differ");
}

#[test]
fn different_seeds_play_different_runs() {
    let (a, b) = (run_seed(SEEDS[0]), run_seed(SEEDS[3]));
    assert_ne!(a.trace, b.trace);
}

#[test]
fn a_partitioned_node_catches_up_once_the_partition_heals() {
    let mut cluster = Cluster::new(11, 3);
    cluster.run_for(BOOT);
    play(
        &mut cluster,
        &[
            Step::Partition { a: 0, b: 2 },
            Step::Partition { a: 1, b: 2 },
            write(0, ClientWrite::put("settings/mode", "fast", AckLevel::Local)),
            write(2, ClientWrite::put("settings/region", "eu", AckLevel::Local)),
            write(2, ClientWrite::put("settings/mode", "slow", AckLevel::Local)),
            Step::Wait(Duration::from_secs(2)),
        ],
    );
    let region = cluster.get("settings/region");
    assert!(region[0].is_none() && region[1].is_none(), "the partition let n3's write through: {region:?}");
    assert!(region[2].is_some());
    let mode = cluster.get("settings/mode");
    assert_eq!(mode[0], mode[1], "n1 and n2 still talk");
    assert_ne!(mode[0], mode[2], "n3 is cut off");

    let run = heal_and_converge(&mut cluster);
    let mode = run.replicas[0].records.iter().find(|r| r.key == "settings/mode").expect("written");
    assert_eq!(mode.value.as_deref(), Some(&b"slow"[..]), "the later write wins on every node");
}

/// Ten minutes, in milliseconds: far beyond the allowed clock offset.
const TEN_MINUTES_MS: i64 = 600_000;
const HALF_A_MINUTE_MS: i64 = 30_000;

#[test]
fn a_node_whose_clock_runs_ten_minutes_behind_converges_with_its_peers_whatever_the_order_of_writes() {
    for seed in [21, 22, 23] {
        let mut cluster = Cluster::new(seed, 3);
        cluster.set_clock_offset(2, -TEN_MINUTES_MS);
        cluster.run_for(BOOT);
        play(
            &mut cluster,
            &[
                write(0, ClientWrite::put("settings/color", "red", AckLevel::Local)),
                write(2, ClientWrite::put("settings/color", "blue", AckLevel::Local)),
                write(2, ClientWrite::put("settings/mode", "slow", AckLevel::All)),
                write(1, ClientWrite::put("settings/mode", "fast", AckLevel::Local)),
                Step::Wait(Duration::from_secs(1)),
                Step::Partition { a: 0, b: 2 },
                write(2, ClientWrite::put("settings/color", "green", AckLevel::Local)),
                write(0, ClientWrite::put("settings/region", "eu", AckLevel::Local)),
                Step::Wait(Duration::from_secs(1)),
            ],
        );
        // Still ten minutes behind: it takes its peers' data, and they take its.
        heal_and_converge(&mut cluster);
    }
}

#[test]
fn a_node_whose_clock_ran_half_a_minute_ahead_converges_once_its_wall_and_hybrid_clocks_are_right() {
    for seed in [31, 32] {
        let mut cluster = Cluster::new(seed, 3);
        cluster.set_clock_offset(2, HALF_A_MINUTE_MS);
        cluster.run_for(BOOT);
        play(
            &mut cluster,
            &[
                write(0, ClientWrite::put("settings/color", "red", AckLevel::Local)),
                write(2, ClientWrite::put("settings/color", "blue", AckLevel::Local)),
                write(1, ClientWrite::put("settings/mode", "fast", AckLevel::Local)),
                Step::Wait(Duration::from_secs(1)),
            ],
        );
        // Its peers refuse it while it runs ahead (its stamps would drag theirs).
        let color = cluster.get("settings/color");
        assert_eq!(color[0], color[1], "n1 and n2 agree");
        assert_ne!(color[0], color[2], "n3, ahead of both, was refused");
        // Corrected, its hybrid clock stays ahead (a hybrid clock never goes
        // back): its peers refuse its stamps, which would drag theirs ahead,
        // until its wall clock has caught up; then it is taken again, and all
        // agree.
        cluster.set_clock_offset(2, 0);
        cluster.run_for(Duration::from_secs(10));
        let color = cluster.get("settings/color");
        assert_ne!(color[0], color[2], "n3's hybrid clock is still ahead 10 s later");
        cluster.run_for(Duration::from_millis(u64::try_from(HALF_A_MINUTE_MS).unwrap()));
        heal_and_converge(&mut cluster);
    }
}

#[test]
fn a_crashed_node_restarts_and_anti_entropy_brings_it_what_it_missed() {
    let mut cluster = Cluster::new(12, 3);
    cluster.run_for(BOOT);
    play(
        &mut cluster,
        &[
            write(0, ClientWrite::put("license/key", "old", AckLevel::All)),
            Step::Wait(Duration::from_millis(200)),
            Step::Crash { node: 0 },
            write(1, ClientWrite::put("license/key", "new", AckLevel::All)),
            write(2, ClientWrite::delete("settings/mode", AckLevel::Local)),
            Step::Wait(Duration::from_secs(2)),
        ],
    );
    assert!(!cluster.is_running(0));
    let answers: Vec<_> = cluster
        .trace()
        .into_iter()
        .filter_map(|e| match e {
            Event::Answered { node, ack: AckLevel::All, outcome, .. } => Some((node, outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0], (0, Ok(3)), "all three nodes held the first write");
    assert_eq!(answers[1].0, 1);
    let refused = answers[1].1.as_ref().expect_err("a crashed node cannot acknowledge");
    assert!(refused.contains("acknowledged by 2 of 3"), "{refused}");
    let key = cluster.get("license/key");
    assert_eq!(key[0].as_ref().and_then(|r| r.value.as_deref()), Some(&b"old"[..]), "n1 kept its store");

    let run = heal_and_converge(&mut cluster);
    let key = run.replicas[0].records.iter().find(|r| r.key == "license/key").expect("written");
    assert_eq!(key.value.as_deref(), Some(&b"new"[..]), "n1 caught up after its restart");
}

#[test]
fn a_node_that_lost_its_store_is_refilled_by_anti_entropy() {
    let mut cluster = Cluster::new(13, 3);
    cluster.run_for(BOOT);
    play(
        &mut cluster,
        &[
            write(0, ClientWrite::put("settings/mode", "fast", AckLevel::Local)),
            write(1, ClientWrite::put("settings/region", "eu", AckLevel::Local)),
            write(2, ClientWrite::put("license/key", "XYZ", AckLevel::Local)),
            write(0, ClientWrite::delete("settings/region", AckLevel::All)),
            Step::Wait(Duration::from_secs(1)),
            Step::Crash { node: 0 },
            write(1, ClientWrite::put("resources/postal", "10115", AckLevel::Local)),
            Step::Partition { a: 0, b: 1 },
            Step::Partition { a: 0, b: 2 },
            Step::RestartEmpty { node: 0 },
            Step::Wait(Duration::from_millis(500)),
        ],
    );
    assert!(cluster.get("license/key")[0].is_none(), "n1 came back empty");
    let run = heal_and_converge(&mut cluster);
    assert_eq!(run.replicas[0].live().len(), 3, "{:#?}", run.replicas[0]);
}

/// A tombstone collected on the strength of a lost disk's old digest, and the
/// new store's write to the deleted key: n2 (clock 100 ms ahead) deletes
/// `settings/mode`; its pushes' answers show that n1 and n3 have seen the delete,
/// so n2 collects it at its next round, while n3 (which has no digest of n1
/// covering it) keeps it. n1 (clock 100 ms behind) has meanwhile lost its disk
/// and, cut off, writes the key again. Were that write stamped by n1's clock at
/// once, it would be stamped below the delete: n2 would show the write and n3
/// the key deleted, and the replicas would never converge. The new store's
/// first write waits for `horizon::FirstWrite` instead, so it is stamped above
/// the delete, wins everywhere, and the replicas agree.
#[test]
fn a_new_store_writing_a_key_whose_delete_was_collected_on_its_old_digest_converges() {
    let mut cluster = Cluster::new(1, 3);
    cluster.run_for(BOOT);
    cluster.set_clock_offset(0, -100);
    cluster.set_clock_offset(1, 100);
    cluster.set_clock_offset(2, 0);
    play(
        &mut cluster,
        &[
            write(1, ClientWrite::put("settings/mode", "old", AckLevel::All)),
            Step::Wait(Duration::from_secs(1)),
            write(1, ClientWrite::delete("settings/mode", AckLevel::All)),
            Step::Wait(Duration::from_millis(30)),
            Step::Crash { node: 0 },
            Step::Partition { a: 0, b: 1 },
            Step::Partition { a: 0, b: 2 },
            Step::RestartEmpty { node: 0 },
            write(0, ClientWrite::put("settings/mode", "new", AckLevel::Local)),
            Step::Wait(Duration::from_millis(1_500)),
        ],
    );
    let on = cluster.get("settings/mode");
    let new = on[0].clone().expect("written while cut off");
    assert!(on[1].is_none(), "n2 collected the delete: {:?}", on[1]);
    let deleted = on[2].clone().expect("n3 holds the delete");
    assert!(deleted.is_tombstone(), "{deleted:?}");
    assert!(new.stamp > deleted.stamp, "the new store's write follows the delete: {new:?} vs {deleted:?}");
    let run = heal_and_converge(&mut cluster);
    for replica in &run.replicas {
        let value =
            replica.live().into_iter().find(|r| r.key == "settings/mode").and_then(|r| r.value.clone());
        assert_eq!(value.as_deref(), Some(&b"new"[..]), "{replica:#?}");
    }
}

/// The reproduction of a bug this design fixed: when sequence numbers were per
/// node, a node that came back with an empty store under its old id numbered
/// its next write `n1:1` again. Its peers' digests already covered `n1:1`, so
/// they ignored the new write; the node's digest then covered `n1:1` too, so it
/// never received the old `n1:1` record; and every digest ended equal, so
/// anti-entropy saw nothing to repair while the copies differed for good.
///
/// Now the new store writes under a new origin (`n1~<incarnation>`), whose
/// numbers no peer has seen. The script writes into the store directly, after
/// cutting the node off, which a `Node` would not do (it still waits for a
/// peer before serving; see
/// `a_node_with_an_empty_store_writes_nothing_until_a_peer_has_answered`).
/// Its first write waits for `horizon::FirstWrite` (about a second) as a
/// `Node`'s does.
#[test]
fn a_node_that_lost_its_store_and_writes_before_catching_up_still_converges() {
    let mut cluster = Cluster::new(14, 3);
    cluster.run_for(BOOT);
    play(
        &mut cluster,
        &[
            write(0, ClientWrite::put("settings/mode", "fast", AckLevel::Local)),
            write(0, ClientWrite::put("settings/region", "eu", AckLevel::Local)),
            Step::Wait(Duration::from_secs(1)),
            Step::Crash { node: 0 },
            Step::Partition { a: 0, b: 1 },
            Step::Partition { a: 0, b: 2 },
            Step::RestartEmpty { node: 0 },
            write(0, ClientWrite::put("license/key", "after-wipe", AckLevel::Local)),
            Step::Wait(Duration::from_millis(1_200)),
        ],
    );
    let written = cluster.get("license/key")[0].clone().expect("written while cut off");
    assert_eq!(written.seq, 1, "a new store numbers from 1");
    assert_ne!(written.origin, written.origin.node().clone().into(), "under an origin of its own");
    let run = heal_and_converge(&mut cluster);
    for replica in &run.replicas {
        assert_eq!(replica.live().len(), 3, "{replica:#?}");
        assert_eq!(replica.digest.entries.len(), 2, "n1's two incarnations: {:?}", replica.digest);
    }
}

#[test]
fn a_sweep_of_seeds_where_a_node_loses_its_store_and_writes_before_catching_up_converges() {
    for seed in seeds_or(&LOST_STORE_SEEDS.collect::<Vec<_>>()) {
        let run = run_lost_store_seed(seed);
        let origins = run.replicas[0].digest.entries.len();
        let writers: BTreeSet<_> = run.replicas[0].digest.entries.keys().map(|o| o.node()).collect();
        println!(
            "seed {seed}: {} nodes, {origins} origins, converged {:?} after healing; fingerprint {:016x}",
            run.replicas.len(),
            run.converged_at - run.healed_at,
            run.fingerprint()
        );
        assert!(origins > writers.len(), "seed {seed}: a lost store adds an origin");
    }
}

/// Plays the Raft scenario of each seed of `default` (or `SIM_SEED`), prints
/// what it did, and asserts that it exercised what it claims to.
fn check_raft_seeds(default: &[u64]) {
    for seed in seeds_or(default) {
        let run = run_raft_seed(seed);
        println!(
            "raft seed {seed}: {} nodes, {} writes acknowledged, {} compare-and-sets refused, {} of unknown \
             outcome, {} consistent reads; {} crashes ({} leaving a majority down); converged {:?} after \
             healing; {} keys, {} operations checked in {} steps",
            run.nodes,
            run.acknowledged,
            run.refused,
            run.unknown,
            run.reads,
            run.crashes,
            run.majority_outages,
            run.settled_in,
            run.report.keys,
            run.report.operations,
            run.report.steps,
        );
        assert!(run.acknowledged >= 10, "raft seed {seed}: only {} writes acknowledged", run.acknowledged);
        assert!(run.refused >= 1, "raft seed {seed}: no compare-and-set was refused");
        assert!(run.reads >= 5, "raft seed {seed}: only {} consistent reads answered", run.reads);
        assert!(run.majority_outages >= 1, "raft seed {seed}: no majority outage");
        assert_eq!(run.replicas.len(), run.nodes, "raft seed {seed}: a copy per node");
    }
}

#[test]
fn raft_mode_on_three_nodes_under_partitions_and_crashes_stays_linearizable_and_converges() {
    check_raft_seeds(&RAFT_SEEDS_THREE);
}

#[test]
fn raft_mode_on_five_nodes_under_partitions_and_crashes_stays_linearizable_and_converges() {
    check_raft_seeds(&RAFT_SEEDS_FIVE);
}

#[test]
fn raft_mode_applies_a_write_once_when_the_leader_crashes_while_a_follower_forwards_it() {
    for seed in seeds_or(&[41]) {
        let run = run_leader_crash_rounds(seed);
        println!(
            "raft leader-crash seed {seed}: {} writes acknowledged, {} compare-and-sets refused, {} of unknown \
             outcome, {} consistent reads, {} leader crashes; {} operations checked",
            run.acknowledged, run.refused, run.unknown, run.reads, run.crashes, run.report.operations,
        );
        assert!(
            run.acknowledged >= 5,
            "raft leader-crash seed {seed}: only {} acknowledged",
            run.acknowledged
        );
    }
}
