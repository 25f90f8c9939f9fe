//! Bad definitions and bad values are refused with the field or setting at fault, and nothing changes.

use crate::{ProcessCluster, jdbc_definition, spectrum_command, stderr};

#[test]
fn bad_definitions_are_refused_naming_the_field_and_change_nothing() {
    let cluster = ProcessCluster::start("cli-bad-input", 1, "bad-input-token");
    let orders = cluster.path("orders.json");
    std::fs::write(&orders, jdbc_definition("orders")).unwrap();
    cluster.ok(&["resources", "create", orders.to_str().unwrap()]);

    let oversized = "x".repeat(5000);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown kind",
            r#"{"name":"t","spec":{"kind":"teleporter"}}"#.into(),
            "spec.kind: unknown kind \"teleporter\"",
        ),
        (
            "malformed URL",
            r#"{"name":"w","spec":{"kind":"web_service","url":"htp:/nowhere"}}"#.into(),
            "spec.url",
        ),
        (
            "malformed JDBC URL",
            r#"{"name":"j","spec":{"kind":"jdbc","url":"postgresql://db/x","driver":"org.postgresql.Driver"}}"#.into(),
            "spec.url",
        ),
        (
            "missing path",
            r#"{"name":"p","spec":{"kind":"database","category":"postal","location":{"kind":"local"}}}"#.into(),
            "spec.location.path: missing",
        ),
        ("duplicate name", jdbc_definition("orders"), "already exists"),
        (
            "port out of range",
            r#"{"name":"f","spec":{"kind":"file_server","protocol":"sftp","host":"files","port":70000,"root":"/"}}"#
                .into(),
            "spec.port",
        ),
        (
            "JDBC port out of range",
            r#"{"name":"j","spec":{"kind":"jdbc","url":"jdbc:postgresql://db:99999/x","driver":"org.postgresql.Driver"}}"#
                .into(),
            "spec.url",
        ),
        (
            "oversized value",
            format!(r#"{{"name":"o","description":"{oversized}","spec":{{"kind":"web_service","url":"http://a"}}}}"#),
            "description: 5000 bytes; at most 4096",
        ),
        ("not JSON", "name = orders".into(), "definition: malformed"),
        ("a placeholder for a secret", jdbc_definition("new").replace(crate::SECRET, "***"), "spec.password"),
    ];

    let before = cluster.ok(&["--json", "resources", "list"]);
    let raw_before = cluster.ok(&["--json", "config", "list", "resources/"]);
    for (case, definition, needle) in cases {
        let file = cluster.path("bad.json");
        std::fs::write(&file, &definition).unwrap();
        let line = cluster.fails(&["resources", "create", file.to_str().unwrap()], needle);
        assert!(line.contains("InvalidArgument") || line.contains("AlreadyExists"), "{case}: {line}");
        // The same definition through the raw config API is refused too (a duplicate
        // name is a replace there).
        if case != "duplicate name" {
            let name = serde_json::from_str::<serde_json::Value>(&definition)
                .ok()
                .and_then(|v| v["name"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "x".into());
            let key = format!("resources/{name}");
            cluster.fails(&["config", "put", &key, &definition], "invalid");
        }
        assert_eq!(cluster.ok(&["--json", "resources", "list"]), before, "{case} changed the resources");
    }
    assert_eq!(cluster.ok(&["--json", "config", "list", "resources/"]), raw_before);

    // Bad names and license fields are named too.
    cluster.fails(&["resources", "show", "Bad Name"], "invalid resource name");
    std::fs::write(cluster.path("flow.json"), "{}").unwrap();
    cluster.fails(
        &["dataflow", "create", "a/b", cluster.path("flow.json").to_str().unwrap()],
        "invalid dataflow name",
    );
    // Dataflows the nodes' service could not run are refused, whether created,
    // written raw or imported (a new-user trial stored all of these).
    for (flow, needle) in [
        (r#"{"steps":["explode"]}"#, "unknown variant `explode`"),
        (r#"{"steps":"trim"}"#, "invalid type"),
        ("{}", "missing field `steps`"),
        (r#"{"steps":["trim"],"whatever":1}"#, "unknown field `whatever`"),
        (r#"{"steps":["postal_lookup"]}"#, "needs a `resource`"),
    ] {
        std::fs::write(cluster.path("flow.json"), flow).unwrap();
        let line =
            cluster.fails(&["dataflow", "create", "f", cluster.path("flow.json").to_str().unwrap()], needle);
        assert!(line.contains("dataflow \"f\"") && line.contains("InvalidArgument"), "{flow}: {line}");
        cluster.fails(&["config", "put", "dataflows/f", flow], needle);
        let import = format!(
            r#"{{"format":"spectrum-config-export","version":1,"cluster":"c","exported_at_ms":0,"licenses":{{}},"dataflows":{{"f":{flow}}},"settings":{{}}}}"#
        );
        std::fs::write(cluster.path("import.json"), import).unwrap();
        cluster.fails(&["import", cluster.path("import.json").to_str().unwrap()], needle);
    }
    assert_eq!(cluster.json(&["dataflow", "list"]), serde_json::json!([]));
    std::fs::write(cluster.path("license.json"), r#"{"owner":"Acme","seats":0,"expires":"2999-01-01"}"#)
        .unwrap();
    cluster.fails(&["license", "set", cluster.path("license.json").to_str().unwrap()], "license field seats");
    cluster.fails(&["license", "show"], "no license");
}

/// A value refused from the environment names the variable that held it, not
/// a flag nobody typed; a flag's value is named as the flag.
#[test]
fn a_bad_value_from_the_environment_is_refused_naming_the_variable() {
    let out = spectrum_command().env("SPECTRUM_TOKEN", "").args(["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: invalid value '' for SPECTRUM_TOKEN: invalid token: it is empty (see spectrum --help)"
    );
    let out = spectrum_command().env("SPECTRUM_TOKEN", "").args(["--token=", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: invalid value '' for '--token <TOKEN>'"), "{}", stderr(&out));
}
