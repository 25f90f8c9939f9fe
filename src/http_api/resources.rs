//! Resource definitions (secrets write-only) and their availability.

use axum::Extension;
use axum::extract::State;
use axum::response::IntoResponse;
use tonic::Status;

use super::params::{Body, CheckParams, CreateParams, Name, ReadParams, WriteParams, bearer, query};
use super::{Answer, Api, ErrorBody, authorize};
use crate::auth::Caller;
use crate::management::{Rpc, definition_name};
use crate::model::{NameWritten, ResourceChecks, ResourceInfo, ResourceStored, Resources};

/// Every resource definition, secrets redacted.
#[utoipa::path(operation_id = "ListResources", get, path = "/api/v1/resources", tag = "resources", params(ReadParams),
    responses((status = 200, description = "OK", body = Resources), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn list(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ListResources, "").await?;
    let q: ReadParams = query(&uri)?;
    Ok(api.json(&Resources(api.admin().resources(&q.after()?).await?)))
}

/// One resource definition, secrets redacted.
#[utoipa::path(operation_id = "ShowResource", get, path = "/api/v1/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "the resource's name"), ReadParams),
    responses((status = 200, description = "OK", body = ResourceInfo), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn show(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ShowResource, "").await?;
    let q: ReadParams = query(&uri)?;
    Ok(api.json(&api.admin().resource(&name, &q.after()?).await?))
}

/// Stores a resource definition (`{"name", "description"?, "spec": {"kind", …}}`);
/// its secrets are sealed with the cluster key and never returned. A bad field is
/// `400` naming it (`invalid resource definition: spec.url: …`); `?replace=true`
/// to change an existing one.
#[utoipa::path(operation_id = "CreateResource", post, path = "/api/v1/resources", tag = "resources", params(CreateParams),
    request_body(content = Object, description = "the definition"),
    responses((status = 200, description = "OK", body = ResourceStored), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn create(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
    Body(definition): Body,
) -> Answer {
    let target = definition_name(&definition);
    // A bad query is refused below, audited as the plain create.
    let replace = query::<CreateParams>(&uri).ok().and_then(|q| q.replace).unwrap_or(false);
    let rpc = if replace { Rpc::ReplaceResource } else { Rpc::CreateResource };
    let caller = authorize(&api, caller, rpc, &target).await?;
    let op = async {
        let q: CreateParams = query(&uri)?;
        let ack = WriteParams { ack: q.ack }.level();
        Ok(api.admin().create_resource(&definition, q.replace.unwrap_or(false), ack).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, rpc, &target, op).await?))
}

/// Deletes a resource definition.
#[utoipa::path(operation_id = "DeleteResource", delete, path = "/api/v1/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "the resource's name"), WriteParams),
    responses((status = 200, description = "OK", body = crate::model::schema::NameWritten), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::DeleteResource, &name).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().delete_resource(&name, q.level()).await?)
    };
    let write = api.policy.audited_op(&caller, Rpc::DeleteResource, &name, op).await?;
    Ok(api.json(&NameWritten { what: "resource", name, deleted: true, write }))
}

/// Whether each resource resolves and answers on every member (or on the
/// answering node only, with `?local=true`); a member that cannot be asked is
/// reported in its entry (operator).
#[utoipa::path(operation_id = "CheckResources", get, path = "/api/v1/resource-checks", tag = "resources", params(CheckParams),
    responses((status = 200, description = "OK", body = ResourceChecks), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn check(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    headers: http::HeaderMap,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::CheckResources, "").await?;
    let q: CheckParams = query(&uri)?;
    let names = q.names();
    let nodes = if q.local.unwrap_or(false) {
        for name in &names {
            spectrum_resources::ResourceName::new(name.as_str())
                .map_err(|e| Status::invalid_argument(format!("invalid resource name: {e}")))?;
        }
        vec![api.admin().check_local(&names).await?]
    } else {
        let after = super::params::after(q.min_version.as_deref())?;
        api.admin().check_everywhere(&names, &after, bearer(&headers)).await?
    };
    Ok(api.json(&ResourceChecks { nodes }).into_response())
}
