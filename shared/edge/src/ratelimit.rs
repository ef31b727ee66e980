//! Token buckets keyed by client IP or subject. The clock is passed in, so the rules
//! are tested without waiting. Memory is bounded: at most `max_keys` buckets; when
//! full, buckets that have refilled (idle callers) are dropped first, and if every
//! bucket is still in use a new key is refused for a second rather than let the map grow.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_minute` requests a minute on average, up to `burst` at once.
    pub fn new(per_minute: u32, burst: u32, max_keys: usize) -> Self {
        Self {
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `count` requests per `window` on average, up to `burst` at once.
    pub fn per_window(count: u32, window: Duration, burst: u32, max_keys: usize) -> Self {
        Self {
            per_sec: f64::from(count.max(1)) / window.as_secs_f64().max(0.001),
            burst: f64::from(burst.max(1)),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; Err(how long until one is available).
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let full_after = Duration::from_secs_f64(self.burst / self.per_sec);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
            if buckets.len() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_sec))
        }
    }

    pub fn tracked_keys(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Retry-After in whole seconds, never 0.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let limiter = RateLimiter::new(60, 3, 100); // one a second, three at once
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("a", t0).is_ok());
        }
        let wait = limiter.check("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        assert!(limiter.check("b", t0).is_ok(), "keys are independent");
        assert!(limiter.check("a", t0 + Duration::from_millis(1001)).is_ok());
    }

    #[test]
    fn the_map_stays_bounded_and_forgets_idle_callers() {
        let limiter = RateLimiter::new(60, 2, 3);
        let t0 = Instant::now();
        for key in ["a", "b", "c"] {
            limiter.check(key, t0).unwrap();
        }
        assert_eq!(limiter.check("d", t0), Err(Duration::from_secs(1)), "all busy: refuse the newcomer");
        let later = t0 + Duration::from_secs(3);
        assert!(limiter.check("d", later).is_ok(), "refilled buckets are dropped to make room");
        assert!(limiter.tracked_keys() <= 3);
    }
}
