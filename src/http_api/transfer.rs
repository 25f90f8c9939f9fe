//! Exports and imports (the whole configuration, or resource definitions), and
//! resealing secrets.

use axum::Extension;
use axum::extract::State;
use axum::response::IntoResponse;
use http::header;

use super::params::{Body, ImportParams, ReadParams, WriteParams, query};
use super::{Answer, Api, ErrorBody, authorize};
use crate::auth::Caller;
use crate::management::Rpc;
use crate::model::{ImportReport, ResealReport};

/// An export file as a download.
fn file(name: &str, bytes: Vec<u8>) -> axum::response::Response {
    let disposition = format!("attachment; filename=\"{name}\"");
    (
        [(header::CONTENT_TYPE, "application/json".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        bytes,
    )
        .into_response()
}

/// The whole configuration (licenses, dataflows, settings, resources with
/// secrets redacted) as one file, for `POST /api/v1/import/config`.
#[utoipa::path(operation_id = "ExportConfig", get, path = "/api/v1/export/config", tag = "transfer", params(ReadParams),
    responses((status = 200, description = "the export file", content_type = "application/json", body = Object),
        (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn export_config(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ExportConfig, "").await?;
    let q: ReadParams = query(&uri)?;
    let export = api.admin().export_config(&q.after()?).await?;
    Ok(file("spectrum-config.json", export.file))
}

/// Imports a whole-configuration file (`?dry_run=true` says what it would do);
/// every item is checked first and a bad one refuses the file naming it (admin).
#[utoipa::path(operation_id = "ImportConfig", post, path = "/api/v1/import/config", tag = "transfer", params(ImportParams),
    request_body(content = Object, description = "a file from GET /api/v1/export/config"),
    responses((status = 200, description = "OK", body = ImportReport), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn import_config(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
    Body(body): Body,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::ImportConfig, "").await?;
    let q: Result<ImportParams, _> = query(&uri);
    let dry_run = q.as_ref().is_ok_and(|q| q.dry_run.unwrap_or(false));
    let done = async {
        let q = q?;
        Ok(api.admin().import_config(&body, dry_run, WriteParams { ack: q.ack }.level()).await?)
    }
    .await;
    Ok(api.json(&api.policy.audited_import(&caller, Rpc::ImportConfig, dry_run, done).await?))
}

/// Every resource definition (secrets redacted) as one file.
#[utoipa::path(operation_id = "ExportResources", get, path = "/api/v1/export/resources", tag = "transfer", params(ReadParams),
    responses((status = 200, description = "the export file", content_type = "application/json", body = Object),
        (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn export_resources(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ExportResources, "").await?;
    let q: ReadParams = query(&uri)?;
    let export = api.admin().export_resources(&q.after()?).await?;
    Ok(file("spectrum-resources.json", export.file))
}

/// Imports resource definitions (`?dry_run=true` says what it would do) (admin).
#[utoipa::path(operation_id = "ImportResources", post, path = "/api/v1/import/resources", tag = "transfer", params(ImportParams),
    request_body(content = Object, description = "a file from GET /api/v1/export/resources"),
    responses((status = 200, description = "OK", body = ImportReport), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn import_resources(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
    Body(body): Body,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::ImportResources, "").await?;
    let q: Result<ImportParams, _> = query(&uri);
    let dry_run = q.as_ref().is_ok_and(|q| q.dry_run.unwrap_or(false));
    let done = async {
        let q = q?;
        Ok(api.admin().import_resources(&body, dry_run, WriteParams { ack: q.ack }.level()).await?)
    }
    .await;
    Ok(api.json(&api.policy.audited_import(&caller, Rpc::ImportResources, dry_run, done).await?))
}

/// Reseals every resource secret with the current cluster key (after a key
/// rotation) (admin).
#[utoipa::path(operation_id = "ResealSecrets", post, path = "/api/v1/reseal-secrets", tag = "resources", params(WriteParams),
    responses((status = 200, description = "OK", body = ResealReport), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn reseal(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::ResealSecrets, "resources").await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().reseal_secrets(q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, Rpc::ResealSecrets, "resources", op).await?))
}
