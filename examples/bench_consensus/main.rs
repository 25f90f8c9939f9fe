//! Spectrum against a three-member etcd, on the same machine in one run, with
//! durable storage on both sides.
//!
//! ```text
//! cargo run --release --example bench_consensus [-- --quick | --rounds 3 --ops 500 --seconds 3] [--syscalls]
//!     [--writers 16] [--raft-only] [--baseline BIN] [--perf DIR]
//! ```
//!
//! **What runs.** Three etcd members (Debian's `etcd-server`, installed with
//! apt-get when missing, which the run says) on 127.0.0.1, .2 and .3, each with
//! its own data directory (etcd fsyncs its write-ahead log before answering a
//! write). One Spectrum cluster per distinct node-file settings in [`MODES`]:
//! three `spectrum node` processes (the binary of this build profile, built
//! first; `SPECTRUM_BIN` names another) on the same three addresses, each with
//! its durable redb store (fsync per commit). Everything lives in a temporary
//! directory on disk, and every process is stopped at the end, on error too.
//!
//! **The client shapes**, the same code for every system (etcd through its gRPC
//! KV API, Spectrum through its typed management client), 64-byte values:
//!
//! - sequential puts: one client, one put at a time, to one member (the
//!   leader, so neither pays a forwarding hop: etcd's, and in Raft mode
//!   Spectrum's; in last-writer-wins mode Spectrum's first node): p50 and p99;
//! - 16 concurrent writers (`--writers N`, 1 to 256) for a fixed window, spread over the three members,
//!   each on keys of its own: puts per second (and latencies; their mean,
//!   from which puts per second follow with the writers fixed; and each
//!   round's longest pause in which no put came back, a stall of the whole
//!   system that the percentiles of single puts blur);
//! - sequential compare-and-set on one key, each against the version the previous
//!   one made (etcd: a Txn comparing the key's mod_revision; Spectrum: its
//!   compare-and-set call, which needs Raft mode).
//!
//! **Noise.** Each shape runs in rounds; within a round every system runs once,
//! in an order that rotates from round to round, so the machine's noise hits
//! all of them. Percentiles are over every operation of every round; puts per
//! second is the median round. Each round's line prints every system's puts
//! per second and, after a slash, its CPU time per operation (its three
//! processes, in ms): a figure that grows from round to round is work that
//! grows with the writes a cluster has taken. The load generator shares the cores with both
//! clusters: figures are comparable within one run, as ratios.
//!
//! **CPU.** Under every shape's table, each system's CPU time per operation
//! (user and system, from `/proc/PID/stat`, 10 ms ticks, over every round) by
//! member and in all: where the work of a write is done, and how much of it;
//! then the clients' own (this process, which runs one system's clients at a
//! time): on two shared cores a heavier client takes CPU from its cluster.
//!
//! **`--syscalls`** counts, with `perf stat` (Debian's `linux-perf`), the system
//! calls (reads, writes, polls, futexes, fsyncs) and context switches of each
//! system's three processes in its first round of every shape, and prints them
//! per operation under the shape's table.
//!
//! **`--perf DIR`** records each system's three processes with `perf record`
//! (call graphs; Debian's `linux-perf`) in its first and its last round of the
//! concurrent shape, into `DIR/N.rR.data` (`N` the system's number in the
//! tables, from 1: etcd; `R` the round), and prints each round's puts, to
//! divide a profile's samples by: where a put's CPU goes, how that changes as a
//! run goes on, and, against `--baseline`, where two builds part ways.
//!
//! **Spectrum's configurations** are the table [`MODES`]: Raft mode
//! (`replication = "raft"` in the node file, judged against issue 14's target),
//! and last-writer-wins at `--ack quorum` and `--ack all`, whose compare-and-set
//! gets the FAILED_PRECONDITION it answers, printed as "refused (needs Raft)".
//! `--raft-only` leaves out the last-writer-wins configurations.
//!
//! **`--baseline BIN`** adds one more cluster in Raft mode run by another
//! `spectrum` binary (an earlier build, copied aside), measured in the same
//! rounds as everything else, so a change is judged against the build before it
//! under the same noise.

#[path = "../support/cpu.rs"]
mod cpu;
mod etcd;
#[path = "../support/perf.rs"]
mod perf;
#[path = "../support/processes.rs"]
mod processes;
mod report;
mod spectrum_cluster;
#[path = "../support/syscalls.rs"]
mod syscalls;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use perf::Perf;
use processes::{BoxError, Processes};
use report::Summary;
use spectrum::client::AckLevel;
use workload::{Client, Round};

/// One Spectrum configuration: the node-file settings of its cluster
/// (configurations with the same settings share one cluster) and the
/// acknowledgement level of its writes.
#[derive(Debug)]
struct Mode {
    /// As printed.
    name: &'static str,
    /// Extra node-file lines.
    settings: &'static str,
    ack: AckLevel,
    /// Whether issue 14's target applies: p50 of sequential puts no higher than
    /// etcd's and concurrent puts/s no lower (Raft mode).
    judged: bool,
}

/// The Spectrum configurations measured, in the order printed.
const MODES: &[Mode] = &[
    Mode { name: "spectrum raft", settings: "replication = \"raft\"\n", ack: AckLevel::Quorum, judged: true },
    Mode { name: "spectrum lww ack=quorum", settings: "", ack: AckLevel::Quorum, judged: false },
    Mode { name: "spectrum lww ack=all", settings: "", ack: AckLevel::All, judged: false },
];

/// Raft mode run by `--baseline`'s binary: measured, not judged.
const RAFT_BASELINE: Mode = Mode { judged: false, ..MODES[0] };

/// Writers of the concurrent shape, unless `--writers` says otherwise.
const WRITERS: usize = 16;

/// Command-line settings.
#[derive(Debug)]
struct Options {
    rounds: usize,
    /// Operations per round of the sequential shapes.
    ops: usize,
    /// The concurrent shape's window per round.
    window: Duration,
    /// Writers of the concurrent shape.
    writers: usize,
    /// Count each system's system calls in its first round of each shape.
    syscalls: bool,
    /// Measure only Raft mode (and the baseline), not last-writer-wins.
    raft_only: bool,
    /// Another `spectrum` binary whose Raft-mode cluster is measured too.
    baseline: Option<PathBuf>,
    /// Where `perf record` writes each system's profiles of its first and
    /// last concurrent rounds.
    perf: Option<PathBuf>,
}

impl Options {
    fn parse() -> Result<Options, BoxError> {
        let mut options = Options {
            rounds: 3,
            ops: 500,
            window: Duration::from_secs(3),
            writers: WRITERS,
            syscalls: false,
            raft_only: false,
            baseline: None,
            perf: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--quick" => {
                    options = Options { rounds: 2, ops: 150, window: Duration::from_secs(1), ..options }
                }
                "--syscalls" => options.syscalls = true,
                "--raft-only" => options.raft_only = true,
                "--baseline" => {
                    let bin = PathBuf::from(value()?);
                    if !bin.is_file() {
                        return Err(format!("--baseline {}: no such file", bin.display()).into());
                    }
                    options.baseline = Some(bin);
                }
                "--perf" => {
                    let dir = PathBuf::from(value()?);
                    if !dir.is_dir() {
                        return Err(format!("--perf {}: no such directory", dir.display()).into());
                    }
                    options.perf = Some(dir);
                }
                "--rounds" => options.rounds = value()?.parse::<usize>()?.clamp(1, 20),
                "--writers" => options.writers = value()?.parse::<usize>()?.clamp(1, 256),
                "--ops" => options.ops = value()?.parse::<usize>()?.clamp(10, 100_000),
                "--seconds" => {
                    options.window = Duration::from_secs_f64(value()?.parse::<f64>()?.clamp(0.2, 60.0))
                }
                other => return Err(format!("unknown argument {other:?} (see the example's docs)").into()),
            }
        }
        Ok(options)
    }
}

/// A system under test: a client per member, the member sequential shapes use,
/// and where its keys live.
struct System {
    name: String,
    /// Whether issue 14's target applies to it (see [`Mode::judged`]).
    judged: bool,
    members: Vec<Client>,
    preferred: usize,
    prefix: &'static str,
    /// The system's processes (three members).
    pids: Vec<u32>,
}

/// The client shapes, in the order run.
#[derive(Debug, Clone, Copy)]
enum Shape {
    SequentialPuts,
    ConcurrentPuts,
    SequentialCas,
}

impl Shape {
    fn title(self, writers: usize) -> String {
        match self {
            Shape::SequentialPuts => "sequential puts (1 client, 1 at a time)".to_owned(),
            Shape::ConcurrentPuts => format!("{writers} concurrent writers (over the 3 members)"),
            Shape::SequentialCas => "sequential compare-and-set (1 client, 1 key)".to_owned(),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let options = Options::parse()?;
    if cfg!(debug_assertions) {
        println!("warning: a debug build; run with --release for figures worth reading");
    }
    let bin = processes::spectrum_binary()?;
    etcd::ensure_etcd()?;
    let dir = tempfile::Builder::new().prefix("bench-consensus-").tempdir()?;
    // Dropped before `dir`: every process is stopped before its files go.
    let mut processes = Processes::default();
    let mut runs: Vec<(&Mode, &Path, String)> = MODES
        .iter()
        .filter(|mode| !options.raft_only || mode.judged)
        .map(|mode| (mode, bin.as_path(), mode.name.to_owned()))
        .collect();
    if let Some(baseline) = &options.baseline {
        println!("baseline: Raft mode run by {} as well", baseline.display());
        runs.push((&RAFT_BASELINE, baseline.as_path(), format!("{} (baseline)", RAFT_BASELINE.name)));
    }
    let systems = start_systems(&runs, dir.path(), &mut processes).await?;
    println!(
        "{} processes on 127.0.0.1-3, {} cores shared by everything; {} rounds per shape, {} operations per \
         sequential round, {:?} per concurrent round; files and logs in {}",
        processes.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        options.rounds,
        options.ops,
        options.window,
        dir.path().display()
    );
    let mut table: BTreeMap<(usize, usize), Summary> = BTreeMap::new();
    let shapes = [Shape::SequentialPuts, Shape::ConcurrentPuts, Shape::SequentialCas];
    for (s, shape) in shapes.iter().enumerate() {
        println!("\n{}", shape.title(options.writers));
        let (rounds, counted) = measure(*shape, &systems, &options).await?;
        processes.all_running()?;
        let summaries: Vec<Summary> = rounds.iter().map(|r| Summary::of(r)).collect();
        let names: Vec<&str> = systems.iter().map(|s| s.name.as_str()).collect();
        report::shape_table(&names, &summaries);
        if let Shape::ConcurrentPuts = shape {
            report::by_member(&names, &rounds, |k| systems[k].preferred);
        }
        report::cpu_by_member(&names, &rounds, |k| systems[k].preferred);
        syscalls::table("per operation (3 processes)", &counted);
        for (k, summary) in summaries.into_iter().enumerate() {
            table.insert((s, k), summary);
        }
    }
    let names: Vec<&str> = systems.iter().map(|s| s.name.as_str()).collect();
    report::final_table(&names, options.writers, &table);
    let judged: Vec<usize> = (0..systems.len()).filter(|&k| systems[k].judged).collect();
    report::target(&names, &judged, &table);
    Ok(())
}

/// etcd first (the reference), then one cluster per distinct Spectrum binary
/// and settings, shared by the `runs` (mode, binary, name) that have them.
async fn start_systems(
    runs: &[(&Mode, &Path, String)],
    dir: &Path,
    processes: &mut Processes,
) -> Result<Vec<System>, BoxError> {
    let etcd = etcd::start(dir, processes).await?;
    let mut systems = vec![System {
        pids: processes.pids_since(0),
        name: format!("etcd {} (3 members)", etcd.version),
        members: etcd.members.iter().cloned().map(Client::Etcd).collect(),
        preferred: etcd.leader,
        prefix: "bench/",
        judged: false,
    }];
    println!("etcd's leader is etcd-{}: the sequential shapes go to it", etcd.leader + 1);
    type Started<'a> = (&'a str, &'a Path, spectrum_cluster::SpectrumCluster, Vec<u32>);
    let mut clusters: Vec<Started> = Vec::new();
    for (mode, bin, name) in runs {
        let same = |(settings, b, ..): &&Started| *settings == mode.settings && b == bin;
        if !clusters.iter().any(|c| same(&c)) {
            let cluster_name = format!("c{}", clusters.len() + 1);
            let started = processes.len();
            let cluster = spectrum_cluster::start(bin, dir, &cluster_name, mode.settings, processes).await?;
            clusters.push((mode.settings, bin, cluster, processes.pids_since(started)));
        }
        let (_, _, cluster, pids) = clusters.iter().find(same).ok_or("cluster just started")?;
        let preferred = cluster.preferred().await?;
        println!("{name}: the sequential shapes go to node-{}", preferred + 1);
        systems.push(System {
            name: name.clone(),
            members: cluster
                .nodes
                .iter()
                .map(|c| Client::Spectrum { client: Box::new(c.clone()), ack: mode.ack })
                .collect(),
            preferred,
            prefix: "settings/bench/",
            judged: mode.judged,
            pids: pids.clone(),
        });
    }
    Ok(systems)
}

/// What `--syscalls` counted: per system, its operations and [`syscalls::Counting`]'s counts.
type Counted = Vec<(String, u64, Vec<u64>)>;

/// Every round of `shape` at every system, in rotating order; each round's
/// figures printed as they come. One list of rounds per system and, with
/// `--syscalls`, each system's counts in its first round.
async fn measure(
    shape: Shape,
    systems: &[System],
    options: &Options,
) -> Result<(Vec<Vec<Round>>, Counted), BoxError> {
    let mut rounds: Vec<Vec<Round>> = systems.iter().map(|_| Vec::new()).collect();
    let mut counted = Counted::new();
    for r in 0..options.rounds {
        let mut line = format!("  round {}:", r + 1);
        for k in 0..systems.len() {
            let slot = (k + r) % systems.len();
            let system = &systems[slot];
            let preferred = &system.members[system.preferred];
            let counting = if options.syscalls && r == 0 {
                Some(syscalls::Counting::start(&system.pids)?)
            } else {
                None
            };
            let perf = match (&options.perf, shape) {
                (Some(dir), Shape::ConcurrentPuts) if r == 0 || r + 1 == options.rounds => {
                    Some(Perf::start(&system.pids, &dir.join(format!("{}.r{}.data", slot + 1, r + 1)))?)
                }
                _ => None,
            };
            let cpu_before: Vec<Option<Duration>> =
                system.pids.iter().map(|&p| cpu::process_time(p)).collect();
            let client_before = cpu::process_time(std::process::id());
            let mut round = match shape {
                Shape::SequentialPuts => {
                    workload::sequential_puts(preferred, system.prefix, options.ops).await
                }
                Shape::ConcurrentPuts => {
                    workload::concurrent_puts(&system.members, system.prefix, options.writers, options.window)
                        .await
                }
                Shape::SequentialCas => workload::sequential_cas(preferred, system.prefix, options.ops).await,
            };
            round.cpu = system
                .pids
                .iter()
                .zip(cpu_before)
                .map(|(&p, before)| Some(cpu::process_time(p)?.saturating_sub(before?)))
                .collect();
            round.client_cpu = cpu::process_time(std::process::id())
                .zip(client_before)
                .map(|(after, before)| after.saturating_sub(before));
            if let Some(perf) = perf {
                perf.stop();
                println!("  {}: {} puts recorded", system.name, round.latencies.len());
            }
            if let Some(counting) = counting {
                let counts = counting.stop()?;
                if round.not_measured.is_none() {
                    counted.push((system.name.clone(), round.latencies.len() as u64, counts));
                }
            }
            match &round.not_measured {
                Some(_) => line.push_str(&format!("  {}: -", system.name)),
                None => line.push_str(&format!(
                    "  {}: {:.0}/s/{}",
                    system.name,
                    round.rate(),
                    report::per_op(round.cpu.iter().copied().sum(), round.latencies.len())
                )),
            }
            rounds[slot].push(round);
        }
        println!("{line}");
    }
    Ok((rounds, counted))
}
