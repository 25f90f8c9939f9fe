//! Users of the management API, and the audit log.

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use tonic::Status;

use super::params::{AuditParams, Body, Name, NewUser, ReadParams, WriteParams, json, query};
use super::{Answer, Api, ErrorBody, authorize};
use crate::auth::Caller;
use crate::management::{Rpc, definition_name};
use crate::model::{AuditLog, AuditQuery, ReadAfter, UserRevoked, UserToken, Users};

/// Every user (never a token) (admin).
#[utoipa::path(operation_id = "ListUsers", get, path = "/api/v1/users", tag = "users", params(ReadParams),
    responses((status = 200, description = "OK", body = Users), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn list(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ListUsers, "").await?;
    let q: ReadParams = query(&uri)?;
    Ok(api.json(&api.admin().users(&q.after()?).await?))
}

/// Adds a user; the answer holds the user's token, shown this once (admin).
#[utoipa::path(operation_id = "AddUser", post, path = "/api/v1/users", tag = "users", params(WriteParams), request_body = NewUser,
    responses((status = 201, description = "added", body = UserToken), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn add(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
    Body(body): Body,
) -> Answer {
    let target = definition_name(&body);
    let caller = authorize(&api, caller, Rpc::AddUser, &target).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        let user: NewUser = json(&body)?;
        Ok(api.admin().add_user(&user.name, user.role, q.level()).await?)
    };
    let added = api.policy.audited_op(&caller, Rpc::AddUser, &target, op).await?;
    Ok(api.json_with(StatusCode::CREATED, &added))
}

/// Revokes a user's token (admin).
#[utoipa::path(operation_id = "RevokeUser", delete, path = "/api/v1/users/{name}", tag = "users",
    params(("name" = String, Path, description = "the user's name"), WriteParams),
    responses((status = 200, description = "OK", body = UserRevoked), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn revoke(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::RevokeUser, &name).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().revoke_user(&name, q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, Rpc::RevokeUser, &name, op).await?))
}

/// Gives a user a new token, shown this once; the old one stops working (admin).
#[utoipa::path(operation_id = "RotateUser", post, path = "/api/v1/users/{name}/rotate", tag = "users",
    params(("name" = String, Path, description = "the user's name"), WriteParams),
    responses((status = 200, description = "OK", body = UserToken), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn rotate(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(name): Name,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::RotateUser, &name).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().rotate_user(&name, q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, Rpc::RotateUser, &name, op).await?))
}

/// Audit records, newest first (operator).
#[utoipa::path(operation_id = "ListAudit", get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "OK", body = AuditLog), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn audit(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ListAudit, "").await?;
    let q: AuditParams = query(&uri)?;
    if q.limit == Some(0) {
        return Err(Status::invalid_argument("limit must be at least 1").into());
    }
    let query = AuditQuery {
        since_ms: q.since_ms.unwrap_or(0),
        user: q.user.filter(|u| !u.is_empty()),
        limit: q.limit,
        after: ReadAfter::Anything,
    };
    Ok(api.json(&api.admin().audit_log(&query).await?))
}
