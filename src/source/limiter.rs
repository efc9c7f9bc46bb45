//! Paces calls to a quota shared by everything this process does against one AWS account and
//! region (FilterLogEvents: 5 per second, a hard limit). Pacing up front is cheaper than
//! being throttled and retrying: a throttled call still counts against the quota.
//!
//! The quota is the account's, not ours: another tool reading the same account takes part of
//! it, and then even perfectly paced calls are throttled. So a throttle slows the key down
//! (the gap between calls doubles, up to [`MAX_INTERVAL`]) and each call that gets through
//! brings the gap back towards the configured rate.
//!
//! [`QuerySlots`] bounds the Logs Insights queries running at once per account, below AWS's
//! 30 concurrent queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The slowest a throttled key is paced: one call per this long.
pub const MAX_INTERVAL: Duration = Duration::from_secs(4);

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    keys: Mutex<HashMap<String, KeyPace>>,
}

#[derive(Debug, Clone, Copy)]
struct KeyPace {
    next_free: Instant,
    /// The current gap between calls: `interval` unless throttles widened it.
    gap: Duration,
}

impl RateLimiter {
    /// `per_second` calls per second per key; 0 or less means unlimited.
    pub fn new(per_second: f64) -> Self {
        let interval = if per_second > 0.0 { Duration::from_secs_f64(1.0 / per_second) } else { Duration::ZERO };
        RateLimiter { interval, keys: Mutex::new(HashMap::new()) }
    }

    /// Waits for this key's next free slot and takes it.
    pub async fn acquire(&self, key: &str) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut map = self.keys.lock().expect("limiter lock");
            let now = Instant::now();
            let pace = map.entry(key.to_string()).or_insert(KeyPace { next_free: now, gap: self.interval });
            let slot = pace.next_free.max(now);
            pace.next_free = slot + pace.gap;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// A call of this key was throttled: call less often, starting now.
    pub fn throttled(&self, key: &str) {
        if self.interval.is_zero() {
            return;
        }
        let mut map = self.keys.lock().expect("limiter lock");
        let now = Instant::now();
        let pace = map.entry(key.to_string()).or_insert(KeyPace { next_free: now, gap: self.interval });
        pace.gap = (pace.gap * 2).min(MAX_INTERVAL.max(self.interval));
        pace.next_free = pace.next_free.max(now + pace.gap);
    }

    /// A call of this key got through: move a quarter of the way back to the configured rate.
    pub fn succeeded(&self, key: &str) {
        if self.interval.is_zero() {
            return;
        }
        let mut map = self.keys.lock().expect("limiter lock");
        if let Some(pace) = map.get_mut(key) {
            if pace.gap > self.interval {
                pace.gap = (pace.gap - (pace.gap - self.interval) / 4).max(self.interval);
                // Within a millisecond is close enough: stop shrinking by ever smaller steps.
                if pace.gap - self.interval < Duration::from_millis(1) {
                    pace.gap = self.interval;
                }
            }
        }
    }

    /// The gap between calls of this key now (the configured one unless throttled lately).
    pub fn gap(&self, key: &str) -> Duration {
        self.keys.lock().expect("limiter lock").get(key).map_or(self.interval, |p| p.gap)
    }
}

/// A bounded number of slots per key, e.g. Insights queries running at once per account.
#[derive(Debug)]
pub struct QuerySlots {
    per_key: usize,
    keys: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl QuerySlots {
    pub fn new(per_key: usize) -> Self {
        QuerySlots { per_key: per_key.max(1), keys: Mutex::new(HashMap::new()) }
    }

    /// Waits for a free slot of this key; it is freed when the permit is dropped.
    pub async fn acquire(&self, key: &str) -> OwnedSemaphorePermit {
        let sem = {
            let mut map = self.keys.lock().expect("slots lock");
            map.entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_key))).clone()
        };
        sem.acquire_owned().await.expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_per_key() {
        let limiter = RateLimiter::new(5.0);
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire("a").await;
        }
        // six calls at 5/s: the sixth starts one second after the first
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        let other = Instant::now();
        limiter.acquire("b").await;
        assert_eq!(other.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_slows_the_key_and_successes_bring_it_back() {
        let limiter = RateLimiter::new(5.0);
        let base = Duration::from_millis(200);
        limiter.acquire("a").await;
        limiter.throttled("a");
        assert_eq!(limiter.gap("a"), base * 2);
        limiter.throttled("a");
        assert_eq!(limiter.gap("a"), base * 4);
        assert_eq!(limiter.gap("b"), base, "other keys keep their pace");
        // The next call waits out the widened gap.
        let t = Instant::now();
        limiter.acquire("a").await;
        assert_eq!(t.elapsed(), base * 4);
        for _ in 0..40 {
            limiter.succeeded("a");
        }
        assert_eq!(limiter.gap("a"), base);
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_never_slow_a_key_past_the_cap() {
        let limiter = RateLimiter::new(5.0);
        for _ in 0..20 {
            limiter.throttled("a");
        }
        assert_eq!(limiter.gap("a"), MAX_INTERVAL);
    }

    #[tokio::test]
    async fn query_slots_are_bounded_per_key() {
        let slots = QuerySlots::new(2);
        let a1 = slots.acquire("a").await;
        let _a2 = slots.acquire("a").await;
        let _b = slots.acquire("b").await;
        let third = tokio::time::timeout(Duration::from_millis(50), slots.acquire("a")).await;
        assert!(third.is_err(), "a third slot of the same key waits");
        drop(a1);
        let _a3 = tokio::time::timeout(Duration::from_secs(5), slots.acquire("a")).await.expect("freed slot");
    }
}
