//! The management API over HTTP/JSON, at `/api/v1/…` on every node's public port
//! (so through the balancer too), beside the gRPC [`management`](crate::management)
//! service: the same operations ([`Admin`]), the same callers and roles
//! ([`BearerAuth`], [`Rpc::required_role`]), the same audit log
//! ([`Rpc::is_write`]) and the same error messages. The browser
//! [console](crate::console) is built on it.
//!
//! | method and path | operation ([`Rpc`]) |
//! |---|---|
//! | `GET /api/v1/status` | `Status` |
//! | `GET /api/v1/config?prefix=` | `List` |
//! | `GET`, `PUT`, `DELETE /api/v1/config/{key}` | `Get` (`?consistent=true`: linearizable, Raft mode), `Put` (the body is the value; `?if_version=`/`?if_absent=true`: compare-and-set, Raft mode), `Delete` |
//! | `POST /api/v1/txn` | `Txn` (a [`TxnSpec`](crate::model::TxnSpec); Raft mode) |
//! | `GET /api/v1/licenses`, `GET`, `PUT /api/v1/licenses/{name}` | `ShowLicense`, `SetLicense` |
//! | `GET /api/v1/dataflows`, `GET`, `PUT`, `DELETE /api/v1/dataflows/{name}` | `ListDataflows`, `ShowDataflow`, `CreateDataflow`, `DeleteDataflow` |
//! | `GET`, `POST /api/v1/resources`, `GET`, `DELETE /api/v1/resources/{name}` | `ListResources`, `CreateResource`, `ShowResource`, `DeleteResource` |
//! | `GET /api/v1/resource-checks` | `CheckResources` |
//! | `POST /api/v1/nodes/{id}/drain`, `…/undrain`, `…/remove` | `SetNodeState`, `RemoveNode` |
//! | `GET`, `POST /api/v1/users`, `DELETE /api/v1/users/{name}`, `POST /api/v1/users/{name}/rotate` | `ListUsers`, `AddUser`, `RevokeUser`, `RotateUser` |
//! | `GET /api/v1/audit` | `ListAudit` |
//! | `GET /api/v1/watch?prefix=&from=` | `Watch`, as newline-delimited JSON (one event per line, as they happen) |
//! | `GET /api/v1/export/config`, `POST /api/v1/import/config` | `ExportConfig`, `ImportConfig` |
//! | `GET /api/v1/export/resources`, `POST /api/v1/import/resources` | `ExportResources`, `ImportResources` |
//! | `POST /api/v1/reseal-secrets` | `ResealSecrets` |
//! | `GET /api/v1/openapi.json` | the OpenAPI document (no token needed) |
//! | `GET /api/v1/balancer/stats` | the balancer's own figures, answered by the balancer (a node answers `404`) |
//!
//! Answers are the [`model`](crate::model) types as JSON (the `spectrum --json`
//! shapes), with the answering node in the `spectrum-served-by` header (on
//! every answer, refusals and errors included).
//! Writes take `?ack=local|quorum|all` (default `quorum`), reads
//! `?min_version=<token>` (read-your-writes through the balancer). A write may
//! carry an `Idempotency-Key` header, so that sending it again after an answer
//! that left its outcome unknown applies it once (Raft mode; see
//! [`idempotency`]); a bad or repeated one is 400.
//!
//! # Errors
//!
//! `{"error": {"code": "...", "message": "..."}}` ([`ErrorBody`]), where `code` is
//! the gRPC code of the same call in snake case and `message` the gRPC message;
//! the HTTP status follows [`http_status`]: a missing or wrong token is 401, a
//! role too low 403 naming the role needed, bad input 400 naming the field at
//! fault (malformed JSON, an unknown query parameter), a body over the limit 413.

mod balancer;
mod config;
mod error;
mod nodes;
mod openapi;
mod params;
mod resources;
mod transfer;
mod users;
mod watch;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

pub use error::{ApiError, ErrorBody, ErrorDetail, http_status};
pub use openapi::ApiDoc;
pub use params::{
    Ack, AuditParams, CheckParams, CreateParams, ImportParams, ListParams, NewUser, PutParams, ReadParams,
    WriteParams,
};
pub use watch::{NDJSON, WatchParams};

use crate::admin::Admin;
use crate::auth::BearerAuth;
use crate::management::{Policy, Rpc, idempotency};

/// Where the API lives.
pub const PREFIX: &str = "/api/v1";
/// The OpenAPI document's path.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// The response header naming the node that answered.
pub const SERVED_BY: &str = "spectrum-served-by";

/// One node's HTTP/JSON API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    policy: Policy,
    auth: BearerAuth,
}

impl Api {
    fn admin(&self) -> &Admin {
        self.policy.admin()
    }

    /// `value` as a JSON answer with `status`.
    fn json_with<T: Serialize>(&self, status: StatusCode, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Err(e) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response()
            }
        }
    }

    /// `value` as a 200 JSON answer.
    fn json<T: Serialize>(&self, value: &T) -> Response {
        self.json_with(StatusCode::OK, value)
    }
}

/// What the handlers return.
type Answer = Result<Response, ApiError>;

/// The API's routes for the node `admin` runs on, with callers identified by
/// `auth` and request bodies of at most `max_body_bytes`, to merge into the node's
/// router.
pub(crate) fn routes(admin: Admin, auth: BearerAuth, max_body_bytes: usize) -> axum::Router {
    let served_by =
        HeaderValue::from_str(admin.context().id.as_str()).unwrap_or_else(|_| HeaderValue::from_static("?"));
    let api = Api { policy: Policy::new(admin), auth };
    let document: Arc<str> = openapi::document().into();
    let protected = axum::Router::new()
        .route("/status", get(nodes::status))
        .route("/nodes/{id}/drain", post(nodes::drain))
        .route("/nodes/{id}/undrain", post(nodes::undrain))
        .route("/nodes/{id}/remove", post(nodes::remove))
        .route("/config", get(config::list))
        .route("/conflicts", get(config::conflicts))
        .route("/config/{*key}", get(config::get).put(config::put).delete(config::delete))
        .route("/txn", post(config::txn))
        .route("/licenses", get(config::licenses))
        .route("/licenses/{name}", get(config::license).put(config::set_license))
        .route("/dataflows", get(config::dataflows))
        .route(
            "/dataflows/{name}",
            get(config::dataflow).put(config::create_dataflow).delete(config::delete_dataflow),
        )
        .route("/resources", get(resources::list).post(resources::create))
        .route("/resources/{name}", get(resources::show).delete(resources::delete))
        .route("/resource-checks", get(resources::check))
        .route("/users", get(users::list).post(users::add))
        .route("/users/{name}", axum::routing::delete(users::revoke))
        .route("/users/{name}/rotate", post(users::rotate))
        .route("/audit", get(users::audit))
        .route("/watch", get(watch::watch))
        .route("/export/config", get(transfer::export_config))
        .route("/import/config", post(transfer::import_config))
        .route("/export/resources", get(transfer::export_resources))
        .route("/import/resources", post(transfer::import_resources))
        .route("/reseal-secrets", post(transfer::reseal))
        .route("/balancer", get(balancer::show))
        .route(
            "/balancer/strategy",
            axum::routing::put(balancer::set_strategy).delete(balancer::clear_strategy),
        )
        .route(
            "/balancer/weights/{name}",
            axum::routing::put(balancer::set_weight).delete(balancer::clear_weight),
        )
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api);
    let open = axum::Router::new().route(
        "/openapi.json",
        get(move || {
            let document = document.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], document.to_string()) }
        }),
    );
    let api = protected.merge(open).fallback(no_route).method_not_allowed_fallback(no_method);
    // Every answer names its node, refusals and errors included.
    axum::Router::new().nest(PREFIX, api).layer(axum::middleware::map_response(
        move |mut answer: Response| {
            answer.headers_mut().insert(SERVED_BY, served_by.clone());
            std::future::ready(answer)
        },
    ))
}

/// Identifies the caller ([`BearerAuth::authenticate`]) before anything else is
/// read, as the gRPC interceptor does: `401` otherwise.
async fn authenticate(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    match api.auth.authenticate_credential(request.headers()) {
        Ok((caller, credential)) => {
            let key = match idempotency::from_headers(request.headers()) {
                Ok(key) => key,
                Err(e) => {
                    return ApiError::from(tonic::Status::invalid_argument(e.to_string())).into_response();
                }
            };
            request.extensions_mut().insert(caller.clone());
            request.extensions_mut().insert(credential);
            idempotency::scope(key, &caller, next.run(request)).await
        }
        Err(status) => ApiError::from(status).into_response(),
    }
}

/// The API's fallback: it sees the path without [`PREFIX`] (it is nested
/// there), and names the whole path asked for.
async fn no_route(uri: http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such API path: {PREFIX}{}", uri.path()))
}

async fn no_method(method: http::Method, uri: http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Checks `caller` for `rpc` (a refused write is audited on `target`).
async fn authorize(
    api: &Api,
    caller: crate::auth::Caller,
    rpc: Rpc,
    target: &str,
) -> Result<crate::auth::Caller, ApiError> {
    Ok(api.policy.authorize(caller, rpc, target).await?)
}
