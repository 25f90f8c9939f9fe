//! The health of one backend: the state that active checks and passive ejection
//! maintain together ([`HealthState`]), and one active check with `grpc.health.v1`
//! ([`check_once`]).
//!
//! Like pingora's health check, this module knows one backend and nothing of the
//! set: the pool owns the per-backend check loop, records each result here, and
//! rebuilds its snapshot when a backend's eligibility changes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use spectrum_core::tls::TlsConfig;
use spectrum_core::{PeerAddr, TransportConfig};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Milliseconds on the crate's monotonic clock: the clock of ejection backoffs.
pub(crate) fn now_ms() -> u64 {
    crate::backend::monotonic_us() / 1_000
}

/// How long passive ejections last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

/// How many check results in a row change a backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thresholds {
    /// Passing checks in a row that bring a down backend back up.
    pub(crate) rise: u32,
    /// Failing checks in a row that take an up backend down.
    pub(crate) fall: u32,
}

/// The result of one active check, as [`HealthState::record`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The backend answered `SERVING` in time.
    Passed,
    /// It answered something else, an error, or nothing in time.
    Failed,
}

/// Health of one backend: never checked, up, or down; with the run of consecutive
/// check results that rise and fall thresholds count, and the passive ejection state.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    status: AtomicU8,
    successes: AtomicU32,
    failures: AtomicU32,
    /// Consecutive failed exchanges seen by the proxy.
    exchange_failures: AtomicU32,
    /// Ejections in a row (reset once a backend stays in long enough).
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
    admitted_at_ms: AtomicU64,
}

impl HealthState {
    pub(crate) fn is_up(&self) -> bool {
        self.status.load(Ordering::Acquire) == UP
    }

    /// Whether the backend is passively ejected and its backoff has not expired.
    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Acquire) > now_ms
    }

    /// Records a check result; returns whether the backend changed between
    /// eligible and not. A never-checked backend is decided by its first result;
    /// after that it takes `thresholds.rise` passes (or `thresholds.fall` failures)
    /// in a row to change. A backend in its ejection backoff is not admitted.
    pub(crate) fn record(&self, check: Check, thresholds: Thresholds, now_ms: u64) -> bool {
        let Thresholds { rise, fall } = thresholds;
        let status = self.status.load(Ordering::Acquire);
        if check == Check::Passed {
            self.failures.store(0, Ordering::Relaxed);
            let run = self.successes.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            let admit = match status {
                UNKNOWN => true,
                DOWN => run >= rise,
                _ => false,
            } && !self.is_ejected(now_ms);
            let changed = admit && self.status.swap(UP, Ordering::AcqRel) != UP;
            if changed {
                self.exchange_failures.store(0, Ordering::Relaxed);
                self.admitted_at_ms.store(now_ms, Ordering::Relaxed);
            }
            changed
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let run = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            let eject = match status {
                UNKNOWN => true,
                UP => run >= fall,
                _ => false,
            };
            eject && self.status.swap(DOWN, Ordering::AcqRel) == UP
        }
    }

    /// Passive ejection: down at once, out for the backoff, and then `rise` passing
    /// checks to come back. The backoff doubles with each ejection in a row; a
    /// backend that stayed in for the longest backoff starts again from the base.
    /// Returns whether the backend was up.
    pub(crate) fn eject(&self, backoff: Backoff, now_ms: u64) -> bool {
        self.successes.store(0, Ordering::Relaxed);
        self.exchange_failures.store(0, Ordering::Relaxed);
        let max_ms = u64::try_from(backoff.max.as_millis()).unwrap_or(u64::MAX);
        let base_ms = u64::try_from(backoff.base.as_millis()).unwrap_or(u64::MAX);
        let was_up = self.status.swap(DOWN, Ordering::AcqRel) == UP;
        if self.is_ejected(now_ms) {
            return was_up;
        }
        if now_ms.saturating_sub(self.admitted_at_ms.load(Ordering::Relaxed)) > max_ms.saturating_mul(2) {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let ms = base_ms.saturating_mul(1 << n).min(max_ms);
        self.ejected_until_ms.store(now_ms.saturating_add(ms), Ordering::Release);
        was_up
    }

    /// Counts one failed exchange; true when `threshold` failures in a row were reached.
    pub(crate) fn exchange_failed(&self, threshold: u32) -> bool {
        self.exchange_failures.fetch_add(1, Ordering::Relaxed).saturating_add(1) >= threshold
    }

    /// A successful exchange ends the run of failures.
    pub(crate) fn exchange_succeeded(&self) {
        if self.exchange_failures.load(Ordering::Relaxed) != 0 {
            self.exchange_failures.store(0, Ordering::Relaxed);
        }
    }
}

/// A `grpc.health.v1` client for the backend at `addr`, connecting lazily (on its
/// first check) and giving up on a call after `timeout`; over TLS with `tls`.
pub(crate) fn client(
    addr: SocketAddr,
    connect_timeout: Duration,
    timeout: Duration,
    tls: Option<TlsConfig>,
) -> HealthClient<Channel> {
    let transport = TransportConfig {
        connect_timeout,
        request_timeout: Some(timeout),
        tls,
        ..TransportConfig::default()
    };
    HealthClient::new(transport.endpoint(&PeerAddr::from(addr)).connect_lazy())
}

/// Asks the backend behind `client` once whether it is serving (the whole server:
/// an empty service name), waiting at most `timeout`.
///
/// # Errors
///
/// What went wrong, for the log: a status other than `SERVING`, a gRPC error, or no
/// answer in time.
pub(crate) async fn check_once(client: &mut HealthClient<Channel>, timeout: Duration) -> Result<(), String> {
    let request = HealthCheckRequest { service: String::new() };
    match tokio::time::timeout(timeout, client.check(request)).await {
        Ok(Ok(resp)) => {
            let status = resp.into_inner().status;
            if status == ServingStatus::Serving as i32 {
                Ok(())
            } else {
                Err(format!("serving status {status}"))
            }
        }
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_millis(1_000) };
    const TWO_EACH: Thresholds = Thresholds { rise: 2, fall: 2 };
    const ONE_EACH: Thresholds = Thresholds { rise: 1, fall: 1 };
    use Check::{Failed, Passed};

    #[test]
    fn a_new_backend_is_admitted_after_its_first_good_check() {
        let h = HealthState::default();
        assert!(!h.is_up());
        assert!(h.record(Passed, TWO_EACH, 0));
        assert!(h.is_up());
    }

    #[test]
    fn fall_failures_mark_down_and_rise_successes_bring_back() {
        let h = HealthState::default();
        h.record(Passed, TWO_EACH, 0);
        assert!(!h.record(Failed, TWO_EACH, 0));
        assert!(h.is_up());
        assert!(h.record(Failed, TWO_EACH, 0));
        assert!(!h.is_up());
        assert!(!h.record(Passed, TWO_EACH, 0));
        assert!(!h.record(Failed, TWO_EACH, 0));
        assert!(!h.record(Passed, TWO_EACH, 0));
        assert!(h.record(Passed, TWO_EACH, 0));
        assert!(h.is_up());
    }

    #[test]
    fn an_ejected_backend_needs_its_backoff_and_rise_checks_to_come_back() {
        let h = HealthState::default();
        h.record(Passed, TWO_EACH, 0);
        assert!(h.eject(BACKOFF, 1_000));
        assert!(!h.eject(BACKOFF, 1_000));
        assert!(!h.record(Passed, TWO_EACH, 1_010));
        assert!(!h.record(Passed, TWO_EACH, 1_050), "still in its 100 ms backoff");
        assert!(h.record(Passed, TWO_EACH, 1_100));
        assert!(h.is_up());
    }

    #[test]
    fn ejections_in_a_row_double_the_backoff_up_to_the_maximum() {
        let h = HealthState::default();
        let mut now = 10_000;
        let mut outs = Vec::new();
        for _ in 0..6 {
            h.record(Passed, ONE_EACH, now);
            h.eject(BACKOFF, now);
            let mut out = 0;
            while h.is_ejected(now + out) {
                out += 50;
            }
            outs.push(out);
            now += out + 10;
        }
        assert_eq!(outs, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn failed_exchanges_count_in_a_row() {
        let h = HealthState::default();
        assert!(!h.exchange_failed(3));
        assert!(!h.exchange_failed(3));
        h.exchange_succeeded();
        assert!(!h.exchange_failed(3));
        assert!(!h.exchange_failed(3));
        assert!(h.exchange_failed(3));
    }

    #[test]
    fn a_new_backend_is_marked_down_by_its_first_failed_check() {
        let h = HealthState::default();
        assert!(!h.record(Failed, TWO_EACH, 0), "never up, so no change of eligibility");
        assert!(!h.is_up());
        assert!(!h.record(Passed, TWO_EACH, 0), "down now: one pass is not enough");
        assert!(h.record(Passed, TWO_EACH, 0));
    }

    #[test]
    fn rise_and_fall_are_counted_separately() {
        let h = HealthState::default();
        let thresholds = Thresholds { rise: 3, fall: 1 };
        h.record(Passed, thresholds, 0);
        assert!(h.record(Failed, thresholds, 0), "one failure takes it down");
        assert!(!h.record(Passed, thresholds, 0));
        assert!(!h.record(Passed, thresholds, 0));
        assert!(h.record(Passed, thresholds, 0), "the third pass in a row brings it back");
    }

    #[test]
    fn a_failure_breaks_a_run_of_passes() {
        let h = HealthState::default();
        let thresholds = Thresholds { rise: 2, fall: 3 };
        h.record(Failed, thresholds, 0);
        assert!(!h.record(Passed, thresholds, 0));
        assert!(!h.record(Failed, thresholds, 0));
        assert!(!h.record(Passed, thresholds, 0), "the run starts again");
        assert!(h.record(Passed, thresholds, 0));
    }
}
