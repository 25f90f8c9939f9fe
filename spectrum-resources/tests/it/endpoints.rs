//! Endpoint checks over TCP, on loopback only.

use std::time::Duration;

use spectrum_core::NodeId;
use spectrum_resources::{
    CompositeResolver, DataLocation, DatabaseCategory, DatabaseSpec, Endpoint, EndpointResolver,
    FileProtocol, FileServerSpec, JdbcSpec, Resolved, ResolverExt, ResourceDefinition, ResourceName,
    ResourceResolver, ResourceSpec, WebServiceSpec,
};
use tokio::net::TcpListener;

fn node() -> NodeId {
    NodeId::new("node-1").unwrap()
}

fn jdbc(name: &str, port: u16) -> ResourceDefinition {
    ResourceDefinition::new(
        ResourceName::new(name).unwrap(),
        ResourceSpec::Jdbc(JdbcSpec::new(
            format!("jdbc:postgresql://127.0.0.1:{port}/geo"),
            "org.postgresql.Driver",
        )),
    )
}

fn closed_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_listening_port_checks_available() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let resolver = EndpointResolver::new().with_connect_timeout(Duration::from_secs(2));
    let availability = resolver.check(&jdbc("db", port), &node()).await;
    assert!(availability.available, "{availability}");
    assert_eq!(availability.detail, format!("connected to 127.0.0.1:{port}"));
}

#[tokio::test]
async fn a_closed_port_checks_unavailable_and_says_where() {
    let port = closed_port();
    let availability = EndpointResolver::new().check(&jdbc("db", port), &node()).await;
    assert!(!availability.available);
    assert!(availability.detail.contains(&format!("127.0.0.1:{port}")), "{}", availability.detail);
}

#[tokio::test]
async fn resolving_an_endpoint_does_no_network_io() {
    let port = closed_port();
    let resolved = EndpointResolver::new().resolve(&jdbc("db", port), &node()).await.unwrap();
    assert_eq!(resolved, Resolved::Endpoint(Endpoint { host: "127.0.0.1".into(), port }));
}

#[tokio::test]
async fn ports_default_to_the_usual_one_for_the_protocol() {
    let def = |spec| ResourceDefinition::new(ResourceName::new("r").unwrap(), spec);
    let resolver = EndpointResolver::new();
    let cases = [
        (ResourceSpec::Jdbc(JdbcSpec::new("jdbc:mysql://db.internal/x", "com.mysql.Driver")), 3306),
        (ResourceSpec::FileServer(FileServerSpec::remote(FileProtocol::Smb, "files", "share")), 445),
        (ResourceSpec::WebService(WebServiceSpec::new("https://api.example/v1")), 443),
    ];
    for (spec, port) in cases {
        match resolver.resolve(&def(spec), &node()).await.unwrap() {
            Resolved::Endpoint(endpoint) => assert_eq!(endpoint.port, port),
            other => panic!("expected an endpoint, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_local_file_server_resolves_to_its_root_when_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_owned();
    let def = ResourceDefinition::new(
        ResourceName::new("files").unwrap(),
        ResourceSpec::FileServer(FileServerSpec::local(root.clone())),
    );
    let resolved = EndpointResolver::new().resolve(&def, &node()).await.unwrap();
    assert_eq!(resolved, Resolved::Path(root.into()));
    assert!(EndpointResolver::new().check(&def, &node()).await.available);
}

#[tokio::test]
async fn check_all_reports_every_resource_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let defs = [
        jdbc("up", open),
        jdbc("down", closed_port()),
        ResourceDefinition::new(
            ResourceName::new("postal").unwrap(),
            ResourceSpec::Database(DatabaseSpec {
                category: DatabaseCategory::Postal,
                location: DataLocation::local(dir.path()),
            }),
        ),
    ];
    let checks = CompositeResolver::standard().check_all(&defs, &node()).await;
    let summary: Vec<(&str, &str, bool)> =
        checks.iter().map(|c| (c.name.as_str(), c.kind.as_str(), c.availability.available)).collect();
    assert_eq!(summary, [("up", "jdbc", true), ("down", "jdbc", false), ("postal", "database", true)]);
}
