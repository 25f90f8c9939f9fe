//! A history of operations on compare-and-set registers, and its JSON-lines form.

use std::collections::HashSet;
use std::fmt;
use std::io::{BufRead, Write};

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// What an operation asked of the register at its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// Read the value (or learn it is absent).
    Read,
    /// Set the value, whatever it was.
    Write {
        /// The new value.
        value: String,
    },
    /// Make the value absent, whatever it was.
    Delete,
    /// Set `new` if the value is `expected` (`None`: if it is absent); otherwise change nothing.
    CompareAndSet {
        /// The value the register must hold (`None`: must be absent).
        expected: Option<String>,
        /// The value it gets if so.
        new: String,
    },
}

/// What came back to the client of a completed operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Response {
    /// A read's answer: the value, or `None` when the key was absent.
    Read(Option<String>),
    /// A write or delete applied, or a compare-and-set whose condition held and which applied.
    Ok,
    /// A compare-and-set whose condition did not hold: it changed nothing.
    Failed,
}

/// When an operation completed and what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Completion {
    /// Completion time, in the history's unit; never before the invocation.
    pub at: u64,
    /// The answer.
    pub response: Response,
}

/// One operation: invoked at some time, completed later with a response, or of unknown outcome.
///
/// An operation without a [`Completion`] timed out or lost its client: it may
/// have taken effect at any point after its invocation, or never. An operation
/// known not to have taken effect (refused before anything was applied) belongs
/// in no history at all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Line", into = "Line")]
pub struct Operation {
    /// Unique in the history.
    pub id: u64,
    /// The client (process, worker, thread) that ran it, if recorded; for people only.
    pub process: Option<u64>,
    /// The register: operations on different keys are independent.
    pub key: String,
    /// What it asked.
    pub command: Command,
    /// Invocation time, in any monotonic unit (ns, µs, ms) that the whole history shares.
    pub invoked: u64,
    /// `None` when the outcome is unknown.
    pub completion: Option<Completion>,
}

impl Operation {
    /// A completed operation.
    pub fn completed(
        id: u64,
        key: impl Into<String>,
        command: Command,
        invoked: u64,
        at: u64,
        response: Response,
    ) -> Self {
        Operation {
            id,
            process: None,
            key: key.into(),
            command,
            invoked,
            completion: Some(Completion { at, response }),
        }
    }

    /// An operation of unknown outcome (timed out, or its client crashed).
    pub fn pending(id: u64, key: impl Into<String>, command: Command, invoked: u64) -> Self {
        Operation { id, process: None, key: key.into(), command, invoked, completion: None }
    }

    /// The same operation, recorded as run by `process`.
    pub fn by(mut self, process: u64) -> Self {
        self.process = Some(process);
        self
    }

    /// Why this operation is not well formed, if it is not: a completion before
    /// the invocation, or a response that the command cannot give.
    pub fn check(&self) -> Result<(), InvalidOperation> {
        let Some(completion) = &self.completion else { return Ok(()) };
        if completion.at < self.invoked {
            return Err(InvalidOperation::CompletedBeforeInvoked {
                invoked: self.invoked,
                completed: completion.at,
            });
        }
        let fits = matches!(
            (&self.command, &completion.response),
            (Command::Read, Response::Read(_))
                | (Command::Write { .. } | Command::Delete, Response::Ok)
                | (Command::CompareAndSet { .. }, Response::Ok | Response::Failed)
        );
        if !fits {
            return Err(InvalidOperation::ResponseDoesNotFit {
                command: self.command.name(),
                response: completion.response.name(),
            });
        }
        Ok(())
    }
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Read => "read",
            Command::Write { .. } => "write",
            Command::Delete => "delete",
            Command::CompareAndSet { .. } => "cas",
        }
    }
}

impl Response {
    fn name(&self) -> &'static str {
        match self {
            Response::Read(_) => "a read's value",
            Response::Ok => "ok",
            Response::Failed => "failed",
        }
    }
}

/// A value as people read it: quoted, or `absent`.
struct Shown<'a>(Option<&'a str>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:?}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Read => f.write_str("read"),
            Command::Write { value } => write!(f, "write {value:?}"),
            Command::Delete => f.write_str("delete"),
            Command::CompareAndSet { expected, new } => {
                write!(f, "cas {} -> {new:?}", Shown(expected.as_deref()))
            }
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Read(value) => write!(f, "{}", Shown(value.as_deref())),
            Response::Ok => f.write_str("ok"),
            Response::Failed => f.write_str("failed"),
        }
    }
}

/// One line per operation: `op 7 (process 2) [100, 130] cas "a" -> "b" => ok`.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op {}", self.id)?;
        if let Some(p) = self.process {
            write!(f, " (process {p})")?;
        }
        match &self.completion {
            Some(c) => write!(f, " [{}, {}] {} => {}", self.invoked, c.at, self.command, c.response),
            None => write!(f, " [{}, ?] {} => unknown outcome", self.invoked, self.command),
        }
    }
}

/// Why an operation is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidOperation {
    /// Its completion time is before its invocation time.
    #[error("completed at {completed}, before it was invoked at {invoked}")]
    CompletedBeforeInvoked {
        /// Invocation time.
        invoked: u64,
        /// Completion time.
        completed: u64,
    },
    /// The response is not one its command can give (a read answering `failed`).
    #[error("a {command} cannot answer {response}")]
    ResponseDoesNotFit {
        /// The command's name.
        command: &'static str,
        /// The response's name.
        response: &'static str,
    },
    /// A field of the JSON form is missing, or present where it does not belong.
    #[error("{0}")]
    Fields(&'static str),
}

/// Why a history was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// Two operations share an id.
    #[error("operation id {id} appears more than once")]
    DuplicateId {
        /// The id.
        id: u64,
    },
    /// An operation is not well formed.
    #[error("operation {id}: {reason}")]
    Invalid {
        /// Its id.
        id: u64,
        /// Why.
        reason: InvalidOperation,
    },
    /// A line of the JSON-lines form is not an operation.
    #[error("line {line}: {source}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// Reading or writing the JSON-lines form failed.
    #[error("reading or writing a history: {0}")]
    Io(#[from] std::io::Error),
}

/// A validated history: well-formed operations with distinct ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    /// Validates `operations` (each well formed, ids distinct) into a history.
    ///
    /// # Errors
    ///
    /// [`HistoryError::DuplicateId`] or [`HistoryError::Invalid`], naming the operation.
    pub fn new(operations: Vec<Operation>) -> Result<Self, HistoryError> {
        let mut ids = HashSet::with_capacity(operations.len());
        for op in &operations {
            if !ids.insert(op.id) {
                return Err(HistoryError::DuplicateId { id: op.id });
            }
            op.check().map_err(|reason| HistoryError::Invalid { id: op.id, reason })?;
        }
        Ok(History { operations })
    }

    /// The operations, in the order given.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Reads the JSON-lines form: one [`Operation`] object a line, blank lines
    /// skipped. See the module docs for the fields.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Line`] with the line number for a malformed line (unknown
    /// fields included), and the errors of [`History::new`].
    pub fn from_json_lines(reader: impl BufRead) -> Result<Self, HistoryError> {
        let mut operations = Vec::new();
        for (n, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op =
                serde_json::from_str(&line).map_err(|source| HistoryError::Line { line: n + 1, source })?;
            operations.push(op);
        }
        History::new(operations)
    }

    /// Writes the JSON-lines form that [`History::from_json_lines`] reads.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Io`] when the writer fails.
    pub fn to_json_lines(&self, mut writer: impl Write) -> Result<(), HistoryError> {
        for op in &self.operations {
            serde_json::to_writer(&mut writer, op).map_err(std::io::Error::from)?;
            writer.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// The JSON form of one operation, flat so that files are easy to write by hand
/// and from other tools.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<u64>,
    key: String,
    op: OpName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new: Option<String>,
    invoked: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<ResultName>,
    /// A read's answer: a string, or `null` for absent. Missing when there is no answer.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    read: Option<Option<String>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OpName {
    Read,
    Write,
    Delete,
    Cas,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResultName {
    Ok,
    Failed,
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl TryFrom<Line> for Operation {
    type Error = InvalidOperation;

    fn try_from(line: Line) -> Result<Self, InvalidOperation> {
        use InvalidOperation::Fields;
        if line.expected.is_some() && !matches!(line.op, OpName::Cas) {
            return Err(Fields("only a cas has an `expected` value"));
        }
        let command = match (line.op, line.value, line.new) {
            (OpName::Read | OpName::Delete, Some(_), _) => return Err(Fields("only a write has a `value`")),
            (OpName::Read | OpName::Delete | OpName::Write, _, Some(_)) => {
                return Err(Fields("only a cas has a `new` value"));
            }
            (OpName::Read, None, None) => Command::Read,
            (OpName::Delete, None, None) => Command::Delete,
            (OpName::Write, Some(value), None) => Command::Write { value },
            (OpName::Write, None, None) => return Err(Fields("a write needs a `value`")),
            (OpName::Cas, Some(_), _) => return Err(Fields("a cas has `expected` and `new`, not `value`")),
            (OpName::Cas, None, None) => return Err(Fields("a cas needs a `new` value")),
            (OpName::Cas, None, Some(new)) => Command::CompareAndSet { expected: line.expected, new },
        };
        let response = match (line.result, line.read, &command) {
            (None, None, _) => None,
            (Some(_), Some(_), _) => return Err(Fields("a read's answer is `read`, without `result`")),
            (None, Some(value), Command::Read) => Some(Response::Read(value)),
            (None, Some(_), _) => return Err(Fields("only a read has a `read` answer")),
            (Some(ResultName::Ok), None, Command::Read) => return Err(Fields("a read answers with `read`")),
            (Some(ResultName::Ok), None, _) => Some(Response::Ok),
            (Some(ResultName::Failed), None, _) => Some(Response::Failed),
        };
        let completion = match (line.completed, response) {
            (Some(at), Some(response)) => Some(Completion { at, response }),
            (None, None) => None,
            (Some(_), None) => return Err(Fields("a completed operation needs its answer")),
            (None, Some(_)) => return Err(Fields("an answer needs its `completed` time")),
        };
        let op = Operation {
            id: line.id,
            process: line.process,
            key: line.key,
            command,
            invoked: line.invoked,
            completion,
        };
        op.check()?;
        Ok(op)
    }
}

impl From<Operation> for Line {
    fn from(op: Operation) -> Line {
        let (op_name, value, expected, new) = match op.command {
            Command::Read => (OpName::Read, None, None, None),
            Command::Write { value } => (OpName::Write, Some(value), None, None),
            Command::Delete => (OpName::Delete, None, None, None),
            Command::CompareAndSet { expected, new } => (OpName::Cas, None, expected, Some(new)),
        };
        let (completed, result, read) = match op.completion {
            None => (None, None, None),
            Some(Completion { at, response: Response::Read(v) }) => (Some(at), None, Some(v)),
            Some(Completion { at, response: Response::Ok }) => (Some(at), Some(ResultName::Ok), None),
            Some(Completion { at, response: Response::Failed }) => (Some(at), Some(ResultName::Failed), None),
        };
        Line {
            id: op.id,
            process: op.process,
            key: op.key,
            op: op_name,
            value,
            expected,
            new,
            invoked: op.invoked,
            completed,
            result,
            read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<History, HistoryError> {
        History::from_json_lines(text.as_bytes())
    }

    #[test]
    fn every_kind_of_operation_survives_the_json_lines_form() {
        let ops = vec![
            Operation::completed(1, "k", Command::Write { value: "a".into() }, 0, 5, Response::Ok).by(1),
            Operation::completed(2, "k", Command::Read, 1, 6, Response::Read(Some("a".into()))),
            Operation::completed(3, "k", Command::Read, 7, 8, Response::Read(None)),
            Operation::completed(4, "k", Command::Delete, 9, 10, Response::Ok),
            Operation::completed(
                5,
                "k",
                Command::CompareAndSet { expected: None, new: "b".into() },
                11,
                12,
                Response::Failed,
            ),
            Operation::pending(
                6,
                "j",
                Command::CompareAndSet { expected: Some("b".into()), new: "c".into() },
                13,
            ),
            Operation::pending(7, "j", Command::Read, 14),
        ];
        let history = History::new(ops).expect("valid");
        let mut text = Vec::new();
        history.to_json_lines(&mut text).expect("write");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(text.contains(r#""read":null"#), "an absent read is an explicit null: {text}");
        assert_eq!(parse(&text).expect("read back"), history);
    }

    #[test]
    fn a_hand_written_line_reads_as_the_operation_it_describes() {
        let history = parse(
            r#"{"id":1,"key":"k","op":"cas","expected":"a","new":"b","invoked":3,"completed":4,"result":"ok"}

            {"id":2,"key":"k","op":"read","invoked":5,"completed":6,"read":"b"}"#,
        )
        .expect("valid");
        assert_eq!(
            history.operations()[0].command,
            Command::CompareAndSet { expected: Some("a".into()), new: "b".into() }
        );
        assert_eq!(history.operations()[1].completion.as_ref().map(|c| c.at), Some(6));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line_number_and_reason() {
        let cases = [
            (
                r#"{"id":1,"key":"k","op":"read","invoked":1,"completed":2,"result":"ok"}"#,
                "answers with `read`",
            ),
            (r#"{"id":1,"key":"k","op":"write","invoked":1}"#, "needs a `value`"),
            (
                r#"{"id":1,"key":"k","op":"write","value":"v","invoked":5,"completed":2,"result":"ok"}"#,
                "before",
            ),
            (
                r#"{"id":1,"key":"k","op":"write","value":"v","invoked":1,"completed":2,"result":"failed"}"#,
                "cannot",
            ),
            (r#"{"id":1,"key":"k","op":"cas","new":"v","invoked":1,"completed":2}"#, "needs its answer"),
            (r#"{"id":1,"key":"k","op":"delete","invoked":1,"result":"ok"}"#, "`completed` time"),
            (
                r#"{"id":1,"key":"k","op":"read","invoked":1,"completed":2,"read":"v","color":1}"#,
                "unknown field",
            ),
            (r#"{"id":1,"key":"k","op":"swap","invoked":1}"#, "unknown variant"),
            ("not json", "expected"),
        ];
        for (line, reason) in cases {
            let text = format!("\n{line}\n");
            let err = parse(&text).expect_err(line).to_string();
            assert!(err.starts_with("line 2: "), "{line}: {err}");
            assert!(err.contains(reason), "{line}: {err} should say {reason:?}");
        }
    }

    #[test]
    fn a_history_refuses_duplicate_ids() {
        let op = Operation::completed(1, "k", Command::Delete, 0, 1, Response::Ok);
        let err = History::new(vec![op.clone(), op]).expect_err("duplicate");
        assert!(matches!(err, HistoryError::DuplicateId { id: 1 }), "{err}");
    }

    #[test]
    fn operations_print_for_people() {
        let op = Operation::completed(
            7,
            "k",
            Command::CompareAndSet { expected: None, new: "b".into() },
            100,
            130,
            Response::Ok,
        )
        .by(2);
        assert_eq!(op.to_string(), r#"op 7 (process 2) [100, 130] cas absent -> "b" => ok"#);
        let op = Operation::pending(8, "k", Command::Write { value: "x".into() }, 5);
        assert_eq!(op.to_string(), r#"op 8 [5, ?] write "x" => unknown outcome"#);
    }
}
