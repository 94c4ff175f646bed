//! Per-merchant rate limits (issue 7 §3): a token bucket per mchid, refilled at
//! `rate_limit_per_s`; an empty bucket answers 429 `FREQUENCY_LIMITED` in the V3 shape. Kept
//! per node (a cluster of n nodes admits up to n × the rate): a shared counter would put a
//! database round trip on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept at most; past it, full (idle) buckets are dropped first.
const BUCKETS_MAX: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `None` when `per_s` is 0 (no limit).
    pub fn new(per_s: u32, burst: u32) -> Option<Self> {
        (per_s > 0).then(|| Self {
            per_s: f64::from(per_s),
            burst: f64::from(if burst == 0 { per_s } else { burst }),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token of `mchid`'s bucket; false if it is empty.
    pub fn admit(&self, mchid: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(mchid) {
            let (per_s, burst) = (self.per_s, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_s < burst
            });
        }
        let b = buckets.entry(mchid.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_s).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_admits_its_burst_then_refills_at_the_rate_per_merchant() {
        let limiter = RateLimiter::new(10, 5).unwrap();
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| limiter.admit("A", t0)).count(), 5);
        assert!(
            limiter.admit("B", t0),
            "another merchant has its own bucket"
        );
        assert!(!limiter.admit("A", t0 + Duration::from_millis(50)));
        assert!(limiter.admit("A", t0 + Duration::from_millis(100)));
        // A long pause refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| limiter.admit("A", later)).count(), 5);
        assert!(RateLimiter::new(0, 5).is_none());
    }
}
