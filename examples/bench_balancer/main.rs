//! The balancer against HAProxy and against no proxy at all, on the same nodes, in
//! one run on loopback.
//!
//! ```text
//! cargo run --release --example bench_balancer [-- --rounds 3 --seconds 2 --no-tls --perf FILE --perf-shape 8x8 --perf-target haproxy --baseline BIN --syscalls --bare-haproxy]
//! ```
//!
//! **What runs.** The `spectrum` binary of the same build profile (built first with
//! `cargo build --release --bin spectrum`, so it runs the current code; set
//! `SPECTRUM_BIN` to use another) runs three `spectrum node`s and a
//! `spectrum balancer` from files generated in a temporary directory (round robin,
//! the nodes listed statically, health checks every second), and Debian's HAProxy
//! (installed with apt-get when missing, which the run says) runs over the same
//! nodes: round robin, HTTP/1.1 and h2c on one port, HTTP/2 to the nodes with
//! shared connections (`http-reuse always`), `GET /readyz` checks every second,
//! as many threads as cores (the balancer's runtime also has one worker per core).
//! A second cluster of three nodes and a balancer, with certificates made by
//! `spectrum cert init` / `issue`, serves the TLS comparison: TLS from the client to
//! the balancer and from the balancer to the nodes, as a TLS cluster runs.
//!
//! **The load.** A load generator in this process, on bare hyper connections (the
//! same code and settings for every target), drives each shape at each target in
//! turn, round after round (the order rotates each round), each for a fixed time:
//!
//! - gRPC unary `grpc.health.v1.Health/Check` with 1 connection × 1 stream, and with
//!   8 connections × 8 concurrent streams (the TLS targets join this one);
//! - HTTP/1.1 `GET /healthz` on 8 connections, one request at a time each;
//! - one 64 MiB server-streamed gRPC response at a time
//!   (`spectrum.demo.v1.Dataflow/Download`, 64 KiB messages).
//!
//! "direct" goes to the three nodes in turn (one connection per node at 1×1, the
//! connections spread over the nodes otherwise). Connections are opened and warmed
//! up before each timed window, so TLS handshakes stay outside it.
//!
//! **What it prints.** Per shape and target: requests per second (the median
//! round), p50 and p99 latency (over every request of every round), and the proxy
//! process's CPU time per request (user + system from `/proc/PID/stat` around each
//! window, summed over the rounds); then Spectrum's ratios to HAProxy against the
//! targets (throughput ≥ 1.0 × HAProxy in every shape, CPU per request no higher,
//! p50 added over direct ≤ 100 µs at 1×1), TLS against plaintext, and a closing
//! list of the targets met. `--perf FILE` records the balancer with `perf record`
//! (call graphs) during its first round of the shape whose title contains
//! `--perf-shape` (default `8x8`; `1x1`, `HTTP/1.1` or `streamed` for the others)
//! (Debian's `linux-perf`); `--perf-target haproxy` records HAProxy instead, to
//! compare the two profiles (a target or shape no round of the run has is
//! refused at start).
//! `--baseline PATH` runs one more balancer, from another `spectrum` binary (a
//! build of an earlier commit), over the same nodes: before and after a change in
//! one run. `--syscalls` counts, with `perf stat`, each proxy's system calls
//! (reads, writes, polls, futexes) and context switches per request in its first
//! round of every shape, and prints them under the shape's table.
//!
//! Everything shares this machine's cores: the load generator and the nodes compete
//! with the proxy for CPU, so throughput figures are a floor and comparable only
//! within one run; CPU per request is the steadier comparison.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[path = "../support/cpu.rs"]
mod cpu;
mod fixture;
mod load;
#[path = "../support/perf.rs"]
mod perf;
#[path = "../support/processes.rs"]
mod processes;
mod report;
#[path = "../support/syscalls.rs"]
mod syscalls;

use fixture::Fixture;
use load::{BoxError, Call, Endpoint, Load, Round};
use perf::Perf;
use report::Summary;

/// Size of the streamed response.
const DOWNLOAD_BYTES: u64 = 64 * 1024 * 1024;

/// Command-line settings.
#[derive(Debug)]
struct Options {
    rounds: usize,
    window: Duration,
    tls: bool,
    perf: Option<PathBuf>,
    /// Part of the title of the shape `perf` records.
    perf_shape: String,
    /// The target `perf` records (`spectrum`, or `haproxy` to compare profiles).
    perf_target: String,
    baseline: Option<PathBuf>,
    syscalls: bool,
    /// HAProxy without the forwarding headers the balancer adds.
    bare_haproxy: bool,
}

impl Options {
    fn parse() -> Result<Options, BoxError> {
        let mut options = Options {
            rounds: 3,
            window: Duration::from_secs(2),
            tls: true,
            perf: None,
            perf_shape: "8x8".to_owned(),
            perf_target: "spectrum".to_owned(),
            baseline: None,
            syscalls: false,
            bare_haproxy: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--rounds" => options.rounds = value()?.parse::<usize>()?.clamp(1, 20),
                "--seconds" => {
                    options.window = Duration::from_secs_f64(value()?.parse::<f64>()?.clamp(0.2, 30.0))
                }
                "--no-tls" => options.tls = false,
                "--perf" => options.perf = Some(PathBuf::from(value()?)),
                "--perf-shape" => options.perf_shape = value()?,
                "--perf-target" => options.perf_target = value()?,
                "--baseline" => options.baseline = Some(PathBuf::from(value()?)),
                "--syscalls" => options.syscalls = true,
                "--bare-haproxy" => options.bare_haproxy = true,
                other => return Err(format!("unknown argument {other:?} (see the example's docs)").into()),
            }
        }
        options.check_perf()?;
        Ok(options)
    }

    /// Refuses a `--perf-target` or `--perf-shape` that names no round of this
    /// run: it would record nothing, and say nothing.
    fn check_perf(&self) -> Result<(), BoxError> {
        if self.perf.is_none() {
            return Ok(());
        }
        let shapes: Vec<&Shape> = SHAPES.iter().filter(|s| s.title.contains(&self.perf_shape)).collect();
        if shapes.is_empty() {
            let titles: Vec<&str> = SHAPES.iter().map(|s| s.title).collect();
            return Err(
                format!("--perf-shape {:?} is in no shape's title: {titles:?}", self.perf_shape).into()
            );
        }
        let runs = match self.perf_target.as_str() {
            "spectrum" | "haproxy" => true,
            "baseline" => self.baseline.is_some(),
            "spectrum TLS" => self.tls && shapes.iter().any(|s| s.with_tls),
            _ => false,
        };
        if !runs {
            return Err(format!(
                "--perf-target {:?} runs in no recorded round: \"spectrum\", \"haproxy\", \"baseline\" (with \
                 --baseline) or \"spectrum TLS\" (TLS on, the 8x8 shape)",
                self.perf_target
            )
            .into());
        }
        Ok(())
    }
}

/// One shape of load.
#[derive(Debug, Clone, Copy)]
struct Shape {
    title: &'static str,
    load: Load,
    /// The TLS targets join this shape.
    with_tls: bool,
    /// One client, one request at a time: where added latency is judged.
    one_by_one: bool,
}

const SHAPES: [Shape; 4] = [
    Shape {
        title: "gRPC unary 1x1",
        load: Load { call: Call::Unary, connections: 1, streams: 1 },
        with_tls: false,
        one_by_one: true,
    },
    Shape {
        title: "gRPC unary 8x8",
        load: Load { call: Call::Unary, connections: 8, streams: 8 },
        with_tls: true,
        one_by_one: false,
    },
    Shape {
        title: "HTTP/1.1 8 connections",
        load: Load { call: Call::Healthz, connections: 8, streams: 1 },
        with_tls: false,
        one_by_one: false,
    },
    Shape {
        title: "64 MiB streamed response",
        load: Load { call: Call::Download(DOWNLOAD_BYTES), connections: 1, streams: 1 },
        with_tls: false,
        one_by_one: false,
    },
];

/// Where load goes, and which process's CPU time it costs.
struct Target {
    name: &'static str,
    endpoints: Vec<Endpoint>,
    /// The proxy's process, if any.
    pid: Option<u32>,
}

fn targets(fixture: &Fixture, shape: &Shape) -> Vec<Target> {
    let plain = &fixture.plain;
    let mut targets = vec![
        Target { name: "direct", endpoints: plain.nodes.clone(), pid: None },
        Target { name: "spectrum", endpoints: vec![plain.balancer.clone()], pid: Some(plain.balancer_pid) },
        Target { name: "haproxy", endpoints: vec![fixture.haproxy.clone()], pid: Some(fixture.haproxy_pid) },
    ];
    if let Some((endpoint, pid)) = &fixture.baseline {
        targets.push(Target { name: "baseline", endpoints: vec![endpoint.clone()], pid: Some(*pid) });
    }
    if let Some(tls) = fixture.tls.as_ref().filter(|_| shape.with_tls) {
        targets.push(Target { name: "direct TLS", endpoints: tls.nodes.clone(), pid: None });
        targets.push(Target {
            name: "spectrum TLS",
            endpoints: vec![tls.balancer.clone()],
            pid: Some(tls.balancer_pid),
        });
    }
    targets
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
    let haproxy = fixture::ensure_haproxy()?;
    let fixture =
        Fixture::start(&bin, options.tls, options.baseline.as_deref(), options.bare_haproxy).await?;
    println!(
        "3 nodes on loopback, {} cores shared by everything; {}; {} rounds of {:?} per target and shape",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        haproxy,
        options.rounds,
        options.window
    );
    println!("files and logs in {}", fixture.dir.path().display());
    let mut verdicts = Vec::new();
    for shape in &SHAPES {
        let targets = targets(&fixture, shape);
        println!("\n{}", shape.title);
        let (rounds, counted) = measure(shape, &targets, &options).await?;
        let summaries: Vec<Summary> =
            targets.iter().zip(&rounds).map(|(t, r)| Summary::of(t.name, r)).collect();
        report::table(&summaries, matches!(shape.load.call, Call::Download(_)));
        report::ratios(shape.title, &summaries, shape.one_by_one, &mut verdicts);
        report::pair_ratios(&summaries);
        syscalls::table("per request", &counted);
    }
    report::verdicts(&verdicts);
    Ok(())
}

/// What `--syscalls` counted: per proxy, its requests and [`syscalls::Counting`]'s counts.
type Counted = Vec<(String, u64, Vec<u64>)>;

/// Every round of `shape` at every target, in rotating order; printed as they come.
/// With `--syscalls`, also each proxy's counts in its first round (from before its
/// connections are opened and warmed up: a few requests more than the window's).
async fn measure(
    shape: &Shape,
    targets: &[Target],
    options: &Options,
) -> Result<(Vec<Vec<Round>>, Counted), BoxError> {
    let mut rounds: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    let mut counted = Counted::new();
    for r in 0..options.rounds {
        let mut line = format!("  round {}:", r + 1);
        for k in 0..targets.len() {
            let slot = (k + r) % targets.len();
            let target = &targets[slot];
            let perf = match (&options.perf, target.pid) {
                (Some(file), Some(pid))
                    if r == 0
                        && target.name == options.perf_target
                        && shape.title.contains(&options.perf_shape) =>
                {
                    Some(Perf::start(&[pid], file)?)
                }
                _ => None,
            };
            let counting = match target.pid {
                Some(pid) if options.syscalls && r == 0 => Some(syscalls::Counting::start(&[pid])?),
                _ => None,
            };
            let round = load::round(shape.load, &target.endpoints, target.pid, options.window)
                .await
                .map_err(|e| format!("{} at {}: {e}", shape.title, target.name))?;
            if let Some(perf) = perf {
                perf.stop();
            }
            if let Some(counting) = counting {
                counted.push((target.name.to_owned(), round.requests, counting.stop()?));
            }
            line.push_str(&format!(
                "  {} {:.0}/s",
                target.name,
                round.requests as f64 / round.elapsed.as_secs_f64()
            ));
            rounds[slot].push(round);
        }
        println!("{line}");
    }
    Ok((rounds, counted))
}
