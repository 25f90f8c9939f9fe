//! Prometheus text exposition of the balancer's figures, and the optional admin
//! listener that serves it at `/metrics`, with the balancer's own gRPC service
//! (`Stats`) beside it.
//!
//! The renderer is written by hand: the figures already live in the pool's
//! atomics, and printing them is a few dozen lines, where the `prometheus` crate
//! would add a registry and a second copy of every counter.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::body::ProxyBody;
use crate::pool::Pool;
use crate::routing::StrategyInForce;
use crate::stats::service::{self, BalancerStatsService};
use crate::stats::{BackendStats, proto};

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value (backslash, double quote, new line).
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every figure of `pool` in the Prometheus text format.
pub(crate) fn render(pool: &Pool) -> String {
    let mut out = String::with_capacity(2_048);
    counters(&mut out, pool);
    strategy_info(&mut out, &pool.strategy());
    per_backend(&mut out, pool);
    out
}

/// The balancer-wide counters.
fn counters(out: &mut String, pool: &Pool) {
    let c = &pool.counters;
    for (name, help, value) in [
        ("spectrum_balancer_requests_total", "Requests received from clients.", &c.requests),
        ("spectrum_balancer_retries_total", "Attempts beyond the first one of a request.", &c.retries),
        (
            "spectrum_balancer_retry_budget_exhausted_total",
            "Failed requests not retried because the retry budget was spent.",
            &c.budget_exhausted,
        ),
        (
            "spectrum_balancer_no_backend_total",
            "Requests answered by the balancer because no backend could take them.",
            &c.no_backend,
        ),
        (
            "spectrum_balancer_request_too_large_total",
            "Requests refused because their body or header section was over the limit.",
            &c.too_large,
        ),
        (
            "spectrum_balancer_internal_refused_total",
            "Requests for an internal service of the cluster, refused by the balancer.",
            &c.internal_refused,
        ),
        (
            "spectrum_balancer_not_ready_retries_total",
            "Requests a node refused as not ready, sent to another node.",
            &c.not_ready_retries,
        ),
        (
            "spectrum_balancer_connections_refused_total",
            "Client connections refused because max_connections were open.",
            &c.connections_refused,
        ),
        (
            "spectrum_balancer_strategy_faults_total",
            "Requests answered INTERNAL because the balancing strategy broke its contract (an index out of range, a panic).",
            &c.strategy_faults,
        ),
    ] {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
}

/// Every backend's figures, one family per figure.
fn per_backend(out: &mut String, pool: &Pool) {
    let stats = pool.stats();
    let labels: Vec<String> =
        stats.iter().map(|s| format!("node=\"{}\",addr=\"{}\"", label(s.id.as_str()), s.addr)).collect();
    type Figure = fn(&BackendStats) -> String;
    let figures: [(&str, &str, &str, Figure); 8] = [
        ("spectrum_balancer_backend_requests_total", "counter", "Requests sent to the backend.", |s| {
            s.requests.to_string()
        }),
        (
            "spectrum_balancer_backend_failures_total",
            "counter",
            "Failed requests and connection attempts.",
            |s| s.failures.to_string(),
        ),
        (
            "spectrum_balancer_backend_retries_total",
            "counter",
            "Requests that failed on the backend and were sent to another.",
            |s| s.retries.to_string(),
        ),
        ("spectrum_balancer_backend_in_flight", "gauge", "Requests whose responses have not ended.", |s| {
            s.in_flight.to_string()
        }),
        (
            "spectrum_balancer_backend_latency_ewma_seconds",
            "gauge",
            "Moving average of the time to response headers.",
            |s| format!("{}", s.latency_ewma_us as f64 / 1e6),
        ),
        (
            "spectrum_balancer_backend_healthy",
            "gauge",
            "1 when the backend may take requests (health checks pass, not ejected).",
            |s| u8::from(s.healthy).to_string(),
        ),
        ("spectrum_balancer_backend_ejected", "gauge", "1 while the backend is passively ejected.", |s| {
            u8::from(s.ejected).to_string()
        }),
        ("spectrum_balancer_backend_draining", "gauge", "1 while the backend is draining.", |s| {
            u8::from(s.draining).to_string()
        }),
    ];
    for (name, kind, help, figure) in figures {
        family(out, name, kind, help);
        for (s, l) in stats.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", figure(s));
        }
    }
}

/// The strategy in force as an info gauge: always 1, its labels say which and
/// from where.
fn strategy_info(out: &mut String, strategy: &StrategyInForce) {
    let name = "spectrum_balancer_strategy_info";
    family(
        out,
        name,
        "gauge",
        "The strategy in force (labels) and where it comes from: configured or database.",
    );
    let _ = writeln!(
        out,
        "{name}{{strategy=\"{}\",hash_key=\"{}\",source=\"{}\"}} 1",
        label(&strategy.name),
        label(strategy.hash_key.as_deref().unwrap_or("")),
        strategy.source
    );
}

fn answer(pool: &Pool, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut resp = if req.uri().path() != "/metrics" {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"not found; try /metrics\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"use GET\n")));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp
    } else {
        let mut resp = Response::new(Full::new(Bytes::from(render(pool))));
        resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(CONTENT_TYPE));
        return resp;
    };
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    resp
}

/// Serves `/metrics` and the balancer's own gRPC service (`stats`) on `listener`
/// until aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    stats: proto::balancer_server::BalancerServer<BalancerStatsService>,
) {
    let server = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "metrics accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let pool = pool.clone();
        let server = server.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let pool = pool.clone();
                let stats = stats.clone();
                async move {
                    let resp: Response<ProxyBody> =
                        if req.uri().path().as_bytes().starts_with(service::PATH_PREFIX) {
                            service::answer(&stats, req.map(crate::body::ClientBody::Hyper)).await
                        } else {
                            answer(&pool, &req).map(|body| body.map_err(|never| match never {}).boxed())
                        };
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(error) = server.serve_connection(TokioIo::new(stream), service).await {
                debug!(%peer, %error, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }
}
