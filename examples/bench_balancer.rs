//! Unary gRPC through the balancer versus straight to the nodes, in one run on
//! loopback.
//!
//! ```text
//! cargo run --release --example bench_balancer
//! ```
//!
//! Starts three nodes and a balancer in this process, then calls
//! `grpc.health.v1.Health/Check` (a small unary call every node serves):
//!
//! - latency: one client, calls one after the other, p50 and p99 each way and the
//!   latency the balancer adds (targets: ≤ 100 µs at p50, ≤ 1 ms at p99);
//! - throughput: several concurrent clients for a fixed number of calls, calls
//!   per second each way and their ratio (target ≥ 0.8).
//!
//! When `haproxy` is installed (Debian's package), the same calls also go through
//! an HAProxy in front of the same three nodes (HTTP/2 cleartext both sides, round
//! robin): the real anchor, measured in the same run, with its own CPU time read
//! from `/proc` so the balancer's cost per call compares with HAProxy's.
//!
//! Direct calls go to the three nodes in turn, as the balancer's round robin does.
//! The client side is the same both ways: each client has its own connection, to a
//! node or to the balancer (which multiplexes every client's calls onto its few
//! connections per node, see `BalancerConfig::upstream_connections`).
//!
//! Everything shares this machine's cores, so the balancer competes with the nodes
//! and the clients for CPU: the figures are a floor, not a ceiling. When the cores
//! are saturated the throughput ratio is the ratio of CPU spent per call, so the
//! throughput phase also prints the process CPU time per call each way (Linux
//! only): the difference is what the balancer itself costs per call.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spectrum::Cluster;
use spectrum_balancer::BalancerConfig;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Calls per direction in the latency phase.
const LATENCY_CALLS: usize = 4_000;
/// Concurrent clients in the throughput phase.
const CLIENTS: usize = 16;
/// Calls per direction in the throughput phase.
const THROUGHPUT_CALLS: usize = 30_000;
/// Rounds of each phase; the best round of each direction is reported.
const ROUNDS: usize = 2;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = BalancerConfig { health_interval: Duration::from_millis(200), ..Default::default() };
    let cluster = Cluster::builder("bench".parse()?).size(3).balancer_config(config.clone()).start().await?;
    let outcome = bench(&cluster, &config).await;
    cluster.shutdown().await;
    if let Err(e) = &outcome {
        eprintln!("benchmark failed: {e}");
    }
    outcome
}

/// One HTTP/2 connection.
async fn connect(url: &str) -> Result<HealthClient<Channel>, Box<dyn Error>> {
    let channel = Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true).connect().await?;
    Ok(HealthClient::new(channel))
}

async fn call(client: &mut HealthClient<Channel>) -> Result<Duration, tonic::Status> {
    let started = Instant::now();
    client.check(HealthCheckRequest { service: String::new() }).await?;
    Ok(started.elapsed())
}

/// Where calls go: the balancer, HAProxy, or each node in turn.
struct Target {
    name: &'static str,
    urls: Vec<String>,
    /// Another process whose CPU time counts for these calls (HAProxy's).
    pid: Option<u32>,
}

/// HAProxy in front of the nodes, stopped when dropped.
struct Haproxy {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts HAProxy (HTTP/2 cleartext in and out, round robin) in front of `nodes`
/// (`host:port`), or `None` when it is not installed.
async fn start_haproxy(nodes: &[String]) -> Result<Option<Haproxy>, Box<dyn Error>> {
    if std::process::Command::new("haproxy").arg("-v").output().is_err() {
        return Ok(None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let servers: String =
        nodes.iter().enumerate().map(|(i, n)| format!("  server n{i} {n} proto h2\n")).collect();
    let config = format!(
        "global\n  maxconn 4096\n  nbthread 2\ndefaults\n  mode http\n  timeout connect 2s\n  \
         timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:{port} proto h2\n  \
         default_backend be\nbackend be\n  balance roundrobin\n{servers}"
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let child = std::process::Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            return Err("haproxy did not start listening".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some(Haproxy { child, url, _dir: dir }))
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn latency(target: &Target) -> Result<Latency, Box<dyn Error>> {
    let mut clients = Vec::new();
    for url in &target.urls {
        clients.push(connect(url).await?);
    }
    for i in 0..200 {
        let n = clients.len();
        call(&mut clients[i % n]).await?;
    }
    let mut samples = Vec::with_capacity(LATENCY_CALLS);
    for i in 0..LATENCY_CALLS {
        let n = clients.len();
        samples.push(call(&mut clients[i % n]).await?);
    }
    samples.sort_unstable();
    Ok(Latency { p50: percentile(&samples, 0.50), p99: percentile(&samples, 0.99) })
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat`;
/// `None` where that cannot be read.
fn cpu_time() -> Option<Duration> {
    process_cpu_time("self")
}

/// CPU time used so far by process `pid` (`self` for this one).
fn process_cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in USER_HZ, 100 per second on every mainstream platform.
    Some(Duration::from_millis(ticks * 10))
}

/// One throughput round: calls per second and, if known, CPU time per call.
struct Rate {
    per_second: f64,
    cpu_per_call: Option<Duration>,
}

/// Calls per second with [`CLIENTS`] concurrent clients, each on its own connection.
async fn throughput(target: &Target) -> Result<Rate, Box<dyn Error>> {
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(connect(&target.urls[c % target.urls.len()]).await?);
    }
    let per_client = THROUGHPUT_CALLS / CLIENTS;
    let gate = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for mut client in clients {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                call(&mut client).await?;
            }
            gate.wait().await;
            for _ in 0..per_client {
                call(&mut client).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    let other = target.pid.map(|p| p.to_string());
    let cpu_now = || -> Option<Duration> {
        let own = cpu_time()?;
        match &other {
            Some(pid) => Some(own + process_cpu_time(pid)?),
            None => Some(own),
        }
    };
    gate.wait().await;
    let started = Instant::now();
    let cpu_before = cpu_now();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let calls = per_client * CLIENTS;
    let cpu_per_call = match (cpu_before, cpu_now()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) / calls as u32),
        _ => None,
    };
    Ok(Rate { per_second: calls as f64 / elapsed.as_secs_f64(), cpu_per_call })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn bench(cluster: &Cluster, config: &BalancerConfig) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.balancer().stats().iter().all(|s| s.healthy) {
        if Instant::now() > deadline {
            return Err("nodes did not become healthy".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let direct =
        Target { name: "direct", urls: cluster.nodes().map(|n| n.url().to_owned()).collect(), pid: None };
    let balanced = Target { name: "balancer", urls: vec![cluster.balancer_url()], pid: None };
    let nodes: Vec<String> = cluster.nodes().map(|n| n.addr().authority().to_owned()).collect();
    let haproxy = start_haproxy(&nodes).await?;
    let mut targets = vec![&direct, &balanced];
    let haproxy_target = haproxy.as_ref().map(|h| Target {
        name: "haproxy",
        urls: vec![h.url.clone()],
        pid: Some(h.child.id()),
    });
    match &haproxy_target {
        Some(t) => targets.push(t),
        None => println!("(haproxy is not installed: `apt-get install haproxy` to compare with it)"),
    }
    println!(
        "unary gRPC (grpc.health.v1.Health/Check), 3 nodes on loopback, {} available cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    println!("\nlatency: 1 client, {LATENCY_CALLS} sequential calls per round, best of {ROUNDS} rounds");
    let mut best: Vec<Option<Latency>> = targets.iter().map(|_| None).collect();
    for round in 1..=ROUNDS {
        for (slot, target) in targets.iter().enumerate() {
            let l = latency(target).await?;
            println!(
                "  round {round} {:<9} p50 {:>7.1} µs   p99 {:>7.1} µs",
                target.name,
                us(l.p50),
                us(l.p99)
            );
            let keep = match &best[slot] {
                Some(b) => l.p50 < b.p50,
                None => true,
            };
            if keep {
                best[slot] = Some(l);
            }
        }
    }
    let (Some(Some(d)), Some(Some(b))) = (best.first(), best.get(1)) else {
        return Err("no latency measured".into());
    };
    let h = best.get(2).and_then(Option::as_ref);
    let added50 = us(b.p50) - us(d.p50);
    let added99 = us(b.p99) - us(d.p99);

    println!(
        "\nthroughput: {CLIENTS} concurrent clients, {THROUGHPUT_CALLS} calls per round, best of {ROUNDS} rounds"
    );
    println!(
        "  same clients both ways, each on its own connection (direct: to the nodes in turn; via the\n  \
         balancer: to it, and it multiplexes them onto up to {} connections per node). All of this\n  \
         shares {} cores: once they are busy the ratio is about the ratio of CPU per call.",
        config.upstream_connections,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let mut best_rate = vec![0.0f64; targets.len()];
    let mut best_cpu: Vec<Option<Duration>> = targets.iter().map(|_| None).collect();
    for round in 1..=ROUNDS {
        for (slot, target) in targets.iter().enumerate() {
            let rate = throughput(target).await?;
            let cpu = rate.cpu_per_call.map_or_else(|| "n/a".to_owned(), |c| format!("{:.1} µs", us(c)));
            println!(
                "  round {round} {:<9} {:>9.0} calls/s   CPU per call {cpu:>9}",
                target.name, rate.per_second
            );
            if rate.per_second > best_rate[slot] {
                best_rate[slot] = rate.per_second;
                best_cpu[slot] = rate.cpu_per_call;
            }
        }
    }
    let ratio = best_rate[1] / best_rate[0];

    println!("\nsummary");
    println!(
        "  throughput   direct {:>9.0}/s  balancer {:>9.0}/s  ratio {:.2} (target >= 0.80) {}",
        best_rate[0],
        best_rate[1],
        ratio,
        verdict(ratio >= 0.8)
    );
    if let (Some(Some(d)), Some(Some(b))) = (best_cpu.first(), best_cpu.get(1)) {
        println!(
            "  CPU per call direct {:>7.1} µs  balancer {:>7.1} µs  the balancer's own {:>7.1} µs",
            us(*d),
            us(*b),
            us(b.saturating_sub(*d))
        );
        if let Some(Some(hp)) = best_cpu.get(2) {
            println!(
                "  CPU per call haproxy {:>7.1} µs (clients + haproxy)  haproxy's own {:>7.1} µs",
                us(*hp),
                us(hp.saturating_sub(*d))
            );
        }
    }
    if let Some(rate) = best_rate.get(2) {
        println!(
            "  throughput   haproxy {:>9.0}/s  balancer / haproxy {:.2} (target >= 1.00) {}",
            rate,
            best_rate[1] / rate,
            verdict(best_rate[1] >= *rate)
        );
    }
    if let Some(h) = h {
        println!(
            "  latency      haproxy p50 {:>7.1} µs  p99 {:>7.1} µs (balancer p50 {:>7.1} µs)",
            us(h.p50),
            us(h.p99),
            us(b.p50)
        );
    }
    println!(
        "  latency p50  direct {:>7.1} µs  balancer {:>7.1} µs  added {:>7.1} µs (target <= 100 µs) {}",
        us(d.p50),
        us(b.p50),
        added50,
        verdict(added50 <= 100.0)
    );
    println!(
        "  latency p99  direct {:>7.1} µs  balancer {:>7.1} µs  added {:>7.1} µs (target <= 1000 µs) {}",
        us(d.p99),
        us(b.p99),
        added99,
        verdict(added99 <= 1_000.0)
    );
    let failures: u64 = cluster.balancer().stats().iter().map(|s| s.failures).sum();
    println!("  failed calls through the balancer: {failures}");
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
