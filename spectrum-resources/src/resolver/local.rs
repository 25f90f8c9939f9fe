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
        fs::resolve_database(def, node, self.timeout, |l| matches!(l, DataLocation::Local { .. })).await
    }
}
