//! Active health checks with `grpc.health.v1`, and the health state they maintain
//! together with passive ejection.

use std::net::SocketAddr;
use std::sync::Weak;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use spectrum_core::{NodeId, TransportConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tracing::{debug, info, warn};

use crate::pool::Pool;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Health of one backend: never checked, up, or down; with the run of consecutive
/// check results that rise and fall thresholds count.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    status: AtomicU8,
    successes: AtomicU32,
    failures: AtomicU32,
}

impl HealthState {
    pub(crate) fn is_up(&self) -> bool {
        self.status.load(Ordering::Acquire) == UP
    }

    /// Records a check result; returns whether the backend changed between
    /// eligible and not.
    pub(crate) fn record(&self, ok: bool, rise: u32, fall: u32) -> bool {
        let status = self.status.load(Ordering::Acquire);
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            let run = self.successes.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            let admit = match status {
                UNKNOWN => true,
                DOWN => run >= rise,
                _ => false,
            };
            admit && self.status.swap(UP, Ordering::AcqRel) != UP
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

    /// Passive ejection: down at once, and `rise` successful checks to come back.
    /// Returns whether the backend was up.
    pub(crate) fn mark_down(&self) -> bool {
        self.successes.store(0, Ordering::Relaxed);
        self.status.swap(DOWN, Ordering::AcqRel) == UP
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
    let channel = match transport.endpoint(&addr.to_string()) {
        Ok(endpoint) => endpoint.connect_lazy(),
        Err(error) => {
            warn!(node = %id, backend = %addr, %error, "cannot health-check backend");
            return;
        }
    };
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
        if state.record(ok, settings.rise, settings.fall) {
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

    #[test]
    fn a_new_backend_is_admitted_after_its_first_good_check() {
        let h = HealthState::default();
        assert!(!h.is_up());
        assert!(h.record(true, 2, 2));
        assert!(h.is_up());
    }

    #[test]
    fn fall_failures_mark_down_and_rise_successes_bring_back() {
        let h = HealthState::default();
        h.record(true, 2, 2);
        assert!(!h.record(false, 2, 2));
        assert!(h.is_up());
        assert!(h.record(false, 2, 2));
        assert!(!h.is_up());
        assert!(!h.record(true, 2, 2));
        assert!(!h.record(false, 2, 2));
        assert!(!h.record(true, 2, 2));
        assert!(h.record(true, 2, 2));
        assert!(h.is_up());
    }

    #[test]
    fn passive_ejection_needs_rise_checks_to_come_back() {
        let h = HealthState::default();
        h.record(true, 3, 2);
        assert!(h.mark_down());
        assert!(!h.mark_down());
        assert!(!h.record(true, 3, 2));
        assert!(!h.record(true, 3, 2));
        assert!(h.record(true, 3, 2));
    }
}
