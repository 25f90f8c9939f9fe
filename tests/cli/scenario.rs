//! The whole story, driven only with the `spectrum` command.

use serde_json::Value;

use crate::{ProcessCluster, SECRET, expect_failure, jdbc_definition, postal_definition};

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v["name"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn a_cluster_of_processes_is_managed_with_the_spectrum_command() {
    let east = ProcessCluster::start("cli-east", 3, "east-token");

    // Status: three active members, answered through the balancer.
    let status = east.json(&["status"]);
    assert_eq!(status["cluster"], "cli-east");
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    let table = east.ok(&["status"]);
    assert!(table.starts_with("cluster cli-east"), "{table}");
    assert!(table.contains("MEMBER") && table.contains("node-3"), "{table}");
    // The balancer adds its own figures for each node; a node alone does not. The
    // balancer follows membership (polled every 200 ms), so it may take a moment
    // after start-up to list every node.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let status = east.json(&["status"]);
        let listed = status["balancer"]["nodes"].as_array().map_or(0, Vec::len);
        if listed == 3 || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let nodes = status["balancer"]["nodes"].as_array().unwrap_or_else(|| panic!("no balancer: {status}"));
    let mut ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["node-1", "node-2", "node-3"], "{status}");
    assert!(nodes.iter().all(|n| n["requests"].is_u64()), "{status}");
    assert!(table.contains("BALANCER") && table.contains("LATENCY µs"), "{table}");
    let out = east.run_at(&east.nodes[0].1, Some(&east.token), &["--json", "status"]);
    assert!(out.status.success(), "status at a node: {}", String::from_utf8_lossy(&out.stderr));
    let direct: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(direct.get("balancer").is_none(), "a node is not a balancer: {direct}");

    // A resource with a secret, and one installed on every node.
    let orders = east.path("orders.json");
    std::fs::write(&orders, jdbc_definition("orders")).unwrap();
    let postal_data = east.path("postal.db");
    std::fs::write(&postal_data, "49001 SPRINGFIELD\n").unwrap();
    let postal = east.path("postal.json");
    std::fs::write(&postal, postal_definition("postal", &postal_data)).unwrap();
    let created = east.ok(&["resources", "create", orders.to_str().unwrap()]);
    assert!(created.contains("resource orders (jdbc, secret encrypted) stored"), "{created}");
    // Writes are acknowledged by a quorum unless --ack says otherwise.
    let created = east.json(&["resources", "create", postal.to_str().unwrap(), "--ack", "all"]);
    assert_eq!(created["resource"]["kind"], "database");
    assert_eq!(created["write"]["acked"], 3);

    // Listed, shown and read raw: always redacted.
    let list = east.json(&["resources", "list"]);
    assert_eq!(names(&list), ["orders", "postal"]);
    assert_eq!(list[0]["has_secret"], true);
    assert_eq!(list[0]["definition"]["spec"]["password"], "***");
    assert_eq!(list[0]["definition"]["spec"]["user"], "app");
    let table = east.ok(&["resources", "list"]);
    assert!(
        table.lines().any(|l| l.starts_with("orders") && l.contains("jdbc") && l.contains("***")),
        "{table}"
    );
    let shown = east.ok(&["resources", "show", "orders"]);
    assert!(shown.contains("\"password\": \"***\""), "{shown}");
    let raw = east.json(&["config", "get", "resources/orders"]);
    assert_eq!(raw["value"]["spec"]["password"], "***");
    east.ok(&["config", "list", "resources/"]);
    // Writes through the balancer see each other: no conflicts, in both forms.
    assert_eq!(east.json(&["config", "conflicts", "resources/"]), Value::Array(vec![]));
    assert_eq!(east.ok(&["config", "conflicts"]).trim(), "no open conflicts");
    assert_eq!(east.json(&["status"])["conflicts"], 0);

    // Creating the same name again is refused; nothing changes.
    east.fails(&["resources", "create", orders.to_str().unwrap()], "already exists");

    // Checked on every node: the postal data is there, the database port is closed.
    let check = east.json(&["resources", "check"]);
    let nodes = check["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{check}");
    for node in nodes {
        assert!(node["error"].is_null(), "{node}");
        let by_name =
            |n: &str| node["resources"].as_array().unwrap().iter().find(|r| r["name"] == n).cloned();
        assert_eq!(by_name("postal").unwrap()["available"], true, "{node}");
        let orders = by_name("orders").unwrap();
        assert_eq!(orders["available"], false, "{node}");
        assert!(orders["detail"].as_str().unwrap().contains("127.0.0.1:1"), "{orders}");
    }
    let status = east.json(&["status"]);
    let resources = status["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 2, "{status}");
    assert!(east.ok(&["resources", "check", "postal"]).contains("postal"));

    // Export (redacted) and import into another cluster, with a dry run first.
    let export = east.path("east-export.json");
    let exported = east.ok(&["resources", "export", "--output", export.to_str().unwrap()]);
    assert!(exported.contains("exported 2 resources"), "{exported}");
    let file = std::fs::read_to_string(&export).unwrap();
    assert!(!file.contains(SECRET));
    assert!(file.contains("\"cluster\": \"cli-east\""), "{file}");

    let west = ProcessCluster::start("cli-west", 1, "west-token");
    let dry = west.json(&["resources", "import", export.to_str().unwrap(), "--dry-run"]);
    assert_eq!(dry["applied"], false);
    assert_eq!(dry["source_cluster"], "cli-east");
    assert_eq!(names(&dry["add"]), ["orders", "postal"]);
    assert_eq!(names(&dry["needs_secret"]), ["orders"]);
    assert_eq!(west.json(&["resources", "list"]), Value::Array(vec![]), "a dry run stores nothing");
    let table = west.ok(&["resources", "import", export.to_str().unwrap(), "--dry-run"]);
    assert!(table.contains("add           orders, postal"), "{table}");
    assert!(table.contains("dry run: nothing was changed"), "{table}");
    let done = west.json(&["resources", "import", export.to_str().unwrap()]);
    assert_eq!(done["applied"], true);
    let list = west.json(&["resources", "list"]);
    assert_eq!(names(&list), ["orders", "postal"]);
    assert_eq!(list[0]["has_secret"], false, "the redacted secret is left for the operator to set");
    let again = west.json(&["resources", "import", export.to_str().unwrap(), "--dry-run"]);
    assert_eq!(names(&again["unchanged"]), ["orders", "postal"]);
    assert_eq!(names(&again["needs_secret"]), ["orders"], "still without a secret");
    // West's own secret, then a redacted import keeps it.
    std::fs::write(west.path("orders.json"), jdbc_definition("orders")).unwrap();
    west.ok(&["resources", "create", "--replace", west.path("orders.json").to_str().unwrap()]);
    let kept = west.json(&["resources", "import", export.to_str().unwrap()]);
    assert_eq!(names(&kept["unchanged"]), ["orders", "postal"], "{kept}");
    assert_eq!(west.json(&["resources", "show", "orders"])["has_secret"], true);

    // The whole configuration: settings (and licenses, dataflows) travel with the resources.
    east.ok(&["config", "put", "settings/region", "east", "--ack", "all"]);
    let whole = east.path("east-config.json");
    let exported = east.ok(&["export", "--output", whole.to_str().unwrap()]);
    assert!(exported.contains("2 resources"), "{exported}");
    assert!(!std::fs::read_to_string(&whole).unwrap().contains(SECRET));
    let dry = west.json(&["import", whole.to_str().unwrap(), "--dry-run"]);
    assert_eq!(dry["applied"], false);
    assert!(names(&dry["add"]).contains(&"settings/region".to_owned()), "{dry}");
    assert_eq!(west.json(&["import", whole.to_str().unwrap()])["applied"], true);
    assert_eq!(west.ok(&["config", "get", "settings/region"]).trim(), "east");

    // Drain a node and see it in status; then put it back.
    let drained = east.json(&["node", "drain", "node-2"]);
    assert_eq!(drained["state"], "draining");
    let status = east.json(&["status"]);
    let state = |s: &Value, id: &str| {
        s["members"].as_array().unwrap().iter().find(|m| m["id"] == id).unwrap()["state"].clone()
    };
    assert_eq!(state(&status, "node-2"), "draining");
    assert_eq!(state(&status, "node-1"), "active");
    assert!(east.ok(&["node", "undrain", "node-2"]).contains("node node-2 is now active"));
    assert_eq!(state(&east.json(&["status"]), "node-2"), "active");
    east.fails(&["node", "drain", "node-9"], "no member");
    east.fails(&["config", "put", "membership/node-2", "{}"], "maintained by the nodes");

    // License: a current one is installed and shown; an expired one is refused.
    std::fs::write(east.path("license.json"), r#"{"owner":"Acme","seats":3,"expires":"2999-12-31"}"#)
        .unwrap();
    let set = east.json(&["license", "set", east.path("license.json").to_str().unwrap()]);
    assert_eq!(set["license"]["owner"], "Acme");
    assert!(set["license"]["days_left"].as_i64().unwrap() > 300_000);
    std::fs::write(east.path("old.json"), r#"{"owner":"Acme","seats":3,"expires":"2001-01-01"}"#).unwrap();
    east.fails(&["license", "set", east.path("old.json").to_str().unwrap()], "expired on 2001-01-01");
    let shown = east.ok(&["license", "show"]);
    assert!(shown.contains("Acme (3 seats), expires 2999-12-31"), "{shown}");

    // Dataflows.
    std::fs::write(east.path("flow.json"), r#"{"steps":["trim","uppercase"]}"#).unwrap();
    east.ok(&["dataflow", "create", "clean", east.path("flow.json").to_str().unwrap()]);
    assert_eq!(names(&east.json(&["dataflow", "list"])), ["clean"]);
    assert_eq!(east.json(&["dataflow", "show", "clean"])["definition"]["steps"][1], "uppercase");
    east.fails(&["dataflow", "create", "clean", east.path("flow.json").to_str().unwrap()], "already exists");
    // Acknowledged by every node, so the next read sees it whichever node the
    // balancer picks (a quorum leaves one node that may not have it yet).
    east.ok(&["dataflow", "delete", "clean", "--ack", "all"]);
    east.fails(&["dataflow", "show", "clean"], "no dataflow");

    // Every node and the balancer refuse a missing or wrong token, and nothing is done.
    let mut endpoints = vec![east.balancer.clone()];
    endpoints.extend(east.nodes.iter().map(|(_, addr)| addr.clone()));
    let args = ["resources", "delete", "postal"];
    for endpoint in &endpoints {
        for token in [None, Some("wrong-token"), Some("west-token")] {
            let out = east.run_at(endpoint, token, &args);
            let line = expect_failure(&out, &args, "Unauthenticated");
            assert!(line.contains("bearer token"), "{line}");
        }
    }
    assert_eq!(names(&east.json(&["resources", "list"])), ["orders", "postal"]);
    // Tokens are per cluster.
    let out = west.run_at(&west.balancer, Some("east-token"), &["status"]);
    expect_failure(&out, &["status"], "invalid bearer token (Unauthenticated)");

    // Bad arguments and unreachable endpoints also fail with one line.
    east.fails(&["resources", "frobnicate"], "unrecognized subcommand");
    let out = east.run_at("http://127.0.0.1:1", Some("t"), &["status"]);
    expect_failure(&out, &["status"], "cannot reach");

    // Secrets never reached a log either.
    for cluster in [&east, &west] {
        let logs = cluster.logs();
        assert!(logs.contains("resource stored"), "{} logged nothing", cluster.name);
        assert!(!logs.contains(SECRET), "{} logged the secret", cluster.name);
    }
}
