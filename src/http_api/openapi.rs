//! The API's OpenAPI document, derived from the handlers' `#[utoipa::path]`
//! annotations and the model types' `ToSchema` derives.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{balancer, config, nodes, resources, transfer, users, watch};

/// The OpenAPI 3.1 document of `/api/v1`, served at
/// [`OPENAPI_PATH`](super::OPENAPI_PATH).
///
/// ```
/// use utoipa::OpenApi;
/// let doc = spectrum::http_api::ApiDoc::openapi();
/// assert!(doc.paths.paths.contains_key("/api/v1/resources"));
/// ```
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Spectrum management API",
        description = "The HTTP/JSON form of the gRPC management API: the same operations, roles, audit log \
                       and error messages. Send `Authorization: Bearer <token>`."
    ),
    paths(
        nodes::status,
        nodes::drain,
        nodes::undrain,
        nodes::remove,
        config::list,
        config::conflicts,
        config::get,
        config::put,
        config::txn,
        config::delete,
        config::licenses,
        config::license,
        config::set_license,
        config::dataflows,
        config::dataflow,
        config::create_dataflow,
        config::delete_dataflow,
        resources::list,
        resources::show,
        resources::create,
        resources::delete,
        resources::check,
        users::list,
        users::add,
        users::revoke,
        users::rotate,
        users::audit,
        transfer::export_config,
        transfer::import_config,
        transfer::export_resources,
        transfer::import_resources,
        transfer::reseal,
        balancer::show,
        balancer::set_strategy,
        balancer::clear_strategy,
        balancer::set_weight,
        balancer::clear_weight,
        watch::watch,
        balancer::stats,
    ),
    components(schemas(super::Ack, crate::auth::Role)),
    modifiers(&BearerToken),
    tags(
        (name = "nodes", description = "status and members"),
        (name = "config", description = "raw configuration entries"),
        (name = "balancer", description = "the strategy and weights every balancer follows"),
        (name = "licenses"),
        (name = "dataflows"),
        (name = "resources", description = "external resources; secrets are write-only"),
        (name = "users", description = "users of the management API"),
        (name = "audit", description = "every management write"),
        (name = "transfer", description = "export and import"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the operations name.
#[derive(Debug)]
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document as JSON, with this crate's version.
pub(super) fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::management::Rpc;

    fn operation_ids() -> Vec<String> {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let operations = paths.values().flat_map(|p| p.as_object().unwrap().values());
        operations.filter_map(|op| op["operationId"].as_str().map(str::to_owned)).collect()
    }

    #[test]
    fn every_grpc_call_has_an_http_operation_of_the_same_name_and_ids_are_unique() {
        let ids = operation_ids();
        let unique: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(unique.len(), ids.len(), "operation ids repeat: {ids:?}");
        for rpc in Rpc::ALL {
            let expected: &[&str] = match rpc {
                Rpc::SetNodeState => &["DrainNode", "UndrainNode"],
                Rpc::RemoveNode => &["RemoveNode"],
                Rpc::ReplaceResource => &["CreateResource"],
                other => &[other.name()],
            };
            for id in expected {
                assert!(unique.contains(id), "{rpc:?} has no HTTP operation {id}");
            }
        }
    }
}
