//! Export from one cluster, plan and import into another.

use spectrum_core::ClusterId;
use spectrum_resources::{
    DataLocation, DatabaseCategory, DatabaseSpec, ExportFile, ExportOptions, ImportPlan, JdbcSpec,
    ResourceDefinition, ResourceName, ResourceSpec, Secret, TransferError, plan_import, prepare_import,
};

fn name(s: &str) -> ResourceName {
    ResourceName::new(s).unwrap()
}

fn names(list: &[&str]) -> Vec<ResourceName> {
    list.iter().map(|s| name(s)).collect()
}

fn jdbc(n: &str, host: &str, password: Option<&str>) -> ResourceDefinition {
    ResourceDefinition::new(
        name(n),
        ResourceSpec::Jdbc(JdbcSpec {
            password: password.map(Secret::new),
            ..JdbcSpec::new(format!("jdbc:postgresql://{host}/geo"), "org.postgresql.Driver")
        }),
    )
}

fn postal(n: &str, path: &str) -> ResourceDefinition {
    ResourceDefinition::new(
        name(n),
        ResourceSpec::Database(DatabaseSpec {
            category: DatabaseCategory::Postal,
            location: DataLocation::local(path),
        }),
    )
}

fn export(defs: Vec<ResourceDefinition>, include_secrets: bool) -> ExportFile {
    let file = ExportFile::new(
        ClusterId::new("east").unwrap(),
        1_700_000_000_000,
        defs,
        ExportOptions { include_secrets },
    );
    // What the operator carries between clusters is the file's bytes.
    ExportFile::from_json_bytes(&file.to_json_bytes().unwrap()).unwrap()
}

fn password_of(def: &ResourceDefinition) -> Option<&str> {
    match &def.spec {
        ResourceSpec::Jdbc(spec) => spec.password.as_ref().and_then(Secret::expose),
        _ => None,
    }
}

#[test]
fn a_dry_run_lists_what_would_be_added_changed_and_left_alone() {
    let source = vec![
        postal("same", "/data/same"),
        postal("moved", "/data/new-place"),
        postal("fresh", "/data/fresh"),
        jdbc("db-new", "db", Some("pw")),
    ];
    let target =
        vec![postal("same", "/data/same"), postal("moved", "/data/old-place"), postal("local-only", "/x")];
    let plan = plan_import(&target, &export(source, false));
    assert_eq!(
        plan,
        ImportPlan {
            add: names(&["db-new", "fresh"]),
            change: names(&["moved"]),
            unchanged: names(&["same"]),
            needs_secret: names(&["db-new"]),
            kept: names(&["local-only"]),
        }
    );
    assert!(!plan.is_noop());
}

#[test]
fn importing_a_redacted_secret_over_an_existing_definition_keeps_the_existing_secret_for_the_same_host() {
    let target = vec![jdbc("geo", "db-host", Some("target-pw"))];
    let described = jdbc("geo", "db-host", Some("source-pw")).with_description("moved racks");
    let prepared = prepare_import(&target, &export(vec![described], false));
    assert_eq!(prepared.plan.change, names(&["geo"]));
    assert!(prepared.plan.needs_secret.is_empty());
    assert_eq!(password_of(&prepared.writes[0]), Some("target-pw"));

    let same = prepare_import(&target, &export(vec![jdbc("geo", "db-host", Some("source-pw"))], false));
    assert_eq!(same.plan.unchanged, names(&["geo"]));
    assert!(same.writes.is_empty());
}

/// A definition from another cluster that points elsewhere must not take this
/// cluster's password there: it is stored without a secret, reported as
/// needing one (a new-user trial found the target's password kept for an
/// imported definition naming another host and user).
#[test]
fn importing_a_redacted_secret_for_another_host_does_not_keep_the_existing_secret() {
    let target = vec![jdbc("geo", "db-host", Some("target-pw"))];
    let prepared =
        prepare_import(&target, &export(vec![jdbc("geo", "other-host", Some("source-pw"))], false));
    assert_eq!(prepared.plan.change, names(&["geo"]));
    assert_eq!(prepared.plan.needs_secret, names(&["geo"]));
    assert_eq!(password_of(&prepared.writes[0]), None);
}

#[test]
fn a_new_definition_with_a_redacted_secret_is_stored_without_it_and_reported() {
    let prepared = prepare_import(&[], &export(vec![jdbc("geo", "h", Some("source-pw"))], false));
    assert_eq!(prepared.plan.add, names(&["geo"]));
    assert_eq!(prepared.plan.needs_secret, names(&["geo"]));
    assert_eq!(password_of(&prepared.writes[0]), None);
    prepared.writes[0].validate().unwrap();
}

#[test]
fn an_existing_definition_without_a_secret_still_needs_one() {
    let prepared =
        prepare_import(&[jdbc("geo", "h", None)], &export(vec![jdbc("geo", "h", Some("pw"))], false));
    assert_eq!(prepared.plan.unchanged, names(&["geo"]));
    assert_eq!(prepared.plan.needs_secret, names(&["geo"]));
}

#[test]
fn an_export_with_secrets_carries_them_into_the_target() {
    let target = vec![jdbc("geo", "h", Some("old"))];
    let prepared = prepare_import(&target, &export(vec![jdbc("geo", "h", Some("new"))], true));
    assert_eq!(prepared.plan.change, names(&["geo"]));
    assert_eq!(password_of(&prepared.writes[0]), Some("new"));
}

#[test]
fn importing_the_writes_makes_a_second_import_a_no_op() {
    let source = vec![postal("a", "/a"), jdbc("b", "h", Some("pw")), postal("c", "/c")];
    let mut target = vec![postal("a", "/old"), jdbc("b", "h", Some("kept"))];
    let file = export(source, false);
    let prepared = prepare_import(&target, &file);
    for write in prepared.writes {
        target.retain(|d| d.name != write.name);
        target.push(write);
    }
    let again = plan_import(&target, &file);
    assert!(again.is_noop(), "{again:?}");
    assert_eq!(again.unchanged, names(&["a", "b", "c"]));
}

#[test]
fn export_files_are_validated_naming_the_field() {
    let file = export(vec![postal("a", "/a"), postal("b", "/b")], false);
    let mut value: serde_json::Value = serde_json::from_slice(&file.to_json_bytes().unwrap()).unwrap();

    let mut bad = value.clone();
    bad["resources"][1]["spec"]["location"]["path"] = "relative".into();
    let err = ExportFile::from_json_bytes(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
    assert!(
        matches!(&err, TransferError::Definition(e) if e.field() == "resources[1].spec.location.path"),
        "{err}"
    );

    let mut bad = value.clone();
    bad["resources"][1]["name"] = "a".into();
    let err = ExportFile::from_json_bytes(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
    assert!(matches!(&err, TransferError::DuplicateName { index: 1, .. }), "{err}");

    let mut bad = value.clone();
    bad["cluster"] = "not a cluster".into();
    let err = ExportFile::from_json_bytes(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
    assert!(matches!(&err, TransferError::Definition(e) if e.field() == "cluster"), "{err}");

    value["format_version"] = 2.into();
    let err = ExportFile::from_json_bytes(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(matches!(err, TransferError::UnsupportedVersion { found: 2, supported: 1 }));

    let err = ExportFile::from_json_bytes(b"[]").unwrap_err();
    assert!(matches!(&err, TransferError::Definition(e) if e.field() == "definition"), "{err}");
}
