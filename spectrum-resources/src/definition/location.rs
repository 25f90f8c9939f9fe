//! [`DataLocation`]: where a database's data lives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use spectrum_core::NodeId;

use super::check::{check_path, cut};
use crate::decode::{Object, unknown_kind};
use crate::error::DefinitionError;

const LOCATION_KINDS: &str = "local, shared";

/// Where a database's data lives. Encoded as a JSON object tagged by `"kind"`
/// (`local`, `shared`); further kinds (a URL, an object store) can be added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "Value")]
#[non_exhaustive]
pub enum DataLocation {
    /// Installed on every node: the same absolute `path` on all of them, except on the
    /// nodes named in `overrides`.
    Local {
        /// The absolute path on every node without an override.
        path: PathBuf,
        /// Per-node absolute paths that replace `path` on those nodes.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        overrides: BTreeMap<NodeId, PathBuf>,
    },
    /// On a network share that every node reaches at the same absolute path (a
    /// mounted NFS or SMB share, for instance).
    Shared {
        /// The absolute path of the share's data on every node.
        path: PathBuf,
    },
}

impl DataLocation {
    /// Installed at the same path on every node, without overrides.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self::Local { path: path.into(), overrides: BTreeMap::new() }
    }

    /// On a network share mounted at `path` on every node.
    pub fn shared(path: impl Into<PathBuf>) -> Self {
        Self::Shared { path: path.into() }
    }

    /// The kind tag: `"local"` or `"shared"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::Shared { .. } => "shared",
        }
    }

    /// The path the data has on `node`: its override if it has one, else the
    /// common path.
    pub fn path_for(&self, node: &NodeId) -> &Path {
        match self {
            Self::Local { path, overrides } => overrides.get(node).unwrap_or(path),
            Self::Shared { path } => path,
        }
    }

    /// Checks every field; errors name fields relative to the location.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        match self {
            Self::Local { path, overrides } => {
                check_path("path", path)?;
                for (node, path) in overrides {
                    check_path(&format!("overrides.{node}"), path)?;
                }
                Ok(())
            }
            Self::Shared { path } => check_path("path", path),
        }
    }
}

impl TryFrom<Value> for DataLocation {
    type Error = DefinitionError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let mut obj = Object::new(value)?;
        let kind = obj.kind()?;
        let location = match kind.as_str() {
            "local" => {
                let path = obj.required("path")?;
                let mut overrides = BTreeMap::new();
                for (node, path) in obj.optional::<Map<String, Value>>("overrides")?.unwrap_or_default() {
                    let field = format!("overrides.{}", cut(&node, 64));
                    let node =
                        NodeId::new(&node).map_err(|e| DefinitionError::invalid(&field, e.to_string()))?;
                    let path: PathBuf = serde_json::from_value(path)
                        .map_err(|e| DefinitionError::Malformed { field, reason: e.to_string() })?;
                    overrides.insert(node, path);
                }
                Self::Local { path, overrides }
            }
            "shared" => Self::Shared { path: obj.required("path")? },
            other => return Err(unknown_kind(other, LOCATION_KINDS)),
        };
        location.validate()?;
        Ok(location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_for_a_node_is_its_override_or_the_common_path() {
        let n1 = NodeId::new("n1").unwrap();
        let n2 = NodeId::new("n2").unwrap();
        let mut overrides = BTreeMap::new();
        overrides.insert(n2.clone(), PathBuf::from("/other"));
        let location = DataLocation::Local { path: "/common".into(), overrides };
        assert_eq!(location.path_for(&n1), Path::new("/common"));
        assert_eq!(location.path_for(&n2), Path::new("/other"));
        assert_eq!(DataLocation::shared("/mnt/share").path_for(&n2), Path::new("/mnt/share"));
    }
}
