//! The retry budget: a token bucket filled by requests and by time, emptied by retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::config::RetryBudgetConfig;

/// One retry, in the bucket's unit (thousandths of a retry).
const ONE_RETRY: u64 = 1_000;
/// The bucket never holds more than this many seconds of the floor rate, nor
/// fewer than [`MIN_CAPACITY`] retries, so a long quiet period does not save up an
/// unbounded burst of retries.
const CAPACITY_SECONDS: u64 = 10;
const MIN_CAPACITY: u64 = 100;

/// Lock-free token bucket: each request deposits `ratio` of a retry, each second
/// deposits `min_per_second` retries, each retry withdraws one.
///
/// Hand-written rather than tower's `TpsBudget` because every request deposits:
/// `TpsBudget::deposit` takes a `Mutex` (in `expire`) on each call, this is one
/// atomic update.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    per_request: u64,
    per_second: u64,
    capacity: u64,
    balance: AtomicU64,
    epoch: Instant,
    last_refill_ms: AtomicU64,
}

impl RetryBudget {
    pub(crate) fn new(config: RetryBudgetConfig) -> Self {
        let per_second = u64::from(config.min_per_second) * ONE_RETRY;
        let capacity = (per_second * CAPACITY_SECONDS).max(MIN_CAPACITY * ONE_RETRY);
        Self {
            per_request: (config.ratio.clamp(0.0, 1.0) * ONE_RETRY as f64) as u64,
            per_second,
            capacity,
            // Start with one second's worth, so failures right after start can be retried.
            balance: AtomicU64::new(per_second),
            epoch: Instant::now(),
            last_refill_ms: AtomicU64::new(0),
        }
    }

    fn deposit_amount(&self, amount: u64) {
        if amount == 0 {
            return;
        }
        let _ = self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            (b < self.capacity).then(|| (b + amount).min(self.capacity))
        });
    }

    /// A request arrived: earns its share of a retry.
    pub(crate) fn deposit(&self) {
        self.deposit_amount(self.per_request);
    }

    fn refill(&self) {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_refill_ms.load(Ordering::Relaxed);
        if now_ms > last
            && self
                .last_refill_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.deposit_amount((now_ms - last).saturating_mul(self.per_second) / 1_000);
        }
    }

    /// Takes one retry from the budget; false when none is left.
    pub(crate) fn try_withdraw(&self) -> bool {
        self.refill();
        self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(ONE_RETRY)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_earn_a_fifth_of_a_retry_each() {
        let budget = RetryBudget::new(RetryBudgetConfig { ratio: 0.2, min_per_second: 0 });
        assert!(!budget.try_withdraw(), "nothing earned yet");
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw(), "ten requests earn two retries");
    }

    #[test]
    fn the_floor_allows_retries_without_traffic() {
        let budget = RetryBudget::new(RetryBudgetConfig { ratio: 0.0, min_per_second: 3 });
        assert!((0..3).all(|_| budget.try_withdraw()));
        assert!(!budget.try_withdraw());
    }

    #[test]
    fn the_bucket_is_bounded() {
        let budget = RetryBudget::new(RetryBudgetConfig { ratio: 1.0, min_per_second: 0 });
        for _ in 0..1_000 {
            budget.deposit();
        }
        let retries = (0..1_000).take_while(|_| budget.try_withdraw()).count();
        assert_eq!(retries as u64, MIN_CAPACITY);
    }
}
