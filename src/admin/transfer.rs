//! Whole-configuration transfer: licenses, dataflows, settings and resources in
//! one export file, imported into another cluster in one write.
//!
//! The file is JSON ([`ConfigFile`]):
//!
//! ```json
//! {"format": "spectrum-config-export", "version": 1, "cluster": "east", "exported_at_ms": 1764579600000,
//!  "licenses": {"main": {…}}, "dataflows": {"geocode": {…}},
//!  "settings": {"greeting": {"text": "hello"}, "blob": {"base64": "AAE="}},
//!  "resources": {…the resource export file…}}
//! ```
//!
//! Resources keep the resource export's secret handling (secrets redacted on
//! export; on import a redacted secret keeps the target's own, see
//! [`spectrum_resources::transfer`]). Every other item is checked with its
//! namespace's codec before anything is written: one bad item refuses the whole
//! file, naming it, and nothing changes. Items the target holds that the file does
//! not mention are left alone (reported as `kept`).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use spectrum_replication::{AckLevel, WriteBatch};
use spectrum_resources::{ExportFile, ExportOptions, prepare_import};
use tracing::info;

use super::{Admin, AdminError};
use crate::license::Date;
use crate::model::{ConfigExport, ImportPlan, ImportReport, ReadAfter};
use crate::namespace::{self, Namespace, WriteValue};

/// The `format` of a configuration export file.
pub const CONFIG_EXPORT_FORMAT: &str = "spectrum-config-export";
/// The `version` of the file this build writes and reads.
pub const CONFIG_EXPORT_VERSION: u32 = 1;

/// A configuration export file (see the [module docs](self)).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    format: String,
    version: u32,
    cluster: String,
    exported_at_ms: u64,
    #[serde(default)]
    licenses: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    dataflows: BTreeMap<String, serde_json::Value>,
    /// Each a [`SettingValue`], decoded one by one so an error names its item.
    #[serde(default)]
    settings: BTreeMap<String, serde_json::Value>,
    /// A resource export file ([`ExportFile`]), as JSON.
    resources: Option<serde_json::Value>,
}

/// A setting's bytes: as text when they are UTF-8, else base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum SettingValue {
    Text(String),
    Base64(String),
}

impl SettingValue {
    fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(text.to_owned()),
            Err(_) => Self::Base64(BASE64.encode(bytes)),
        }
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, AdminError> {
        match self {
            Self::Text(text) => Ok(text.as_bytes().to_vec()),
            Self::Base64(b64) => {
                BASE64.decode(b64).map_err(|e| bad_file(format_args!("settings/{name}: not base64: {e}")))
            }
        }
    }
}

fn bad_file(reason: impl std::fmt::Display) -> AdminError {
    AdminError::InvalidArgument(format!("configuration export file: {reason}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One namespace's items of a file, checked and compared with what the target holds.
#[derive(Default)]
struct Planned {
    plan: ImportPlan,
    writes: Vec<(String, Bytes)>,
}

impl Planned {
    /// Compares `incoming` items of `ns` with the `existing` live values under it.
    fn compare(&mut self, ns: Namespace, incoming: Vec<(String, Bytes)>, existing: &BTreeMap<String, Bytes>) {
        for (key, bytes) in &incoming {
            match existing.get(key) {
                None => self.plan.add.push(key.clone()),
                Some(held) if same_value(ns, held, bytes) => {
                    self.plan.unchanged.push(key.clone());
                    continue;
                }
                Some(_) => self.plan.change.push(key.clone()),
            }
            self.writes.push((key.clone(), bytes.clone()));
        }
        let mentioned: std::collections::BTreeSet<&String> = incoming.iter().map(|(k, _)| k).collect();
        self.plan.kept.extend(existing.keys().filter(|k| !mentioned.contains(k)).cloned());
    }
}

/// Whether `held` and `incoming` are the same value of `ns`: the same bytes, or
/// (for the JSON namespaces) the same JSON written differently.
fn same_value(ns: Namespace, held: &[u8], incoming: &[u8]) -> bool {
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
    held == incoming || (ns != Namespace::Settings && json(held).is_some_and(|h| Some(h) == json(incoming)))
}

impl Admin {
    /// Exports licenses, dataflows, settings and resources (secrets redacted) as
    /// one file, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotCaughtUp`]; store and registry failures.
    pub async fn export_config(&self, after: &ReadAfter) -> Result<ConfigExport, AdminError> {
        self.wait_for(after).await?;
        let exported_at_ms = now_ms();
        let json_items = |ns: Namespace, held: BTreeMap<String, Bytes>| {
            held.into_iter()
                .filter_map(|(key, bytes)| {
                    let name = key.strip_prefix(ns.prefix())?.to_owned();
                    Some((name, serde_json::from_slice(&bytes).ok()?))
                })
                .collect::<BTreeMap<String, serde_json::Value>>()
        };
        let licenses = json_items(Namespace::License, self.live_values(Namespace::License).await?);
        let dataflows = json_items(Namespace::Dataflows, self.live_values(Namespace::Dataflows).await?);
        let settings: BTreeMap<String, serde_json::Value> = self
            .live_values(Namespace::Settings)
            .await?
            .into_iter()
            .filter_map(|(key, bytes)| {
                let value = serde_json::to_value(SettingValue::of(&bytes)).ok()?;
                Some((key.strip_prefix(Namespace::Settings.prefix())?.to_owned(), value))
            })
            .collect();
        let stored = self.registry().list().await?;
        let resources = count(stored.len());
        let resource_file = ExportFile::new(
            self.ctx.cluster.clone(),
            exported_at_ms,
            stored.into_iter().map(|s| s.definition),
            ExportOptions::default(),
        );
        let resource_json = serde_json::from_slice(&resource_file.to_json_bytes()?)
            .map_err(|e| AdminError::Internal { reason: format!("resource export: {e}") })?;
        let file = ConfigFile {
            format: CONFIG_EXPORT_FORMAT.into(),
            version: CONFIG_EXPORT_VERSION,
            cluster: self.ctx.cluster.to_string(),
            exported_at_ms,
            licenses,
            dataflows,
            settings,
            resources: Some(resource_json),
        };
        let export = ConfigExport {
            file: serde_json::to_vec_pretty(&file)
                .map_err(|e| AdminError::Internal { reason: format!("export file: {e}") })?,
            licenses: count(file.licenses.len()),
            dataflows: count(file.dataflows.len()),
            settings: count(file.settings.len()),
            resources,
            served_by: self.ctx.id.clone(),
        };
        info!(
            licenses = export.licenses,
            dataflows = export.dataflows,
            settings = export.settings,
            resources,
            "configuration exported"
        );
        Ok(export)
    }

    /// Imports a configuration export file in one write; with `dry_run`, only
    /// plans. The plan names every item as `<namespace>/<name>`.
    ///
    /// # Errors
    ///
    /// [`AdminError::InvalidArgument`] naming the part of the file or the item
    /// that is malformed; [`AdminError::License`] for an expired license; nothing
    /// is written then.
    pub async fn import_config(
        &self,
        file: &[u8],
        dry_run: bool,
        ack: AckLevel,
    ) -> Result<ImportReport, AdminError> {
        let file: ConfigFile = serde_json::from_slice(file).map_err(|e| {
            // A resources export (`spectrum resources export`) is the other file format.
            let resources = serde_json::from_slice::<serde_json::Value>(file)
                .is_ok_and(|v| v.get("format_version").is_some());
            if resources {
                bad_file(format_args!(
                    "{e}: this is a resources export; import it with `spectrum resources import`"
                ))
            } else {
                bad_file(e)
            }
        })?;
        if file.format != CONFIG_EXPORT_FORMAT || file.version != CONFIG_EXPORT_VERSION {
            return Err(bad_file(format_args!(
                "format {:?} version {} is not {CONFIG_EXPORT_FORMAT:?} version {CONFIG_EXPORT_VERSION}",
                file.format, file.version
            )));
        }
        for (name, definition) in &file.dataflows {
            self.check_dataflow_value(name, definition)
                .map_err(|e| bad_file(format_args!("dataflows/{name}: {e}")))?;
        }
        let mut planned = Planned::default();
        for (ns, incoming) in [
            (Namespace::License, checked_json(Namespace::License, &file.licenses)?),
            (Namespace::Dataflows, checked_json(Namespace::Dataflows, &file.dataflows)?),
            (Namespace::Settings, checked_settings(&file.settings)?),
        ] {
            planned.compare(ns, incoming, &self.live_values(ns).await?);
        }
        if let Some(resources) = &file.resources {
            self.plan_resources(resources, &mut planned).await?;
        }
        let mut report = ImportReport {
            dry_run,
            applied: false,
            source_cluster: file.cluster,
            plan: planned.plan,
            write: None,
        };
        if dry_run || planned.writes.is_empty() {
            return Ok(report);
        }
        let batch = planned.writes.into_iter().fold(WriteBatch::new(), |b, (key, value)| b.put(key, value));
        let write = self.write(batch, ack).await?;
        let p = &report.plan;
        info!(from = %report.source_cluster, added = p.add.len(), changed = p.change.len(), version = %write.version, "configuration imported");
        report.applied = true;
        report.write = Some(write);
        Ok(report)
    }

    /// Adds the resource part of a file to `planned`, as the resource import does.
    async fn plan_resources(
        &self,
        json: &serde_json::Value,
        planned: &mut Planned,
    ) -> Result<(), AdminError> {
        let bytes = serde_json::to_vec(json).map_err(bad_file)?;
        let file = ExportFile::from_caller_json_bytes(&bytes)
            .map_err(|e| bad_file(format_args!("resources: {e}")))?;
        let registry = self.registry();
        let prepared = prepare_import(&self.definitions_to_compare().await?, &file);
        let keys = |names: &[spectrum_resources::ResourceName]| {
            names.iter().map(|n| Namespace::Resources.key(n.as_str())).collect::<Vec<_>>()
        };
        let (p, plan) = (&prepared.plan, &mut planned.plan);
        plan.add.extend(keys(&p.add));
        plan.change.extend(keys(&p.change));
        plan.unchanged.extend(keys(&p.unchanged));
        plan.needs_secret.extend(keys(&p.needs_secret));
        plan.kept.extend(keys(&p.kept));
        for def in &prepared.writes {
            let sealed = registry.seal_definition(def)?.to_json_bytes()?;
            planned.writes.push((Namespace::Resources.key(def.name.as_str()), Bytes::from(sealed)));
        }
        Ok(())
    }

    /// The live values under `ns`, by key.
    async fn live_values(&self, ns: Namespace) -> Result<BTreeMap<String, Bytes>, AdminError> {
        Ok(self
            .ctx
            .store
            .scan(ns.prefix())
            .await?
            .into_iter()
            .filter_map(|r| Some((r.key, r.value?)))
            .collect())
    }
}

/// The file's JSON items of `ns` as keys and bytes, each checked with the
/// namespace's codec and name rules (a license must also be current).
fn checked_json(
    ns: Namespace,
    items: &BTreeMap<String, serde_json::Value>,
) -> Result<Vec<(String, Bytes)>, AdminError> {
    items
        .iter()
        .map(|(name, value)| {
            let key = ns.key(name);
            let check = || -> Result<Vec<u8>, AdminError> {
                namespace::validate_name(ns, name)?;
                let bytes = serde_json::to_vec(value).map_err(bad_file)?;
                if let (_, Some(WriteValue::License(license))) =
                    namespace::validate_write(&key, Some(&bytes))?
                {
                    license.check_current(Date::today())?;
                }
                Ok(bytes)
            };
            let bytes = check().map_err(|e| bad_file(format_args!("{key}: {e}")))?;
            Ok((key, Bytes::from(bytes)))
        })
        .collect()
}

fn checked_settings(items: &BTreeMap<String, serde_json::Value>) -> Result<Vec<(String, Bytes)>, AdminError> {
    items
        .iter()
        .map(|(name, value)| {
            let key = Namespace::Settings.key(name);
            let value = SettingValue::deserialize(value).map_err(|e| {
                bad_file(format_args!("{key}: {e} (a setting is {{\"text\": …}} or {{\"base64\": …}})"))
            })?;
            let bytes = value.bytes(name)?;
            namespace::validate_write(&key, Some(&bytes))
                .map_err(|e| bad_file(format_args!("{key}: {e}")))?;
            Ok((key, Bytes::from(bytes)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_text_when_they_can_be_and_base64_otherwise() {
        let text = SettingValue::of(b"hello");
        assert_eq!(serde_json::to_string(&text).unwrap(), r#"{"text":"hello"}"#);
        let binary = SettingValue::of(&[0xff, 0x00]);
        assert_eq!(serde_json::to_string(&binary).unwrap(), r#"{"base64":"/wA="}"#);
        assert_eq!(binary.bytes("b").unwrap(), vec![0xff, 0x00]);
        let bad = SettingValue::Base64("***".into());
        assert!(bad.bytes("b").unwrap_err().to_string().contains("settings/b: not base64"));
    }

    #[test]
    fn a_file_with_an_unknown_field_is_refused() {
        let file = br#"{"format":"spectrum-config-export","version":1,"cluster":"c","exported_at_ms":0,"secrets":{}}"#;
        let e = serde_json::from_slice::<ConfigFile>(file).unwrap_err();
        assert!(e.to_string().contains("unknown field `secrets`"), "{e}");
    }
}
