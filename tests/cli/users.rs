//! Users and the audit log, driven with the `spectrum` command.

use serde_json::Value;

use crate::{Launch, ProcessCluster, expect_failure};

#[test]
fn a_user_added_with_the_command_calls_with_the_printed_token_within_its_role() {
    let mut cluster = ProcessCluster::start("cli-users", 1, "users-bootstrap-token");
    let node = cluster.nodes[0].1.clone();

    // `user add` prints the token once: the last line of the text, `token` in JSON.
    let added = cluster.json(&["user", "add", "olga", "--role", "operator"]);
    assert_eq!(added["user"]["role"], "operator");
    let olga = added["token"].as_str().expect("a token").to_owned();
    let text = cluster.ok(&["user", "add", "vic", "--role", "viewer"]);
    assert!(text.contains("shown only this once"), "{text}");
    let vic = text.lines().last().unwrap().trim().to_owned();
    assert!(vic.starts_with("spt_") && vic.len() == 68, "{text}");
    cluster.fails(&["user", "add", "olga", "--role", "admin"], "already exists");
    cluster.fails(&["user", "add", "x", "--role", "root"], "unknown role");

    // The operator may drain and undrain (the lone node is the last active
    // member, so its drain is refused for that, not for the role); the viewer
    // reads but cannot write.
    let run_as = |token: &str, args: &[&str]| cluster.run_at(&node, Some(token), args);
    let args = ["--json", "node", "drain", "node-1"];
    expect_failure(&run_as(&olga, &args), &args, "node-1 is the last active member");
    assert!(run_as(&olga, &["node", "undrain", "node-1"]).status.success());
    assert!(run_as(&vic, &["status"]).status.success());
    // Through the balancer, the viewer sees the balancer's figures too: the
    // balancer asks a node whether the token is admitted.
    let out = cluster.run_at(&cluster.balancer, Some(&vic), &["--json", "status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["balancer"]["nodes"].is_array(), "a viewer's status has no balancer figures: {status}");
    let args = ["config", "put", "settings/a", "1"];
    expect_failure(&run_as(&vic, &args), &args, "Put needs the admin role");
    let args = ["user", "list"];
    expect_failure(&run_as(&olga, &args), &args, "ListUsers needs the admin role");

    // Users are listed without tokens.
    let list = cluster.ok(&["user", "list"]);
    assert!(list.lines().any(|l| l.starts_with("olga") && l.contains("operator")), "{list}");
    assert!(!list.contains(&olga) && !list.contains(&vic), "{list}");

    // The audit log, read by the operator: the viewer's refused write, newest first.
    let out = run_as(&olga, &["--json", "audit", "--user", "vic"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log[0]["operation"], "Put", "{log}");
    assert_eq!((log[0]["ok"].as_bool(), log[0]["code"].as_str()), (Some(false), Some("PermissionDenied")));
    assert_eq!(log[0]["target"], "settings/a");
    let table = String::from_utf8(run_as(&olga, &["audit", "--limit", "3"]).stdout).unwrap();
    assert!(table.starts_with("TIME") && table.lines().count() == 4, "{table}");
    assert_eq!(cluster.json(&["audit", "--since", "2999-01-01T00:00:00Z"]), Value::Array(vec![]));
    let all = cluster.ok(&["--json", "audit"]);
    assert!(!all.contains(&olga) && !all.contains(&vic) && !all.contains(&cluster.token), "{all}");

    // Revoked: the token stops working; rotated: the old one stops, the new one works.
    cluster.ok(&["user", "revoke", "vic"]);
    let args = ["status"];
    expect_failure(&run_as(&vic, &args), &args, "revoked");
    // Its name is not given out again, and the refusal does not advise rotating.
    let again = cluster.fails(&["user", "add", "vic", "--role", "viewer"], "was revoked");
    assert!(!again.contains("rotate"), "{again}");
    cluster.fails(&["user", "rotate", "vic"], "add a new user under another name");
    let rotated = cluster.json(&["user", "rotate", "olga"]);
    let new = rotated["token"].as_str().unwrap().to_owned();
    expect_failure(&run_as(&olga, &args), &args, "invalid bearer token");
    assert!(run_as(&new, &["status"]).status.success());

    // The node restarted from a shell that manages the cluster as olga: her
    // token, in SPECTRUM_TOKEN, does not become its bootstrap token, so
    // revoking her stops it on this node too.
    cluster.kill(0);
    let shell = Launch { env: vec![("SPECTRUM_TOKEN".into(), new.clone())], ..Launch::default() };
    cluster.restart(0, &shell).expect("node-1 starts again");
    assert!(cluster.node_log(0).contains("SPECTRUM_TOKEN (the token management commands send) is not read"));
    cluster.ok(&["user", "revoke", "olga"]);
    expect_failure(&cluster.run_at(&node, Some(&new), &args), &args, "revoked");
    let out = cluster.run_at(&node, Some(&cluster.token), &args);
    assert!(out.status.success(), "the file's token is the bootstrap token");
    cluster.kill(0);
    // Without a token of its own, it does not start in development mode either.
    std::fs::write(&cluster.files[0], cluster.node_file_with(0, &[("token", None)])).unwrap();
    let refused = cluster.restart(0, &shell).expect_err("a node with only SPECTRUM_TOKEN started");
    assert!(refused.contains("a node does not take its bootstrap token from it"), "{refused}");
    // And a user's token is never a bootstrap token.
    let with_user_token = Launch { env: vec![("SPECTRUM_BOOTSTRAP_TOKEN".into(), new)], ..Launch::default() };
    let refused = cluster.restart(0, &with_user_token).expect_err("a user's token became a bootstrap token");
    assert!(refused.contains("token: the bootstrap token is a user's token (spt_…)"), "{refused}");
}
