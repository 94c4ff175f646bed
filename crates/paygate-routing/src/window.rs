//! A sliding window of outcomes in time buckets of atomics: recording is two or three
//! `fetch_add`s, reading sums the buckets still inside the window, the newer ones weighing
//! more (a half-life), so a channel that starts failing loses its score within a second
//! while the window still remembers enough to keep the estimate steady.
//!
//! Lock-free and approximate by design: when a bucket is recycled for a new period, an
//! increment racing the reset may be lost. That costs a sample or two per bucket turnover,
//! which a success-rate estimate does not notice; a lock would cost every request.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Longest window the router keeps, in buckets (a limit on memory and on read cost).
pub const BUCKETS_MAX: u32 = 240;

/// The shape of every window of one router.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowConfig {
    pub bucket_ms: u32,
    pub buckets: u32,
    /// A bucket this much older than the current one counts half.
    pub half_life_ms: u32,
}

impl Default for WindowConfig {
    /// 5 s in 250 ms buckets, halving every 500 ms: a channel that starts failing loses its
    /// score within a second at a few hundred payments a second, counting the calls still
    /// in flight when it starts. The failures needed to outweigh its recent successes grow
    /// with the half-life: at 1 s, the routing scenario's fall took 750 ms and, once,
    /// over 1,000 ms on a loaded 2-core machine; at 500 ms it takes 500 ms.
    fn default() -> Self {
        WindowConfig {
            bucket_ms: 250,
            buckets: 20,
            half_life_ms: 500,
        }
    }
}

impl WindowConfig {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.bucket_ms < 10 || self.buckets < 2 || self.buckets > BUCKETS_MAX {
            return Err(format!(
                "window: want bucket_ms >= 10 and 2 <= buckets <= {BUCKETS_MAX}"
            ));
        }
        if self.half_life_ms == 0 {
            return Err("window: half_life_ms must be positive".into());
        }
        Ok(())
    }

    /// Weight of a bucket by its age in buckets.
    pub(crate) fn decay_table(&self) -> Vec<f64> {
        (0..self.buckets)
            .map(|age| {
                0.5f64
                    .powf(f64::from(age) * f64::from(self.bucket_ms) / f64::from(self.half_life_ms))
            })
            .collect()
    }

    pub fn window_ms(&self) -> i64 {
        i64::from(self.bucket_ms) * i64::from(self.buckets)
    }
}

#[derive(Default)]
struct Bucket {
    /// Which period (`now_ms / bucket_ms`) the counts belong to.
    period: AtomicI64,
    ok: AtomicU32,
    fail: AtomicU32,
    latency_ms_sum: AtomicU64,
}

/// Weighted sums over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    pub ok: f64,
    pub fail: f64,
    /// Weighted mean latency of the outcomes that carried one, in ms (0 with none).
    pub latency_ms: f64,
    /// Unweighted counts inside the window.
    pub ok_n: u64,
    pub fail_n: u64,
}

pub(crate) struct Window {
    buckets: Box<[Bucket]>,
    bucket_ms: i64,
}

impl Window {
    pub(crate) fn new(config: &WindowConfig) -> Self {
        Window {
            buckets: (0..config.buckets).map(|_| Bucket::default()).collect(),
            bucket_ms: i64::from(config.bucket_ms),
        }
    }

    /// The bucket of `now_ms`, recycled if it still holds an older period; `None` when the
    /// caller's clock is behind a period the bucket was already recycled for.
    fn bucket(&self, now_ms: i64) -> Option<&Bucket> {
        let period = now_ms.div_euclid(self.bucket_ms);
        let b = &self.buckets[period.rem_euclid(self.buckets.len() as i64) as usize];
        let held = b.period.load(Relaxed);
        if held == period {
            return Some(b);
        }
        if held > period {
            return None;
        }
        if b.period
            .compare_exchange(held, period, Relaxed, Relaxed)
            .is_ok()
        {
            b.ok.store(0, Relaxed);
            b.fail.store(0, Relaxed);
            b.latency_ms_sum.store(0, Relaxed);
        }
        Some(b)
    }

    pub(crate) fn record(&self, now_ms: i64, ok: bool, latency_ms: u32) {
        let Some(b) = self.bucket(now_ms) else {
            return;
        };
        if ok {
            b.ok.fetch_add(1, Relaxed);
        } else {
            b.fail.fetch_add(1, Relaxed);
        }
        if latency_ms > 0 {
            b.latency_ms_sum.fetch_add(u64::from(latency_ms), Relaxed);
        }
    }

    /// One event with no outcome (a decision, for the routing share).
    pub(crate) fn count(&self, now_ms: i64) {
        if let Some(b) = self.bucket(now_ms) {
            b.ok.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn tally(&self, now_ms: i64, decay: &[f64]) -> Tally {
        let current = now_ms.div_euclid(self.bucket_ms);
        let mut t = Tally::default();
        let mut latency_weight = 0.0;
        let mut latency_sum = 0.0;
        for b in self.buckets.iter() {
            let age = current - b.period.load(Relaxed);
            let Some(w) = usize::try_from(age).ok().and_then(|a| decay.get(a)) else {
                continue;
            };
            let ok = b.ok.load(Relaxed);
            let fail = b.fail.load(Relaxed);
            let latency = b.latency_ms_sum.load(Relaxed);
            t.ok += f64::from(ok) * w;
            t.fail += f64::from(fail) * w;
            t.ok_n += u64::from(ok);
            t.fail_n += u64::from(fail);
            if ok + fail > 0 && latency > 0 {
                latency_sum += latency as f64 * w;
                latency_weight += f64::from(ok + fail) * w;
            }
        }
        if latency_weight > 0.0 {
            t.latency_ms = latency_sum / latency_weight;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_buckets_fade_and_leave_the_window() {
        let config = WindowConfig {
            bucket_ms: 100,
            buckets: 10,
            half_life_ms: 100,
        };
        let decay = config.decay_table();
        let w = Window::new(&config);
        for _ in 0..8 {
            w.record(1_000, true, 10);
        }
        w.record(1_050, false, 30);
        let t = w.tally(1_050, &decay);
        assert_eq!((t.ok, t.fail, t.ok_n, t.fail_n), (8.0, 1.0, 8, 1));
        assert!((t.latency_ms - 110.0 / 9.0).abs() < 1e-9);
        // One bucket later everything counts half; ten buckets later it is gone.
        let t = w.tally(1_100, &decay);
        assert_eq!((t.ok, t.fail), (4.0, 0.5));
        assert_eq!(w.tally(2_000, &decay), Tally::default());
        // The slot is recycled for a new period, not added to.
        w.record(2_000, false, 0);
        let t = w.tally(2_000, &decay);
        assert_eq!((t.ok_n, t.fail_n), (0, 1));
    }

    #[test]
    fn a_late_sample_for_a_recycled_bucket_is_dropped() {
        let config = WindowConfig {
            bucket_ms: 100,
            buckets: 4,
            half_life_ms: 1_000,
        };
        let w = Window::new(&config);
        w.record(1_000, true, 0);
        w.record(600, true, 0); // same slot, older period
        assert_eq!(w.tally(1_000, &config.decay_table()).ok_n, 1);
    }

    #[test]
    fn counts_survive_concurrent_writers() {
        let config = WindowConfig::default();
        let w = std::sync::Arc::new(Window::new(&config));
        // The bucket's period is claimed first: the documented race is at recycling only.
        w.record(5_000, true, 1);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = std::sync::Arc::clone(&w);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.record(5_000, true, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.tally(5_000, &config.decay_table()).ok_n, 40_001);
    }
}
