//! `--perf`: `perf record` (Debian's `linux-perf`) with call graphs on some
//! processes for one round. Shared by `bench_balancer` (a proxy's process) and
//! `bench_consensus` (a cluster's three), each including this file with
//! `#[path]`.
//!
//! Call graphs are unwound from DWARF: a release build keeps its unwind tables
//! but no frame pointers. Read a file with `perf report -i FILE --no-children`
//! (self time) or `--children` (time under each function).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::processes::BoxError;

/// A `perf record` running until [`stop`](Self::stop)ped (SIGINT, so it writes its
/// file), or killed on drop.
pub(crate) struct Perf(Child);

impl Perf {
    /// Starts recording the processes `pids` (their threads included) into `file`.
    pub(crate) fn start(pids: &[u32], file: &Path) -> Result<Perf, BoxError> {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let child = Command::new("perf")
            .args([
                "record",
                "--call-graph",
                "dwarf,32768",
                "-F",
                "499",
                "--quiet",
                "-p",
                &pids.join(","),
                "-o",
            ])
            .arg(file)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("perf: {e} (Debian: apt-get install linux-perf)"))?;
        // perf needs a moment to attach before the window opens.
        std::thread::sleep(Duration::from_millis(300));
        println!("  recording pid {} into {}", pids.join(","), file.display());
        Ok(Perf(child))
    }

    /// Stops recording and waits for the file to be written.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
