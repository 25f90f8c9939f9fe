//! A disk fills: node-3's data directory is a small tmpfs mounted in a mount
//! namespace of its own (`unshare --mount`), so the mount lives and dies with the
//! node process and nothing is left mounted whatever happens to the test; the
//! test fills it through `/proc/PID/root`. The node refuses writes naming its
//! store, is not ready, the balancer serves no stale read from it, and once the
//! space is freed it serves again without a restart, with nothing acknowledged
//! lost. Needs root (mounting), as CI runs.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::{
    ClusterSpec, Launch, ProcessCluster, STARTUP, eventually, expect_failure, grpc_health, http_get,
};

/// The node whose disk fills (node-3).
const FULL: usize = 2;

/// Runs a node with its data directory on a tmpfs of `size` in a private mount
/// namespace.
fn on_tmpfs(size: &str) -> Launch {
    let script = format!(
        "mkdir -p '{{data_dir}}' && mount -t tmpfs -o size={size} tmpfs '{{data_dir}}' && exec \"$@\""
    );
    let wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", &script, "sh"];
    Launch { wrapper: wrapper.map(str::to_owned).to_vec(), env: vec![] }
}

/// Fills the file system under `dir` with a file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap_or_else(|e| panic!("{}: {e}", filler.display()));
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let mut byte = [0u8; 1];
    while file.write_all(&byte).is_ok() {
        byte[0] = 1;
    }
    let _ = file.sync_all();
    filler
}

fn readiness(url: &str) -> Result<(u16, String), String> {
    http_get(url, "/readyz")
}

#[test]
fn a_node_whose_disk_fills_refuses_writes_naming_its_store_is_not_served_and_recovers_once_space_is_freed() {
    let spec =
        ClusterSpec::new("cli-full-disk", 3, "full-disk-token").own_addresses().launch(FULL, on_tmpfs("4m"));
    let mut cluster = ProcessCluster::start_with(&spec);
    let full = cluster.nodes[FULL].1.clone();
    let data_dir = cluster.data_dir("node-3");
    let mut acknowledged = vec![("settings/before".to_owned(), "kept".to_owned())];
    cluster.ok(&["config", "put", "settings/before", "kept", "--ack", "all"]);
    cluster.ok(&["config", "put", "settings/color", "red", "--ack", "all"]);

    // Its tmpfs, as node-3 sees it: the test's own view of the directory is empty.
    let inside =
        PathBuf::from(format!("/proc/{}/root", cluster.pid(FULL))).join(data_dir.strip_prefix("/").unwrap());
    assert!(inside.join("config.redb").is_file(), "node-3's store is on its tmpfs");
    assert!(!data_dir.join("config.redb").exists(), "the tmpfs is node-3's alone");
    let filler = fill(&inside);

    // Writes reaching node-3 fail once its store needs room, naming the store.
    let big = "x".repeat(100 * 1024);
    let mut refused = None;
    for i in 0..40 {
        let key = format!("settings/big-{i}");
        let args = ["config", "put", key.as_str(), big.as_str(), "--ack", "local"];
        let out = cluster.run_at(&full, Some(&cluster.token), &args);
        if out.status.success() {
            acknowledged.push((key, big.clone()));
        } else {
            refused = Some(expect_failure(&out, &["config", "put"], "error"));
            break;
        }
    }
    let line = refused.expect("a write on a full disk fails");
    assert!(line.ends_with("(ResourceExhausted)") || line.ends_with("(Unavailable)"), "{line}");
    let store = data_dir.join("config.redb");
    assert!(line.contains(&store.display().to_string()), "names {}: {line}", store.display());
    assert!(line.contains("write through another node"), "{line}");

    // Not ready, by HTTP and gRPC health, and the balancer stops sending to it.
    let body = eventually("node-3 is not ready", STARTUP, || match readiness(&full)? {
        (503, body) => Ok(body),
        other => Err(format!("{other:?}")),
    });
    assert!(body.contains("store not writable"), "{body}");
    assert_eq!(grpc_health(&full), Ok("NOT_SERVING".to_owned()));
    cluster.balancer_finds("node-3", false);

    // A new value through the balancer: node-3 cannot store it, so it refuses to
    // answer reads from its stale copy, and no read through the balancer answers
    // the old value.
    cluster.ok(&["config", "put", "settings/color", "blue"]);
    acknowledged.push(("settings/color".to_owned(), "blue".to_owned()));
    let refused = cluster.value_at(FULL, "settings/color").expect_err("node-3 may be stale");
    assert!(refused.contains("may be behind the cluster") && refused.contains("Unavailable"), "{refused}");
    for _ in 0..20 {
        assert_eq!(cluster.json(&["config", "get", "settings/color"])["value"], "blue");
    }

    // Room again: ready without a restart, every acknowledged write on every node.
    std::fs::remove_file(&filler).unwrap();
    eventually("node-3 is ready again", STARTUP, || match readiness(&full)? {
        (200, _) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(grpc_health(&full), Ok("SERVING".to_owned()));
    assert!(cluster.node_process(FULL).try_wait().unwrap().is_none(), "node-3 was not restarted");
    for (key, value) in &acknowledged {
        cluster.all_hold(&[0, 1, 2], key, value);
    }
    let written = cluster.try_json_at(&full, &["config", "put", "settings/after", "1", "--ack", "all"]);
    assert_eq!(written.expect("node-3 writes again")["acked"], 3);
}

/// Raft mode: a failed log append stops a node's Raft (openraft treats
/// storage errors as fatal). The node says so: not ready, and it refuses
/// reads from its copy, which no longer follows the group, while the other
/// two go on committing. Once its disk has room, `spectrum node` restarts it
/// in-process: the same process serves again, with every committed write.
#[test]
fn a_raft_node_whose_log_cannot_be_written_says_why_and_comes_back_once_there_is_room() {
    let spec = ClusterSpec::new("cli-raft-full-disk", 3, "raft-full-disk-token")
        .raft()
        .own_addresses()
        .launch(FULL, on_tmpfs("8m"));
    let mut cluster = ProcessCluster::start_with(&spec);
    let full = cluster.nodes[FULL].1.clone();
    let data_dir = cluster.data_dir("node-3");
    cluster.ok(&["config", "put", "settings/before", "kept"]);
    let inside =
        PathBuf::from(format!("/proc/{}/root", cluster.pid(FULL))).join(data_dir.strip_prefix("/").unwrap());
    let filler = fill(&inside);

    // Writes through the balancer reach node-3's log, whose append fails.
    let big = "x".repeat(100 * 1024);
    let body = eventually("node-3's consensus stops and it says so", STARTUP, || {
        let _ = cluster.run(&["config", "put", "settings/big", big.as_str()]);
        match readiness(&full)? {
            (503, body) if body.contains("consensus_error") => Ok(body),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(body.contains("consensus stopped"), "{body}");
    eventually("node-3 NOT_SERVING", STARTUP, || match grpc_health(&full)? {
        s if s == "NOT_SERVING" => Ok(()),
        other => Err(other),
    });
    cluster.balancer_finds("node-3", false);
    let refused = cluster.value_at(FULL, "settings/before").expect_err("node-3's copy no longer follows");
    assert!(refused.contains("its consensus stopped") && refused.contains("Unavailable"), "{refused}");

    // The other two go on, and every read through the balancer is current.
    cluster.ok(&["config", "put", "settings/color", "blue"]);
    for _ in 0..10 {
        assert_eq!(cluster.json(&["config", "get", "settings/color"])["value"], "blue");
    }

    // Room again: the same process restarts the node, which catches up.
    std::fs::remove_file(&filler).unwrap();
    eventually("node-3 is ready again", STARTUP, || match readiness(&full)? {
        (200, _) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert!(cluster.node_process(FULL).try_wait().unwrap().is_none(), "node-3's process exited");
    eventually("node-3 holds every committed write", STARTUP, || {
        for (key, value) in [("settings/before", "kept"), ("settings/color", "blue")] {
            let held = cluster.value_at(FULL, key)?;
            if held.as_deref() != Some(value) {
                return Err(format!("{key} = {held:?}"));
            }
        }
        Ok(())
    });
    let written = cluster.try_json_at(&full, &["config", "put", "settings/after", "1"]);
    written.expect("node-3 takes writes again");
}
