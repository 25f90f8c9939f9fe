//! What the rounds add up to: one table per shape, the ratios, and the verdicts
//! against the targets.

use std::time::Duration;

use crate::load::Round;

/// One target's rounds of one shape, summed up.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) name: &'static str,
    /// Requests per second: the median of the rounds.
    pub(crate) rate: f64,
    /// Body bytes per second, over all rounds.
    pub(crate) bytes_per_second: f64,
    /// Latency percentiles over every request of every round.
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// The proxy's CPU time over all rounds divided by their requests.
    pub(crate) cpu_per_request: Option<Duration>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

impl Summary {
    pub(crate) fn of(name: &'static str, rounds: &[Round]) -> Summary {
        let mut rates: Vec<f64> =
            rounds.iter().map(|r| r.requests as f64 / r.elapsed.as_secs_f64().max(1e-9)).collect();
        rates.sort_by(f64::total_cmp);
        let rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
        let mut latencies: Vec<u64> = rounds.iter().flat_map(|r| r.latencies.iter().copied()).collect();
        latencies.sort_unstable();
        let requests: u64 = rounds.iter().map(|r| r.requests).sum();
        let elapsed: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let cpu: Option<Duration> = rounds.iter().map(|r| r.cpu).sum();
        Summary {
            name,
            rate,
            bytes_per_second: rounds.iter().map(|r| r.bytes).sum::<u64>() as f64 / elapsed.max(1e-9),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            cpu_per_request: cpu.filter(|_| requests > 0).map(|c| c / requests as u32),
            errors: rounds.iter().map(|r| r.errors).sum(),
            first_error: rounds.iter().find_map(|r| r.first_error.clone()),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(sorted[rank.min(sorted.len() - 1)])
}

/// A duration as people read it: µs below 10 ms, ms above.
pub(crate) fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 { format!("{us:.1} µs") } else { format!("{:.1} ms", us / 1000.0) }
}

/// Prints one shape's table; `streamed` adds the body throughput column.
pub(crate) fn table(summaries: &[Summary], streamed: bool) {
    let extra = if streamed { "      MiB/s" } else { "" };
    println!(
        "  {:<13} {:>10}{extra} {:>11} {:>11} {:>15} {:>7}",
        "target", "req/s", "p50", "p99", "proxy CPU/req", "errors"
    );
    for s in summaries {
        let extra = if streamed {
            format!(" {:>10.0}", s.bytes_per_second / (1024.0 * 1024.0))
        } else {
            String::new()
        };
        let cpu = s.cpu_per_request.map_or_else(|| "-".to_owned(), show);
        println!(
            "  {:<13} {:>10.0}{extra} {:>11} {:>11} {:>15} {:>7}",
            s.name,
            s.rate,
            show(s.p50),
            show(s.p99),
            cpu,
            s.errors
        );
    }
    for s in summaries.iter().filter(|s| s.errors > 0) {
        println!("  ({} first error: {})", s.name, s.first_error.as_deref().unwrap_or("?"));
    }
}

/// One target's verdict, for the closing list.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) what: String,
    pub(crate) met: bool,
}

impl Verdict {
    /// Records and prints `what` with its verdict.
    pub(crate) fn record(verdicts: &mut Vec<Verdict>, what: String, met: bool) {
        println!("  {what}: {}", if met { "met" } else { "NOT met" });
        verdicts.push(Verdict { what, met });
    }
}

/// The ratios of Spectrum's balancer against HAProxy (and direct, at one client).
pub(crate) fn ratios(shape: &str, summaries: &[Summary], one_by_one: bool, verdicts: &mut Vec<Verdict>) {
    let find = |name: &str| summaries.iter().find(|s| s.name == name);
    let (Some(direct), Some(spectrum), Some(haproxy)) = (find("direct"), find("spectrum"), find("haproxy"))
    else {
        return;
    };
    let throughput = spectrum.rate / haproxy.rate.max(1e-9);
    Verdict::record(
        verdicts,
        format!("{shape}: Spectrum / HAProxy throughput {throughput:.2} (target ≥ 1.00)"),
        throughput >= 1.0,
    );
    if let (Some(s), Some(h)) = (spectrum.cpu_per_request, haproxy.cpu_per_request) {
        let cpu = s.as_secs_f64() / h.as_secs_f64().max(1e-12);
        Verdict::record(
            verdicts,
            format!(
                "{shape}: Spectrum / HAProxy CPU per request {cpu:.2} ({} vs {}; target ≤ 1.00)",
                show(s),
                show(h)
            ),
            cpu <= 1.0,
        );
    }
    if one_by_one {
        let added = |s: &Summary| s.p50.as_secs_f64() * 1e6 - direct.p50.as_secs_f64() * 1e6;
        Verdict::record(
            verdicts,
            format!(
                "{shape}: p50 added over direct {:.1} µs (HAProxy adds {:.1} µs; target ≤ 100 µs)",
                added(spectrum),
                added(haproxy)
            ),
            added(spectrum) <= 100.0,
        );
    }
}

/// The TLS cluster beside the plaintext one, and the balancer beside the baseline
/// binary's: throughput and CPU ratios.
pub(crate) fn pair_ratios(summaries: &[Summary]) {
    let find = |name: &str| summaries.iter().find(|s| s.name == name);
    let pairs = [("spectrum", "spectrum TLS"), ("direct", "direct TLS"), ("baseline", "spectrum")];
    for (base, other) in pairs {
        let (Some(p), Some(t)) = (find(base), find(other)) else { continue };
        let cpu = match (p.cpu_per_request, t.cpu_per_request) {
            (Some(p), Some(t)) => format!(
                ", proxy CPU per request {} vs {} ({:.2}x)",
                show(t),
                show(p),
                t.as_secs_f64() / p.as_secs_f64().max(1e-12)
            ),
            _ => String::new(),
        };
        println!("  {other} / {base}: throughput {:.2}{cpu}", t.rate / p.rate.max(1e-9));
    }
}

/// The closing list of every target's verdict.
pub(crate) fn verdicts(verdicts: &[Verdict]) {
    let met = verdicts.iter().filter(|v| v.met).count();
    println!("\ntargets: {met} of {} met", verdicts.len());
    for v in verdicts {
        println!("  [{}] {}", if v.met { "met" } else { "NOT met" }, v.what);
    }
}
