//! What every command prints: one value, as JSON (`--json`) or as its text.

use std::fmt::Display;
use std::io::{Read, Write};

use anyhow::{Context, Result};
use serde::Serialize;

/// Prints `value` on standard output: its JSON on one line with `json`, else its
/// `Display` text (a line or a table), ended by one newline.
pub(crate) fn emit<T: Serialize + Display>(value: &T, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, value).context("writing JSON")?;
        writeln!(out)?;
    } else {
        let text = value.to_string();
        if text.ends_with('\n') {
            write!(out, "{text}")?;
        } else {
            writeln!(out, "{text}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The bytes of the file `arg`, or of standard input when it is `-`.
pub(crate) fn read_input(arg: &str) -> Result<Vec<u8>> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(arg).with_context(|| format!("reading {arg}"))
    }
}
