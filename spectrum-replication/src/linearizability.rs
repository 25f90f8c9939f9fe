//! A linearizability checker for compare-and-set registers keyed by string
//! (feature `testing`).
//!
//! A [`History`] lists operations on registers: [`Command::Read`],
//! [`Command::Write`], [`Command::Delete`] and [`Command::CompareAndSet`], each
//! with its invocation time and, when the client learnt the outcome, its
//! completion time and [`Response`]. An operation whose outcome is unknown (it
//! timed out, or its client crashed) may have taken effect at any point after
//! its invocation, or never. Every register starts absent.
//!
//! The history is *linearizable* when every operation can be given a point
//! between its invocation and its completion such that, applied one after
//! another in the order of those points, the operations give exactly the
//! answers the clients saw (Herlihy & Wing). [`Checker::check`] decides it, and
//! answers with a [`Report`]: linearizable, a [`Violation`] per key that is not
//! (naming the key and a small set of its operations that admit no
//! linearization), or keys left [`Undecided`] because the search exceeded its
//! budget: the problem is NP-complete in general, so the checker answers
//! "unknown" rather than running forever.
//!
//! ```
//! use spectrum_replication::linearizability::{Checker, Command, History, Operation, Response, Verdict};
//!
//! let write = |v: &str| Command::Write { value: v.into() };
//! let history = History::new(vec![
//!     Operation::completed(1, "k", write("a"), 0, 10, Response::Ok),
//!     Operation::completed(2, "k", write("b"), 20, 30, Response::Ok),
//!     // Invoked after "b" was acknowledged, yet it saw "a": a stale read.
//!     Operation::completed(3, "k", Command::Read, 40, 50, Response::Read(Some("a".into()))),
//! ])?;
//! let report = Checker::new().check(&history);
//! assert_eq!(report.verdict(), Verdict::NotLinearizable);
//! assert_eq!(report.violations[0].key, "k");
//! println!("{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## How
//!
//! - **Per key.** Linearizability is local (Herlihy & Wing 1990, theorem 1): a
//!   history is linearizable when each key's sub-history is, so each key is
//!   checked on its own (P-compositionality: Horn & Kroening, "Faster
//!   linearizability checking via P-compositionality", FORTE 2015). That is
//!   what makes thousands of operations over many keys cheap.
//! - **Wing & Gong's search** ("Testing and verifying concurrent objects",
//!   J. Parallel Distrib. Comput. 17, 1993): walk the calls and returns in
//!   time order; linearize any pending call whose answer the model allows,
//!   lift it out and start again from the first entry; on reaching a return
//!   whose call is not linearized yet, undo the last choice.
//! - **Lowe's memoization** ("Testing for linearizability", Concurrency and
//!   Computation: Practice and Experience 29(4), 2017): a cache of the
//!   configurations already explored, as (the set of linearized operations as
//!   a bitset, the register's value); a configuration seen before is not
//!   explored again. This is the algorithm of Knossos' `wgl` checker (Kyle
//!   Kingsbury, jepsen-io/knossos) and of porcupine (Anish Athalye).
//! - **Unknown outcomes** get a return at the end of time, so they may be
//!   linearized anywhere after their invocation; the search succeeds once
//!   every completed operation is linearized, whichever of them it used. Reads
//!   of unknown outcome change nothing and are left out.
//! - **Touching intervals** (one completes at the very time another is
//!   invoked) count as concurrent, as in porcupine: give times fine enough
//!   that real order shows.
//! - **Witnesses.** For a key with no linearization, the checker removes
//!   operations while the rest still admits none and every value it observed
//!   keeps its writer (delta debugging, Zeller & Hildebrandt 2002, within a
//!   budget), so a violation names a few operations
//!   rather than the key's whole history, together with the longest partial
//!   linearization the search found and the operation it could not get past.
//!
//! ## Recording
//!
//! A workload records into a [`Recorder`] as it runs (from any task, on
//! Tokio's clock, so simulated time in a simulation): every operation is of
//! unknown outcome from its invocation until its answer is recorded.
//!
//! ## The JSON-lines form
//!
//! [`History::from_json_lines`] and [`History::to_json_lines`] read and write
//! one operation a line, so recorded runs (the fault suite, the simulation)
//! can be fed to the checker:
//!
//! ```text
//! {"id":1,"process":0,"key":"k","op":"write","value":"a","invoked":0,"completed":10,"result":"ok"}
//! {"id":2,"key":"k","op":"cas","expected":"a","new":"b","invoked":5,"completed":12,"result":"failed"}
//! {"id":3,"key":"k","op":"cas","expected":null,"new":"c","invoked":6}
//! {"id":4,"key":"k","op":"read","invoked":20,"completed":25,"read":null}
//! {"id":5,"key":"k","op":"delete","invoked":30,"completed":31,"result":"ok"}
//! ```
//!
//! `op` is `read`, `write` (with `value`), `delete` or `cas` (with `new`, and
//! `expected`: a string, or `null` or missing for "absent"). A completed
//! operation has `completed` and its answer: `read` (a string, or `null` for
//! absent) for a read, `result` (`ok`, or `failed` for a cas whose condition did
//! not hold) for the others. Without `completed` the outcome is unknown.
//! `process` is optional. Unknown fields are refused, so a misspelt field is an
//! error rather than a silently different history.

mod history;
mod recorder;
mod search;
mod shrink;

use std::collections::BTreeMap;
use std::fmt;

pub use history::{Command, Completion, History, HistoryError, InvalidOperation, Operation, Response};
pub use recorder::{Invocation, Recorder};
use search::{Budget, Exhausted, Search};

/// Decides whether a [`History`] is linearizable, within budgets.
#[derive(Debug, Clone, Copy)]
pub struct Checker {
    steps_per_key: u64,
    cache_bytes_per_key: usize,
    shrink_steps: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new()
    }
}

impl Checker {
    /// A checker with the default budgets: 10 million search steps and 512 MiB
    /// of cache per key, and 20 million steps to shrink each violation.
    pub fn new() -> Self {
        Checker { steps_per_key: 10_000_000, cache_bytes_per_key: 512 << 20, shrink_steps: 20_000_000 }
    }

    /// At most `steps` search steps (one entry of the history visited) per key;
    /// a key that needs more is [`Undecided`].
    pub fn steps_per_key(mut self, steps: u64) -> Self {
        self.steps_per_key = steps;
        self
    }

    /// At most `bytes` of explored configurations cached per key; a key that
    /// needs more is [`Undecided`].
    pub fn cache_bytes_per_key(mut self, bytes: usize) -> Self {
        self.cache_bytes_per_key = bytes;
        self
    }

    /// At most `steps` search steps spent shrinking each violation to a small
    /// witness (0: report the key's whole history).
    pub fn shrink_steps(mut self, steps: u64) -> Self {
        self.shrink_steps = steps;
        self
    }

    fn budget(&self) -> Budget {
        Budget { steps: self.steps_per_key, cache_bytes: self.cache_bytes_per_key }
    }

    /// Checks every key of `history`, in key order.
    pub fn check(&self, history: &History) -> Report {
        let mut keys: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
        for op in history.operations() {
            keys.entry(&op.key).or_default().push(op);
        }
        let mut report = Report {
            keys: keys.len(),
            operations: history.operations().len(),
            steps: 0,
            violations: Vec::new(),
            undecided: Vec::new(),
        };
        for (key, ops) in keys {
            let (result, steps) = search::search(&ops, self.budget(), false);
            report.steps += steps;
            match result {
                Search::Linearizable => {}
                Search::Unknown(exhausted) => report.undecided.push(Undecided {
                    key: key.to_owned(),
                    operations: ops.len(),
                    reason: exhausted.into(),
                }),
                Search::Violation { .. } => report.violations.push(self.violation(key, &ops)),
            }
        }
        report
    }

    /// The violation on `key`: its operations shrunk to a small witness, explained.
    fn violation(&self, key: &str, ops: &[&Operation]) -> Violation {
        let witness = shrink::shrink(ops, self.budget(), self.shrink_steps);
        let (result, _) = search::search(&witness, self.budget(), true);
        let (order, stuck) = match result {
            Search::Violation { order, stuck } => {
                (order.iter().map(|&i| witness[i].id).collect(), Some(witness[stuck].id))
            }
            // The witness was proven non-linearizable within this budget.
            _ => (Vec::new(), None),
        };
        Violation {
            key: key.to_owned(),
            key_operations: ops.len(),
            operations: witness.into_iter().cloned().collect(),
            longest_linearization: order,
            stuck,
        }
    }
}

/// Checks `history` with the default budgets of [`Checker::new`].
pub fn check(history: &History) -> Report {
    Checker::new().check(history)
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Keys in the history.
    pub keys: usize,
    /// Operations in the history.
    pub operations: usize,
    /// Search steps spent (shrinking not included).
    pub steps: u64,
    /// Keys whose operations admit no linearization, in key order.
    pub violations: Vec<Violation>,
    /// Keys the search gave up on, in key order.
    pub undecided: Vec<Undecided>,
}

/// The verdict of a [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every key is linearizable.
    Linearizable,
    /// At least one key is not (whatever the undecided keys are).
    NotLinearizable,
    /// No key is found violating, but some were not decided within the budget.
    Unknown,
}

impl Report {
    /// The verdict: a violation anywhere wins over undecided keys.
    pub fn verdict(&self) -> Verdict {
        if !self.violations.is_empty() {
            Verdict::NotLinearizable
        } else if !self.undecided.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        }
    }

    /// Whether every key is linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.verdict() == Verdict::Linearizable
    }
}

/// A key whose operations admit no linearization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// How many operations the key has in the history.
    pub key_operations: usize,
    /// A subset of the key's operations that already admits no linearization,
    /// shrunk until removing any one of them would allow one or would leave a
    /// value it observed without its writer (when the shrink budget sufficed),
    /// in invocation order.
    pub operations: Vec<Operation>,
    /// Ids of the longest partial linearization of `operations` the search found, in order.
    pub longest_linearization: Vec<u64>,
    /// The operation whose completion that partial linearization could not get
    /// past: nothing else could be linearized before it completed.
    pub stuck: Option<u64>,
}

/// A key the search gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    /// The key.
    pub key: String,
    /// Its operations.
    pub operations: usize,
    /// Which budget ran out.
    pub reason: UndecidedReason,
}

/// Which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UndecidedReason {
    /// The steps per key ([`Checker::steps_per_key`]).
    Steps,
    /// The cache's memory per key ([`Checker::cache_bytes_per_key`]).
    Memory,
}

impl From<Exhausted> for UndecidedReason {
    fn from(e: Exhausted) -> Self {
        match e {
            Exhausted::Steps => UndecidedReason::Steps,
            Exhausted::Memory => UndecidedReason::Memory,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?} is not linearizable: these {} of its {} operations admit no linearization \
             (the register starts absent):",
            self.key,
            self.operations.len(),
            self.key_operations
        )?;
        for op in &self.operations {
            writeln!(f, "  {op}")?;
        }
        let order: Vec<String> = self.longest_linearization.iter().map(u64::to_string).collect();
        match (order.is_empty(), self.stuck) {
            (true, Some(stuck)) => {
                writeln!(f, "  no operation can be linearized before op {stuck} completes")
            }
            (false, Some(stuck)) => writeln!(
                f,
                "  longest partial linearization: {}; nothing can follow it before op {stuck} completes",
                order.join(", ")
            ),
            (_, None) => Ok(()),
        }
    }
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            UndecidedReason::Steps => "step budget",
            UndecidedReason::Memory => "memory budget",
        };
        write!(f, "key {:?} ({} operations): undecided, the {what} ran out", self.key, self.operations)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict() {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "NOT linearizable",
            Verdict::Unknown => "unknown",
        };
        writeln!(
            f,
            "{verdict}: {} operations on {} keys, {} search steps",
            self.operations, self.keys, self.steps
        )?;
        for v in &self.violations {
            write!(f, "{v}")?;
        }
        for u in &self.undecided {
            writeln!(f, "{u}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
