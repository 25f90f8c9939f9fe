//! [`ApiError`]: an error of the HTTP/JSON API, as JSON with an HTTP status.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tonic::{Code, Status};
use utoipa::ToSchema;

use crate::admin::AdminError;

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, in an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The gRPC status code the same call gets from the gRPC API, in snake case
    /// (`invalid_argument`, `permission_denied`, `not_found`, …), or
    /// `payload_too_large` / `not_found` / `method_not_allowed` for requests
    /// that reach no operation.
    #[schema(example = "invalid_argument")]
    pub code: String,
    /// The message the gRPC API gives for the same call: it names the field or
    /// role at fault.
    #[schema(example = "invalid resource definition: spec.url: missing or empty")]
    pub message: String,
}

/// An error answer of the HTTP/JSON API: an HTTP status and an [`ErrorBody`].
/// Built from the gRPC [`Status`] the same call gets from the gRPC API, so both
/// APIs give the same code and message (see [`http_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// The node refused the call because it is not ready, before doing any of its
    /// work: the answer carries `spectrum-refused: not-ready`, and a balancer sends
    /// the call to another node (see [`spectrum_balancer::refusal`]).
    pub not_ready: bool,
}

impl ApiError {
    /// An error with this HTTP `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.into() } },
            not_ready: false,
        }
    }

    /// 400, `invalid_argument`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }
}

/// The HTTP status for a gRPC code (as Google's API design guide maps them,
/// except `FAILED_PRECONDITION`, which is 409: the request conflicts with the
/// state of the cluster, and `RESOURCE_EXHAUSTED`, which the management API
/// gives only for a full disk: 507).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// A gRPC code's name in snake case: `InvalidArgument` → `invalid_argument`.
fn snake_case(code: Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        let mut error = Self::new(http_status(status.code()), &snake_case(status.code()), status.message());
        error.not_ready = status
            .metadata()
            .get(spectrum_balancer::refusal::REFUSED_HEADER)
            .is_some_and(|v| v.as_encoded_bytes() == spectrum_balancer::refusal::NOT_READY.as_bytes());
        error
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        Status::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::to_vec(&self.body).unwrap_or_default();
        body.push(b'\n');
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if self.not_ready {
            spectrum_balancer::refusal::mark_not_ready(response.headers_mut());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_become_http_statuses_and_snake_case_codes() {
        let e = ApiError::from(Status::permission_denied("Put needs the admin role"));
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.body.error.code, "permission_denied");
        assert_eq!(e.body.error.message, "Put needs the admin role");
        assert_eq!(ApiError::from(Status::unauthenticated("x")).status, StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::from(Status::already_exists("x")).body.error.code, "already_exists");
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::CONFLICT);
        assert_eq!(snake_case(Code::Ok), "ok");
    }

    #[test]
    fn an_unauthenticated_answer_asks_for_a_bearer_token_in_json() {
        let response = ApiError::from(Status::unauthenticated("missing bearer token")).into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn a_not_ready_refusal_is_marked_for_the_balancer_in_both_apis_and_other_errors_are_not() {
        let node: spectrum_core::NodeId = "node-1".parse().unwrap();
        let status = Status::from(AdminError::CatchingUp { node: node.clone(), why: String::new() });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get("spectrum-refused").unwrap(), "not-ready");
        let response =
            ApiError::from(AdminError::CatchingUp { node: node.clone(), why: String::new() }).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(spectrum_balancer::refusal::is_not_ready(response.status(), response.headers()));

        let fenced = AdminError::ClockFenced { node, reason: "800 ms ahead".into() };
        let response = ApiError::from(fenced).into_response();
        assert!(spectrum_balancer::refusal::is_not_ready(response.status(), response.headers()));

        // A store that could not take a write (here a full disk) stored nothing.
        let full = || spectrum_replication::StoreError::Storage {
            subject: "config.redb".into(),
            verb: "commit a write to",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::StorageFull)),
        };
        let status = Status::from(AdminError::Unwritable(full()));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get("spectrum-refused").unwrap(), "not-ready");
        let response = ApiError::from(AdminError::Unwritable(full())).into_response();
        assert!(spectrum_balancer::refusal::is_not_ready(response.status(), response.headers()));
        let failed = Status::from(AdminError::Store(full()));
        assert!(failed.metadata().get("spectrum-refused").is_none(), "not known to be before the work");

        let internal = Status::from(AdminError::Internal { reason: "the store applied no records".into() });
        assert!(internal.metadata().get("spectrum-refused").is_none(), "work was done: not marked");
        let response = ApiError::from(Status::unavailable("x")).into_response();
        assert!(response.headers().get("spectrum-refused").is_none());
    }
}
