//! `GET /healthz` and `GET /readyz`: readiness over plain HTTP, for balancers and
//! orchestrators that do not speak gRPC (HAProxy's `option httpchk`, Kubernetes
//! probes). Served on the node's public port beside its gRPC services.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};

use super::Readiness;

/// The liveness path: 200 while the process runs.
pub const HEALTHZ: &str = "/healthz";
/// The readiness path: 200 when ready, else 503 naming what fails.
pub const READYZ: &str = "/readyz";

/// The two endpoints, to merge into the node's router.
pub(crate) fn routes(readiness: Arc<Readiness>) -> axum::Router {
    axum::Router::new().route(HEALTHZ, get(healthz)).route(
        READYZ,
        get(move || {
            let readiness = readiness.clone();
            async move { readyz(&readiness) }
        }),
    )
}

async fn healthz() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok\n").into_response()
}

/// 200 or 503 with the [`ReadinessReport`](super::ReadinessReport) as JSON.
fn readyz(readiness: &Readiness) -> Response {
    let report = readiness.report();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::to_vec(&report).unwrap_or_default();
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
