//! Child processes a benchmark starts (killed and reaped when dropped, on
//! error and panic too), the `spectrum` binary, and loopback ports: shared by
//! `bench_balancer` and `bench_consensus` (each includes this file with
//! `#[path]`, and each uses a part of it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Child processes, killed (and reaped) when dropped.
#[derive(Default)]
pub(crate) struct Processes(Vec<Child>);

impl Processes {
    /// Keeps `child` until the end of the run.
    pub(crate) fn push(&mut self, child: Child) {
        self.0.push(child);
    }

    /// An error if any child exited already (naming its status).
    pub(crate) fn all_running(&mut self) -> Result<(), BoxError> {
        for child in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                return Err(format!("process {} exited early ({status})", child.id()).into());
            }
        }
        Ok(())
    }

    /// The exit status of a child that exited already, if any.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.0.iter_mut().find_map(|c| c.try_wait().ok().flatten())
    }

    /// How many processes were started.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The process ids of the processes started after the first `start`.
    pub(crate) fn pids_since(&self, start: usize) -> Vec<u32> {
        self.0.iter().skip(start).map(Child::id).collect()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// The `spectrum` binary of this build profile, built first so that it runs the
/// current code (`SPECTRUM_BIN` names another and skips the build).
pub(crate) fn spectrum_binary() -> Result<PathBuf, BoxError> {
    if let Some(bin) = std::env::var_os("SPECTRUM_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/<the benchmark>
    let profile = exe.parent().and_then(Path::parent).ok_or("cannot tell the target directory")?;
    let bin = profile.join("spectrum");
    let release = profile.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "--bin", "spectrum"]);
    if release {
        build.arg("--release");
    }
    build.arg("--manifest-path").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if let Some(target) = profile.parent() {
        build.env("CARGO_TARGET_DIR", target);
    }
    println!(
        "building the spectrum binary first (cargo build{} --bin spectrum)",
        if release { " --release" } else { "" }
    );
    match build.status() {
        Ok(status) if status.success() => {}
        Ok(status) => return Err(format!("cargo build --bin spectrum failed ({status})").into()),
        Err(e) if bin.exists() => println!("  (could not run cargo: {e}; using {})", bin.display()),
        Err(e) => return Err(format!("no {} and cargo cannot build it: {e}", bin.display()).into()),
    }
    if !bin.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release --bin spectrum`",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// The three loopback addresses members run on: 127.0.0.1, .2 and .3.
pub(crate) fn member_ip(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, 1 + u8::try_from(i).unwrap_or(0)])
}

/// A port of `ip` that was free a moment ago.
pub(crate) fn free_addr(ip: IpAddr) -> Result<SocketAddr, BoxError> {
    Ok(TcpListener::bind(SocketAddr::new(ip, 0))?.local_addr()?)
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Writes `text` to `base.toml`, runs `spectrum ROLE --config base.toml` (logging
/// to `base.log`, warnings only) and waits up to `startup` for its first line (the
/// JSON object naming its addresses); its process id.
pub(crate) fn spawn_spectrum(
    bin: &Path,
    role: &str,
    base: &Path,
    text: &str,
    processes: &mut Processes,
    startup: Duration,
) -> Result<u32, BoxError> {
    let config = base.with_extension("toml");
    std::fs::write(&config, text)?;
    let log = std::fs::File::create(base.with_extension("log"))?;
    let mut child = Command::new(bin)
        .arg(role)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env_remove("SPECTRUM_TOKEN")
        .env_remove("SPECTRUM_CLUSTER_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let pid = child.id();
    processes.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep the pipe open (and drained) for the process's life.
        while reader.read_line(&mut String::new()).is_ok_and(|n| n > 0) {}
    });
    match rx.recv_timeout(startup) {
        Ok(line) if line.trim_start().starts_with('{') => Ok(pid),
        _ => Err(format!("spectrum {role} did not start: {}", log_tail(&base.with_extension("log"))).into()),
    }
}
