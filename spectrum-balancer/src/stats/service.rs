//! The balancer's own gRPC service over a running balancer's figures, and the local
//! answer the proxy gives to calls of it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tonic::codegen::Service as _;

use crate::body::{ClientBody, ProxyBody, local_answer};
use crate::config::BalancerConfig;
use crate::error::BoxError;
use crate::pool::Pool;
use crate::stats::{BalancerStats, proto};

/// The path prefix of every method of the balancer's own service.
pub(crate) const PATH_PREFIX: &[u8] = b"/spectrum.balancer.v1.Balancer/";

/// gRPC status code `INTERNAL`.
const GRPC_INTERNAL: u32 = 13;
/// gRPC status code `PERMISSION_DENIED`.
const GRPC_PERMISSION_DENIED: u32 = 7;
/// gRPC status code `UNAUTHENTICATED`.
const GRPC_UNAUTHENTICATED: u32 = 16;

/// The balancer's refusal of a `Stats` call on its public port, or `None` when the
/// call may be answered at once: with [`BalancerConfig::stats_token`] set, when
/// it carries that token (the proxy then asks the nodes about another token);
/// without, only when [`BalancerConfig::open_stats`] is on.
pub(crate) fn refusal(config: &BalancerConfig, headers: &http::HeaderMap) -> Option<Response<ProxyBody>> {
    match &config.stats_token {
        Some(token) if token.admits(headers) => None,
        Some(_) => Some(local_answer(
            true,
            StatusCode::UNAUTHORIZED,
            GRPC_UNAUTHENTICATED,
            "the balancer's Stats needs a token the cluster admits (authorization: Bearer <token>)",
        )),
        None if config.open_stats => None,
        None => Some(local_answer(
            true,
            StatusCode::FORBIDDEN,
            GRPC_PERMISSION_DENIED,
            "the balancer's Stats is off on this port (no token configured): use its admin listener",
        )),
    }
}

/// The `spectrum.balancer.v1.Balancer` service: reads the balancer's live figures.
///
/// The balancer serves it on its own port already; get one with
/// [`BalancerHandle::stats_service`](crate::BalancerHandle::stats_service) to serve
/// it elsewhere too, for example on a separate tonic server:
/// `tonic::transport::Server::builder().add_service(handle.stats_service().into_server())`.
#[derive(Debug, Clone)]
pub struct BalancerStatsService {
    pool: Arc<Pool>,
}

impl BalancerStatsService {
    pub(crate) fn new(pool: Arc<Pool>) -> Self {
        Self { pool }
    }

    /// The figures, as `Stats` answers them.
    pub fn snapshot(&self) -> proto::StatsResponse {
        proto::StatsResponse::from(&self.stats())
    }

    /// The figures as domain types: every backend's and the totals.
    pub fn stats(&self) -> BalancerStats {
        let c = &self.pool.counters;
        BalancerStats {
            backends: self.pool.stats(),
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            retry_budget_exhausted: c.budget_exhausted.load(Ordering::Relaxed),
            no_backend: c.no_backend.load(Ordering::Relaxed),
            request_too_large: c.too_large.load(Ordering::Relaxed),
            internal_refused: c.internal_refused.load(Ordering::Relaxed),
            not_ready_retries: c.not_ready_retries.load(Ordering::Relaxed),
            strategy: Some(self.pool.strategy()),
        }
    }

    /// This service as a tonic server, ready to be added to a router.
    pub fn into_server(self) -> proto::balancer_server::BalancerServer<Self> {
        proto::balancer_server::BalancerServer::new(self)
    }
}

#[tonic::async_trait]
impl proto::balancer_server::Balancer for BalancerStatsService {
    async fn stats(
        &self,
        _request: tonic::Request<proto::StatsRequest>,
    ) -> Result<tonic::Response<proto::StatsResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.snapshot()))
    }
}

/// Answers a request to the balancer's own service (its path starts with
/// [`PATH_PREFIX`]) with `server`, locally. Never fails: unknown methods get
/// `UNIMPLEMENTED` from the generated server, malformed calls a gRPC error.
pub(crate) async fn answer(
    server: &proto::balancer_server::BalancerServer<BalancerStatsService>,
    req: Request<ClientBody>,
) -> Response<ProxyBody> {
    let resp = match server.clone().call(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // The generated server's body is not `Sync`, and `ProxyBody` must be: a unary
    // answer is one small message and trailers, so it is read here and passed on
    // as ready frames.
    let (parts, body) = resp.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(status) => {
            tracing::debug!(%status, "the balancer's stats answer failed");
            return local_answer(
                true,
                StatusCode::INTERNAL_SERVER_ERROR,
                GRPC_INTERNAL,
                "the balancer could not answer",
            );
        }
    };
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::with_capacity(2);
    if !data.is_empty() {
        frames.push(Ok(Frame::data(data)));
    }
    if let Some(trailers) = trailers {
        frames.push(Ok(Frame::trailers(trailers)));
    }
    Response::from_parts(parts, StreamBody::new(futures::stream::iter(frames)).boxed())
}
