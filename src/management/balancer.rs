//! The balancer RPCs (`SetBalancerStrategy`, `ClearBalancerStrategy`,
//! `SetBalancerWeight`, `ClearBalancerWeight`, `ShowBalancerSettings`): decoded,
//! authorised and audited here, run by [`Admin`](crate::admin::Admin).

use spectrum_core::NodeId;
use tonic::{Request, Response, Status};

use super::{ManagementService, Rpc, ack, after, entry_served_by, proto};
use crate::pb::{strategy_error, strategy_from_wire};

/// The audit target of the strategy RPCs: the key they write.
const STRATEGY_TARGET: &str = "balancer/strategy";

/// The audit target of a weight RPC: the key it writes (the id cut to 128
/// characters; it is checked later).
fn weight_target(node_id: &str) -> String {
    format!("balancer/weight/{}", node_id.chars().take(128).collect::<String>())
}

fn node(node_id: &str) -> Result<NodeId, Status> {
    node_id.parse().map_err(|e| Status::invalid_argument(format!("invalid node id: {e}")))
}

impl ManagementService {
    pub(super) async fn set_strategy(
        &self,
        request: Request<proto::SetBalancerStrategyRequest>,
    ) -> Result<Response<proto::SetBalancerStrategyResponse>, Status> {
        let caller = self.authorize(&request, Rpc::SetBalancerStrategy, STRATEGY_TARGET).await?;
        let req = request.into_inner();
        let done = self
            .policy
            .audited_op(&caller, Rpc::SetBalancerStrategy, STRATEGY_TARGET, async {
                let wire = req.strategy.ok_or_else(|| Status::invalid_argument("strategy: missing"))?;
                let spec = strategy_from_wire(&wire).map_err(|e| {
                    let (field, reason) = strategy_error("strategy", e);
                    Status::invalid_argument(format!("invalid balancer strategy: {field}: {reason}"))
                })?;
                Ok(self.admin.set_balancer_strategy(spec, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(proto::SetBalancerStrategyResponse {
            strategy: done.strategy.as_ref().map(Into::into),
            write: Some(done.write.into()),
        }))
    }

    pub(super) async fn clear_strategy(
        &self,
        request: Request<proto::ClearBalancerStrategyRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let caller = self.authorize(&request, Rpc::ClearBalancerStrategy, STRATEGY_TARGET).await?;
        let level = request.into_inner().ack;
        let done = self
            .policy
            .audited_op(&caller, Rpc::ClearBalancerStrategy, STRATEGY_TARGET, async {
                Ok(self.admin.clear_balancer_strategy(ack(level)?).await?)
            })
            .await?;
        Ok(Response::new(done.write.into()))
    }

    pub(super) async fn set_weight(
        &self,
        request: Request<proto::SetBalancerWeightRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let target = weight_target(&request.get_ref().node_id);
        let caller = self.authorize(&request, Rpc::SetBalancerWeight, &target).await?;
        let req = request.into_inner();
        let done = self
            .policy
            .audited_op(&caller, Rpc::SetBalancerWeight, &target, async {
                let id = node(&req.node_id)?;
                Ok(self.admin.set_balancer_weight(&id, req.weight, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(done.write.into()))
    }

    pub(super) async fn clear_weight(
        &self,
        request: Request<proto::ClearBalancerWeightRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let target = weight_target(&request.get_ref().node_id);
        let caller = self.authorize(&request, Rpc::ClearBalancerWeight, &target).await?;
        let req = request.into_inner();
        let done = self
            .policy
            .audited_op(&caller, Rpc::ClearBalancerWeight, &target, async {
                let id = node(&req.node_id)?;
                Ok(self.admin.clear_balancer_weight(&id, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(done.write.into()))
    }

    pub(super) async fn show_settings(
        &self,
        request: Request<proto::ShowBalancerSettingsRequest>,
    ) -> Result<Response<proto::ShowBalancerSettingsResponse>, Status> {
        self.authorize(&request, Rpc::ShowBalancerSettings, "").await?;
        let settings = self
            .admin
            .balancer_settings(&{
                let req = request.into_inner();
                after(&req.min_version, req.read.as_ref())?
            })
            .await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::ShowBalancerSettingsResponse { served_by, ..settings.into() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::BalancerKey;

    #[test]
    fn audit_targets_name_the_key_written() {
        assert_eq!(weight_target("node-1"), BalancerKey::Weight("node-1".parse().unwrap()).key());
        assert_eq!(STRATEGY_TARGET, BalancerKey::Strategy.key());
        assert_eq!(weight_target(&"x".repeat(500)).len(), "balancer/weight/".len() + 128);
    }
}
