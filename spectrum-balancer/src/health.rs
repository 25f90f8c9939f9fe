//! Active health checks with `grpc.health.v1`, and the health state they maintain
//! together with passive ejection.

use std::net::SocketAddr;
use std::sync::Weak;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use spectrum_core::{NodeId, PeerAddr, TransportConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tracing::{debug, info, warn};

use crate::pool::Pool;

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
    /// eligible and not. A backend in its ejection backoff is not admitted.
    pub(crate) fn record(&self, ok: bool, rise: u32, fall: u32, now_ms: u64) -> bool {
        let status = self.status.load(Ordering::Acquire);
        if ok {
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

/// What a health task needs to know.
#[derive(Debug, Clone)]
pub(crate) struct CheckSettings {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
}

/// Checks one backend every `interval` until aborted or the pool is gone.
pub(crate) async fn run_checks(id: NodeId, addr: SocketAddr, settings: CheckSettings, pool: Weak<Pool>) {
    let transport = TransportConfig {
        connect_timeout: settings.connect_timeout,
        request_timeout: Some(settings.timeout),
        ..TransportConfig::default()
    };
    let channel = transport.endpoint(&PeerAddr::from(addr)).connect_lazy();
    let mut client = HealthClient::new(channel);
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let request = HealthCheckRequest { service: String::new() };
        let result = tokio::time::timeout(settings.timeout, client.check(request)).await;
        let (ok, detail) = match result {
            Ok(Ok(resp)) => {
                let status = resp.into_inner().status;
                (status == ServingStatus::Serving as i32, format!("serving status {status}"))
            }
            Ok(Err(status)) => (false, format!("{:?}: {}", status.code(), status.message())),
            Err(_) => (false, format!("no answer within {:?}", settings.timeout)),
        };
        let Some(pool) = pool.upgrade() else { return };
        let Some(state) = pool.health_of(&id, addr) else { return };
        if state.record(ok, settings.rise, settings.fall, now_ms()) {
            if ok {
                info!(node = %id, backend = %addr, "backend healthy");
            } else {
                warn!(node = %id, backend = %addr, detail = %detail, "backend unhealthy");
            }
            pool.rebuild();
        } else if !ok {
            debug!(node = %id, backend = %addr, detail = %detail, "health check failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_millis(1_000) };

    #[test]
    fn a_new_backend_is_admitted_after_its_first_good_check() {
        let h = HealthState::default();
        assert!(!h.is_up());
        assert!(h.record(true, 2, 2, 0));
        assert!(h.is_up());
    }

    #[test]
    fn fall_failures_mark_down_and_rise_successes_bring_back() {
        let h = HealthState::default();
        h.record(true, 2, 2, 0);
        assert!(!h.record(false, 2, 2, 0));
        assert!(h.is_up());
        assert!(h.record(false, 2, 2, 0));
        assert!(!h.is_up());
        assert!(!h.record(true, 2, 2, 0));
        assert!(!h.record(false, 2, 2, 0));
        assert!(!h.record(true, 2, 2, 0));
        assert!(h.record(true, 2, 2, 0));
        assert!(h.is_up());
    }

    #[test]
    fn an_ejected_backend_needs_its_backoff_and_rise_checks_to_come_back() {
        let h = HealthState::default();
        h.record(true, 2, 2, 0);
        assert!(h.eject(BACKOFF, 1_000));
        assert!(!h.eject(BACKOFF, 1_000));
        assert!(!h.record(true, 2, 2, 1_010));
        assert!(!h.record(true, 2, 2, 1_050), "still in its 100 ms backoff");
        assert!(h.record(true, 2, 2, 1_100));
        assert!(h.is_up());
    }

    #[test]
    fn ejections_in_a_row_double_the_backoff_up_to_the_maximum() {
        let h = HealthState::default();
        let mut now = 10_000;
        let mut outs = Vec::new();
        for _ in 0..6 {
            h.record(true, 1, 1, now);
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
}
