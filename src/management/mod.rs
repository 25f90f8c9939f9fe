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
//! the `membership/`, `users/`, `audit/` and `balancer/` namespaces written with
//! `Put` are `PERMISSION_DENIED` (use `SetNodeState`, the user RPCs and the
//! balancer RPCs).
//!
//! # Who may call
//!
//! [`BearerAuth`] identifies the caller from the bearer token (`UNAUTHENTICATED`
//! for a missing, unknown or revoked one, and nothing is done); each RPC then
//! checks the caller's role against one table, [`Rpc::required_role`]
//! (`PERMISSION_DENIED` naming the role needed). With no token configured and no
//! users, every call passes (development mode).
//!
//! The HTTP/JSON API ([`http_api`](crate::http_api)) enforces the same table and
//! the same audit path (`policy.rs`, shared by both), with the same messages.
//!
//! # Audit
//!
//! Every write RPC ([`Rpc::is_write`]) is recorded in the audit log after it
//! ran, whether it succeeded, failed, or was refused for the caller's role:
//! caller, role, operation, key or name, node, time, and outcome
//! ([`Admin::audit`]). Calls refused as `UNAUTHENTICATED` are not recorded (no
//! one to name, and strangers must not be able to fill the log).

mod balancer;
pub mod idempotency;
mod policy;
mod rpc;
mod status;
mod txn;
mod watch;

use std::time::Duration;

use bytes::Bytes;
use spectrum_core::{MemberState, NodeId};
use spectrum_replication::{AckLevel, VersionToken};
use tonic::{Request, Response, Status};
use tracing::instrument;

pub use crate::admin::{MAX_READ_WAIT, PEER_CHECK_TIMEOUT, READ_YOUR_WRITES_WAIT};
pub use crate::auth::BearerAuth;
pub use crate::pb::proto;
pub(crate) use policy::{Policy, definition_name, license_name};
pub use rpc::{Rpc, read_role};
pub(crate) use rpc::{check_read, may_read, may_see};
pub use watch::WatchEvents;

use crate::admin::Admin;
use crate::auth::{Caller, Token};
use crate::model::{AuditQuery, ReadAfter};
use crate::pb::{ack_from_wire, role_from_wire};
use crate::session::Session;
use proto::management_server::Management;
use txn::{put_condition, txn_from_wire};

/// The management API of one node.
#[derive(Debug, Clone)]
pub struct ManagementService {
    admin: Admin,
    policy: Policy,
}

impl ManagementService {
    /// The service over `admin`.
    pub fn new(admin: Admin) -> Self {
        Self { policy: Policy::new(admin.clone()), admin }
    }

    /// Identifies the caller and checks its role for `rpc`; a refused write is
    /// audited, on `target`.
    async fn authorize<T>(&self, request: &Request<T>, rpc: Rpc, target: &str) -> Result<Caller, Status> {
        self.policy.authorize(rpc::caller(request)?, rpc, target).await
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

/// A read's precondition from its `min_version` and `read` options: a session
/// (the two merged) when options are given, else the single version, if any.
fn after(min_version: &str, read: Option<&proto::ReadOptions>) -> Result<ReadAfter, Status> {
    let version = match min_version {
        "" => None,
        text => Some(
            text.parse::<VersionToken>()
                .map_err(|e| Status::invalid_argument(format!("min_version: {e}")))?,
        ),
    };
    let Some(read) = read else {
        return Ok(version.as_ref().map_or(ReadAfter::Anything, ReadAfter::from));
    };
    let mut session: Session =
        read.session.parse().map_err(|e| Status::invalid_argument(format!("read.session: {e}")))?;
    if let Some(token) = &version {
        session.merge_token(token);
    }
    let wait = (read.wait_ms > 0).then(|| Duration::from_millis(u64::from(read.wait_ms)));
    Ok(ReadAfter::Session { session, wait })
}

/// The caller's bearer token, to forward on calls this node makes for it.
fn bearer<T>(request: &Request<T>) -> Option<Token> {
    crate::auth::bearer_token(
        request.metadata().get_all("authorization").iter().map(|v| v.as_encoded_bytes()),
    )
}

#[tonic::async_trait]
impl Management for ManagementService {
    #[instrument(skip_all)]
    async fn get(&self, request: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        let caller = self.authorize(&request, Rpc::Get, "").await?;
        let req = request.into_inner();
        rpc::check_read(&caller, Rpc::Get, &req.key)?;
        self.barrier_if_consistent(req.read.as_ref()).await?;
        let entry = self.admin.get(&req.key, &after(&req.min_version, req.read.as_ref())?).await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::GetResponse { entry: Some(entry.into()), served_by }))
    }

    #[instrument(skip_all)]
    async fn put(&self, request: Request<proto::PutRequest>) -> Result<Response<proto::PutResponse>, Status> {
        let target = request.get_ref().key.clone();
        let caller = self.authorize(&request, Rpc::Put, &target).await?;
        let req = request.into_inner();
        let write = self
            .policy
            .audited_op(&caller, Rpc::Put, &target, async {
                match (ack(req.ack), put_condition(&req)) {
                    (Ok(level), Ok(None)) => {
                        self.admin.put(&req.key, Bytes::from(req.value), level).await.map_err(Status::from)
                    }
                    (Ok(_), Ok(Some(version))) => self
                        .admin
                        .put_if(&req.key, Bytes::from(req.value), version)
                        .await
                        .map_err(Status::from),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            })
            .await?;
        Ok(Response::new(write.into()))
    }

    #[instrument(skip_all)]
    async fn txn(&self, request: Request<proto::TxnRequest>) -> Result<Response<proto::PutResponse>, Status> {
        let target = request.get_ref().writes.first().map(|w| w.key.clone()).unwrap_or_default();
        let caller = self.authorize(&request, Rpc::Txn, &target).await?;
        let req = request.into_inner();
        let write = self
            .policy
            .audited_op(&caller, Rpc::Txn, &target, async {
                let (conditions, writes) = txn_from_wire(req)?;
                self.admin.transaction(conditions, writes).await.map_err(Status::from)
            })
            .await?;
        Ok(Response::new(write.into()))
    }

    #[instrument(skip_all)]
    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let target = request.get_ref().key.clone();
        let caller = self.authorize(&request, Rpc::Delete, &target).await?;
        let req = request.into_inner();
        let write = self
            .policy
            .audited_op(&caller, Rpc::Delete, &target, async {
                Ok(self.admin.delete(&req.key, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(write.into()))
    }

    #[instrument(skip_all)]
    async fn list(
        &self,
        request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let caller = self.authorize(&request, Rpc::List, "").await?;
        let req = request.into_inner();
        rpc::check_read(&caller, Rpc::List, &req.prefix)?;
        self.barrier_if_consistent(req.read.as_ref()).await?;
        let entries = self.admin.list(&req.prefix, &after(&req.min_version, req.read.as_ref())?).await?;
        let entries =
            entries.into_iter().filter(|e| rpc::may_read(&caller, &e.key)).map(Into::into).collect();
        Ok(Response::new(proto::ListResponse { entries, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        self.authorize(&request, Rpc::Status, "").await?;
        Ok(Response::new(self.admin.status().await?.into()))
    }

    #[instrument(skip_all)]
    async fn list_conflicts(
        &self,
        request: Request<proto::ListConflictsRequest>,
    ) -> Result<Response<proto::ListConflictsResponse>, Status> {
        let caller = self.authorize(&request, Rpc::ListConflicts, "").await?;
        let req = request.into_inner();
        rpc::check_read(&caller, Rpc::ListConflicts, &req.prefix)?;
        let found = self.admin.conflicts(&req.prefix, &after(&req.min_version, req.read.as_ref())?).await?;
        let conflicts =
            found.0.into_iter().filter(|c| rpc::may_read(&caller, &c.key)).map(Into::into).collect();
        Ok(Response::new(proto::ListConflictsResponse { conflicts, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn set_license(
        &self,
        request: Request<proto::SetLicenseRequest>,
    ) -> Result<Response<proto::SetLicenseResponse>, Status> {
        let target = license_name(&request.get_ref().name);
        let caller = self.authorize(&request, Rpc::SetLicense, &target).await?;
        let req = request.into_inner();
        let done = self
            .policy
            .audited_op(&caller, Rpc::SetLicense, &target, async {
                Ok(self.admin.set_license(&req.name, Bytes::from(req.license), ack(req.ack)?).await?)
            })
            .await?;
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
        self.authorize(&request, Rpc::ShowLicense, "").await?;
        let req = request.into_inner();
        let license = self.admin.license(&req.name, &after(&req.min_version, req.read.as_ref())?).await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::ShowLicenseResponse { license: Some(license.into()), served_by }))
    }

    #[instrument(skip_all)]
    async fn create_dataflow(
        &self,
        request: Request<proto::CreateDataflowRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let target = request.get_ref().name.clone();
        let caller = self.authorize(&request, Rpc::CreateDataflow, &target).await?;
        let req = request.into_inner();
        let definition = Bytes::from(req.definition);
        let write = self
            .policy
            .audited_op(&caller, Rpc::CreateDataflow, &target, async {
                Ok(self.admin.create_dataflow(&req.name, definition, req.replace, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(write.into()))
    }

    #[instrument(skip_all)]
    async fn list_dataflows(
        &self,
        request: Request<proto::ListDataflowsRequest>,
    ) -> Result<Response<proto::ListDataflowsResponse>, Status> {
        self.authorize(&request, Rpc::ListDataflows, "").await?;
        let flows = self
            .admin
            .dataflows(&{
                let req = request.into_inner();
                after(&req.min_version, req.read.as_ref())?
            })
            .await?;
        let dataflows = flows.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::ListDataflowsResponse { dataflows, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn show_dataflow(
        &self,
        request: Request<proto::ShowDataflowRequest>,
    ) -> Result<Response<proto::ShowDataflowResponse>, Status> {
        self.authorize(&request, Rpc::ShowDataflow, "").await?;
        let req = request.into_inner();
        let flow = self.admin.dataflow(&req.name, &after(&req.min_version, req.read.as_ref())?).await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::ShowDataflowResponse { dataflow: Some(flow.into()), served_by }))
    }

    #[instrument(skip_all)]
    async fn delete_dataflow(
        &self,
        request: Request<proto::DeleteDataflowRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let target = request.get_ref().name.clone();
        let caller = self.authorize(&request, Rpc::DeleteDataflow, &target).await?;
        let req = request.into_inner();
        let write = self
            .policy
            .audited_op(&caller, Rpc::DeleteDataflow, &target, async {
                Ok(self.admin.delete_dataflow(&req.name, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(write.into()))
    }

    #[instrument(skip_all)]
    async fn create_resource(
        &self,
        request: Request<proto::CreateResourceRequest>,
    ) -> Result<Response<proto::CreateResourceResponse>, Status> {
        let target = definition_name(&request.get_ref().definition);
        let rpc = if request.get_ref().replace { Rpc::ReplaceResource } else { Rpc::CreateResource };
        let caller = self.authorize(&request, rpc, &target).await?;
        let req = request.into_inner();
        let done = self
            .policy
            .audited_op(&caller, rpc, &target, async {
                Ok(self.admin.create_resource(&req.definition, req.replace, ack(req.ack)?).await?)
            })
            .await?;
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
        self.authorize(&request, Rpc::ListResources, "").await?;
        let list = self
            .admin
            .resources(&{
                let req = request.into_inner();
                after(&req.min_version, req.read.as_ref())?
            })
            .await?;
        let resources = list.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::ListResourcesResponse { resources, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn show_resource(
        &self,
        request: Request<proto::ShowResourceRequest>,
    ) -> Result<Response<proto::ShowResourceResponse>, Status> {
        self.authorize(&request, Rpc::ShowResource, "").await?;
        let req = request.into_inner();
        let resource = self.admin.resource(&req.name, &after(&req.min_version, req.read.as_ref())?).await?;
        let served_by = entry_served_by(&self.admin);
        Ok(Response::new(proto::ShowResourceResponse { resource: Some(resource.into()), served_by }))
    }

    #[instrument(skip_all)]
    async fn delete_resource(
        &self,
        request: Request<proto::DeleteResourceRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let target = request.get_ref().name.clone();
        let caller = self.authorize(&request, Rpc::DeleteResource, &target).await?;
        let req = request.into_inner();
        let write = self
            .policy
            .audited_op(&caller, Rpc::DeleteResource, &target, async {
                Ok(self.admin.delete_resource(&req.name, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(write.into()))
    }

    #[instrument(skip_all)]
    async fn check_resources(
        &self,
        request: Request<proto::CheckResourcesRequest>,
    ) -> Result<Response<proto::CheckResourcesResponse>, Status> {
        self.authorize(&request, Rpc::CheckResources, "").await?;
        let token = bearer(&request);
        let req = request.into_inner();
        let after = after(&req.min_version, req.read.as_ref())?;
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
        self.authorize(&request, Rpc::ExportResources, "").await?;
        let export = self
            .admin
            .export_resources(&{
                let req = request.into_inner();
                after(&req.min_version, req.read.as_ref())?
            })
            .await?;
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
        let caller = self.authorize(&request, Rpc::ImportResources, "").await?;
        let req = request.into_inner();
        let done =
            async { Ok(self.admin.import_resources(&req.file, req.dry_run, ack(req.ack)?).await?) }.await;
        let report = self.policy.audited_import(&caller, Rpc::ImportResources, req.dry_run, done).await?;
        Ok(Response::new(proto::ImportResourcesResponse {
            plan: Some(report.plan.into()),
            applied: report.applied,
            source_cluster: report.source_cluster,
            write: report.write.map(Into::into),
            served_by: entry_served_by(&self.admin),
        }))
    }

    #[instrument(skip_all)]
    async fn export_config(
        &self,
        request: Request<proto::ExportConfigRequest>,
    ) -> Result<Response<proto::ExportConfigResponse>, Status> {
        self.authorize(&request, Rpc::ExportConfig, "").await?;
        let export = self
            .admin
            .export_config(&{
                let req = request.into_inner();
                after(&req.min_version, req.read.as_ref())?
            })
            .await?;
        Ok(Response::new(proto::ExportConfigResponse {
            file: export.file,
            licenses: export.licenses,
            dataflows: export.dataflows,
            settings: export.settings,
            resources: export.resources,
            served_by: export.served_by.to_string(),
        }))
    }

    #[instrument(skip_all)]
    async fn import_config(
        &self,
        request: Request<proto::ImportConfigRequest>,
    ) -> Result<Response<proto::ImportConfigResponse>, Status> {
        let caller = self.authorize(&request, Rpc::ImportConfig, "").await?;
        let req = request.into_inner();
        let done = async { Ok(self.admin.import_config(&req.file, req.dry_run, ack(req.ack)?).await?) }.await;
        let report = self.policy.audited_import(&caller, Rpc::ImportConfig, req.dry_run, done).await?;
        Ok(Response::new(proto::ImportConfigResponse {
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
        let target = request.get_ref().node_id.clone();
        let rpc = if request.get_ref().state == proto::NodeState::Removed as i32 {
            Rpc::RemoveNode
        } else {
            Rpc::SetNodeState
        };
        let caller = self.authorize(&request, rpc, &target).await?;
        let req = request.into_inner();
        let done = self
            .policy
            .audited_op(&caller, rpc, &target, async {
                let state = match proto::NodeState::try_from(req.state) {
                    Ok(proto::NodeState::Active) => MemberState::Active,
                    Ok(proto::NodeState::Draining) => MemberState::Draining,
                    Ok(proto::NodeState::Removed) => MemberState::Removed,
                    Err(_) => {
                        return Err(Status::invalid_argument(format!("unknown node state {}", req.state)));
                    }
                };
                let id: NodeId = req
                    .node_id
                    .parse()
                    .map_err(|e| Status::invalid_argument(format!("invalid node id: {e}")))?;
                Ok(self.admin.set_node_state(&id, state, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(proto::SetNodeStateResponse {
            member: Some((&done.member).into()),
            write: Some(done.write.into()),
            previous_state: done.previous.map(|s| s.to_string()).unwrap_or_default(),
        }))
    }

    #[instrument(skip_all)]
    async fn add_user(
        &self,
        request: Request<proto::AddUserRequest>,
    ) -> Result<Response<proto::UserTokenResponse>, Status> {
        let target = request.get_ref().name.clone();
        let caller = self.authorize(&request, Rpc::AddUser, &target).await?;
        let req = request.into_inner();
        let added = self
            .policy
            .audited_op(&caller, Rpc::AddUser, &target, async {
                let role = role_from_wire(req.role).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown role {}: give viewer, operator or admin",
                        req.role
                    ))
                })?;
                Ok(self.admin.add_user(&req.name, role, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(added.into()))
    }

    #[instrument(skip_all)]
    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        self.authorize(&request, Rpc::ListUsers, "").await?;
        let users = self
            .admin
            .users(&{
                let req = request.into_inner();
                after(&req.min_version, req.read.as_ref())?
            })
            .await?;
        let users = users.0.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::ListUsersResponse { users, served_by: entry_served_by(&self.admin) }))
    }

    #[instrument(skip_all)]
    async fn revoke_user(
        &self,
        request: Request<proto::RevokeUserRequest>,
    ) -> Result<Response<proto::RevokeUserResponse>, Status> {
        let target = request.get_ref().name.clone();
        let caller = self.authorize(&request, Rpc::RevokeUser, &target).await?;
        let req = request.into_inner();
        let done = self
            .policy
            .audited_op(&caller, Rpc::RevokeUser, &target, async {
                Ok(self.admin.revoke_user(&req.name, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(proto::RevokeUserResponse {
            user: Some(done.user.into()),
            write: Some(done.write.into()),
        }))
    }

    #[instrument(skip_all)]
    async fn rotate_user(
        &self,
        request: Request<proto::RotateUserRequest>,
    ) -> Result<Response<proto::UserTokenResponse>, Status> {
        let target = request.get_ref().name.clone();
        let caller = self.authorize(&request, Rpc::RotateUser, &target).await?;
        let req = request.into_inner();
        let rotated = self
            .policy
            .audited_op(&caller, Rpc::RotateUser, &target, async {
                Ok(self.admin.rotate_user(&req.name, ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(rotated.into()))
    }

    #[instrument(skip_all)]
    async fn reseal_secrets(
        &self,
        request: Request<proto::ResealSecretsRequest>,
    ) -> Result<Response<proto::ResealSecretsResponse>, Status> {
        let caller = self.authorize(&request, Rpc::ResealSecrets, "resources").await?;
        let req = request.into_inner();
        let report = self
            .policy
            .audited_op(&caller, Rpc::ResealSecrets, "resources", async {
                Ok(self.admin.reseal_secrets(ack(req.ack)?).await?)
            })
            .await?;
        Ok(Response::new(proto::ResealSecretsResponse {
            resealed: report.resealed,
            current: report.current,
            unreadable: report.unreadable,
            write: report.write.map(Into::into),
            served_by: entry_served_by(&self.admin),
        }))
    }

    #[instrument(skip_all)]
    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        self.authorize(&request, Rpc::ListAudit, "").await?;
        let req = request.into_inner();
        let query = AuditQuery {
            after: after("", req.read.as_ref())?,
            since_ms: req.since_ms,
            user: (!req.user.is_empty()).then_some(req.user),
            limit: (req.limit > 0).then_some(req.limit),
        };
        let log = self.admin.audit_log(&query).await?;
        let entries = log.0.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::ListAuditResponse { entries, served_by: entry_served_by(&self.admin) }))
    }

    type WatchStream = WatchEvents;

    #[instrument(skip_all)]
    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.watch_stream(request).await
    }

    #[instrument(skip_all)]
    async fn set_balancer_strategy(
        &self,
        request: Request<proto::SetBalancerStrategyRequest>,
    ) -> Result<Response<proto::SetBalancerStrategyResponse>, Status> {
        self.set_strategy(request).await
    }

    #[instrument(skip_all)]
    async fn clear_balancer_strategy(
        &self,
        request: Request<proto::ClearBalancerStrategyRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        self.clear_strategy(request).await
    }

    #[instrument(skip_all)]
    async fn set_balancer_weight(
        &self,
        request: Request<proto::SetBalancerWeightRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        self.set_weight(request).await
    }

    #[instrument(skip_all)]
    async fn clear_balancer_weight(
        &self,
        request: Request<proto::ClearBalancerWeightRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        self.clear_weight(request).await
    }

    #[instrument(skip_all)]
    async fn show_balancer_settings(
        &self,
        request: Request<proto::ShowBalancerSettingsRequest>,
    ) -> Result<Response<proto::ShowBalancerSettingsResponse>, Status> {
        self.show_settings(request).await
    }
}

fn entry_served_by(admin: &Admin) -> String {
    admin.context().id.to_string()
}
