//! What both backends share: column lists, enum ⇄ wire-string mapping, Unix-millisecond
//! times, and the decoding of one row into a record. Each backend only says how to read one
//! column ([`Cols`]); a value the code cannot read becomes [`StoreError::Corrupt`], never a panic.

use time::OffsetDateTime;

use crate::{
    AttemptRecord, AttemptState, DeliveryOutcome, DeliveryRecord, MerchantCertRecord,
    MerchantRecord, MerchantStatus, NotificationRecord, NotificationState, OrderRecord, OrderState,
    PlatformKeyKind, PlatformKeyRecord, RepairRecord, StoreError,
};

pub(crate) const MERCHANT_COLS: &str = "mchid, name, appid, apiv3_key, status, channel_id, channel_sub_mchid, channel_sub_appid, created_at";
pub(crate) const CERT_COLS: &str = "mchid, serial_no, pem, created_at";
pub(crate) const PLATFORM_KEY_COLS: &str =
    "key_id, kind, private_key_pem, certificate_pem, created_at";
pub(crate) const ORDER_COLS: &str = "transaction_id, mchid, out_trade_no, appid, trade_type, state, description, \
     attach, notify_url, total_fen, currency, payer_openid, time_expire, fingerprint, request_json, created_at, \
     updated_at, success_time, bank_type, version, fee_rate_ppm, fee_fen, channel_cost_ppm, channel_cost_fen, \
     profit_sharing";
/// Number of columns in [`ORDER_COLS`]: where the attempt starts in a joined row.
pub(crate) const ORDER_COL_COUNT: usize = 25;
pub(crate) const ATTEMPT_COLS: &str = "attempt_id, transaction_id, seq, channel_id, state, prepay_id, code_url, \
     h5_url, prepay_expires_at, channel_transaction_id, error_code, error_message, decision, created_at, \
     updated_at, last_polled_at, next_poll_at";
pub(crate) const RISK_COLS: &str =
    "id, mchid, kind, reference, transaction_id, action, score, fired_json, rules_version, at";
pub(crate) const RULE_SET_COLS: &str =
    "version, rules_json, lists_json, created_by, created_at, comment";
pub(crate) const RULE_AUDIT_COLS: &str = "version, author, at, comment, changes_json";
pub(crate) const REPAIR_COLS: &str =
    "id, transaction_id, source, way, before_state, after_state, detail, at";
pub(crate) const NOTIFICATION_COLS: &str = "id, mchid, transaction_id, event_type, url, plaintext, state, attempts, \
     next_attempt_at, lease_until, created_at, delivered_at, answer_serial";
pub(crate) const DELIVERY_COLS: &str =
    "notification_id, attempt, at, http_status, error, duration_ms";

/// `cols` with every name qualified by `table` (`o.mchid, o.name, …`), for joins.
pub(crate) fn qualified(table: &str, cols: &str) -> String {
    cols.split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The instant as Unix milliseconds (floored, so the stored value never lies in the future
/// of the real one).
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    // `time` keeps years within ±9999, whose milliseconds fit an i64 many times over.
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// The instant `ms` Unix milliseconds after the epoch, in UTC.
pub fn from_unix_ms(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("time {ms} ms out of range: {e}")))
}

/// `t` cut to what the store keeps (whole milliseconds, UTC): what a read gives back.
pub fn truncate_to_ms(t: OffsetDateTime) -> OffsetDateTime {
    from_unix_ms(unix_ms(t)).unwrap_or(t)
}

pub(crate) fn opt_ms(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(unix_ms)
}

pub(crate) fn merchant_status_str(s: MerchantStatus) -> &'static str {
    match s {
        MerchantStatus::Active => "ACTIVE",
        MerchantStatus::Disabled => "DISABLED",
    }
}

fn parse_merchant_status(s: &str) -> Result<MerchantStatus, StoreError> {
    match s {
        "ACTIVE" => Ok(MerchantStatus::Active),
        "DISABLED" => Ok(MerchantStatus::Disabled),
        _ => Err(corrupt("merchant status", s)),
    }
}

pub(crate) fn key_kind_str(k: PlatformKeyKind) -> &'static str {
    match k {
        PlatformKeyKind::Certificate => "CERTIFICATE",
        PlatformKeyKind::PublicKey => "PUBLIC_KEY",
    }
}

fn parse_key_kind(s: &str) -> Result<PlatformKeyKind, StoreError> {
    match s {
        "CERTIFICATE" => Ok(PlatformKeyKind::Certificate),
        "PUBLIC_KEY" => Ok(PlatformKeyKind::PublicKey),
        _ => Err(corrupt("platform key kind", s)),
    }
}

pub(crate) fn notification_state_str(s: NotificationState) -> &'static str {
    match s {
        NotificationState::Pending => "PENDING",
        NotificationState::Delivered => "DELIVERED",
        NotificationState::Failed => "FAILED",
    }
}

fn parse_notification_state(s: &str) -> Result<NotificationState, StoreError> {
    match s {
        "PENDING" => Ok(NotificationState::Pending),
        "DELIVERED" => Ok(NotificationState::Delivered),
        "FAILED" => Ok(NotificationState::Failed),
        _ => Err(corrupt("notification state", s)),
    }
}

fn parse_order_state(s: &str) -> Result<OrderState, StoreError> {
    OrderState::parse(s).ok_or_else(|| corrupt("order state", s))
}

fn parse_attempt_state(s: &str) -> Result<AttemptState, StoreError> {
    AttemptState::parse(s).ok_or_else(|| corrupt("attempt state", s))
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {value:?}"))
}

/// The notification columns a finished delivery sets: `(state, delivered_at, next_attempt_at)`;
/// `None` leaves the column as it is.
pub(crate) fn delivery_effect(
    delivery: &DeliveryRecord,
    outcome: &DeliveryOutcome,
) -> (&'static str, Option<i64>, Option<i64>) {
    match outcome {
        DeliveryOutcome::Delivered => (
            notification_state_str(NotificationState::Delivered),
            Some(unix_ms(delivery.at)),
            None,
        ),
        DeliveryOutcome::Retry { next_attempt_at } => (
            notification_state_str(NotificationState::Pending),
            None,
            Some(unix_ms(*next_attempt_at)),
        ),
        DeliveryOutcome::GaveUp => (
            notification_state_str(NotificationState::Failed),
            None,
            None,
        ),
    }
}

/// One result row, read column by column (0-based).
pub(crate) trait Cols {
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn int32(&self, i: usize) -> Result<i32, StoreError>;
    fn opt_int32(&self, i: usize) -> Result<Option<i32>, StoreError>;

    fn time(&self, i: usize) -> Result<OffsetDateTime, StoreError> {
        from_unix_ms(self.int(i)?)
    }

    fn opt_time(&self, i: usize) -> Result<Option<OffsetDateTime>, StoreError> {
        self.opt_int(i)?.map(from_unix_ms).transpose()
    }
}

pub(crate) fn merchant(r: &impl Cols) -> Result<MerchantRecord, StoreError> {
    Ok(MerchantRecord {
        mchid: r.text(0)?,
        name: r.text(1)?,
        appid: r.text(2)?,
        apiv3_key: r.text(3)?,
        status: parse_merchant_status(&r.text(4)?)?,
        channel_id: r.text(5)?,
        channel_sub_mchid: r.opt_text(6)?,
        channel_sub_appid: r.opt_text(7)?,
        created_at: r.time(8)?,
    })
}

pub(crate) fn cert(r: &impl Cols) -> Result<MerchantCertRecord, StoreError> {
    Ok(MerchantCertRecord {
        mchid: r.text(0)?,
        serial_no: r.text(1)?,
        pem: r.text(2)?,
        created_at: r.time(3)?,
    })
}

pub(crate) fn platform_key(r: &impl Cols) -> Result<PlatformKeyRecord, StoreError> {
    Ok(PlatformKeyRecord {
        key_id: r.text(0)?,
        kind: parse_key_kind(&r.text(1)?)?,
        private_key_pem: r.text(2)?,
        certificate_pem: r.opt_text(3)?,
        created_at: r.time(4)?,
    })
}

/// The order in columns `at..at + ORDER_COL_COUNT`.
pub(crate) fn order(r: &impl Cols, at: usize) -> Result<OrderRecord, StoreError> {
    Ok(OrderRecord {
        transaction_id: r.text(at)?,
        mchid: r.text(at + 1)?,
        out_trade_no: r.text(at + 2)?,
        appid: r.text(at + 3)?,
        trade_type: r.text(at + 4)?,
        state: parse_order_state(&r.text(at + 5)?)?,
        description: r.text(at + 6)?,
        attach: r.opt_text(at + 7)?,
        notify_url: r.text(at + 8)?,
        total_fen: r.int(at + 9)?,
        currency: r.text(at + 10)?,
        payer_openid: r.opt_text(at + 11)?,
        time_expire: r.time(at + 12)?,
        fingerprint: r.text(at + 13)?,
        request_json: r.text(at + 14)?,
        created_at: r.time(at + 15)?,
        updated_at: r.time(at + 16)?,
        success_time: r.opt_time(at + 17)?,
        bank_type: r.opt_text(at + 18)?,
        version: r.int(at + 19)?,
        pricing: crate::OrderPricing {
            fee_rate_ppm: r.int(at + 20)?,
            fee_fen: r.int(at + 21)?,
            channel_cost_ppm: r.int(at + 22)?,
            channel_cost_fen: r.int(at + 23)?,
        },
        profit_sharing: r.int(at + 24)? != 0,
    })
}

/// The attempt in the 17 columns from `at`.
pub(crate) fn attempt(r: &impl Cols, at: usize) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt_id: r.text(at)?,
        transaction_id: r.text(at + 1)?,
        seq: r.int32(at + 2)?,
        channel_id: r.text(at + 3)?,
        state: parse_attempt_state(&r.text(at + 4)?)?,
        prepay_id: r.opt_text(at + 5)?,
        code_url: r.opt_text(at + 6)?,
        h5_url: r.opt_text(at + 7)?,
        prepay_expires_at: r.opt_time(at + 8)?,
        channel_transaction_id: r.opt_text(at + 9)?,
        error_code: r.opt_text(at + 10)?,
        error_message: r.opt_text(at + 11)?,
        decision: r.opt_text(at + 12)?,
        created_at: r.time(at + 13)?,
        updated_at: r.time(at + 14)?,
        last_polled_at: r.opt_time(at + 15)?,
        next_poll_at: r.opt_time(at + 16)?,
    })
}

pub(crate) fn risk_decision(r: &impl Cols) -> Result<crate::RiskDecisionRecord, StoreError> {
    Ok(crate::RiskDecisionRecord {
        id: r.text(0)?,
        mchid: r.text(1)?,
        kind: r.text(2)?,
        reference: r.text(3)?,
        transaction_id: r.opt_text(4)?,
        action: r.text(5)?,
        score: r.int(6)?,
        fired_json: r.text(7)?,
        rules_version: r.int(8)?,
        at: r.time(9)?,
    })
}

pub(crate) fn risk_rule_set(r: &impl Cols) -> Result<crate::RiskRuleSetRecord, StoreError> {
    Ok(crate::RiskRuleSetRecord {
        version: r.int(0)?,
        rules_json: r.text(1)?,
        lists_json: r.text(2)?,
        created_by: r.text(3)?,
        created_at: r.time(4)?,
        comment: r.text(5)?,
    })
}

pub(crate) fn risk_rule_audit(r: &impl Cols) -> Result<crate::RiskRuleAuditRecord, StoreError> {
    Ok(crate::RiskRuleAuditRecord {
        version: r.int(0)?,
        author: r.text(1)?,
        at: r.time(2)?,
        comment: r.text(3)?,
        changes_json: r.text(4)?,
    })
}

/// The refusal of a save whose version is not the next one.
pub(crate) fn rule_set_version_conflict(version: i64, newest: i64) -> StoreError {
    StoreError::Conflict(format!(
        "risk rule set version {version} is not the next one: the newest is {newest}"
    ))
}

pub(crate) fn repair(r: &impl Cols) -> Result<RepairRecord, StoreError> {
    Ok(RepairRecord {
        id: r.text(0)?,
        transaction_id: r.text(1)?,
        source: r.text(2)?,
        way: r.text(3)?,
        before_state: parse_order_state(&r.text(4)?)?,
        after_state: parse_order_state(&r.text(5)?)?,
        detail: r.text(6)?,
        at: r.time(7)?,
    })
}

pub(crate) fn notification(r: &impl Cols) -> Result<NotificationRecord, StoreError> {
    Ok(NotificationRecord {
        id: r.text(0)?,
        mchid: r.text(1)?,
        transaction_id: r.text(2)?,
        event_type: r.text(3)?,
        url: r.text(4)?,
        plaintext: r.text(5)?,
        state: parse_notification_state(&r.text(6)?)?,
        attempts: r.int32(7)?,
        next_attempt_at: r.time(8)?,
        lease_until: r.opt_time(9)?,
        created_at: r.time(10)?,
        delivered_at: r.opt_time(11)?,
        answer_serial: r.opt_text(12)?,
    })
}

pub(crate) fn delivery(r: &impl Cols) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        notification_id: r.text(0)?,
        attempt: r.int32(1)?,
        at: r.time(2)?,
        http_status: r.opt_int32(3)?,
        error: r.opt_text(4)?,
        duration_ms: r.int(5)?,
    })
}

/// The order in which claimed notifications are handed out (a `RETURNING` clause has none).
pub(crate) fn sort_claimed(rows: &mut [NotificationRecord]) {
    rows.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
}

/// `a,b,c` → `,A,B,C,`-style list the SQLite CAS matches a state against with `instr`.
pub(crate) fn state_list(states: &[AttemptState]) -> String {
    let mut s = String::from(",");
    for st in states {
        s.push_str(st.as_str());
        s.push(',');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_floors_and_handles_negative_times() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(unix_ms(t), 1_700_000_000_123);
        assert_eq!(from_unix_ms(unix_ms(t)).unwrap(), truncate_to_ms(t));
        let before_epoch = OffsetDateTime::from_unix_timestamp_nanos(-1_500_000).unwrap();
        assert_eq!(unix_ms(before_epoch), -2);
        assert!(from_unix_ms(i64::MAX).is_err());
    }

    #[test]
    fn enum_strings_round_trip() {
        for s in [MerchantStatus::Active, MerchantStatus::Disabled] {
            assert_eq!(parse_merchant_status(merchant_status_str(s)).unwrap(), s);
        }
        for k in [PlatformKeyKind::Certificate, PlatformKeyKind::PublicKey] {
            assert_eq!(parse_key_kind(key_kind_str(k)).unwrap(), k);
        }
        for n in [
            NotificationState::Pending,
            NotificationState::Delivered,
            NotificationState::Failed,
        ] {
            assert_eq!(
                parse_notification_state(notification_state_str(n)).unwrap(),
                n
            );
        }
        assert!(matches!(
            parse_order_state("PAID"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            parse_attempt_state(""),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn qualified_prefixes_every_column() {
        assert_eq!(qualified("o", "a, b,c"), "o.a, o.b, o.c");
        assert_eq!(ORDER_COLS.split(',').count(), ORDER_COL_COUNT);
        assert_eq!(
            state_list(&[AttemptState::Created, AttemptState::Unknown]),
            ",CREATED,UNKNOWN,"
        );
        assert_eq!(state_list(&[]), ",");
    }
}
