//! Secrets never show in Debug, Display, redacted output or errors.

use spectrum_core::NodeId;
use spectrum_resources::{
    CompositeResolver, FileProtocol, FileServerSpec, JdbcSpec, ResourceDefinition, ResourceName,
    ResourceResolver, ResourceSpec, Secret, WebServiceSpec,
};

const SECRET: &str = "pa55-w0rd-never-shown";

fn every_kind_with_a_secret() -> Vec<ResourceDefinition> {
    let password = Some(Secret::new(SECRET));
    let specs = [
        ResourceSpec::Jdbc(JdbcSpec {
            user: Some("app".into()),
            password: password.clone(),
            ..JdbcSpec::new("jdbc:postgresql://127.0.0.1:1/x", "org.postgresql.Driver")
        }),
        ResourceSpec::FileServer(FileServerSpec {
            password: password.clone(),
            port: Some(1),
            ..FileServerSpec::remote(FileProtocol::Ftp, "127.0.0.1", "/pub")
        }),
        ResourceSpec::WebService(WebServiceSpec { password, ..WebServiceSpec::new("http://127.0.0.1:1/") }),
    ];
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| ResourceDefinition::new(ResourceName::new(format!("r{i}")).unwrap(), spec))
        .collect()
}

#[test]
fn debug_and_display_of_a_definition_never_contain_the_secret() {
    for def in every_kind_with_a_secret() {
        for text in [format!("{def}"), format!("{def:?}"), format!("{def:#?}"), format!("{:?}", def.spec)] {
            assert!(!text.contains(SECRET), "{text}");
        }
    }
}

#[test]
fn the_redacted_form_replaces_every_secret_and_still_validates() {
    for def in every_kind_with_a_secret() {
        let redacted = def.redacted();
        let bytes = redacted.to_json_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains(Secret::REDACTED));
        assert_eq!(ResourceDefinition::from_json_bytes(&bytes).unwrap(), redacted);
    }
}

#[test]
fn the_stored_form_keeps_the_secret_so_the_store_round_trips() {
    for def in every_kind_with_a_secret() {
        let back = ResourceDefinition::from_json_bytes(&def.to_json_bytes().unwrap()).unwrap();
        assert_eq!(back, def);
    }
}

#[tokio::test]
async fn availability_details_never_contain_the_secret() {
    let resolver = CompositeResolver::standard();
    let node = NodeId::new("n1").unwrap();
    for def in every_kind_with_a_secret() {
        let availability = resolver.check(&def, &node).await;
        assert!(!availability.detail.contains(SECRET), "{availability}");
        if let Err(err) = resolver.resolve(&def, &node).await {
            assert!(!err.to_string().contains(SECRET));
            assert!(!format!("{err:?}").contains(SECRET));
        }
    }
}
