//! [`LocalPathResolver`]: databases installed on each node.

use std::time::Duration;

use async_trait::async_trait;
use spectrum_core::NodeId;
use tracing::instrument;

use crate::definition::{DataLocation, DatabaseSpec, ResourceDefinition, ResourceSpec};
use crate::error::ResolveError;
use crate::resolver::{Resolved, ResourceResolver, fs};

/// How long a local path check may take by default.
const DEFAULT_LOCAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves databases at a [`DataLocation::Local`] location: on each node, the node's
/// override if the definition has one, else the common path; the path must exist and
/// be readable.
#[derive(Debug, Clone)]
pub struct LocalPathResolver {
    timeout: Duration,
}

impl LocalPathResolver {
    /// A resolver that allows each path check 5 seconds.
    pub fn new() -> Self {
        Self { timeout: DEFAULT_LOCAL_TIMEOUT }
    }

    /// The same resolver allowing each path check `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Default for LocalPathResolver {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ResourceResolver for LocalPathResolver {
    fn handles(&self, spec: &ResourceSpec) -> bool {
        matches!(spec, ResourceSpec::Database(DatabaseSpec { location: DataLocation::Local { .. }, .. }))
    }

    #[instrument(skip_all, fields(resource = %def.name, node = %node))]
    async fn resolve(&self, def: &ResourceDefinition, node: &NodeId) -> Result<Resolved, ResolveError> {
        let ResourceSpec::Database(DatabaseSpec { location: location @ DataLocation::Local { .. }, .. }) =
            &def.spec
        else {
            return Err(ResolveError::Unsupported { kind: def.kind().to_owned() });
        };
        location.validate().map_err(|e| e.prefixed("spec.location"))?;
        let path = location.path_for(node).to_path_buf();
        let result = fs::readable_path(def.name.as_str(), path, self.timeout).await;
        match &result {
            Ok(resolved) => tracing::debug!(%resolved, "resolved local database"),
            Err(error) => tracing::debug!(%error, "local database unavailable"),
        }
        result
    }
}
