//! The bad-definition table: every case is refused, and the error names the field.

use serde_json::{Value, json};
use spectrum_resources::{DefinitionError, ResourceDefinition};

const PASSWORD: &str = "table-secret-pw";

fn jdbc(url: &str) -> Value {
    json!({"name": "orders", "spec": {"kind": "jdbc", "url": url, "driver": "org.postgresql.Driver", "password": PASSWORD}})
}

fn database(location: Value) -> Value {
    json!({"name": "postal", "spec": {"kind": "database", "category": "postal", "location": location}})
}

fn file_server(fields: Value) -> Value {
    let mut spec = json!({"kind": "file_server", "protocol": "sftp", "host": "files", "root": "/srv", "password": PASSWORD});
    for (k, v) in fields.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"name": "files", "spec": spec})
}

fn web(fields: Value) -> Value {
    let mut spec = json!({"kind": "web_service", "url": "https://api.example/v1", "password": PASSWORD});
    for (k, v) in fields.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"name": "api", "spec": spec})
}

fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let big = "x".repeat(5000);
    let enc = |v: Value| serde_json::to_vec(&v).unwrap();
    vec![
        ("not json", b"{not json".to_vec(), "definition"),
        ("an array", b"[1,2]".to_vec(), "definition"),
        ("missing name", enc(json!({"spec": {"kind": "jdbc"}})), "name"),
        ("name with a space", enc(json!({"name": "a b", "spec": {}})), "name"),
        ("name too long", enc(json!({"name": "n".repeat(129), "spec": {}})), "name"),
        ("missing spec", enc(json!({"name": "a"})), "spec"),
        ("spec not an object", enc(json!({"name": "a", "spec": "jdbc"})), "spec"),
        ("missing kind", enc(json!({"name": "a", "spec": {"url": "x"}})), "spec.kind"),
        ("unknown kind", enc(json!({"name": "a", "spec": {"kind": "teleporter"}})), "spec.kind"),
        ("kind not a string", enc(json!({"name": "a", "spec": {"kind": 7}})), "spec.kind"),
        ("jdbc url not jdbc", enc(jdbc("postgresql://db/x")), "spec.url"),
        ("jdbc url without database", enc(jdbc("jdbc:postgresql://db:5432")), "spec.url"),
        ("jdbc url port out of range", enc(jdbc("jdbc:postgresql://db:70000/x")), "spec.url"),
        ("jdbc url port zero", enc(jdbc("jdbc:postgresql://db:0/x")), "spec.url"),
        ("jdbc url without host", enc(jdbc("jdbc:postgresql:///x")), "spec.url"),
        ("jdbc url with a password", enc(jdbc("jdbc:postgresql://db/x?password=p")), "spec.url"),
        ("jdbc url with user info", enc(jdbc("jdbc:postgresql://u:p@db/x")), "spec.url"),
        ("jdbc url without a known port", enc(jdbc("jdbc:acme://db/x")), "spec.url"),
        (
            "jdbc url not a string",
            enc(json!({"name": "o", "spec": {"kind": "jdbc", "url": 5, "driver": "d"}})),
            "spec.url",
        ),
        ("jdbc url oversized", enc(jdbc(&format!("jdbc:postgresql://db/{big}"))), "spec.url"),
        (
            "jdbc missing driver",
            enc(json!({"name": "o", "spec": {"kind": "jdbc", "url": "jdbc:postgresql://db/x"}})),
            "spec.driver",
        ),
        (
            "jdbc driver not a class name",
            enc(
                json!({"name": "o", "spec": {"kind": "jdbc", "url": "jdbc:postgresql://db/x", "driver": "a b"}}),
            ),
            "spec.driver",
        ),
        (
            "jdbc empty password",
            enc(
                json!({"name": "o", "spec": {"kind": "jdbc", "url": "jdbc:postgresql://db/x", "driver": "d", "password": ""}}),
            ),
            "spec.password",
        ),
        (
            "jdbc user with a control character",
            enc(
                json!({"name": "o", "spec": {"kind": "jdbc", "url": "jdbc:postgresql://db/x", "driver": "d", "user": "a\u{7}"}}),
            ),
            "spec.user",
        ),
        (
            "jdbc user oversized",
            enc(
                json!({"name": "o", "spec": {"kind": "jdbc", "url": "jdbc:postgresql://db/x", "driver": "d", "user": big}}),
            ),
            "spec.user",
        ),
        (
            "database without location",
            enc(json!({"name": "p", "spec": {"kind": "database", "category": "postal"}})),
            "spec.location",
        ),
        (
            "database without category",
            enc(
                json!({"name": "p", "spec": {"kind": "database", "location": {"kind": "shared", "path": "/x"}}}),
            ),
            "spec.category",
        ),
        (
            "bad custom category",
            enc(
                json!({"name": "p", "spec": {"kind": "database", "category": "my cat", "location": {"kind": "shared", "path": "/x"}}}),
            ),
            "spec.category",
        ),
        (
            "unknown location kind",
            enc(database(json!({"kind": "cloud", "path": "/x"}))),
            "spec.location.kind",
        ),
        (
            "relative local path",
            enc(database(json!({"kind": "local", "path": "data/postal"}))),
            "spec.location.path",
        ),
        ("empty local path", enc(database(json!({"kind": "local", "path": ""}))), "spec.location.path"),
        ("missing local path", enc(database(json!({"kind": "local"}))), "spec.location.path"),
        (
            "oversized local path",
            enc(database(json!({"kind": "local", "path": format!("/{big}")}))),
            "spec.location.path",
        ),
        (
            "relative shared path",
            enc(database(json!({"kind": "shared", "path": "share"}))),
            "spec.location.path",
        ),
        (
            "relative override",
            enc(database(json!({"kind": "local", "path": "/d", "overrides": {"n2": "rel"}}))),
            "spec.location.overrides.n2",
        ),
        (
            "override for a bad node id",
            enc(database(json!({"kind": "local", "path": "/d", "overrides": {"bad node": "/x"}}))),
            "spec.location.overrides.bad node",
        ),
        ("file server port zero", enc(file_server(json!({"port": 0}))), "spec.port"),
        ("file server port too big", enc(file_server(json!({"port": 65536}))), "spec.port"),
        ("file server port negative", enc(file_server(json!({"port": -1}))), "spec.port"),
        ("file server port a string", enc(file_server(json!({"port": "22"}))), "spec.port"),
        ("file server unknown protocol", enc(file_server(json!({"protocol": "gopher"}))), "spec.protocol"),
        ("file server without host", enc(file_server(json!({"host": ""}))), "spec.host"),
        ("file server bad host", enc(file_server(json!({"host": "a..b"}))), "spec.host"),
        ("file server without root", enc(file_server(json!({"root": null}))), "spec.root"),
        (
            "local file server with host",
            enc(file_server(json!({"protocol": "local", "root": "/srv"}))),
            "spec.host",
        ),
        (
            "local file server with relative root",
            enc(file_server(json!({"protocol": "local", "host": "", "root": "srv"}))),
            "spec.root",
        ),
        ("web service ftp url", enc(web(json!({"url": "ftp://files/x"}))), "spec.url"),
        ("web service url with user info", enc(web(json!({"url": "https://u:p@api/x"}))), "spec.url"),
        ("web service url with a token", enc(web(json!({"url": "https://api/x?token=abc"}))), "spec.url"),
        ("web service url port out of range", enc(web(json!({"url": "http://api:123456/"}))), "spec.url"),
        ("web service zero timeout", enc(web(json!({"timeout_ms": 0}))), "spec.timeout_ms"),
        ("web service huge timeout", enc(web(json!({"timeout_ms": 86_400_000u64}))), "spec.timeout_ms"),
        ("oversized description", enc(json!({"name": "a", "description": big, "spec": {}})), "description"),
        (
            "whole definition too large",
            enc(json!({"name": "a", "pad": "x".repeat(70_000), "spec": {}})),
            "definition",
        ),
    ]
}

#[test]
fn every_bad_definition_is_refused_naming_its_field() {
    let mut failures = Vec::new();
    for (case, bytes, field) in cases() {
        match ResourceDefinition::from_json_bytes(&bytes) {
            Ok(def) => failures.push(format!("{case}: accepted as {def}")),
            Err(err) if err.field() != field => {
                failures.push(format!("{case}: field {:?}, expected {field:?} ({err})", err.field()))
            }
            Err(err) => {
                let text = err.to_string();
                assert!(text.starts_with(field), "{case}: message {text:?} does not lead with the field");
                assert!(!text.contains(PASSWORD), "{case}: the error shows the secret: {text}");
                assert!(!format!("{err:?}").contains(PASSWORD), "{case}: Debug shows the secret");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_unknown_kind_says_which_kinds_exist() {
    let err = ResourceDefinition::from_json_bytes(br#"{"name":"a","spec":{"kind":"ldap"}}"#).unwrap_err();
    assert!(matches!(&err, DefinitionError::UnknownKind { kind, .. } if kind == "ldap"), "{err:?}");
    assert!(err.to_string().contains("jdbc"), "{err}");
}

#[test]
fn a_definition_built_in_code_is_validated_before_encoding() {
    let def: ResourceDefinition = serde_json::from_value(json!({
        "name": "p", "spec": {"kind": "database", "category": "postal", "location": {"kind": "local", "path": "/d"}}
    }))
    .unwrap();
    let mut bad = def.clone();
    if let spectrum_resources::ResourceSpec::Database(db) = &mut bad.spec {
        db.location = spectrum_resources::DataLocation::local("relative");
    }
    assert_eq!(bad.to_json_bytes().unwrap_err().field(), "spec.location.path");
    assert!(def.to_json_bytes().is_ok());
}

#[test]
fn serde_deserialization_goes_through_the_same_validation() {
    let bytes = serde_json::to_vec(&jdbc("jdbc:postgresql://db:70000/x")).unwrap();
    let err = serde_json::from_slice::<ResourceDefinition>(&bytes).unwrap_err();
    assert!(err.to_string().contains("spec.url"), "{err}");
}

#[test]
fn a_malformed_password_is_refused_without_echoing_it() {
    let bytes = serde_json::to_vec(&json!({"name": "o", "spec": {
        "kind": "jdbc", "url": "jdbc:postgresql://db/x", "driver": "d", "password": 86_753_090
    }}))
    .unwrap();
    let err = ResourceDefinition::from_json_bytes(&bytes).unwrap_err();
    assert_eq!(err.field(), "spec.password");
    assert!(!err.to_string().contains("86753090"), "{err}");
}
