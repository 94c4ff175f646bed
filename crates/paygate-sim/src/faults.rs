//! Fault injection per account (direct mchid or sp_mchid), set through the sandbox API:
//! latency, error answers by code, timeouts (the request is processed but no answer
//! comes back in time, the "unknown outcome" a gateway must resolve by querying), and
//! notification misbehaviour (dropped, duplicated, delayed, reordered, signature probes).

use rand::Rng;
use serde::{Deserialize, Serialize};

/// One error to inject, with its probability per request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorFault {
    /// A V3 code (`SYSTEM_ERROR`, `FREQUENCY_LIMITED`, …); its HTTP status comes from the catalogue.
    pub code: String,
    /// Probability in parts per million, so rates stay integers (300000 = 30%).
    pub rate_ppm: u32,
}

/// Latency as a log-normal distribution given by its median and 99th percentile.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub p50_ms: u64,
    #[serde(default)]
    pub p99_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NotifyFaults {
    /// Probability (ppm) that a delivery attempt is silently not made.
    #[serde(default)]
    pub drop_rate_ppm: u32,
    /// Probability (ppm) that a notification is delivered twice.
    #[serde(default)]
    pub duplicate_rate_ppm: u32,
    /// Extra delay before the first attempt, in milliseconds (not time-scaled).
    #[serde(default)]
    pub delay_ms: u64,
    /// Random extra delay up to this many ms per notification, so they arrive out of order.
    #[serde(default)]
    pub reorder_window_ms: u64,
    /// Send a `WECHATPAY/SIGNTEST/` probe with a deliberately wrong signature first.
    #[serde(default)]
    pub signtest: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Faults {
    #[serde(default)]
    pub latency: Option<Latency>,
    #[serde(default)]
    pub errors: Vec<ErrorFault>,
    /// Probability (ppm) that a request is processed but answered only after `timeout_ms`
    /// with 500 SYSTEM_ERROR, long after any sane client gave up.
    #[serde(default)]
    pub timeout_rate_ppm: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Operations the request faults apply to (`prepay`, `query`, `close`, `refund`,
    /// `profitsharing`, `bill`, `certificates`); empty = all.
    #[serde(default)]
    pub operations: Vec<String>,
    #[serde(default)]
    pub notify: NotifyFaults,
    /// Probability (ppm) that a refund ends ABNORMAL.
    #[serde(default)]
    pub refund_abnormal_rate_ppm: u32,
    /// Trade-bill faults, for reconciliation tests (applied when a day's bill is generated).
    #[serde(default)]
    pub bill: BillFaults,
}

/// Faults in the trade bill's payment rows, by out_trade_no: a missing row, a duplicated
/// row, a changed amount, a changed fee. The summary row is computed after them, so the
/// file stays self-consistent, as a real bill with these errors would be.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BillFaults {
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub duplicate: Vec<String>,
    #[serde(default)]
    pub amount_delta_fen: std::collections::BTreeMap<String, i64>,
    #[serde(default)]
    pub fee_delta_fen: std::collections::BTreeMap<String, i64>,
    /// Payments the channel books at the next Beijing midnight (paid at 23:59:59.9, booked
    /// after the cut): they appear in the next day's bill, not their own.
    #[serde(default)]
    pub next_day: Vec<String>,
    /// Refunds, by the channel's out_refund_no, the channel books at the next Beijing
    /// midnight (requested at 23:59:59, booked after the cut): their REFUND row is in the
    /// next day's trade bill, not their own.
    #[serde(default)]
    pub refund_next_day: Vec<String>,
}

/// The next Beijing midnight after `t` (`t` itself if there is none).
fn next_midnight(t: time::OffsetDateTime) -> time::OffsetDateTime {
    let beijing = t.to_offset(paygate_core::timefmt::BEIJING);
    beijing.date().next_day().map_or(t, |d| {
        d.midnight().assume_offset(paygate_core::timefmt::BEIJING)
    })
}

impl BillFaults {
    /// When the bill lists a payment made at `paid`.
    pub fn listed_at(
        &self,
        out_trade_no: &str,
        paid: time::OffsetDateTime,
    ) -> time::OffsetDateTime {
        if !self.next_day.iter().any(|n| n == out_trade_no) {
            return paid;
        }
        next_midnight(paid)
    }

    /// When the bill lists a refund requested at `created`.
    pub fn refund_listed_at(
        &self,
        out_refund_no: &str,
        created: time::OffsetDateTime,
    ) -> time::OffsetDateTime {
        if !self.refund_next_day.iter().any(|n| n == out_refund_no) {
            return created;
        }
        next_midnight(created)
    }

    /// The payment row(s) to write for `row` (none, one or two), with the faults applied.
    pub fn apply(
        &self,
        mut row: paygate_wxpay::bill::TradeBillRow,
    ) -> Vec<paygate_wxpay::bill::TradeBillRow> {
        if self.drop.contains(&row.out_trade_no) {
            return Vec::new();
        }
        if let Some(d) = self.amount_delta_fen.get(&row.out_trade_no) {
            row.settlement_total_fen += d;
            row.order_total_fen += d;
        }
        if let Some(d) = self.fee_delta_fen.get(&row.out_trade_no) {
            row.fee_milli_fen += d * 1000;
        }
        if self.duplicate.contains(&row.out_trade_no) {
            return vec![row.clone(), row];
        }
        vec![row]
    }
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Proceed {
        delay_ms: u64,
    },
    Error {
        code: String,
        delay_ms: u64,
    },
    /// Process, then hold the answer.
    Timeout {
        hold_ms: u64,
    },
}

pub fn roll(rate_ppm: u32) -> bool {
    rate_ppm > 0 && rand::rng().random_range(0..1_000_000) < rate_ppm
}

impl Faults {
    pub fn applies_to(&self, operation: &str) -> bool {
        self.operations.is_empty() || self.operations.iter().any(|o| o == operation)
    }

    pub fn decide(&self, operation: &str) -> Decision {
        if !self.applies_to(operation) {
            return Decision::Proceed { delay_ms: 0 };
        }
        let delay_ms = self.latency.as_ref().map_or(0, sample_latency_ms);
        if roll(self.timeout_rate_ppm) {
            return Decision::Timeout {
                hold_ms: self.timeout_ms,
            };
        }
        for e in &self.errors {
            if roll(e.rate_ppm) {
                return Decision::Error {
                    code: e.code.clone(),
                    delay_ms,
                };
            }
        }
        Decision::Proceed { delay_ms }
    }
}

/// Log-normal sample: median p50, sigma chosen so the 99th percentile is p99.
fn sample_latency_ms(l: &Latency) -> u64 {
    if l.p50_ms == 0 {
        return 0;
    }
    let p99 = l.p99_ms.max(l.p50_ms) as f64;
    let sigma = (p99 / l.p50_ms as f64).ln() / 2.326;
    let mut rng = rand::rng();
    // Box–Muller: one standard normal from two uniforms.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let ms = l.p50_ms as f64 * (sigma * z).exp();
    ms.clamp(0.0, 600_000.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_always_proceed_at_once() {
        let f = Faults::default();
        for _ in 0..1000 {
            assert_eq!(f.decide("prepay"), Decision::Proceed { delay_ms: 0 });
        }
    }

    #[test]
    fn error_rate_is_honoured_statistically() {
        let f = Faults {
            errors: vec![ErrorFault {
                code: "SYSTEM_ERROR".into(),
                rate_ppm: 300_000,
            }],
            ..Faults::default()
        };
        let n = 20_000;
        let errors = (0..n)
            .filter(|_| matches!(f.decide("prepay"), Decision::Error { .. }))
            .count();
        let rate = errors as f64 / n as f64;
        assert!((0.27..0.33).contains(&rate), "rate {rate}");
    }

    #[test]
    fn operations_filter_limits_where_faults_apply() {
        let f = Faults {
            timeout_rate_ppm: 1_000_000,
            operations: vec!["prepay".into()],
            ..Faults::default()
        };
        assert!(matches!(f.decide("prepay"), Decision::Timeout { .. }));
        assert_eq!(f.decide("query"), Decision::Proceed { delay_ms: 0 });
    }

    #[test]
    fn day_cut_faults_move_only_the_named_payment_or_refund_to_the_next_midnight() {
        use time::macros::datetime;
        let f = BillFaults {
            next_day: vec!["pay-late".into()],
            refund_next_day: vec!["rf-late".into()],
            ..BillFaults::default()
        };
        // 23:59:59 Beijing on 2026-11-28 is 15:59:59 UTC.
        let late = datetime!(2026-11-28 15:59:59 UTC);
        let midnight = datetime!(2026-11-29 00:00:00 +08:00);
        assert_eq!(f.listed_at("pay-late", late), midnight);
        assert_eq!(f.refund_listed_at("rf-late", late), midnight);
        // The lists are separate: a refund number does not move a payment, nor the reverse.
        assert_eq!(f.listed_at("rf-late", late), late);
        assert_eq!(f.refund_listed_at("pay-late", late), late);
        assert_eq!(f.refund_listed_at("rf-other", late), late);
    }

    #[test]
    fn latency_median_is_near_p50() {
        let l = Latency {
            p50_ms: 300,
            p99_ms: 900,
        };
        let mut v: Vec<u64> = (0..5001).map(|_| sample_latency_ms(&l)).collect();
        v.sort_unstable();
        let median = v[2500];
        assert!((250..350).contains(&median), "median {median}");
        let p99 = v[4950];
        assert!((700..1200).contains(&p99), "p99 {p99}");
    }
}
