//! A hybrid logical clock (HLC) over an injectable physical clock.
//!
//! Every record in the replicated store carries a [`Timestamp`] from its writer's
//! [`Hlc`], and every replication message carries the sender's current stamp. The HLC
//! keeps stamps close to physical time while guaranteeing that they strictly increase
//! on one node and that a node never issues a stamp below one it has observed, so
//! last-writer-wins ordering respects causality.
//!
//! The physical source is a [`Clock`]: [`SystemClock`] in production,
//! [`ManualClock`] in tests and simulations, where time is stepped by hand.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default largest clock offset tolerated between two nodes.
pub const DEFAULT_MAX_OFFSET: Duration = Duration::from_millis(500);

/// A source of physical time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// A clock that moves only when told to: for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        Self { ms: AtomicU64::new(ms) }
    }

    /// Sets the reading (it may go backwards, as a stepped system clock can).
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the reading forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// One HLC stamp: physical milliseconds plus a logical counter that orders stamps
/// issued within the same millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Physical component, milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Logical component.
    pub logical: u32,
}

impl Timestamp {
    /// The zero stamp, below every stamp a clock issues.
    pub const ZERO: Timestamp = Timestamp { wall_ms: 0, logical: 0 };

    /// A stamp from its parts.
    pub const fn new(wall_ms: u64, logical: u32) -> Self {
        Self { wall_ms, logical }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// A peer's stamp was further from our physical clock than allowed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "clock skew: remote stamp {remote} is {offset_ms} ms ahead of local time {local_ms}; at most {max_ms} ms is allowed"
)]
pub struct ClockSkew {
    /// The remote stamp.
    pub remote: Timestamp,
    /// Our physical time when it arrived.
    pub local_ms: u64,
    /// How far ahead the remote stamp was, in milliseconds.
    pub offset_ms: u64,
    /// The configured maximum, in milliseconds.
    pub max_ms: u64,
}

/// A hybrid logical clock.
///
/// Cheap to share: clone the `Arc` it lives in. All methods take `&self`.
#[derive(Debug)]
pub struct Hlc {
    clock: Arc<dyn Clock>,
    last: Mutex<Timestamp>,
    max_offset: Duration,
}

impl Hlc {
    /// An HLC over `clock`, tolerating [`DEFAULT_MAX_OFFSET`].
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_max_offset(clock, DEFAULT_MAX_OFFSET)
    }

    /// An HLC over `clock` tolerating peers up to `max_offset` ahead.
    pub fn with_max_offset(clock: Arc<dyn Clock>, max_offset: Duration) -> Self {
        Self { clock, last: Mutex::new(Timestamp::ZERO), max_offset }
    }

    /// An HLC over the system clock.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemClock))
    }

    /// The physical clock underneath.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The largest tolerated offset.
    pub fn max_offset(&self) -> Duration {
        self.max_offset
    }

    /// Physical time now, in milliseconds.
    pub fn physical_now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Raises the clock to at least `floor` without checking skew: used on restart
    /// with the persisted high-water mark, so a node never reissues a stamp.
    pub fn restore(&self, floor: Timestamp) {
        let mut last = self.last.lock();
        if floor > *last {
            *last = floor;
        }
    }

    /// The highest stamp issued or observed so far.
    pub fn last(&self) -> Timestamp {
        *self.last.lock()
    }

    /// Issues a new stamp, strictly greater than every stamp issued or observed.
    pub fn now(&self) -> Timestamp {
        let pt = self.clock.now_ms();
        let mut last = self.last.lock();
        let next = if pt > last.wall_ms { Timestamp::new(pt, 0) } else { Self::bump(*last) };
        *last = next;
        next
    }

    /// Observes a peer's stamp: checks its skew, then advances the clock past it.
    ///
    /// # Errors
    ///
    /// [`ClockSkew`] when `remote` is more than the maximum offset ahead of physical
    /// time; the clock is then left unchanged.
    pub fn observe(&self, remote: Timestamp) -> Result<Timestamp, ClockSkew> {
        let pt = self.clock.now_ms();
        self.check(remote, pt)?;
        let mut last = self.last.lock();
        let max_wall = pt.max(last.wall_ms).max(remote.wall_ms);
        let next = if max_wall == last.wall_ms && max_wall == remote.wall_ms {
            Timestamp::new(max_wall, last.logical.max(remote.logical).saturating_add(1))
        } else if max_wall == last.wall_ms {
            Self::bump(*last)
        } else if max_wall == remote.wall_ms {
            Self::bump(remote)
        } else {
            Timestamp::new(max_wall, 0)
        };
        *last = next;
        Ok(next)
    }

    /// Checks a remote stamp against physical time without changing the clock.
    ///
    /// # Errors
    ///
    /// [`ClockSkew`] when `remote` is too far ahead.
    pub fn check_skew(&self, remote: Timestamp) -> Result<(), ClockSkew> {
        self.check(remote, self.clock.now_ms())
    }

    fn check(&self, remote: Timestamp, pt: u64) -> Result<(), ClockSkew> {
        let max_ms = self.max_offset.as_millis() as u64;
        let offset_ms = remote.wall_ms.saturating_sub(pt);
        if offset_ms > max_ms {
            return Err(ClockSkew { remote, local_ms: pt, offset_ms, max_ms });
        }
        Ok(())
    }

    fn bump(ts: Timestamp) -> Timestamp {
        match ts.logical.checked_add(1) {
            Some(l) => Timestamp::new(ts.wall_ms, l),
            None => Timestamp::new(ts.wall_ms.saturating_add(1), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manual(ms: u64) -> (Arc<ManualClock>, Hlc) {
        let c = Arc::new(ManualClock::new(ms));
        (c.clone(), Hlc::new(c))
    }

    #[test]
    fn stamps_strictly_increase_even_when_the_physical_clock_steps_back() {
        let (clock, hlc) = manual(10_000);
        let a = hlc.now();
        clock.set(9_000);
        let b = hlc.now();
        assert!(b > a);
        assert_eq!(b.wall_ms, 10_000);
    }

    #[test]
    fn observing_a_peer_moves_past_its_stamp() {
        let (_, hlc) = manual(10_000);
        let remote = Timestamp::new(10_300, 7);
        let seen = hlc.observe(remote).unwrap();
        assert!(seen > remote);
        assert!(hlc.now() > remote);
    }

    #[test]
    fn a_peer_too_far_ahead_is_refused_and_changes_nothing() {
        let (_, hlc) = manual(10_000);
        let before = hlc.now();
        let err = hlc.observe(Timestamp::new(10_501, 0)).unwrap_err();
        assert_eq!(err.offset_ms, 501);
        assert!(err.to_string().contains("clock skew"));
        assert_eq!(hlc.last(), before);
    }

    #[test]
    fn the_clock_saturates_instead_of_overflowing() {
        let (_, hlc) = manual(1_000);
        hlc.restore(Timestamp::new(u64::MAX, u32::MAX));
        assert_eq!(hlc.now(), Timestamp::new(u64::MAX, 0));
    }

    #[test]
    fn restore_raises_the_floor() {
        let (_, hlc) = manual(1_000);
        hlc.restore(Timestamp::new(50_000, 3));
        assert!(hlc.now() > Timestamp::new(50_000, 3));
    }

    proptest! {
        #[test]
        fn every_issued_stamp_exceeds_everything_seen(
            steps in proptest::collection::vec((0u64..2_000, any::<bool>(), 0u64..400, 0u32..5), 1..200)
        ) {
            let (clock, hlc) = manual(1_000_000);
            let mut high = Timestamp::ZERO;
            for (pt, remote, ahead, logical) in steps {
                clock.set(1_000_000 + pt);
                let ts = if remote {
                    let r = Timestamp::new(1_000_000 + pt + ahead, logical);
                    let ts = hlc.observe(r).unwrap();
                    prop_assert!(ts > r);
                    ts
                } else {
                    hlc.now()
                };
                prop_assert!(ts > high);
                high = ts;
            }
        }
    }
}
