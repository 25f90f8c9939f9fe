//! Shrinking a key's non-linearizable operations to a small witness: delta
//! debugging (Zeller & Hildebrandt, "Simplifying and isolating
//! failure-inducing input", IEEE TSE 28(2), 2002), removing ever smaller runs
//! of operations while what is left still admits no linearization.
//!
//! A subset qualifies only if every value its operations observed (a read's
//! answer, the expected value of a compare-and-set that succeeded) is still
//! written by one of them when the whole history wrote it: otherwise dropping a
//! write would turn a stale read into a read of a value "never written", a
//! different and misleading story.

use std::collections::HashSet;

use super::history::{Command, Completion, Operation, Response};
use super::search::{self, Budget, Search};

/// The value an operation writes, if any.
fn written(op: &Operation) -> Option<&str> {
    match &op.command {
        Command::Write { value } => Some(value),
        Command::CompareAndSet { new, .. } => Some(new),
        Command::Read | Command::Delete => None,
    }
}

/// The value an operation's answer shows the register held, if any.
fn observed(op: &Operation) -> Option<&str> {
    match (&op.command, &op.completion) {
        (_, Some(Completion { response: Response::Read(v), .. })) => v.as_deref(),
        (Command::CompareAndSet { expected, .. }, Some(Completion { response: Response::Ok, .. })) => {
            expected.as_deref()
        }
        _ => None,
    }
}

/// Whether every value observed in `ops` that some operation of `all` wrote is
/// written in `ops` too.
fn explained(ops: &[&Operation], all: &HashSet<&str>) -> bool {
    let here: HashSet<&str> = ops.iter().filter_map(|op| written(op)).collect();
    ops.iter().filter_map(|op| observed(op)).all(|v| here.contains(v) || !all.contains(v))
}

/// A subset of `ops` (one key's, not linearizable) that is not linearizable
/// either, in invocation order; 1-minimal (removing any one operation makes it
/// linearizable, or leaves an observed value without its writer) when
/// `total_steps` suffice, else as small as they allowed.
/// Every subset kept was proven non-linearizable, so the result always is.
pub(super) fn shrink<'a>(ops: &[&'a Operation], budget: Budget, total_steps: u64) -> Vec<&'a Operation> {
    let all: HashSet<&str> = ops.iter().filter_map(|op| written(op)).collect();
    let mut current: Vec<&Operation> = ops.to_vec();
    current.sort_by_key(|op| (op.invoked, op.id));
    let mut spent = 0u64;
    let mut chunk = (current.len() / 2).max(1);
    loop {
        let mut removed = false;
        let mut start = 0;
        while start < current.len() {
            if spent >= total_steps {
                return current;
            }
            let end = (start + chunk).min(current.len());
            let candidate: Vec<&Operation> =
                current[..start].iter().chain(&current[end..]).copied().collect();
            // Every candidate costs at least a step per operation (building
            // it, checking it), searched or not, so the budget bounds the
            // whole shrink and not only the searches' own steps.
            spent += candidate.len() as u64;
            if !explained(&candidate, &all) {
                start = end;
                continue;
            }
            let limit = Budget { steps: budget.steps.min(total_steps.saturating_sub(spent)), ..budget };
            let (result, steps) = search::search(&candidate, limit, false);
            spent += steps;
            if matches!(result, Search::Violation { .. }) {
                current = candidate;
                removed = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed {
            return current;
        }
        chunk = (chunk / 2).max(1);
    }
}
