//! What every command prints: one value, as JSON (`--json`) or as its text.

use std::fmt::Display;
use std::io::{Read, Write};

use anyhow::{Context, Result};
use serde::Serialize;

/// Prints `value` on standard output: its JSON on one line with `json`, else its
/// `Display` text (a line or a table), ended by one newline.
pub(crate) fn emit<T: Serialize + Display>(value: &T, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(render(value, json)?.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints an entry read by `config get`: as [`emit`] does, except that a value
/// that is not UTF-8 is written as text exactly as stored, with no newline
/// added (text would replace its bytes with U+FFFD, and a read-modify-write
/// would store that). JSON cannot hold such bytes: `--json` shows them as
/// text, and `config export` as base64.
pub(crate) fn emit_entry(entry: &spectrum::model::Entry, json: bool) -> Result<()> {
    if json || std::str::from_utf8(&entry.value).is_ok() {
        return emit(entry, json);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&entry.value)?;
    out.flush()?;
    Ok(())
}

/// What [`emit`] prints.
fn render<T: Serialize + Display>(value: &T, json: bool) -> Result<String> {
    let mut text =
        if json { serde_json::to_string(value).context("writing JSON")? } else { value.to_string() };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
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

/// Writes an export file to `output`; without `output`, prints the file itself
/// (with or without `--json`).
pub(crate) fn write_export(output: Option<&std::path::Path>, file: &[u8]) -> Result<()> {
    match output {
        Some(path) => std::fs::write(path, file).with_context(|| format!("writing {}", path.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(file)?;
            writeln!(out)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    #[derive(Serialize)]
    struct Table {
        rows: Vec<u32>,
    }

    impl fmt::Display for Table {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.rows.iter().try_for_each(|r| writeln!(f, "row {r}"))
        }
    }

    #[test]
    fn json_is_one_line_and_text_ends_with_exactly_one_newline() {
        let table = Table { rows: vec![1, 2] };
        assert_eq!(render(&table, true).unwrap(), "{\"rows\":[1,2]}\n");
        assert_eq!(render(&table, false).unwrap(), "row 1\nrow 2\n");
        assert_eq!(render(&"one line", false).unwrap(), "one line\n");
    }
}
