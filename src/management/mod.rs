//! The management service, served by every node (reach it through the balancer):
//! a thin gRPC adapter over [`Admin`]. Each RPC decodes its request, calls one
//! admin operation and encodes the result; errors map to gRPC codes in one place
//! (`status.rs`).
//!
//! # Secrets
//!
//! Resource definitions arrive with their secrets in clear; they are sealed with
//! the cluster's key before anything is stored, and every answer (`Get`, `List`,
//! `ListResources`, `ShowResource`, `ExportResources`) carries the definition
//! redacted. A node without a cluster key refuses to store a secret
//! (`FAILED_PRECONDITION`) rather than store it in clear.
//!
//! # Errors
//!
//! Bad input is `INVALID_ARGUMENT` naming the field at fault, and nothing is stored;
//! a name already taken on create is `ALREADY_EXISTS`; a missing entry `NOT_FOUND`;
//! the `membership/` namespace written with `Put` is `PERMISSION_DENIED` (use
//! `SetNodeState`). Every call needs the bearer token when one is configured
//! ([`BearerAuth`]): `UNAUTHENTICATED` otherwise, and nothing is done.

mod status;

use bytes::Bytes;
use spectrum_core::{MemberState, NodeId};
use spectrum_replication::AckLevel;
use tonic::{Request, Response, Status};
use tracing::instrument;

pub use crate::admin::{PEER_CHECK_TIMEOUT, READ_YOUR_WRITES_WAIT};
pub use crate::auth::BearerAuth;
pub use crate::pb::proto;

use crate::admin::Admin;
use crate::auth::Token;
use crate::model::ReadAfter;
use crate::pb::ack_from_wire;
use proto::management_server::Management;

/// The management API of one node.
#[derive(Debug, Clone)]
pub struct ManagementService {
    admin: Admin,
}

impl ManagementService {
    /// The service over `admin`.
    pub fn new(admin: Admin) -> Self {
        Self { admin }
    }

    /// The generated tonic server for this service, with `max_message_bytes` as its
    /// message size limit both ways.
    pub fn into_server(self, max_message_bytes: usize) -> proto::management_server::ManagementServer<Self> {
        proto::management_server::ManagementServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

fn ack(wire: i32) -> Result<AckLevel, Status> {
    ack_from_wire(wire).ok_or_else(|| Status::invalid_argument(format!("unknown ack level {wire}")))
}

fn after(min_version: &str) -> Result<ReadAfter, Status> {
    if min_version.is_empty() {
        return Ok(ReadAfter::Anything);
    }
    min_version
        .parse()
        .map(ReadAfter::Version)
        .map_err(|e: spectrum_replication::StoreError| Status::invalid_argument(e.to_string()))
}

/// The caller's bearer token, to forward on calls this node makes for it.
fn bearer<T>(request: &Request<T>) -> Option<Token> {
    let header = request.metadata().get("authorization")?.to_str().ok()?;
    header.strip_prefix("Bearer ")?.parse().ok()
}

#[tonic::async_trait]
impl Management for ManagementService {
    #[instrument(skip_all)]
    async fn get(&self, request: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        let req = request.into_inner();
        let entry = self.admin.get(&req.key, &after(&req.min_version)?).await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::GetResponse { entry: Some(entry.into()), served_by }))
    }

    #[instrument(skip_all)]
    async fn put(&self, request: Request<proto::PutRequest>) -> Result<Response<proto::PutResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(self.admin.put(&req.key, Bytes::from(req.value), ack(req.ack)?).await?.into()))
    }

    #[instrument(skip_all)]
    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(self.admin.delete(&req.key, ack(req.ack)?).await?.into()))
    }

    #[instrument(skip_all)]
    async fn list(
        &self,
        request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let req = request.into_inner();
        let entries = self.admin.list(&req.prefix, &after(&req.min_version)?).await?;
        let entries = entries.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::ListResponse { entries, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        Ok(Response::new(self.admin.status().await?.into()))
    }

    #[instrument(skip_all)]
    async fn set_license(
        &self,
        request: Request<proto::SetLicenseRequest>,
    ) -> Result<Response<proto::SetLicenseResponse>, Status> {
        let req = request.into_inner();
        let done = self.admin.set_license(&req.name, Bytes::from(req.license), ack(req.ack)?).await?;
        Ok(Response::new(proto::SetLicenseResponse {
            license: Some(done.license.into()),
            write: Some(done.write.into()),
        }))
    }

    #[instrument(skip_all)]
    async fn show_license(
        &self,
        request: Request<proto::ShowLicenseRequest>,
    ) -> Result<Response<proto::ShowLicenseResponse>, Status> {
        let req = request.into_inner();
        let license = self.admin.license(&req.name, &after(&req.min_version)?).await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::ShowLicenseResponse { license: Some(license.into()), served_by }))
    }

    #[instrument(skip_all)]
    async fn create_dataflow(
        &self,
        request: Request<proto::CreateDataflowRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let req = request.into_inner();
        let definition = Bytes::from(req.definition);
        let write = self.admin.create_dataflow(&req.name, definition, req.replace, ack(req.ack)?).await?;
        Ok(Response::new(write.into()))
    }

    #[instrument(skip_all)]
    async fn list_dataflows(
        &self,
        request: Request<proto::ListDataflowsRequest>,
    ) -> Result<Response<proto::ListDataflowsResponse>, Status> {
        let flows = self.admin.dataflows(&after(&request.into_inner().min_version)?).await?;
        let dataflows = flows.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::ListDataflowsResponse { dataflows, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn show_dataflow(
        &self,
        request: Request<proto::ShowDataflowRequest>,
    ) -> Result<Response<proto::ShowDataflowResponse>, Status> {
        let req = request.into_inner();
        let flow = self.admin.dataflow(&req.name, &after(&req.min_version)?).await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::ShowDataflowResponse { dataflow: Some(flow.into()), served_by }))
    }

    #[instrument(skip_all)]
    async fn delete_dataflow(
        &self,
        request: Request<proto::DeleteDataflowRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let req = request.into_inner();
        Ok(Response::new(self.admin.delete_dataflow(&req.name, ack(req.ack)?).await?.into()))
    }

    #[instrument(skip_all)]
    async fn create_resource(
        &self,
        request: Request<proto::CreateResourceRequest>,
    ) -> Result<Response<proto::CreateResourceResponse>, Status> {
        let req = request.into_inner();
        let done = self.admin.create_resource(&req.definition, req.replace, ack(req.ack)?).await?;
        Ok(Response::new(proto::CreateResourceResponse {
            resource: Some(done.resource.into()),
            write: Some(done.write.into()),
        }))
    }

    #[instrument(skip_all)]
    async fn list_resources(
        &self,
        request: Request<proto::ListResourcesRequest>,
    ) -> Result<Response<proto::ListResourcesResponse>, Status> {
        let list = self.admin.resources(&after(&request.into_inner().min_version)?).await?;
        let resources = list.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::ListResourcesResponse { resources, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn show_resource(
        &self,
        request: Request<proto::ShowResourceRequest>,
    ) -> Result<Response<proto::ShowResourceResponse>, Status> {
        let req = request.into_inner();
        let resource = self.admin.resource(&req.name, &after(&req.min_version)?).await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::ShowResourceResponse { resource: Some(resource.into()), served_by }))
    }

    #[instrument(skip_all)]
    async fn delete_resource(
        &self,
        request: Request<proto::DeleteResourceRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let req = request.into_inner();
        Ok(Response::new(self.admin.delete_resource(&req.name, ack(req.ack)?).await?.into()))
    }

    #[instrument(skip_all)]
    async fn check_resources(
        &self,
        request: Request<proto::CheckResourcesRequest>,
    ) -> Result<Response<proto::CheckResourcesResponse>, Status> {
        let token = bearer(&request);
        let req = request.into_inner();
        let after = after(&req.min_version)?;
        let nodes = if req.local_only {
            for name in &req.names {
                spectrum_resources::ResourceName::new(name.as_str())
                    .map_err(|e| Status::invalid_argument(format!("invalid resource name: {e}")))?;
            }
            vec![self.admin.check_local(&req.names).await?]
        } else {
            self.admin.check_everywhere(&req.names, &after, token).await?
        };
        let nodes = nodes.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::CheckResourcesResponse { nodes, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn export_resources(
        &self,
        request: Request<proto::ExportResourcesRequest>,
    ) -> Result<Response<proto::ExportResourcesResponse>, Status> {
        let export = self.admin.export_resources(&after(&request.into_inner().min_version)?).await?;
        Ok(Response::new(proto::ExportResourcesResponse {
            file: export.file,
            count: export.count,
            served_by: export.served_by.to_string(),
        }))
    }

    #[instrument(skip_all)]
    async fn import_resources(
        &self,
        request: Request<proto::ImportResourcesRequest>,
    ) -> Result<Response<proto::ImportResourcesResponse>, Status> {
        let req = request.into_inner();
        let report = self.admin.import_resources(&req.file, req.dry_run, ack(req.ack)?).await?;
        Ok(Response::new(proto::ImportResourcesResponse {
            plan: Some(report.plan.into()),
            applied: report.applied,
            source_cluster: report.source_cluster,
            write: report.write.map(Into::into),
            served_by: entry_served_by(&self.admin),
        }))
    }

    #[instrument(skip_all)]
    async fn set_node_state(
        &self,
        request: Request<proto::SetNodeStateRequest>,
    ) -> Result<Response<proto::SetNodeStateResponse>, Status> {
        let req = request.into_inner();
        let state = match proto::NodeState::try_from(req.state) {
            Ok(proto::NodeState::Active) => MemberState::Active,
            Ok(proto::NodeState::Draining) => MemberState::Draining,
            Ok(proto::NodeState::Removed) => MemberState::Removed,
            Err(_) => return Err(Status::invalid_argument(format!("unknown node state {}", req.state))),
        };
        let id: NodeId =
            req.node_id.parse().map_err(|e| Status::invalid_argument(format!("invalid node id: {e}")))?;
        let done = self.admin.set_node_state(&id, state, ack(req.ack)?).await?;
        Ok(Response::new(proto::SetNodeStateResponse {
            member: Some((&done.member).into()),
            write: Some(done.write.into()),
        }))
    }
}

fn entry_served_by(admin: &Admin) -> String {
    admin.context().id.to_string()
}
