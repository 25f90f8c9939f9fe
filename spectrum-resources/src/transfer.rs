//! Export and import of definitions between clusters.
//!
//! Several clusters may use the same physical resource, each with its own definition.
//! [`ExportFile::new`] writes a cluster's definitions to a JSON file;
//! [`plan_import`] tells what importing it into another cluster would add, change or
//! leave alone (a dry run), and [`prepare_import`] also gives the definitions to store.
//!
//! # Secrets
//!
//! - An export redacts every secret to [`Secret::REDACTED`](crate::Secret::REDACTED) unless
//!   [`ExportOptions::include_secrets`] is set.
//! - Importing a redacted secret over an existing definition of the same kind **keeps
//!   the existing secret** (as [`ResourceDefinition::keep_secrets_from`] does): a
//!   round trip through a redacted file never erases a password.
//! - Importing a definition with a redacted secret where there is no secret to keep
//!   (a new definition, a changed kind, an existing one without it) leaves the secret
//!   unset and lists the definition in [`ImportPlan::needs_secret`], so the operator
//!   knows to set it.
//! - Import never deletes: existing definitions the file does not mention are listed
//!   in [`ImportPlan::kept`] and left as they are.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use spectrum_core::ClusterId;

use crate::decode::Object;
use crate::definition::ResourceDefinition;
use crate::error::{DefinitionError, ROOT, TransferError};
use crate::name::ResourceName;

/// The export format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest export file accepted, in bytes (16 MiB).
pub const MAX_EXPORT_LEN: usize = 16 * 1024 * 1024;

/// How to export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Write secrets in clear. Off by default: secrets are redacted to
    /// [`Secret::REDACTED`](crate::Secret::REDACTED), and an import keeps the target's own.
    pub include_secrets: bool,
}

/// A cluster's definitions as written to an export file.
///
/// `Debug` never shows a secret, even when the file holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct ExportFile {
    /// The file format ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The cluster the definitions were exported from.
    pub cluster: ClusterId,
    /// When the export was made, in milliseconds since the Unix epoch.
    pub exported_at_ms: u64,
    /// The definitions, sorted by name, names unique.
    pub resources: Vec<ResourceDefinition>,
}

impl ExportFile {
    /// An export of `resources` from `cluster`: sorted by name, a later duplicate name
    /// replacing an earlier one, secrets redacted unless `options` include them.
    pub fn new(
        cluster: ClusterId,
        exported_at_ms: u64,
        resources: impl IntoIterator<Item = ResourceDefinition>,
        options: ExportOptions,
    ) -> Self {
        let by_name: BTreeMap<ResourceName, ResourceDefinition> = resources
            .into_iter()
            .map(|def| {
                let def = if options.include_secrets { def } else { def.redacted() };
                (def.name.clone(), def)
            })
            .collect();
        tracing::debug!(
            cluster = %cluster,
            resources = by_name.len(),
            include_secrets = options.include_secrets,
            "exported resource definitions"
        );
        Self {
            format_version: FORMAT_VERSION,
            cluster,
            exported_at_ms,
            resources: by_name.into_values().collect(),
        }
    }

    /// Encodes the file as pretty-printed JSON.
    ///
    /// # Errors
    ///
    /// [`TransferError::Definition`] when a definition is invalid (the field is
    /// `resources[i].…`).
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, TransferError> {
        for (i, def) in self.resources.iter().enumerate() {
            def.validate().map_err(|e| e.prefixed(&format!("resources[{i}]")))?;
        }
        serde_json::to_vec_pretty(self)
            .map_err(|e| DefinitionError::Malformed { field: ROOT.into(), reason: e.to_string() }.into())
    }

    /// Decodes and validates an export file.
    ///
    /// # Errors
    ///
    /// [`TransferError::UnsupportedVersion`] for another format version;
    /// [`TransferError::DuplicateName`] when two definitions share a name;
    /// [`TransferError::Definition`] for malformed or oversized input, or an invalid
    /// definition, naming the field (`"resources[2].spec.url"`).
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, TransferError> {
        if bytes.len() > MAX_EXPORT_LEN {
            return Err(DefinitionError::TooLarge {
                field: ROOT.into(),
                len: bytes.len(),
                max: MAX_EXPORT_LEN,
            }
            .into());
        }
        // The file as a whole is named: `definition` would read as one resource's.
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| DefinitionError::Malformed { field: "export file".into(), reason: e.to_string() })?;
        Self::try_from(value)
    }

    /// Decodes and validates an export file a caller sends, as
    /// [`from_json_bytes`](Self::from_json_bytes) does, and also refuses any
    /// field the format does not have, at the top or in a definition (see
    /// [`ResourceDefinition::from_caller_json_bytes`]): a misspelt
    /// `"pasword"` would otherwise be dropped, and the secret with it.
    ///
    /// # Errors
    ///
    /// As [`from_json_bytes`](Self::from_json_bytes);
    /// [`TransferError::Definition`] naming the first unknown field
    /// (`"resources[0].spec.pasword"`, `"exported_by"`).
    pub fn from_caller_json_bytes(bytes: &[u8]) -> Result<Self, TransferError> {
        let file = Self::from_json_bytes(bytes)?;
        // Decoded once already: the file is JSON, an object, `resources` an array.
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| DefinitionError::Malformed { field: "export file".into(), reason: e.to_string() })?;
        if let Value::Object(top) = &value {
            const FIELDS: [&str; 4] = ["format_version", "cluster", "exported_at_ms", "resources"];
            if let Some(unknown) = top.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                return Err(DefinitionError::Malformed {
                    field: unknown.clone(),
                    reason: "not a field of a resources export file (misspelt?); nothing was imported".into(),
                }
                .into());
            }
        }
        if let Some(Value::Array(items)) = value.get("resources") {
            for (index, item) in items.iter().enumerate() {
                let bytes = serde_json::to_vec(item).map_err(|e| DefinitionError::Malformed {
                    field: format!("resources[{index}]"),
                    reason: e.to_string(),
                })?;
                ResourceDefinition::from_caller_json_bytes(&bytes)
                    .map_err(|e| e.prefixed(&format!("resources[{index}]")))?;
            }
        }
        Ok(file)
    }

    /// The names of the definitions in the file, in order.
    pub fn names(&self) -> impl Iterator<Item = &ResourceName> {
        self.resources.iter().map(|def| &def.name)
    }
}

impl TryFrom<Value> for ExportFile {
    type Error = TransferError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        if value.get("format_version").is_none() && value.get("format").is_some() {
            return Err(DefinitionError::invalid(
                "format_version",
                "missing: this is a whole-configuration export (it has `format`), not a resources export",
            )
            .into());
        }
        let mut obj = Object::new(value)?;
        let format_version: u64 = obj.required("format_version")?;
        if format_version != u64::from(FORMAT_VERSION) {
            return Err(TransferError::UnsupportedVersion {
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        let cluster: String = obj.required("cluster")?;
        let cluster =
            ClusterId::new(&cluster).map_err(|e| DefinitionError::invalid("cluster", e.to_string()))?;
        let exported_at_ms: u64 = obj.required("exported_at_ms")?;
        let Value::Array(items) = obj.required_value("resources")? else {
            return Err(DefinitionError::Malformed {
                field: "resources".into(),
                reason: "expected an array".into(),
            }
            .into());
        };
        let mut seen = BTreeSet::new();
        let mut resources = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let def =
                ResourceDefinition::try_from(item).map_err(|e| e.prefixed(&format!("resources[{index}]")))?;
            if !seen.insert(def.name.clone()) {
                return Err(TransferError::DuplicateName { name: def.name.to_string(), index });
            }
            resources.push(def);
        }
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { format_version: FORMAT_VERSION, cluster, exported_at_ms, resources })
    }
}

/// What importing a file would do, by resource name (each list sorted). It holds no
/// definitions, so it is safe to print or return as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportPlan {
    /// Definitions the target does not have yet.
    pub add: Vec<ResourceName>,
    /// Definitions the target has, that the import would change.
    pub change: Vec<ResourceName>,
    /// Definitions the target already has exactly (a redacted secret over an existing
    /// one counts as the same).
    pub unchanged: Vec<ResourceName>,
    /// Definitions (added or changed) whose secret the file redacts and the target
    /// cannot supply: they are stored without it, to be set afterwards.
    pub needs_secret: Vec<ResourceName>,
    /// Definitions the target has that the file does not mention: left as they are.
    pub kept: Vec<ResourceName>,
}

impl ImportPlan {
    /// Whether the import would store nothing.
    pub fn is_noop(&self) -> bool {
        self.add.is_empty() && self.change.is_empty()
    }
}

/// An import worked out: the plan, and the definitions to store to carry it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedImport {
    /// What the import does.
    pub plan: ImportPlan,
    /// The definitions to store (those added and changed), with existing secrets
    /// kept where the file redacts them and unknown redacted secrets unset. Sorted by
    /// name.
    pub writes: Vec<ResourceDefinition>,
}

/// What importing `incoming` over the `existing` definitions would do: a dry run.
pub fn plan_import(existing: &[ResourceDefinition], incoming: &ExportFile) -> ImportPlan {
    prepare_import(existing, incoming).plan
}

/// Works out an import of `incoming` over the `existing` definitions: the plan, and
/// the definitions to store (see the [module docs](self) for how secrets are handled).
pub fn prepare_import(existing: &[ResourceDefinition], incoming: &ExportFile) -> PreparedImport {
    let current: BTreeMap<&ResourceName, &ResourceDefinition> =
        existing.iter().map(|def| (&def.name, def)).collect();
    let mut plan = ImportPlan::default();
    let mut writes = Vec::new();
    let mut mentioned = BTreeSet::new();

    for def in &incoming.resources {
        mentioned.insert(&def.name);
        let old = current.get(&def.name).copied();
        let kept = def.keep_secrets(old);
        let missing_secret = !kept.is_complete();
        let merged = kept.without_placeholders();
        match old {
            Some(old) if *old == merged => plan.unchanged.push(def.name.clone()),
            Some(_) => {
                plan.change.push(def.name.clone());
                writes.push(merged);
            }
            None => {
                plan.add.push(def.name.clone());
                writes.push(merged);
            }
        }
        if missing_secret {
            plan.needs_secret.push(def.name.clone());
        }
    }
    plan.kept =
        current.keys().filter(|name| !mentioned.contains(*name)).map(|name| (*name).clone()).collect();
    for list in [&mut plan.add, &mut plan.change, &mut plan.unchanged, &mut plan.needs_secret] {
        list.sort();
    }
    writes.sort_by(|a, b| a.name.cmp(&b.name));
    tracing::debug!(
        from = %incoming.cluster,
        add = plan.add.len(),
        change = plan.change.len(),
        unchanged = plan.unchanged.len(),
        needs_secret = plan.needs_secret.len(),
        "planned resource import"
    );
    PreparedImport { plan, writes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{JdbcSpec, ResourceSpec};
    use crate::secret::Secret;

    fn jdbc(name: &str, password: Option<&str>) -> ResourceDefinition {
        ResourceDefinition::new(
            ResourceName::new(name).unwrap(),
            ResourceSpec::Jdbc(JdbcSpec {
                password: password.map(Secret::new),
                ..JdbcSpec::new("jdbc:postgresql://db/x", "org.postgresql.Driver")
            }),
        )
    }

    #[test]
    fn an_export_is_sorted_by_name_and_redacted_by_default() {
        let cluster = ClusterId::new("east").unwrap();
        let file = ExportFile::new(
            cluster.clone(),
            7,
            [jdbc("b", Some("pw")), jdbc("a", None)],
            ExportOptions::default(),
        );
        assert_eq!(file.names().map(ResourceName::as_str).collect::<Vec<_>>(), ["a", "b"]);
        let text = String::from_utf8(file.to_json_bytes().unwrap()).unwrap();
        assert!(!text.contains("\"pw\""), "{text}");
        assert!(text.contains("***"));
        let clear =
            ExportFile::new(cluster, 7, [jdbc("b", Some("pw"))], ExportOptions { include_secrets: true });
        assert!(String::from_utf8(clear.to_json_bytes().unwrap()).unwrap().contains("\"pw\""));
        assert!(!format!("{clear:?}").contains("\"pw\""));
    }

    #[test]
    fn a_redacted_secret_over_an_existing_one_keeps_it() {
        let existing = [jdbc("a", Some("old"))];
        let file = ExportFile::new(
            ClusterId::new("c").unwrap(),
            0,
            [jdbc("a", Some("other"))],
            ExportOptions::default(),
        );
        let prepared = prepare_import(&existing, &file);
        assert_eq!(prepared.plan.unchanged, [ResourceName::new("a").unwrap()]);
        assert!(prepared.writes.is_empty());
        assert!(prepared.plan.needs_secret.is_empty());
    }

    #[test]
    fn secrets_are_not_carried_across_a_change_of_kind() {
        let old = ResourceDefinition::new(
            ResourceName::new("a").unwrap(),
            ResourceSpec::WebService(crate::definition::WebServiceSpec {
                password: Some(Secret::new("web")),
                ..crate::definition::WebServiceSpec::new("http://h")
            }),
        );
        let file = ExportFile::new(
            ClusterId::new("c").unwrap(),
            0,
            [jdbc("a", Some("x"))],
            ExportOptions::default(),
        );
        let prepared = prepare_import(&[old], &file);
        assert_eq!(prepared.plan.change, [ResourceName::new("a").unwrap()]);
        assert_eq!(prepared.plan.needs_secret, [ResourceName::new("a").unwrap()]);
        let ResourceSpec::Jdbc(spec) = &prepared.writes[0].spec else { panic!("kind") };
        assert_eq!(spec.password, None);
    }
}
