//! Checks a recorded history (JSON lines, one operation a line; see
//! `spectrum_replication::linearizability`) for linearizability and prints the
//! report.
//!
//! ```text
//! cargo run -p spectrum-replication --example check_history -- HISTORY.jsonl [--steps N]
//! cargo run -p spectrum-replication --example check_history -- - < HISTORY.jsonl
//! ```
//!
//! Exits 0 when the history is linearizable, 1 when it is not, 2 when the search
//! ran out of budget on some key (and found no violation), 3 when the file
//! cannot be read or is not a history.

use std::io::BufReader;
use std::process::ExitCode;
use std::time::Instant;

use spectrum_replication::linearizability::{Checker, History, Verdict};

fn main() -> ExitCode {
    let mut path = None;
    let mut checker = Checker::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--steps" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => checker = checker.steps_per_key(n),
                None => return usage("--steps needs a number"),
            },
            _ if path.is_none() => path = Some(arg),
            other => return usage(&format!("unexpected argument {other:?}")),
        }
    }
    let Some(path) = path else { return usage("which history? (a path, or - for stdin)") };
    let read = if path == "-" {
        History::from_json_lines(std::io::stdin().lock())
    } else {
        match std::fs::File::open(&path) {
            Ok(file) => History::from_json_lines(BufReader::new(file)),
            Err(e) => {
                eprintln!("cannot open {path}: {e}");
                return ExitCode::from(3);
            }
        }
    };
    let history = match read {
        Ok(history) => history,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(3);
        }
    };
    let start = Instant::now();
    let report = checker.check(&history);
    print!("{report}");
    println!("checked in {:.3} s", start.elapsed().as_secs_f64());
    match report.verdict() {
        Verdict::Linearizable => ExitCode::SUCCESS,
        Verdict::NotLinearizable => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("{problem}\nusage: check_history HISTORY.jsonl|- [--steps N]");
    ExitCode::from(3)
}
