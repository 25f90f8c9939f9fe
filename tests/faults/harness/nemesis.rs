//! The nemesis: faults drawn from the run's seed, each injected and healed on a
//! schedule, one at a time.

use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::history::History;
use super::network;
use super::process::Cluster;

/// The kinds of fault, for scenario selection and the summary table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultKind {
    /// One node cut off from every other node.
    Isolate,
    /// A majority and a minority that cannot reach each other.
    Split,
    /// One node cannot open connections to another (which still can to it).
    OneWay,
    /// Two halves that each reach a middle node only.
    Bridge,
    /// `kill -9`, then a restart on the same disk.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// A node's clock off by up to a few seconds.
    ClockSkew,
    /// A node's clock jumping tens of seconds.
    ClockJump,
    /// The node's disk (a tmpfs) full.
    DiskFull,
    /// `kill -9`, the data directory emptied, a restart.
    EmptyDisk,
    /// SIGTERM (the node drains and leaves), then a restart (it joins again).
    LeaveJoin,
}

impl FaultKind {
    /// Every kind.
    pub(crate) const ALL: [FaultKind; 11] = [
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Bridge,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::ClockSkew,
        FaultKind::ClockJump,
        FaultKind::DiskFull,
        FaultKind::EmptyDisk,
        FaultKind::LeaveJoin,
    ];

    /// Whether it cuts the network (healing one heals every cut).
    pub(crate) fn is_network(self) -> bool {
        matches!(self, FaultKind::Isolate | FaultKind::Split | FaultKind::OneWay | FaultKind::Bridge)
    }

    /// Its name in tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::OneWay => "one-way",
            FaultKind::Bridge => "bridge",
            FaultKind::Kill => "kill-9",
            FaultKind::Pause => "pause",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::DiskFull => "disk-full",
            FaultKind::EmptyDisk => "empty-disk",
            FaultKind::LeaveJoin => "leave-join",
        }
    }
}

/// One fault, with the nodes it touches (0-based indexes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub(crate) enum Fault {
    /// See [`FaultKind::Isolate`].
    Isolate { node: usize },
    /// See [`FaultKind::Split`].
    Split { minority: Vec<usize>, majority: Vec<usize> },
    /// See [`FaultKind::OneWay`].
    OneWay { from: usize, to: usize },
    /// See [`FaultKind::Bridge`].
    Bridge { left: Vec<usize>, middle: usize, right: Vec<usize> },
    /// See [`FaultKind::Kill`].
    Kill { node: usize },
    /// See [`FaultKind::Pause`].
    Pause { node: usize },
    /// See [`FaultKind::ClockSkew`] and [`FaultKind::ClockJump`].
    Clock { node: usize, offset_ms: i64, jump: bool },
    /// See [`FaultKind::DiskFull`].
    DiskFull { node: usize },
    /// See [`FaultKind::EmptyDisk`].
    EmptyDisk { node: usize },
    /// See [`FaultKind::LeaveJoin`].
    LeaveJoin { node: usize },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

impl Fault {
    /// Its kind.
    pub(crate) fn kind(&self) -> FaultKind {
        match self {
            Fault::Isolate { .. } => FaultKind::Isolate,
            Fault::Split { .. } => FaultKind::Split,
            Fault::OneWay { .. } => FaultKind::OneWay,
            Fault::Bridge { .. } => FaultKind::Bridge,
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Clock { jump: false, .. } => FaultKind::ClockSkew,
            Fault::Clock { jump: true, .. } => FaultKind::ClockJump,
            Fault::DiskFull { .. } => FaultKind::DiskFull,
            Fault::EmptyDisk { .. } => FaultKind::EmptyDisk,
            Fault::LeaveJoin { .. } => FaultKind::LeaveJoin,
        }
    }

    /// Draws a fault of `kind` for a cluster of `size` nodes.
    fn draw(kind: FaultKind, size: usize, tmpfs_node: Option<usize>, rng: &mut StdRng) -> Self {
        let mut order: Vec<usize> = (0..size).collect();
        order.shuffle(rng);
        let node = order[0];
        match kind {
            FaultKind::Isolate => Fault::Isolate { node },
            FaultKind::Split => {
                let minority = rng.random_range(1..=(size - 1) / 2);
                let (small, large) = order.split_at(minority);
                Fault::Split { minority: sorted(small), majority: sorted(large) }
            }
            FaultKind::OneWay => Fault::OneWay { from: order[0], to: order[1] },
            FaultKind::Bridge => {
                let half = (size - 1) / 2;
                Fault::Bridge {
                    left: sorted(&order[1..=half]),
                    middle: node,
                    right: sorted(&order[half + 1..]),
                }
            }
            FaultKind::Kill => Fault::Kill { node },
            FaultKind::Pause => Fault::Pause { node },
            FaultKind::ClockSkew => {
                let ms = rng.random_range(100..3000);
                Fault::Clock { node, offset_ms: if rng.random_bool(0.5) { ms } else { -ms }, jump: false }
            }
            FaultKind::ClockJump => {
                let ms = rng.random_range(5_000..30_000);
                Fault::Clock { node, offset_ms: if rng.random_bool(0.5) { ms } else { -ms }, jump: true }
            }
            FaultKind::DiskFull => {
                Fault::DiskFull { node: tmpfs_node.expect("a tmpfs node for disk faults") }
            }
            FaultKind::EmptyDisk => Fault::EmptyDisk { node },
            FaultKind::LeaveJoin => Fault::LeaveJoin { node },
        }
    }

    /// Injects it.
    pub(crate) fn inject(&self, cluster: &mut Cluster) {
        match self {
            Fault::Isolate { node } => {
                let others: Vec<usize> = (0..cluster.nodes.len()).filter(|i| i != node).collect();
                partition(&[*node], &others);
            }
            Fault::Split { minority, majority } => partition(minority, majority),
            Fault::OneWay { from, to } => network::cut(*from, *to),
            Fault::Bridge { left, right, .. } => partition(left, right),
            Fault::Kill { node } => cluster.kill(*node),
            Fault::Pause { node } => cluster.pause(*node, true),
            Fault::Clock { node, offset_ms, .. } => cluster.set_clock(*node, *offset_ms),
            Fault::DiskFull { node } => cluster.fill_disk(*node),
            Fault::EmptyDisk { node } => {
                cluster.kill(*node);
                cluster.wipe(*node);
                cluster.start_node(*node);
            }
            Fault::LeaveJoin { node } => cluster.terminate(*node),
        }
    }

    /// Heals it.
    pub(crate) fn heal(&self, cluster: &mut Cluster) {
        match self {
            Fault::Isolate { .. } | Fault::Split { .. } | Fault::OneWay { .. } | Fault::Bridge { .. } => {
                network::heal();
            }
            Fault::Kill { node } | Fault::LeaveJoin { node } => cluster.start_node(*node),
            Fault::Pause { node } => cluster.pause(*node, false),
            Fault::Clock { node, .. } => cluster.set_clock(*node, 0),
            Fault::DiskFull { node } => cluster.free_disk(*node),
            Fault::EmptyDisk { .. } => {}
        }
    }
}

fn sorted(nodes: &[usize]) -> Vec<usize> {
    let mut v = nodes.to_vec();
    v.sort_unstable();
    v
}

/// Cuts every link between `a` and `b`, both ways.
fn partition(a: &[usize], b: &[usize]) {
    for &x in a {
        for &y in b {
            network::cut(x, y);
            network::cut(y, x);
        }
    }
}

/// One step of the schedule: its faults injected `at` after the workload
/// started (in order), healed `hold` later (in reverse order).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    /// When it is injected.
    pub(crate) at: Duration,
    /// How long it lasts.
    pub(crate) hold: Duration,
    /// One fault, or a network fault together with one of another kind.
    pub(crate) faults: Vec<Fault>,
}

/// Draws a schedule of faults filling `span`: a quiet start, then steps of 1-2.5 s
/// with gaps of 0.3-0.8 s, the last healed before `span` ends. The kinds come in
/// rounds, each round every kind of `kinds` once in a drawn order, so a short run
/// still sees each kind it names. A third of the steps that draw a network fault
/// also carry a fault of another kind (a node restarted on an empty disk while
/// the network is split, a clock jump during a partition, …) when `kinds` has one.
pub(crate) fn schedule(
    rng: &mut StdRng,
    size: usize,
    kinds: &[FaultKind],
    span: Duration,
    tmpfs_node: Option<usize>,
) -> Vec<Step> {
    let others: Vec<FaultKind> = kinds.iter().copied().filter(|k| !k.is_network()).collect();
    let mut steps = Vec::new();
    let mut round: Vec<FaultKind> = Vec::new();
    let mut at = Duration::from_millis(rng.random_range(500..1000));
    for _ in 0..100 {
        let hold = Duration::from_millis(rng.random_range(1000..2500));
        if at + hold + Duration::from_millis(300) > span || kinds.is_empty() {
            break;
        }
        if round.is_empty() {
            round = kinds.to_vec();
            round.shuffle(rng);
        }
        let kind = round.pop().expect("a kind left in the round");
        let mut faults = vec![Fault::draw(kind, size, tmpfs_node, rng)];
        if kind.is_network() && !others.is_empty() && rng.random_bool(0.33) {
            let other = others[rng.random_range(0..others.len())];
            faults.push(Fault::draw(other, size, tmpfs_node, rng));
        }
        steps.push(Step { at, hold, faults });
        at += hold + Duration::from_millis(rng.random_range(300..800));
    }
    steps
}

/// Runs `steps` against `cluster` from `start`, recording each event in
/// `history`; processes that exit by themselves are noted on the way.
pub(crate) fn run(cluster: &mut Cluster, steps: &[Step], start: Instant, history: &History) {
    for step in steps {
        sleep_until(start + step.at);
        cluster.check_exits();
        for fault in &step.faults {
            fault.inject(cluster);
            history.event("inject", fault.to_string(), up(cluster));
        }
        sleep_until(start + step.at + step.hold);
        cluster.check_exits();
        for fault in step.faults.iter().rev() {
            fault.heal(cluster);
            history.event("heal", fault.to_string(), up(cluster));
        }
    }
}

/// Node processes running and not paused.
pub(crate) fn up(cluster: &Cluster) -> usize {
    cluster.nodes.iter().filter(|n| n.up()).count()
}

fn sleep_until(when: Instant) {
    if let Some(wait) = when.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}
