//! Open conflicts (`spectrum config conflicts`): writes to one key made on
//! different nodes without seeing each other, where last-writer-wins kept one
//! and the other is kept beside it (see [`spectrum_replication::conflict`]).

use std::fmt;

use serde::Serialize;
use spectrum_core::NodeId;
use spectrum_replication::{Record, VersionToken};
use utoipa::ToSchema;

use super::as_text;

/// One side of a conflict: a write to the key. Values are not shown (a value may
/// hold sealed secrets); read the key for the winner's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConflictVersion {
    /// The write's version token (`origin:seq`).
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub version: VersionToken,
    /// The node that made it.
    #[schema(value_type = String)]
    pub node: NodeId,
    /// Its writer's hybrid-logical-clock stamp: wall-clock ms since the Unix epoch.
    pub stamp_wall_ms: u64,
    /// The stamp's logical counter.
    pub stamp_logical: u32,
    /// Whether the write was a delete.
    pub deleted: bool,
    /// The version its writer held for the key when it wrote, if any.
    #[serde(serialize_with = "as_opt_text")]
    #[schema(value_type = Option<String>)]
    pub replaces: Option<VersionToken>,
}

fn as_opt_text<S: serde::Serializer>(value: &Option<VersionToken>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

impl From<&Record> for ConflictVersion {
    fn from(r: &Record) -> Self {
        Self {
            version: r.token(),
            node: r.origin.node().clone(),
            stamp_wall_ms: r.stamp.wall_ms,
            stamp_logical: r.stamp.logical,
            deleted: r.is_tombstone(),
            replaces: r.lineage.replaces.clone(),
        }
    }
}

/// A write to `key` that lost to the key's current value without either writer
/// having seen the other. JSON:
/// `{"key": "settings/mode", "winner": {"version": "n2~…:7", "node": "n2",
/// "stamp_wall_ms": …, "stamp_logical": 0, "deleted": false, "replaces": "n1~…:3"},
/// "loser": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConflictInfo {
    /// The key both wrote.
    pub key: String,
    /// The write the key holds now (last writer wins).
    pub winner: ConflictVersion,
    /// The write it silently replaced.
    pub loser: ConflictVersion,
}

impl From<&spectrum_replication::Conflict> for ConflictInfo {
    fn from(c: &spectrum_replication::Conflict) -> Self {
        Self { key: c.key.clone(), winner: (&c.winner).into(), loser: (&c.loser).into() }
    }
}

/// Open conflicts, shown as a table (or a line saying there are none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Conflicts(pub Vec<ConflictInfo>);

impl fmt::Display for Conflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "no open conflicts");
        }
        writeln!(
            f,
            "{:<32} {:<6} {:<28} {:<10} {:<24} WRITTEN AT",
            "KEY", "SIDE", "VERSION", "NODE", "WRITE"
        )?;
        for c in &self.0 {
            for (side, v) in [("winner", &c.winner), ("loser", &c.loser)] {
                let key = if side == "winner" { c.key.as_str() } else { "" };
                let what = match (&v.replaces, v.deleted) {
                    (_, true) => "delete".to_owned(),
                    (Some(r), false) => format!("put over {}", short(r)),
                    (None, false) => "put (new key)".to_owned(),
                };
                writeln!(
                    f,
                    "{key:<32} {side:<6} {:<28} {:<10} {what:<24} {}",
                    v.version.to_string(),
                    v.node.as_str(),
                    when(v.stamp_wall_ms)
                )?;
            }
        }
        Ok(())
    }
}

/// A version token with its incarnation cut short, for tables.
fn short(t: &VersionToken) -> String {
    let text = t.to_string();
    if text.chars().count() > 16 { format!("{}…", text.chars().take(15).collect::<String>()) } else { text }
}

/// A stamp's wall-clock part as an RFC 3339 UTC time.
fn when(wall_ms: u64) -> String {
    match i64::try_from(wall_ms).map(jiff::Timestamp::from_millisecond) {
        Ok(Ok(t)) => t.to_string(),
        _ => format!("{wall_ms} ms"),
    }
}
