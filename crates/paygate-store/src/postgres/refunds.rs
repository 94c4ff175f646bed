//! The refunds' SQL on PostgreSQL. Each writing method is one transaction. Two refunds of one
//! order serialize on the order's row lock, which the reservation (`UPDATE orders …`) takes
//! first; the refund key's unique index is taken second, so every transaction locks in the
//! same order and none can deadlock another.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use super::{decode_all, end_tx, insert_notification, insert_repair, pg_err, update_attempt};
use crate::codec::{opt_ms, unix_ms};
use crate::refunds::{self, REFUND_COLS};
use crate::{
    CreateRefund, DuplicatePayment, RefundChange, RefundKind, RefundRecord, RefundState, StoreError,
};

type Result<T> = std::result::Result<T, StoreError>;

fn decode(r: &PgRow) -> Result<RefundRecord> {
    refunds::refund(r)
}

pub(super) async fn create_refund(pool: &PgPool, r: &RefundRecord) -> Result<CreateRefund> {
    refunds::check_merchant_kind(r)?;
    let mut tx = pool.begin().await.map_err(pg_err)?;
    let step = async {
        if !reserve_and_insert(&mut tx, r).await? {
            return Ok((None, false));
        }
        // The ledger's reservation, in the same transaction (helper LEDGER).
        if !super::ledger::reserve_refund(&mut tx, r).await? {
            return Ok((Some(CreateRefund::BalanceShort), false));
        }
        Ok((Some(CreateRefund::Created), true))
    }
    .await;
    if let Some(answer) = end_tx(tx, step).await? {
        return Ok(answer);
    }
    // Decided after the rollback, on what the other transactions committed (READ COMMITTED):
    // the key first, so a repeated request answers with its refund.
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    if let Some(existing) = by_key(&mut conn, &r.mchid, &r.out_refund_no).await? {
        return Ok(CreateRefund::Exists(Box::new(existing)));
    }
    Ok(refunds::refusal(
        order_amounts(&mut conn, &r.transaction_id).await?,
    ))
}

/// True when both writes landed; false (the caller rolls back) when the reservation found
/// nothing to update or the key was taken.
async fn reserve_and_insert(conn: &mut PgConnection, r: &RefundRecord) -> Result<bool> {
    let reserved = sqlx::query(
        "UPDATE orders SET refunded_fen = refunded_fen + $2, version = version + 1, updated_at = $3
         WHERE transaction_id = $1 AND state IN ('SUCCESS', 'REFUND')
           AND refunded_fen + shared_fen + $2 <= total_fen",
    )
    .bind(&r.transaction_id)
    .bind(r.amount_fen)
    .bind(unix_ms(r.created_at))
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?
    .rows_affected();
    if reserved == 0 {
        return Ok(false);
    }
    Ok(insert_refund(conn, r).await? > 0)
}

/// Inserts a refund row; 0 when `(mchid, out_refund_no)` is taken.
async fn insert_refund(conn: &mut PgConnection, r: &RefundRecord) -> Result<u64> {
    // ON CONFLICT covers the idempotency key only; a concurrent insert of the same key makes
    // this wait for it, then do nothing.
    Ok(sqlx::query(
        "INSERT INTO refunds (refund_id, mchid, out_refund_no, transaction_id, out_trade_no, attempt_id,
             channel_id, state, amount_fen, total_fen, currency, reason, notify_url, fingerprint, request_json,
             channel_refund_id, user_received_account, funds_account, error_code, error_message, created_at,
             updated_at, success_time, last_polled_at, version, kind)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
             $21, $22, $23, $24, $25, $26)
         ON CONFLICT (mchid, out_refund_no) DO NOTHING",
    )
    .bind(&r.refund_id)
    .bind(&r.mchid)
    .bind(&r.out_refund_no)
    .bind(&r.transaction_id)
    .bind(&r.out_trade_no)
    .bind(&r.attempt_id)
    .bind(&r.channel_id)
    .bind(r.state.as_str())
    .bind(r.amount_fen)
    .bind(r.total_fen)
    .bind(&r.currency)
    .bind(&r.reason)
    .bind(&r.notify_url)
    .bind(&r.fingerprint)
    .bind(&r.request_json)
    .bind(&r.channel_refund_id)
    .bind(&r.user_received_account)
    .bind(&r.funds_account)
    .bind(&r.error_code)
    .bind(&r.error_message)
    .bind(unix_ms(r.created_at))
    .bind(unix_ms(r.updated_at))
    .bind(opt_ms(r.success_time))
    .bind(opt_ms(r.last_polled_at))
    .bind(r.version)
    .bind(r.kind.as_str())
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?
    .rows_affected())
}

async fn order_amounts(
    conn: &mut PgConnection,
    transaction_id: &str,
) -> Result<Option<(String, i64, i64)>> {
    let row = sqlx::query(
        "SELECT state, total_fen, refunded_fen + shared_fen FROM orders WHERE transaction_id = $1",
    )
    .bind(transaction_id)
    .fetch_optional(conn)
    .await
    .map_err(pg_err)?;
    row.map(|r| {
        Ok((
            r.try_get(0).map_err(pg_err)?,
            r.try_get(1).map_err(pg_err)?,
            r.try_get(2).map_err(pg_err)?,
        ))
    })
    .transpose()
}

async fn by_key(
    conn: &mut PgConnection,
    mchid: &str,
    out_refund_no: &str,
) -> Result<Option<RefundRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {REFUND_COLS} FROM refunds WHERE mchid = $1 AND out_refund_no = $2"
    ))
    .bind(mchid)
    .bind(out_refund_no)
    .fetch_optional(conn)
    .await
    .map_err(pg_err)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn get_refund(
    pool: &PgPool,
    mchid: &str,
    out_refund_no: &str,
) -> Result<Option<RefundRecord>> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    by_key(&mut conn, mchid, out_refund_no).await
}

pub(super) async fn get_refund_by_id(
    pool: &PgPool,
    refund_id: &str,
) -> Result<Option<RefundRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {REFUND_COLS} FROM refunds WHERE refund_id = $1"
    ))
    .bind(refund_id)
    .fetch_optional(pool)
    .await
    .map_err(pg_err)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn refunds_of(pool: &PgPool, transaction_id: &str) -> Result<Vec<RefundRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {REFUND_COLS} FROM refunds WHERE transaction_id = $1 ORDER BY created_at, refund_id"
    ))
    .bind(transaction_id)
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, decode)
}

pub(super) async fn duplicate_refunds_open(pool: &PgPool, limit: u32) -> Result<Vec<RefundRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {REFUND_COLS} FROM refunds {}",
        refunds::DUPLICATES_OPEN_SQL.replace("?1", "$1")
    ))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, decode)
}

pub(super) async fn refunded_fen(pool: &PgPool, transaction_id: &str) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT refunded_fen FROM orders WHERE transaction_id = $1")
        .bind(transaction_id)
        .fetch_optional(pool)
        .await
        .map_err(pg_err)
}

pub(super) async fn apply_refund_change(pool: &PgPool, c: &RefundChange) -> Result<bool> {
    refunds::check_move(c)?;
    let mut tx = pool.begin().await.map_err(pg_err)?;
    let step = apply(&mut tx, c).await.map(|applied| (applied, applied));
    end_tx(tx, step).await
}

/// The duplicate payment's facts in one transaction: attempt CAS, refund, repair, ledger.
pub(super) async fn record_duplicate_payment(pool: &PgPool, d: &DuplicatePayment) -> Result<bool> {
    refunds::check_duplicate(d)?;
    let mut tx = pool.begin().await.map_err(pg_err)?;
    let step = async {
        if !update_attempt(&mut tx, &d.attempt, Some(&d.refund.transaction_id)).await? {
            return Ok((false, false));
        }
        if insert_refund(&mut tx, &d.refund).await? == 0 {
            return Err(StoreError::Database(format!(
                "duplicate payment on {}: its refund is there already",
                d.attempt.attempt_id
            )));
        }
        insert_repair(&mut tx, &d.repair).await?;
        let posting = crate::ledger::duplicate_posting(&d.refund)?;
        super::ledger::apply_posting(
            &mut tx,
            &posting,
            crate::ledger::now_ms(d.refund.created_at),
        )
        .await?;
        Ok((true, true))
    }
    .await;
    end_tx(tx, step).await
}

/// Refund CAS, the order's side, the outbox row. Ok(false) when the CAS did not match: the
/// caller rolls back.
async fn apply(conn: &mut PgConnection, c: &RefundChange) -> Result<bool> {
    let moved = sqlx::query(
        "UPDATE refunds SET state = $3, version = version + 1,
             channel_refund_id = COALESCE($4, channel_refund_id),
             user_received_account = COALESCE($5, user_received_account),
             funds_account = COALESCE($6, funds_account),
             success_time = COALESCE($7, success_time),
             error_code = COALESCE($8, error_code),
             error_message = COALESCE($9, error_message),
             updated_at = $10
         WHERE refund_id = $1 AND state = $2
         RETURNING transaction_id, amount_fen, kind",
    )
    .bind(&c.refund_id)
    .bind(c.expected_state.as_str())
    .bind(c.new_state.as_str())
    .bind(&c.channel_refund_id)
    .bind(&c.user_received_account)
    .bind(&c.funds_account)
    .bind(opt_ms(c.success_time))
    .bind(&c.error_code)
    .bind(&c.error_message)
    .bind(unix_ms(c.updated_at))
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_err)?;
    let Some(row) = moved else {
        return Ok(false);
    };
    let transaction_id: String = row.try_get(0).map_err(pg_err)?;
    let amount_fen: i64 = row.try_get(1).map_err(pg_err)?;
    let kind: String = row.try_get(2).map_err(pg_err)?;
    // A duplicate payment's refund is not the order's: nothing of the order moves.
    let merchants = kind == RefundKind::Merchant.as_str();
    if merchants && c.new_state == RefundState::Closed {
        let released = sqlx::query(
            "UPDATE orders SET refunded_fen = refunded_fen - $2, version = version + 1, updated_at = $3
             WHERE transaction_id = $1 AND refunded_fen >= $2",
        )
        .bind(&transaction_id)
        .bind(amount_fen)
        .bind(unix_ms(c.updated_at))
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?
        .rows_affected();
        if released == 0 {
            return Err(StoreError::Database(format!(
                "order {transaction_id}: refunded_fen is below the amount of refund {}",
                c.refund_id
            )));
        }
    }
    if merchants && c.new_state.is_accepted() {
        sqlx::query(
            "UPDATE orders SET state = 'REFUND', version = version + 1, updated_at = $2
             WHERE transaction_id = $1 AND state = 'SUCCESS'",
        )
        .bind(&transaction_id)
        .bind(unix_ms(c.updated_at))
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    }
    if let Some(n) = &c.notification {
        insert_notification(conn, n).await?;
    }
    if c.new_state.is_final() {
        // The ledger: post (SUCCESS) or void (CLOSED) the reservation (helper LEDGER).
        let row = sqlx::query(&format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE refund_id = $1"
        ))
        .bind(&c.refund_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(pg_err)?;
        super::ledger::settle_refund(conn, &decode(&row)?, c.new_state, c.updated_at).await?;
    }
    Ok(true)
}

pub(super) async fn refunds_to_poll(
    pool: &PgPool,
    polled_before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<RefundRecord>> {
    // The state list is spelled as in refunds_poll_idx's WHERE, so the partial index applies;
    // the age bound leaves a refund its creating request's own channel call.
    let rows = sqlx::query(&format!(
        "SELECT {REFUND_COLS} FROM refunds
         WHERE state IN ('CREATED', 'PROCESSING')
           AND created_at < $1 AND (last_polled_at IS NULL OR last_polled_at < $1)
         ORDER BY last_polled_at NULLS FIRST, created_at, refund_id
         LIMIT $2"
    ))
    .bind(unix_ms(polled_before))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, decode)
}

pub(super) async fn mark_refund_polled(
    pool: &PgPool,
    refund_id: &str,
    at: OffsetDateTime,
) -> Result<bool> {
    let done = sqlx::query("UPDATE refunds SET last_polled_at = $2 WHERE refund_id = $1")
        .bind(refund_id)
        .bind(unix_ms(at))
        .execute(pool)
        .await
        .map_err(pg_err)?;
    Ok(done.rows_affected() > 0)
}
