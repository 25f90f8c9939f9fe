//! Raft mode's scenarios: clients on random nodes under random partitions and
//! crashes (minority and majority outages), then healing, convergence, and
//! the linearizability check of the recorded history.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};
use spectrum_replication::linearizability::{Checker, Command, Report, Response};

use crate::cluster::Replica;
use crate::hosts::Hosts;
use crate::raft::{ClientOp, RaftCluster};

/// The registers the clients share: few, so that operations contend.
pub(crate) const KEYS: &[&str] = &["settings/a", "settings/b", "settings/c"];
/// The key of the write that proves the healed cluster commits again.
const HEALED_KEY: &str = "settings/healed";
/// Clients in a random run.
const CLIENTS: usize = 5;
/// Steps in a random run.
const STEPS: usize = 240;
/// Simulated time between two steps.
const STEP_GAP: Duration = Duration::from_millis(50);
/// Simulated time for the nodes to found their group.
const BOOT: Duration = Duration::from_secs(3);
/// How long the healed cluster may take to commit, answer and converge.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// How to replay a failing Raft seed.
pub(crate) fn raft_replay_hint(seed: u64) -> String {
    format!(
        "replay with SIM_SEED={seed} RUST_LOG=openraft=info,spectrum_replication=debug cargo test -p spectrum \
         --test simulation raft (openraft draws election timeouts from its own thread-local generator, so \
         the replay follows the same script, not necessarily the same elections)"
    )
}

/// What a Raft run left.
#[derive(Debug)]
pub(crate) struct RaftRun {
    /// How many nodes.
    pub(crate) nodes: usize,
    /// The checker's report on the whole history.
    pub(crate) report: Report,
    /// Operations by outcome: acknowledged, compare-and-set refused, unknown;
    /// and reads answered.
    pub(crate) acknowledged: usize,
    pub(crate) refused: usize,
    pub(crate) unknown: usize,
    pub(crate) reads: usize,
    /// Crashes, and how many of them left a majority down.
    pub(crate) crashes: usize,
    pub(crate) majority_outages: usize,
    /// Every node's final copy.
    pub(crate) replicas: Vec<Replica>,
    /// Simulated time from healing to convergence.
    pub(crate) settled_in: Duration,
}

/// A random operation for `client` on `key`.
fn random_op(cluster: &RaftCluster, rng: &mut StdRng, client: usize, n: usize) -> ClientOp {
    let key = KEYS[rng.random_range(0..KEYS.len())].to_owned();
    let value = format!("c{client}-{n}");
    match rng.random_range(0..100) {
        0..25 => ClientOp::Read { key },
        25..47 => ClientOp::Put { key, value },
        47..57 => ClientOp::Delete { key },
        _ => {
            // What the client last saw (perhaps stale by now), or absent.
            let expected = if rng.random_ratio(1, 5) { None } else { cluster.seen(client, &key) };
            ClientOp::Cas { key, expected, new: value }
        }
    }
}

/// The fault state the script tracks.
#[derive(Debug, Default)]
struct Faults {
    down: BTreeSet<usize>,
    cut: BTreeSet<(usize, usize)>,
    crashes: usize,
    majority_outages: usize,
}

impl Faults {
    fn crash(&mut self, cluster: &mut RaftCluster, node: usize) {
        cluster.crash(node);
        self.down.insert(node);
        self.crashes += 1;
        if self.down.len() > cluster.len() / 2 {
            self.majority_outages += 1;
        }
    }
}

/// One random fault step (or nothing). Crashes stop at one node left running,
/// so that majority outages happen; every link or node the script takes down
/// it may bring back.
fn random_fault(cluster: &mut RaftCluster, rng: &mut StdRng, faults: &mut Faults) {
    let n = cluster.len();
    let up: Vec<usize> = (0..n).filter(|i| !faults.down.contains(i)).collect();
    match rng.random_range(0..100) {
        0..8 => {
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            let pair = (a.min(b), a.max(b));
            faults.cut.insert(pair);
            cluster.partition(pair.0, pair.1);
        }
        8..12 => {
            // One node cut off from all others (perhaps the leader).
            let alone = rng.random_range(0..n);
            for other in (0..n).filter(|&o| o != alone) {
                let pair = (alone.min(other), alone.max(other));
                faults.cut.insert(pair);
                cluster.partition(pair.0, pair.1);
            }
        }
        12..20 => {
            if let Some(pair) = faults.cut.iter().copied().choose(rng) {
                faults.cut.remove(&pair);
                cluster.repair(pair.0, pair.1);
            }
        }
        20..24 if up.len() > 1 => {
            let node = up[rng.random_range(0..up.len())];
            faults.crash(cluster, node);
        }
        24..33 => {
            if let Some(node) = faults.down.iter().copied().choose(rng) {
                faults.down.remove(&node);
                cluster.restart(node);
            }
        }
        _ => {}
    }
}

/// Every idle client sends a random operation to a random running node, with
/// probability 3/4.
fn send_client_ops(cluster: &mut RaftCluster, rng: &mut StdRng, faults: &Faults, sent: &mut usize) {
    let up: Vec<usize> = (0..cluster.len()).filter(|i| !faults.down.contains(i)).collect();
    for client in 0..CLIENTS {
        if up.is_empty() || cluster.is_busy(client) || !rng.random_ratio(3, 4) {
            continue;
        }
        *sent += 1;
        let op = random_op(cluster, rng, client, *sent);
        let node = up[rng.random_range(0..up.len())];
        cluster.send(client, node, op);
    }
}

/// Runs the random Raft scenario of `seed` on 3 or 5 nodes: clients on random
/// nodes while links are cut and restored and nodes crash and restart (a
/// majority crashed once at least, mid-run), then heals the cluster and checks
/// it (see [`settle_and_check`]).
pub(crate) fn run_raft_seed(seed: u64) -> RaftRun {
    let nodes = if seed % 2 == 0 { 3 } else { 5 };
    let mut cluster = RaftCluster::new(seed, nodes, CLIENTS);
    cluster.run_for(BOOT);
    // Faults and operations draw from generators of their own, so that the
    // fault script replays whatever the clients met.
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(23) ^ 0x7a11_5eed_0f1a_4a57);
    let mut ops_rng = StdRng::seed_from_u64(seed.rotate_left(41) ^ 0x0c11_e475_0bad_cafe);
    let mut faults = Faults::default();
    let mut sent = 0;
    let outage_at = rng.random_range(STEPS / 4..STEPS / 2);
    let outage_ends = outage_at + rng.random_range(10..30);
    for step in 0..STEPS {
        send_client_ops(&mut cluster, &mut ops_rng, &faults, &mut sent);
        if step == outage_at {
            // A majority outage: crash running nodes until a majority is down.
            while faults.down.len() <= nodes / 2 {
                let node =
                    (0..nodes).filter(|i| !faults.down.contains(i)).choose(&mut rng).expect("one is up");
                faults.crash(&mut cluster, node);
            }
        } else if step == outage_ends {
            // The outage ends: all but one come back.
            while faults.down.len() > 1 {
                let node = faults.down.pop_first().expect("one is down");
                cluster.restart(node);
            }
        } else {
            random_fault(&mut cluster, &mut rng, &mut faults);
        }
        cluster.run_for(STEP_GAP);
    }
    let mut run = settle_and_check(&mut cluster, nodes);
    run.crashes = faults.crashes;
    run.majority_outages = faults.majority_outages;
    run
}

/// Sends `op` from client 0 to `node` and runs until it is answered; whether
/// it completed (rather than failing or timing out).
fn ask(cluster: &mut RaftCluster, node: usize, op: ClientOp) -> bool {
    let before = cluster.operations().len();
    cluster.send(0, node, op);
    let answered = cluster.run_until(SETTLE_LIMIT, |c| !c.is_busy(0));
    assert!(answered, "seed {}: an operation was never answered nor timed out", cluster.seed());
    cluster.operations().get(before).is_some_and(|op| op.completion.is_some())
}

/// Heals the cluster and checks what every Raft run must show:
///
/// - the healed cluster commits again (a write through every node succeeds);
/// - every client write was applied at most once (no value stored under two
///   sequence numbers in any store's change feed);
/// - every replica converges to an identical copy holding that write (so
///   every entry committed before it);
/// - a consistent read of every key, recorded last, agrees with every
///   replica's copy;
/// - the whole history, those reads included, is linearizable: so every
///   acknowledged write took effect in its interval and is present unless a
///   later write replaced it, no deleted value came back, and no read was stale.
pub(crate) fn settle_and_check(cluster: &mut RaftCluster, nodes: usize) -> RaftRun {
    let seed = cluster.seed();
    let hint = raft_replay_hint(seed);
    cluster.heal();
    let healed_at = cluster.elapsed();
    // Let the operations in flight finish (or time out).
    let idle = cluster.run_until(SETTLE_LIMIT, |c| (0..CLIENTS).all(|client| !c.is_busy(client)));
    assert!(idle, "seed {seed}: clients still wait {SETTLE_LIMIT:?} after healing; {hint}");
    for node in 0..nodes {
        let mut committed = false;
        for attempt in 0..10 {
            let value = format!("healed-n{}-{attempt}", node + 1);
            committed = ask(cluster, node, ClientOp::Put { key: HEALED_KEY.into(), value });
            if committed {
                break;
            }
        }
        assert!(committed, "seed {seed}: the healed cluster does not commit through n{}; {hint}", node + 1);
    }
    let mut finals = Vec::new();
    for (i, key) in KEYS.iter().enumerate() {
        let answered = (0..10).any(|_| ask(cluster, i % nodes, ClientOp::Read { key: (*key).into() }));
        assert!(answered, "seed {seed}: no consistent read of {key} after healing; {hint}");
        let last = cluster.operations().pop().and_then(|op| op.completion).map(|c| c.response);
        finals.push((*key, last));
    }
    let converged = cluster.run_until(SETTLE_LIMIT, |c| {
        let replicas = c.replicas();
        replicas.windows(2).all(|w| w[0].digest == w[1].digest && w[0].live() == w[1].live())
            && replicas[0].live().iter().any(|r| r.key == HEALED_KEY)
    });
    let replicas = cluster.replicas();
    assert!(converged, "seed {seed}: replicas differ {SETTLE_LIMIT:?} after healing: {replicas:#?}; {hint}");
    for (key, read) in &finals {
        let held = replicas[0]
            .live()
            .into_iter()
            .find(|r| r.key == *key)
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        assert_eq!(read.as_ref(), Some(&Response::Read(held.clone())), "seed {seed}: {key}; {hint}");
    }
    // Every value is written by one client operation: applied twice (a
    // proposal committed in two log entries), it would be stored under two
    // sequence numbers.
    for ((key, value), seqs) in cluster.applied_values() {
        assert!(
            seqs.len() == 1,
            "seed {seed}: {key} = {value:?} was applied {} times (sequence numbers {seqs:?}); {hint}",
            seqs.len()
        );
    }
    let history = cluster.history();
    let report = Checker::new().check(&history);
    if !report.is_linearizable() {
        let saved = save_history(seed, &history);
        panic!(
            "seed {seed}: the history is not linearizable: {report}\nwhole history: {saved}\nscript: {:#?}\n{hint}",
            cluster.notes()
        );
    }
    let operations = history.operations();
    let count = |f: &dyn Fn(&spectrum_replication::linearizability::Operation) -> bool| {
        operations.iter().filter(|op| f(op)).count()
    };
    RaftRun {
        nodes,
        acknowledged: count(&|op| {
            op.command != Command::Read && op.completion.as_ref().is_some_and(|c| c.response == Response::Ok)
        }),
        refused: count(&|op| op.completion.as_ref().is_some_and(|c| c.response == Response::Failed)),
        unknown: count(&|op| op.command != Command::Read && op.completion.is_none()),
        reads: count(&|op| op.command == Command::Read && op.completion.is_some()),
        report,
        crashes: 0,
        majority_outages: 0,
        replicas,
        settled_in: cluster.elapsed() - healed_at,
    }
}

/// Writes `history` (JSON lines) to `target/tmp/simulation/raft-seed-<seed>.jsonl`;
/// where it went, or why it could not be written.
fn save_history(seed: u64, history: &spectrum_replication::linearizability::History) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("simulation");
    let path = dir.join(format!("raft-seed-{seed}.jsonl"));
    let written = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::File::create(&path).map_err(|e| e.to_string()))
        .and_then(|file| history.to_json_lines(std::io::BufWriter::new(file)).map_err(|e| e.to_string()));
    match written {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("not written to {}: {e}", path.display()),
    }
}

/// Rounds of [`run_leader_crash_rounds`].
const CRASH_ROUNDS: u64 = 20;

/// The leader crashes while it handles a write a follower forwarded to it:
/// in each round a client sends a compare-and-set (on the value it last read)
/// to a follower, the leader crashes 4 to 23 ms later (before the forwarded
/// call reaches it, after it appended the entry, after it committed it, or
/// before its answer is back), restarts 200 ms later (often before the others
/// elect a new leader), and the client reads the key back. The follower must
/// not propose the write again when the call broke after the leader may have
/// taken it: applied twice, a put gets a second version (a reader that saw the
/// first then fails a compare-and-set on it) and a compare-and-set is applied
/// and then answered "condition failed". The history is checked as every Raft
/// run's is ([`settle_and_check`]).
pub(crate) fn run_leader_crash_rounds(seed: u64) -> RaftRun {
    let nodes = 3;
    let mut cluster = RaftCluster::new(seed, nodes, CLIENTS);
    cluster.run_for(BOOT);
    let mut crashes = 0;
    for round in 0..CRASH_ROUNDS {
        let elected = cluster.run_until(SETTLE_LIMIT, |c| c.leader().is_some());
        assert!(elected, "seed {seed}: no leader in round {round}; {}", raft_replay_hint(seed));
        let leader = cluster.leader().expect("a leader");
        let follower = (leader + 1 + usize::from(round % 2 == 1)) % nodes;
        let key = KEYS[usize::try_from(round).expect("small") % KEYS.len()];
        let expected = cluster.seen(0, key);
        cluster.send(0, follower, ClientOp::Cas { key: key.into(), expected, new: format!("round-{round}") });
        cluster.run_for(Duration::from_millis(4 + round));
        cluster.crash(leader);
        crashes += 1;
        cluster.run_for(Duration::from_millis(200));
        cluster.restart(leader);
        let answered = cluster.run_until(SETTLE_LIMIT, |c| !c.is_busy(0));
        assert!(answered, "seed {seed}: round {round}'s write was never answered");
        for _ in 0..5 {
            if ask(&mut cluster, follower, ClientOp::Read { key: key.into() }) {
                break;
            }
        }
    }
    let mut run = settle_and_check(&mut cluster, nodes);
    run.crashes = crashes;
    run
}
