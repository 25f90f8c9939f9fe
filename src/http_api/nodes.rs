//! Status, and members' states (drain, undrain, remove).

use axum::Extension;
use axum::extract::State;
use spectrum_core::{MemberState, NodeId};
use tonic::Status;

use super::params::{Name, WriteParams, query};
use super::{Answer, Api, ErrorBody, authorize};
use crate::auth::Caller;
use crate::management::Rpc;
use crate::model::NodeStatus;

/// The cluster as the answering node sees it: members with liveness, peers with
/// lag and clock offset, resources available on it.
#[utoipa::path(operation_id = "Status", get, path = "/api/v1/status", tag = "nodes",
    responses((status = 200, description = "OK", body = NodeStatus), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn status(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Answer {
    authorize(&api, caller, Rpc::Status, "").await?;
    Ok(api.json(&api.admin().status().await?))
}

/// Drains a member: it gets no new requests (operator).
#[utoipa::path(operation_id = "DrainNode", post, path = "/api/v1/nodes/{id}/drain", tag = "nodes",
    params(("id" = String, Path, description = "the member's node id"), WriteParams),
    responses((status = 200, description = "OK", body = crate::model::schema::NodeStateChanged), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn drain(api: State<Api>, caller: Extension<Caller>, id: Name, uri: http::Uri) -> Answer {
    set_state(api, caller, id, uri, MemberState::Draining).await
}

/// Makes a drained or removed member active again (operator).
#[utoipa::path(operation_id = "UndrainNode", post, path = "/api/v1/nodes/{id}/undrain", tag = "nodes",
    params(("id" = String, Path, description = "the member's node id"), WriteParams),
    responses((status = 200, description = "OK", body = crate::model::schema::NodeStateChanged), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn undrain(api: State<Api>, caller: Extension<Caller>, id: Name, uri: http::Uri) -> Answer {
    set_state(api, caller, id, uri, MemberState::Active).await
}

/// Removes a member for good: it counts for nothing and is refused if it returns
/// (admin).
#[utoipa::path(operation_id = "RemoveNode", post, path = "/api/v1/nodes/{id}/remove", tag = "nodes",
    params(("id" = String, Path, description = "the member's node id"), WriteParams),
    responses((status = 200, description = "OK", body = crate::model::schema::NodeStateChanged), (status = "4XX", description = "refused or failed: the code and message of the gRPC call", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn remove(api: State<Api>, caller: Extension<Caller>, id: Name, uri: http::Uri) -> Answer {
    set_state(api, caller, id, uri, MemberState::Removed).await
}

/// `SetNodeState` (`RemoveNode` for `Removed`), as the gRPC API runs it.
async fn set_state(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Name(target): Name,
    uri: http::Uri,
    state: MemberState,
) -> Answer {
    let rpc = if state == MemberState::Removed { Rpc::RemoveNode } else { Rpc::SetNodeState };
    let caller = authorize(&api, caller, rpc, &target).await?;
    let op = async {
        let q: WriteParams = query(&uri)?;
        let id: NodeId =
            target.parse().map_err(|e| Status::invalid_argument(format!("invalid node id: {e}")))?;
        Ok(api.admin().set_node_state(&id, state, q.level()).await?)
    };
    Ok(api.json(&api.policy.audited_op(&caller, rpc, &target, op).await?))
}
