//! The SQL of the SQLite backend, one function per store operation. Write functions run on
//! the writer thread inside their own savepoint (see `threads`); read functions on a reader.

use std::sync::LazyLock;

use rusqlite::{Connection, Params, params};
use time::OffsetDateTime;

use super::sqlite_err;
use super::threads::Done;
use crate::codec::{
    self, ATTEMPT_COLS, CERT_COLS, DELIVERY_COLS, MERCHANT_COLS, NOTIFICATION_COLS,
    ORDER_COL_COUNT, ORDER_COLS, PLATFORM_KEY_COLS, REPAIR_COLS, RISK_COLS, RULE_AUDIT_COLS,
    RULE_SET_COLS, opt_ms, unix_ms,
};
use crate::{
    AttemptChange, AttemptRecord, ChannelVolume, CreateOrder, DeliveryRecord, FinishedDelivery,
    MerchantCertRecord, MerchantRecord, MerchantStatus, NotificationRecord, NotificationState,
    OrderChange, OrderRecord, OrderState, PlatformKeyRecord, RepairRecord, StoreError,
};

type Result<T> = std::result::Result<T, StoreError>;

/// `SELECT <order cols>, <attempt cols> FROM attempts a JOIN orders o …` — the head of the joins.
static ORDER_ATTEMPT_SELECT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {} FROM attempts a JOIN orders o ON o.transaction_id = a.transaction_id",
        codec::qualified("o", ORDER_COLS),
        codec::qualified("a", ATTEMPT_COLS)
    )
});

fn rows<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_err)?;
    let mut rows = stmt.query(params).map_err(sqlite_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_err)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn first<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_err)?;
    let mut rows = stmt.query(params).map_err(sqlite_err)?;
    rows.next().map_err(sqlite_err)?.map(decode).transpose()
}

fn execute<P: Params>(conn: &Connection, sql: &str, params: P) -> Result<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map_err(sqlite_err)
}

// Refunds live in their own file; they share this file's helpers.
pub(super) mod refunds;
// Bills (bills.rs), likewise.
pub(super) mod bills;
// Profit sharing (sharing.rs; helper SHARING), likewise.
pub(super) mod sharing;

// ---- merchants ----

pub(super) fn insert_merchant(
    conn: &Connection,
    m: &MerchantRecord,
    cert: &MerchantCertRecord,
) -> Result<()> {
    execute(
        conn,
        "INSERT INTO merchants (mchid, name, appid, apiv3_key, status, channel_id, channel_sub_mchid,
             channel_sub_appid, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            m.mchid,
            m.name,
            m.appid,
            m.apiv3_key,
            codec::merchant_status_str(m.status),
            m.channel_id,
            m.channel_sub_mchid,
            m.channel_sub_appid,
            unix_ms(m.created_at)
        ],
    )?;
    insert_cert(conn, cert)
}

pub(super) fn insert_cert(conn: &Connection, c: &MerchantCertRecord) -> Result<()> {
    execute(
        conn,
        "INSERT INTO merchant_certs (mchid, serial_no, pem, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![c.mchid, c.serial_no, c.pem, unix_ms(c.created_at)],
    )
    .map(|_| ())
}

pub(super) fn get_merchant(conn: &Connection, mchid: &str) -> Result<Option<MerchantRecord>> {
    first(
        conn,
        &format!("SELECT {MERCHANT_COLS} FROM merchants WHERE mchid = ?1"),
        [mchid],
        |r| codec::merchant(r),
    )
}

pub(super) fn list_merchants(conn: &Connection) -> Result<Vec<MerchantRecord>> {
    rows(
        conn,
        &format!("SELECT {MERCHANT_COLS} FROM merchants ORDER BY mchid"),
        [],
        |r| codec::merchant(r),
    )
}

pub(super) fn set_merchant_status(
    conn: &Connection,
    mchid: &str,
    status: MerchantStatus,
) -> Result<bool> {
    let n = execute(
        conn,
        "UPDATE merchants SET status = ?2 WHERE mchid = ?1",
        params![mchid, codec::merchant_status_str(status)],
    )?;
    Ok(n > 0)
}

pub(super) fn merchant_certs(conn: &Connection, mchid: &str) -> Result<Vec<MerchantCertRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {CERT_COLS} FROM merchant_certs WHERE mchid = ?1 ORDER BY created_at, serial_no"
        ),
        [mchid],
        |r| codec::cert(r),
    )
}

// ---- platform keys ----

pub(super) fn insert_platform_key(conn: &Connection, k: &PlatformKeyRecord) -> Result<()> {
    execute(
        conn,
        "INSERT INTO platform_keys (key_id, kind, private_key_pem, certificate_pem, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            k.key_id,
            codec::key_kind_str(k.kind),
            k.private_key_pem,
            k.certificate_pem,
            unix_ms(k.created_at)
        ],
    )
    .map(|_| ())
}

/// A rotation: the key takes the next generation of its kind in the same statement, so two
/// nodes rotating at once cannot both add one (the UNIQUE (kind, generation) refuses the second).
pub(super) fn rotate_platform_key(conn: &Connection, k: &PlatformKeyRecord) -> Result<()> {
    execute(
        conn,
        "INSERT INTO platform_keys (key_id, kind, private_key_pem, certificate_pem, created_at, generation)
         SELECT ?1, ?2, ?3, ?4, ?5, COALESCE(MAX(generation), 0) + 1 FROM platform_keys WHERE kind = ?2",
        params![
            k.key_id,
            codec::key_kind_str(k.kind),
            k.private_key_pem,
            k.certificate_pem,
            unix_ms(k.created_at)
        ],
    )
    .map(|_| ())
}

pub(super) fn platform_keys(conn: &Connection) -> Result<Vec<PlatformKeyRecord>> {
    rows(
        conn,
        &format!("SELECT {PLATFORM_KEY_COLS} FROM platform_keys ORDER BY created_at, key_id"),
        [],
        |r| codec::platform_key(r),
    )
}

// ---- orders and attempts ----

pub(super) fn create_order(
    conn: &Connection,
    o: &OrderRecord,
    a: &AttemptRecord,
) -> Result<Done<CreateOrder>> {
    // Only the idempotency key is "already there, answer with it"; a clash on transaction_id
    // is a real conflict and surfaces as one.
    let inserted = execute(
        conn,
        "INSERT INTO orders (transaction_id, mchid, out_trade_no, appid, trade_type, state, description, attach,
             notify_url, total_fen, currency, payer_openid, time_expire, fingerprint, request_json, created_at,
             updated_at, success_time, bank_type, version, fee_rate_ppm, fee_fen, channel_cost_ppm,
             channel_cost_fen, profit_sharing)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
             ?21, ?22, ?23, ?24, ?25)
         ON CONFLICT (mchid, out_trade_no) DO NOTHING",
        params![
            o.transaction_id,
            o.mchid,
            o.out_trade_no,
            o.appid,
            o.trade_type,
            o.state.as_str(),
            o.description,
            o.attach,
            o.notify_url,
            o.total_fen,
            o.currency,
            o.payer_openid,
            unix_ms(o.time_expire),
            o.fingerprint,
            o.request_json,
            unix_ms(o.created_at),
            unix_ms(o.updated_at),
            opt_ms(o.success_time),
            o.bank_type,
            o.version,
            o.pricing.fee_rate_ppm,
            o.pricing.fee_fen,
            o.pricing.channel_cost_ppm,
            o.pricing.channel_cost_fen,
            i64::from(o.profit_sharing)
        ],
    )?;
    if inserted == 0 {
        let existing = get_order(conn, &o.mchid, &o.out_trade_no)?.ok_or_else(|| {
            StoreError::Database(format!(
                "order ({}, {}) conflicted but is not there",
                o.mchid, o.out_trade_no
            ))
        })?;
        return Ok(Done::undo(CreateOrder::Exists(existing)));
    }
    insert_attempt(conn, a)?;
    Ok(Done::keep(CreateOrder::Created))
}

pub(super) fn get_order(
    conn: &Connection,
    mchid: &str,
    out_trade_no: &str,
) -> Result<Option<OrderRecord>> {
    first(
        conn,
        &format!("SELECT {ORDER_COLS} FROM orders WHERE mchid = ?1 AND out_trade_no = ?2"),
        [mchid, out_trade_no],
        |r| codec::order(r, 0),
    )
}

pub(super) fn get_order_by_transaction_id(
    conn: &Connection,
    transaction_id: &str,
) -> Result<Option<OrderRecord>> {
    first(
        conn,
        &format!("SELECT {ORDER_COLS} FROM orders WHERE transaction_id = ?1"),
        [transaction_id],
        |r| codec::order(r, 0),
    )
}

pub(super) fn attempts(conn: &Connection, transaction_id: &str) -> Result<Vec<AttemptRecord>> {
    rows(
        conn,
        &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE transaction_id = ?1 ORDER BY seq"),
        [transaction_id],
        |r| codec::attempt(r, 0),
    )
}

pub(super) fn find_attempt(
    conn: &Connection,
    attempt_id: &str,
) -> Result<Option<(OrderRecord, AttemptRecord)>> {
    first(
        conn,
        &format!("{} WHERE a.attempt_id = ?1", *ORDER_ATTEMPT_SELECT),
        [attempt_id],
        order_and_attempt,
    )
}

fn order_and_attempt(r: &rusqlite::Row<'_>) -> Result<(OrderRecord, AttemptRecord)> {
    Ok((codec::order(r, 0)?, codec::attempt(r, ORDER_COL_COUNT)?))
}

pub(super) fn insert_attempt(conn: &Connection, a: &AttemptRecord) -> Result<()> {
    execute(
        conn,
        "INSERT INTO attempts (attempt_id, transaction_id, seq, channel_id, state, prepay_id, code_url, h5_url,
             prepay_expires_at, channel_transaction_id, error_code, error_message, decision, created_at,
             updated_at, last_polled_at, next_poll_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            a.attempt_id,
            a.transaction_id,
            a.seq,
            a.channel_id,
            a.state.as_str(),
            a.prepay_id,
            a.code_url,
            a.h5_url,
            opt_ms(a.prepay_expires_at),
            a.channel_transaction_id,
            a.error_code,
            a.error_message,
            a.decision,
            unix_ms(a.created_at),
            unix_ms(a.updated_at),
            opt_ms(a.last_polled_at),
            opt_ms(a.poll_schedule())
        ],
    )
    .map(|_| ())
}

/// The attempt compare-and-set, with `schedule` (a `next_poll_at` assignment or nothing) in
/// its SET list: one statement text per schedule case, so none is formatted per call.
macro_rules! update_attempt_sql {
    ($schedule:literal) => {
        concat!(
            "UPDATE attempts SET state = ?2,
             prepay_id = COALESCE(?3, prepay_id),
             code_url = COALESCE(?4, code_url),
             h5_url = COALESCE(?5, h5_url),
             prepay_expires_at = COALESCE(?6, prepay_expires_at),
             channel_transaction_id = COALESCE(?7, channel_transaction_id),
             error_code = COALESCE(?8, error_code),
             error_message = COALESCE(?9, error_message),
             last_polled_at = COALESCE(?10, last_polled_at),
             ",
            $schedule,
            "
             updated_at = ?11
         WHERE attempt_id = ?1
           AND instr(?12, ',' || state || ',') > 0
           AND (?13 IS NULL OR transaction_id = ?13)"
        )
    };
}

/// The attempt compare-and-set; with `of_order`, the attempt must also belong to that order.
///
/// SQLite rewrites an index entry whenever the UPDATE assigns one of its columns, whatever the
/// value: `next_poll_at` (the poll index) is assigned only when the schedule moves (a poll) or
/// ends (a final state), never by a CREATED -> PREPAID.
pub(super) fn update_attempt(
    conn: &Connection,
    c: &AttemptChange,
    of_order: Option<&str>,
) -> Result<bool> {
    let (sql, next) = match (c.new_state.is_pending(), opt_ms(c.next_poll_at)) {
        (false, _) => (update_attempt_sql!("next_poll_at = NULL,"), None),
        (true, Some(next)) => (update_attempt_sql!("next_poll_at = ?14,"), Some(next)),
        (true, None) => (update_attempt_sql!(""), None),
    };
    let expected = codec::state_list(&c.expected_states);
    let new_state = c.new_state.as_str();
    let prepay_expires_at = opt_ms(c.prepay_expires_at);
    let last_polled_at = opt_ms(c.last_polled_at);
    let updated_at = unix_ms(c.updated_at);
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![
        &c.attempt_id,
        &new_state,
        &c.prepay_id,
        &c.code_url,
        &c.h5_url,
        &prepay_expires_at,
        &c.channel_transaction_id,
        &c.error_code,
        &c.error_message,
        &last_polled_at,
        &updated_at,
        &expected,
        &of_order,
    ];
    if let Some(next) = &next {
        params.push(next);
    }
    let n = execute(conn, sql, params.as_slice())?;
    Ok(n > 0)
}

/// The money-safety path: order CAS, attempt CAS, outbox row, repair row — all kept or all
/// rolled back (the writer rolls this command's savepoint back on `undo` or an error).
pub(super) fn apply_order_change(conn: &Connection, c: &OrderChange) -> Result<Done<bool>> {
    let moved = execute(
        conn,
        "UPDATE orders SET state = ?3, version = version + 1,
             success_time = COALESCE(?4, success_time),
             bank_type = COALESCE(?5, bank_type),
             payer_openid = COALESCE(?6, payer_openid),
             updated_at = ?7
         WHERE transaction_id = ?1 AND state = ?2",
        params![
            c.transaction_id,
            c.expected_state.as_str(),
            c.new_state.as_str(),
            opt_ms(c.success_time),
            c.bank_type,
            c.payer_openid,
            unix_ms(c.updated_at)
        ],
    )?;
    if moved == 0 {
        return Ok(Done::undo(false));
    }
    if let Some(attempt) = &c.attempt {
        if !update_attempt(conn, attempt, Some(&c.transaction_id))? {
            return Ok(Done::undo(false));
        }
    }
    if let Some(n) = &c.notification {
        insert_notification(conn, n)?;
    }
    if let Some(r) = &c.repair {
        insert_repair(conn, r)?;
    }
    if let Some(posting) = &c.ledger {
        // A refusal is an error: the writer rolls this whole change back.
        super::ledger::apply_posting(conn, posting, crate::ledger::now_ms(c.updated_at))?;
    }
    Ok(Done::keep(true))
}

fn insert_notification(conn: &Connection, n: &NotificationRecord) -> Result<()> {
    execute(
        conn,
        "INSERT INTO notifications (id, mchid, transaction_id, event_type, url, plaintext, state, attempts,
             next_attempt_at, lease_until, created_at, delivered_at, answer_serial)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            n.id,
            n.mchid,
            n.transaction_id,
            n.event_type,
            n.url,
            n.plaintext,
            codec::notification_state_str(n.state),
            n.attempts,
            unix_ms(n.next_attempt_at),
            opt_ms(n.lease_until),
            unix_ms(n.created_at),
            opt_ms(n.delivered_at),
            n.answer_serial
        ],
    )
    .map(|_| ())
}

fn insert_repair(conn: &Connection, r: &RepairRecord) -> Result<()> {
    execute(
        conn,
        "INSERT INTO order_repairs (id, transaction_id, source, way, before_state, after_state, detail, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.id,
            r.transaction_id,
            r.source,
            r.way,
            r.before_state.as_str(),
            r.after_state.as_str(),
            r.detail,
            unix_ms(r.at)
        ],
    )
    .map(|_| ())
}

pub(super) fn attempts_to_poll(
    conn: &Connection,
    due_by: OffsetDateTime,
    limit: u32,
) -> Result<Vec<(OrderRecord, AttemptRecord)>> {
    // `next_poll_at <= ?1` implies the partial index's `next_poll_at IS NOT NULL` (a test in
    // migrate.rs keeps the two together), so SQLite walks it from the earliest due; the state
    // list stays as a guard.
    rows(
        conn,
        &format!(
            "{} WHERE a.state IN ('CREATED', 'PREPAID', 'UNKNOWN')
               AND o.state IN (?2, ?3)
               AND a.next_poll_at <= ?1
             ORDER BY a.next_poll_at, a.attempt_id
             LIMIT ?4",
            *ORDER_ATTEMPT_SELECT
        ),
        params![
            unix_ms(due_by),
            OrderState::Notpay.as_str(),
            OrderState::Payerror.as_str(),
            limit
        ],
        order_and_attempt,
    )
}

pub(super) fn insert_risk_decision(conn: &Connection, d: &crate::RiskDecisionRecord) -> Result<()> {
    execute(
        conn,
        "INSERT INTO risk_decisions (id, mchid, kind, reference, transaction_id, action, score, fired_json, rules_version, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            d.id,
            d.mchid,
            d.kind,
            d.reference,
            d.transaction_id,
            d.action,
            d.score,
            d.fired_json,
            d.rules_version,
            unix_ms(d.at)
        ],
    )
    .map(|_| ())
}

pub(super) fn risk_decisions(
    conn: &Connection,
    mchid: &str,
    reference: &str,
) -> Result<Vec<crate::RiskDecisionRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {RISK_COLS} FROM risk_decisions WHERE mchid = ?1 AND reference = ?2 ORDER BY at, id"
        ),
        [mchid, reference],
        |r| codec::risk_decision(r),
    )
}

pub(super) fn risk_decisions_by_action(
    conn: &Connection,
    action: &str,
    limit: u32,
) -> Result<Vec<crate::RiskDecisionRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {RISK_COLS} FROM risk_decisions WHERE action = ?1 ORDER BY at DESC, id DESC LIMIT ?2"
        ),
        params![action, limit],
        |r| codec::risk_decision(r),
    )
}

fn newest_risk_rule_set_version(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(version), 0) FROM risk_rule_sets")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sqlite_err)
}

/// The version check and both inserts run on the one writer, so nothing can land in between.
pub(super) fn insert_risk_rule_set(
    conn: &Connection,
    set: &crate::RiskRuleSetRecord,
    changes_json: &str,
) -> Result<()> {
    let newest = newest_risk_rule_set_version(conn)?;
    if set.version != newest + 1 {
        return Err(codec::rule_set_version_conflict(set.version, newest));
    }
    execute(
        conn,
        "INSERT INTO risk_rule_sets (version, rules_json, lists_json, created_by, created_at, comment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            set.version,
            set.rules_json,
            set.lists_json,
            set.created_by,
            unix_ms(set.created_at),
            set.comment
        ],
    )?;
    execute(
        conn,
        "INSERT INTO risk_rule_audit (version, author, at, comment, changes_json)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            set.version,
            set.created_by,
            unix_ms(set.created_at),
            set.comment,
            changes_json
        ],
    )
    .map(|_| ())
}

pub(super) fn risk_rule_set_version(conn: &Connection) -> Result<i64> {
    newest_risk_rule_set_version(conn)
}

pub(super) fn risk_rule_set(
    conn: &Connection,
    version: i64,
) -> Result<Option<crate::RiskRuleSetRecord>> {
    first(
        conn,
        &format!("SELECT {RULE_SET_COLS} FROM risk_rule_sets WHERE version = ?1"),
        [version],
        |r| codec::risk_rule_set(r),
    )
}

pub(super) fn risk_rule_audit(
    conn: &Connection,
    limit: u32,
) -> Result<Vec<crate::RiskRuleAuditRecord>> {
    rows(
        conn,
        &format!("SELECT {RULE_AUDIT_COLS} FROM risk_rule_audit ORDER BY version DESC LIMIT ?1"),
        [limit],
        |r| codec::risk_rule_audit(r),
    )
}

pub(super) fn repairs(conn: &Connection, transaction_id: &str) -> Result<Vec<RepairRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {REPAIR_COLS} FROM order_repairs WHERE transaction_id = ?1 ORDER BY at, id"
        ),
        [transaction_id],
        |r| codec::repair(r),
    )
}

pub(super) fn channel_volumes(
    conn: &Connection,
    since: OffsetDateTime,
) -> Result<Vec<ChannelVolume>> {
    rows(
        conn,
        "SELECT a.channel_id, SUM(o.total_fen) FROM attempts a
           JOIN orders o ON o.transaction_id = a.transaction_id
          WHERE a.created_at >= ?1 AND a.state IN ('PREPAID', 'PAID')
          GROUP BY a.channel_id ORDER BY a.channel_id",
        [unix_ms(since)],
        |r| {
            Ok(ChannelVolume {
                channel_id: r.get(0).map_err(sqlite_err)?,
                amount_fen: r.get(1).map_err(sqlite_err)?,
            })
        },
    )
}

// ---- notifications ----

pub(super) fn claim_notifications(
    conn: &Connection,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
) -> Result<Vec<NotificationRecord>> {
    // The single writer thread makes select-and-lease atomic: no second claimer can interleave.
    let mut claimed = rows(
        conn,
        &format!(
            "UPDATE notifications SET lease_until = ?2
             WHERE id IN (
                 SELECT id FROM notifications
                 WHERE state = ?3 AND next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1)
                 ORDER BY next_attempt_at, id
                 LIMIT ?4)
             RETURNING {NOTIFICATION_COLS}"
        ),
        params![unix_ms(now), unix_ms(lease_until), codec::notification_state_str(NotificationState::Pending), limit],
        |r| codec::notification(r),
    )?;
    codec::sort_claimed(&mut claimed);
    Ok(claimed)
}

/// Each attempt in a savepoint of its own: one whose notification is gone or whose number is
/// already recorded (a conflict) is undone and skipped; any other error fails them all.
pub(super) fn finish_deliveries(conn: &Connection, done: &[FinishedDelivery]) -> Result<usize> {
    let mut recorded = 0;
    for finished in done {
        execute(conn, "SAVEPOINT delivery", [])?;
        let kept = match record_delivery(conn, finished) {
            Ok(kept) => kept,
            Err(StoreError::Conflict(_)) => false,
            Err(e) => return Err(e),
        };
        if !kept {
            execute(conn, "ROLLBACK TO delivery", [])?;
        }
        execute(conn, "RELEASE delivery", [])?;
        recorded += usize::from(kept);
    }
    Ok(recorded)
}

/// The attempt's row and its notification's next state; false if there is no such
/// notification (nothing written). The state moves only if the row is still due when it was
/// claimed: otherwise an operator re-sent it meanwhile, and the re-send stays due.
fn record_delivery(conn: &Connection, finished: &FinishedDelivery) -> Result<bool> {
    let d = &finished.delivery;
    let (state, delivered_at, next_attempt_at) = codec::delivery_effect(d, &finished.outcome);
    // Every right-hand side reads the row as it was, so both CASEs test the claimed due.
    let n = execute(
        conn,
        "UPDATE notifications SET attempts = attempts + 1, lease_until = NULL,
             state = CASE WHEN next_attempt_at = ?5 THEN ?2 ELSE state END,
             delivered_at = COALESCE(?3, delivered_at),
             next_attempt_at = CASE WHEN next_attempt_at = ?5
                 THEN COALESCE(?4, next_attempt_at) ELSE next_attempt_at END
         WHERE id = ?1",
        params![
            d.notification_id,
            state,
            delivered_at,
            next_attempt_at,
            unix_ms(finished.claimed_due)
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    execute(
        conn,
        "INSERT INTO notification_deliveries (notification_id, attempt, at, http_status, error, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![d.notification_id, d.attempt, unix_ms(d.at), d.http_status, d.error, d.duration_ms],
    )?;
    Ok(true)
}

pub(super) fn resend_notification(
    conn: &Connection,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool> {
    let n = execute(
        conn,
        "UPDATE notifications SET state = ?2,
             next_attempt_at = CASE WHEN next_attempt_at = ?3 THEN ?3 + 1 ELSE ?3 END
         WHERE id = ?1",
        params![
            id,
            codec::notification_state_str(NotificationState::Pending),
            unix_ms(now)
        ],
    )?;
    Ok(n > 0)
}

pub(super) fn get_notification(conn: &Connection, id: &str) -> Result<Option<NotificationRecord>> {
    first(
        conn,
        &format!("SELECT {NOTIFICATION_COLS} FROM notifications WHERE id = ?1"),
        [id],
        |r| codec::notification(r),
    )
}

pub(super) fn notifications_of(
    conn: &Connection,
    transaction_id: &str,
) -> Result<Vec<NotificationRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {NOTIFICATION_COLS} FROM notifications WHERE transaction_id = ?1 ORDER BY created_at, id"
        ),
        [transaction_id],
        |r| codec::notification(r),
    )
}

pub(super) fn deliveries(conn: &Connection, notification_id: &str) -> Result<Vec<DeliveryRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {DELIVERY_COLS} FROM notification_deliveries WHERE notification_id = ?1 ORDER BY attempt"
        ),
        [notification_id],
        |r| codec::delivery(r),
    )
}
