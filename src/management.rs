//! The management service: config get/put/delete/list and cluster status, served
//! by every node (reach it through the balancer).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spectrum_replication::{
    AckLevel, ConfigStore, Record, ReplicationError, Replicator, StoreError, VersionToken, WriteBatch,
};
use tonic::{Request, Response, Status};
use tracing::{debug, instrument};

use crate::keys::{self, KeyError, Namespace};
use crate::node::NodeContext;

/// Generated types and stubs of `spectrum.management.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("spectrum.management.v1");
}

use proto::management_server::Management;

/// Longest a read carrying a version token waits for this node to catch up.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// The management API of one node.
#[derive(Clone)]
pub struct ManagementService {
    ctx: NodeContext,
    replicator: Arc<dyn Replicator>,
    addr: String,
    write_timeout: Duration,
}

impl fmt::Debug for ManagementService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementService").field("node", &self.ctx.id).finish_non_exhaustive()
    }
}

impl ManagementService {
    /// The service for the node described by `ctx`, serving at `addr`.
    pub fn new(
        ctx: NodeContext,
        replicator: Arc<dyn Replicator>,
        addr: String,
        write_timeout: Duration,
    ) -> Self {
        Self { ctx, replicator, addr, write_timeout }
    }

    async fn write(&self, batch: WriteBatch, ack: i32) -> Result<(VersionToken, u32, u32), Status> {
        let ack = match proto::AckLevel::try_from(ack) {
            Ok(proto::AckLevel::Local) => AckLevel::Local,
            Ok(proto::AckLevel::Quorum) => AckLevel::Quorum,
            Ok(proto::AckLevel::All) => AckLevel::All,
            Err(_) => return Err(Status::invalid_argument(format!("unknown ack level {ack}"))),
        };
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
        Ok((token, report.acked as u32, report.members as u32))
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

fn entry(record: &Record) -> Option<proto::Entry> {
    record.value.as_ref().map(|v| proto::Entry {
        key: record.key.clone(),
        value: v.to_vec(),
        version: record.token().to_string(),
        stamp_wall_ms: record.stamp.wall_ms,
        stamp_logical: record.stamp.logical,
    })
}

#[tonic::async_trait]
impl Management for ManagementService {
    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn get(&self, request: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        let req = request.into_inner();
        keys::classify(&req.key).map_err(key_status)?;
        self.wait_for(&req.min_version).await?;
        let record = self.ctx.store.get(&req.key).await.map_err(store_status)?;
        match record.as_ref().and_then(entry) {
            Some(entry) => Ok(Response::new(proto::GetResponse {
                entry: Some(entry),
                served_by: self.ctx.id.to_string(),
            })),
            None => Err(Status::not_found(format!("no config entry {:?}", req.key))),
        }
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn put(&self, request: Request<proto::PutRequest>) -> Result<Response<proto::PutResponse>, Status> {
        let req = request.into_inner();
        keys::validate_write(&req.key, Some(&req.value)).map_err(key_status)?;
        let (token, acked, members) =
            self.write(WriteBatch::new().put(req.key.clone(), Bytes::from(req.value)), req.ack).await?;
        debug!(key = %req.key, version = %token, "config entry written");
        Ok(Response::new(proto::PutResponse {
            version: token.to_string(),
            acked,
            members,
            served_by: self.ctx.id.to_string(),
        }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let req = request.into_inner();
        keys::validate_write(&req.key, None).map_err(key_status)?;
        let live =
            self.ctx.store.get(&req.key).await.map_err(store_status)?.is_some_and(|r| !r.is_tombstone());
        if !live {
            return Err(Status::not_found(format!("no config entry {:?}", req.key)));
        }
        let (token, acked, members) = self.write(WriteBatch::new().delete(req.key.clone()), req.ack).await?;
        debug!(key = %req.key, version = %token, "config entry deleted");
        Ok(Response::new(proto::DeleteResponse {
            version: token.to_string(),
            acked,
            members,
            served_by: self.ctx.id.to_string(),
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
        let entries = records.iter().filter_map(entry).collect();
        Ok(Response::new(proto::ListResponse { entries, served_by: self.ctx.id.to_string() }))
    }

    #[instrument(skip_all, fields(node = %self.ctx.id))]
    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let store = &self.ctx.store;
        let members = store
            .scan(Namespace::Membership.prefix())
            .await
            .map_err(store_status)?
            .iter()
            .filter_map(|r| r.value.as_ref())
            .filter_map(|v| serde_json::from_slice::<spectrum_core::Member>(v).ok())
            .map(|m| proto::MemberStatus { id: m.id.to_string(), addr: m.addr, state: m.state.to_string() })
            .collect();
        let peers = self
            .replicator
            .peers()
            .into_iter()
            .map(|p| proto::PeerStatus {
                addr: p.addr,
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
        Ok(Response::new(proto::StatusResponse {
            cluster_id: self.ctx.cluster.to_string(),
            node_id: self.ctx.id.to_string(),
            addr: self.addr.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            members,
            peers,
            keys: keys as u64,
            digest: digest.entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
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
