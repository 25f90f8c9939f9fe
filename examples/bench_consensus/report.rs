//! What the rounds add up to: a table per shape, then one table of every figure
//! with Spectrum's ratios to etcd (the first system).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::workload::Round;

/// One system's rounds of one shape, summed up.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Latency percentiles over every operation of every round.
    p50: Duration,
    p99: Duration,
    /// The mean latency: with a fixed number of writers, what puts per
    /// second follow from (Little's law), tail included.
    mean: Duration,
    /// The concurrent shape's longest pause (no put coming back), by round.
    pauses: Vec<Duration>,
    /// Operations per second: the median round.
    rate: f64,
    ops: usize,
    errors: u64,
    first_error: Option<String>,
    not_measured: Option<String>,
}

impl Summary {
    pub(crate) fn of(rounds: &[Round]) -> Summary {
        let mut rates: Vec<f64> = rounds.iter().map(Round::rate).collect();
        rates.sort_by(f64::total_cmp);
        let mut latencies: Vec<u64> = rounds.iter().flat_map(|r| r.latencies.iter().copied()).collect();
        latencies.sort_unstable();
        Summary {
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            mean: Duration::from_nanos(
                (latencies.iter().map(|&l| u128::from(l)).sum::<u128>() / latencies.len().max(1) as u128)
                    .try_into()
                    .unwrap_or(u64::MAX),
            ),
            pauses: rounds.iter().filter_map(|r| r.longest_pause).collect(),
            rate: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
            ops: latencies.len(),
            errors: rounds.iter().map(|r| r.errors).sum(),
            first_error: rounds.iter().find_map(|r| r.first_error.clone()),
            not_measured: rounds.iter().find_map(|r| r.not_measured.clone()),
        }
    }

    fn measured(&self) -> bool {
        self.not_measured.is_none() && self.ops > 0
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
fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 { format!("{us:.0} µs") } else { format!("{:.1} ms", us / 1000.0) }
}

/// `a / b` with two decimals, or `-`.
fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 { format!("{:.2}", a / b) } else { "-".to_owned() }
}

/// One shape's table: a row per system, with ratios to the first (etcd).
pub(crate) fn shape_table(names: &[&str], summaries: &[Summary]) {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(6).max(6);
    println!(
        "  {:<width$} {:>10} {:>10} {:>10} {:>9} {:>7} {:>7} {:>11} {:>11}",
        "system", "p50", "p99", "mean", "ops/s", "ops", "errors", "p50/etcd", "ops/s/etcd"
    );
    let base = &summaries[0];
    for (name, s) in names.iter().zip(summaries) {
        if let Some(why) = &s.not_measured {
            println!("  {name:<width$} {why}");
            continue;
        }
        println!(
            "  {name:<width$} {:>10} {:>10} {:>10} {:>9.0} {:>7} {:>7} {:>11} {:>11}",
            show(s.p50),
            show(s.p99),
            show(s.mean),
            s.rate,
            s.ops,
            s.errors,
            ratio(s.p50.as_secs_f64(), base.p50.as_secs_f64()),
            ratio(s.rate, base.rate),
        );
        if let Some(e) = &s.first_error {
            println!("  {:<width$}   first error: {e}", "");
        }
    }
    if summaries.iter().any(|s| !s.pauses.is_empty()) {
        println!("  longest pause with no put coming back, by round (a stall of the whole system):");
        for (name, s) in names.iter().zip(summaries) {
            let pauses: Vec<String> = s.pauses.iter().map(|&p| show(p)).collect();
            println!("    {name:<width$} {}", pauses.join("  "));
        }
    }
}

/// Each system's CPU time per operation by member and summed, over every
/// round, the member `preferred(k)` of system `k` marked (what the sequential
/// shapes write through), then the clients' (this benchmark's own process,
/// which runs one system's clients at a time); "-" where `/proc` could not be read.
pub(crate) fn cpu_by_member(names: &[&str], rounds: &[Vec<Round>], preferred: impl Fn(usize) -> usize) {
    println!("  CPU per operation (ms; * the sequential shapes' member; client: this benchmark's process):");
    for (k, (name, rounds)) in names.iter().zip(rounds).enumerate() {
        let ops: usize = rounds.iter().map(|r| r.latencies.len()).sum();
        let members = rounds.iter().map(|r| r.cpu.len()).max().unwrap_or(0);
        if ops == 0 || members == 0 {
            continue;
        }
        let mut line = format!("    {name}:");
        let mut total = Some(Duration::ZERO);
        for m in 0..members {
            let used: Option<Duration> = rounds.iter().map(|r| r.cpu.get(m).copied().flatten()).sum();
            total = total.zip(used).map(|(t, u)| t + u);
            let mark = if m == preferred(k) { "*" } else { "" };
            line.push_str(&format!("  m{}{mark} {}", m + 1, per_op(used, ops)));
        }
        line.push_str(&format!("  all {}", per_op(total, ops)));
        let client: Option<Duration> = rounds.iter().map(|r| r.client_cpu).sum();
        line.push_str(&format!("  client {}", per_op(client, ops)));
        println!("{line}");
    }
}

/// `used` over `ops` operations, in milliseconds.
pub(crate) fn per_op(used: Option<Duration>, ops: usize) -> String {
    used.map_or("-".to_owned(), |u| format!("{:.3}", u.as_secs_f64() * 1e3 / ops as f64))
}

/// Each system's p50 and p99 by the member its writers went through, over
/// every round, the member `preferred(k)` of system `k` marked (the leader in
/// Raft mode and etcd: the others forward their writes to it).
pub(crate) fn by_member(names: &[&str], rounds: &[Vec<Round>], preferred: impl Fn(usize) -> usize) {
    println!("  by member written through (p50 / p99; * the leader, or the sequential shapes' member):");
    for (k, (name, rounds)) in names.iter().zip(rounds).enumerate() {
        let members = rounds.iter().map(|r| r.by_member.len()).max().unwrap_or(0);
        let mut line = format!("    {name}:");
        for m in 0..members {
            let mut all: Vec<u64> =
                rounds.iter().filter_map(|r| r.by_member.get(m)).flatten().copied().collect();
            all.sort_unstable();
            let mark = if m == preferred(k) { "*" } else { "" };
            line.push_str(&format!(
                "  m{}{mark} {} / {}",
                m + 1,
                show(percentile(&all, 0.5)),
                show(percentile(&all, 0.99))
            ));
        }
        println!("{line}");
    }
}

/// Every figure of every system, then each Spectrum configuration's ratios to
/// etcd: latency below 1.00 and throughput above 1.00 favour Spectrum.
pub(crate) fn final_table(names: &[&str], writers: usize, table: &BTreeMap<(usize, usize), Summary>) {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(6).max(16);
    println!(
        "\nsummary (ratios are Spectrum / etcd: latency below 1.00 and puts/s above 1.00 favour Spectrum)"
    );
    println!(
        "  {:<width$} {:>10} {:>10} {:>12} {:>10} {:>10}",
        "system",
        "put p50",
        "put p99",
        format!("{writers}w puts/s"),
        "cas p50",
        "cas p99"
    );
    let cell = |shape: usize, system: usize| table.get(&(shape, system)).filter(|s| s.measured());
    let duration =
        |s: Option<&Summary>, p99: bool| s.map_or("-".to_owned(), |s| show(if p99 { s.p99 } else { s.p50 }));
    for (k, name) in names.iter().enumerate() {
        println!(
            "  {name:<width$} {:>10} {:>10} {:>12} {:>10} {:>10}",
            duration(cell(0, k), false),
            duration(cell(0, k), true),
            cell(1, k).map_or("-".to_owned(), |s| format!("{:.0}", s.rate)),
            duration(cell(2, k), false),
            duration(cell(2, k), true),
        );
        if k == 0 {
            continue;
        }
        let r = |shape: usize, f: &dyn Fn(&Summary) -> f64| match (cell(shape, k), cell(shape, 0)) {
            (Some(a), Some(b)) => ratio(f(a), f(b)),
            _ => "-".to_owned(),
        };
        let p50 = |s: &Summary| s.p50.as_secs_f64();
        let p99 = |s: &Summary| s.p99.as_secs_f64();
        println!(
            "  {:<width$} {:>10} {:>10} {:>12} {:>10} {:>10}",
            "  / etcd",
            r(0, &p50),
            r(0, &p99),
            r(1, &|s| s.rate),
            r(2, &p50),
            r(2, &p99),
        );
    }
    for (k, name) in names.iter().enumerate() {
        if let Some(why) = table.get(&(2, k)).and_then(|s| s.not_measured.as_deref()) {
            println!("  compare-and-set, {name}: {why}");
        }
    }
}

/// Issue 14's target for each judged system: sequential put p50 no higher than
/// etcd's, concurrent puts/s no lower.
pub(crate) fn target(names: &[&str], judged: &[usize], table: &BTreeMap<(usize, usize), Summary>) {
    if judged.is_empty() {
        println!(
            "target (issue 14: Raft mode's put p50 <= etcd's, puts/s >= etcd's): no Raft mode in this build, \
             not judged"
        );
        return;
    }
    let cell = |shape: usize, system: usize| table.get(&(shape, system)).filter(|s| s.measured());
    for &k in judged {
        let verdict = match (cell(0, k), cell(0, 0), cell(1, k), cell(1, 0)) {
            (Some(p), Some(pe), Some(t), Some(te)) => {
                let met = p.p50 <= pe.p50 && t.rate >= te.rate;
                format!(
                    "{}: p50 {} vs {}, puts/s {:.0} vs {:.0}",
                    if met { "met" } else { "NOT met" },
                    show(p.p50),
                    show(pe.p50),
                    t.rate,
                    te.rate
                )
            }
            _ => "not measured".to_owned(),
        };
        println!("target (issue 14), {}: {verdict}", names[k]);
    }
}
