//! The file system check shared by the path-based resolvers.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use spectrum_core::NodeId;

use crate::definition::{DataLocation, DatabaseSpec, ResourceDefinition, ResourceSpec};
use crate::error::ResolveError;
use crate::resolver::Resolved;

/// Resolves a database definition whose location `kind_of` accepts to its path on
/// `node`, checked readable within `timeout`: the body of both path resolvers.
pub(crate) async fn resolve_database(
    def: &ResourceDefinition,
    node: &NodeId,
    timeout: Duration,
    kind_of: fn(&DataLocation) -> bool,
) -> Result<Resolved, ResolveError> {
    let ResourceSpec::Database(DatabaseSpec { location, .. }) = &def.spec else {
        return Err(ResolveError::Unsupported { kind: def.kind().to_owned() });
    };
    if !kind_of(location) {
        return Err(ResolveError::Unsupported { kind: def.kind().to_owned() });
    }
    location.validate().map_err(|e| e.prefixed("spec.location"))?;
    let path = location.path_for(node).to_path_buf();
    let result = readable_path(def.name.as_str(), path, timeout).await;
    match &result {
        Ok(resolved) => tracing::debug!(location = location.kind(), %resolved, "resolved database"),
        Err(error) => tracing::debug!(location = location.kind(), %error, "database unavailable"),
    }
    result
}

/// Resolves to `path` if it exists and is readable (a file that opens, a directory
/// that lists), within `timeout`.
///
/// The check runs on the blocking pool: a hung network mount blocks that thread, not
/// the runtime, and the caller gets [`ResolveError::TimedOut`]. The thread itself stays
/// blocked until the file system answers.
pub(crate) async fn readable_path(
    resource: &str,
    path: PathBuf,
    timeout: Duration,
) -> Result<Resolved, ResolveError> {
    let target = path.clone();
    let check = tokio::task::spawn_blocking(move || {
        let not_readable =
            |e: std::io::Error| ResolveError::NotReadable { path: path.clone(), reason: e.to_string() };
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(ResolveError::NotFound { path }),
            Err(e) => return Err(not_readable(e)),
        };
        if meta.is_dir() {
            std::fs::read_dir(&path).map_err(not_readable)?;
        } else {
            std::fs::File::open(&path).map_err(not_readable)?;
        }
        Ok(Resolved::Path(path))
    });
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ResolveError::Failed { resource: resource.to_owned(), source: Box::new(join) }),
        Err(_) => Err(ResolveError::TimedOut {
            target: target.display().to_string(),
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}
