//! The balancer's JSON figures at [`JSON_PATH`](crate::stats::json::JSON_PATH),
//! answered on the public port to the callers the cluster's HTTP API admits.
//!
//! Who may read them is decided as the API decides: the balancer sends the
//! caller's `Authorization` header to a node on `GET /api/v1/balancer` (the
//! balancer settings, which any role may read) and answers the figures when the
//! node does; a `401` or `403` from the node is passed on as it is (the API's JSON
//! error). So a viewer's token works, a revoked one stops working, and a cluster in
//! development mode (no tokens) shows them to anyone, exactly as its API does. An
//! admitted header is remembered for [`ADMITTED_FOR`], so the console's polling
//! costs the nodes one check per token every few seconds. The balancer's own
//! [`stats_token`](crate::BalancerConfig::stats_token) is admitted without asking.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use parking_lot::Mutex;
use tracing::debug;

use super::{Prepared, Proxy, Template};
use crate::body::{ClientBody, ProxyBody};
use crate::replay::RequestBody;
use crate::stats::json;

/// How long a header the nodes admitted is admitted without asking again.
pub(crate) const ADMITTED_FOR: Duration = Duration::from_secs(10);
/// Most headers remembered at once (the oldest half is forgotten beyond it).
const MAX_ADMITTED: usize = 256;
/// The API path whose answer decides: the balancer settings, readable by any role.
const PROBE_PATH: &str = "/api/v1/balancer";
/// Longest a node may take to answer the check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `Authorization` headers the nodes admitted lately, with when they did.
#[derive(Debug, Default)]
pub(crate) struct Admitted(Mutex<HashMap<Option<HeaderValue>, Instant>>);

impl Admitted {
    fn contains(&self, auth: &Option<HeaderValue>) -> bool {
        self.0.lock().get(auth).is_some_and(|at| at.elapsed() < ADMITTED_FOR)
    }

    fn insert(&self, auth: Option<HeaderValue>) {
        let mut map = self.0.lock();
        if map.len() >= MAX_ADMITTED {
            map.retain(|_, at| at.elapsed() < ADMITTED_FOR);
        }
        if map.len() >= MAX_ADMITTED {
            map.clear();
        }
        map.insert(auth, Instant::now());
    }
}

/// A JSON answer of the balancer's own.
fn json_answer(status: StatusCode, body: Vec<u8>) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-spectrum-balancer", HeaderValue::from_static("local"));
    resp
}

/// The API's error shape, `{"error": {"code", "message"}}`.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    json_answer(status, serde_json::to_vec(&body).unwrap_or_default())
}

impl Proxy {
    /// Answers `GET` (or `HEAD`) [`json::JSON_PATH`] with the balancer's figures,
    /// to callers the nodes admit.
    pub(super) async fn stats_json(
        &self,
        req: Request<ClientBody>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the balancer's figures are read-only: use GET",
            );
        }
        if let Err(refusal) = self.admit(req.headers()).await {
            debug!(%client, status = refusal.status().as_u16(), "balancer figures refused");
            return refusal;
        }
        let stats = crate::stats::BalancerStatsService::new(self.pool.clone()).stats();
        json_answer(StatusCode::OK, json::render(&stats))
    }

    /// `Ok` when the caller may read the figures; `Err` is the refusal to answer.
    pub(super) async fn admit(&self, headers: &HeaderMap) -> Result<(), Response<ProxyBody>> {
        let config = self.pool.config();
        match &config.stats_token {
            Some(token) if token.admits(headers) => return Ok(()),
            None if config.open_stats => return Ok(()),
            _ => {}
        }
        let auth = headers.get(header::AUTHORIZATION).cloned();
        if self.admitted.contains(&auth) {
            return Ok(());
        }
        let resp = self.probe(auth.clone()).await;
        match resp.status() {
            StatusCode::OK => {
                // Read to its end, so the exchange counts as a success.
                let _ = tokio::time::timeout(PROBE_TIMEOUT, resp.into_body().collect()).await;
                self.admitted.insert(auth);
                Ok(())
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(resp),
            status => {
                debug!(status = status.as_u16(), "no node could check a caller of the balancer's figures");
                Err(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "no node could check the token for the balancer's figures",
                ))
            }
        }
    }

    /// `GET /api/v1/balancer` with the caller's `Authorization`, sent to a node as
    /// any request is (the strategy picks; failover and retries apply).
    async fn probe(&self, auth: Option<HeaderValue>) -> Response<ProxyBody> {
        let snapshot = self.pool.snapshot();
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(header::AUTHORIZATION, auth);
        }
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let template = Template { method: Method::GET, headers };
        let body = RequestBody::new(Empty::<Bytes>::new(), None, 0);
        let pending = template.request(body.attempt());
        let request = Prepared {
            grpc: false,
            method: Method::GET,
            pq: PathAndQuery::from_static(PROBE_PATH),
            affinity: None,
            strategy: snapshot.routing.strategy.clone(),
            client_version: Version::HTTP_11,
            body,
            retriable: true,
            template,
            pending: Some(pending),
            deadline: Some(Instant::now() + PROBE_TIMEOUT),
        };
        self.forward(request, &snapshot).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admitted_header_is_remembered_and_others_are_not() {
        let admitted = Admitted::default();
        let token = Some(HeaderValue::from_static("Bearer a"));
        assert!(!admitted.contains(&token));
        admitted.insert(token.clone());
        assert!(admitted.contains(&token));
        assert!(!admitted.contains(&Some(HeaderValue::from_static("Bearer b"))));
        assert!(!admitted.contains(&None), "no header is a different caller");
        for i in 0..MAX_ADMITTED + 5 {
            admitted.insert(Some(HeaderValue::from_str(&format!("Bearer {i}")).unwrap()));
        }
        assert!(admitted.0.lock().len() <= MAX_ADMITTED, "the memory is bounded");
    }
}
