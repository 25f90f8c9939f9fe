//! Warnings about a peer's calls, held back while they repeat.
//!
//! A refused caller (another cluster, a wrong key, a skewed clock) usually
//! calls again every sync interval or heartbeat, so a warning per refusal
//! would flood the log with the same line several times a second. A
//! [`LogLimiter`] lets one line per caller and kind through every
//! [`REPEAT_EVERY`], and says how many it held back in between.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The shortest time between two warnings of one kind about one caller.
pub(crate) const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// Callers remembered at most; past that the oldest memories are dropped (a
/// forgotten caller's next warning is simply logged).
const REMEMBERED: usize = 1024;

/// When each caller's last warning was let through, and how many were held back since.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl LogLimiter {
    /// Whether a warning about `key` (a caller and a kind) is logged at `now`:
    /// `Some(held)` with how many were held back since the last one, `None`
    /// while it repeats within [`REPEAT_EVERY`].
    pub(crate) fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock();
        if let Some((at, held)) = seen.get_mut(key) {
            if now.saturating_duration_since(*at) < REPEAT_EVERY {
                *held += 1;
                return None;
            }
            let was = *held;
            *at = now;
            *held = 0;
            return Some(was);
        }
        if seen.len() >= REMEMBERED {
            let cutoff = now.checked_sub(REPEAT_EVERY);
            seen.retain(|_, (at, _)| cutoff.is_some_and(|c| *at > c));
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
        }
        seen.insert(key.to_owned(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_caller_per_interval_counting_those_held_back() {
        let limiter = LogLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.admit("a", t0), Some(0));
        assert_eq!(limiter.admit("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit("a", t0 + Duration::from_secs(29)), None);
        assert_eq!(limiter.admit("b", t0 + Duration::from_secs(2)), Some(0), "another caller");
        assert_eq!(limiter.admit("a", t0 + REPEAT_EVERY), Some(2));
        assert_eq!(limiter.admit("a", t0 + REPEAT_EVERY + Duration::from_secs(1)), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let limiter = LogLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 * REMEMBERED {
            assert_eq!(limiter.admit(&i.to_string(), t0), Some(0));
        }
        assert!(limiter.seen.lock().len() <= REMEMBERED);
    }
}
