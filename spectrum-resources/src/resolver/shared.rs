//! [`SharedLocationResolver`]: databases on a network share.

use std::time::Duration;

use async_trait::async_trait;
use spectrum_core::NodeId;
use tracing::instrument;

use crate::definition::{DataLocation, DatabaseSpec, ResourceDefinition, ResourceSpec};
use crate::error::ResolveError;
use crate::resolver::{Resolved, ResourceResolver, fs};

/// How long a shared path check may take by default.
pub const DEFAULT_SHARED_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves databases at a [`DataLocation::Shared`] location: the share's path, the
/// same on every node, which must exist and be readable.
///
/// A network mount can hang rather than fail; each check is therefore bounded by a
/// timeout ([`DEFAULT_SHARED_TIMEOUT`] unless set), after which the resource is
/// reported with [`ResolveError::TimedOut`].
#[derive(Debug, Clone)]
pub struct SharedLocationResolver {
    timeout: Duration,
}

impl SharedLocationResolver {
    /// A resolver that allows each check [`DEFAULT_SHARED_TIMEOUT`].
    pub fn new() -> Self {
        Self { timeout: DEFAULT_SHARED_TIMEOUT }
    }

    /// The same resolver allowing each check `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Default for SharedLocationResolver {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ResourceResolver for SharedLocationResolver {
    fn handles(&self, spec: &ResourceSpec) -> bool {
        matches!(spec, ResourceSpec::Database(DatabaseSpec { location: DataLocation::Shared { .. }, .. }))
    }

    #[instrument(skip_all, fields(resource = %def.name, node = %node))]
    async fn resolve(&self, def: &ResourceDefinition, node: &NodeId) -> Result<Resolved, ResolveError> {
        fs::resolve_database(def, node, self.timeout, |l| matches!(l, DataLocation::Shared { .. })).await
    }
}
