//! Raw configuration entries, licenses and dataflows.

use axum::Extension;
use axum::extract::State;

use super::params::{
    Body, CreateParams, ListParams, Name, PutParams, ReadParams, WriteParams, after, json, query,
};
use super::{Answer, Api, ErrorBody, authorize};
use crate::auth::Caller;
use crate::management::{Rpc, check_read, license_name, may_read};
use crate::model::{
    Conflicts, Dataflow, Entries, Entry, KeyWritten, LicenseInfo, LicenseInstalled, NameWritten, TxnSpec,
    WriteReceipt,
};
use crate::namespace::Namespace;

/// Live entries, optionally under a prefix (resource definitions redacted).
#[utoipa::path(operation_id = "List", get, path = "/api/v1/config", tag = "config", params(ListParams),
    responses((status = 200, description = "OK", body = Entries), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn list(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::List, "").await?;
    let q: ListParams = query(&uri)?;
    let prefix = q.prefix.as_deref().unwrap_or_default();
    check_read(&caller, Rpc::List, prefix)?;
    if q.consistent.unwrap_or(false) {
        api.admin().barrier().await?;
    }
    let mut entries = api.admin().list(prefix, &after(q.min_version.as_deref())?).await?;
    entries.retain(|e| may_read(&caller, &e.key));
    Ok(api.json(&Entries(entries)))
}

/// Open conflicts, optionally under a prefix: writes to one key made on
/// different nodes without seeing each other (the key, the version, node and
/// time of the write kept and of the one it replaced). Values are not shown.
#[utoipa::path(operation_id = "ListConflicts", get, path = "/api/v1/conflicts", tag = "config", params(ListParams),
    responses((status = 200, description = "OK", body = Conflicts), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn conflicts(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::ListConflicts, "").await?;
    let q: ListParams = query(&uri)?;
    let prefix = q.prefix.as_deref().unwrap_or_default();
    check_read(&caller, Rpc::ListConflicts, prefix)?;
    let mut found = api.admin().conflicts(prefix, &after(q.min_version.as_deref())?).await?;
    found.0.retain(|c| may_read(&caller, &c.key));
    Ok(api.json(&found))
}

/// One entry.
#[utoipa::path(operation_id = "Get", get, path = "/api/v1/config/{key}", tag = "config",
    params(("key" = String, Path, description = "`namespace/name`, e.g. `settings/greeting`"), ReadParams),
    responses((status = 200, description = "OK", body = Entry), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(key): Name,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::Get, "").await?;
    check_read(&caller, Rpc::Get, &key)?;
    let q: ReadParams = query(&uri)?;
    if q.consistent.unwrap_or(false) {
        api.admin().barrier().await?;
    }
    Ok(api.json(&api.admin().get(&key, &q.after()?).await?))
}

/// Sets an entry to the request body (any bytes; JSON stays JSON when read).
#[utoipa::path(operation_id = "Put", put, path = "/api/v1/config/{key}", tag = "config",
    params(("key" = String, Path, description = "`namespace/name`"), PutParams),
    request_body(content = String, content_type = "application/octet-stream", description = "the value"),
    responses((status = 200, description = "OK", body = KeyWritten), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn put(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(key): Name,
    uri: http::Uri,
    Body(value): Body,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::Put, &key).await?;
    let op = async {
        let q: PutParams = query(&uri)?;
        match q.condition()? {
            None => Ok(api.admin().put(&key, value, q.level()).await?),
            Some(version) => Ok(api.admin().put_if(&key, value, version).await?),
        }
    };
    let write = api.policy.audited_op(&caller, Rpc::Put, &key, op).await?;
    Ok(api.json(&KeyWritten { key, deleted: false, write }))
}

/// Applies writes all together only if every condition holds (Raft mode;
/// `409 failed_precondition` otherwise, or when a condition fails).
#[utoipa::path(operation_id = "Txn", post, path = "/api/v1/txn", tag = "config",
    request_body(content = TxnSpec, description = "conditions and writes"),
    responses((status = 200, description = "OK", body = WriteReceipt), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn txn(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Body(body): Body,
) -> Answer {
    let spec: TxnSpec = json(&body)?;
    let target = spec.writes.first().map(|w| w.key.clone()).unwrap_or_default();
    let caller = authorize(&api, caller, Rpc::Txn, &target).await?;
    let op = async {
        let (conditions, writes) =
            spec.decode().map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(api.admin().transaction(conditions, writes).await?)
    };
    let write = api.policy.audited_op(&caller, Rpc::Txn, &target, op).await?;
    Ok(api.json(&write))
}

/// Deletes an entry.
#[utoipa::path(operation_id = "Delete", delete, path = "/api/v1/config/{key}", tag = "config",
    params(("key" = String, Path, description = "`namespace/name`"), WriteParams),
    responses((status = 200, description = "OK", body = KeyWritten), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn delete(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(key): Name,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::Delete, &key).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().delete(&key, q.level()).await?)
    };
    let write = api.policy.audited_op(&caller, Rpc::Delete, &key, op).await?;
    Ok(api.json(&KeyWritten { key, deleted: true, write }))
}

/// Every installed license, with its expiry.
#[utoipa::path(operation_id = "ListLicenses", get, path = "/api/v1/licenses", tag = "licenses", params(ReadParams),
    responses((status = 200, description = "OK", body = Vec<LicenseInfo>), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn licenses(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ShowLicense, "").await?;
    let after = query::<ReadParams>(&uri)?.after()?;
    let prefix = Namespace::License.prefix();
    let mut licenses = Vec::new();
    for entry in api.admin().list(prefix, &after).await? {
        let name = entry.key.strip_prefix(prefix).unwrap_or_default();
        licenses.push(api.admin().license(name, &crate::model::ReadAfter::Anything).await?);
    }
    Ok(api.json(&licenses))
}

/// One license (`main` is the default one).
#[utoipa::path(operation_id = "ShowLicense", get, path = "/api/v1/licenses/{name}", tag = "licenses",
    params(("name" = String, Path, description = "the license's name, `main` by default"), ReadParams),
    responses((status = 200, description = "OK", body = LicenseInfo), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn license(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ShowLicense, "").await?;
    let q: ReadParams = query(&uri)?;
    Ok(api.json(&api.admin().license(&name, &q.after()?).await?))
}

/// Installs a license document (`{"owner", "seats", "expires": "YYYY-MM-DD"}`);
/// an expired or malformed one is refused.
#[utoipa::path(operation_id = "SetLicense", put, path = "/api/v1/licenses/{name}", tag = "licenses",
    params(("name" = String, Path, description = "the license's name, `main` by default"), WriteParams),
    request_body(content = Object, description = "the license document"),
    responses((status = 200, description = "OK", body = LicenseInstalled), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn set_license(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
    Body(document): Body,
) -> Answer {
    let target = license_name(&name);
    let caller = authorize(&api, caller, Rpc::SetLicense, &target).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().set_license(&name, document, q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, Rpc::SetLicense, &target, op).await?))
}

/// Every dataflow definition.
#[utoipa::path(operation_id = "ListDataflows", get, path = "/api/v1/dataflows", tag = "dataflows", params(ReadParams),
    responses((status = 200, description = "OK", body = Vec<Dataflow>), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn dataflows(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ListDataflows, "").await?;
    let q: ReadParams = query(&uri)?;
    Ok(api.json(&api.admin().dataflows(&q.after()?).await?))
}

/// One dataflow definition.
#[utoipa::path(operation_id = "ShowDataflow", get, path = "/api/v1/dataflows/{name}", tag = "dataflows",
    params(("name" = String, Path, description = "the dataflow's name"), ReadParams),
    responses((status = 200, description = "OK", body = Dataflow), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn dataflow(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ShowDataflow, "").await?;
    let q: ReadParams = query(&uri)?;
    Ok(api.json(&api.admin().dataflow(&name, &q.after()?).await?))
}

/// Stores a dataflow definition (a JSON object); `?replace=true` to change an
/// existing one.
#[utoipa::path(operation_id = "CreateDataflow", put, path = "/api/v1/dataflows/{name}", tag = "dataflows",
    params(("name" = String, Path, description = "the dataflow's name"), CreateParams),
    request_body(content = Object, description = "the definition"),
    responses((status = 200, description = "OK", body = crate::model::schema::NameWritten), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_dataflow(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
    Body(definition): Body,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::CreateDataflow, &name).await?;
    let op = async {
        let q: CreateParams = query(&uri)?;
        let ack = super::params::WriteParams { ack: q.ack }.level();
        Ok(api.admin().create_dataflow(&name, definition, q.replace.unwrap_or(false), ack).await?)
    };
    let write = api.policy.audited_op(&caller, Rpc::CreateDataflow, &name, op).await?;
    Ok(api.json(&NameWritten { what: "dataflow", name, deleted: false, write }))
}

/// Deletes a dataflow.
#[utoipa::path(operation_id = "DeleteDataflow", delete, path = "/api/v1/dataflows/{name}", tag = "dataflows",
    params(("name" = String, Path, description = "the dataflow's name"), WriteParams),
    responses((status = 200, description = "OK", body = crate::model::schema::NameWritten), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_dataflow(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::DeleteDataflow, &name).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().delete_dataflow(&name, q.level()).await?)
    };
    let write = api.policy.audited_op(&caller, Rpc::DeleteDataflow, &name, op).await?;
    Ok(api.json(&NameWritten { what: "dataflow", name, deleted: true, write }))
}
