//! Resource definitions: create, list, show, delete, check on every member,
//! export and import. Secrets are sealed with the cluster key before anything is
//! stored and every answer shows definitions redacted.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use spectrum_core::Member;
use spectrum_replication::{AckLevel, WriteBatch};
use spectrum_resources::{ExportFile, ExportOptions, ResourceDefinition, ResourceName, prepare_import};
use tonic::Request;
use tracing::{debug, info};

use super::{Admin, AdminError, PEER_CHECK_TIMEOUT};

/// How long `status` shows this node's resource checks before it checks again
/// (in the background), while the definitions are unchanged: 10 s. Status is a
/// viewer's call that dashboards and the console poll (every 2 s), and a check
/// resolves and connects to every JDBC, file server and web service host;
/// `resources check` (an operator's) always checks anew.
pub const STATUS_CHECK_EVERY: Duration = Duration::from_secs(10);

/// This node's resource checks as `status` last made them, and whether a
/// refresh of them is under way.
#[derive(Debug)]
pub(super) struct StatusChecks {
    last: tokio::sync::Mutex<Option<Checked>>,
    refreshing: std::sync::atomic::AtomicBool,
    /// How long checks are shown before they are refreshed.
    every: Duration,
}

impl Default for StatusChecks {
    fn default() -> Self {
        Self::every(STATUS_CHECK_EVERY)
    }
}

impl StatusChecks {
    /// Checks shown for `every` before they are refreshed.
    pub(super) fn every(every: Duration) -> Self {
        Self {
            last: tokio::sync::Mutex::default(),
            refreshing: std::sync::atomic::AtomicBool::new(false),
            every,
        }
    }
}

/// Checks made: when, for which definitions (their versions), what they found.
#[derive(Debug)]
pub(super) struct Checked {
    at: Instant,
    versions: Vec<spectrum_replication::VersionToken>,
    resources: Vec<ResourceAvailability>,
}
use crate::auth::{Token, TokenInterceptor};
use crate::model::{
    ImportPlan, ImportReport, NodeResourceCheck, ReadAfter, ResourceAvailability, ResourceExport,
    ResourceInfo, ResourceStored, WriteReceipt,
};
use crate::namespace::Namespace;
use crate::pb::{proto, read_after_to_wire, read_options_to_wire};

impl Admin {
    /// Stores a resource definition (JSON); with `replace` false, a name already
    /// taken is refused. Clear secrets are sealed; a redacted secret keeps the
    /// stored definition's.
    ///
    /// # Errors
    ///
    /// [`AdminError::Definition`] naming the field; [`AdminError::AlreadyExists`];
    /// [`AdminError::Registry`] when there is no cluster key to seal a secret with.
    pub async fn create_resource(
        &self,
        definition: &[u8],
        replace: bool,
        ack: AckLevel,
    ) -> Result<ResourceStored, AdminError> {
        let def = ResourceDefinition::from_caller_json_bytes(definition)?;
        let key = Namespace::Resources.key(def.name.as_str());
        if !replace && self.live(&key).await?.is_some() {
            return Err(AdminError::AlreadyExists { what: "resource", name: def.name.to_string() });
        }
        let value = self.resource_to_store(&def).await?;
        let name = def.name.to_string();
        let write = self.create(key, Bytes::from(value), replace, ack, "resource", &name).await?;
        info!(resource = %def.name, kind = def.kind(), version = %write.version, "resource stored");
        Ok(ResourceStored { resource: info_of(&def, &write.version)?, write })
    }

    /// The bytes to store for a definition: placeholders take the existing
    /// definition's secrets (same kind), clear secrets are sealed.
    pub(super) async fn resource_to_store(&self, def: &ResourceDefinition) -> Result<Vec<u8>, AdminError> {
        let registry = self.registry();
        let def = if def.has_redacted_secret() {
            // A placeholder keeps the stored definition's secret; with nothing stored
            // (or another kind stored) it stays a placeholder and is refused.
            let existing = registry.get(def.name.as_str()).await?.map(|s| s.definition);
            def.keep_secrets_from(existing.as_ref().unwrap_or(def))
                .into_complete()
                .map_err(AdminError::Placeholder)?
        } else {
            def.clone()
        };
        Ok(registry.seal_definition(&def)?.to_json_bytes()?)
    }

    /// Every resource definition, redacted, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotCaughtUp`]; [`AdminError::Registry`].
    pub async fn resources(&self, after: &ReadAfter) -> Result<Vec<ResourceInfo>, AdminError> {
        self.wait_for(after).await?;
        self.registry().list().await?.iter().map(|s| info_of(&s.definition, &s.version)).collect()
    }

    /// The resource `name`, redacted, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`]; [`AdminError::Definition`] for a bad name.
    pub async fn resource(&self, name: &str, after: &ReadAfter) -> Result<ResourceInfo, AdminError> {
        let name = resource_name(name)?;
        self.wait_for(after).await?;
        let stored = self.registry().get(name.as_str()).await?;
        let stored =
            stored.ok_or_else(|| AdminError::not_found(format!("no resource {:?}", name.as_str())))?;
        info_of(&stored.definition, &stored.version)
    }

    /// Deletes the resource `name`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`].
    pub async fn delete_resource(&self, name: &str, ack: AckLevel) -> Result<WriteReceipt, AdminError> {
        let name = resource_name(name)?;
        let key = Namespace::Resources.key(name.as_str());
        if self.live(&key).await?.is_none() {
            return Err(AdminError::not_found(format!("no resource {:?}", name.as_str())));
        }
        let write = self.write(WriteBatch::new().delete(key), ack).await?;
        info!(resource = %name, version = %write.version, "resource deleted");
        Ok(write)
    }

    /// Checks `names` (every resource when empty) on this node.
    ///
    /// # Errors
    ///
    /// [`AdminError::Registry`].
    pub async fn check_local(&self, names: &[String]) -> Result<NodeResourceCheck, AdminError> {
        let statuses = self.registry().check_all(&*self.ctx.resolver, &self.ctx.id, names).await?;
        Ok(NodeResourceCheck {
            node: self.ctx.id.clone(),
            addr: self.addr.to_string(),
            error: None,
            resources: statuses
                .into_iter()
                .map(|s| ResourceAvailability {
                    name: s.name,
                    kind: s.kind,
                    available: s.availability.available,
                    detail: s.availability.detail,
                })
                .collect(),
        })
    }

    /// This node's checks of every resource, for `status`. While the
    /// definitions are unchanged, the last checks are answered at once, and
    /// once older than [`STATUS_CHECK_EVERY`] they are refreshed in the
    /// background (a check can wait a second on a silent host; polling must
    /// not). For new or changed definitions they are made now, one caller
    /// checking while the others wait for its answer.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub(super) async fn status_resources(&self) -> Result<Vec<ResourceAvailability>, AdminError> {
        let versions: Vec<_> = self.registry().list().await?.into_iter().map(|s| s.version).collect();
        let checks = &self.status_checks;
        let mut last = checks.last.lock().await;
        if let Some(checked) = last.as_ref().filter(|c| c.versions == versions) {
            if checked.at.elapsed() >= checks.every && !checks.refreshing.swap(true, Ordering::AcqRel) {
                let admin = self.clone();
                tokio::spawn(async move { admin.refresh_status_resources(versions).await });
            }
            return Ok(checked.resources.clone());
        }
        let resources = self.check_local(&[]).await?.resources;
        *last = Some(Checked { at: Instant::now(), versions, resources: resources.clone() });
        Ok(resources)
    }

    /// Checks every resource again for `status`, and keeps the result if the
    /// definitions are still those of `versions` (a check of newer ones may
    /// have been made meanwhile).
    async fn refresh_status_resources(&self, versions: Vec<spectrum_replication::VersionToken>) {
        let found = self.check_local(&[]).await;
        let checks = &self.status_checks;
        if let Ok(found) = found {
            let mut last = checks.last.lock().await;
            if last.as_ref().is_some_and(|c| c.versions == versions) {
                *last = Some(Checked { at: Instant::now(), versions, resources: found.resources });
            }
        }
        checks.refreshing.store(false, Ordering::Release);
    }

    /// Checks `names` on every member (this one directly, the others through
    /// their management API with `token`), once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`] for a name with no definition. A member that
    /// cannot be asked is reported in its entry.
    pub async fn check_everywhere(
        &self,
        names: &[String],
        after: &ReadAfter,
        token: Option<Token>,
    ) -> Result<Vec<NodeResourceCheck>, AdminError> {
        for name in names {
            resource_name(name)?;
        }
        self.wait_for(after).await?;
        let registry = self.registry();
        for name in names {
            if registry.get(name).await?.is_none() {
                return Err(AdminError::not_found(format!("no resource {name:?}")));
            }
        }
        let local = self.check_local(names).await?;
        let others: Vec<Member> =
            self.members().await?.into_iter().filter(|m| m.id != self.ctx.id && !m.state.is_gone()).collect();
        let mut nodes = vec![local];
        nodes
            .extend(join_all(others.iter().map(|m| self.check_member(m, names, after, token.clone()))).await);
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }

    async fn check_member(
        &self,
        member: &Member,
        names: &[String],
        after: &ReadAfter,
        token: Option<Token>,
    ) -> NodeResourceCheck {
        let mut out = NodeResourceCheck {
            node: member.id.clone(),
            addr: member.addr.to_string(),
            error: None,
            resources: Vec::new(),
        };
        let channel = self.channels.get(&member.addr);
        let mut client = proto::management_client::ManagementClient::with_interceptor(
            channel,
            TokenInterceptor::new(token),
        );
        let mut request = Request::new(proto::CheckResourcesRequest {
            names: names.to_vec(),
            local_only: true,
            min_version: read_after_to_wire(after),
            read: read_options_to_wire(after),
        });
        request.set_timeout(PEER_CHECK_TIMEOUT);
        let answer = match tokio::time::timeout(PEER_CHECK_TIMEOUT, client.check_resources(request)).await {
            Err(_) => Err(format!("no answer within {} s", PEER_CHECK_TIMEOUT.as_secs())),
            Ok(Err(status)) => Err(format!("{} ({:?})", status.message(), status.code())),
            Ok(Ok(response)) => Ok(response.into_inner()),
        };
        match answer.map(|a| a.nodes.into_iter().next()) {
            Ok(Some(node)) => out.resources = node.resources.into_iter().map(Into::into).collect(),
            Ok(None) => out.error = Some("the member sent no results".into()),
            Err(e) => {
                debug!(peer = %member.id, error = %e, "resource check on a member failed");
                out.error = Some(e);
            }
        }
        out
    }

    /// Exports every definition, secrets redacted, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::Registry`]; [`AdminError::Transfer`].
    pub async fn export_resources(&self, after: &ReadAfter) -> Result<ResourceExport, AdminError> {
        self.wait_for(after).await?;
        let stored = self.registry().list().await?;
        let count = u32::try_from(stored.len()).unwrap_or(u32::MAX);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let file = ExportFile::new(
            self.ctx.cluster.clone(),
            now_ms,
            stored.into_iter().map(|s| s.definition),
            ExportOptions::default(),
        );
        info!(resources = count, "resources exported");
        Ok(ResourceExport { file: file.to_json_bytes()?, count, served_by: self.ctx.id.clone() })
    }

    /// Imports an export file; with `dry_run`, only plans.
    ///
    /// # Errors
    ///
    /// [`AdminError::Transfer`] for a malformed file (nothing is written).
    pub async fn import_resources(
        &self,
        file: &[u8],
        dry_run: bool,
        ack: AckLevel,
    ) -> Result<ImportReport, AdminError> {
        let file = ExportFile::from_caller_json_bytes(file)?;
        let registry = self.registry();
        let prepared = prepare_import(&self.definitions_to_compare().await?, &file);
        let names = |v: &[ResourceName]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let p = &prepared.plan;
        let plan = ImportPlan {
            add: names(&p.add),
            change: names(&p.change),
            unchanged: names(&p.unchanged),
            needs_secret: names(&p.needs_secret),
            kept: names(&p.kept),
        };
        let mut report = ImportReport {
            dry_run,
            applied: false,
            source_cluster: file.cluster.to_string(),
            plan,
            write: None,
        };
        if dry_run || prepared.writes.is_empty() {
            return Ok(report);
        }
        let mut batch = WriteBatch::new();
        for def in &prepared.writes {
            let bytes = registry.seal_definition(def)?.to_json_bytes()?;
            batch = batch.put(Namespace::Resources.key(def.name.as_str()), Bytes::from(bytes));
        }
        let write = self.write(batch, ack).await?;
        info!(from = %file.cluster, added = p.add.len(), changed = p.change.len(), version = %write.version, "resources imported");
        report.applied = true;
        report.write = Some(write);
        Ok(report)
    }

    /// The stored definitions an import compares a file with: in clear where this
    /// node can open them, so a file that holds the same secret in clear counts
    /// as unchanged.
    pub(super) async fn definitions_to_compare(&self) -> Result<Vec<ResourceDefinition>, AdminError> {
        let registry = self.registry();
        Ok(registry
            .list()
            .await?
            .into_iter()
            .map(|s| registry.open_definition(&s.definition).unwrap_or(s.definition))
            .collect())
    }

    /// Reseals with the current cluster key, in one write, every resource secret
    /// still sealed with a previous key (a key rotation's last step).
    ///
    /// # Errors
    ///
    /// [`AdminError::Registry`] when this node has no current key; the write's own.
    pub async fn reseal_secrets(&self, ack: AckLevel) -> Result<crate::model::ResealReport, AdminError> {
        let found = self.registry().reseal().await?;
        let mut batch = WriteBatch::new();
        for (name, def) in &found.resealed {
            batch = batch.put(Namespace::Resources.key(name), Bytes::from(def.to_json_bytes()?));
        }
        let write = if found.resealed.is_empty() { None } else { Some(self.write(batch, ack).await?) };
        info!(resealed = found.resealed.len(), unreadable = found.unreadable.len(), "secrets resealed");
        Ok(crate::model::ResealReport {
            resealed: found.resealed.into_iter().map(|(name, _)| name).collect(),
            current: u32::try_from(found.current).unwrap_or(u32::MAX),
            unreadable: found.unreadable,
            write,
        })
    }
}

fn resource_name(name: &str) -> Result<ResourceName, AdminError> {
    ResourceName::new(name).map_err(|e| AdminError::InvalidArgument(format!("invalid resource name: {e}")))
}

/// The API's form of a stored definition: redacted.
fn info_of(
    def: &ResourceDefinition,
    version: &spectrum_replication::VersionToken,
) -> Result<ResourceInfo, AdminError> {
    let redacted = def.redacted();
    Ok(ResourceInfo {
        name: def.name.to_string(),
        kind: def.kind().to_owned(),
        description: def.description.clone().unwrap_or_default(),
        version: version.clone(),
        has_secret: redacted.has_redacted_secret(),
        definition: redacted.to_json_bytes()?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use spectrum_core::NodeId;
    use spectrum_replication::AckLevel;
    use spectrum_resources::{
        Availability, ResolveError, Resolved, ResourceDefinition, ResourceResolver, ResourceSpec,
    };

    /// Counts its checks; everything is available. Each check waits for the
    /// gate's one permit, so a test holding it holds every check.
    #[derive(Debug)]
    struct Counting(AtomicUsize, tokio::sync::Semaphore);

    impl Default for Counting {
        fn default() -> Self {
            Self(AtomicUsize::new(0), tokio::sync::Semaphore::new(1))
        }
    }

    #[async_trait::async_trait]
    impl ResourceResolver for Counting {
        fn handles(&self, _: &ResourceSpec) -> bool {
            true
        }
        async fn resolve(&self, _: &ResourceDefinition, _: &NodeId) -> Result<Resolved, ResolveError> {
            Err(ResolveError::Unsupported { kind: "none: only checked".into() })
        }
        async fn check(&self, _: &ResourceDefinition, _: &NodeId) -> Availability {
            self.0.fetch_add(1, Ordering::SeqCst);
            drop(self.1.acquire().await);
            Availability::available("counted")
        }
    }

    fn web(url: &str) -> Vec<u8> {
        format!(r#"{{"name":"api","spec":{{"kind":"web_service","url":"{url}"}}}}"#).into_bytes()
    }

    /// Status is polled (the console every 2 s): its resource checks are
    /// reused while the definitions are unchanged, and made again at once when
    /// one changes; an operator's check always checks.
    #[tokio::test]
    async fn status_reuses_its_resource_checks_until_a_definition_changes() {
        let counting = Arc::new(Counting::default());
        let admin = crate::admin::testing::admin(counting.clone()).await;
        let checks = || counting.0.load(Ordering::SeqCst);
        admin.create_resource(&web("http://127.0.0.1:1/a"), false, AckLevel::Local).await.unwrap();
        for _ in 0..3 {
            assert_eq!(admin.status().await.unwrap().resources.len(), 1);
        }
        assert_eq!(checks(), 1);
        admin.create_resource(&web("http://127.0.0.1:1/b"), true, AckLevel::Local).await.unwrap();
        admin.status().await.unwrap();
        assert_eq!(checks(), 2, "a changed definition is checked again");
        admin.check_local(&[]).await.unwrap();
        assert_eq!(checks(), 3, "an operator's check always checks");
    }

    /// Checks older than the interval are refreshed in the background: status
    /// answers at once with the last ones, even while a check hangs (a silent
    /// host), and starts one refresh at a time.
    #[tokio::test]
    async fn status_refreshes_old_checks_in_the_background_without_waiting_for_them() {
        let counting = Arc::new(Counting::default());
        let admin = crate::admin::testing::admin(counting.clone())
            .await
            .status_check_every(std::time::Duration::from_millis(10));
        let checks = || counting.0.load(Ordering::SeqCst);
        admin.create_resource(&web("http://127.0.0.1:1/a"), false, AckLevel::Local).await.unwrap();
        admin.status().await.unwrap();
        assert_eq!(checks(), 1);

        let hold = counting.1.acquire().await.unwrap(); // every check hangs from here
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let within = std::time::Duration::from_secs(5);
        for _ in 0..3 {
            let status = tokio::time::timeout(within, admin.status()).await.expect("answered at once");
            assert_eq!(status.unwrap().resources.len(), 1);
        }
        for _ in 0..500 {
            if checks() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(checks(), 2, "one refresh, started in the background");
        drop(hold);
    }
}
