//! The refunds' SQL on SQLite. Writes run on the one writer thread inside their own savepoint,
//! so each function below is one all-or-nothing step of the group commit.

use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::super::threads::Done;
use super::{execute, first, insert_notification, rows};
use crate::codec::{opt_ms, unix_ms};
use crate::refunds::{self, REFUND_COLS};
use crate::{
    CreateRefund, DuplicatePayment, RefundChange, RefundKind, RefundRecord, RefundState, StoreError,
};

type Result<T> = std::result::Result<T, StoreError>;

/// Reserve, then insert: a refused reservation or a taken key rolls the command back whole.
pub(in crate::sqlite) fn create_refund(
    conn: &Connection,
    r: &RefundRecord,
) -> Result<Done<CreateRefund>> {
    refunds::check_merchant_kind(r)?;
    let reserved = execute(
        conn,
        "UPDATE orders SET refunded_fen = refunded_fen + ?2, version = version + 1, updated_at = ?3
         WHERE transaction_id = ?1 AND state IN ('SUCCESS', 'REFUND')
           AND refunded_fen + shared_fen + ?2 <= total_fen",
        params![r.transaction_id, r.amount_fen, unix_ms(r.created_at)],
    )?;
    if reserved == 0 {
        // The key decides first: a repeated request answers with its refund even when the
        // order has nothing left.
        if let Some(existing) = get_refund(conn, &r.mchid, &r.out_refund_no)? {
            return Ok(Done::undo(CreateRefund::Exists(Box::new(existing))));
        }
        return Ok(Done::undo(refunds::refusal(order_amounts(
            conn,
            &r.transaction_id,
        )?)));
    }
    let inserted = insert_refund(conn, r)?;
    if inserted == 0 {
        let existing = get_refund(conn, &r.mchid, &r.out_refund_no)?.ok_or_else(|| {
            StoreError::Database(format!(
                "refund ({}, {}) conflicted but is not there",
                r.mchid, r.out_refund_no
            ))
        })?;
        return Ok(Done::undo(CreateRefund::Exists(Box::new(existing))));
    }
    // The ledger's reservation, in the same savepoint (helper LEDGER).
    if !crate::sqlite::ledger::reserve_refund(conn, r)? {
        return Ok(Done::undo(CreateRefund::BalanceShort));
    }
    Ok(Done::keep(CreateRefund::Created))
}

/// Inserts a refund row; 0 when `(mchid, out_refund_no)` is taken.
fn insert_refund(conn: &Connection, r: &RefundRecord) -> Result<usize> {
    execute(
        conn,
        "INSERT INTO refunds (refund_id, mchid, out_refund_no, transaction_id, out_trade_no, attempt_id,
             channel_id, state, amount_fen, total_fen, currency, reason, notify_url, fingerprint, request_json,
             channel_refund_id, user_received_account, funds_account, error_code, error_message, created_at,
             updated_at, success_time, last_polled_at, version, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
             ?21, ?22, ?23, ?24, ?25, ?26)
         ON CONFLICT (mchid, out_refund_no) DO NOTHING",
        params![
            r.refund_id,
            r.mchid,
            r.out_refund_no,
            r.transaction_id,
            r.out_trade_no,
            r.attempt_id,
            r.channel_id,
            r.state.as_str(),
            r.amount_fen,
            r.total_fen,
            r.currency,
            r.reason,
            r.notify_url,
            r.fingerprint,
            r.request_json,
            r.channel_refund_id,
            r.user_received_account,
            r.funds_account,
            r.error_code,
            r.error_message,
            unix_ms(r.created_at),
            unix_ms(r.updated_at),
            opt_ms(r.success_time),
            opt_ms(r.last_polled_at),
            r.version,
            r.kind.as_str()
        ],
    )
}

fn order_amounts(conn: &Connection, transaction_id: &str) -> Result<Option<(String, i64, i64)>> {
    first(
        conn,
        "SELECT state, total_fen, refunded_fen + shared_fen FROM orders WHERE transaction_id = ?1",
        [transaction_id],
        |row| {
            Ok((
                row.get(0).map_err(super::super::sqlite_err)?,
                row.get(1).map_err(super::super::sqlite_err)?,
                row.get(2).map_err(super::super::sqlite_err)?,
            ))
        },
    )
}

pub(in crate::sqlite) fn get_refund(
    conn: &Connection,
    mchid: &str,
    out_refund_no: &str,
) -> Result<Option<RefundRecord>> {
    first(
        conn,
        &format!("SELECT {REFUND_COLS} FROM refunds WHERE mchid = ?1 AND out_refund_no = ?2"),
        [mchid, out_refund_no],
        |r| refunds::refund(r),
    )
}

pub(in crate::sqlite) fn get_refund_by_id(
    conn: &Connection,
    refund_id: &str,
) -> Result<Option<RefundRecord>> {
    first(
        conn,
        &format!("SELECT {REFUND_COLS} FROM refunds WHERE refund_id = ?1"),
        [refund_id],
        |r| refunds::refund(r),
    )
}

pub(in crate::sqlite) fn refunds_of(
    conn: &Connection,
    transaction_id: &str,
) -> Result<Vec<RefundRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE transaction_id = ?1 ORDER BY created_at, refund_id"
        ),
        [transaction_id],
        |r| refunds::refund(r),
    )
}

pub(in crate::sqlite) fn duplicate_refunds_open(
    conn: &Connection,
    limit: u32,
) -> Result<Vec<RefundRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {REFUND_COLS} FROM refunds {}",
            refunds::DUPLICATES_OPEN_SQL
        ),
        [i64::from(limit)],
        |r| refunds::refund(r),
    )
}

pub(in crate::sqlite) fn refunded_fen(
    conn: &Connection,
    transaction_id: &str,
) -> Result<Option<i64>> {
    first(
        conn,
        "SELECT refunded_fen FROM orders WHERE transaction_id = ?1",
        [transaction_id],
        |r| r.get(0).map_err(super::super::sqlite_err),
    )
}

/// Refund CAS, the order's side, the outbox row: all kept or all rolled back.
pub(in crate::sqlite) fn apply_refund_change(
    conn: &Connection,
    c: &RefundChange,
) -> Result<Done<bool>> {
    refunds::check_move(c)?;
    let moved: Option<(String, i64, String)> = first(
        conn,
        "UPDATE refunds SET state = ?3, version = version + 1,
             channel_refund_id = COALESCE(?4, channel_refund_id),
             user_received_account = COALESCE(?5, user_received_account),
             funds_account = COALESCE(?6, funds_account),
             success_time = COALESCE(?7, success_time),
             error_code = COALESCE(?8, error_code),
             error_message = COALESCE(?9, error_message),
             updated_at = ?10
         WHERE refund_id = ?1 AND state = ?2
         RETURNING transaction_id, amount_fen, kind",
        params![
            c.refund_id,
            c.expected_state.as_str(),
            c.new_state.as_str(),
            c.channel_refund_id,
            c.user_received_account,
            c.funds_account,
            opt_ms(c.success_time),
            c.error_code,
            c.error_message,
            unix_ms(c.updated_at)
        ],
        |r| {
            Ok((
                r.get(0).map_err(super::super::sqlite_err)?,
                r.get(1).map_err(super::super::sqlite_err)?,
                r.get(2).map_err(super::super::sqlite_err)?,
            ))
        },
    )?;
    let Some((transaction_id, amount_fen, kind)) = moved else {
        return Ok(Done::undo(false));
    };
    // A duplicate payment's refund is not the order's: nothing of the order moves.
    let merchants = kind == RefundKind::Merchant.as_str();
    if merchants && c.new_state == RefundState::Closed {
        let released = execute(
            conn,
            "UPDATE orders SET refunded_fen = refunded_fen - ?2, version = version + 1, updated_at = ?3
             WHERE transaction_id = ?1 AND refunded_fen >= ?2",
            params![transaction_id, amount_fen, unix_ms(c.updated_at)],
        )?;
        if released == 0 {
            return Err(StoreError::Database(format!(
                "order {transaction_id}: refunded_fen is below the amount of refund {}",
                c.refund_id
            )));
        }
    }
    if merchants && c.new_state.is_accepted() {
        execute(
            conn,
            "UPDATE orders SET state = 'REFUND', version = version + 1, updated_at = ?2
             WHERE transaction_id = ?1 AND state = 'SUCCESS'",
            params![transaction_id, unix_ms(c.updated_at)],
        )?;
    }
    if let Some(n) = &c.notification {
        insert_notification(conn, n)?;
    }
    // The ledger: post (SUCCESS) or void (CLOSED) the reservation (helper LEDGER).
    crate::sqlite::ledger::settle_refund(conn, &c.refund_id, c.new_state, c.updated_at)?;
    Ok(Done::keep(true))
}

/// The duplicate payment's facts, all kept or all rolled back: attempt CAS, refund, repair,
/// ledger.
pub(in crate::sqlite) fn record_duplicate_payment(
    conn: &Connection,
    d: &DuplicatePayment,
) -> Result<Done<bool>> {
    refunds::check_duplicate(d)?;
    if !super::update_attempt(conn, &d.attempt, Some(&d.refund.transaction_id))? {
        return Ok(Done::undo(false));
    }
    if insert_refund(conn, &d.refund)? == 0 {
        return Err(StoreError::Database(format!(
            "duplicate payment on {}: its refund is there already",
            d.attempt.attempt_id
        )));
    }
    super::insert_repair(conn, &d.repair)?;
    let posting = crate::ledger::duplicate_posting(&d.refund)?;
    crate::sqlite::ledger::apply_posting(
        conn,
        &posting,
        crate::ledger::now_ms(d.refund.created_at),
    )?;
    Ok(Done::keep(true))
}

pub(in crate::sqlite) fn refunds_to_poll(
    conn: &Connection,
    polled_before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<RefundRecord>> {
    // The state list is spelled as in refunds_poll_idx's WHERE, so SQLite uses the partial
    // index; the age bound leaves a refund its creating request's own channel call.
    rows(
        conn,
        &format!(
            "SELECT {REFUND_COLS} FROM refunds
             WHERE state IN ('CREATED', 'PROCESSING')
               AND created_at < ?1 AND (last_polled_at IS NULL OR last_polled_at < ?1)
             ORDER BY last_polled_at, created_at, refund_id
             LIMIT ?2"
        ),
        params![unix_ms(polled_before), limit],
        |r| refunds::refund(r),
    )
}

pub(in crate::sqlite) fn mark_refund_polled(
    conn: &Connection,
    refund_id: &str,
    at: OffsetDateTime,
) -> Result<bool> {
    let n = execute(
        conn,
        "UPDATE refunds SET last_polled_at = ?2 WHERE refund_id = ?1",
        params![refund_id, unix_ms(at)],
    )?;
    Ok(n > 0)
}
