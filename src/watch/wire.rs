//! The wire form of watch events (`spectrum.management.v1.WatchEvent`), both ways.

use spectrum_core::Timestamp;

use super::{EventKind, WatchEvent};
use crate::pb::{InvalidAnswer, proto};

/// `event` as the management service sends it, answered by `served_by`.
pub fn event_to_wire(event: WatchEvent, served_by: &str) -> proto::WatchEvent {
    let kind = match event.kind {
        EventKind::Put => proto::WatchEventKind::Put,
        EventKind::Delete => proto::WatchEventKind::Delete,
        EventKind::Progress => proto::WatchEventKind::Progress,
    };
    proto::WatchEvent {
        kind: kind as i32,
        key: event.key,
        value: event.value,
        version: event.version.map(|v| v.to_string()).unwrap_or_default(),
        position: event.position.to_string(),
        stamp_wall_ms: event.stamp.wall_ms,
        stamp_logical: event.stamp.logical,
        served_by: served_by.to_owned(),
    }
}

fn bad(field: &str, reason: impl ToString) -> InvalidAnswer {
    InvalidAnswer { field: field.to_owned(), reason: reason.to_string() }
}

impl TryFrom<proto::WatchEvent> for WatchEvent {
    type Error = InvalidAnswer;

    fn try_from(e: proto::WatchEvent) -> Result<Self, Self::Error> {
        let kind = match proto::WatchEventKind::try_from(e.kind) {
            Ok(proto::WatchEventKind::Put) => EventKind::Put,
            Ok(proto::WatchEventKind::Delete) => EventKind::Delete,
            Ok(proto::WatchEventKind::Progress) => EventKind::Progress,
            Err(_) => return Err(bad("kind", format!("unknown event kind {}", e.kind))),
        };
        let version = match e.version.as_str() {
            "" => None,
            text => Some(text.parse().map_err(|err| bad("version", err))?),
        };
        Ok(Self {
            kind,
            key: e.key,
            value: e.value,
            version,
            stamp: Timestamp::new(e.stamp_wall_ms, e.stamp_logical),
            position: e.position.parse().map_err(|err| bad("position", err))?,
        })
    }
}
