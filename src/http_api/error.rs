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
}

impl ApiError {
    /// An error with this HTTP `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.into() } },
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
        Self::new(http_status(status.code()), &snake_case(status.code()), status.message())
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
}
