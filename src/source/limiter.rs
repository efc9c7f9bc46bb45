//! Paces calls to a quota shared by everything this process does against one AWS account and
//! region (FilterLogEvents: 5 per second, a hard limit). Pacing up front is cheaper than
//! being throttled and retrying: a throttled call still counts against the quota.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next_free: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// `per_second` calls per second per key; 0 or less means unlimited.
    pub fn new(per_second: f64) -> Self {
        let interval = if per_second > 0.0 { Duration::from_secs_f64(1.0 / per_second) } else { Duration::ZERO };
        RateLimiter { interval, next_free: Mutex::new(HashMap::new()) }
    }

    /// Waits for this key's next free slot and takes it.
    pub async fn acquire(&self, key: &str) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut map = self.next_free.lock().expect("limiter lock");
            let now = Instant::now();
            let next = map.entry(key.to_string()).or_insert(now);
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
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
}
