//! A cluster over TLS with the command alone: `spectrum cert init` and
//! `spectrum cert issue` make the certificates, node files name them, and
//! management commands reach the nodes at `https://` with `--ca-cert`.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Processes, expect_failure, free_ports, spawn, spectrum_command, stderr};

fn spectrum(args: &[&str]) -> Output {
    spectrum_command().args(args).output().expect("spectrum runs")
}

fn ok(args: &[&str]) -> String {
    let out = spectrum(args);
    assert!(out.status.success(), "spectrum {args:?} failed: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn two_nodes_and_a_balancer_over_tls_with_certificates_from_the_command_serve_the_cli_with_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().unwrap();
    let init: Value = serde_json::from_str(&ok(&["--json", "cert", "init", "--dir", certs_arg])).unwrap();
    assert_eq!(init["cert"], certs.join("ca.pem").to_str().unwrap());
    expect_failure(&spectrum(&["cert", "init", "--dir", certs_arg]), &["cert", "init"], "exists already");

    let ports = free_ports(2);
    let mut processes = Processes::default();
    let mut urls = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let id = format!("node-{}", i + 1);
        let issued =
            ok(&["cert", "issue", &id, "--dir", certs_arg, "--san", "127.0.0.1", "--san", "localhost"]);
        assert!(issued.contains(&format!("{id}.spectrum.internal")), "{issued}");
        #[cfg(unix)]
        {
            assert_eq!(mode(&certs.join(format!("{id}.key"))), 0o600);
            assert_eq!(mode(&certs.join("ca.key")), 0o600);
        }
        let seeds: Vec<String> =
            ports.iter().filter(|p| *p != port).map(|p| format!("\"http://127.0.0.1:{p}\"")).collect();
        let file = dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &file,
            format!(
                "id = \"{id}\"\ncluster = \"cli-tls\"\nlisten = \"127.0.0.1:{port}\"\nseeds = [{}]\n\
                 sync_interval_ms = 200\ndata_dir = {:?}\n\
                 tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n",
                seeds.join(", "),
                dir.path().join(&id).to_str().unwrap(),
                certs.join("ca.pem").to_str().unwrap(),
                certs.join(format!("{id}.pem")).to_str().unwrap(),
                certs.join(format!("{id}.key")).to_str().unwrap(),
            ),
        )
        .unwrap();
        let line = spawn(&mut processes, &["node", "--config"], &file, &dir.path().join(format!("{id}.log")))
            .unwrap();
        assert_eq!(line["addr"], format!("https://127.0.0.1:{port}"), "a TLS node prints its https address");
        urls.push(line["addr"].as_str().unwrap().to_owned());
    }
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().unwrap();

    // Both nodes see both members, over TLS.
    let deadline = Instant::now() + Duration::from_secs(15);
    for url in &urls {
        loop {
            let out = spectrum(&["--endpoint", url, "--ca-cert", ca, "--json", "status"]);
            let members = out
                .status
                .success()
                .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
                .and_then(|s| s["members"].as_array().map(Vec::len));
            if members == Some(2) {
                break;
            }
            assert!(Instant::now() < deadline, "{url} never saw both members: {}", stderr(&out));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Without a cluster key or token, certificates alone authenticate peers:
    // not the development-mode warning that replication is open.
    let log = std::fs::read_to_string(dir.path().join("node-1.log")).unwrap();
    assert!(log.contains("authenticate by their certificates alone") && !log.contains("OPEN"), "{log}");

    // A CA that did not sign the node's certificate: the error names the
    // endpoint as it was given, https.
    let wrong_ca = certs.join("node-1.pem");
    let args = ["--endpoint", &urls[0], "--ca-cert", wrong_ca.to_str().unwrap(), "status"];
    expect_failure(&spectrum(&args), &args, &format!("cannot reach {}", urls[0]));

    ok(&["--endpoint", &urls[0], "--ca-cert", ca, "config", "put", "settings/tls", "on", "--ack", "all"]);
    let got = ok(&["--endpoint", &urls[1], "--ca-cert", ca, "config", "get", "settings/tls"]);
    assert_eq!(got.trim(), "on", "a write on one node is read on the other");

    // A balancer with its own certificate, TLS to clients and to the nodes.
    let issued =
        ok(&["cert", "issue", "balancer", "--server-only", "--dir", certs_arg, "--san", "127.0.0.1"]);
    assert!(!issued.contains("spectrum.internal"), "a balancer certificate names no node: {issued}");
    let balancer_port = free_ports(1)[0];
    let mut text = format!(
        "listen = \"127.0.0.1:{balancer_port}\"\nhealth_interval_ms = 200\ntoken = \"stats-token\"\n\
         tls = {{ ca = {ca:?}, cert = {:?}, key = {:?} }}\n",
        certs.join("balancer.pem").to_str().unwrap(),
        certs.join("balancer.key").to_str().unwrap(),
    );
    // One node, as in the README: the balancer finds the other through
    // membership, read over TLS with the CA alone (its server-only certificate
    // is no client identity).
    text.push_str(&format!("[[nodes]]\nid = \"node-1\"\naddr = \"127.0.0.1:{}\"\n", ports[0]));
    let file = dir.path().join("balancer.toml");
    std::fs::write(&file, text).unwrap();
    let line =
        spawn(&mut processes, &["balancer", "--config"], &file, &dir.path().join("balancer.log")).unwrap();
    let balancer = line["balancer"].as_str().unwrap().to_owned();
    assert_eq!(balancer, format!("https://127.0.0.1:{balancer_port}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // The balancer's own figures answer the holders of its token only.
        let out = spectrum(&[
            "--endpoint",
            &balancer,
            "--ca-cert",
            ca,
            "--token",
            "stats-token",
            "--json",
            "status",
        ]);
        let healthy = out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).unwrap()["balancer"]["nodes"]
                .as_array()
                .is_some_and(|b| b.len() == 2 && b.iter().all(|n| n["healthy"] == true));
        if healthy {
            break;
        }
        assert!(Instant::now() < deadline, "the balancer never saw both nodes healthy: {}", stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&[
        "--endpoint",
        &balancer,
        "--ca-cert",
        ca,
        "config",
        "put",
        "settings/via",
        "balancer",
        "--ack",
        "all",
    ]);
    for url in &urls {
        let got = ok(&["--endpoint", url, "--ca-cert", ca, "config", "get", "settings/via"]);
        assert_eq!(got.trim(), "balancer", "a write through the TLS balancer reaches {url}");
    }

    // Rotation: new certificates for node-1 and the balancer are picked up from the
    // files (node-1 on SIGHUP, the balancer when it sees them change), while
    // requests through the balancer keep succeeding.
    let node_port: u16 = urls[0].rsplit(':').next().unwrap().parse().unwrap();
    let before = (served_certificate(ca, node_port), served_certificate(ca, balancer_port));
    for (name, flag) in [("node-1", "--san=localhost"), ("balancer", "--server-only")] {
        std::fs::remove_file(certs.join(format!("{name}.pem"))).unwrap();
        std::fs::remove_file(certs.join(format!("{name}.key"))).unwrap();
        ok(&["cert", "issue", name, flag, "--dir", certs_arg, "--san", "127.0.0.1"]);
    }
    #[cfg(unix)]
    {
        let pid = processes.0[0].id().to_string();
        let hup = std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(hup.success());
    }
    let wanted = (pem_der(&certs.join("node-1.pem")), pem_der(&certs.join("balancer.pem")));
    assert_ne!(before, wanted);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut requests = 0;
    while (served_certificate(ca, node_port), served_certificate(ca, balancer_port)) != wanted {
        assert!(Instant::now() < deadline, "the rotated certificates were never served");
        ok(&["--endpoint", &balancer, "--ca-cert", ca, "config", "get", "settings/via"]);
        requests += 1;
    }
    ok(&["--endpoint", &balancer, "--ca-cert", ca, "config", "get", "settings/via"]);
    ok(&["--endpoint", &urls[0], "--ca-cert", ca, "config", "get", "settings/via"]);
    eprintln!("{requests} requests during the rotation, none failed");
    let log = |name: &str| std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
    #[cfg(unix)]
    assert!(log("node-1").contains("SIGHUP"), "node-1 reloaded on SIGHUP: {}", log("node-1"));
    assert!(log("balancer").contains("the files changed"), "{}", log("balancer"));

    let args = ["--endpoint", &urls[0], "status"];
    expect_failure(&spectrum(&args), &args, "needs --ca-cert");
    let plain = urls[0].replace("https://", "http://");
    let args = ["--endpoint", &plain, "--ca-cert", ca, "status"];
    expect_failure(&spectrum(&args), &args, "use https://");
    let args = ["--endpoint", &plain, "status"];
    expect_failure(&spectrum(&args), &args, "error: ");

    // A CA of another cluster does not verify these nodes.
    let other = dir.path().join("other");
    ok(&["cert", "init", "--dir", other.to_str().unwrap()]);
    let other_ca = other.join("ca.pem");
    let args = ["--endpoint", &urls[0], "--ca-cert", other_ca.to_str().unwrap(), "status"];
    expect_failure(&spectrum(&args), &args, "cannot reach");
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// The leaf certificate (DER) served on `127.0.0.1:port` now, verified with `ca`.
fn served_certificate(ca: &str, port: u16) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        tls.get_ref().1.peer_certificates().expect("a server certificate")[0].to_vec()
    })
}

/// A balancer with `require_client_certificates`: a client presenting no
/// certificate is refused; one presenting a client-only certificate from
/// `spectrum cert issue NAME --client-only` (which names no host and no node)
/// is served.
#[test]
fn a_balancer_requiring_client_certificates_serves_a_client_with_a_client_only_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().unwrap();
    ok(&["cert", "init", "--dir", certs_arg]);
    ok(&["cert", "issue", "node-1", "--dir", certs_arg, "--san", "127.0.0.1"]);
    ok(&["cert", "issue", "balancer", "--server-only", "--dir", certs_arg, "--san", "127.0.0.1"]);
    let issued: Value =
        serde_json::from_str(&ok(&["--json", "cert", "issue", "alice", "--client-only", "--dir", certs_arg]))
            .unwrap();
    assert_eq!(issued["names"], Value::Array(vec![]), "a client certificate names no host: {issued}");
    let file = |name: &str| certs.join(name).to_str().unwrap().to_owned();

    let [node_port, balancer_port] = free_ports(2)[..] else { unreachable!() };
    let mut processes = Processes::default();
    let node_file = dir.path().join("node-1.toml");
    std::fs::write(
        &node_file,
        format!(
            "id = \"node-1\"\ncluster = \"cli-mtls\"\nlisten = \"127.0.0.1:{node_port}\"\ndata_dir = {:?}\n\
             tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n",
            dir.path().join("node-1").to_str().unwrap(),
            file("ca.pem"),
            file("node-1.pem"),
            file("node-1.key"),
        ),
    )
    .unwrap();
    spawn(&mut processes, &["node", "--config"], &node_file, &dir.path().join("node-1.log")).unwrap();
    let balancer_file = dir.path().join("balancer.toml");
    std::fs::write(
        &balancer_file,
        format!(
            "listen = \"127.0.0.1:{balancer_port}\"\nhealth_interval_ms = 200\nrequire_client_certificates = true\n\
             tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n[[nodes]]\nid = \"node-1\"\naddr = \"127.0.0.1:{node_port}\"\n",
            file("ca.pem"),
            file("balancer.pem"),
            file("balancer.key"),
        ),
    )
    .unwrap();
    let line =
        spawn(&mut processes, &["balancer", "--config"], &balancer_file, &dir.path().join("balancer.log"))
            .unwrap();
    let balancer = line["balancer"].as_str().unwrap().to_owned();
    let ca = file("ca.pem");
    let (cert, key) = (file("alice.pem"), file("alice.key"));
    let with_cert = ["--endpoint", &balancer, "--ca-cert", &ca, "--client-cert", &cert, "--client-key", &key];

    // With the client certificate: served, once the balancer finds the node healthy.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = spectrum(&[&with_cert[..], &["config", "put", "settings/mtls", "yes"]].concat());
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "never served with a client certificate: {}", stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = ok(&[&with_cert[..], &["config", "get", "settings/mtls"]].concat());
    assert_eq!(got.trim(), "yes");

    // Without one: refused.
    let args = ["--endpoint", &balancer, "--ca-cert", &ca, "config", "get", "settings/mtls"];
    expect_failure(&spectrum(&args), &args, "error: ");
    // A client certificate goes with https:// only.
    let plain = balancer.replace("https://", "http://");
    let args = ["--endpoint", &plain, "--client-cert", &cert, "--client-key", &key, "status"];
    expect_failure(&spectrum(&args), &args, "--client-cert");
    // A certificate without its key is named (clap's own check listed nothing).
    let args = ["--endpoint", &balancer, "--ca-cert", &ca, "--client-cert", &cert, "status"];
    expect_failure(
        &spectrum(&args),
        &args,
        "--client-cert needs its private key: give --client-key FILE too",
    );
}
