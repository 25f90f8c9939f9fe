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

/// A peer's clock offset from this node, measured over one exchange.
///
/// NTP-style: this node sends at `t0` (its clock), the peer receives at `t1` and
/// answers at `t2` (the peer's clock), and the answer arrives at `t3` (this
/// node's clock). Assuming the two legs take equally long, the peer's clock reads
/// `offset_ms` more than ours, give or take `uncertainty_ms` (half the round
/// trip spent on the network): the true offset lies in
/// `offset_ms ± uncertainty_ms` whatever the legs' split.
///
/// ```
/// use spectrum_core::ClockOffset;
///
/// // Sent at 1_000; the peer, 600_000 ms ahead, got it 10 ms later and answered
/// // 2 ms after that; the answer took 10 ms back.
/// let o = ClockOffset::round_trip(1_000, 601_010, 601_012, 1_022);
/// assert_eq!((o.offset_ms, o.uncertainty_ms), (600_000, 10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClockOffset {
    /// The peer's clock minus ours, in milliseconds (positive: the peer is ahead).
    pub offset_ms: i64,
    /// How far the true offset may be from `offset_ms`, in milliseconds (0 for a
    /// one-way estimate, whose error, the network delay, is unknown).
    pub uncertainty_ms: u64,
    /// Whether this came from a full round trip (`false`: one way only, from a
    /// request's send time; its error is the unknown network delay).
    pub round_trip: bool,
}

impl ClockOffset {
    /// The offset from one exchange: `t0` request sent (ours), `t1` request
    /// received (theirs), `t2` answer sent (theirs), `t3` answer received (ours).
    pub fn round_trip(t0: u64, t1: u64, t2: u64, t3: u64) -> Self {
        let (t0, t1, t2, t3) = (i128::from(t0), i128::from(t1), i128::from(t2), i128::from(t3));
        let offset = ((t1 - t0) + (t2 - t3)) / 2;
        // A peer that answers "before" it received, or a clock stepped mid-exchange,
        // can make this negative: the round trip is then at least zero.
        let network = u128::try_from((t3 - t0) - (t2 - t1)).unwrap_or(0);
        Self {
            offset_ms: clamp_i64(offset),
            uncertainty_ms: u64::try_from(network.div_ceil(2)).unwrap_or(u64::MAX),
            round_trip: true,
        }
    }

    /// A one-way estimate from a message the peer sent at `sent` (theirs) and
    /// this node received at `received` (ours); it reads low by the network delay.
    pub fn one_way(sent: u64, received: u64) -> Self {
        Self {
            offset_ms: clamp_i64(i128::from(sent) - i128::from(received)),
            uncertainty_ms: 0,
            round_trip: false,
        }
    }

    /// Whether the peer is certainly more than `max` away from this node, in
    /// either direction.
    pub fn beyond(&self, max: Duration) -> bool {
        self.offset_ms.unsigned_abs().saturating_sub(self.uncertainty_ms) > duration_ms(max)
    }

    /// Whether the peer is certainly more than `max` ahead of this node.
    pub fn ahead_beyond(&self, max: Duration) -> bool {
        self.offset_ms > 0 && self.beyond(max)
    }
}

impl fmt::Display for ClockOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.round_trip {
            write!(f, "{:+} ms ± {} ms", self.offset_ms, self.uncertainty_ms)
        } else {
            write!(f, "{:+} ms (one way)", self.offset_ms)
        }
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    /// The skew check compares the stamp with this node's physical clock, so it
    /// cannot tell whose clock is wrong; the replication handshake judges offsets
    /// of physical clocks against the majority of peers instead, and then calls
    /// [`observe_unchecked`](Self::observe_unchecked).
    ///
    /// # Errors
    ///
    /// [`ClockSkew`] when `remote` is more than the maximum offset ahead of physical
    /// time; the clock is then left unchanged.
    pub fn observe(&self, remote: Timestamp) -> Result<Timestamp, ClockSkew> {
        let pt = self.clock.now_ms();
        self.check(remote, pt)?;
        Ok(self.advance(remote, pt))
    }

    fn advance(&self, remote: Timestamp, pt: u64) -> Timestamp {
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
        next
    }

    /// Advances the clock past a peer's stamp without the skew check.
    ///
    /// For a sender already judged trustworthy by another measure: a node whose
    /// own clock is the outlier (behind the majority of its peers) must still
    /// take their stamps, or it would refuse their data and diverge. Its stamps
    /// then follow the cluster's, not its own wrong clock.
    pub fn observe_unchecked(&self, remote: Timestamp) -> Timestamp {
        let pt = self.clock.now_ms();
        self.advance(remote, pt)
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

    #[test]
    fn a_round_trip_measures_the_offset_and_bounds_it_by_half_the_network_time() {
        // Peer 10 minutes behind, 4 ms each way, 2 ms to answer.
        let o = ClockOffset::round_trip(1_000_000, 400_004, 400_006, 1_000_010);
        assert_eq!(o.offset_ms, -600_000);
        assert_eq!(o.uncertainty_ms, 4);
        assert!(o.beyond(Duration::from_millis(500)) && !o.ahead_beyond(Duration::from_millis(500)));
        // Close clocks on a slow network are not "certainly" skewed.
        let slow = ClockOffset::round_trip(1_000, 2_500, 2_500, 4_000);
        assert_eq!((slow.offset_ms, slow.uncertainty_ms), (0, 1_500));
        assert!(!slow.beyond(Duration::from_millis(500)));
        // An answer stamped before its request arrived counts no negative network time.
        assert_eq!(ClockOffset::round_trip(1_000, 1_010, 1_020, 1_005).uncertainty_ms, 0);
        assert_eq!(ClockOffset::one_way(900, 1_000).to_string(), "-100 ms (one way)");
        assert_eq!(ClockOffset::round_trip(0, u64::MAX, u64::MAX, 0).offset_ms, i64::MAX);
    }

    #[test]
    fn an_unchecked_observation_moves_past_a_stamp_far_ahead() {
        let (_, hlc) = manual(10_000);
        let far = Timestamp::new(10_000 + 600_000, 3);
        assert!(hlc.observe(far).is_err());
        assert!(hlc.observe_unchecked(far) > far);
        assert!(hlc.now() > far);
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
