//! The session file of `--session FILE` (`SPECTRUM_SESSION`): the session token
//! of every write made by the commands that shared it, one line of text.

use std::path::Path;

use anyhow::{Context, Result};
use spectrum::client::Session;

/// The session kept in `path`; empty when the file does not exist yet.
pub(crate) fn load(path: &Path) -> Result<Session> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Session::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read the session file {}", path.display())),
    };
    text.parse().with_context(|| format!("session file {} is not a session", path.display()))
}

/// Writes `session` to `path` atomically: a temporary file beside it, renamed
/// over it, so a command that stops half-way never leaves a torn session.
pub(crate) fn save(path: &Path, session: &Session) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = Path::new(&temporary);
    let written =
        std::fs::write(temporary, format!("{session}\n")).and_then(|()| std::fs::rename(temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(temporary);
    }
    written.with_context(|| format!("cannot write the session file {}", path.display()))
}
