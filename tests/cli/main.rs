//! Multi-process tests of the `spectrum` command: real `spectrum node` and
//! `spectrum balancer` processes on loopback, driven only with the command.
//!
//! Every port is ephemeral (reserved by binding `127.0.0.1:0`), so these tests can
//! run beside others; every child process is killed when a test ends, even when it
//! fails ([`Processes`] kills them on drop).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod addresses;
mod bad_input;
mod balancer;
mod scenario;
mod tls;
mod users;

const BIN: &str = env!("CARGO_BIN_EXE_spectrum");
/// The secret every test uses; no output or log may ever show it.
const SECRET: &str = "Corr3ct-H0rse-Battery";
const STARTUP: Duration = Duration::from_secs(15);

/// Child processes, killed (and reaped) when dropped.
#[derive(Default)]
struct Processes(Vec<Child>);

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

/// A cluster of `spectrum node` processes and a `spectrum balancer`, with its files.
struct ProcessCluster {
    name: String,
    token: String,
    balancer: String,
    nodes: Vec<(String, String)>,
    dir: tempfile::TempDir,
    _processes: Processes,
}

impl ProcessCluster {
    /// Starts `size` nodes and a balancer, retrying with new ports if one was taken
    /// between reserving and binding it.
    fn start(name: &str, size: usize, token: &str) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(name, size, token) {
                Ok(cluster) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("cluster {name} did not start: {last_error}");
    }

    fn try_start(name: &str, size: usize, token: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let key = spectrum::resources::ClusterKey::generate().to_hex();
        let ports = free_ports(size + 1);
        let node_urls: Vec<String> = ports[1..].iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        let mut processes = Processes::default();
        let mut nodes = Vec::new();
        for i in 0..size {
            let id = format!("node-{}", i + 1);
            let seeds: Vec<String> = node_urls
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, u)| format!("{u:?}"))
                .collect();
            let file = dir.path().join(format!("{id}.toml"));
            std::fs::write(
                &file,
                format!(
                    "id = \"{id}\"\ncluster = \"{name}\"\nlisten = \"127.0.0.1:{}\"\nseeds = [{}]\n\
                     token = \"{token}\"\ncluster_key = \"{key}\"\nsync_interval_ms = 200\n\
                     data_dir = {:?}\n",
                    ports[i + 1],
                    seeds.join(", "),
                    dir.path().join(&id).display().to_string()
                ),
            )
            .map_err(|e| e.to_string())?;
            let line =
                spawn(&mut processes, &["node", "--config"], &file, &dir.path().join(format!("{id}.log")))?;
            let addr = line["addr"].as_str().ok_or("node printed no addr")?.to_owned();
            nodes.push((id, addr));
        }
        let mut file_text =
            format!("listen = \"127.0.0.1:{}\"\nhealth_interval_ms = 200\ntoken = \"{token}\"\n", ports[0]);
        for (i, (id, _)) in nodes.iter().enumerate() {
            file_text.push_str(&format!("[[nodes]]\nid = \"{id}\"\naddr = \"127.0.0.1:{}\"\n", ports[i + 1]));
        }
        let file = dir.path().join("balancer.toml");
        std::fs::write(&file, file_text).map_err(|e| e.to_string())?;
        let line = spawn(&mut processes, &["balancer", "--config"], &file, &dir.path().join("balancer.log"))?;
        let balancer = line["balancer"].as_str().ok_or("balancer printed no url")?.to_owned();
        let cluster = Self {
            name: name.to_owned(),
            token: token.to_owned(),
            balancer,
            nodes,
            dir,
            _processes: processes,
        };
        cluster.wait_until_ready(size)?;
        Ok(cluster)
    }

    /// Waits until the balancer answers and every node sees every node as an
    /// active member.
    fn wait_until_ready(&self, size: usize) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        let mut endpoints = vec![self.balancer.clone()];
        endpoints.extend(self.nodes.iter().map(|(_, addr)| addr.clone()));
        for endpoint in &endpoints {
            loop {
                let out = self.run_at(endpoint, Some(&self.token), &["--json", "status"]);
                if out.status.success() {
                    let status: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
                    let active = status["members"]
                        .as_array()
                        .map_or(0, |m| m.iter().filter(|m| m["state"] == "active").count());
                    if active == size {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("{endpoint} not ready: {}", stderr(&out)));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Runs `spectrum` against the balancer with the cluster's token.
    fn run(&self, args: &[&str]) -> Output {
        self.run_at(&self.balancer, Some(&self.token), args)
    }

    /// Runs `spectrum` against `endpoint` with `token`.
    fn run_at(&self, endpoint: &str, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = spectrum_command();
        cmd.arg("--endpoint").arg(endpoint);
        if let Some(token) = token {
            cmd.arg("--token").arg(token);
        }
        let out = cmd.args(args).output().expect("spectrum runs");
        assert_no_secret(&format!("spectrum {args:?}"), &out);
        out
    }

    /// Runs `spectrum` and expects success; returns standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "spectrum {args:?} failed: {}", stderr(&out));
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs `spectrum --json …` and expects success; returns the parsed output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("spectrum {args:?} printed no JSON ({e}): {text}"))
    }

    /// Runs `spectrum` and expects failure with one line `error: …` holding `needle`;
    /// returns that line.
    fn fails(&self, args: &[&str], needle: &str) -> String {
        expect_failure(&self.run(args), args, needle)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The nodes' and the balancer's logs, read now.
    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }
}

fn spectrum_command() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "SPECTRUM_ENDPOINT",
        "SPECTRUM_TOKEN",
        "SPECTRUM_CLUSTER_KEY",
        "SPECTRUM_LISTEN",
        "SPECTRUM_ADVERTISE",
        "SPECTRUM_CA_CERT",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Starts a `spectrum` process that runs a node or a balancer, and waits for its
/// first line on standard output (a JSON object).
fn spawn(processes: &mut Processes, args: &[&str], config: &Path, log: &Path) -> Result<Value, String> {
    let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut child = spectrum_command()
        .args(args)
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    processes.0.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep the pipe open (and drained) for the process's life.
        let mut rest = String::new();
        while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
    });
    let line =
        rx.recv_timeout(STARTUP).map_err(|_| format!("{args:?} printed nothing within {STARTUP:?}"))?;
    serde_json::from_str(&line).map_err(|e| format!("{args:?} printed {line:?}: {e}"))
}

/// `n` distinct loopback ports that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_no_secret(what: &str, out: &Output) {
    for text in [String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)] {
        assert!(!text.contains(SECRET), "{what} showed the secret: {text}");
    }
}

/// Checks a failed run: non-zero exit, nothing on standard output, and exactly one
/// line on standard error, `error: …` holding `needle`.
fn expect_failure(out: &Output, args: &[&str], needle: &str) -> String {
    assert!(!out.status.success(), "spectrum {args:?} should fail");
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "spectrum {args:?}: one line expected, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "spectrum {args:?}: {:?} lacks {needle:?}", lines[0]);
    lines[0].to_owned()
}

/// A JDBC definition holding [`SECRET`] as its password.
fn jdbc_definition(name: &str) -> String {
    format!(
        r#"{{"name":"{name}","description":"orders database","spec":{{"kind":"jdbc","url":"jdbc:postgresql://127.0.0.1:1/orders","driver":"org.postgresql.Driver","user":"app","password":"{SECRET}"}}}}"#
    )
}

/// A postal database installed at `path` on every node.
fn postal_definition(name: &str, path: &Path) -> String {
    format!(
        r#"{{"name":"{name}","spec":{{"kind":"database","category":"postal","location":{{"kind":"local","path":{}}}}}}}"#,
        Value::String(path.display().to_string())
    )
}
