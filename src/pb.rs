//! The management API's protobuf messages (`spectrum.management.v1`) and their
//! conversions to and from the [`crate::model`] types.
//!
//! The generated types are public for interoperability (any gRPC client can use
//! `proto/spectrum/management.proto`, and nodes serve reflection), but Rust code
//! talks to a cluster through the typed [`client`](crate::client). Conversions
//! go both ways: `From<model> for proto` on the serving side (the
//! [`management`](crate::management) adapter), and validating
//! `TryFrom<proto> for model` on the client side, which refuses an answer with a
//! malformed field ([`InvalidAnswer`]) rather than panic or guess.

use std::collections::BTreeMap;

use spectrum_balancer::BalancerError;
use spectrum_balancer::strategy::{StrategyName, StrategySpec};
use spectrum_core::{Member, MemberState, NodeId, PeerAddr};
use spectrum_replication::{AckLevel, VersionToken};
use thiserror::Error;

use crate::auth::{Role, Token};
use crate::model;
use crate::namespace::AuditRecord;

/// Generated types and stubs of `spectrum.management.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("spectrum.management.v1");
}

/// A node's answer held a field the client could not read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed answer: {field}: {reason}")]
pub struct InvalidAnswer {
    /// The field at fault (`write.version`, `members[2].addr`, …).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

pub(crate) fn bad(field: impl Into<String>, reason: impl ToString) -> InvalidAnswer {
    InvalidAnswer { field: field.into(), reason: reason.to_string() }
}

fn token(field: &str, text: &str) -> Result<VersionToken, InvalidAnswer> {
    text.parse().map_err(|e| bad(field, e))
}

pub(crate) fn node_id(field: &str, text: &str) -> Result<NodeId, InvalidAnswer> {
    text.parse().map_err(|e| bad(field, e))
}

/// The value of an answer's field that must be present.
pub(crate) fn required<T>(field: &str, value: Option<T>) -> Result<T, InvalidAnswer> {
    value.ok_or_else(|| bad(field, "missing"))
}

/// The wire form of an acknowledgement level.
pub fn ack_to_wire(ack: AckLevel) -> i32 {
    match ack {
        AckLevel::Local => proto::AckLevel::Local as i32,
        AckLevel::Quorum => proto::AckLevel::Quorum as i32,
        // `All`, and any level added later, is sent as the strictest this API knows.
        _ => proto::AckLevel::All as i32,
    }
}

/// An acknowledgement level from the wire (unset means a quorum), `None` for an unknown value.
pub fn ack_from_wire(ack: i32) -> Option<AckLevel> {
    match proto::AckLevel::try_from(ack).ok()? {
        proto::AckLevel::Default => Some(AckLevel::Quorum),
        proto::AckLevel::Local => Some(AckLevel::Local),
        proto::AckLevel::Quorum => Some(AckLevel::Quorum),
        proto::AckLevel::All => Some(AckLevel::All),
    }
}

/// The wire form of a role.
pub fn role_to_wire(role: Role) -> i32 {
    match role {
        Role::Viewer => proto::Role::Viewer as i32,
        Role::Operator => proto::Role::Operator as i32,
        // Exhaustive on purpose: a role added later must be mapped here, never
        // sent as a more powerful one by default.
        Role::Admin => proto::Role::Admin as i32,
    }
}

/// A role from the wire, `None` for an unknown or unspecified value.
pub fn role_from_wire(role: i32) -> Option<Role> {
    match proto::Role::try_from(role).ok()? {
        proto::Role::Viewer => Some(Role::Viewer),
        proto::Role::Operator => Some(Role::Operator),
        proto::Role::Admin => Some(Role::Admin),
        proto::Role::Unspecified => None,
    }
}

fn role(field: &str, wire: i32) -> Result<Role, InvalidAnswer> {
    role_from_wire(wire).ok_or_else(|| bad(field, format!("unknown role {wire}")))
}

/// The wire form of a read's single-version precondition (`min_version`; empty
/// for none, and for a session, which goes in the read's `ReadOptions`).
pub fn read_after_to_wire(after: &model::ReadAfter) -> String {
    match after {
        model::ReadAfter::Version(token) => token.to_string(),
        model::ReadAfter::Anything | model::ReadAfter::Session { .. } => String::new(),
    }
}

/// The wire form of a read's session precondition (`None` unless `after` is a
/// session); a wait goes in whole ms, at least 1.
pub fn read_options_to_wire(after: &model::ReadAfter) -> Option<proto::ReadOptions> {
    let model::ReadAfter::Session { session, wait } = after else { return None };
    let wait_ms = wait.map_or(0, |w| u32::try_from(w.as_millis()).unwrap_or(u32::MAX).max(1));
    Some(proto::ReadOptions { session: session.to_string(), wait_ms, consistent: false })
}

// ---- serving side: model → proto ----

impl From<model::WriteReceipt> for proto::WriteResult {
    fn from(w: model::WriteReceipt) -> Self {
        Self {
            version: w.version.to_string(),
            acked: w.acked,
            members: w.members,
            served_by: w.served_by.to_string(),
        }
    }
}

/// `Put` and `Delete` answer with the fields of a [`proto::WriteResult`] inline.
macro_rules! inline_write_result {
    ($($message:ident),*) => {$(
        impl From<model::WriteReceipt> for proto::$message {
            fn from(w: model::WriteReceipt) -> Self {
                let w = proto::WriteResult::from(w);
                Self { version: w.version, acked: w.acked, members: w.members, served_by: w.served_by }
            }
        }

        impl TryFrom<proto::$message> for model::WriteReceipt {
            type Error = InvalidAnswer;
            fn try_from(a: proto::$message) -> Result<Self, Self::Error> {
                let w = proto::WriteResult {
                    version: a.version,
                    acked: a.acked,
                    members: a.members,
                    served_by: a.served_by,
                };
                w.try_into()
            }
        }
    )*};
}

inline_write_result!(PutResponse, DeleteResponse);

impl From<model::Entry> for proto::Entry {
    fn from(e: model::Entry) -> Self {
        Self {
            key: e.key,
            value: e.value,
            version: e.version.to_string(),
            stamp_wall_ms: e.stamp_wall_ms,
            stamp_logical: e.stamp_logical,
        }
    }
}

impl From<&Member> for proto::MemberStatus {
    fn from(m: &Member) -> Self {
        Self {
            id: m.id.to_string(),
            addr: m.addr.to_string(),
            state: m.state.to_string(),
            liveness: String::new(),
        }
    }
}

impl From<&model::MemberInfo> for proto::MemberStatus {
    fn from(m: &model::MemberInfo) -> Self {
        Self { liveness: m.liveness.to_string(), ..(&m.member).into() }
    }
}

impl From<model::PeerInfo> for proto::PeerStatus {
    fn from(p: model::PeerInfo) -> Self {
        Self {
            addr: p.addr,
            id: p.id.map(|i| i.to_string()).unwrap_or_default(),
            last_contact_ms_ago: p.last_contact_ms_ago.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            lag: p.lag,
            has_clock_offset: p.clock_offset_ms.is_some(),
            clock_offset_ms: p.clock_offset_ms.unwrap_or(0),
            clock_skewed: p.clock_skewed,
            last_error: p.last_error.unwrap_or_default(),
            liveness: p.liveness.to_string(),
            has_clock_uncertainty: p.clock_uncertainty_ms.is_some(),
            clock_uncertainty_ms: p.clock_uncertainty_ms.unwrap_or(0),
        }
    }
}

impl From<model::ResourceAvailability> for proto::ResourceAvailability {
    fn from(r: model::ResourceAvailability) -> Self {
        Self { name: r.name, kind: r.kind, available: r.available, detail: r.detail }
    }
}

impl From<model::NodeStatus> for proto::StatusResponse {
    fn from(s: model::NodeStatus) -> Self {
        Self {
            cluster_id: s.cluster,
            node_id: s.node.to_string(),
            addr: s.addr,
            version: s.version,
            members: s.members.iter().map(Into::into).collect(),
            peers: s.peers.into_iter().map(Into::into).collect(),
            keys: s.keys,
            tombstones: s.tombstones,
            conflicts: s.conflicts,
            digest: s.digest.into_iter().collect(),
            resources: s.resources.into_iter().map(Into::into).collect(),
            clock_fenced: s.clock_fenced.unwrap_or_default(),
            replication: Some(s.replication.into()),
            out_of_cluster: s.out_of_cluster.unwrap_or_default(),
        }
    }
}

impl From<model::LicenseInfo> for proto::LicenseInfo {
    fn from(l: model::LicenseInfo) -> Self {
        Self {
            name: l.name,
            owner: l.owner,
            seats: l.seats,
            expires: l.expires,
            days_left: l.days_left,
            expired: l.expired,
            document: l.document,
            version: l.version.to_string(),
        }
    }
}

impl From<model::Dataflow> for proto::Dataflow {
    fn from(d: model::Dataflow) -> Self {
        Self { name: d.name, definition: d.definition, version: d.version.to_string() }
    }
}

impl From<model::ResourceInfo> for proto::Resource {
    fn from(r: model::ResourceInfo) -> Self {
        Self {
            name: r.name,
            kind: r.kind,
            description: r.description,
            definition: r.definition,
            version: r.version.to_string(),
            has_secret: r.has_secret,
        }
    }
}

impl From<model::NodeResourceCheck> for proto::NodeResourceCheck {
    fn from(n: model::NodeResourceCheck) -> Self {
        Self {
            node_id: n.node.to_string(),
            addr: n.addr,
            error: n.error.unwrap_or_default(),
            resources: n.resources.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<model::ImportPlan> for proto::ImportPlan {
    fn from(p: model::ImportPlan) -> Self {
        Self {
            add: p.add,
            change: p.change,
            unchanged: p.unchanged,
            needs_secret: p.needs_secret,
            kept: p.kept,
        }
    }
}

impl From<model::UserInfo> for proto::User {
    fn from(u: model::UserInfo) -> Self {
        Self {
            name: u.name,
            role: role_to_wire(u.role),
            created_ms: u.created_ms,
            revoked: u.revoked,
            version: u.version.to_string(),
        }
    }
}

impl From<model::UserToken> for proto::UserTokenResponse {
    fn from(t: model::UserToken) -> Self {
        Self { user: Some(t.user.into()), token: t.token.expose().to_owned(), write: Some(t.write.into()) }
    }
}

impl From<model::AuditEntry> for proto::AuditEntry {
    fn from(e: model::AuditEntry) -> Self {
        let r = e.record;
        Self {
            id: e.id,
            at_ms: r.at_ms,
            node: r.node,
            caller: r.caller,
            role: role_to_wire(r.role),
            operation: r.operation,
            target: r.target,
            ok: r.ok,
            code: r.code,
            message: r.message,
            seq: r.seq,
        }
    }
}

impl From<&StrategySpec> for proto::BalancerStrategy {
    fn from(spec: &StrategySpec) -> Self {
        Self {
            name: spec.name().as_str().to_owned(),
            hash_key: spec.hash_key().map(|k| k.as_str().to_owned()).unwrap_or_default(),
            has_load_factor: spec.load_factor().is_some(),
            load_factor: spec.load_factor().unwrap_or_default(),
        }
    }
}

impl From<model::BalancerSettings> for proto::ShowBalancerSettingsResponse {
    /// Every field but `served_by`.
    fn from(s: model::BalancerSettings) -> Self {
        Self {
            strategy: s.strategy.as_ref().map(|s| (&s.spec).into()),
            strategy_version: s.strategy.map(|s| s.version.to_string()).unwrap_or_default(),
            weights: s
                .weights
                .into_iter()
                .map(|w| proto::BalancerWeight {
                    node_id: w.node.to_string(),
                    weight: w.weight,
                    version: w.version.to_string(),
                })
                .collect(),
            served_by: String::new(),
        }
    }
}

// ---- both sides ----

/// A strategy from the wire, checked as [`StrategySpec::new`] checks it: the
/// error names the field (`name`, `hash_key`, `load_factor`).
///
/// # Errors
///
/// [`BalancerError::InvalidStrategy`] for an unknown name or a bad parameter.
pub fn strategy_from_wire(s: &proto::BalancerStrategy) -> Result<StrategySpec, BalancerError> {
    let name: StrategyName = s.name.parse()?;
    let hash_key = (!s.hash_key.is_empty()).then_some(s.hash_key.as_str());
    StrategySpec::new(name, hash_key, s.has_load_factor.then_some(s.load_factor))
}

/// The field of an invalid strategy, for a message (`strategy.load_factor`).
pub(crate) fn strategy_error(prefix: &str, error: BalancerError) -> (String, String) {
    match error {
        BalancerError::InvalidStrategy { field, reason } => (format!("{prefix}.{field}"), reason),
        other => (prefix.to_owned(), other.to_string()),
    }
}

// ---- client side: proto → model, validated ----

impl TryFrom<proto::WriteResult> for model::WriteReceipt {
    type Error = InvalidAnswer;
    fn try_from(w: proto::WriteResult) -> Result<Self, Self::Error> {
        Ok(Self {
            version: token("write.version", &w.version)?,
            acked: w.acked,
            members: w.members,
            served_by: node_id("write.served_by", &w.served_by)?,
        })
    }
}

/// The receipt of an answer that must carry one.
pub(crate) fn receipt(write: Option<proto::WriteResult>) -> Result<model::WriteReceipt, InvalidAnswer> {
    required("write", write)?.try_into()
}

impl TryFrom<proto::ShowBalancerSettingsResponse> for model::BalancerSettings {
    type Error = InvalidAnswer;
    fn try_from(a: proto::ShowBalancerSettingsResponse) -> Result<Self, Self::Error> {
        let strategy = match a.strategy {
            Some(s) => {
                let spec = strategy_from_wire(&s).map_err(|e| {
                    let (field, reason) = strategy_error("strategy", e);
                    bad(field, reason)
                })?;
                let version = token("strategy_version", &a.strategy_version)?;
                Some(model::StrategySetting { spec, version })
            }
            None => None,
        };
        let weights = a
            .weights
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                Ok(model::WeightSetting {
                    node: node_id(&format!("weights[{i}].node_id"), &w.node_id)?,
                    weight: w.weight,
                    version: token(&format!("weights[{i}].version"), &w.version)?,
                })
            })
            .collect::<Result<_, InvalidAnswer>>()?;
        Ok(Self { strategy, weights })
    }
}

impl TryFrom<proto::Entry> for model::Entry {
    type Error = InvalidAnswer;
    fn try_from(e: proto::Entry) -> Result<Self, Self::Error> {
        Ok(Self {
            version: token("entry.version", &e.version)?,
            key: e.key,
            value: e.value,
            stamp_wall_ms: e.stamp_wall_ms,
            stamp_logical: e.stamp_logical,
        })
    }
}

impl TryFrom<proto::MemberStatus> for Member {
    type Error = InvalidAnswer;
    fn try_from(m: proto::MemberStatus) -> Result<Self, Self::Error> {
        Ok(Member {
            id: node_id("member.id", &m.id)?,
            addr: m.addr.parse::<PeerAddr>().map_err(|e| bad("member.addr", e))?,
            state: m.state.parse::<MemberState>().map_err(|e| bad("member.state", e))?,
            stopped: false,
        })
    }
}

impl TryFrom<proto::MemberStatus> for model::MemberInfo {
    type Error = InvalidAnswer;
    fn try_from(m: proto::MemberStatus) -> Result<Self, Self::Error> {
        let liveness = m.liveness.parse().map_err(|e| bad("member.liveness", e))?;
        Ok(Self { member: m.try_into()?, liveness })
    }
}

impl TryFrom<proto::PeerStatus> for model::PeerInfo {
    type Error = InvalidAnswer;
    fn try_from(p: proto::PeerStatus) -> Result<Self, Self::Error> {
        Ok(Self {
            id: if p.id.is_empty() { None } else { Some(node_id("peer.id", &p.id)?) },
            addr: p.addr,
            lag: p.lag,
            last_contact_ms_ago: u64::try_from(p.last_contact_ms_ago).ok(),
            clock_offset_ms: p.has_clock_offset.then_some(p.clock_offset_ms),
            clock_uncertainty_ms: p.has_clock_uncertainty.then_some(p.clock_uncertainty_ms),
            clock_skewed: p.clock_skewed,
            last_error: (!p.last_error.is_empty()).then_some(p.last_error),
            liveness: p.liveness.parse().map_err(|e| bad("peer.liveness", e))?,
        })
    }
}

impl From<proto::ResourceAvailability> for model::ResourceAvailability {
    fn from(r: proto::ResourceAvailability) -> Self {
        Self { name: r.name, kind: r.kind, available: r.available, detail: r.detail }
    }
}

impl TryFrom<proto::StatusResponse> for model::NodeStatus {
    type Error = InvalidAnswer;
    fn try_from(s: proto::StatusResponse) -> Result<Self, Self::Error> {
        Ok(Self {
            node: node_id("node_id", &s.node_id)?,
            cluster: s.cluster_id,
            addr: s.addr,
            version: s.version,
            keys: s.keys,
            tombstones: s.tombstones,
            conflicts: s.conflicts,
            digest: s.digest.into_iter().collect::<BTreeMap<_, _>>(),
            members: s.members.into_iter().map(model::MemberInfo::try_from).collect::<Result<_, _>>()?,
            peers: s.peers.into_iter().map(model::PeerInfo::try_from).collect::<Result<_, _>>()?,
            resources: s.resources.into_iter().map(Into::into).collect(),
            clock_fenced: (!s.clock_fenced.is_empty()).then_some(s.clock_fenced),
            replication: model::ReplicationInfo::from_answer(s.replication)?,
            out_of_cluster: (!s.out_of_cluster.is_empty()).then_some(s.out_of_cluster),
        })
    }
}

impl TryFrom<proto::LicenseInfo> for model::LicenseInfo {
    type Error = InvalidAnswer;
    fn try_from(l: proto::LicenseInfo) -> Result<Self, Self::Error> {
        Ok(Self {
            version: token("license.version", &l.version)?,
            name: l.name,
            owner: l.owner,
            seats: l.seats,
            expires: l.expires,
            days_left: l.days_left,
            expired: l.expired,
            document: l.document,
        })
    }
}

impl TryFrom<proto::Dataflow> for model::Dataflow {
    type Error = InvalidAnswer;
    fn try_from(d: proto::Dataflow) -> Result<Self, Self::Error> {
        Ok(Self { version: token("dataflow.version", &d.version)?, name: d.name, definition: d.definition })
    }
}

impl TryFrom<proto::Resource> for model::ResourceInfo {
    type Error = InvalidAnswer;
    fn try_from(r: proto::Resource) -> Result<Self, Self::Error> {
        Ok(Self {
            version: token("resource.version", &r.version)?,
            name: r.name,
            kind: r.kind,
            description: r.description,
            has_secret: r.has_secret,
            definition: r.definition,
        })
    }
}

impl TryFrom<proto::NodeResourceCheck> for model::NodeResourceCheck {
    type Error = InvalidAnswer;
    fn try_from(n: proto::NodeResourceCheck) -> Result<Self, Self::Error> {
        Ok(Self {
            node: node_id("nodes.node_id", &n.node_id)?,
            addr: n.addr,
            error: (!n.error.is_empty()).then_some(n.error),
            resources: n.resources.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<proto::ImportPlan> for model::ImportPlan {
    fn from(p: proto::ImportPlan) -> Self {
        Self {
            add: p.add,
            change: p.change,
            unchanged: p.unchanged,
            needs_secret: p.needs_secret,
            kept: p.kept,
        }
    }
}

impl TryFrom<proto::User> for model::UserInfo {
    type Error = InvalidAnswer;
    fn try_from(u: proto::User) -> Result<Self, Self::Error> {
        Ok(Self {
            version: token("user.version", &u.version)?,
            role: role("user.role", u.role)?,
            name: u.name,
            created_ms: u.created_ms,
            revoked: u.revoked,
        })
    }
}

impl TryFrom<proto::UserTokenResponse> for model::UserToken {
    type Error = InvalidAnswer;
    fn try_from(a: proto::UserTokenResponse) -> Result<Self, Self::Error> {
        Ok(Self {
            user: required("user", a.user)?.try_into()?,
            token: Token::new(&a.token).map_err(|e| bad("token", e))?,
            write: receipt(a.write)?,
        })
    }
}

impl TryFrom<proto::AuditEntry> for model::AuditEntry {
    type Error = InvalidAnswer;
    fn try_from(e: proto::AuditEntry) -> Result<Self, Self::Error> {
        Ok(Self {
            id: e.id,
            record: AuditRecord {
                role: role("entries.role", e.role)?,
                at_ms: e.at_ms,
                node: e.node,
                caller: e.caller,
                operation: e.operation,
                target: e.target,
                ok: e.ok,
                code: e.code,
                message: e.message,
                seq: e.seq,
            },
        })
    }
}

impl From<model::ConflictVersion> for proto::ConflictVersion {
    fn from(v: model::ConflictVersion) -> Self {
        Self {
            version: v.version.to_string(),
            node: v.node.to_string(),
            stamp_wall_ms: v.stamp_wall_ms,
            stamp_logical: v.stamp_logical,
            deleted: v.deleted,
            replaces: v.replaces.map(|t| t.to_string()).unwrap_or_default(),
        }
    }
}

impl From<model::ConflictInfo> for proto::Conflict {
    fn from(c: model::ConflictInfo) -> Self {
        Self { key: c.key, winner: Some(c.winner.into()), loser: Some(c.loser.into()) }
    }
}

fn conflict_version(
    field: &str,
    v: Option<proto::ConflictVersion>,
) -> Result<model::ConflictVersion, InvalidAnswer> {
    let v = required(field, v)?;
    Ok(model::ConflictVersion {
        version: token(&format!("{field}.version"), &v.version)?,
        node: node_id(&format!("{field}.node"), &v.node)?,
        stamp_wall_ms: v.stamp_wall_ms,
        stamp_logical: v.stamp_logical,
        deleted: v.deleted,
        replaces: match v.replaces.as_str() {
            "" => None,
            text => Some(token(&format!("{field}.replaces"), text)?),
        },
    })
}

impl TryFrom<proto::Conflict> for model::ConflictInfo {
    type Error = InvalidAnswer;
    fn try_from(c: proto::Conflict) -> Result<Self, Self::Error> {
        Ok(Self {
            winner: conflict_version("conflict.winner", c.winner)?,
            loser: conflict_version("conflict.loser", c.loser)?,
            key: c.key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgement_levels_round_trip_and_unknown_ones_are_refused() {
        for ack in [AckLevel::Local, AckLevel::Quorum, AckLevel::All] {
            assert_eq!(ack_from_wire(ack_to_wire(ack)), Some(ack));
        }
        assert_eq!(ack_from_wire(0), Some(AckLevel::Quorum), "unset means a quorum");
        assert_eq!(ack_from_wire(7), None);
    }

    #[test]
    fn roles_round_trip_and_unspecified_ones_are_refused() {
        for r in Role::ALL {
            assert_eq!(role_from_wire(role_to_wire(r)), Some(r));
        }
        assert_eq!(role_from_wire(0), None);
        assert_eq!(role_from_wire(9), None);
    }

    #[test]
    fn a_malformed_answer_names_its_field() {
        let w = proto::WriteResult { version: "nope".into(), acked: 1, members: 1, served_by: "n1".into() };
        let err = model::WriteReceipt::try_from(w).unwrap_err();
        assert_eq!(err.field, "write.version");
        assert!(receipt(None).unwrap_err().to_string().contains("write: missing"));
        let m = proto::MemberStatus {
            id: "n1".into(),
            addr: "http://n1".into(),
            state: "active".into(),
            liveness: String::new(),
        };
        assert_eq!(Member::try_from(m).unwrap_err().field, "member.addr");
    }

    #[test]
    fn balancer_settings_round_trip_and_a_bad_strategy_names_its_field() {
        let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), Some(1.5)).unwrap();
        let settings = model::BalancerSettings {
            strategy: Some(model::StrategySetting { spec, version: "n1:4".parse().unwrap() }),
            weights: vec![model::WeightSetting {
                node: "n2".parse().unwrap(),
                weight: 0,
                version: "n1:5".parse().unwrap(),
            }],
        };
        let wire = proto::ShowBalancerSettingsResponse::from(settings.clone());
        assert_eq!(model::BalancerSettings::try_from(wire.clone()).unwrap(), settings);
        let mut bad_factor = wire.clone();
        bad_factor.strategy.as_mut().unwrap().load_factor = 0.5;
        assert_eq!(model::BalancerSettings::try_from(bad_factor).unwrap_err().field, "strategy.load_factor");
        let mut unknown = wire;
        unknown.strategy.as_mut().unwrap().name = "fastest".into();
        assert_eq!(model::BalancerSettings::try_from(unknown).unwrap_err().field, "strategy.name");
        let none = proto::ShowBalancerSettingsResponse::default();
        assert_eq!(model::BalancerSettings::try_from(none).unwrap(), model::BalancerSettings::default());
    }

    #[test]
    fn receipts_round_trip_through_the_wire() {
        let w = model::WriteReceipt {
            version: "n1:3".parse().unwrap(),
            acked: 2,
            members: 3,
            served_by: "n1".parse().unwrap(),
        };
        assert_eq!(model::WriteReceipt::try_from(proto::WriteResult::from(w.clone())).unwrap(), w);
    }
}
