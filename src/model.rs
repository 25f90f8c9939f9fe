//! The management API's values, as Rust types: what the [admin](crate::admin)
//! operations produce on a node and what the typed [client](crate::client) returns.
//!
//! Every result implements [`Serialize`] (the shape the `spectrum` command prints
//! with `--json`) and [`Display`](fmt::Display) (the line or table it prints for
//! people), so one value has one JSON shape wherever it is printed. Stored values
//! that are JSON documents (dataflow and resource definitions, license documents)
//! serialise as JSON; any other value as a string.

mod balancer;
mod conflicts;
mod replication;
mod txn;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};
use spectrum_core::{Liveness, Member, MemberState, NodeId};
use spectrum_replication::VersionToken;
use utoipa::ToSchema;

use crate::auth::{Role, Token};
use crate::namespace::AuditRecord;
use crate::session::Session;

pub use balancer::{BalancerSettings, StrategySetting, StrategyWritten, WeightSetting, WeightWritten};
pub use conflicts::{ConflictInfo, ConflictVersion, Conflicts};
pub use replication::{RaftInfo, ReplicationInfo};
pub use txn::{TxnConditionSpec, TxnSpec, TxnSpecError, TxnWrite, TxnWriteSpec};

/// What a read must have seen before it answers: nothing in particular, or a
/// write (read-your-writes through the balancer, whichever node answers).
///
/// ```
/// use spectrum::model::ReadAfter;
/// let token = "node-1:42".parse()?;
/// assert_eq!(ReadAfter::from(&token), ReadAfter::Version(token));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReadAfter {
    /// Answer with whatever the node holds.
    #[default]
    Anything,
    /// Answer only once the node holds this write (a bounded wait, else
    /// `UNAVAILABLE`).
    Version(VersionToken),
    /// Answer only once the node holds every write of this session, waiting up
    /// to `wait` (the node's default when `None`; capped by the node), else
    /// `UNAVAILABLE` naming what the node lacks.
    Session {
        /// The writes the read must see.
        session: Session,
        /// How long the node may wait for them.
        wait: Option<Duration>,
    },
}

impl ReadAfter {
    /// The writes this read must see (empty for [`ReadAfter::Anything`]).
    pub fn session(&self) -> Session {
        match self {
            ReadAfter::Anything => Session::default(),
            ReadAfter::Version(token) => Session::from(token),
            ReadAfter::Session { session, .. } => session.clone(),
        }
    }
}

impl From<&Session> for ReadAfter {
    fn from(session: &Session) -> Self {
        ReadAfter::Session { session: session.clone(), wait: None }
    }
}

impl From<&VersionToken> for ReadAfter {
    fn from(token: &VersionToken) -> Self {
        ReadAfter::Version(token.clone())
    }
}

impl From<&WriteReceipt> for ReadAfter {
    fn from(receipt: &WriteReceipt) -> Self {
        ReadAfter::Version(receipt.version.clone())
    }
}

pub(crate) fn as_text<T: fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Bytes as JSON when they are a JSON object or array, or a number, boolean or
/// `null` written exactly as JSON writes it back; else as a (lossy UTF-8)
/// string of the bytes as stored. So a stored value is never changed by being
/// shown: `1e3`, ` 1` and a 23-digit number stay text (as JSON numbers they
/// would read `1000.0`, `1` and a rounded float), and a JSON string literal
/// `"q"` stays the three characters, distinct from the value `q`.
pub(crate) fn as_json_or_text<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use serde_json::Value;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value @ (Value::Object(_) | Value::Array(_))) => value.serialize(s),
        Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::Null))
            if serde_json::to_vec(&value).is_ok_and(|again| again == bytes) =>
        {
            value.serialize(s)
        }
        _ => s.serialize_str(&String::from_utf8_lossy(bytes)),
    }
}

/// The width of a table column: its widest cell (`widths`, in characters),
/// at least `min`, so that long version tokens do not push the next column
/// out of line.
pub(crate) fn column(min: usize, widths: impl Iterator<Item = usize>) -> usize {
    widths.max().unwrap_or(0).max(min)
}

/// `text` on one line, cut to `max` characters with an ellipsis.
pub(crate) fn one_line(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes).replace(['\n', '\r'], " ");
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max.saturating_sub(1)).collect::<String>())
    } else {
        text
    }
}

/// An acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WriteReceipt {
    /// The write's version token: pass it as [`ReadAfter`] to read it back anywhere.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub version: VersionToken,
    /// Members that acknowledged it (the answering node included).
    pub acked: u32,
    /// Members counted for the acknowledgement (those not left).
    pub members: u32,
    /// The node that accepted the write.
    #[schema(value_type = String)]
    pub served_by: NodeId,
}

impl fmt::Display for WriteReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}, acknowledged by {}/{} nodes", self.version, self.acked, self.members)
    }
}

/// One live entry of the configuration database (resource definitions redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Entry {
    /// Its key, `namespace/name`.
    pub key: String,
    /// The version token of the write that set it.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub version: VersionToken,
    /// The value.
    #[serde(serialize_with = "as_json_or_text")]
    #[schema(value_type = Value)]
    pub value: Vec<u8>,
    /// Wall-clock part of its hybrid-logical-clock stamp, in ms since the Unix epoch.
    #[serde(skip)]
    pub stamp_wall_ms: u64,
    /// Logical part of its stamp.
    #[serde(skip)]
    pub stamp_logical: u32,
}

impl fmt::Display for Entry {
    /// The value as text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.value))
    }
}

/// Entries, shown as a table of key, version and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Entries(pub Vec<Entry>);

impl fmt::Display for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<_> = self.0.iter().map(|e| (e.key.as_str(), e.version.to_string(), e)).collect();
        let key = column(40, rows.iter().map(|r| r.0.chars().count()));
        let version = column(16, rows.iter().map(|r| r.1.len()));
        writeln!(f, "{:<key$} {:<version$} VALUE", "KEY", "VERSION")?;
        for (k, v, e) in rows {
            writeln!(f, "{k:<key$} {v:<version$} {}", one_line(&e.value, 60))?;
        }
        Ok(())
    }
}

/// A key written or deleted through `Put` or `Delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct KeyWritten {
    /// The key.
    pub key: String,
    /// Whether the write deleted it.
    pub deleted: bool,
    /// The acknowledged write.
    #[serde(flatten)]
    pub write: WriteReceipt,
}

impl fmt::Display for KeyWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.deleted { "deleted" } else { "set" };
        write!(f, "{} {what} ({})", self.key, self.write)
    }
}

/// A peer as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PeerInfo {
    /// The node id it answered as, once it has.
    #[schema(value_type = Option<String>)]
    pub id: Option<NodeId>,
    /// Its address.
    pub addr: String,
    /// Records it lacks that this node holds, at the last exchange.
    pub lag: u64,
    /// Time since the last successful exchange, in ms; `None` when never.
    pub last_contact_ms_ago: Option<u64>,
    /// Its clock's offset from this node's, in ms (positive: ahead), once measured.
    pub clock_offset_ms: Option<i64>,
    /// How far the true offset may be from `clock_offset_ms`, in ms (half the
    /// round trip it was measured over); `None` for a one-way estimate.
    pub clock_uncertainty_ms: Option<u64>,
    /// Whether that offset is beyond the cluster's maximum.
    pub clock_skewed: bool,
    /// The last error talking to it, if the last exchange failed.
    pub last_error: Option<String>,
    /// Whether it is up, by the answering node's failure detector.
    #[schema(value_type = schema::Liveness)]
    pub liveness: Liveness,
}

/// A member, and whether the answering node finds it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MemberInfo {
    /// The membership record.
    #[serde(flatten)]
    #[schema(value_type = schema::Member)]
    pub member: Member,
    /// Whether it is up, by the answering node's failure detector (the answering
    /// node itself is alive).
    #[schema(value_type = schema::Liveness)]
    pub liveness: Liveness,
}

/// Whether one resource can be used on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResourceAvailability {
    /// The resource's name.
    pub name: String,
    /// Its kind (`database`, `jdbc`, …).
    pub kind: String,
    /// Whether it resolved and answered on that node.
    pub available: bool,
    /// What was found, or why not.
    pub detail: String,
}

/// One node's view of the cluster: what `spectrum status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NodeStatus {
    /// The cluster's id.
    pub cluster: String,
    /// The answering node.
    #[schema(value_type = String)]
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// Its Spectrum version.
    pub version: String,
    /// Its replication mode, and in Raft mode its view of the Raft group
    /// (leader, term, log/commit/applied indexes, voters and learners).
    pub replication: ReplicationInfo,
    /// Live keys in its copy of the configuration database.
    pub keys: u64,
    /// Deletes whose tombstones it still holds: each is collected once every
    /// member (not left or removed) has seen it, so a count that stays up points at
    /// a member that is behind or gone without being removed.
    pub tombstones: u64,
    /// Open conflicts it holds: writes to one key made without seeing each other
    /// (see [`Conflicts`]); every node agrees once it has every write.
    pub conflicts: u64,
    /// Its version vector: the highest sequence number held per origin, that is
    /// per store incarnation (`node~incarnation`, or the bare node id for a store
    /// from before incarnations; a node that lost its disk has one entry per store).
    pub digest: BTreeMap<String, u64>,
    /// Cluster membership as it holds it, with each member's liveness.
    pub members: Vec<MemberInfo>,
    /// Its peers, as it sees them.
    pub peers: Vec<PeerInfo>,
    /// Which resources are available on it.
    pub resources: Vec<ResourceAvailability>,
    /// Why its clock is fenced (off from its peers: it refuses writes and is not
    /// ready), while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_fenced: Option<String>,
    /// Why it is out of the cluster (an operator removed it, the cluster
    /// refuses to take it back, or its Raft stopped on an error), while it is: it then refuses reads and writes,
    /// and this view is its own copy, which nobody keeps up to date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_cluster: Option<String>,
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cluster {}  (answered by {} at {}, version {})",
            self.cluster, self.node, self.addr, self.version
        )?;
        write!(f, "{}", self.replication)?;
        writeln!(f, "{} live keys, {} tombstones not yet collected", self.keys, self.tombstones)?;
        if self.conflicts > 0 {
            writeln!(
                f,
                "{} open conflicts (writes that overwrote each other unseen): spectrum config conflicts",
                self.conflicts
            )?;
        } else {
            writeln!(f, "0 open conflicts")?;
        }
        if let Some(why) = &self.clock_fenced {
            writeln!(f, "CLOCK FENCED (refusing writes, not ready): {why}")?;
        }
        if let Some(why) = &self.out_of_cluster {
            writeln!(
                f,
                "OUT OF THE CLUSTER (refusing reads and writes, not ready; what follows is this node's \
                 own copy, no longer kept up to date): {why}"
            )?;
        }
        writeln!(f, "\n{:<16} {:<28} {:<10} LIVENESS", "MEMBER", "ADDRESS", "STATE")?;
        for MemberInfo { member: m, liveness } in &self.members {
            writeln!(f, "{:<16} {:<28} {:<10} {liveness}", m.id.as_str(), m.addr.as_str(), m.state.as_str())?;
        }
        writeln!(
            f,
            "\n{:<16} {:<28} {:>8} {:>14} {:>12}  ERROR",
            "PEER", "ADDRESS", "LAG", "LAST CONTACT", "CLOCK"
        )?;
        for p in &self.peers {
            let contact =
                p.last_contact_ms_ago.map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms ago"));
            let clock = match (p.clock_offset_ms, p.clock_uncertainty_ms) {
                (None, _) => "?".to_owned(),
                (Some(ms), Some(within)) => format!("{ms:+}±{within} ms"),
                (Some(ms), None) => format!("{ms:+} ms"),
            };
            let clock = if p.clock_skewed { format!("{clock} SKEW") } else { clock };
            let id = p.id.as_ref().map_or("", NodeId::as_str);
            let error = p.last_error.as_deref().unwrap_or("");
            writeln!(f, "{id:<16} {:<28} {:>8} {contact:>14} {clock:>12}  {error}", p.addr, p.lag)?;
        }
        if !self.resources.is_empty() {
            writeln!(f, "\n{:<24} {:<12} {:<10} DETAIL (on {})", "RESOURCE", "KIND", "AVAILABLE", self.node)?;
            for r in &self.resources {
                let yes = if r.available { "yes" } else { "NO" };
                writeln!(f, "{:<24} {:<12} {yes:<10} {}", r.name, r.kind, r.detail)?;
            }
        }
        Ok(())
    }
}

/// An installed license, with its expiry counted from today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LicenseInfo {
    /// The license's name (`main` by default).
    pub name: String,
    /// Who holds it.
    pub owner: String,
    /// How many seats it grants.
    pub seats: u32,
    /// Its last valid day, `YYYY-MM-DD`.
    pub expires: String,
    /// Days from today to expiry (negative once expired).
    pub days_left: i64,
    /// Whether it has expired.
    pub expired: bool,
    /// The version token of the write that installed it.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub version: VersionToken,
    /// The whole license document as stored.
    #[serde(serialize_with = "as_json_or_text")]
    #[schema(value_type = Value)]
    pub document: Vec<u8>,
}

impl fmt::Display for LicenseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.expired {
            format!("EXPIRED {} ago", crate::license::days(-self.days_left))
        } else {
            format!("{} left", crate::license::days(self.days_left))
        };
        let seats = if self.seats == 1 { "seat" } else { "seats" };
        write!(
            f,
            "license {}: {} ({} {seats}), expires {} ({state})",
            self.name, self.owner, self.seats, self.expires
        )
    }
}

/// A license installed by `SetLicense`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LicenseInstalled {
    /// The license.
    pub license: LicenseInfo,
    /// The acknowledged write.
    pub write: WriteReceipt,
}

impl fmt::Display for LicenseInstalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} installed ({})", self.license, self.write)
    }
}

/// A stored dataflow definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Dataflow {
    /// Its name.
    pub name: String,
    /// The version token of the write that stored it.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub version: VersionToken,
    /// Its definition (a JSON object).
    #[serde(serialize_with = "as_json_or_text")]
    #[schema(value_type = Value)]
    pub definition: Vec<u8>,
}

impl fmt::Display for Dataflow {
    /// The definition as text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.definition))
    }
}

/// Dataflows, shown as a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Dataflows(pub Vec<Dataflow>);

impl fmt::Display for Dataflows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = column(16, self.0.iter().map(|d| d.version.to_string().len()));
        writeln!(f, "{:<32} {:<version$} DEFINITION", "NAME", "VERSION")?;
        for d in &self.0 {
            writeln!(
                f,
                "{:<32} {:<version$} {}",
                d.name,
                d.version.to_string(),
                one_line(&d.definition, 60)
            )?;
        }
        Ok(())
    }
}

/// A named object (dataflow, resource) written or deleted. Its JSON names the
/// object by its kind: `{"dataflow": "x", "write": …}`, plus `"deleted": true`
/// for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameWritten {
    /// What kind of object: `dataflow`, `resource`.
    pub what: &'static str,
    /// Its name.
    pub name: String,
    /// Whether the write deleted it.
    pub deleted: bool,
    /// The acknowledged write.
    pub write: WriteReceipt,
}

impl Serialize for NameWritten {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry(self.what, &self.name)?;
        if self.deleted {
            map.serialize_entry("deleted", &true)?;
        }
        map.serialize_entry("write", &self.write)?;
        map.end()
    }
}

impl fmt::Display for NameWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = if self.deleted { "deleted" } else { "stored" };
        write!(f, "{} {} {done} ({})", self.what, self.name, self.write)
    }
}

/// A resource definition as the API shows it: secrets redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResourceInfo {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its description (empty when none).
    pub description: String,
    /// The version token of the write that stored it.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub version: VersionToken,
    /// Whether it holds a secret (shown redacted).
    pub has_secret: bool,
    /// The redacted definition (JSON).
    #[serde(serialize_with = "as_json_or_text")]
    #[schema(value_type = Value)]
    pub definition: Vec<u8>,
}

impl fmt::Display for ResourceInfo {
    /// The redacted definition, pretty-printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::from_slice::<serde_json::Value>(&self.definition) {
            Ok(v) => write!(f, "{v:#}"),
            Err(_) => f.write_str(&String::from_utf8_lossy(&self.definition)),
        }
    }
}

/// Resources, shown as a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Resources(pub Vec<ResourceInfo>);

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = column(14, self.0.iter().map(|r| r.version.to_string().len()));
        writeln!(f, "{:<24} {:<12} {:<7} {:<version$} DESCRIPTION", "NAME", "KIND", "SECRET", "VERSION")?;
        for r in &self.0 {
            let secret = if r.has_secret { "***" } else { "-" };
            let description = one_line(r.description.as_bytes(), 50);
            writeln!(
                f,
                "{:<24} {:<12} {secret:<7} {:<version$} {description}",
                r.name,
                r.kind,
                r.version.to_string()
            )?;
        }
        Ok(())
    }
}

/// A resource stored by `CreateResource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResourceStored {
    /// The resource, redacted.
    pub resource: ResourceInfo,
    /// The acknowledged write.
    pub write: WriteReceipt,
}

impl fmt::Display for ResourceStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.resource.has_secret { ", secret encrypted" } else { "" };
        write!(f, "resource {} ({}{secret}) stored ({})", self.resource.name, self.resource.kind, self.write)
    }
}

/// The resource checks of one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NodeResourceCheck {
    /// The member.
    #[schema(value_type = String)]
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// Why it could not be asked, when it could not.
    pub error: Option<String>,
    /// Each checked resource.
    pub resources: Vec<ResourceAvailability>,
}

/// Resource availability on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResourceChecks {
    /// One entry per member, by node id.
    pub nodes: Vec<NodeResourceCheck>,
}

impl fmt::Display for ResourceChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<24} {:<16} {:<10} DETAIL", "RESOURCE", "NODE", "AVAILABLE")?;
        for n in &self.nodes {
            if let Some(error) = &n.error {
                writeln!(f, "{:<24} {:<16} {:<10} node not reachable: {error}", "*", n.node.as_str(), "?")?;
            }
            for r in &n.resources {
                let yes = if r.available { "yes" } else { "NO" };
                writeln!(f, "{:<24} {:<16} {yes:<10} {}", r.name, n.node.as_str(), r.detail)?;
            }
        }
        Ok(())
    }
}

/// An export of the whole configuration: licenses, dataflows, settings and
/// resources (resource secrets redacted). See [`Admin::export_config`](crate::admin::Admin::export_config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConfigExport {
    /// The export file's bytes (JSON).
    #[serde(skip)]
    pub file: Vec<u8>,
    /// How many licenses it holds.
    pub licenses: u32,
    /// How many dataflows it holds.
    pub dataflows: u32,
    /// How many settings it holds.
    pub settings: u32,
    /// How many resource definitions it holds.
    pub resources: u32,
    /// The node that made it.
    #[schema(value_type = String)]
    pub served_by: NodeId,
}

/// An export of every resource definition (secrets redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResourceExport {
    /// The export file's bytes (JSON).
    #[serde(skip)]
    pub file: Vec<u8>,
    /// How many definitions it holds.
    pub count: u32,
    /// The node that made it.
    #[schema(value_type = String)]
    pub served_by: NodeId,
}

/// What an import does (or would do, in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportPlan {
    /// Definitions new to this cluster.
    pub add: Vec<String>,
    /// Definitions that replace a different one.
    pub change: Vec<String>,
    /// Definitions already present as they are.
    pub unchanged: Vec<String>,
    /// Definitions whose secret the file redacted and this cluster lacks: not imported.
    pub needs_secret: Vec<String>,
    /// Definitions whose redacted secret keeps this cluster's.
    pub kept: Vec<String>,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportReport {
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Whether anything was written.
    pub applied: bool,
    /// The cluster the file was exported from.
    pub source_cluster: String,
    /// What it does.
    #[serde(flatten)]
    pub plan: ImportPlan,
    /// The write, when it applied one.
    pub write: Option<WriteReceipt>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.dry_run { "would import from" } else { "import from" };
        writeln!(f, "{what} cluster {}:", self.source_cluster)?;
        let p = &self.plan;
        for (label, names) in [
            ("add", &p.add),
            ("change", &p.change),
            ("unchanged", &p.unchanged),
            ("needs secret", &p.needs_secret),
            ("kept", &p.kept),
        ] {
            let names = if names.is_empty() { "-".to_owned() } else { names.join(", ") };
            writeln!(f, "  {label:<13} {names}")?;
        }
        match (&self.write, self.dry_run) {
            (_, true) => write!(f, "dry run: nothing was changed"),
            (Some(write), false) => write!(f, "imported ({write})"),
            (None, false) => write!(f, "nothing to change"),
        }
    }
}

/// What resealing secrets did (`spectrum key rotate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResealReport {
    /// Definitions resealed with the current key.
    pub resealed: Vec<String>,
    /// Definitions already sealed with the current key.
    pub current: u32,
    /// Definitions no key of the answering node opens.
    pub unreadable: Vec<String>,
    /// The write, when something was resealed.
    pub write: Option<WriteReceipt>,
}

impl fmt::Display for ResealReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
        writeln!(f, "resealed with the current key: {}", list(&self.resealed))?;
        writeln!(f, "already current: {}", self.current)?;
        if !self.unreadable.is_empty() {
            writeln!(f, "UNREADABLE (no key of this node opens them): {}", list(&self.unreadable))?;
        }
        match &self.write {
            Some(w) => write!(f, "written ({w})"),
            None => write!(f, "nothing to write"),
        }
    }
}

/// A member's state set by an operator (drain, undrain, remove). Its JSON is
/// `{"node": id, "addr": …, "state": …, "previous": …, "write": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStateChanged {
    /// The member as now recorded.
    pub member: Member,
    /// Its state before: the same as `member.state` when the operator asked
    /// for the state it already had (nothing changed). `None` from a node
    /// of an earlier version.
    pub previous: Option<MemberState>,
    /// The acknowledged write.
    pub write: WriteReceipt,
}

impl Serialize for NodeStateChanged {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("node", &self.member.id)?;
        map.serialize_entry("addr", &self.member.addr)?;
        map.serialize_entry("state", &self.member.state)?;
        map.serialize_entry("previous", &self.previous)?;
        map.serialize_entry("write", &self.write)?;
        map.end()
    }
}

impl fmt::Display for NodeStateChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.previous {
            Some(previous) if previous == self.member.state => {
                write!(
                    f,
                    "node {} was already {}: nothing changed ({})",
                    self.member.id, previous, self.write
                )
            }
            _ => write!(f, "node {} is now {} ({})", self.member.id, self.member.state, self.write),
        }
    }
}

/// A user of the management API as the API shows it: never a token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserInfo {
    /// The user's name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// When the user was added, in ms since the Unix epoch.
    pub created_ms: u64,
    /// Whether the user's token was revoked.
    pub revoked: bool,
    /// The version token of the write that last changed the user.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub version: VersionToken,
}

/// Users, shown as a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Users(pub Vec<UserInfo>);

impl fmt::Display for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<32} {:<9} {:<8} {:<24} VERSION", "NAME", "ROLE", "REVOKED", "CREATED")?;
        for u in &self.0 {
            let revoked = if u.revoked { "yes" } else { "-" };
            writeln!(
                f,
                "{:<32} {:<9} {revoked:<8} {:<24} {}",
                u.name,
                u.role.as_str(),
                time_text(u.created_ms),
                u.version
            )?;
        }
        Ok(())
    }
}

/// A user written with a new token (`AddUser`, `RotateUser`): the only time the
/// token is ever shown. Its JSON is `{"user": {…}, "token": "spt_…", "write": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserToken {
    /// The user.
    pub user: UserInfo,
    /// The user's new token, in clear.
    #[serde(serialize_with = "token_text")]
    #[schema(value_type = String)]
    pub token: Token,
    /// The acknowledged write.
    pub write: WriteReceipt,
}

fn token_text<S: Serializer>(token: &Token, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(token.expose())
}

impl fmt::Display for UserToken {
    /// The token on its own line, after a line saying it is shown only once.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "user {} ({}): token below, shown only this once ({})",
            self.user.name, self.user.role, self.write
        )?;
        write!(f, "{}", self.token.expose())
    }
}

/// A user whose token was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserRevoked {
    /// The user, as now recorded.
    pub user: UserInfo,
    /// The acknowledged write.
    pub write: WriteReceipt,
}

impl fmt::Display for UserRevoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {} revoked ({})", self.user.name, self.write)
    }
}

/// Which audit records to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records at or after this time (ms since the Unix epoch); 0 for all.
    pub since_ms: u64,
    /// Only records of this caller.
    pub user: Option<String>,
    /// At most this many records; `None` for [`DEFAULT_AUDIT_LIMIT`].
    pub limit: Option<u32>,
    /// What the answering node must have seen first.
    pub after: ReadAfter,
}

/// How many audit records a query returns when it sets no limit.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;

/// One record of the audit log. Its JSON is the stored record with its `id`:
/// `{"id": "…", "at_ms": …, "node": …, "caller": …, "role": …, "operation": …,
/// "target": …, "ok": …, "code": …, "message"?: …, "seq": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEntry {
    /// The record's name, unique and sorting by time:
    /// `<at_ms, 15 digits>-<node>-<seq, 10 digits>` ([`AuditRecord::id`]).
    pub id: String,
    /// What it says.
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// Audit records, newest first, shown as a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct AuditLog(pub Vec<AuditEntry>);

impl fmt::Display for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each column as wide as its widest cell (an operation such as
        // `CreateResource(replace)` is wider than most).
        let width = |title: &str, cell: fn(&AuditRecord) -> usize| {
            self.0.iter().map(|e| cell(&e.record)).chain([title.len()]).max().unwrap_or(0)
        };
        let node = width("NODE", |r| r.node.len());
        let caller = width("CALLER", |r| r.caller.len());
        let operation = width("OPERATION", |r| r.operation.len());
        let target = width("TARGET", |r| r.target.len());
        writeln!(
            f,
            "{:<24} {:<node$} {:<caller$} {:<9} {:<operation$} {:<target$} OUTCOME",
            "TIME", "NODE", "CALLER", "ROLE", "OPERATION", "TARGET"
        )?;
        for e in &self.0 {
            let r = &e.record;
            let outcome = if r.ok {
                "ok".to_owned()
            } else {
                format!("{}: {}", r.code, one_line(r.message.as_bytes(), 60))
            };
            writeln!(
                f,
                "{:<24} {:<node$} {:<caller$} {:<9} {:<operation$} {:<target$} {outcome}",
                time_text(r.at_ms),
                r.node,
                r.caller,
                r.role.as_str(),
                r.operation,
                r.target
            )?;
        }
        Ok(())
    }
}

/// A time in ms since the Unix epoch as RFC 3339 (UTC, ms precision).
fn time_text(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| ms.to_string(), |t| format!("{t:.3}"))
}

/// Shapes of the types this crate serialises but does not own (from
/// `spectrum-core`), and of the model types with a hand-written `Serialize`, for
/// the HTTP API's OpenAPI document. A unit test checks each against the JSON the
/// real type produces.
pub mod schema {
    use serde::Serialize;
    use utoipa::ToSchema;

    use super::WriteReceipt;

    /// Whether a member is up, by the answering node's failure detector.
    #[derive(Debug, Clone, Copy, Serialize, ToSchema)]
    #[schema(as = Liveness)]
    #[serde(rename_all = "snake_case")]
    pub enum Liveness {
        /// Heard from recently enough.
        Alive,
        /// Silent for longer than usual.
        Suspect,
        /// Silent for so long that it is taken to be down.
        Down,
        /// Never heard from.
        Unknown,
    }

    /// A member's state, as operators set it.
    #[derive(Debug, Clone, Copy, Serialize, ToSchema)]
    #[schema(as = MemberState)]
    #[serde(rename_all = "snake_case")]
    pub enum MemberState {
        /// Started, catching up; not yet serving.
        Joining,
        /// Serving requests.
        Active,
        /// Gets no new requests (drained by an operator, or stopping).
        Draining,
        /// Left the cluster cleanly.
        Left,
        /// Removed for good by an operator.
        Removed,
    }

    /// One node as recorded in cluster membership.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    #[schema(as = Member)]
    pub struct Member {
        /// The node's id.
        pub id: String,
        /// The node's address (`http://host:port`).
        pub addr: String,
        /// Its state.
        pub state: MemberState,
    }

    /// A dataflow or resource written or deleted: the object's name under its
    /// kind (`"dataflow"` or `"resource"`), `"deleted": true` for a delete.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    #[schema(as = NameWritten)]
    pub struct NameWritten {
        /// The dataflow's name, for a dataflow.
        pub dataflow: Option<String>,
        /// The resource's name, for a resource.
        pub resource: Option<String>,
        /// Present (`true`) when the write deleted it.
        pub deleted: Option<bool>,
        /// The acknowledged write.
        pub write: WriteReceipt,
    }

    /// A member's state changed by an operator.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    #[schema(as = NodeStateChanged)]
    pub struct NodeStateChanged {
        /// The member's id.
        pub node: String,
        /// Its address.
        pub addr: String,
        /// Its state now.
        pub state: MemberState,
        /// Its state before (the same as `state` when nothing changed; null
        /// from a node of an earlier version).
        pub previous: Option<MemberState>,
        /// The acknowledged write.
        pub write: WriteReceipt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_table_aligns_each_column_to_its_widest_cell() {
        let record = |operation: &str| AuditEntry {
            id: String::new(),
            record: AuditRecord {
                at_ms: 0,
                node: "node-1".into(),
                caller: "bootstrap".into(),
                role: Role::Admin,
                operation: operation.into(),
                target: "settings/x".into(),
                ok: true,
                code: "Ok".into(),
                message: String::new(),
                seq: 0,
            },
        };
        let table = AuditLog(vec![record("Put"), record("CreateResource(replace)")]).to_string();
        let at: Vec<usize> = table.lines().map(|l| l.rfind(' ').unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{table}");
    }

    fn receipt() -> WriteReceipt {
        WriteReceipt {
            version: "n1:7".parse().unwrap(),
            acked: 3,
            members: 3,
            served_by: "n1".parse().unwrap(),
        }
    }

    #[test]
    fn json_values_stay_json_and_other_values_become_strings() {
        let e = Entry {
            key: "settings/a".into(),
            version: "n1:1".parse().unwrap(),
            value: br#"{"x":1}"#.to_vec(),
            stamp_wall_ms: 0,
            stamp_logical: 0,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["value"]["x"], 1);
        assert_eq!(v["version"], "n1:1");
        let text = Entry { value: b"hello".to_vec(), ..e.clone() };
        assert_eq!(serde_json::to_value(&text).unwrap()["value"], "hello");
        assert_eq!(text.to_string(), "hello");
        // Shown as stored: what JSON would write back otherwise stays text.
        for (stored, shown) in [
            ("42", serde_json::json!(42)),
            ("true", serde_json::json!(true)),
            ("1e3", serde_json::json!("1e3")),
            (" 1", serde_json::json!(" 1")),
            ("12345678901234567890123", serde_json::json!("12345678901234567890123")),
            ("\"q\"", serde_json::json!("\"q\"")),
            ("q", serde_json::json!("q")),
            ("[1, 2]", serde_json::json!([1, 2])),
        ] {
            let entry = Entry { value: stored.as_bytes().to_vec(), ..e.clone() };
            assert_eq!(serde_json::to_value(&entry).unwrap()["value"], shown, "{stored:?}");
        }
    }

    #[test]
    fn named_writes_and_state_changes_keep_the_command_s_json_keys() {
        let stored = NameWritten { what: "dataflow", name: "x".into(), deleted: false, write: receipt() };
        let v = serde_json::to_value(&stored).unwrap();
        assert_eq!((v["dataflow"].as_str(), v.get("deleted")), (Some("x"), None));
        let gone = NameWritten { what: "resource", deleted: true, ..stored };
        let v = serde_json::to_value(&gone).unwrap();
        assert_eq!((v["resource"].as_str(), v["deleted"].as_bool()), (Some("x"), Some(true)));
        assert_eq!(v["write"]["version"], "n1:7");
        let member = Member::new(
            "n2".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
            spectrum_core::MemberState::Draining,
        );
        let changed = NodeStateChanged { member, previous: Some(MemberState::Active), write: receipt() };
        assert!(changed.to_string().starts_with("node n2 is now draining ("), "{changed}");
        let v = serde_json::to_value(&changed).unwrap();
        assert_eq!((v["node"].as_str(), v["state"].as_str()), (Some("n2"), Some("draining")));
        assert_eq!(v["previous"], "active");
        assert_eq!(v["addr"], "http://127.0.0.1:7002");
        let unchanged = NodeStateChanged { previous: Some(MemberState::Draining), ..changed };
        assert!(
            unchanged.to_string().starts_with("node n2 was already draining: nothing changed ("),
            "{unchanged}"
        );
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_openapi_mirrors_match_the_json_of_the_types_they_describe() {
        use spectrum_core::MemberState as S;
        let states = [S::Joining, S::Active, S::Draining, S::Left, S::Removed];
        let mirrored = [
            schema::MemberState::Joining,
            schema::MemberState::Active,
            schema::MemberState::Draining,
            schema::MemberState::Left,
            schema::MemberState::Removed,
        ];
        for (real, mirror) in states.iter().zip(mirrored) {
            assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
        }
        let lives = [Liveness::Alive, Liveness::Suspect, Liveness::Down, Liveness::Unknown];
        let mirrored = [
            schema::Liveness::Alive,
            schema::Liveness::Suspect,
            schema::Liveness::Down,
            schema::Liveness::Unknown,
        ];
        for (real, mirror) in lives.iter().zip(mirrored) {
            assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
        }
        let member = Member::new("n2".parse().unwrap(), "127.0.0.1:7002".parse().unwrap(), S::Active);
        let mirror = schema::Member {
            id: "n2".into(),
            addr: "http://127.0.0.1:7002".into(),
            state: mirrored_active(),
        };
        assert_eq!(serde_json::to_value(&member).unwrap(), serde_json::to_value(&mirror).unwrap());
        let changed = serde_json::to_value(NodeStateChanged {
            member,
            previous: Some(MemberState::Active),
            write: receipt(),
        })
        .unwrap();
        let mirror = schema::NodeStateChanged {
            node: "n2".into(),
            addr: "http://127.0.0.1:7002".into(),
            state: mirrored_active(),
            previous: Some(mirrored_active()),
            write: receipt(),
        };
        assert_eq!(changed, serde_json::to_value(&mirror).unwrap());
        let named = NameWritten { what: "resource", name: "x".into(), deleted: true, write: receipt() };
        let mirror = schema::NameWritten {
            dataflow: Some("x".into()),
            resource: Some("x".into()),
            deleted: Some(true),
            write: receipt(),
        };
        let mirror_keys = keys(&serde_json::to_value(&mirror).unwrap());
        assert!(keys(&serde_json::to_value(&named).unwrap()).iter().all(|k| mirror_keys.contains(k)));
    }

    fn mirrored_active() -> schema::MemberState {
        schema::MemberState::Active
    }

    #[test]
    fn a_written_key_prints_its_receipt_both_ways() {
        let w = KeyWritten { key: "settings/a".into(), deleted: false, write: receipt() };
        assert_eq!(w.to_string(), "settings/a set (version n1:7, acknowledged by 3/3 nodes)");
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(
            (v["key"].as_str(), v["version"].as_str(), v["acked"].as_u64()),
            (Some("settings/a"), Some("n1:7"), Some(3))
        );
    }

    #[test]
    fn users_and_audit_records_have_their_documented_json_shapes() {
        let user = UserInfo {
            name: "olga".into(),
            role: Role::Operator,
            created_ms: 1_000,
            revoked: false,
            version: "n1:7".parse().unwrap(),
        };
        let token: Token = "spt_0123".parse().unwrap();
        let added = UserToken { user: user.clone(), token, write: receipt() };
        let v = serde_json::to_value(&added).unwrap();
        assert_eq!((v["user"]["role"].as_str(), v["token"].as_str()), (Some("operator"), Some("spt_0123")));
        assert_eq!(v["user"]["version"], "n1:7");
        assert!(added.to_string().ends_with("\nspt_0123"), "the token is the last line");
        assert!(!format!("{added:?}").contains("spt_0123"), "Debug never shows it");
        assert!(!serde_json::to_string(&Users(vec![user])).unwrap().contains("spt_"));
        let entry = AuditEntry {
            id: "000000000001000-n1-0000000000".into(),
            record: AuditRecord {
                at_ms: 1_000,
                node: "n1".into(),
                caller: "vic".into(),
                role: Role::Viewer,
                operation: "Put".into(),
                target: "settings/a".into(),
                ok: false,
                code: "PermissionDenied".into(),
                message: "Put needs the admin role".into(),
                seq: 0,
            },
        };
        let v = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["caller"].as_str(), v["role"].as_str()),
            (Some(entry.id.as_str()), Some("vic"), Some("viewer"))
        );
        assert_eq!((v["ok"].as_bool(), v["code"].as_str()), (Some(false), Some("PermissionDenied")));
        let table = AuditLog(vec![entry]).to_string();
        assert!(
            table.contains("1970-01-01T00:00:01.000Z") && table.contains("PermissionDenied: Put needs"),
            "{table}"
        );
    }
}
