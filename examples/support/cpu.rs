//! CPU time of a process, from `/proc/PID/stat` (Linux).

use std::sync::OnceLock;
use std::time::Duration;

/// Clock ticks per second of `/proc` figures (`getconf CLK_TCK`; 100 on every
/// mainstream Linux when that cannot be asked).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time process `pid` has used so far (every thread, living
/// or ended); `None` where `/proc` cannot tell.
pub(crate) fn process_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces), from field 3 on:
    // utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_nanos((user + system) * 1_000_000_000 / ticks_per_second()))
}
