//! The management service, served by every node (reach it through the balancer):
//! config get/put/delete/list, cluster status, license, dataflows, resources
//! (create, list, show, delete, check on every node, export, import) and node
//! drain/undrain.
//!
//! # Secrets
//!
//! Resource definitions arrive with their secrets in clear; the service seals them
//! with the cluster's [`ClusterKey`] before anything is stored, and every answer
//! (`Get`, `List`, `ListResources`, `ShowResource`, `ExportResources`) carries the
//! definition redacted. A node without a cluster key refuses to store a secret
//! (`FAILED_PRECONDITION`) rather than store it in clear.
//!
//! # Errors
//!
//! Bad input is `INVALID_ARGUMENT` naming the field at fault, and nothing is stored;
//! a name already taken on create is `ALREADY_EXISTS`; a missing entry `NOT_FOUND`;
//! the `membership/` namespace written with `Put` is `PERMISSION_DENIED` (use
//! `SetNodeState`). Every call needs the bearer token when one is configured
//! ([`BearerAuth`]): `UNAUTHENTICATED` otherwise, and nothing is done.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::join_all;
use spectrum_core::{Member, MemberState, NodeId, TransportConfig};
use spectrum_replication::{
    AckLevel, ConfigStore, Record, ReplicationError, Replicator, StoreError, VersionToken, WriteBatch,
};
use spectrum_resources::{
    ClusterKey, ExportFile, ExportOptions, ResourceDefinition, ResourceName, SecretError, prepare_import,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};
use tracing::{debug, info, instrument};

use crate::keys::{self, KeyError, Namespace};
use crate::license::{self, Date, License};
use crate::node::NodeContext;
use crate::registry::{RegistryError, ResourceRegistry};

/// Generated types and stubs of `spectrum.management.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("spectrum.management.v1");
}

use proto::management_server::Management;

/// Longest a read carrying a version token waits for this node to catch up.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// Longest the answering node waits for a member's answer to a resource check.
pub const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The management API of one node.
#[derive(Clone)]
pub struct ManagementService {
    ctx: NodeContext,
    replicator: Arc<dyn Replicator>,
    addr: String,
    write_timeout: Duration,
    cluster_key: Option<Arc<ClusterKey>>,
    transport: TransportConfig,
    ready: Arc<AtomicBool>,
}

impl fmt::Debug for ManagementService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementService")
            .field("node", &self.ctx.id)
            .field("has_cluster_key", &self.cluster_key.is_some())
            .finish_non_exhaustive()
    }
}

impl ManagementService {
    /// The service for the node described by `ctx`, serving at `addr`. Secrets are
    /// sealed with the node's cluster key ([`NodeContext::cluster_key`]); without
    /// one, the node refuses to store secrets.
    pub fn new(
        ctx: NodeContext,
        replicator: Arc<dyn Replicator>,
        addr: String,
        write_timeout: Duration,
    ) -> Self {
        let cluster_key = ctx.cluster_key.clone();
        Self {
            ctx,
            replicator,
            addr,
            write_timeout,
            cluster_key,
            transport: TransportConfig::default(),
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Seals and opens resource secrets with `key`. Give every node of a cluster the
    /// same key.
    pub fn cluster_key(mut self, key: Arc<ClusterKey>) -> Self {
        self.cluster_key = Some(key);
        self
    }

    /// Refuses writes (UNAVAILABLE) while `ready` is false: a node with an empty
    /// store writes nothing until it has heard from a peer. Default: always ready.
    pub fn ready_flag(mut self, ready: Arc<AtomicBool>) -> Self {
        self.ready = ready;
        self
    }

    /// Transport settings for the calls this node makes to other members (resource
    /// checks); the default otherwise.
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    fn registry(&self) -> ResourceRegistry {
        ResourceRegistry::new(self.ctx.store.clone(), self.cluster_key.clone())
    }

    fn served_by(&self) -> String {
        self.ctx.id.to_string()
    }

    async fn write(&self, batch: WriteBatch, ack: i32) -> Result<proto::WriteResult, Status> {
        let ack = match proto::AckLevel::try_from(ack) {
            Ok(proto::AckLevel::Local) => AckLevel::Local,
            Ok(proto::AckLevel::Quorum) => AckLevel::Quorum,
            Ok(proto::AckLevel::All) => AckLevel::All,
            Err(_) => return Err(Status::invalid_argument(format!("unknown ack level {ack}"))),
        };
        if !self.ready.load(Ordering::Acquire) {
            return Err(Status::unavailable(format!(
                "{} is catching up with the cluster (no peer has answered yet); retry",
                self.ctx.id
            )));
        }
        let records = self.ctx.store.apply(batch).await.map_err(store_status)?;
        let token =
            records.last().map(Record::token).ok_or_else(|| Status::internal("store applied no records"))?;
        let report =
            self.replicator.replicate(records, ack, self.write_timeout).await.map_err(|e| match e {
                ReplicationError::AckTimeout { .. } => Status::deadline_exceeded(format!(
                    "write {token} is applied on {} and keeps replicating, but: {e}",
                    self.ctx.id
                )),
                other => Status::unavailable(other.to_string()),
            })?;
        Ok(proto::WriteResult {
            version: token.to_string(),
            acked: report.acked as u32,
            members: report.members as u32,
            served_by: self.served_by(),
        })
    }

    /// Waits (bounded) until this node holds the write named by `token`.
    async fn wait_for(&self, token: &str) -> Result<(), Status> {
        if token.is_empty() {
            return Ok(());
        }
        let token: VersionToken =
            token.parse().map_err(|e: StoreError| Status::invalid_argument(e.to_string()))?;
        let deadline = Instant::now() + READ_YOUR_WRITES_WAIT;
        let mut feed = self.ctx.store.subscribe();
        loop {
            if self.ctx.store.digest().await.map_err(store_status)?.covers(&token) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::unavailable(format!(
                    "node {} has not caught up to version {token} within {} ms; retry",
                    self.ctx.id,
                    READ_YOUR_WRITES_WAIT.as_millis()
                )));
            }
            // Wake on any stored record, and re-check at least every 50 ms (a digest can
            // also advance through `covers` with no record stored).
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), feed.recv()).await;
        }
    }

    async fn live(&self, key: &str) -> Result<Option<Record>, Status> {
        Ok(self.ctx.store.get(key).await.map_err(store_status)?.filter(|r| !r.is_tombstone()))
    }

    /// The bytes to store for a resource definition: secrets given as the redaction
    /// placeholder take the existing definition's (same kind), clear ones are sealed.
    async fn resource_to_store(&self, def: &ResourceDefinition) -> Result<Vec<u8>, Status> {
        let registry = self.registry();
        let def = if def.has_redacted_secret() {
            let existing = registry.get(def.name.as_str()).await.map_err(registry_status)?;
            let file = ExportFile {
                format_version: spectrum_resources::transfer::FORMAT_VERSION,
                cluster: self.ctx.cluster.clone(),
                exported_at_ms: 0,
                resources: vec![def.clone()],
            };
            let existing: Vec<ResourceDefinition> = existing.into_iter().map(|s| s.definition).collect();
            let prepared = prepare_import(&existing, &file);
            if !prepared.plan.needs_secret.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "invalid resource definition: spec.password: {}",
                    SecretError::Placeholder
                )));
            }
            prepared.writes.into_iter().next().unwrap_or_else(|| def.clone())
        } else {
            def.clone()
        };
        let sealed = registry.seal_definition(&def).map_err(registry_status)?;
        sealed
            .to_json_bytes()
            .map_err(|e| Status::invalid_argument(format!("invalid resource definition: {e}")))
    }

    /// A stored value as the API returns it: resource definitions redacted.
    fn shown_value(key: &str, value: &[u8]) -> Vec<u8> {
        if !key.starts_with(Namespace::Resources.prefix()) {
            return value.to_vec();
        }
        ResourceDefinition::from_json_bytes(value)
            .ok()
            .and_then(|def| def.redacted().to_json_bytes().ok())
            .unwrap_or_default()
    }

    fn entry(record: &Record) -> Option<proto::Entry> {
        record.value.as_ref().map(|v| proto::Entry {
            key: record.key.clone(),
            value: Self::shown_value(&record.key, v),
            version: record.token().to_string(),
            stamp_wall_ms: record.stamp.wall_ms,
            stamp_logical: record.stamp.logical,
        })
    }

    async fn members(&self) -> Result<Vec<Member>, Status> {
        Ok(self
            .ctx
            .store
            .scan(Namespace::Membership.prefix())
            .await
            .map_err(store_status)?
            .iter()
            .filter_map(|r| r.value.as_ref())
            .filter_map(|v| serde_json::from_slice::<Member>(v).ok())
            .collect())
    }

    async fn local_availability(&self, only: &[String]) -> Result<Vec<proto::ResourceAvailability>, Status> {
        let statuses = self
            .registry()
            .check_all(&*self.ctx.resolver, &self.ctx.id, only)
            .await
            .map_err(registry_status)?;
        Ok(statuses
            .into_iter()
            .map(|s| proto::ResourceAvailability {
                name: s.name,
                kind: s.kind,
                available: s.availability.available,
                detail: s.availability.detail,
            })
            .collect())
    }

    async fn check_member(
        &self,
        member: &Member,
        request: proto::CheckResourcesRequest,
        authorization: Option<MetadataValue<Ascii>>,
    ) -> proto::NodeResourceCheck {
        let mut out = proto::NodeResourceCheck {
            node_id: member.id.to_string(),
            addr: member.addr.to_string(),
            error: String::new(),
            resources: Vec::new(),
        };
        let answer = async {
            let channel = self.transport.channel(&member.addr);
            let mut client = proto::management_client::ManagementClient::new(channel);
            let mut request = Request::new(request);
            if let Some(auth) = authorization {
                request.metadata_mut().insert("authorization", auth);
            }
            request.set_timeout(PEER_CHECK_TIMEOUT);
            match tokio::time::timeout(PEER_CHECK_TIMEOUT, client.check_resources(request)).await {
                Err(_) => Err(format!("no answer within {} s", PEER_CHECK_TIMEOUT.as_secs())),
                Ok(Err(status)) => Err(format!("{} ({:?})", status.message(), status.code())),
                Ok(Ok(response)) => Ok(response.into_inner()),
            }
        }
        .await;
        match answer {
            Ok(answer) => match answer.nodes.into_iter().next() {
                Some(node) => out.resources = node.resources,
                None => out.error = "the member sent no results".into(),
            },
            Err(e) => {
                debug!(peer = %member.id, error = %e, "resource check on a member failed");
                out.error = e;
            }
        }
        out
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidKey { .. }
        | StoreError::ValueTooLarge { .. }
        | StoreError::EmptyBatch
        | StoreError::InvalidToken { .. }
        | StoreError::InvalidRecord { .. } => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn key_status(e: KeyError) -> Status {
    match e {
        KeyError::ReadOnly { .. } => Status::permission_denied(e.to_string()),
        other => Status::invalid_argument(other.to_string()),
    }
}

fn registry_status(e: RegistryError) -> Status {
    match &e {
        RegistryError::Store(_) => Status::internal(e.to_string()),
        RegistryError::NotFound { .. } => Status::not_found(e.to_string()),
        RegistryError::Invalid { .. } => Status::failed_precondition(e.to_string()),
        RegistryError::Secret { source, .. } => match source {
            SecretError::Placeholder => Status::invalid_argument(e.to_string()),
            SecretError::Field { source: inner, .. } if **inner == SecretError::Placeholder => {
                Status::invalid_argument(e.to_string())
            }
            SecretError::NoKey | SecretError::Field { .. } => Status::failed_precondition(format!(
                "{e}; give every node the same cluster_key in its configuration"
            )),
            _ => Status::failed_precondition(e.to_string()),
        },
    }
}

fn resource_name(name: &str) -> Result<ResourceName, Status> {
    ResourceName::new(name).map_err(|e| Status::invalid_argument(format!("invalid resource name: {e}")))
}

fn named(namespace: Namespace, name: &str) -> Result<String, Status> {
    keys::validate_name(namespace, name).map_err(key_status)?;
    Ok(namespace.key(name))
}

fn license_name(name: &str) -> &str {
    if name.is_empty() { license::DEFAULT_NAME } else { name }
}

fn license_info(name: &str, license: &License, version: String, today: Date) -> proto::LicenseInfo {
    let days_left = license.days_left(today);
    proto::LicenseInfo {
        name: name.to_owned(),
        owner: license.owner.clone(),
        seats: license.seats,
        expires: license.expires.to_string(),
        days_left,
        expired: days_left < 0,
        document: serde_json::to_vec(&license.document).unwrap_or_default(),
        version,
    }
}

/// The API's form of a stored definition: redacted.
fn resource_message(def: &ResourceDefinition, version: String) -> Result<proto::Resource, Status> {
    let redacted = def.redacted();
    let definition = redacted.to_json_bytes().map_err(|e| Status::internal(e.to_string()))?;
    Ok(proto::Resource {
        name: def.name.to_string(),
        kind: def.kind().to_owned(),
        description: def.description.clone().unwrap_or_default(),
        definition,
        version,
        has_secret: redacted.has_redacted_secret(),
    })
}

fn dataflow_message(record: &Record) -> Option<proto::Dataflow> {
    let value = record.value.as_ref()?;
    Some(proto::Dataflow {
        name: record.key.strip_prefix(Namespace::Dataflows.prefix()).unwrap_or(&record.key).to_owned(),
        definition: value.to_vec(),
        version: record.token().to_string(),
    })
}

fn member_message(m: &Member) -> proto::MemberStatus {
    proto::MemberStatus { id: m.id.to_string(), addr: m.addr.to_string(), state: m.state.to_string() }
}

#[tonic::async_trait]
impl Management for ManagementService {
    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn get(&self, request: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        let req = request.into_inner();
        keys::classify(&req.key).map_err(key_status)?;
        self.wait_for(&req.min_version).await?;
        let record = self.ctx.store.get(&req.key).await.map_err(store_status)?;
        match record.as_ref().and_then(Self::entry) {
            Some(entry) => {
                Ok(Response::new(proto::GetResponse { entry: Some(entry), served_by: self.served_by() }))
            }
            None => Err(Status::not_found(format!("no config entry {:?}", req.key))),
        }
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn put(&self, request: Request<proto::PutRequest>) -> Result<Response<proto::PutResponse>, Status> {
        let req = request.into_inner();
        let namespace = keys::validate_write(&req.key, Some(&req.value)).map_err(key_status)?;
        let value = match namespace {
            Namespace::Resources => {
                let def = ResourceDefinition::from_json_bytes(&req.value)
                    .map_err(|e| Status::invalid_argument(format!("invalid resource definition: {e}")))?;
                self.resource_to_store(&def).await?
            }
            Namespace::License => {
                let license = License::from_json_bytes(&req.value)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                license.check_current(Date::today()).map_err(|e| Status::invalid_argument(e.to_string()))?;
                req.value
            }
            _ => req.value,
        };
        let write = self.write(WriteBatch::new().put(req.key.clone(), Bytes::from(value)), req.ack).await?;
        debug!(key = %req.key, version = %write.version, "config entry written");
        Ok(Response::new(proto::PutResponse {
            version: write.version,
            acked: write.acked,
            members: write.members,
            served_by: write.served_by,
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let req = request.into_inner();
        keys::validate_write(&req.key, None).map_err(key_status)?;
        if self.live(&req.key).await?.is_none() {
            return Err(Status::not_found(format!("no config entry {:?}", req.key)));
        }
        let write = self.write(WriteBatch::new().delete(req.key.clone()), req.ack).await?;
        debug!(key = %req.key, version = %write.version, "config entry deleted");
        Ok(Response::new(proto::DeleteResponse {
            version: write.version,
            acked: write.acked,
            members: write.members,
            served_by: write.served_by,
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn list(
        &self,
        request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let req = request.into_inner();
        self.wait_for(&req.min_version).await?;
        let records = self.ctx.store.scan(&req.prefix).await.map_err(store_status)?;
        let entries = records.iter().filter_map(Self::entry).collect();
        Ok(Response::new(proto::ListResponse { entries, served_by: self.served_by() }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let store = &self.ctx.store;
        let members = self.members().await?.iter().map(member_message).collect();
        let peers = self
            .replicator
            .peers()
            .into_iter()
            .map(|p| proto::PeerStatus {
                addr: p.addr.to_string(),
                id: p.id.map(|i| i.to_string()).unwrap_or_default(),
                last_contact_ms_ago: p.last_contact.map_or(-1, |t| t.elapsed().as_millis() as i64),
                lag: p.lag,
                has_clock_offset: p.clock_offset_ms.is_some(),
                clock_offset_ms: p.clock_offset_ms.unwrap_or(0),
                clock_skewed: p.clock_skewed,
                last_error: p.last_error.unwrap_or_default(),
            })
            .collect();
        let keys = store.scan("").await.map_err(store_status)?.iter().filter(|r| !r.is_tombstone()).count();
        let digest = store.digest().await.map_err(store_status)?;
        let resources = self.local_availability(&[]).await?;
        Ok(Response::new(proto::StatusResponse {
            cluster_id: self.ctx.cluster.to_string(),
            node_id: self.ctx.id.to_string(),
            addr: self.addr.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            members,
            peers,
            keys: keys as u64,
            digest: digest.entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            resources,
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn set_license(
        &self,
        request: Request<proto::SetLicenseRequest>,
    ) -> Result<Response<proto::SetLicenseResponse>, Status> {
        let req = request.into_inner();
        let name = license_name(&req.name);
        let key = named(Namespace::License, name)?;
        let license =
            License::from_json_bytes(&req.license).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let today = Date::today();
        license.check_current(today).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let write = self.write(WriteBatch::new().put(key, Bytes::from(req.license)), req.ack).await?;
        info!(license = name, expires = %license.expires, "license installed");
        Ok(Response::new(proto::SetLicenseResponse {
            license: Some(license_info(name, &license, write.version.clone(), today)),
            write: Some(write),
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn show_license(
        &self,
        request: Request<proto::ShowLicenseRequest>,
    ) -> Result<Response<proto::ShowLicenseResponse>, Status> {
        let req = request.into_inner();
        let name = license_name(&req.name);
        let key = named(Namespace::License, name)?;
        self.wait_for(&req.min_version).await?;
        let record = self.live(&key).await?.ok_or_else(|| {
            Status::not_found(format!("no license {name:?} is installed; install one with SetLicense"))
        })?;
        let value = record.value.as_deref().unwrap_or_default();
        let license = License::from_json_bytes(value).map_err(|e| {
            Status::failed_precondition(format!("the stored license {name:?} is invalid: {e}"))
        })?;
        Ok(Response::new(proto::ShowLicenseResponse {
            license: Some(license_info(name, &license, record.token().to_string(), Date::today())),
            served_by: self.served_by(),
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn create_dataflow(
        &self,
        request: Request<proto::CreateDataflowRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let req = request.into_inner();
        let key = named(Namespace::Dataflows, &req.name)?;
        keys::validate_write(&key, Some(&req.definition)).map_err(key_status)?;
        if !req.replace && self.live(&key).await?.is_some() {
            return Err(Status::already_exists(format!(
                "dataflow {:?} already exists; pass replace to change it",
                req.name
            )));
        }
        let write = self.write(WriteBatch::new().put(key, Bytes::from(req.definition)), req.ack).await?;
        debug!(dataflow = %req.name, version = %write.version, "dataflow stored");
        Ok(Response::new(write))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn list_dataflows(
        &self,
        request: Request<proto::ListDataflowsRequest>,
    ) -> Result<Response<proto::ListDataflowsResponse>, Status> {
        self.wait_for(&request.into_inner().min_version).await?;
        let records = self.ctx.store.scan(Namespace::Dataflows.prefix()).await.map_err(store_status)?;
        Ok(Response::new(proto::ListDataflowsResponse {
            dataflows: records.iter().filter_map(dataflow_message).collect(),
            served_by: self.served_by(),
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn show_dataflow(
        &self,
        request: Request<proto::ShowDataflowRequest>,
    ) -> Result<Response<proto::ShowDataflowResponse>, Status> {
        let req = request.into_inner();
        let key = named(Namespace::Dataflows, &req.name)?;
        self.wait_for(&req.min_version).await?;
        let record =
            self.live(&key).await?.ok_or_else(|| Status::not_found(format!("no dataflow {:?}", req.name)))?;
        Ok(Response::new(proto::ShowDataflowResponse {
            dataflow: dataflow_message(&record),
            served_by: self.served_by(),
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn delete_dataflow(
        &self,
        request: Request<proto::DeleteDataflowRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let req = request.into_inner();
        let key = named(Namespace::Dataflows, &req.name)?;
        if self.live(&key).await?.is_none() {
            return Err(Status::not_found(format!("no dataflow {:?}", req.name)));
        }
        Ok(Response::new(self.write(WriteBatch::new().delete(key), req.ack).await?))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn create_resource(
        &self,
        request: Request<proto::CreateResourceRequest>,
    ) -> Result<Response<proto::CreateResourceResponse>, Status> {
        let req = request.into_inner();
        let def = ResourceDefinition::from_json_bytes(&req.definition)
            .map_err(|e| Status::invalid_argument(format!("invalid resource definition: {e}")))?;
        let key = Namespace::Resources.key(def.name.as_str());
        if !req.replace && self.live(&key).await?.is_some() {
            return Err(Status::already_exists(format!(
                "resource {:?} already exists; pass replace to change it",
                def.name.as_str()
            )));
        }
        let value = self.resource_to_store(&def).await?;
        let write = self.write(WriteBatch::new().put(key, Bytes::from(value)), req.ack).await?;
        info!(resource = %def.name, kind = def.kind(), version = %write.version, "resource stored");
        Ok(Response::new(proto::CreateResourceResponse {
            resource: Some(resource_message(&def, write.version.clone())?),
            write: Some(write),
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn list_resources(
        &self,
        request: Request<proto::ListResourcesRequest>,
    ) -> Result<Response<proto::ListResourcesResponse>, Status> {
        self.wait_for(&request.into_inner().min_version).await?;
        let stored = self.registry().list().await.map_err(registry_status)?;
        let resources = stored
            .iter()
            .map(|s| resource_message(&s.definition, s.version.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(proto::ListResourcesResponse { resources, served_by: self.served_by() }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn show_resource(
        &self,
        request: Request<proto::ShowResourceRequest>,
    ) -> Result<Response<proto::ShowResourceResponse>, Status> {
        let req = request.into_inner();
        let name = resource_name(&req.name)?;
        self.wait_for(&req.min_version).await?;
        let stored = self
            .registry()
            .get(name.as_str())
            .await
            .map_err(registry_status)?
            .ok_or_else(|| Status::not_found(format!("no resource {:?}", req.name)))?;
        Ok(Response::new(proto::ShowResourceResponse {
            resource: Some(resource_message(&stored.definition, stored.version)?),
            served_by: self.served_by(),
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn delete_resource(
        &self,
        request: Request<proto::DeleteResourceRequest>,
    ) -> Result<Response<proto::WriteResult>, Status> {
        let req = request.into_inner();
        let name = resource_name(&req.name)?;
        let key = Namespace::Resources.key(name.as_str());
        if self.live(&key).await?.is_none() {
            return Err(Status::not_found(format!("no resource {:?}", req.name)));
        }
        let write = self.write(WriteBatch::new().delete(key), req.ack).await?;
        info!(resource = %name, version = %write.version, "resource deleted");
        Ok(Response::new(write))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn check_resources(
        &self,
        request: Request<proto::CheckResourcesRequest>,
    ) -> Result<Response<proto::CheckResourcesResponse>, Status> {
        let authorization = request.metadata().get("authorization").cloned();
        let req = request.into_inner();
        for name in &req.names {
            resource_name(name)?;
        }
        self.wait_for(&req.min_version).await?;
        let local = proto::NodeResourceCheck {
            node_id: self.ctx.id.to_string(),
            addr: self.addr.clone(),
            error: String::new(),
            resources: self.local_availability(&req.names).await?,
        };
        if req.local_only {
            return Ok(Response::new(proto::CheckResourcesResponse {
                nodes: vec![local],
                served_by: self.served_by(),
            }));
        }
        let registry = self.registry();
        for name in &req.names {
            if registry.get(name).await.map_err(registry_status)?.is_none() {
                return Err(Status::not_found(format!("no resource {name:?}")));
            }
        }
        let forward = proto::CheckResourcesRequest {
            names: req.names.clone(),
            local_only: true,
            min_version: req.min_version.clone(),
        };
        let others: Vec<Member> = self
            .members()
            .await?
            .into_iter()
            .filter(|m| m.id != self.ctx.id && m.state != MemberState::Left)
            .collect();
        let mut nodes = vec![local];
        nodes.extend(
            join_all(others.iter().map(|m| self.check_member(m, forward.clone(), authorization.clone())))
                .await,
        );
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(Response::new(proto::CheckResourcesResponse { nodes, served_by: self.served_by() }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn export_resources(
        &self,
        request: Request<proto::ExportResourcesRequest>,
    ) -> Result<Response<proto::ExportResourcesResponse>, Status> {
        self.wait_for(&request.into_inner().min_version).await?;
        let stored = self.registry().list().await.map_err(registry_status)?;
        let count = stored.len() as u32;
        let file = ExportFile::new(
            self.ctx.cluster.clone(),
            now_ms(),
            stored.into_iter().map(|s| s.definition),
            ExportOptions::default(),
        );
        let file = file.to_json_bytes().map_err(|e| Status::internal(e.to_string()))?;
        info!(resources = count, "resources exported");
        Ok(Response::new(proto::ExportResourcesResponse { file, count, served_by: self.served_by() }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn import_resources(
        &self,
        request: Request<proto::ImportResourcesRequest>,
    ) -> Result<Response<proto::ImportResourcesResponse>, Status> {
        let req = request.into_inner();
        let file =
            ExportFile::from_json_bytes(&req.file).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let registry = self.registry();
        // Compare with the existing definitions in clear where this node can open them,
        // so a file that holds the same secret in clear counts as unchanged.
        let existing: Vec<ResourceDefinition> = registry
            .list()
            .await
            .map_err(registry_status)?
            .into_iter()
            .map(|s| registry.open_definition(&s.definition).unwrap_or(s.definition))
            .collect();
        let prepared = prepare_import(&existing, &file);
        let plan = proto::ImportPlan {
            add: prepared.plan.add.iter().map(ToString::to_string).collect(),
            change: prepared.plan.change.iter().map(ToString::to_string).collect(),
            unchanged: prepared.plan.unchanged.iter().map(ToString::to_string).collect(),
            needs_secret: prepared.plan.needs_secret.iter().map(ToString::to_string).collect(),
            kept: prepared.plan.kept.iter().map(ToString::to_string).collect(),
        };
        let mut response = proto::ImportResourcesResponse {
            plan: Some(plan),
            applied: false,
            source_cluster: file.cluster.to_string(),
            write: None,
            served_by: self.served_by(),
        };
        if req.dry_run || prepared.writes.is_empty() {
            return Ok(Response::new(response));
        }
        let mut batch = WriteBatch::new();
        for def in &prepared.writes {
            let sealed = registry.seal_definition(def).map_err(registry_status)?;
            let bytes = sealed.to_json_bytes().map_err(|e| {
                Status::invalid_argument(format!("invalid resource definition {:?}: {e}", def.name.as_str()))
            })?;
            batch = batch.put(Namespace::Resources.key(def.name.as_str()), Bytes::from(bytes));
        }
        let write = self.write(batch, req.ack).await?;
        info!(
            from = %file.cluster,
            added = prepared.plan.add.len(),
            changed = prepared.plan.change.len(),
            version = %write.version,
            "resources imported"
        );
        response.applied = true;
        response.write = Some(write);
        Ok(Response::new(response))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn set_node_state(
        &self,
        request: Request<proto::SetNodeStateRequest>,
    ) -> Result<Response<proto::SetNodeStateResponse>, Status> {
        let req = request.into_inner();
        let state = match proto::NodeState::try_from(req.state) {
            Ok(proto::NodeState::Active) => MemberState::Active,
            Ok(proto::NodeState::Draining) => MemberState::Draining,
            Err(_) => return Err(Status::invalid_argument(format!("unknown node state {}", req.state))),
        };
        let id: NodeId =
            req.node_id.parse().map_err(|e| Status::invalid_argument(format!("invalid node id: {e}")))?;
        let key = Namespace::Membership.key(id.as_str());
        let record = self
            .live(&key)
            .await?
            .ok_or_else(|| Status::not_found(format!("no member {:?} in this cluster", req.node_id)))?;
        let mut member: Member = serde_json::from_slice(record.value.as_deref().unwrap_or_default())
            .map_err(|e| Status::internal(format!("membership record of {id} is unreadable: {e}")))?;
        if member.state == MemberState::Left {
            return Err(Status::failed_precondition(format!(
                "node {id} has left the cluster; it becomes active again when it restarts"
            )));
        }
        member.state = state;
        let value = serde_json::to_vec(&member).map_err(|e| Status::internal(e.to_string()))?;
        let write = self.write(WriteBatch::new().put(key, Bytes::from(value)), req.ack).await?;
        info!(member = %id, state = %state, version = %write.version, "member state set");
        Ok(Response::new(proto::SetNodeStateResponse {
            member: Some(member_message(&member)),
            write: Some(write),
        }))
    }
}

/// Checks the management API's bearer token: with a token configured, every call
/// must carry `authorization: Bearer <token>`; without one, every call passes.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<str>>,
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth").field("token", &self.token.as_ref().map(|_| "***")).finish()
    }
}

impl BearerAuth {
    /// Checks against `token`, or lets everything through when `None`.
    pub fn new(token: Option<Arc<str>>) -> Self {
        Self { token }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("missing bearer token: send authorization: Bearer <token>")
            })?;
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
