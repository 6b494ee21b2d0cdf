//! The retry budget of a cluster: retries at most a share of the requests plus a
//! steady allowance per second, so that retries cannot multiply load when every
//! endpoint fails (the retry storm). Linkerd and Finagle budget retries the same way.
//!
//! A token account: each request deposits `percent` of a token, time deposits
//! `min_per_sec` tokens per second, a retry takes one whole token. It starts with one
//! second's allowance, so that a fresh cluster can retry its very first failures (over
//! any window from the start, retries <= percent x requests + min_per_sec x (seconds +
//! 1)), and holds at
//! most ten seconds' worth of the steady allowance (at least 100), so credit saved in quiet times
//! cannot become a burst.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use crate::snapshot::policy::RetryBudget;

/// Credit kept at most, in retries, when the steady allowance is small.
const MIN_CAP: f64 = 100.0;

/// Credit kept at most, in seconds of the steady allowance.
const SAVED_SECONDS: f64 = 10.0;

/// Deposits are counted in thousandths of a retry.
const MILLI: f64 = 1000.0;

/// A cluster's retry budget.
#[derive(Debug)]
pub struct Budget {
    /// Thousandths of a retry each request earns.
    deposit_milli: u64,
    per_sec: f64,
    cap: f64,
    /// Deposits not yet moved into the account: every request adds to it without a
    /// lock or a clock read; a withdrawal (rare: a failure) settles it.
    pending_milli: AtomicU64,
    account: Mutex<Account>,
}

#[derive(Debug)]
struct Account {
    tokens: f64,
    at: Instant,
}

impl Budget {
    /// A budget with `config`'s rates, holding one second's allowance.
    pub fn new(config: &RetryBudget) -> Self {
        let per_sec = f64::from(config.min_per_sec);
        Self {
            deposit_milli: (config.percent.clamp(0.0, 1.0) * MILLI).round() as u64,
            per_sec,
            pending_milli: AtomicU64::new(0),
            cap: (per_sec * SAVED_SECONDS).max(MIN_CAP),
            account: Mutex::new(Account {
                tokens: per_sec,
                at: Instant::now(),
            }),
        }
    }

    /// A request arrived: it earns its share of a retry.
    pub fn deposit(&self) {
        if self.deposit_milli > 0 {
            self.pending_milli
                .fetch_add(self.deposit_milli, Ordering::Relaxed);
        }
    }

    /// Takes a retry from the budget; `false` if there is none.
    pub fn withdraw(&self) -> bool {
        let mut a = self.lock_refilled();
        if a.tokens >= 1.0 {
            a.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn lock_refilled(&self) -> std::sync::MutexGuard<'_, Account> {
        let now = Instant::now();
        let mut a = self.account.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(a.at).as_secs_f64();
        let deposited = self.pending_milli.swap(0, Ordering::Relaxed) as f64 / MILLI;
        // Deposits and time both fill the account up to the cap (all that is added is
        // positive, so settling late caps exactly as settling per request would).
        a.tokens = (a.tokens + deposited + elapsed * self.per_sec).min(self.cap.max(a.tokens));
        a.at = now;
        a
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(percent: f64, min_per_sec: u32) -> Budget {
        Budget::new(&RetryBudget {
            percent,
            min_per_sec,
        })
    }

    /// Retries granted for `requests` requests arriving evenly over `secs`, every one
    /// failing once and asking for a retry.
    async fn granted(b: &Budget, requests: u32, secs: u64) -> u32 {
        let step = Duration::from_secs(secs) / requests.max(1);
        let mut n = 0;
        for _ in 0..requests {
            b.deposit();
            if b.withdraw() {
                n += 1;
            }
            tokio::time::advance(step).await;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn grants_a_share_of_requests_plus_a_rate() {
        // (percent, per second, requests, seconds, expected granted)
        let cases: &[(f64, u32, u32, u64, u32)] = &[
            (0.2, 0, 1000, 1, 200),
            (0.2, 10, 1000, 1, 220),
            (0.2, 10, 1000, 5, 260),
            (0.0, 10, 100, 2, 30),
            (0.0, 0, 100, 2, 0),
            (1.0, 0, 100, 1, 100),
        ];
        for (percent, per_sec, requests, secs, want) in cases {
            let b = budget(*percent, *per_sec);
            let got = granted(&b, *requests, *secs).await;
            // Rounding at the ends of the window: within one retry.
            assert!(
                got.abs_diff(*want) <= 1,
                "{percent} {per_sec}/s over {requests} requests in {secs}s: {got}, want {want}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn starts_with_a_second_and_saves_at_most_ten_seconds_of_allowance() {
        let b = budget(0.2, 10);
        let start = (0..100).take_while(|_| b.withdraw()).count();
        assert_eq!(start, 10, "one second's allowance at start");
        tokio::time::advance(Duration::from_secs(3600)).await;
        let burst = (0..1000).take_while(|_| b.withdraw()).count();
        assert_eq!(burst, 100, "an hour of quiet saves ten seconds' worth");
    }
}
