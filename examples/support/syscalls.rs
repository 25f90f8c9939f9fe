//! `--syscalls`: the system calls and context switches processes make per
//! operation, counted by `perf stat` (Debian's `linux-perf`) for one window.
//! Shared by `bench_balancer` (a proxy's process) and `bench_consensus` (a
//! cluster's three), each including this file with `#[path]`.
//!
//! The kernel (loopback TCP, fsync, wake-ups) is a third to a half of the CPU
//! time in these benchmarks, so how many reads, writes, polls and sleeps an
//! operation costs is where two systems doing the same protocol work part ways.
//! Counting uses the syscall tracepoints, which cost far less than `strace`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::processes::BoxError;

/// The events counted, as `perf stat` names them, and how the table heads them.
const EVENTS: [(&str, &str); 12] = [
    ("raw_syscalls:sys_enter", "syscalls"),
    ("context-switches", "switches"),
    ("syscalls:sys_enter_read", "read"),
    ("syscalls:sys_enter_recvfrom", "recvfrom"),
    ("syscalls:sys_enter_write", "write"),
    ("syscalls:sys_enter_writev", "writev"),
    ("syscalls:sys_enter_sendto", "sendto"),
    ("syscalls:sys_enter_epoll_wait", "epoll_wait"),
    ("syscalls:sys_enter_epoll_ctl", "epoll_ctl"),
    ("syscalls:sys_enter_futex", "futex"),
    ("syscalls:sys_enter_fdatasync", "fdatasync"),
    ("syscalls:sys_enter_fsync", "fsync"),
];

/// `perf stat` counting [`EVENTS`] over some processes until stopped.
pub(crate) struct Counting {
    /// Taken by [`stop`](Self::stop); killed on drop otherwise.
    child: Option<Child>,
}

impl Counting {
    /// Starts counting the processes `pids` (their threads included), summed.
    pub(crate) fn start(pids: &[u32]) -> Result<Counting, BoxError> {
        let events: Vec<&str> = EVENTS.iter().map(|(event, _)| *event).collect();
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events.join(","), "-p", &pids.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("perf: {e} (Debian: apt-get install linux-perf)"))?;
        // perf needs a moment to attach before the window opens.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Counting { child: Some(child) })
    }

    /// Stops counting (SIGINT, so perf prints its counts) and returns one count
    /// per event of [`EVENTS`], in order.
    pub(crate) fn stop(mut self) -> Result<Vec<u64>, BoxError> {
        let child = self.child.take().ok_or("perf stat already stopped")?;
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let output = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stderr);
        EVENTS
            .iter()
            .map(|(event, _)| {
                text.lines()
                    .find_map(|line| {
                        // CSV: count, unit, event, ...
                        let fields: Vec<&str> = line.split(',').collect();
                        (fields.get(2) == Some(event)).then(|| fields[0].parse::<u64>().ok()).flatten()
                    })
                    .ok_or_else(|| format!("perf stat printed no count for {event}: {text}").into())
            })
            .collect()
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Prints one line per row (a name, its operations and [`Counting::stop`]'s
/// counts): each event's count per operation, headed `per`.
pub(crate) fn table(per: &str, rows: &[(String, u64, Vec<u64>)]) {
    if rows.is_empty() {
        return;
    }
    let width = rows.iter().map(|(name, ..)| name.len()).max().unwrap_or(0).max(per.len());
    let mut head = format!("  {per:<width$}");
    for (_, title) in EVENTS {
        head.push_str(&format!(" {title:>10}"));
    }
    println!("{head}");
    for (name, requests, counts) in rows {
        let mut line = format!("  {name:<width$}");
        for count in counts {
            line.push_str(&format!(" {:>10.2}", *count as f64 / (*requests).max(1) as f64));
        }
        println!("{line}");
    }
}
