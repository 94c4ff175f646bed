//! The rows paygate keeps, as plain data. Enum-like columns are Rust enums stored as their
//! wire strings; money is `i64` fen; times are UTC instants (stored as Unix milliseconds).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MerchantStatus {
    Active,
    Disabled,
}

/// A merchant of the gateway, and the channel it is collected through.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantRecord {
    pub mchid: String,
    pub name: String,
    pub appid: String,
    /// The merchant's APIv3 key: encrypts its notifications. A secret (Debug prints `***`).
    pub apiv3_key: String,
    pub status: MerchantStatus,
    /// The channel the merchant's payments go through.
    pub channel_id: String,
    /// The merchant's sub-merchant number at a service-provider channel.
    pub channel_sub_mchid: Option<String>,
    pub channel_sub_appid: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for MerchantRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantRecord")
            .field("mchid", &self.mchid)
            .field("name", &self.name)
            .field("appid", &self.appid)
            .field("apiv3_key", &"***")
            .field("status", &self.status)
            .field("channel_id", &self.channel_id)
            .field("channel_sub_mchid", &self.channel_sub_mchid)
            .finish_non_exhaustive()
    }
}

/// A merchant API certificate (or bare public key): what its requests are verified with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantCertRecord {
    pub mchid: String,
    /// Uppercase hex certificate serial, as sent in `Authorization`.
    pub serial_no: String,
    /// A certificate PEM or an SPKI public-key PEM.
    pub pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlatformKeyKind {
    /// Certificate mode: `key_id` is the certificate serial.
    Certificate,
    /// Public-key mode: `key_id` is `PUB_KEY_ID_…`.
    PublicKey,
}

/// One of the gateway's own platform signing keys (it *is* WeChat Pay to its merchants).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformKeyRecord {
    pub key_id: String,
    pub kind: PlatformKeyKind,
    /// PKCS#8 PEM. A secret (Debug prints `***`).
    pub private_key_pem: String,
    pub certificate_pem: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for PlatformKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKeyRecord")
            .field("key_id", &self.key_id)
            .field("kind", &self.kind)
            .field("private_key_pem", &"***")
            .finish_non_exhaustive()
    }
}

/// `trade_state` values an order takes in the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    Notpay,
    Payerror,
    Success,
    Refund,
    Closed,
}

impl OrderState {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderState::Notpay => "NOTPAY",
            OrderState::Payerror => "PAYERROR",
            OrderState::Success => "SUCCESS",
            OrderState::Refund => "REFUND",
            OrderState::Closed => "CLOSED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NOTPAY" => OrderState::Notpay,
            "PAYERROR" => OrderState::Payerror,
            "SUCCESS" => OrderState::Success,
            "REFUND" => OrderState::Refund,
            "CLOSED" => OrderState::Closed,
            _ => return None,
        })
    }
}

/// Which order a view read is for: the merchant's own key, or the transaction id.
#[derive(Clone, Copy, Debug)]
pub enum OrderKey<'a> {
    OutTradeNo {
        mchid: &'a str,
        out_trade_no: &'a str,
    },
    TransactionId(&'a str),
}

/// A merchant's order, keyed by the gateway's own transaction id (WeChat's 28-digit shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub transaction_id: String,
    pub mchid: String,
    pub out_trade_no: String,
    pub appid: String,
    /// `JSAPI`, `APP`, `MWEB`, `NATIVE`.
    pub trade_type: String,
    pub state: OrderState,
    pub description: String,
    pub attach: Option<String>,
    pub notify_url: String,
    pub total_fen: i64,
    pub currency: String,
    pub payer_openid: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub time_expire: OffsetDateTime,
    /// Canonical parameters: a re-submission must match them exactly (§4.6).
    pub fingerprint: String,
    /// The merchant's request body as parsed (for fields the columns do not carry).
    pub request_json: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub success_time: Option<OffsetDateTime>,
    pub bank_type: Option<String>,
    /// Bumped by every change; part of what a reader can compare.
    pub version: i64,
    /// The fee terms snapshotted when the order was created (issue 4 §5).
    #[serde(default)]
    pub pricing: OrderPricing,
    /// `settle_info.profit_sharing` of the prepay: the net is frozen for profit sharing.
    #[serde(default)]
    pub profit_sharing: bool,
}

/// An order's fee terms, fixed when it is created so a later change of rates never reprices
/// it. Rates are parts per million of the total (6000 ppm = 0.60%); amounts are the total's
/// rate rounded half-up to the fen, per transaction, as WeChat Pay charges its fee.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderPricing {
    /// paygate's fee rate for the merchant.
    pub fee_rate_ppm: i64,
    /// paygate's fee on this order: what the merchant pays, platform fee income.
    pub fee_fen: i64,
    /// The channel's cost rate (what WeChat Pay charges paygate on this channel).
    pub channel_cost_ppm: i64,
    pub channel_cost_fen: i64,
}

/// Most a rate may be: 100% (a fee never exceeds the total it is taken from).
pub const RATE_PPM_MAX: i64 = 1_000_000;

impl OrderPricing {
    /// The fee of `total_fen` at `rate_ppm`, rounded half-up to the fen; `None` for a rate
    /// outside 0..=100% or a negative total.
    pub fn fee_of(total_fen: i64, rate_ppm: i64) -> Option<i64> {
        if !(0..=RATE_PPM_MAX).contains(&rate_ppm) || total_fen < 0 {
            return None;
        }
        let scaled = i128::from(total_fen) * i128::from(rate_ppm);
        let fee = (scaled + i128::from(RATE_PPM_MAX / 2)) / i128::from(RATE_PPM_MAX);
        i64::try_from(fee).ok()
    }

    /// The terms for an order of `total_fen` at these rates.
    pub fn at(total_fen: i64, fee_rate_ppm: i64, channel_cost_ppm: i64) -> Option<OrderPricing> {
        Some(OrderPricing {
            fee_rate_ppm,
            fee_fen: Self::fee_of(total_fen, fee_rate_ppm)?,
            channel_cost_ppm,
            channel_cost_fen: Self::fee_of(total_fen, channel_cost_ppm)?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttemptState {
    /// Persisted, channel not called yet (or the call's outcome not recorded).
    Created,
    /// The channel accepted the prepay; the credential is stored.
    Prepaid,
    /// The channel refused (a definite answer).
    Failed,
    /// Timeout / 5xx / transport error: the channel may or may not have the order.
    Unknown,
    /// Closed at the channel (abandoned or expired).
    Closed,
    /// Paid at the channel.
    Paid,
}

impl AttemptState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptState::Created => "CREATED",
            AttemptState::Prepaid => "PREPAID",
            AttemptState::Failed => "FAILED",
            AttemptState::Unknown => "UNKNOWN",
            AttemptState::Closed => "CLOSED",
            AttemptState::Paid => "PAID",
        }
    }

    /// Its outcome may still change at the channel: the poller keeps asking (it has a
    /// `next_poll_at`). FAILED, CLOSED and PAID are final and carry no schedule.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            AttemptState::Created | AttemptState::Prepaid | AttemptState::Unknown
        )
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CREATED" => AttemptState::Created,
            "PREPAID" => AttemptState::Prepaid,
            "FAILED" => AttemptState::Failed,
            "UNKNOWN" => AttemptState::Unknown,
            "CLOSED" => AttemptState::Closed,
            "PAID" => AttemptState::Paid,
            _ => return None,
        })
    }
}

/// One channel call chain for an order. `attempt_id` is the out_trade_no used AT THE CHANNEL,
/// unique per attempt, so a retry or a failover never collides with an abandoned order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt_id: String,
    pub transaction_id: String,
    pub seq: i32,
    pub channel_id: String,
    pub state: AttemptState,
    pub prepay_id: Option<String>,
    pub code_url: Option<String>,
    pub h5_url: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub prepay_expires_at: Option<OffsetDateTime>,
    pub channel_transaction_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Why this channel was chosen (routing explanation).
    pub decision: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_polled_at: Option<OffsetDateTime>,
    /// When the poller is next to ask the channel about this attempt while it is pending;
    /// `None` when inserted means at once (stored as `created_at`). A final attempt has none
    /// (stored NULL whatever is given), so it is not in the poll index.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_poll_at: Option<OffsetDateTime>,
}

impl AttemptRecord {
    /// The `next_poll_at` the stores keep for it: its own or its creation while pending,
    /// none once final.
    pub fn poll_schedule(&self) -> Option<OffsetDateTime> {
        self.state
            .is_pending()
            .then(|| self.next_poll_at.unwrap_or(self.created_at))
    }
}

/// A compare-and-set update of one attempt. `None` fields are left as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptChange {
    pub attempt_id: String,
    pub expected_states: Vec<AttemptState>,
    pub new_state: AttemptState,
    pub prepay_id: Option<String>,
    pub code_url: Option<String>,
    pub h5_url: Option<String>,
    pub prepay_expires_at: Option<OffsetDateTime>,
    pub channel_transaction_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub last_polled_at: Option<OffsetDateTime>,
    pub next_poll_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
}

impl AttemptChange {
    /// A change to `new_state` from any of `expected_states`, touching nothing else.
    pub fn to(
        attempt_id: &str,
        expected_states: &[AttemptState],
        new_state: AttemptState,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            attempt_id: attempt_id.to_string(),
            expected_states: expected_states.to_vec(),
            new_state,
            prepay_id: None,
            code_url: None,
            h5_url: None,
            prepay_expires_at: None,
            channel_transaction_id: None,
            error_code: None,
            error_message: None,
            last_polled_at: None,
            next_poll_at: None,
            updated_at: now,
        }
    }
}

/// One fact about an order, written in one transaction: the order's state (compare-and-set on
/// `expected_state`, version + 1), optionally its attempt, a merchant notification (outbox)
/// and a repair record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderChange {
    pub transaction_id: String,
    pub expected_state: OrderState,
    pub new_state: OrderState,
    pub success_time: Option<OffsetDateTime>,
    pub bank_type: Option<String>,
    pub payer_openid: Option<String>,
    pub updated_at: OffsetDateTime,
    /// Applied in the same transaction; if its CAS fails the whole change is rolled back.
    pub attempt: Option<AttemptChange>,
    pub notification: Option<NotificationRecord>,
    pub repair: Option<RepairRecord>,
    /// Ledger postings of the fact (a payment's), applied in the same transaction: a refusal
    /// fails the whole change with [`crate::StoreError::Ledger`].
    pub ledger: Option<paygate_ledger::Posting>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationState {
    Pending,
    Delivered,
    /// The retry schedule is exhausted.
    Failed,
}

/// A merchant notification in the outbox. The plaintext is the V3 resource (a Transaction);
/// it is sealed with the merchant's APIv3 key and signed at each delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// The envelope `id` merchants see (stable across retries).
    pub id: String,
    pub mchid: String,
    pub transaction_id: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, ...
    pub event_type: String,
    pub url: String,
    pub plaintext: String,
    pub state: NotificationState,
    /// Delivery attempts made so far.
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub lease_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    /// The platform key the merchant asked for when it created the order (its prepay's
    /// `Wechatpay-Serial`), which signs the deliveries: `Some("")` none was asked for; `None`
    /// not recorded (refunds, rows from before migration 13): the outbox reads the order.
    #[serde(default)]
    pub answer_serial: Option<String>,
}

/// One delivery attempt, for the delivery log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub notification_id: String,
    /// 1-based.
    pub attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The merchant's HTTP status, if it answered.
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// A state fixed by something other than the normal flow (a late payment after a close, a
/// reconciliation finding), with before and after (DaxPay's repair records).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRecord {
    pub id: String,
    pub transaction_id: String,
    /// Who found it: `callback`, `poller`, `recon`, `operator`.
    pub source: String,
    /// What was done: e.g. `late_payment_after_close`.
    pub way: String,
    pub before_state: OrderState,
    pub after_state: OrderState,
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// What one channel handed out or collected since some instant: the orders of its attempts
/// that are PREPAID or PAID (a daily volume cap's measure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelVolume {
    pub channel_id: String,
    pub amount_fen: i64,
}

/// A risk decision kept for review and audit: what was decided about one prepay or refund,
/// and which rules fired (JSON array of `{rule_id, score, tags}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskDecisionRecord {
    pub id: String,
    pub mchid: String,
    /// `PREPAY` or `REFUND`.
    pub kind: String,
    /// out_trade_no (prepay) or out_refund_no (refund).
    pub reference: String,
    /// The order, when one was created (a denied prepay creates none).
    pub transaction_id: Option<String>,
    /// `ALLOW`, `REVIEW`, `CHALLENGE` or `DENY`.
    pub action: String,
    pub score: i64,
    pub fired_json: String,
    pub rules_version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One version of the risk rules: the whole set (rule sources and lists, as JSON the risk
/// engine reads), who saved it and why. Written once, never changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskRuleSetRecord {
    /// 1, 2, 3, … without gaps (see [`crate::Store::insert_risk_rule_set`]).
    pub version: i64,
    /// JSON array of rule sources.
    pub rules_json: String,
    /// JSON array of block/allow list entries.
    pub lists_json: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The author's summary of the change.
    pub comment: String,
}

/// The audit row of one saved version: who, when, why, and what changed (JSON written by the
/// caller: rules added, removed, changed; list entries added, removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskRuleAuditRecord {
    pub version: i64,
    pub author: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub comment: String,
    pub changes_json: String,
}
