//! Multi-process tests of the `spectrum` command: real `spectrum node` and
//! `spectrum balancer` processes on loopback, driven only with the command.
//!
//! Every port is ephemeral (reserved by binding port 0 on 127.0.0.1, or on each
//! node's own loopback address from 127.0.0.2 when a [`ClusterSpec`] asks for
//! them), so these tests can run beside others; every child process is killed
//! when a test ends, even when it fails ([`Processes`] kills them on drop). A node
//! may run under a wrapper and with extra environment ([`Launch`]): libfaketime
//! for a clock that is off, a private mount namespace for a small disk.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod addresses;
mod bad_input;
mod balancer;
mod clocks;
mod dead_node;
mod disk;
mod identity;
mod keys;
mod raft;
mod raft_status;
mod restart;
mod scenario;
mod sessions;
mod tls;
mod users;
mod watch;

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

/// How one node process runs: plainly, or under a wrapper program (`unshare …`)
/// and with extra environment (libfaketime's).
#[derive(Debug, Clone, Default)]
struct Launch {
    /// The program and its arguments that run the `spectrum` command line given
    /// after them; `{data_dir}` in an argument stands for the node's data directory.
    wrapper: Vec<String>,
    /// Variables added to the environment.
    env: Vec<(String, String)>,
}

impl Launch {
    fn command(&self) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        clean_environment(&mut cmd);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// What [`ProcessCluster::start_with`] starts.
#[derive(Debug, Clone)]
struct ClusterSpec {
    name: String,
    size: usize,
    token: String,
    /// Node `i` (from 0) listens on 127.0.0.`i + 2`, each node on its own address,
    /// instead of every node on 127.0.0.1.
    own_addresses: bool,
    /// How node `i` runs; nodes beyond the end run plainly.
    launches: Vec<Launch>,
    /// Lines added to every node's file (`replication = "raft"`).
    node_settings: String,
}

impl ClusterSpec {
    fn new(name: &str, size: usize, token: &str) -> Self {
        Self {
            name: name.to_owned(),
            size,
            token: token.to_owned(),
            own_addresses: false,
            launches: vec![],
            node_settings: String::new(),
        }
    }

    /// Adds `line` to every node's file.
    fn node_setting(mut self, line: &str) -> Self {
        self.node_settings.push_str(line);
        self.node_settings.push('\n');
        self
    }

    /// Raft mode, each node on its own loopback address.
    fn raft(self) -> Self {
        self.own_addresses().node_setting("replication = \"raft\"")
    }

    /// Each node on its own loopback address, 127.0.0.2 onwards.
    fn own_addresses(mut self) -> Self {
        self.own_addresses = true;
        self
    }

    /// Node `i` (from 0) runs as `launch` says.
    fn launch(mut self, i: usize, launch: Launch) -> Self {
        if self.launches.len() <= i {
            self.launches.resize(i + 1, Launch::default());
        }
        self.launches[i] = launch;
        self
    }

    /// The address node `i` listens on.
    fn host(&self, i: usize) -> Ipv4Addr {
        if self.own_addresses {
            Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i).unwrap())
        } else {
            Ipv4Addr::LOCALHOST
        }
    }
}

/// A cluster of `spectrum node` processes and a `spectrum balancer`, with its files.
struct ProcessCluster {
    name: String,
    token: String,
    balancer: String,
    /// Each node's id and URL.
    nodes: Vec<(String, String)>,
    /// Each node's file.
    files: Vec<PathBuf>,
    /// Where each node's current process is in `processes`, and how often it started.
    current: Vec<(usize, usize)>,
    dir: tempfile::TempDir,
    processes: Processes,
}

impl ProcessCluster {
    /// Starts `size` nodes and a balancer, retrying with new ports if one was taken
    /// between reserving and binding it.
    fn start(name: &str, size: usize, token: &str) -> Self {
        Self::start_with(&ClusterSpec::new(name, size, token))
    }

    /// Starts the nodes and balancer `spec` describes (see [`ProcessCluster::start`]).
    fn start_with(spec: &ClusterSpec) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(spec) {
                Ok(cluster) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("cluster {} did not start: {last_error}", spec.name);
    }

    fn try_start(spec: &ClusterSpec) -> Result<Self, String> {
        let ClusterSpec { name, size, token, .. } = spec;
        let size = *size;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let key = spectrum::resources::ClusterKey::generate().to_hex();
        let hosts: Vec<IpAddr> = std::iter::once(Ipv4Addr::LOCALHOST)
            .chain((0..size).map(|i| spec.host(i)))
            .map(IpAddr::V4)
            .collect();
        let ports = free_ports_on(&hosts);
        let node_addrs: Vec<String> =
            (0..size).map(|i| format!("{}:{}", hosts[i + 1], ports[i + 1])).collect();
        let mut cluster = Self {
            name: name.clone(),
            token: token.clone(),
            balancer: String::new(),
            nodes: Vec::new(),
            files: Vec::new(),
            current: Vec::new(),
            dir,
            processes: Processes::default(),
        };
        for i in 0..size {
            let id = format!("node-{}", i + 1);
            let seeds: Vec<String> = node_addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| format!("\"http://{a}\""))
                .collect();
            let file = cluster.path(&format!("{id}.toml"));
            std::fs::write(
                &file,
                format!(
                    "id = \"{id}\"\ncluster = \"{name}\"\nlisten = \"{}\"\nseeds = [{}]\n\
                     token = \"{token}\"\ncluster_key = \"{key}\"\nsync_interval_ms = 200\n\
                     data_dir = {:?}\n{}",
                    node_addrs[i],
                    seeds.join(", "),
                    cluster.data_dir(&id).display().to_string(),
                    spec.node_settings,
                ),
            )
            .map_err(|e| e.to_string())?;
            cluster.files.push(file);
            cluster.nodes.push((id, String::new()));
            cluster.current.push((usize::MAX, 0));
            let launch = spec.launches.get(i).cloned().unwrap_or_default();
            let addr = cluster.start_node(i, &launch)?;
            cluster.nodes[i].1 = addr;
        }
        let mut file_text =
            format!("listen = \"127.0.0.1:{}\"\nhealth_interval_ms = 200\ntoken = \"{token}\"\n", ports[0]);
        for (i, (id, _)) in cluster.nodes.iter().enumerate() {
            file_text.push_str(&format!("[[nodes]]\nid = \"{id}\"\naddr = \"{}\"\n", node_addrs[i]));
        }
        let file = cluster.path("balancer.toml");
        std::fs::write(&file, file_text).map_err(|e| e.to_string())?;
        let log = cluster.path("balancer.log");
        let line = spawn(&mut cluster.processes, &["balancer", "--config"], &file, &log)?;
        cluster.balancer = line["balancer"].as_str().ok_or("balancer printed no url")?.to_owned();
        cluster.wait_until_ready(size)?;
        Ok(cluster)
    }

    /// Node `id`'s data directory.
    fn data_dir(&self, id: &str) -> PathBuf {
        self.path(id)
    }

    /// Starts node `i` (from 0) from its file as `launch` says, logging to
    /// `node-N.log` (`node-N.K.log` for its K-th start after the first); returns
    /// the address it printed, or why it printed none (it refused to start).
    fn start_node(&mut self, i: usize, launch: &Launch) -> Result<String, String> {
        let id = &self.nodes[i].0;
        let starts = self.current[i].1;
        let log = if starts == 0 { format!("{id}.log") } else { format!("{id}.{starts}.log") };
        let log = self.path(&log);
        let data_dir = self.data_dir(id).display().to_string();
        let launch = Launch {
            wrapper: launch.wrapper.iter().map(|a| a.replace("{data_dir}", &data_dir)).collect(),
            env: launch.env.clone(),
        };
        let before = self.processes.0.len();
        let result = spawn_with(&mut self.processes, &launch, &["node", "--config"], &self.files[i], &log);
        self.current[i].1 = starts + 1;
        if self.processes.0.len() > before {
            self.current[i].0 = before;
        }
        let line = result?;
        Ok(line["addr"].as_str().ok_or("node printed no addr")?.to_owned())
    }

    /// Node `i`'s current process.
    fn node_process(&mut self, i: usize) -> &mut Child {
        &mut self.processes.0[self.current[i].0]
    }

    /// Kills node `i` with SIGKILL and reaps it.
    fn kill(&mut self, i: usize) {
        let child = self.node_process(i);
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// Starts node `i` again on its data directory (same file, same address), as
    /// `launch` says.
    fn restart(&mut self, i: usize, launch: &Launch) -> Result<(), String> {
        let addr = self.start_node(i, launch)?;
        assert_eq!(addr, self.nodes[i].1, "node {i} restarted at another address");
        Ok(())
    }

    /// Waits (up to 15 s) for node `i`'s process to exit; returns how it exited.
    fn exit_status(&mut self, i: usize) -> ExitStatus {
        let child = self.node_process(i);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node {i} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `i`'s process id.
    fn pid(&mut self, i: usize) -> u32 {
        self.node_process(i).id()
    }

    /// Node `i`'s file with each key of `set` given its value (TOML text), or
    /// its line left out when `None`; a key the file lacks is added at the end.
    fn node_file_with(&self, i: usize, set: &[(&str, Option<&str>)]) -> String {
        let file = std::fs::read_to_string(&self.files[i]).expect("the node file");
        let mut out = String::new();
        for line in file.lines() {
            let key = line.split_once(" = ").map_or(line, |(k, _)| k);
            match set.iter().find(|(k, _)| *k == key) {
                Some((_, None)) => {}
                Some((k, Some(value))) => out.push_str(&format!("{k} = {value}\n")),
                None => out.push_str(&format!("{line}\n")),
            }
        }
        for (k, value) in set {
            if let Some(value) = value.filter(|_| !file.lines().any(|l| l.starts_with(&format!("{k} = ")))) {
                out.push_str(&format!("{k} = {value}\n"));
            }
        }
        out
    }

    /// The value (TOML text) of `key` in node `i`'s file.
    fn node_file_value(&self, i: usize, key: &str) -> Option<String> {
        let file = std::fs::read_to_string(&self.files[i]).expect("the node file");
        file.lines().find_map(|l| l.strip_prefix(&format!("{key} = ")).map(str::to_owned))
    }

    /// The log of node `i`'s current process, read now.
    fn node_log(&self, i: usize) -> String {
        let (id, starts) = (&self.nodes[i].0, self.current[i].1);
        let name = if starts <= 1 { format!("{id}.log") } else { format!("{id}.{}.log", starts - 1) };
        std::fs::read_to_string(self.path(&name)).unwrap_or_default()
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

    /// Runs `spectrum --json ARGS` at `endpoint` with the cluster's token: the
    /// parsed output, or the one-line error.
    fn try_json_at(&self, endpoint: &str, args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run_at(endpoint, Some(&self.token), &all);
        if !out.status.success() {
            return Err(stderr(&out).trim().to_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("spectrum {args:?} printed no JSON: {e}"))
    }

    /// `spectrum status` as node `i` answers it.
    fn status_at(&self, i: usize) -> Result<Value, String> {
        self.try_json_at(&self.nodes[i].1, &["status"])
    }

    /// The value node `i` holds at `key` (`None` when it holds none).
    fn value_at(&self, i: usize, key: &str) -> Result<Option<String>, String> {
        match self.try_json_at(&self.nodes[i].1, &["config", "get", key]) {
            // A value that is JSON prints as JSON: `2` is a number.
            Ok(entry) => Ok(Some(match &entry["value"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })),
            Err(e) if e.contains("NotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits (up to 15 s) until every running node in `nodes` holds `value` at `key`.
    fn all_hold(&self, nodes: &[usize], key: &str, value: &str) {
        for &i in nodes {
            eventually(&format!("{} holds {value} at {key}", self.nodes[i].0), STARTUP, || {
                match self.value_at(i, key)? {
                    Some(v) if v == value => Ok(()),
                    other => Err(format!("it holds {other:?}")),
                }
            });
        }
    }

    /// Waits (up to 15 s) until the balancer's own figures find node `id`
    /// healthy (it sends it requests) or not.
    fn balancer_finds(&self, id: &str, healthy: bool) {
        eventually(&format!("the balancer finds {id} healthy: {healthy}"), STARTUP, || {
            let status = self.json(&["status"]);
            let backend =
                status["balancer"]["nodes"].as_array().and_then(|n| n.iter().find(|n| n["id"] == id));
            match backend {
                Some(b) if b["healthy"] == healthy => Ok(()),
                _ => Err(status.to_string()),
            }
        });
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
    clean_environment(&mut cmd);
    cmd
}

/// Leaves out the settings a developer's environment may hold, and standard input.
fn clean_environment(cmd: &mut Command) {
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
}

/// Starts a `spectrum` process that runs a node or a balancer, and waits for its
/// first line on standard output (a JSON object).
fn spawn(processes: &mut Processes, args: &[&str], config: &Path, log: &Path) -> Result<Value, String> {
    spawn_with(processes, &Launch::default(), args, config, log)
}

/// [`spawn`], run as `launch` says.
fn spawn_with(
    processes: &mut Processes,
    launch: &Launch,
    args: &[&str],
    config: &Path,
    log: &Path,
) -> Result<Value, String> {
    let log_path = log;
    let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut child = launch
        .command()
        .args(args)
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{:?}: {e}", launch.wrapper))?;
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
    let log_end = || {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join("\n")
    };
    let line = rx
        .recv_timeout(STARTUP)
        .map_err(|_| format!("{args:?} printed nothing within {STARTUP:?}; its log ends:\n{}", log_end()))?;
    serde_json::from_str(&line)
        .map_err(|e| format!("{args:?} printed {line:?} ({e}); its log ends:\n{}", log_end()))
}

/// A port on each of `hosts` that was free a moment ago (distinct when hosts repeat).
fn free_ports_on(hosts: &[IpAddr]) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        hosts.iter().map(|h| TcpListener::bind((*h, 0)).expect("bind an ephemeral port")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// `n` distinct loopback ports that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    free_ports_on(&vec![IpAddr::V4(Ipv4Addr::LOCALHOST); n])
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

/// Calls `check` until it succeeds (every 100 ms, for at most `within`); panics
/// with `what` and the last failure otherwise.
fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => panic!("not so within {within:?}: {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `GET path` over plain HTTP/1.1 at `url` (`http://host:port`): status and body.
fn http_get(url: &str, path: &str) -> Result<(u16, String), String> {
    let authority = url.strip_prefix("http://").ok_or_else(|| format!("{url} is not http://"))?;
    let mut stream = TcpStream::connect(authority).map_err(|e| format!("{url}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("{url}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{url}{path} answered {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// What `grpc.health.v1.Health/Check` (the whole server) answers at `url`:
/// `SERVING`, `NOT_SERVING`, …
fn grpc_health(url: &str) -> Result<String, String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(answer.into_inner().status().as_str_name().to_owned())
    })
}

/// A member of `status` (`spectrum status --json`) by id.
fn member<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("no member {id} in {status}"))
}
