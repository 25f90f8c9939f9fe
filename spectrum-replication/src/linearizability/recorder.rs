//! Recording a history while a workload runs, from any number of tasks.

use parking_lot::Mutex;
use tokio::time::Instant;

use super::history::{Command, Completion, History, HistoryError, Operation, Response};

/// Records operations as a workload invokes and completes them, timed in
/// microseconds since the recorder was made, on Tokio's clock (so a simulation
/// that drives time, turmoil's or a paused runtime's, records simulated time).
///
/// An operation is recorded as of unknown outcome when it is invoked; its
/// [`complete`](Recorder::complete) fills in the answer. So an operation whose
/// client gave up (a timeout, a dropped future, a crashed task) stays of unknown
/// outcome, which is what it is. [`forget`](Recorder::forget) removes one known
/// not to have taken effect (refused before anything was applied).
///
/// ```
/// use spectrum_replication::linearizability::{Command, Recorder, Response, check};
///
/// let recorder = Recorder::new();
/// let put = recorder.invoke(1, "k", Command::Write { value: "a".into() });
/// recorder.complete(put, Response::Ok);
/// let get = recorder.invoke(2, "k", Command::Read);
/// recorder.complete(get, Response::Read(Some("a".into())));
/// let lost = recorder.invoke(1, "k", Command::Delete); // never completed: unknown outcome
/// # let _ = lost;
/// assert!(check(&recorder.history()?).is_linearizable());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    /// Indexed by operation id; `None` once forgotten.
    operations: Mutex<Vec<Option<Operation>>>,
}

/// An invoked operation, to hand back to [`Recorder::complete`] or [`Recorder::forget`].
#[derive(Debug)]
#[must_use = "an operation never completed is recorded as of unknown outcome"]
pub struct Invocation {
    id: u64,
}

impl Invocation {
    /// The operation's id in the history.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder; its clock starts now.
    pub fn new() -> Self {
        Recorder { start: Instant::now(), operations: Mutex::default() }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records that `process` invoked `command` on `key`, now.
    pub fn invoke(&self, process: u64, key: impl Into<String>, command: Command) -> Invocation {
        let invoked = self.now();
        let mut operations = self.operations.lock();
        let id = operations.len() as u64;
        operations.push(Some(Operation::pending(id, key, command, invoked).by(process)));
        Invocation { id }
    }

    /// Records that the operation completed now with `response`.
    pub fn complete(&self, invocation: Invocation, response: Response) {
        let at = self.now();
        if let Some(Some(op)) = self.operations.lock().get_mut(invocation.id as usize) {
            op.completion = Some(Completion { at, response });
        }
    }

    /// Removes an operation known not to have taken effect.
    pub fn forget(&self, invocation: Invocation) {
        if let Some(slot) = self.operations.lock().get_mut(invocation.id as usize) {
            *slot = None;
        }
    }

    /// The history so far (operations still running are of unknown outcome).
    ///
    /// # Errors
    ///
    /// [`HistoryError::Invalid`] when a completion does not fit its command (a
    /// read completed with [`Response::Ok`]): a bug of the workload.
    pub fn history(&self) -> Result<History, HistoryError> {
        History::new(self.operations.lock().iter().flatten().cloned().collect())
    }
}
