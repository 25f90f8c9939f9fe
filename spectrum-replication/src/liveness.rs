//! [`FailureDetector`]: how sure this node is that a peer is alive, from when it
//! last heard from it.
//!
//! This is the phi accrual failure detector of Hayashibara et al., "The φ Accrual
//! Failure Detector" (SRDS 2004), with the exponential approximation of the
//! inter-arrival distribution that Cassandra uses: with `m` the mean time between
//! contacts over a sliding window and `t` the time since the last one,
//! `φ = t / (m · ln 10)`, so φ = 1 means a 10 % chance that the peer is still
//! alive and merely slow, φ = 2 a 1 % chance, and so on. A peer is
//! [`Suspect`](Liveness::Suspect) from [`SUSPECT_PHI`] (3: one chance in a
//! thousand that it is fine) and [`Down`](Liveness::Down) from [`DOWN_PHI`]
//! (Cassandra's default conviction threshold). Anti-entropy picks a random
//! peer each round, so the gaps between two nodes' contacts vary widely: at
//! φ = 1 a healthy, idle three-node cluster showed about one member in eight
//! suspect at any moment. Contacts are every successful exchange in either direction (pushes,
//! syncs), so the detector needs no heartbeat traffic of its own.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use spectrum_core::Liveness;
//! use spectrum_replication::liveness::FailureDetector;
//!
//! let start = Instant::now();
//! let mut d = FailureDetector::default();
//! for i in 0..10 {
//!     d.heard(start + Duration::from_secs(i));
//! }
//! let last = start + Duration::from_secs(9);
//! assert_eq!(d.liveness(last + Duration::from_millis(500)), Liveness::Alive);
//! assert_eq!(d.liveness(last + Duration::from_secs(60)), Liveness::Down);
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use spectrum_core::Liveness;

/// φ from which a peer is suspected.
pub const SUSPECT_PHI: f64 = 3.0;
/// φ from which a peer is considered down.
pub const DOWN_PHI: f64 = 8.0;
/// Contacts kept to estimate the mean interval.
pub const WINDOW: usize = 100;
/// The mean interval assumed before two contacts were seen.
pub const FIRST_INTERVAL: Duration = Duration::from_secs(1);
/// The smallest mean interval used (bursts of pushes must not make a peer look
/// dead a few milliseconds after the burst).
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// The contact history of one peer.
#[derive(Debug, Clone, Default)]
pub struct FailureDetector {
    last: Option<Instant>,
    intervals: VecDeque<Duration>,
    total: Duration,
}

impl FailureDetector {
    /// Records a contact at `now`.
    pub fn heard(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            if self.intervals.len() == WINDOW
                && let Some(oldest) = self.intervals.pop_front()
            {
                self.total = self.total.saturating_sub(oldest);
            }
            self.intervals.push_back(gap);
            self.total += gap;
        }
        self.last = Some(now.max(self.last.unwrap_or(now)));
    }

    /// The mean interval between contacts, at least [`MIN_INTERVAL`].
    pub fn mean_interval(&self) -> Duration {
        let mean = match u32::try_from(self.intervals.len()) {
            Ok(0) | Err(_) => FIRST_INTERVAL,
            Ok(n) => self.total / n,
        };
        mean.max(MIN_INTERVAL)
    }

    /// φ at `now`, or `None` before any contact.
    pub fn phi(&self, now: Instant) -> Option<f64> {
        let since = now.saturating_duration_since(self.last?);
        Some(since.as_secs_f64() / (self.mean_interval().as_secs_f64() * std::f64::consts::LN_10))
    }

    /// What φ at `now` says of the peer.
    pub fn liveness(&self, now: Instant) -> Liveness {
        match self.phi(now) {
            None => Liveness::Unknown,
            Some(phi) if phi >= DOWN_PHI => Liveness::Down,
            Some(phi) if phi >= SUSPECT_PHI => Liveness::Suspect,
            Some(_) => Liveness::Alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn regular(every: Duration, n: u32) -> (FailureDetector, Instant) {
        let start = Instant::now();
        let mut d = FailureDetector::default();
        for i in 0..n {
            d.heard(start + every * i);
        }
        (d, start + every * (n - 1))
    }

    #[test]
    fn a_peer_heard_regularly_is_alive_then_suspect_then_down_as_silence_grows() {
        let (d, last) = regular(Duration::from_secs(1), 20);
        assert_eq!(d.mean_interval(), Duration::from_secs(1));
        assert_eq!(d.liveness(last + Duration::from_secs(1)), Liveness::Alive);
        assert_eq!(d.liveness(last + Duration::from_secs(4)), Liveness::Alive, "four missed rounds happen");
        assert_eq!(d.liveness(last + Duration::from_secs(7)), Liveness::Suspect);
        assert_eq!(d.liveness(last + Duration::from_secs(19)), Liveness::Down);
    }

    #[test]
    fn nothing_heard_is_unknown_and_one_contact_assumes_a_one_second_interval() {
        assert_eq!(FailureDetector::default().liveness(Instant::now()), Liveness::Unknown);
        let (d, last) = regular(Duration::from_secs(1), 1);
        assert_eq!(d.mean_interval(), FIRST_INTERVAL);
        assert_eq!(d.liveness(last), Liveness::Alive);
    }

    #[test]
    fn a_burst_of_contacts_does_not_make_a_peer_look_dead_at_once() {
        let (d, last) = regular(Duration::from_millis(1), 50);
        assert_eq!(d.mean_interval(), MIN_INTERVAL);
        assert_eq!(d.liveness(last + Duration::from_millis(300)), Liveness::Alive);
    }

    #[test]
    fn the_window_forgets_old_intervals() {
        let start = Instant::now();
        let mut d = FailureDetector::default();
        let mut t = start;
        for _ in 0..WINDOW {
            t += Duration::from_secs(10);
            d.heard(t);
        }
        for _ in 0..=WINDOW {
            t += Duration::from_secs(1);
            d.heard(t);
        }
        assert_eq!(d.mean_interval(), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn phi_only_grows_with_silence(gaps in proptest::collection::vec(1u64..5_000, 1..50), a in 0u64..100_000, b in 0u64..100_000) {
            let start = Instant::now();
            let mut d = FailureDetector::default();
            let mut t = start;
            for g in gaps {
                t += Duration::from_millis(g);
                d.heard(t);
            }
            let (lo, hi) = (a.min(b), a.max(b));
            let phi = |ms| d.phi(t + Duration::from_millis(ms)).unwrap();
            prop_assert!(phi(lo) <= phi(hi));
        }
    }
}
