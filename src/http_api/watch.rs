//! `GET /api/v1/watch`: the `Watch` call as newline-delimited JSON.

use std::convert::Infallible;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use futures::StreamExt;
use http::{StatusCode, header};
use serde::Deserialize;
use tonic::Status;
use utoipa::IntoParams;

use super::params::{ReadParams, query};
use super::{Answer, Api, ApiError, ErrorBody, authorize};
use crate::auth::Caller;
use crate::management::{Rpc, check_read, may_see};
use crate::watch::{WatchEvent, WatchPosition};

/// The media type of the answer: one JSON value per line.
pub const NDJSON: &str = "application/x-ndjson";

/// Parameters of a watch.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchParams {
    /// Keys starting with this (every key when absent).
    pub prefix: Option<String>,
    /// Resume position from an earlier event (`origin@index/seen`); from now when absent.
    pub from: Option<String>,
    /// Start only once the answering node holds every write of this session.
    pub session: Option<String>,
    /// How long the node may wait for the session, in ms.
    pub wait_ms: Option<u32>,
}

/// Follows the changes under a prefix as they are applied. The answer is a stream
/// of newline-delimited JSON: one event per line (`kind` put, delete or
/// progress, `key`, `value` with resource definitions redacted, `version`,
/// `position` to resume from with `from`); a stream that fails ends with one
/// line `{"error": {"code", "message"}}`.
#[utoipa::path(operation_id = "Watch", get, path = "/api/v1/watch", tag = "config", params(WatchParams),
    responses((status = 200, description = "one event per line, as they happen (newline-delimited JSON)", content_type = "application/x-ndjson", body = WatchEvent),
        (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn watch(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    credential: Option<Extension<crate::auth::Credential>>,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::Watch, "").await?;
    let q: WatchParams = query(&uri)?;
    check_read(&caller, Rpc::Watch, q.prefix.as_deref().unwrap_or_default())?;
    let from = q
        .from
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(|f| f.parse::<WatchPosition>().map_err(|e| Status::invalid_argument(format!("from: {e}"))))
        .transpose()?;
    let read = ReadParams { min_version: None, session: q.session, wait_ms: q.wait_ms, consistent: None };
    let events = api.admin().watch(q.prefix.as_deref().unwrap_or_default(), from, &read.after()?).await?;
    // Checked at every event, those the caller may not see included (a
    // revocation is one, under users/): a revoked token's watch ends with
    // its refusal as the last line.
    let events = events.map(|event| event.map_err(Status::from));
    let events = crate::auth::until_invalid(events, credential.map(|Extension(c)| c), Err);
    let lines = events.filter(move |event| may_see(&caller, event)).map(|event| {
        let mut line = match event {
            Ok(event) => serde_json::to_vec(&event),
            Err(status) => serde_json::to_vec(&ApiError::from(status).body),
        }
        .unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(line)
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, NDJSON)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(lines))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}
