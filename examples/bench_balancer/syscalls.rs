//! `--syscalls`: the system calls and context switches a proxy makes per request,
//! counted by `perf stat` (Debian's `linux-perf`) on its process for one window.
//!
//! The kernel's loopback TCP and wake-ups are a third or more of a proxy's CPU time
//! on this benchmark, so how many reads, writes, polls and sleeps a request costs
//! is where two proxies with the same protocol work part ways. Counting uses the
//! syscall tracepoints, which cost far less than `strace`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::load::BoxError;

/// The events counted, as `perf stat` names them, and how the table heads them.
const EVENTS: [(&str, &str); 10] = [
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
];

/// `perf stat` counting [`EVENTS`] on one process until stopped.
pub(crate) struct Counting {
    /// Taken by [`stop`](Self::stop); killed on drop otherwise.
    child: Option<Child>,
}

impl Counting {
    pub(crate) fn start(pid: u32) -> Result<Counting, BoxError> {
        let events: Vec<&str> = EVENTS.iter().map(|(event, _)| *event).collect();
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events.join(","), "-p", &pid.to_string()])
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

/// Prints one line per proxy: each event's count per request.
pub(crate) fn table(rows: &[(&str, u64, Vec<u64>)]) {
    if rows.is_empty() {
        return;
    }
    let mut head = format!("  {:<16}", "per request");
    for (_, title) in EVENTS {
        head.push_str(&format!(" {title:>10}"));
    }
    println!("{head}");
    for (name, requests, counts) in rows {
        let mut line = format!("  {name:<16}");
        for count in counts {
            line.push_str(&format!(" {:>10.2}", *count as f64 / (*requests).max(1) as f64));
        }
        println!("{line}");
    }
}
