//! Notification delivery to merchants' `notify_url`s, as WeChat Pay does it (§3): a signed
//! POST of an encrypted envelope, acknowledged by any 2xx within 5 s, otherwise retried on
//! the schedule 15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h
//! (divided by `--time-scale`). Every attempt is signed afresh (a 6-hour-old timestamp
//! would be refused) and recorded for the sandbox's `GET /sandbox/v1/notifications`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paygate_wxpay::crypto::SigningKey;
use paygate_wxpay::sign::{new_nonce, sign_response};
use rand::Rng;
use serde::Serialize;

use crate::clock::SimClock;
use crate::faults::{NotifyFaults, roll};

/// Intervals after the previous attempt, before time scaling (§3.4).
pub const RETRY_SCHEDULE_S: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];
/// §3.4: the merchant must answer within 5 s.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_ENTRIES_MAX: usize = 100_000;

/// One notification ready to go: the envelope bytes and the key to sign them with.
pub struct Envelope {
    pub id: String,
    pub mchid: String,
    pub url: String,
    pub event_type: String,
    /// out_trade_no or out_refund_no, for looking the deliveries up.
    pub reference: String,
    pub body: Vec<u8>,
    pub key: SigningKey,
    pub serial: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeliveryRecord {
    pub notification_id: String,
    pub mchid: String,
    pub reference: String,
    pub event_type: String,
    pub url: String,
    /// 1 for the first delivery; a duplicate delivery repeats the attempt number.
    pub attempt: u32,
    /// The merchant's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub acked: bool,
    /// A `WECHATPAY/SIGNTEST/` probe, which the merchant is expected to reject.
    pub probe: bool,
    pub duplicate: bool,
    pub at: String,
}

pub struct Notifier {
    http: reqwest::Client,
    clock: Arc<SimClock>,
    log: Mutex<VecDeque<DeliveryRecord>>,
}

impl Notifier {
    pub fn new(clock: Arc<SimClock>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(ACK_TIMEOUT)
            .pool_max_idle_per_host(32)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            clock,
            log: Mutex::new(VecDeque::new()),
        }
    }

    pub fn deliveries(&self, mchid: Option<&str>, reference: Option<&str>) -> Vec<DeliveryRecord> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|r| mchid.is_none_or(|m| r.mchid == m))
            .filter(|r| reference.is_none_or(|x| r.reference == x))
            .cloned()
            .collect()
    }

    /// Starts delivering in the background; returns at once.
    pub fn dispatch(self: &Arc<Self>, envelope: Envelope, faults: NotifyFaults) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.deliver(envelope, faults).await });
    }

    async fn deliver(&self, envelope: Envelope, faults: NotifyFaults) {
        let mut initial_ms = faults.delay_ms;
        if faults.reorder_window_ms > 0 {
            initial_ms += rand::rng().random_range(0..=faults.reorder_window_ms);
        }
        if initial_ms > 0 {
            tokio::time::sleep(Duration::from_millis(initial_ms)).await;
        }
        if faults.signtest {
            self.attempt(&envelope, 0, true, false).await;
        }
        for attempt in 1..=(RETRY_SCHEDULE_S.len() as u32 + 1) {
            let acked = if roll(faults.drop_rate_ppm) {
                self.record(
                    &envelope,
                    attempt,
                    None,
                    Some("dropped by fault injection".into()),
                    false,
                    false,
                    false,
                );
                false
            } else {
                let acked = self.attempt(&envelope, attempt, false, false).await;
                if acked && roll(faults.duplicate_rate_ppm) {
                    self.attempt(&envelope, attempt, false, true).await;
                }
                acked
            };
            if acked {
                return;
            }
            let Some(wait_s) = RETRY_SCHEDULE_S.get(attempt as usize - 1) else {
                return;
            };
            tokio::time::sleep(self.clock.scaled(Duration::from_secs(*wait_s))).await;
        }
    }

    async fn attempt(
        &self,
        envelope: &Envelope,
        attempt: u32,
        probe: bool,
        duplicate: bool,
    ) -> bool {
        let ts = self.clock.real_unix();
        let nonce = new_nonce();
        let signed =
            match sign_response(&envelope.key, &envelope.serial, &envelope.body, ts, &nonce) {
                Ok(s) => s,
                Err(e) => {
                    self.record(
                        envelope,
                        attempt,
                        None,
                        Some(format!("signing failed: {e}")),
                        false,
                        probe,
                        duplicate,
                    );
                    return false;
                }
            };
        let mut req = self
            .http
            .post(&envelope.url)
            .header("Content-Type", "application/json")
            .header("Request-ID", paygate_wxpay::server::request_id())
            .body(envelope.body.clone());
        for (name, value) in signed.headers() {
            // §3.1: WeChat probes merchants with deliberately wrong signatures.
            let value = if probe && name == "Wechatpay-Signature" {
                format!("WECHATPAY/SIGNTEST/{value}")
            } else {
                value
            };
            req = req.header(name, value);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let acked = (200..300).contains(&status);
                self.record(
                    envelope,
                    attempt,
                    Some(status),
                    None,
                    acked && !probe,
                    probe,
                    duplicate,
                );
                acked
            }
            Err(e) => {
                self.record(
                    envelope,
                    attempt,
                    None,
                    Some(e.to_string()),
                    false,
                    probe,
                    duplicate,
                );
                false
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        envelope: &Envelope,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
        acked: bool,
        probe: bool,
        duplicate: bool,
    ) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= LOG_ENTRIES_MAX {
            log.pop_front();
        }
        log.push_back(DeliveryRecord {
            notification_id: envelope.id.clone(),
            mchid: envelope.mchid.clone(),
            reference: envelope.reference.clone(),
            event_type: envelope.event_type.clone(),
            url: envelope.url.clone(),
            attempt,
            status,
            error,
            acked,
            probe,
            duplicate,
            at: paygate_core::timefmt::rfc3339_beijing(time::OffsetDateTime::now_utc()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_totals_24h4m() {
        let total: u64 = RETRY_SCHEDULE_S.iter().sum();
        assert_eq!(total, 24 * 3600 + 4 * 60);
    }
}
