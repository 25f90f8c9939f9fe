//! Whole-configuration transfer between two clusters: `export_config` on one,
//! `import_config` (dry run, then for real) on the other.

use spectrum::Cluster;
use spectrum::client::{AckLevel, AdminClient, ClientError, ReadAfter};
use spectrum::model::ImportReport;

const LICENSE: &str = r#"{"owner":"Acme","seats":3,"expires":"2999-12-31"}"#;
const DATAFLOW: &str = r#"{"steps":["trim","uppercase"]}"#;
const JDBC: &str = r#"{"name":"orders","spec":{"kind":"jdbc","url":"jdbc:postgresql://127.0.0.1:1/orders","driver":"org.postgresql.Driver","user":"app","password":"s3cret-orders"}}"#;

async fn single(name: &str) -> (Cluster, AdminClient) {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let cluster = Cluster::builder(name.parse().unwrap()).size(1).start().await.expect("cluster starts");
    let client = AdminClient::connect(cluster.nodes().next().unwrap().addr(), None).await.unwrap();
    (cluster, client)
}

fn sorted(v: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

async fn value(client: &AdminClient, key: &str) -> Vec<u8> {
    client.get(key, ReadAfter::Anything).await.unwrap().value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_configuration_moves_to_another_cluster_in_one_write_and_again_changes_nothing() {
    let (east, from) = single("it-east").await;
    from.set_license(None, LICENSE, AckLevel::Local).await.unwrap();
    from.create_dataflow("normalize", DATAFLOW, false, AckLevel::Local).await.unwrap();
    from.put("settings/greeting", "hello", AckLevel::Local).await.unwrap();
    from.put("settings/blob", vec![0xff, 0x00, 0x7f], AckLevel::Local).await.unwrap();
    from.create_resource(JDBC, false, AckLevel::Local).await.unwrap();
    let export = from.export_config(ReadAfter::Anything).await.unwrap();
    assert_eq!((export.licenses, export.dataflows, export.settings, export.resources), (1, 1, 2, 1));
    let text = String::from_utf8(export.file.clone()).unwrap();
    assert!(!text.contains("s3cret-orders"), "secrets are redacted: {text}");
    assert!(text.contains(r#""greeting": {"#) && text.contains(r#""base64": "/wB/""#), "{text}");

    let (west, to) = single("it-west").await;
    to.put("settings/greeting", "hi", AckLevel::Local).await.unwrap();
    to.put("settings/west-only", "mine", AckLevel::Local).await.unwrap();
    let dry = to.import_config(export.file.clone(), true, AckLevel::Local).await.unwrap();
    assert!(!dry.applied);
    assert_eq!(dry.source_cluster, "it-east");
    let p = &dry.plan;
    assert_eq!(sorted(&p.add), ["dataflows/normalize", "license/main", "resources/orders", "settings/blob"]);
    assert_eq!(sorted(&p.change), ["settings/greeting"]);
    assert_eq!(sorted(&p.kept), ["settings/west-only"]);
    assert_eq!(sorted(&p.needs_secret), ["resources/orders"]);
    assert_eq!(value(&to, "settings/greeting").await, b"hi", "a dry run writes nothing");

    let done = to.import_config(export.file.clone(), false, AckLevel::Local).await.unwrap();
    assert!(done.applied && done.write.is_some());
    assert_eq!(value(&to, "settings/greeting").await, b"hello");
    assert_eq!(value(&to, "settings/blob").await, [0xff, 0x00, 0x7f]);
    assert_eq!(value(&to, "settings/west-only").await, b"mine", "items the file does not name stay");
    assert_eq!(to.dataflows(ReadAfter::Anything).await.unwrap().0.len(), 1);
    assert_eq!(to.license(None, ReadAfter::Anything).await.unwrap().owner, "Acme");
    assert_eq!(to.resources(ReadAfter::Anything).await.unwrap().0.len(), 1);

    let again: ImportReport = to.import_config(export.file, false, AckLevel::Local).await.unwrap();
    assert!(!again.applied, "nothing left to write");
    assert!(again.plan.add.is_empty() && again.plan.change.is_empty(), "{:?}", again.plan);
    east.shutdown().await;
    west.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_item_refuses_the_whole_file_naming_it_and_nothing_changes() {
    let (cluster, client) = single("it-import-bad").await;
    client.put("settings/greeting", "hi", AckLevel::Local).await.unwrap();
    let file = |extra: &str| {
        format!(
            r#"{{"format":"spectrum-config-export","version":1,"cluster":"x","exported_at_ms":0,
                "settings":{{"greeting":{{"text":"changed"}}}},{extra}}}"#
        )
    };
    let refused = |r: Result<ImportReport, ClientError>| r.unwrap_err().to_string();
    for (extra, needle) in [
        (r#""dataflows":{"d":[1,2]}"#, "dataflows/d"),
        (r#""licenses":{"main":{"owner":"Acme","seats":3,"expires":"2000-01-01"}}"#, "license/main: "),
        (
            r#""licenses":{"Bad Name!":{"owner":"Acme","seats":3,"expires":"2999-12-31"}}"#,
            "license/Bad Name!: ",
        ),
        (r#""resources":{"format":"nope"}"#, "file: resources: "),
        (r#""surprise":1"#, "unknown field `surprise`"),
        // A misspelt field of a definition would drop the secret with it.
        (
            r#""resources":{"format_version":1,"cluster":"x","exported_at_ms":0,"resources":[{"name":"typo","spec":{"kind":"jdbc","url":"jdbc:postgresql://127.0.0.1:5432/t","driver":"d","user":"u","pasword":"s3cret"}}]}"#,
            "resources[0].spec.pasword: malformed: not a field of a jdbc resource",
        ),
    ] {
        let e = refused(client.import_config(file(extra), false, AckLevel::Local).await);
        assert!(e.to_lowercase().contains(&needle.to_lowercase()), "{extra}: {e}");
        assert_eq!(value(&client, "settings/greeting").await, b"hi", "{extra}: nothing written");
    }
    // Both forms in one setting: named, not "expected value at line 1".
    let both = r#"{"format":"spectrum-config-export","version":1,"cluster":"x","exported_at_ms":0,
        "settings":{"greeting":{"text":"changed"},"y":{"text":"a","base64":"YQ=="}}}"#;
    let e = refused(client.import_config(both, false, AckLevel::Local).await);
    assert!(e.contains("settings/y: "), "{e}");
    assert_eq!(value(&client, "settings/greeting").await, b"hi", "nothing written");
    let e = refused(client.import_config("not json", false, AckLevel::Local).await);
    assert!(e.contains("configuration export file"), "{e}");
    let e = refused(
        client
            .import_config(
                r#"{"format":"spectrum-config-export","version":9,"cluster":"x","exported_at_ms":0}"#,
                false,
                AckLevel::Local,
            )
            .await,
    );
    assert!(e.contains("version 9"), "{e}");

    // The resources export, imported on its own: an unknown field, at the top
    // or in a definition, refuses the file, naming it; nothing is stored.
    let resources = |top: &str, spec: &str| {
        format!(
            r#"{{"format_version":1,"cluster":"x","exported_at_ms":0{top},"resources":[{{"name":"typo","spec":{{"kind":"jdbc","url":"jdbc:postgresql://127.0.0.1:5432/t","driver":"d","user":"u"{spec}}}}}]}}"#
        )
    };
    for (file, needle) in [
        (resources("", r#","pasword":"s3cret""#), "resources[0].spec.pasword"),
        (resources(r#","exported_by":"me""#, ""), "exported_by"),
    ] {
        let e = client.import_resources(file.clone().into_bytes(), false, AckLevel::Local).await.unwrap_err();
        let e = e.to_string();
        assert!(e.contains(needle) && e.contains("misspelt"), "{file}: {e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(client.resources(ReadAfter::Anything).await.unwrap().0.is_empty(), "{file}: nothing stored");
    }
    client
        .import_resources(resources("", "").into_bytes(), false, AckLevel::Local)
        .await
        .expect("a good file");
    cluster.shutdown().await;
}
