//! A circuit breaker per channel, in atomics: CLOSED until `failures_max` consecutive
//! failures or timeouts, then OPEN (no traffic) for `cool_down_ms`, then HALF-OPEN: one probe
//! per `probe_interval_ms` goes through; a success closes it, a failure opens it again.
//!
//! Probes are rationed by time rather than by a count of probes in flight, so a probe whose
//! request dies without reporting back cannot wedge the breaker half-open.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering::Relaxed};

#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    pub failures_max: u32,
    pub cool_down_ms: u32,
    pub probe_interval_ms: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures_max: 5,
            cool_down_ms: 5_000,
            probe_interval_ms: 1_000,
        }
    }
}

impl BreakerConfig {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.failures_max == 0 || self.probe_interval_ms == 0 {
            return Err("breaker: failures_max and probe_interval_ms must be positive".into());
        }
        Ok(())
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What the breaker lets through now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Pass,
    /// Open and cooling down.
    Refuse,
    /// Half-open (or open past its cool-down) and a probe slot is free.
    Probe,
    /// Half-open, the probe slot was taken recently.
    ProbeTaken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Default)]
pub(crate) struct Breaker {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    opened_at_ms: AtomicI64,
    last_probe_ms: AtomicI64,
}

impl Breaker {
    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Relaxed) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    /// Read-only: what a decision at `now_ms` may do with this channel.
    pub(crate) fn admission(&self, config: &BreakerConfig, now_ms: i64) -> Admission {
        match self.state.load(Relaxed) {
            CLOSED => Admission::Pass,
            OPEN if now_ms - self.opened_at_ms.load(Relaxed) < i64::from(config.cool_down_ms) => {
                Admission::Refuse
            }
            _ if now_ms - self.last_probe_ms.load(Relaxed)
                >= i64::from(config.probe_interval_ms) =>
            {
                Admission::Probe
            }
            _ => Admission::ProbeTaken,
        }
    }

    /// Takes the probe slot; false if another decision took it first.
    pub(crate) fn claim_probe(&self, config: &BreakerConfig, now_ms: i64) -> bool {
        let last = self.last_probe_ms.load(Relaxed);
        if now_ms - last < i64::from(config.probe_interval_ms) {
            return false;
        }
        if self
            .last_probe_ms
            .compare_exchange(last, now_ms, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        // OPEN past its cool-down becomes HALF-OPEN with its first probe.
        let _ = self
            .state
            .compare_exchange(OPEN, HALF_OPEN, Relaxed, Relaxed);
        true
    }

    pub(crate) fn success(&self) {
        self.consecutive_failures.store(0, Relaxed);
        if self.state.load(Relaxed) != CLOSED {
            self.state.store(CLOSED, Relaxed);
        }
    }

    /// Returns true when this failure opened the breaker.
    pub(crate) fn failure(&self, config: &BreakerConfig, now_ms: i64) -> bool {
        let n = self
            .consecutive_failures
            .fetch_add(1, Relaxed)
            .saturating_add(1);
        let state = self.state.load(Relaxed);
        let open = match state {
            HALF_OPEN => true,
            CLOSED => n >= config.failures_max,
            _ => false,
        };
        if open
            && self
                .state
                .compare_exchange(state, OPEN, Relaxed, Relaxed)
                .is_ok()
        {
            self.opened_at_ms.store(now_ms, Relaxed);
            return true;
        }
        false
    }

    /// An operator's reset: CLOSED, counters cleared.
    pub(crate) fn reset(&self) {
        self.consecutive_failures.store(0, Relaxed);
        self.state.store(CLOSED, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failures_max: 3,
            cool_down_ms: 1_000,
            probe_interval_ms: 200,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_in_between_resets() {
        let c = config();
        let b = Breaker::default();
        assert!(!b.failure(&c, 0));
        assert!(!b.failure(&c, 0));
        b.success();
        assert!(!b.failure(&c, 0));
        assert!(!b.failure(&c, 0));
        assert_eq!(b.admission(&c, 0), Admission::Pass);
        assert!(b.failure(&c, 10));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admission(&c, 500), Admission::Refuse);
    }

    #[test]
    fn half_open_lets_one_probe_per_interval_and_its_outcome_decides() {
        let c = config();
        let b = Breaker::default();
        for _ in 0..3 {
            b.failure(&c, 0);
        }
        assert_eq!(b.admission(&c, 1_000), Admission::Probe);
        assert!(b.claim_probe(&c, 1_000));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.claim_probe(&c, 1_050), "one probe per interval");
        assert_eq!(b.admission(&c, 1_100), Admission::ProbeTaken);
        // The probe failed: open again, a new cool-down.
        assert!(b.failure(&c, 1_150));
        assert_eq!(b.admission(&c, 1_500), Admission::Refuse);
        assert!(b.claim_probe(&c, 2_200));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admission(&c, 2_201), Admission::Pass);
    }
}
