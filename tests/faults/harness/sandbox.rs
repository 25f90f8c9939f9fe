//! The private network and mount namespace a run happens in.
//!
//! The process that starts a run (a `cargo test` thread, the `faults` example)
//! makes sure the tools exist (`iptables`, libfaketime: Debian's `iptables` and
//! `faketime`, installed with `apt-get` when missing, outside the namespace where
//! the network still works), then runs *itself* again under
//! `unshare --net --mount --pid --fork --kill-child --mount-proc`. Inside, only
//! loopback exists (brought up here), mounts are private, and when the inner
//! process ends for any reason the kernel kills every process it started: nothing
//! outlives a run, not even after a `kill -9` of the harness.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set in the environment of the process that runs inside the namespace.
const INSIDE: &str = "SPECTRUM_FAULTS_NETNS";

/// Where Debian's `faketime` package puts the multi-threaded libfaketime.
pub(crate) const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The iptables chain every partition rule goes into (flushed to heal).
pub(crate) const CHAIN: &str = "SPECTRUM-FAULTS";

/// Whether this process already runs inside a run's private namespace.
pub(crate) fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Runs this executable again with `args` inside a new network, mount and PID
/// namespace, and waits (at most `limit`) for it. Panics, saying why, when that is
/// impossible here (not root, tools that cannot be installed, no `unshare`).
pub(crate) fn rerun_inside(args: &[String], limit: Duration) -> ExitStatus {
    require_root();
    ensure_tools();
    let exe = std::env::current_exe().expect("the path of this executable");
    // A shell is the namespace's init (PID 1 ignores signals it has no handler
    // for, so Ctrl-C would not stop this executable there); when this executable
    // ends, the shell does, and the kernel kills whatever is left.
    let mut child = Command::new("unshare")
        .args(["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--"])
        .args(["sh", "-c", "\"$0\" \"$@\""])
        .arg(&exe)
        .args(args)
        .env(INSIDE, "1")
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("fault suite: cannot run `unshare` (util-linux): {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the namespaced run") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fault suite: the namespaced run took longer than {limit:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Inside the namespace: brings loopback up and prepares iptables (see
/// [`crate::harness::network`]).
pub(crate) fn prepare_inside() {
    assert!(inside(), "prepare_inside runs in the private namespace only");
    run("ip", &["link", "set", "lo", "up"]);
}

fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("`id -u` runs");
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        uid == "0",
        "fault suite: needs root (network namespaces, iptables, tmpfs mounts, other uids); running as uid {uid}"
    );
}

/// Installs `iptables` and `faketime` with apt-get when missing; fails loudly if
/// that does not work.
fn ensure_tools() {
    let mut missing = Vec::new();
    if !found("iptables") {
        missing.push("iptables");
    }
    if !Path::new(LIBFAKETIME).exists() {
        missing.push("faketime");
    }
    if missing.is_empty() {
        return;
    }
    eprintln!("fault suite: installing {missing:?} with apt-get");
    let update = Command::new("apt-get").args(["update", "-q"]).status();
    let install = Command::new("apt-get").args(["install", "-y", "-q"]).args(&missing).status();
    assert!(
        update.is_ok_and(|s| s.success()) && install.is_ok_and(|s| s.success()),
        "fault suite: `apt-get install {}` failed; install them by hand (Debian packages)",
        missing.join(" ")
    );
    assert!(found("iptables"), "fault suite: iptables still missing after apt-get");
    assert!(Path::new(LIBFAKETIME).exists(), "fault suite: {LIBFAKETIME} still missing after apt-get");
}

fn found(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|dir| dir.join(program).exists())
}

/// Runs a system command inside the namespace, panicking with its output when it
/// fails (a fault that cannot be injected must never pass silently).
pub(crate) fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("fault suite: cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "fault suite: `{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
