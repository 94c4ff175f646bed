//! The simulator's clocks. Signatures always use real time (SDKs reject timestamps more
//! than five minutes off), while business time can be moved forward by the sandbox so a
//! test can expire an order or age a bill without waiting. Delays the real WeChat Pay
//! imposes (notification retries, refund processing) are divided by `--time-scale`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

#[derive(Debug)]
pub struct SimClock {
    offset_ms: AtomicI64,
    time_scale: u32,
}

impl SimClock {
    pub fn new(time_scale: u32) -> Self {
        Self {
            offset_ms: AtomicI64::new(0),
            time_scale: time_scale.max(1),
        }
    }

    /// Business time: real time plus whatever the sandbox advanced.
    pub fn now(&self) -> OffsetDateTime {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        OffsetDateTime::now_utc() + time::Duration::milliseconds(offset)
    }

    /// Real wall-clock seconds, for signature timestamps.
    pub fn real_unix(&self) -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    pub fn advance(&self, seconds: i64) {
        self.offset_ms
            .fetch_add(seconds.saturating_mul(1000), Ordering::Relaxed);
    }

    pub fn time_scale(&self) -> u32 {
        self.time_scale
    }

    /// A protocol delay compressed by the time scale, never below one millisecond.
    pub fn scaled(&self, real: Duration) -> Duration {
        (real / self.time_scale).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_business_time_only() {
        let clock = SimClock::new(1);
        let before = clock.now();
        clock.advance(3600);
        assert!(clock.now() - before >= time::Duration::seconds(3600));
        assert!((clock.real_unix() - OffsetDateTime::now_utc().unix_timestamp()).abs() <= 1);
    }

    #[test]
    fn delays_are_divided_by_the_scale() {
        let clock = SimClock::new(1000);
        assert_eq!(
            clock.scaled(Duration::from_secs(15)),
            Duration::from_millis(15)
        );
        assert_eq!(
            clock.scaled(Duration::from_micros(10)),
            Duration::from_millis(1)
        );
        assert_eq!(SimClock::new(0).time_scale(), 1);
    }
}
