//! The fault suite's long run: many seeded scenarios on real `spectrum node` and
//! `spectrum balancer` processes in a private network namespace (root only), then
//! a summary table of operations, faults of each kind and anomalies.
//!
//! ```sh
//! cargo build --release --bin spectrum
//! cargo run --release --example faults -- --scenarios 50
//! cargo run --release --example faults -- --seed 17 --nodes 3 --kinds kill-9,pause   # replay one
//! ```
//!
//! Each scenario's history (and its processes' logs) is written to
//! `--out DIR/seed-<seed>/`; every anomaly is printed with its operations, its seed
//! and the command that replays it. Exits 1 when any scenario found an anomaly.
//! The harness is the test suite's (`tests/faults/harness`).

#[path = "../tests/faults/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use harness::nemesis::FaultKind;
use harness::sandbox;
use harness::scenario::{self, Scenario};
use harness::summary::Summary;

/// Runs seeded fault scenarios against real processes and prints a summary.
#[derive(Debug, Parser)]
struct Args {
    /// How many scenarios (seeds `--seed`, `--seed`+1, …).
    #[arg(long, default_value_t = 1)]
    scenarios: u64,
    /// The first seed (default: drawn from the time, and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes per scenario, 3 to 5 (default: 3 or 5, drawn from each seed).
    #[arg(long)]
    nodes: Option<usize>,
    /// Fault kinds, comma separated (default: every kind).
    #[arg(long, value_delimiter = ',')]
    kinds: Option<Vec<String>>,
    /// Seconds of workload (and faults) per scenario.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Where histories go.
    #[arg(long, default_value = "target/faults")]
    out: PathBuf,
    /// The `spectrum` binary (default: beside this example, built when missing).
    #[arg(long)]
    spectrum: Option<PathBuf>,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if !sandbox::inside() {
        let bin = args.spectrum.clone().unwrap_or_else(spectrum_binary);
        let seed = args
            .seed
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs()));
        let inner = inner_args(&args, &bin, seed);
        let limit = Duration::from_secs(120 + args.scenarios * (args.seconds + 60));
        let status = sandbox::rerun_inside(&inner, limit);
        return if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let bin = args.spectrum.take().expect("the outer run passes --spectrum");
    let first = args.seed.expect("the outer run passes --seed");
    println!("fault suite: {} scenarios from seed {first}", args.scenarios);
    let mut summary = Summary::default();
    for seed in first..first.saturating_add(args.scenarios) {
        let report = scenario::run(&scenario(&args, seed), &bin, &args.out);
        print!("{}", report.text());
        summary.add(&report);
    }
    println!("\n{summary}");
    if summary.clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The arguments of the run inside the namespace: these, with the binary and
/// the first seed settled.
fn inner_args(args: &Args, bin: &Path, seed: u64) -> Vec<String> {
    let mut inner = vec![
        format!("--scenarios={}", args.scenarios),
        format!("--seed={seed}"),
        format!("--seconds={}", args.seconds),
        format!("--workers={}", args.workers),
        format!("--out={}", args.out.display()),
        format!("--spectrum={}", bin.display()),
    ];
    if let Some(nodes) = args.nodes {
        inner.push(format!("--nodes={nodes}"));
    }
    if let Some(kinds) = &args.kinds {
        inner.push(format!("--kinds={}", kinds.join(",")));
    }
    inner
}

/// The scenario of `seed` under `args`.
fn scenario(args: &Args, seed: u64) -> Scenario {
    let kinds = match &args.kinds {
        None => FaultKind::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                FaultKind::ALL.into_iter().find(|k| k.name() == n).unwrap_or_else(|| {
                    panic!("unknown fault kind {n:?}; kinds: {:?}", FaultKind::ALL.map(FaultKind::name))
                })
            })
            .collect(),
    };
    let nodes = args.nodes.unwrap_or(if seed % 2 == 0 { 3 } else { 5 });
    Scenario { seed, nodes, kinds, span: Duration::from_secs(args.seconds), workers: args.workers }
}

/// The `spectrum` binary of this example's profile (`target/<profile>/spectrum`).
/// `cargo run --example` does not build it (and a cargo build from inside this run
/// could rebuild this very executable), so it must have been built first; a
/// binary older than this example is used with a warning.
fn spectrum_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this executable's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/examples/faults");
    let bin = profile_dir.join("spectrum");
    let release = if profile_dir.ends_with("release") { " --release" } else { "" };
    let built = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (built(&bin), built(&exe)) {
        (None, _) => panic!(
            "{} is missing: run `cargo build{release} --bin spectrum` first, or pass --spectrum PATH",
            bin.display()
        ),
        (Some(b), Some(e)) if b < e => eprintln!(
            "fault suite: warning: {} is older than this example; `cargo build{release} --bin spectrum` if the sources changed",
            bin.display()
        ),
        _ => {}
    }
    bin
}
