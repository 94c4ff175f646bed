//! Prometheus metrics at `GET /metrics`: merchant API requests by endpoint and code with a
//! latency histogram, merchant notifications by outcome and the outbox's lag, risk decisions
//! by action, and the router's per-channel figures (share, success, latency, breaker). A
//! registry per gateway (not a process-global recorder), so several gateways in one test
//! process keep their own counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Histogram bucket bounds in seconds: a gateway answer is ~1 ms of CPU, a channel round trip more.
const BUCKETS_S: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];
/// Finer bounds for the latency the gateway itself adds (its answer minus upstream waits):
/// the issue-8 target is a p99 of 5 ms.
const ADDED_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5,
];
const SERIES_MAX: usize = 10_000;

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    added: Mutex<BTreeMap<String, Histogram>>,
    notifications: Mutex<BTreeMap<&'static str, u64>>,
    risk: Mutex<BTreeMap<String, u64>>,
    outbox_lag_ms: AtomicI64,
    outbox_claimed_total: AtomicU64,
    answers_signed_ahead: AtomicU64,
    answers_signed_at_answer: AtomicU64,
    duplicate_payments_total: AtomicU64,
}

/// The route template of a merchant-API path, so ids do not explode the label space.
pub fn endpoint(method: &str, path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    let template = match segments.as_slice() {
        ["", "v3", "pay", "transactions", "id", _] => {
            "/v3/pay/transactions/id/{transaction_id}".to_string()
        }
        ["", "v3", "pay", "transactions", "out-trade-no", _] => {
            "/v3/pay/transactions/out-trade-no/{out_trade_no}".into()
        }
        ["", "v3", "pay", "transactions", "out-trade-no", _, "close"] => {
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close".into()
        }
        ["", "v3", "pay", "transactions", product]
            if ["jsapi", "app", "h5", "native"].contains(product) =>
        {
            format!("/v3/pay/transactions/{product}")
        }
        ["", "v3", "refund", "domestic", "refunds", _] => {
            "/v3/refund/domestic/refunds/{out_refund_no}".into()
        }
        ["", "v3", "refund", "domestic", "refunds"] => "/v3/refund/domestic/refunds".into(),
        ["", "v3", "certificates"] => "/v3/certificates".into(),
        ["", "paygate", "v1", "pay-params"] => "/paygate/v1/pay-params".into(),
        _ => "other".into(),
    };
    format!("{method} {template}")
}

impl Metrics {
    /// Signed answers by when they were signed: ahead (overlapping a commit) or as they left.
    pub fn observe_answer_signing(&self, signing: paygate_http::Signing) {
        let counter = match signing {
            paygate_http::Signing::Ahead => &self.answers_signed_ahead,
            paygate_http::Signing::AtAnswer => &self.answers_signed_at_answer,
            paygate_http::Signing::Unsigned => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `elapsed` is the whole answer, `upstream` the part spent waiting on channels.
    pub fn observe_request(
        &self,
        endpoint: String,
        status: u16,
        elapsed: Duration,
        upstream: Duration,
    ) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            if requests.len() < SERIES_MAX || requests.contains_key(&(endpoint.clone(), status)) {
                *requests.entry((endpoint.clone(), status)).or_default() += 1;
            }
        }
        let added = elapsed.saturating_sub(upstream);
        Self::observe(&self.added, &ADDED_BUCKETS_S, endpoint.clone(), added);
        Self::observe(&self.latency, &BUCKETS_S, endpoint, elapsed);
    }

    fn observe(
        series: &Mutex<BTreeMap<String, Histogram>>,
        bounds: &[f64; 12],
        endpoint: String,
        elapsed: Duration,
    ) {
        let secs = elapsed.as_secs_f64();
        let mut series = series.lock().unwrap_or_else(|p| p.into_inner());
        if series.len() >= SERIES_MAX && !series.contains_key(&endpoint) {
            return;
        }
        let h = series.entry(endpoint).or_default();
        h.count += 1;
        h.sum_s += secs;
        for (i, bound) in bounds.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
    }

    /// `delivered`, `retry` or `gave_up`.
    pub fn observe_notification(&self, outcome: &'static str) {
        *self
            .notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    pub fn observe_outbox_claim(&self, claimed: usize, oldest_due_lag_ms: i64) {
        self.outbox_claimed_total
            .fetch_add(claimed as u64, Ordering::Relaxed);
        self.outbox_lag_ms
            .store(oldest_due_lag_ms, Ordering::Relaxed);
    }

    /// A second attempt of a paid order was paid at the channel (and is being refunded).
    pub fn observe_duplicate_payment(&self) {
        self.duplicate_payments_total
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_risk(&self, action: &str) {
        *self
            .risk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(action.to_string())
            .or_default() += 1;
    }

    /// The Prometheus text exposition (version 0.0.4), plus `extra` (the router's series).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP paygate_http_requests_total Merchant API requests by endpoint and HTTP status."
        );
        let _ = writeln!(out, "# TYPE paygate_http_requests_total counter");
        for ((endpoint, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "paygate_http_requests_total{{endpoint=\"{endpoint}\",code=\"{status}\"}} {n}"
            );
        }
        render_histograms(
            &mut out,
            "paygate_http_request_duration_seconds",
            "Merchant API latency.",
            &BUCKETS_S,
            &self.latency.lock().unwrap_or_else(|p| p.into_inner()),
        );
        render_histograms(
            &mut out,
            "paygate_http_added_duration_seconds",
            "Merchant API latency minus the time spent waiting on channels: what the gateway adds.",
            &ADDED_BUCKETS_S,
            &self.added.lock().unwrap_or_else(|p| p.into_inner()),
        );
        let _ = writeln!(
            out,
            "# HELP paygate_answers_signed_total Signed merchant answers: signed ahead, while a \
             commit waited (prepay), or as they left."
        );
        let _ = writeln!(out, "# TYPE paygate_answers_signed_total counter");
        for (when, n) in [
            ("ahead", &self.answers_signed_ahead),
            ("at_answer", &self.answers_signed_at_answer),
        ] {
            let _ = writeln!(
                out,
                "paygate_answers_signed_total{{when=\"{when}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP paygate_notifications_total Merchant notification delivery attempts by outcome."
        );
        let _ = writeln!(out, "# TYPE paygate_notifications_total counter");
        for (outcome, n) in self
            .notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "paygate_notifications_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP paygate_outbox_lag_ms How late the oldest notification of the last claim was."
        );
        let _ = writeln!(out, "# TYPE paygate_outbox_lag_ms gauge");
        let _ = writeln!(
            out,
            "paygate_outbox_lag_ms {}",
            self.outbox_lag_ms.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE paygate_outbox_claimed_total counter");
        let _ = writeln!(
            out,
            "paygate_outbox_claimed_total {}",
            self.outbox_claimed_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP paygate_duplicate_payments_total Second attempts of paid orders that the payer paid too; each is refunded whole."
        );
        let _ = writeln!(out, "# TYPE paygate_duplicate_payments_total counter");
        let _ = writeln!(
            out,
            "paygate_duplicate_payments_total {}",
            self.duplicate_payments_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP paygate_risk_decisions_total Risk decisions by action."
        );
        let _ = writeln!(out, "# TYPE paygate_risk_decisions_total counter");
        for (action, n) in self.risk.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "paygate_risk_decisions_total{{action=\"{action}\"}} {n}"
            );
        }
        out.push_str(extra);
        out
    }
}

fn render_histograms(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64; 12],
    series: &BTreeMap<String, Histogram>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (endpoint, h) in series {
        for (bound, n) in bounds.iter().zip(h.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{endpoint=\"{endpoint}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{endpoint=\"{endpoint}\"}} {}", h.sum_s);
        let _ = writeln!(out, "{name}_count{{endpoint=\"{endpoint}\"}} {}", h.count);
    }
}

/// The store's connections and queues as gauges: a pool that is always empty of idle
/// connections, or a SQLite writer queue that keeps growing, is where the store would
/// become the bottleneck.
pub fn pool_text(backend: &str, stats: &paygate_store::PoolStats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP paygate_db_connections Database connections (PostgreSQL: the store's pool and the nonce inserts'; SQLite: writer, readers and point-read connections)."
    );
    let _ = writeln!(out, "# TYPE paygate_db_connections gauge");
    let in_use = stats.connections.saturating_sub(stats.idle);
    let _ = writeln!(
        out,
        "paygate_db_connections{{backend=\"{backend}\",state=\"idle\"}} {}",
        stats.idle
    );
    let _ = writeln!(
        out,
        "paygate_db_connections{{backend=\"{backend}\",state=\"in_use\"}} {in_use}"
    );
    let _ = writeln!(
        out,
        "# HELP paygate_db_queued Store jobs waiting for a SQLite writer or reader thread."
    );
    let _ = writeln!(out, "# TYPE paygate_db_queued gauge");
    let _ = writeln!(
        out,
        "paygate_db_queued{{backend=\"{backend}\",queue=\"write\"}} {}",
        stats.writes_queued
    );
    let _ = writeln!(
        out,
        "paygate_db_queued{{backend=\"{backend}\",queue=\"read\"}} {}",
        stats.reads_queued
    );
    out
}

/// The process's signature work (paygate_wxpay::crypto::cost): counts and the CPU seconds
/// the signing threads spent in them, for "CPU per call ÷ its cryptography" from outside.
pub fn crypto_text(cost: &paygate_wxpay::crypto::cost::SignatureCost) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP paygate_signatures_total Signatures made and verified by this process (RSA and SM2)."
    );
    let _ = writeln!(out, "# TYPE paygate_signatures_total counter");
    let _ = writeln!(
        out,
        "paygate_signatures_total{{op=\"sign\"}} {}",
        cost.signs
    );
    let _ = writeln!(
        out,
        "paygate_signatures_total{{op=\"verify\"}} {}",
        cost.verifies
    );
    let _ = writeln!(
        out,
        "# HELP paygate_signature_cpu_seconds_total Thread CPU time spent making and verifying them."
    );
    let _ = writeln!(out, "# TYPE paygate_signature_cpu_seconds_total counter");
    for (op, ns) in [("sign", cost.sign_cpu_ns), ("verify", cost.verify_cpu_ns)] {
        let _ = writeln!(
            out,
            "paygate_signature_cpu_seconds_total{{op=\"{op}\"}} {}.{:09}",
            ns / 1_000_000_000,
            ns % 1_000_000_000
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_cost_is_rendered_as_counters_in_seconds() {
        let text = crypto_text(&paygate_wxpay::crypto::cost::SignatureCost {
            signs: 3,
            sign_cpu_ns: 2_500_000_123,
            verifies: 4,
            verify_cpu_ns: 90_000,
        });
        assert!(text.contains("paygate_signatures_total{op=\"sign\"} 3\n"));
        assert!(text.contains("paygate_signatures_total{op=\"verify\"} 4\n"));
        assert!(text.contains("paygate_signature_cpu_seconds_total{op=\"sign\"} 2.500000123\n"));
        assert!(text.contains("paygate_signature_cpu_seconds_total{op=\"verify\"} 0.000090000\n"));
    }

    #[test]
    fn endpoints_are_templates() {
        assert_eq!(
            endpoint("GET", "/v3/pay/transactions/id/4200"),
            "GET /v3/pay/transactions/id/{transaction_id}"
        );
        assert_eq!(
            endpoint("POST", "/v3/pay/transactions/native"),
            "POST /v3/pay/transactions/native"
        );
        assert_eq!(endpoint("POST", "/v3/pay/transactions/evil"), "POST other");
        assert_eq!(
            endpoint("POST", "/v3/pay/transactions/out-trade-no/X1/close"),
            "POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close"
        );
    }

    #[test]
    fn pool_gauges_name_backend_and_state() {
        let text = pool_text(
            "postgres",
            &paygate_store::PoolStats {
                connections: 16,
                idle: 10,
                writes_queued: 0,
                reads_queued: 0,
            },
        );
        assert!(text.contains("paygate_db_connections{backend=\"postgres\",state=\"idle\"} 10\n"));
        assert!(text.contains("paygate_db_connections{backend=\"postgres\",state=\"in_use\"} 6\n"));
        assert!(text.contains("paygate_db_queued{backend=\"postgres\",queue=\"write\"} 0\n"));
    }

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_request(
            endpoint("POST", "/v3/pay/transactions/native"),
            200,
            Duration::from_millis(3),
            Duration::ZERO,
        );
        // 30 ms of which 27 at the channel: the gateway added 3 ms.
        m.observe_request(
            endpoint("POST", "/v3/pay/transactions/native"),
            200,
            Duration::from_millis(30),
            Duration::from_millis(27),
        );
        m.observe_notification("delivered");
        let text = m.render("paygate_channel_share{channel=\"a\"} 1\n");
        assert!(text.contains("paygate_http_requests_total{endpoint=\"POST /v3/pay/transactions/native\",code=\"200\"} 2"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.05\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 2"));
        let added = "paygate_http_added_duration_seconds_bucket{endpoint=\"POST /v3/pay/transactions/native\"";
        assert!(
            text.contains(&format!("{added},le=\"0.002\"}} 0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{added},le=\"0.003\"}} 2")),
            "{text}"
        );
        assert!(text.contains("paygate_notifications_total{outcome=\"delivered\"} 1"));
        assert!(text.ends_with("paygate_channel_share{channel=\"a\"} 1\n"));
    }
}
