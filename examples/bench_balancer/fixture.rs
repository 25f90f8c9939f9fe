//! The processes under test: three `spectrum node`s and a `spectrum balancer` from
//! generated files, HAProxy over the same nodes, and, for the TLS comparison, a
//! second cluster with certificates from `spectrum cert`. Every process is killed
//! when the [`Fixture`] is dropped, on error and panic too.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::load::{self, BoxError, Call, ClientTls, Endpoint};
use crate::processes::{Processes, spawn_spectrum};

/// How long a process may take to print its first line, and a cluster to be ready.
const STARTUP: Duration = Duration::from_secs(20);
/// The management token of the benchmark's clusters.
const TOKEN: &str = "bench-token";
/// Health-check interval of both proxies.
const HEALTH_INTERVAL_MS: u64 = 1000;

/// One cluster: its nodes and its balancer.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Endpoint>,
    pub(crate) balancer: Endpoint,
    pub(crate) balancer_pid: u32,
}

/// Everything the benchmark runs against.
pub(crate) struct Fixture {
    /// Declared first: killed before the directory below goes.
    _processes: Processes,
    pub(crate) plain: Cluster,
    pub(crate) haproxy: Endpoint,
    pub(crate) haproxy_pid: u32,
    /// The TLS cluster (nodes and balancer with certificates), when asked for.
    pub(crate) tls: Option<Cluster>,
    /// Another binary's balancer over the plaintext nodes, when asked for.
    pub(crate) baseline: Option<(Endpoint, u32)>,
    pub(crate) dir: tempfile::TempDir,
}

/// Makes sure Debian's `haproxy` is installed, installing it with apt-get (and
/// saying so) when it is not; its version line.
pub(crate) fn ensure_haproxy() -> Result<String, BoxError> {
    let version = || {
        Command::new("haproxy")
            .arg("-v")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|text| text.lines().next().map(str::to_owned))
    };
    if let Some(v) = version() {
        return Ok(v);
    }
    println!("haproxy is not installed: installing Debian's haproxy (apt-get install -y haproxy)");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let _ = apt(&["update"]) && apt(&["install", "-y", "haproxy"]);
    version().ok_or_else(|| {
        "HAProxy is needed as the baseline and could not be installed: \
         run `apt-get install -y haproxy` as root"
            .into()
    })
}

impl Fixture {
    /// Starts the plaintext cluster, HAProxy over its nodes, a balancer run by
    /// `baseline` over them too when given and, with `tls`, the TLS cluster;
    /// returns once every node is ready and every proxy answers. HAProxy adds the
    /// forwarding headers the balancer adds unless `bare_haproxy`.
    pub(crate) async fn start(
        bin: &Path,
        tls: bool,
        baseline: Option<&Path>,
        bare_haproxy: bool,
    ) -> Result<Fixture, BoxError> {
        let dir = tempfile::tempdir()?;
        let mut processes = Processes::default();
        let plain = start_cluster(bin, dir.path(), "plain", None, &mut processes).await?;
        let (haproxy, haproxy_pid) =
            start_haproxy(dir.path(), &plain.nodes, !bare_haproxy, &mut processes).await?;
        let baseline = match baseline {
            Some(other) => {
                Some(start_balancer(other, dir.path(), "baseline", &plain.nodes, None, &mut processes).await?)
            }
            None => None,
        };
        let tls = match tls {
            true => {
                let certs = make_certificates(bin, &dir.path().join("certs"))?;
                Some(start_cluster(bin, dir.path(), "tls", Some(&certs), &mut processes).await?)
            }
            false => None,
        };
        Ok(Fixture { _processes: processes, plain, haproxy, haproxy_pid, tls, baseline, dir })
    }
}

/// `n` distinct loopback ports that were free a moment ago.
fn free_ports(n: usize) -> Result<Vec<u16>, BoxError> {
    let listeners = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

/// The cluster CA and certificates (three nodes, a server-only one for the
/// balancer), made with `spectrum cert`.
struct Certificates {
    dir: PathBuf,
    client: ClientTls,
}

fn make_certificates(bin: &Path, dir: &Path) -> Result<Certificates, BoxError> {
    let run = |args: &[&str]| -> Result<(), BoxError> {
        let out = Command::new(bin).args(args).arg("--dir").arg(dir).output()?;
        if !out.status.success() {
            return Err(format!("spectrum {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    };
    run(&["cert", "init"])?;
    for id in ["node-1", "node-2", "node-3"] {
        run(&["cert", "issue", id, "--san", "127.0.0.1"])?;
    }
    run(&["cert", "issue", "balancer", "--server-only", "--san", "127.0.0.1"])?;
    let client = ClientTls::new(&std::fs::read(dir.join("ca.pem"))?)?;
    Ok(Certificates { dir: dir.to_owned(), client })
}

/// The `tls = {…}` line of a file, for certificate `id`.
fn tls_line(certs: &Certificates, id: &str) -> String {
    let file = |name: String| format!("{:?}", certs.dir.join(name).display().to_string());
    format!(
        "tls = {{ ca = {}, cert = {}, key = {} }}\n",
        file("ca.pem".into()),
        file(format!("{id}.pem")),
        file(format!("{id}.key"))
    )
}

/// Three nodes and a balancer, over TLS with `certs`; waits until all nodes are
/// ready and the balancer answers.
async fn start_cluster(
    bin: &Path,
    dir: &Path,
    name: &str,
    certs: Option<&Certificates>,
    processes: &mut Processes,
) -> Result<Cluster, BoxError> {
    let ports = free_ports(3)?;
    let key = spectrum::resources::ClusterKey::generate().to_hex();
    let client = certs.map(|c| c.client.clone());
    let mut nodes = Vec::new();
    for i in 0..3 {
        let id = format!("node-{}", i + 1);
        let seeds: Vec<String> =
            (0..3).filter(|&j| j != i).map(|j| format!("\"http://127.0.0.1:{}\"", ports[j])).collect();
        let mut text = format!(
            "id = \"{id}\"\ncluster = \"bench-{name}\"\nlisten = \"127.0.0.1:{}\"\nseeds = [{}]\n\
             token = \"{TOKEN}\"\ncluster_key = \"{key}\"\nsync_interval_ms = 1000\ndata_dir = {:?}\n",
            ports[i],
            seeds.join(", "),
            dir.join(format!("{name}-{id}")).display().to_string()
        );
        if let Some(certs) = certs {
            text.push_str(&tls_line(certs, &id));
        }
        spawn_spectrum(bin, "node", &dir.join(format!("{name}-{id}")), &text, processes, STARTUP)?;
        nodes.push(Endpoint { addr: SocketAddr::from(([127, 0, 0, 1], ports[i])), tls: client.clone() });
    }
    for node in &nodes {
        wait_until(node, Call::Readyz, processes, dir).await?;
    }
    let (balancer, balancer_pid) = start_balancer(bin, dir, name, &nodes, certs, processes).await?;
    Ok(Cluster { nodes, balancer, balancer_pid })
}

/// A balancer over `nodes` (round robin, the nodes listed statically, as HAProxy
/// is given them), run by `bin`; waits until it answers.
async fn start_balancer(
    bin: &Path,
    dir: &Path,
    name: &str,
    nodes: &[Endpoint],
    certs: Option<&Certificates>,
    processes: &mut Processes,
) -> Result<(Endpoint, u32), BoxError> {
    let port = free_ports(1)?[0];
    let mut text = format!(
        "listen = \"127.0.0.1:{port}\"\nhealth_interval_ms = {HEALTH_INTERVAL_MS}\nfollow_membership = false\n"
    );
    if let Some(certs) = certs {
        text.push_str(&tls_line(certs, "balancer"));
    }
    text.push_str("[strategy]\nname = \"round_robin\"\n");
    for (i, node) in nodes.iter().enumerate() {
        text.push_str(&format!("[[nodes]]\nid = \"node-{}\"\naddr = \"{}\"\n", i + 1, node.addr));
    }
    let pid =
        spawn_spectrum(bin, "balancer", &dir.join(format!("{name}-balancer")), &text, processes, STARTUP)?;
    let endpoint = Endpoint { addr: SocketAddr::from(([127, 0, 0, 1], port)), tls: nodes[0].tls.clone() };
    wait_until(&endpoint, Call::Unary, processes, dir).await?;
    Ok((endpoint, pid))
}

/// Waits until `call` succeeds at `endpoint` five times in a row (so a proxy has
/// reached every node), or fails after [`STARTUP`] naming the logs.
async fn wait_until(
    endpoint: &Endpoint,
    call: Call,
    processes: &mut Processes,
    dir: &Path,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + STARTUP;
    let mut streak = 0;
    let mut last = String::new();
    while streak < 5 {
        if Instant::now() > deadline {
            return Err(format!(
                "{} never answered {call:?} ({last}); logs in {}",
                endpoint.addr,
                dir.display()
            )
            .into());
        }
        if let Some(child) = processes.exited() {
            return Err(format!("a process exited early ({child}); logs in {}", dir.display()).into());
        }
        match load::once(endpoint, call).await {
            Ok(_) => streak += 1,
            Err(e) => {
                streak = 0;
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// HAProxy in front of `nodes`: round robin, HTTP/1.1 and h2c (by its preface) on
/// one port, HTTP/2 to the nodes with connections shared between clients
/// (`http-reuse always`), checks of `GET /readyz` every second as the balancer's.
///
/// With `forwarding`, HAProxy does to each request what the balancer does
/// (`proxy::forward_headers`): the client's address added to `X-Forwarded-For`
/// (`option forwardfor`), `X-Forwarded-Proto` set, and the client's `Host`
/// (an HTTP/2 client's `:authority`, which HAProxy turns into `Host`) copied to
/// `X-Forwarded-Host`. Without it, HAProxy passes requests on as they came: less
/// work per request than the balancer is asked to do.
async fn start_haproxy(
    dir: &Path,
    nodes: &[Endpoint],
    forwarding: bool,
    processes: &mut Processes,
) -> Result<(Endpoint, u32), BoxError> {
    let port = free_ports(1)?[0];
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let forward = if forwarding {
        "  option forwardfor\n  http-request set-header X-Forwarded-Proto http\n  \
         http-request set-header X-Forwarded-Host %[req.hdr(host)] if { req.hdr(host) -m found }\n"
    } else {
        ""
    };
    let mut text = format!(
        "global\n  maxconn 4096\n  nbthread {threads}\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend nodes\n{forward}\
         backend nodes\n  balance roundrobin\n  http-reuse always\n  option httpchk GET /readyz\n  \
         http-check expect status 200\n  default-server inter {HEALTH_INTERVAL_MS}ms fall 2 rise 1\n"
    );
    for (i, node) in nodes.iter().enumerate() {
        text.push_str(&format!("  server n{} {} proto h2 check\n", i + 1, node.addr));
    }
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, text)?;
    let log = std::fs::File::create(dir.join("haproxy.log"))?;
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let pid = child.id();
    processes.push(child);
    let endpoint = Endpoint { addr: SocketAddr::from(([127, 0, 0, 1], port)), tls: None };
    wait_until(&endpoint, Call::Unary, processes, dir).await?;
    wait_until(&endpoint, Call::Healthz, processes, dir).await?;
    Ok((endpoint, pid))
}
