//! Real hosts with the command: a node listening on every interface publishes
//! its `advertise` address, a balancer file names a node by host name, and names
//! that do not resolve or unreachable listen addresses are refused in one line.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Processes, expect_failure, free_ports, spawn, spectrum_command};

/// Runs `spectrum ARGS FILE` that is expected to exit; kills it after 20 s.
fn run_to_exit(args: &[&str], file: &Path) -> Output {
    let mut child = spectrum_command()
        .args(args)
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spectrum runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("spectrum {args:?} kept running; it should have refused its file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_node_on_every_interface_advertises_its_address_and_a_balancer_reaches_it_by_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let (balancer_port, node_port) = (ports[0], ports[1]);
    let node_file = dir.path().join("node-1.toml");
    std::fs::write(
        &node_file,
        format!(
            "id = \"node-1\"\ncluster = \"cli-hosts\"\nlisten = \"0.0.0.0:{node_port}\"\n\
             advertise = \"127.0.0.6:{node_port}\"\ndata_dir = {:?}\n",
            dir.path().join("node-1").display().to_string()
        ),
    )
    .unwrap();
    let mut processes = Processes::default();
    let line =
        spawn(&mut processes, &["node", "--config"], &node_file, &dir.path().join("node.log")).unwrap();
    assert_eq!(line["addr"], format!("http://127.0.0.6:{node_port}"));

    let balancer_file = dir.path().join("balancer.toml");
    std::fs::write(
        &balancer_file,
        format!(
            "listen = \"127.0.0.1:{balancer_port}\"\nhealth_interval_ms = 200\n\
             [[nodes]]\nid = \"node-1\"\naddr = \"localhost:{node_port}\"\n"
        ),
    )
    .unwrap();
    let line =
        spawn(&mut processes, &["balancer", "--config"], &balancer_file, &dir.path().join("balancer.log"))
            .unwrap();
    let balancer = line["balancer"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = spectrum_command().args(["--endpoint", &balancer, "--json", "status"]).output().unwrap();
        if out.status.success() {
            let status: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(status["members"][0]["addr"], format!("http://127.0.0.6:{node_port}"), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status through the balancer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_balancer_file_naming_a_host_that_does_not_resolve_is_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("balancer.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[[nodes]]\nid = \"node-1\"\naddr = \"no-such-node.invalid:7101\"\n",
    )
    .unwrap();
    let args = ["balancer", "--config"];
    let out = run_to_exit(&args, &file);
    expect_failure(&out, &args, "nodes[0].addr: cannot resolve no-such-node.invalid:7101 (node node-1)");
}

#[test]
fn a_node_file_listening_on_every_interface_without_advertise_is_refused_naming_both_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    let key = spectrum::resources::ClusterKey::generate().to_hex();
    let text = format!(
        "id = \"node-1\"\ncluster = \"cli-hosts\"\nlisten = \"0.0.0.0:0\"\ncluster_key = \"{key}\"\n"
    );
    std::fs::write(&file, text).unwrap();
    let args = ["node", "--config"];
    let out = run_to_exit(&args, &file);
    let line = expect_failure(&out, &args, "advertise");
    assert!(line.contains("`listen` is 0.0.0.0:0"), "{line}");
}
