//! Scenario scripts: the steps a simulation plays, random scripts drawn from a
//! seed, and the checks every run must pass.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};
use spectrum_core::Timestamp;
use spectrum_replication::{AckLevel, Origin, Record, VersionToken};

use crate::cluster::{ClientWrite, Cluster, Event, Replica, last_writer_wins};
use crate::hosts::Hosts;

/// One step of a script. Nodes are numbered from 0 (`n1`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// A client writes on a node.
    Write { node: usize, write: ClientWrite },
    /// The link between two nodes is cut both ways.
    Partition { a: usize, b: usize },
    /// The link between two nodes is restored.
    Repair { a: usize, b: usize },
    /// A node's software is killed.
    Crash { node: usize },
    /// A crashed node starts again over what it had stored.
    Restart { node: usize },
    /// A crashed node starts again over an empty store, with the same id.
    RestartEmpty { node: usize },
    /// Simulated time passes.
    Wait(Duration),
}

/// Simulated time between two steps.
const STEP_GAP: Duration = Duration::from_millis(20);
/// Steps in a random script.
const SCRIPT_STEPS: usize = 60;
/// How long a healed cluster may take to converge, in simulated time.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(30);
/// The keys scripts write: few, so that writes conflict.
const KEYS: &[&str] =
    &["settings/mode", "settings/region", "license/key", "resources/postal", "dataflows/ingest"];

/// How to replay a failing seed.
pub(crate) fn replay_hint(seed: u64) -> String {
    format!("replay with SIM_SEED={seed} RUST_LOG=debug cargo test -p spectrum --test simulation")
}

/// Plays `script`, letting [`STEP_GAP`] of simulated time pass after each step,
/// and checks as it goes that a write acknowledged at [`AckLevel::All`] was held
/// by every node when it was acknowledged.
pub(crate) fn play(cluster: &mut Cluster, script: &[Step]) {
    let mut checked = cluster.trace().len();
    for step in script {
        match step {
            Step::Write { node, write } => cluster.write(*node, write.clone()),
            Step::Partition { a, b } => cluster.partition(*a, *b),
            Step::Repair { a, b } => cluster.repair(*a, *b),
            Step::Crash { node } => cluster.crash(*node),
            Step::Restart { node } => cluster.restart(*node),
            Step::RestartEmpty { node } => cluster.restart_empty(*node),
            Step::Wait(d) => cluster.run_for(*d),
        }
        cluster.run_for(STEP_GAP);
        checked = assert_acknowledged_by_all_are_everywhere(cluster, checked);
    }
}

/// A random script for `nodes` nodes: writes (a sixth of them deletes, a fifth
/// of them acknowledged by all) on random running nodes, partitions and
/// repairs, crashes and restarts (at least one node keeps running), and waits;
/// it ends with faults left for the healing to repair: one node cut off from
/// all others, a conflicting write on each side, and another node crashed.
pub(crate) fn random_script(seed: u64, nodes: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(29) ^ 0x5c21_97a0_d3e1_4b6f);
    let mut down: BTreeSet<usize> = BTreeSet::new();
    let mut cut: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut script = Vec::with_capacity(SCRIPT_STEPS);
    for n in 0..SCRIPT_STEPS {
        let up: Vec<usize> = (0..nodes).filter(|i| !down.contains(i)).collect();
        let step = match rng.random_range(0..100) {
            0..55 => {
                let node = up[rng.random_range(0..up.len())];
                let key = KEYS[rng.random_range(0..KEYS.len())];
                let ack = if rng.random_ratio(1, 5) { AckLevel::All } else { AckLevel::Local };
                let write = if rng.random_ratio(1, 6) {
                    ClientWrite::delete(key, ack)
                } else {
                    ClientWrite::put(key, &format!("v{n}"), ack)
                };
                Step::Write { node, write }
            }
            55..65 => Step::Wait(Duration::from_millis(rng.random_range(50..=600))),
            65..75 => {
                let a = rng.random_range(0..nodes);
                let b = (a + rng.random_range(1..nodes)) % nodes;
                let pair = (a.min(b), a.max(b));
                cut.insert(pair);
                Step::Partition { a: pair.0, b: pair.1 }
            }
            75..83 => match cut.iter().copied().choose(&mut rng) {
                Some(pair) => {
                    cut.remove(&pair);
                    Step::Repair { a: pair.0, b: pair.1 }
                }
                None => Step::Wait(Duration::from_millis(100)),
            },
            83..91 if up.len() > 1 => {
                let node = up[rng.random_range(0..up.len())];
                down.insert(node);
                Step::Crash { node }
            }
            _ => match down.iter().copied().choose(&mut rng) {
                Some(node) => {
                    down.remove(&node);
                    Step::Restart { node }
                }
                None => Step::Wait(Duration::from_millis(100)),
            },
        };
        script.push(step);
    }
    let up: Vec<usize> = (0..nodes).filter(|i| !down.contains(i)).collect();
    let alone = up[rng.random_range(0..up.len())];
    let other = (alone + rng.random_range(1..nodes)) % nodes;
    let key = KEYS[rng.random_range(0..KEYS.len())];
    script.extend((0..nodes).filter(|&n| n != alone).map(|n| Step::Partition { a: alone, b: n }));
    if down.remove(&other) {
        script.push(Step::Restart { node: other });
    }
    script.push(Step::Write { node: alone, write: ClientWrite::put(key, "cut-off", AckLevel::Local) });
    script.push(Step::Write { node: other, write: ClientWrite::put(key, "majority", AckLevel::Local) });
    script.push(Step::Wait(Duration::from_millis(300)));
    script.push(Step::Crash { node: other });
    script
}

/// A random script for `nodes` nodes in which one node loses its store and
/// writes before it has caught up: writes everywhere (each reaches every node
/// before the crash, so the lost disk held nothing only it had); the node
/// crashes, is cut off from every peer, and comes back on an empty disk under
/// its old id; it writes (keys the cluster already holds among them, deletes
/// too) while others write as well; then its links come back one by one. In
/// some scripts it loses its disk a second time, after catching up, and writes
/// again before catching up.
pub(crate) fn lost_store_script(seed: u64, nodes: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x10e5_d15c_0bad_f00d);
    let lost = rng.random_range(0..nodes);
    let others: Vec<usize> = (0..nodes).filter(|&n| n != lost).collect();
    let mut n = 0;
    let mut random_write = |rng: &mut StdRng, node: usize| {
        n += 1;
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let ack = if rng.random_ratio(1, 4) { AckLevel::All } else { AckLevel::Local };
        let write = if rng.random_ratio(1, 5) {
            ClientWrite::delete(key, ack)
        } else {
            ClientWrite::put(key, &format!("w{n}"), ack)
        };
        Step::Write { node, write }
    };
    let mut script = vec![random_write(&mut rng, lost)];
    for _ in 0..rng.random_range(3..8) {
        let node = rng.random_range(0..nodes);
        script.push(random_write(&mut rng, node));
    }
    let losses = if rng.random_ratio(1, 3) { 2 } else { 1 };
    for loss in 0..losses {
        // Long enough for every write (the lost node's, pushed once its links
        // came back, or pulled from it) to reach another node.
        script.push(Step::Wait(Duration::from_secs(1 + loss)));
        script.push(Step::Crash { node: lost });
        script.extend(others.iter().map(|&b| Step::Partition { a: lost, b }));
        script.push(Step::RestartEmpty { node: lost });
        for _ in 0..rng.random_range(2..6) {
            let node = if rng.random_ratio(2, 3) { lost } else { others[rng.random_range(0..others.len())] };
            script.push(random_write(&mut rng, node));
        }
        script.push(Step::Wait(Duration::from_millis(rng.random_range(50..=500))));
        for &b in &others {
            script.push(Step::Repair { a: lost, b });
            script.push(random_write(&mut rng, lost));
            script.push(Step::Wait(Duration::from_millis(rng.random_range(0..=300))));
        }
        if loss + 1 < losses {
            script.push(random_write(&mut rng, others[0]));
        }
    }
    script
}

/// Runs the lost-store scenario of `seed` on 3 to 5 nodes, heals the cluster,
/// runs it to convergence, and checks the result against the model.
pub(crate) fn run_lost_store_seed(seed: u64) -> Run {
    let nodes = 3 + usize::try_from(seed % 3).expect("small");
    let mut cluster = Cluster::new(seed, nodes);
    cluster.run_for(Duration::from_millis(500));
    play(&mut cluster, &lost_store_script(seed, nodes));
    heal_and_converge(&mut cluster)
}

/// What a run left: its trace, every node's final copy, and when it converged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    /// Every scripted change, applied write and answer, in order.
    pub(crate) trace: Vec<Event>,
    /// Every node's copy at the end.
    pub(crate) replicas: Vec<Replica>,
    /// Simulated time at which the cluster was healed.
    pub(crate) healed_at: Duration,
    /// Simulated time at which every copy was identical.
    pub(crate) converged_at: Duration,
}

impl Run {
    /// A hash of the whole run (trace and copies), to compare runs across
    /// processes: the same seed prints the same fingerprint.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        format!("{self:?}").hash(&mut hasher);
        hasher.finish()
    }
}

/// Runs the random scenario of `seed` on 3 to 5 nodes, heals the cluster, runs
/// it to convergence, and checks the result against the model.
pub(crate) fn run_seed(seed: u64) -> Run {
    let nodes = 3 + usize::try_from(seed % 3).expect("small");
    let mut cluster = Cluster::new(seed, nodes);
    play(&mut cluster, &random_script(seed, nodes));
    heal_and_converge(&mut cluster)
}

/// Heals every link and restarts every crashed node, runs until the copies
/// are identical, and checks them against the model.
pub(crate) fn heal_and_converge(cluster: &mut Cluster) -> Run {
    let seed = cluster.seed();
    cluster.heal();
    let healed_at = cluster.elapsed();
    let Some(converged_at) = cluster.run_until_converged(CONVERGENCE_LIMIT) else {
        panic!(
            "seed {seed}: not converged {CONVERGENCE_LIMIT:?} after healing (at {:?}); replicas: {:#?}\n{}",
            cluster.elapsed(),
            cluster.replicas(),
            replay_hint(seed)
        );
    };
    assert_converged_to_model(cluster);
    Run { trace: cluster.trace(), replicas: cluster.replicas(), healed_at, converged_at }
}

/// Asserts what every converged run must show:
///
/// - every copy has the same digest and the same live records;
/// - every stored record is the last write to its key under last-writer-wins
///   of every applied write (nothing lost, nothing invented, no deleted key back);
/// - every origin's stamps strictly increased: a node's across its restarts
///   over its store, each new store's (a disk replaced empty) from its first.
pub(crate) fn assert_converged_to_model(cluster: &Cluster) {
    let seed = cluster.seed();
    let trace = cluster.trace();
    let replicas = cluster.replicas();
    let model = last_writer_wins(&trace);
    let hint = replay_hint(seed);
    for (i, replica) in replicas.iter().enumerate() {
        let node = i + 1;
        assert_eq!(
            replica.digest, replicas[0].digest,
            "seed {seed}: n{node}'s digest differs from n1's; {hint}"
        );
        assert_eq!(
            replica.live(),
            replicas[0].live(),
            "seed {seed}: n{node}'s records differ from n1's; {hint}"
        );
        for record in &replica.records {
            assert_eq!(
                model.get(&record.key),
                Some(record),
                "seed {seed}: n{node} holds a record that is not the last write to {:?}; {hint}",
                record.key
            );
        }
        for winner in model.values().filter(|r| !r.is_tombstone()) {
            assert!(
                replica.records.contains(winner),
                "seed {seed}: n{node} lost the last write to {:?} ({winner:?}); {hint}",
                winner.key
            );
        }
    }
    let mut last: BTreeMap<&Origin, Timestamp> = BTreeMap::new();
    for event in &trace {
        if let Event::Applied { record, .. } = event {
            let previous = last.insert(&record.origin, record.stamp).unwrap_or(Timestamp::ZERO);
            assert!(
                record.stamp > previous,
                "seed {seed}: {} stamped {} after {previous}; {hint}",
                record.origin,
                record.stamp
            );
        }
    }
}

/// Checks every write answered at [`AckLevel::All`] since trace position
/// `from`: each node holds it or a later write to its key (or nothing, when it
/// or a later write was a delete whose tombstone was already collected).
/// Returns the position checked up to.
fn assert_acknowledged_by_all_are_everywhere(cluster: &Cluster, from: usize) -> usize {
    let trace = cluster.trace();
    for event in &trace[from..] {
        let Event::Answered { node, version, ack: AckLevel::All, outcome: Ok(_), .. } = event else {
            continue;
        };
        let written = applied(&trace, version).expect("an answered write was applied");
        let deleted = trace.iter().any(|e| {
            matches!(e, Event::Applied { record, .. }
                if record.key == written.key && record.is_tombstone() && !written.wins_over(record))
        });
        for (holder, held) in cluster.get(&written.key).into_iter().enumerate() {
            let ok = match &held {
                Some(r) => r == written || r.wins_over(written),
                None => deleted,
            };
            assert!(
                ok,
                "seed {}: n{} acknowledged {written:?} at All, but n{} holds {held:?}; {}",
                cluster.seed(),
                node + 1,
                holder + 1,
                replay_hint(cluster.seed())
            );
        }
    }
    trace.len()
}

/// The record applied as write `version`.
fn applied<'a>(trace: &'a [Event], version: &VersionToken) -> Option<&'a Record> {
    trace.iter().find_map(|e| match e {
        Event::Applied { record, .. } if record.token() == *version => Some(record),
        _ => None,
    })
}
