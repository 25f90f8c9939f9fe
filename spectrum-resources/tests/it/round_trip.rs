//! Any valid definition survives encoding and decoding; no input makes decoding panic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use spectrum_core::NodeId;
use spectrum_resources::definition::MAX_TIMEOUT_MS;
use spectrum_resources::{
    DataLocation, DatabaseCategory, DatabaseSpec, FileProtocol, FileServerSpec, JdbcSpec, ResourceDefinition,
    ResourceName, ResourceSpec, Secret, WebServiceSpec,
};

fn abs_path() -> impl Strategy<Value = PathBuf> {
    "(/[A-Za-z0-9._-]{1,12}){1,5}".prop_map(PathBuf::from)
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,15}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

fn user() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-z][a-z0-9_.@-]{0,20}")
}

fn password() -> impl Strategy<Value = Option<Secret>> {
    proptest::option::of("[ -~]{1,40}".prop_map(Secret::new))
}

fn category() -> impl Strategy<Value = DatabaseCategory> {
    prop_oneof![
        Just(DatabaseCategory::Postal),
        Just(DatabaseCategory::Geocoding),
        Just(DatabaseCategory::Spatial),
        "[a-z][a-z0-9._-]{0,30}"
            .prop_filter("not a built-in name", |s| !matches!(s.as_str(), "postal" | "geocoding" | "spatial"))
            .prop_map(DatabaseCategory::Custom),
    ]
}

fn location() -> impl Strategy<Value = DataLocation> {
    let overrides = proptest::collection::btree_map(
        "[a-z0-9-]{1,16}".prop_map(|s| NodeId::new(s).unwrap()),
        abs_path(),
        0..4,
    );
    prop_oneof![
        (abs_path(), overrides).prop_map(|(path, overrides)| DataLocation::Local { path, overrides }),
        abs_path().prop_map(DataLocation::shared),
    ]
}

fn jdbc_url() -> impl Strategy<Value = String> {
    let db = "[A-Za-z][A-Za-z0-9_-]{0,15}";
    let port = proptest::option::of(1u16..);
    prop_oneof![
        (prop::sample::select(vec!["postgresql", "mysql", "mariadb", "db2"]), host(), port.clone(), db)
            .prop_map(|(sub, host, port, db)| match port {
                Some(p) => format!("jdbc:{sub}://{host}:{p}/{db}"),
                None => format!("jdbc:{sub}://{host}/{db}"),
            }),
        // A property named like a credential (`pwd`) is refused by design: names start with x.
        (host(), 1u16.., db, proptest::option::of("x[a-z]{0,7}=[a-z0-9]{0,8}")).prop_map(
            |(host, port, db, prop)| {
                let extra = prop.map(|p| format!(";{p}")).unwrap_or_default();
                format!("jdbc:sqlserver://{host}:{port};databaseName={db}{extra}")
            }
        ),
    ]
}

fn spec() -> impl Strategy<Value = ResourceSpec> {
    let remote = prop::sample::select(vec![
        FileProtocol::Ftp,
        FileProtocol::Sftp,
        FileProtocol::Smb,
        FileProtocol::Http,
        FileProtocol::Https,
    ]);
    prop_oneof![
        (category(), location())
            .prop_map(|(category, location)| ResourceSpec::Database(DatabaseSpec { category, location })),
        (jdbc_url(), "[a-z]{1,8}(\\.[A-Za-z$_]{1,8}){0,3}", user(), password()).prop_map(
            |(url, driver, user, password)| ResourceSpec::Jdbc(JdbcSpec { url, driver, user, password })
        ),
        (remote, host(), proptest::option::of(1u16..), "[a-z]{1,8}(/[a-z0-9]{1,8}){0,3}", user(), password())
            .prop_map(|(protocol, host, port, root, user, password)| {
                ResourceSpec::FileServer(FileServerSpec { protocol, host, port, root, user, password })
            }),
        abs_path().prop_map(|root| ResourceSpec::FileServer(FileServerSpec::local(root.to_str().unwrap()))),
        (
            prop::sample::select(vec!["http", "https"]),
            host(),
            proptest::option::of(1u16..),
            "(/[a-z0-9]{1,8}){0,3}",
            1..=MAX_TIMEOUT_MS,
            user(),
            password()
        )
            .prop_map(|(scheme, host, port, path, timeout_ms, user, password)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                ResourceSpec::WebService(WebServiceSpec {
                    url: format!("{scheme}://{host}{port}{path}"),
                    timeout_ms,
                    user,
                    password,
                })
            }),
    ]
}

fn definition() -> impl Strategy<Value = ResourceDefinition> {
    ("[A-Za-z0-9._-]{1,128}", proptest::option::of("[A-Za-z][A-Za-z0-9 ,.\n-]{0,80}"), spec()).prop_map(
        |(name, description, spec)| ResourceDefinition {
            name: ResourceName::new(name).unwrap(),
            description,
            spec,
        },
    )
}

proptest! {
    #[test]
    fn any_valid_definition_survives_to_and_from_json_bytes(def in definition()) {
        prop_assert_eq!(def.validate(), Ok(()));
        let bytes = def.to_json_bytes().unwrap();
        prop_assert_eq!(&ResourceDefinition::from_json_bytes(&bytes).unwrap(), &def);
        prop_assert_eq!(&serde_json::from_slice::<ResourceDefinition>(&bytes).unwrap(), &def);
    }

    #[test]
    fn the_redacted_form_of_any_valid_definition_round_trips_without_real_secrets(def in definition()) {
        let redacted = def.redacted();
        let back = ResourceDefinition::from_json_bytes(&redacted.to_json_bytes().unwrap()).unwrap();
        prop_assert_eq!(&back, &redacted);
        let value: serde_json::Value = serde_json::from_slice(&redacted.to_json_bytes().unwrap()).unwrap();
        if let Some(password) = value["spec"].get("password") {
            prop_assert_eq!(password, Secret::REDACTED);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ResourceDefinition::from_json_bytes(&bytes);
    }

    #[test]
    fn decoding_a_definition_with_one_field_replaced_never_panics(
        def in definition(),
        field in prop::sample::select(vec!["url", "port", "host", "root", "path", "location", "category", "timeout_ms", "kind", "password"]),
        value in prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({"kind": "local"})),
            Just(serde_json::json!([1, 2])),
        ],
    ) {
        let mut json: serde_json::Value = serde_json::from_slice(&def.to_json_bytes().unwrap()).unwrap();
        json["spec"][field] = value;
        let bytes = serde_json::to_vec(&json).unwrap();
        if let Err(err) = ResourceDefinition::from_json_bytes(&bytes) {
            prop_assert!(err.field() == "definition" || err.field().starts_with("spec"), "{}", err);
        }
    }
}

#[test]
fn overrides_survive_a_round_trip_in_node_order() {
    let overrides: BTreeMap<NodeId, PathBuf> = [("b", "/b"), ("a", "/a")]
        .into_iter()
        .map(|(n, p)| (NodeId::new(n).unwrap(), PathBuf::from(p)))
        .collect();
    let def = ResourceDefinition::new(
        ResourceName::new("x").unwrap(),
        ResourceSpec::Database(DatabaseSpec {
            category: DatabaseCategory::Spatial,
            location: DataLocation::Local { path: "/d".into(), overrides },
        }),
    );
    let text = String::from_utf8(def.to_json_bytes().unwrap()).unwrap();
    assert!(text.find("\"a\"").unwrap() < text.find("\"b\"").unwrap(), "{text}");
    assert_eq!(ResourceDefinition::from_json_bytes(text.as_bytes()).unwrap(), def);
}
