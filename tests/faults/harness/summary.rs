//! The summary table of many scenarios.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::checker::Check;
use super::nemesis::FaultKind;
use super::scenario::Report;

/// Figures over many scenarios.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    scenarios: usize,
    ops: usize,
    ops_ok: usize,
    faults: BTreeMap<FaultKind, usize>,
    anomalies: BTreeMap<Check, usize>,
    slowest_convergence: u32,
    slowest_settle: Duration,
    seeds_with_anomalies: Vec<u64>,
}

impl Summary {
    /// Adds one scenario's figures.
    pub(crate) fn add(&mut self, report: &Report) {
        self.scenarios += 1;
        self.ops += report.ops;
        self.ops_ok += report.ops_ok;
        for (kind, n) in &report.faults {
            *self.faults.entry(*kind).or_insert(0) += n;
        }
        for a in &report.anomalies {
            *self.anomalies.entry(a.check).or_insert(0) += 1;
        }
        if let Some(n) = report.converged_after {
            self.slowest_convergence = self.slowest_convergence.max(n);
        }
        self.slowest_settle = self.slowest_settle.max(report.settled_in);
        if !report.anomalies.is_empty() {
            self.seeds_with_anomalies.push(report.scenario.seed);
        }
    }

    /// Whether any scenario found an anomaly.
    pub(crate) fn clean(&self) -> bool {
        self.seeds_with_anomalies.is_empty()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<28} {:>10}", "scenarios", self.scenarios)?;
        writeln!(f, "{:<28} {:>10}", "operations", self.ops)?;
        writeln!(f, "{:<28} {:>10}", "  succeeded", self.ops_ok)?;
        writeln!(f, "{:<28} {:>10}", "  failed (refused, timed out)", self.ops - self.ops_ok)?;
        writeln!(f, "{:<28} {:>10}", "faults injected", self.faults.values().sum::<usize>())?;
        for kind in FaultKind::ALL {
            writeln!(f, "  {:<26} {:>10}", kind.name(), self.faults.get(&kind).copied().unwrap_or(0))?;
        }
        writeln!(f, "{:<28} {:>10}", "anomalies", self.anomalies.values().sum::<usize>())?;
        for check in Check::ALL {
            writeln!(f, "  {:<26} {:>10}", check.name(), self.anomalies.get(&check).copied().unwrap_or(0))?;
        }
        writeln!(f, "{:<28} {:>10}", "slowest convergence (syncs)", self.slowest_convergence)?;
        writeln!(f, "{:<28} {:>9.1}s", "slowest heal to identical", self.slowest_settle.as_secs_f64())?;
        write!(f, "{:<28} {:>10?}", "seeds with anomalies", self.seeds_with_anomalies)
    }
}
