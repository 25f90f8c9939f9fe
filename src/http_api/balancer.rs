//! The strategy and weights every balancer follows (`balancer/` in the
//! configuration database): show, set and clear.

use axum::Extension;
use axum::extract::State;
use serde::Deserialize;
use spectrum_balancer::strategy::StrategySpec;
use spectrum_core::NodeId;
use tonic::Status;
use utoipa::ToSchema;

use super::params::{Body, Name, ReadParams, WriteParams, json, query};
use super::{Answer, Api, ErrorBody, authorize};
use crate::auth::Caller;
use crate::management::Rpc;

/// The audit target of the strategy operations: the key they write.
const STRATEGY_TARGET: &str = "balancer/strategy";

/// A weight to set: `{"weight": 3}` (`0`: no requests while another node can
/// take them).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewWeight {
    weight: u32,
}

fn node(id: &str) -> Result<NodeId, Status> {
    id.parse().map_err(|e| Status::invalid_argument(format!("invalid node id: {e}")))
}

fn weight_target(id: &str) -> String {
    format!("balancer/weight/{}", id.chars().take(128).collect::<String>())
}

/// The balancer's own figures, answered by the **balancer** on its public port and
/// never by a node (a node answers `404`, which is how the console tells it was
/// not reached through a balancer). Any token this API admits may read them: the
/// balancer asks a node with the caller's `Authorization` on
/// `GET /api/v1/balancer` and passes its `401`/`403` on. Documented here because
/// clients reach it at the same address as the API; it has no handler on a node.
#[utoipa::path(operation_id = "BalancerStats", get, path = "/api/v1/balancer/stats", tag = "balancer",
    responses((status = 200, description = "`{\"balancer\": true, \"sampled_at_unix_ms\", \"strategy\": {\"name\", \"hash_key\", \"load_factor\", \"source\"}, \"requests_total\", \"retries_total\", \"no_backend_total\", …, \"backends\": [{\"id\", \"address\", \"health\", \"healthy\", \"ejected\", \"draining\", \"weight\", \"requests_total\", \"failures_total\", \"retries_total\", \"in_flight\", \"latency_ewma_us\"}]}`: counters grow while the balancer runs; latency is the moving average of the time to response headers, in microseconds", body = Object),
        (status = 404, description = "answered by a node: the caller did not come through a balancer", body = ErrorBody),
        (status = "4XX", description = "refused: the API's own `401` or `403`, from a node", body = ErrorBody)),
    security(("bearer" = [])))]
#[allow(dead_code)] // served by the balancer (`spectrum_balancer::stats::JSON_PATH`), not by this node
pub(super) async fn stats() {}

/// The strategy and weights the database sets for every balancer (viewer).
#[utoipa::path(operation_id = "ShowBalancerSettings", get, path = "/api/v1/balancer", tag = "balancer", params(ReadParams),
    responses((status = 200, description = "`{\"strategy\": {…} | null, \"weights\": [{\"node\", \"weight\", \"version\"}]}`", body = Object), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn show(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    authorize(&api, caller, Rpc::ShowBalancerSettings, "").await?;
    let q: ReadParams = query(&uri)?;
    Ok(api.json(&api.admin().balancer_settings(&q.after()?).await?))
}

/// Sets the strategy every balancer uses, over each one's own file (admin). The
/// body is `{"name": "consistent_hash", "hash_key": "x-tenant", "load_factor": 1.5}`
/// (names: round_robin, weighted_round_robin, random, least_requests,
/// peak_ewma, consistent_hash).
#[utoipa::path(operation_id = "SetBalancerStrategy", put, path = "/api/v1/balancer/strategy", tag = "balancer", params(WriteParams),
    request_body(content = Object, description = "the strategy and its parameters"),
    responses((status = 200, description = "`{\"strategy\": {…}, \"write\": {…}}`", body = Object), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn set_strategy(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
    Body(body): Body,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::SetBalancerStrategy, STRATEGY_TARGET).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        let spec: StrategySpec = json(&body)?;
        Ok(api.admin().set_balancer_strategy(spec, q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, Rpc::SetBalancerStrategy, STRATEGY_TARGET, op).await?))
}

/// Clears the strategy: each balancer uses its own file's again (admin).
#[utoipa::path(operation_id = "ClearBalancerStrategy", delete, path = "/api/v1/balancer/strategy", tag = "balancer", params(WriteParams),
    responses((status = 200, description = "`{\"strategy\": null, \"write\": {…}}`", body = Object), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn clear_strategy(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
) -> Answer {
    let caller = authorize(&api, caller, Rpc::ClearBalancerStrategy, STRATEGY_TARGET).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().clear_balancer_strategy(q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, Rpc::ClearBalancerStrategy, STRATEGY_TARGET, op).await?))
}

/// Sets a member's weight for every balancer (admin).
#[utoipa::path(operation_id = "SetBalancerWeight", put, path = "/api/v1/balancer/weights/{name}", tag = "balancer",
    params(("name" = String, Path, description = "the member's node id"), WriteParams), request_body = NewWeight,
    responses((status = 200, description = "`{\"node\", \"weight\", \"write\": {…}}`", body = Object), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn set_weight(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(id): Name,
    uri: http::Uri,
    Body(body): Body,
) -> Answer {
    let target = weight_target(&id);
    let caller = authorize(&api, caller, Rpc::SetBalancerWeight, &target).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        let NewWeight { weight } = json(&body)?;
        Ok(api.admin().set_balancer_weight(&node(&id)?, weight, q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, Rpc::SetBalancerWeight, &target, op).await?))
}

/// Clears a member's weight: balancer files decide again (admin).
#[utoipa::path(operation_id = "ClearBalancerWeight", delete, path = "/api/v1/balancer/weights/{name}", tag = "balancer",
    params(("name" = String, Path, description = "the member's node id"), WriteParams),
    responses((status = 200, description = "`{\"node\", \"weight\": null, \"write\": {…}}`", body = Object), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn clear_weight(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(id): Name,
    uri: http::Uri,
) -> Answer {
    let target = weight_target(&id);
    let caller = authorize(&api, caller, Rpc::ClearBalancerWeight, &target).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        Ok(api.admin().clear_balancer_weight(&node(&id)?, q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, Rpc::ClearBalancerWeight, &target, op).await?))
}
