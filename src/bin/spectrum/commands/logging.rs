//! What the command logs, and how often: openraft repeats one warning or
//! error each time it retries (every 500 ms per unreachable voter, about eight
//! lines a second on a leader with one voter down), so its events are let
//! through at most once per [`REPEAT_EVERY`] from each place in its code.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::Metadata;
use tracing::callsite::Identifier;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::prelude::*;

/// What is logged unless `RUST_LOG` says otherwise: `info`, but only warnings
/// and errors of openraft, whose `info` narrates every vote and replication
/// step (several lines a second while a removed node keeps campaigning).
pub(super) const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

/// The shortest time between two events of openraft from one callsite.
const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// Logs to standard error, at [`DEFAULT_LOG_FILTER`] unless `RUST_LOG` says
/// otherwise, openraft's repeats held back (see the [module docs](self)), in
/// colour only on a terminal (a file or a log collector gets plain text).
pub(super) fn init() {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let repeats = RepeatFilter::new(REPEAT_EVERY);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Dynamic: asked for every event (a plain `filter_fn` is asked once per callsite).
        .with_filter(dynamic_filter_fn(move |meta, _| repeats.admits(meta, Instant::now())));
    tracing_subscriber::registry().with(env).with(fmt).init();
}

/// Lets through one event of openraft per callsite per interval; every other
/// event always.
struct RepeatFilter {
    every: Duration,
    last: Mutex<HashMap<Identifier, Instant>>,
}

impl RepeatFilter {
    fn new(every: Duration) -> Self {
        Self { every, last: Mutex::new(HashMap::new()) }
    }

    /// Whether the event (or span) described by `meta` is logged at `now`.
    fn admits(&self, meta: &Metadata<'_>, now: Instant) -> bool {
        if !meta.is_event() || !meta.target().starts_with("openraft") {
            return true;
        }
        let mut last = self.last.lock();
        match last.get(&meta.callsite()) {
            Some(at) if now.saturating_duration_since(*at) < self.every => false,
            _ => {
                last.insert(meta.callsite(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing::callsite::DefaultCallsite;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    use super::*;

    /// A WARN event's callsite and metadata from `target`, as statics.
    macro_rules! event_at {
        ($callsite:ident, $meta:ident, $target:literal) => {
            static $callsite: DefaultCallsite = DefaultCallsite::new(&$meta);
            static $meta: Metadata<'static> = Metadata::new(
                "event",
                $target,
                Level::WARN,
                None,
                None,
                None,
                FieldSet::new(&[], tracing::callsite::Identifier(&$callsite)),
                Kind::EVENT,
            );
        };
    }
    event_at!(OPENRAFT_CALLSITE, OPENRAFT_META, "openraft::replication");
    event_at!(OURS_CALLSITE, OURS_META, "spectrum::node");

    #[test]
    fn an_openraft_event_repeats_once_per_interval_and_ours_always() {
        let filter = RepeatFilter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(filter.admits(&OPENRAFT_META, t0));
        assert!(!filter.admits(&OPENRAFT_META, t0 + Duration::from_secs(1)));
        assert!(!filter.admits(&OPENRAFT_META, t0 + Duration::from_secs(29)));
        assert!(filter.admits(&OPENRAFT_META, t0 + Duration::from_secs(30)));
        for s in 0..3 {
            assert!(filter.admits(&OURS_META, t0 + Duration::from_secs(s)));
        }
    }
}
