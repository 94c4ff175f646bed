//! Profit sharing's SQL on PostgreSQL (see `crate::sharing` for the money rule). Each writing
//! method is one transaction. Splits, unfreezes and refunds of one order serialize on the
//! order's row lock, which their reservation (`UPDATE orders …`) takes first; returns of one
//! share order serialize on its row lock (`SELECT … FOR UPDATE`). Keys' unique indexes come
//! second, so every transaction locks in the same order.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use super::{decode_all, end_tx, insert_notification, pg_err};
use crate::StoreError;
use crate::codec::{opt_ms, unix_ms};
use crate::sharing::{
    self, CreateShare, CreateShareReturn, RECEIVER_COLS, RETURN_COLS, ReturnState, SHARE_COLS,
    ShareAmounts, ShareChange, ShareKind, ShareLimits, ShareOrderRecord, ShareReceiverRecord,
    ShareReturnChange, ShareReturnRecord,
};

type Result<T> = std::result::Result<T, StoreError>;

// ---- receivers and configuration ----

pub(super) async fn upsert_receiver(pool: &PgPool, r: &ShareReceiverRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO share_receivers (mchid, type, account, channel_id, relation_type, custom_relation, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (mchid, type, account) DO UPDATE SET channel_id = excluded.channel_id,
             relation_type = excluded.relation_type, custom_relation = excluded.custom_relation",
    )
    .bind(&r.mchid)
    .bind(&r.r#type)
    .bind(&r.account)
    .bind(&r.channel_id)
    .bind(&r.relation_type)
    .bind(&r.custom_relation)
    .bind(unix_ms(r.created_at))
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(pg_err)
}

pub(super) async fn delete_receiver(
    pool: &PgPool,
    mchid: &str,
    r#type: &str,
    account: &str,
) -> Result<bool> {
    sqlx::query("DELETE FROM share_receivers WHERE mchid = $1 AND type = $2 AND account = $3")
        .bind(mchid)
        .bind(r#type)
        .bind(account)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(pg_err)
}

pub(super) async fn receivers(pool: &PgPool, mchid: &str) -> Result<Vec<ShareReceiverRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {RECEIVER_COLS} FROM share_receivers WHERE mchid = $1 ORDER BY created_at, type, account"
    ))
    .bind(mchid)
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, sharing::receiver)
}

pub(super) async fn receiver_users(
    pool: &PgPool,
    channel_id: &str,
    r#type: &str,
    account: &str,
) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM share_receivers WHERE channel_id = $1 AND type = $2 AND account = $3",
    )
    .bind(channel_id)
    .bind(r#type)
    .bind(account)
    .fetch_one(pool)
    .await
    .map_err(pg_err)
}

pub(super) async fn max_ratio(pool: &PgPool, mchid: &str) -> Result<Option<u32>> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT max_ratio_bp FROM share_configs WHERE mchid = $1")
            .bind(mchid)
            .fetch_optional(pool)
            .await
            .map_err(pg_err)?;
    v.map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("max_ratio_bp {v}"))))
        .transpose()
}

pub(super) async fn set_max_ratio(
    pool: &PgPool,
    mchid: &str,
    max_ratio_bp: u32,
    at: OffsetDateTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO share_configs (mchid, max_ratio_bp, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (mchid) DO UPDATE SET max_ratio_bp = excluded.max_ratio_bp, updated_at = excluded.updated_at",
    )
    .bind(mchid)
    .bind(i64::from(max_ratio_bp))
    .bind(unix_ms(at))
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(pg_err)
}

// ---- share orders ----

pub(super) async fn create_share(
    pool: &PgPool,
    r: &ShareOrderRecord,
    limits: ShareLimits,
) -> Result<CreateShare> {
    let mut tx = pool.begin().await.map_err(pg_err)?;
    let step = reserve_and_insert(&mut tx, r, limits)
        .await
        .map(|landed| (landed, landed));
    if end_tx(tx, step).await? {
        return Ok(CreateShare::Created);
    }
    // Decided after the rollback on what others committed: the key first.
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    if let Some(existing) = by_key(&mut conn, &r.mchid, &r.out_order_no).await? {
        return Ok(CreateShare::Exists(Box::new(existing)));
    }
    let (paid, amounts) = order_side(&mut conn, &r.transaction_id).await?;
    Ok(sharing::split_refusal(paid, amounts, r, limits))
}

async fn reserve_and_insert(
    conn: &mut PgConnection,
    r: &ShareOrderRecord,
    limits: ShareLimits,
) -> Result<bool> {
    let t = unix_ms(r.created_at);
    let reserved = match r.kind {
        ShareKind::Split => sqlx::query(
            "UPDATE orders SET shared_fen = shared_fen + $2, share_unfrozen = $5,
                 version = version + 1, updated_at = $3
             WHERE transaction_id = $1 AND state IN ('SUCCESS', 'REFUND') AND share_unfrozen = 0
               AND refunded_fen + shared_fen + share_released_fen + $4 + $2 <= total_fen
               AND (shared_fen + $2) * 10000 <= total_fen * $6",
        )
        .bind(&r.transaction_id)
        .bind(r.amount_fen)
        .bind(t)
        .bind(limits.fee_fen)
        .bind(i64::from(r.unfreeze_unsplit))
        .bind(i64::from(limits.max_ratio_bp)),
        // Compare-and-set on the very amount unfrozen (see the SQLite twin).
        ShareKind::Unfreeze => sqlx::query(
            "UPDATE orders SET share_unfrozen = 1, version = version + 1, updated_at = $3
             WHERE transaction_id = $1 AND state IN ('SUCCESS', 'REFUND') AND share_unfrozen = 0
               AND total_fen - $4 - refunded_fen - shared_fen - share_released_fen = $2",
        )
        .bind(&r.transaction_id)
        .bind(r.amount_fen)
        .bind(t)
        .bind(limits.fee_fen),
    }
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?
    .rows_affected();
    if reserved == 0 {
        return Ok(false);
    }
    let inserted = sqlx::query(&format!(
        "INSERT INTO share_orders ({SHARE_COLS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
         ON CONFLICT (mchid, out_order_no) DO NOTHING"
    ))
    .bind(&r.order_id)
    .bind(&r.mchid)
    .bind(&r.out_order_no)
    .bind(&r.transaction_id)
    .bind(&r.attempt_id)
    .bind(&r.channel_id)
    .bind(r.kind.as_str())
    .bind(r.state.as_str())
    .bind(r.amount_fen)
    .bind(i64::from(r.unfreeze_unsplit))
    .bind(sharing::lines_to_json(&r.receivers)?)
    .bind(&r.description)
    .bind(&r.fingerprint)
    .bind(&r.channel_order_id)
    .bind(&r.error_code)
    .bind(&r.error_message)
    .bind(unix_ms(r.created_at))
    .bind(unix_ms(r.updated_at))
    .bind(opt_ms(r.finished_at))
    .bind(opt_ms(r.last_polled_at))
    .bind(r.version)
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?
    .rows_affected();
    Ok(inserted > 0)
}

async fn order_side(
    conn: &mut PgConnection,
    transaction_id: &str,
) -> Result<(bool, Option<ShareAmounts>)> {
    let row = sqlx::query(
        "SELECT state, total_fen, refunded_fen, shared_fen, share_released_fen, share_unfrozen
         FROM orders WHERE transaction_id = $1",
    )
    .bind(transaction_id)
    .fetch_optional(conn)
    .await
    .map_err(pg_err)?;
    let Some(r) = row else {
        return Ok((false, None));
    };
    let state: String = r.try_get(0).map_err(pg_err)?;
    let unfrozen: i64 = r.try_get(5).map_err(pg_err)?;
    Ok((
        state == "SUCCESS" || state == "REFUND",
        Some(ShareAmounts {
            total_fen: r.try_get(1).map_err(pg_err)?,
            refunded_fen: r.try_get(2).map_err(pg_err)?,
            shared_fen: r.try_get(3).map_err(pg_err)?,
            released_fen: r.try_get(4).map_err(pg_err)?,
            unfrozen: unfrozen != 0,
        }),
    ))
}

pub(super) async fn share_amounts(
    pool: &PgPool,
    transaction_id: &str,
) -> Result<Option<ShareAmounts>> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    order_side(&mut conn, transaction_id).await.map(|(_, a)| a)
}

fn decode(r: &PgRow) -> Result<ShareOrderRecord> {
    sharing::share(r)
}

async fn by_key(
    conn: &mut PgConnection,
    mchid: &str,
    out_order_no: &str,
) -> Result<Option<ShareOrderRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {SHARE_COLS} FROM share_orders WHERE mchid = $1 AND out_order_no = $2"
    ))
    .bind(mchid)
    .bind(out_order_no)
    .fetch_optional(conn)
    .await
    .map_err(pg_err)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn get_share(
    pool: &PgPool,
    mchid: &str,
    out_order_no: &str,
) -> Result<Option<ShareOrderRecord>> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    by_key(&mut conn, mchid, out_order_no).await
}

pub(super) async fn get_share_by_id(
    pool: &PgPool,
    order_id: &str,
) -> Result<Option<ShareOrderRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {SHARE_COLS} FROM share_orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(pool)
    .await
    .map_err(pg_err)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn shares_of(
    pool: &PgPool,
    transaction_id: &str,
) -> Result<Vec<ShareOrderRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {SHARE_COLS} FROM share_orders WHERE transaction_id = $1 ORDER BY created_at, order_id"
    ))
    .bind(transaction_id)
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, decode)
}

pub(super) async fn apply_share_change(pool: &PgPool, c: &ShareChange) -> Result<bool> {
    sharing::check_share_move(c)?;
    let mut tx = pool.begin().await.map_err(pg_err)?;
    let step = apply_share(&mut tx, c)
        .await
        .map(|applied| (applied, applied));
    end_tx(tx, step).await
}

async fn apply_share(conn: &mut PgConnection, c: &ShareChange) -> Result<bool> {
    let lines = c
        .receivers
        .as_deref()
        .map(sharing::lines_to_json)
        .transpose()?;
    let moved = sqlx::query(
        "UPDATE share_orders SET state = $3, version = version + 1,
             receivers_json = COALESCE($4, receivers_json),
             channel_order_id = COALESCE($5, channel_order_id),
             error_code = COALESCE($6, error_code),
             error_message = COALESCE($7, error_message),
             finished_at = COALESCE($8, finished_at),
             updated_at = $9
         WHERE order_id = $1 AND version = $2 AND state = $10
         RETURNING transaction_id",
    )
    .bind(&c.order_id)
    .bind(c.expected_version)
    .bind(c.new_state.as_str())
    .bind(lines)
    .bind(&c.channel_order_id)
    .bind(&c.error_code)
    .bind(&c.error_message)
    .bind(opt_ms(c.finished_at))
    .bind(unix_ms(c.updated_at))
    .bind(c.expected_state.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_err)?;
    let Some(row) = moved else {
        return Ok(false);
    };
    let transaction_id: String = row.try_get(0).map_err(pg_err)?;
    if c.released_fen > 0 || c.refreeze {
        let released = sqlx::query(
            "UPDATE orders SET shared_fen = shared_fen - $2,
                 share_unfrozen = CASE WHEN $4 THEN 0 ELSE share_unfrozen END,
                 version = version + 1, updated_at = $3
             WHERE transaction_id = $1 AND shared_fen >= $2",
        )
        .bind(&transaction_id)
        .bind(c.released_fen)
        .bind(unix_ms(c.updated_at))
        .bind(c.refreeze)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?
        .rows_affected();
        if released == 0 {
            return Err(StoreError::Database(format!(
                "order {transaction_id}: shared_fen is below what share order {} gives back",
                c.order_id
            )));
        }
    }
    for n in &c.notifications {
        insert_notification(conn, n).await?;
    }
    if let Some(posting) = &c.ledger {
        super::ledger::apply_posting(conn, posting, crate::ledger::now_ms(c.updated_at)).await?;
    }
    Ok(true)
}

pub(super) async fn shares_to_poll(
    pool: &PgPool,
    polled_before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<ShareOrderRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {SHARE_COLS} FROM share_orders
         WHERE state IN ('CREATED', 'PROCESSING')
           AND created_at < $1 AND (last_polled_at IS NULL OR last_polled_at < $1)
         ORDER BY last_polled_at NULLS FIRST, created_at, order_id
         LIMIT $2"
    ))
    .bind(unix_ms(polled_before))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, decode)
}

pub(super) async fn mark_share_polled(
    pool: &PgPool,
    order_id: &str,
    at: OffsetDateTime,
) -> Result<bool> {
    sqlx::query("UPDATE share_orders SET last_polled_at = $2 WHERE order_id = $1")
        .bind(order_id)
        .bind(unix_ms(at))
        .execute(pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(pg_err)
}

// ---- returns ----

pub(super) async fn create_return(
    pool: &PgPool,
    r: &ShareReturnRecord,
) -> Result<CreateShareReturn> {
    let mut tx = pool.begin().await.map_err(pg_err)?;
    let step = check_and_insert_return(&mut tx, r).await.map(|outcome| {
        let keep = outcome == CreateShareReturn::Created;
        (outcome, keep)
    });
    let outcome = end_tx(tx, step).await?;
    if outcome != CreateShareReturn::Created {
        // A conflict on the key seen only at the insert: answer with the return that won.
        let mut conn = pool.acquire().await.map_err(pg_err)?;
        if let Some(existing) = return_by_key(&mut conn, &r.mchid, &r.out_return_no).await? {
            return Ok(CreateShareReturn::Exists(Box::new(existing)));
        }
    }
    Ok(outcome)
}

async fn check_and_insert_return(
    conn: &mut PgConnection,
    r: &ShareReturnRecord,
) -> Result<CreateShareReturn> {
    // The share order's row lock serializes the returns of one share order.
    let row = sqlx::query(&format!(
        "SELECT {SHARE_COLS} FROM share_orders WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(&r.share_order_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_err)?;
    let Some(order) = row.as_ref().map(decode).transpose()? else {
        return Ok(CreateShareReturn::NotReceiver);
    };
    let Some(line_fen) = sharing::returnable(&order, &r.return_mchid) else {
        return Ok(CreateShareReturn::NotReceiver);
    };
    let taken: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount_fen), 0)::BIGINT FROM share_returns
         WHERE share_order_id = $1 AND return_mchid = $2 AND state <> 'FAILED'",
    )
    .bind(&r.share_order_id)
    .bind(&r.return_mchid)
    .fetch_one(&mut *conn)
    .await
    .map_err(pg_err)?;
    if taken + r.amount_fen > line_fen {
        return Ok(CreateShareReturn::NotEnough {
            returnable_fen: line_fen - taken,
        });
    }
    let inserted = sqlx::query(&format!(
        "INSERT INTO share_returns ({RETURN_COLS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
         ON CONFLICT (mchid, out_return_no) DO NOTHING"
    ))
    .bind(&r.return_id)
    .bind(&r.mchid)
    .bind(&r.out_return_no)
    .bind(&r.share_order_id)
    .bind(&r.out_order_no)
    .bind(&r.transaction_id)
    .bind(&r.channel_id)
    .bind(&r.return_mchid)
    .bind(r.amount_fen)
    .bind(&r.description)
    .bind(r.state.as_str())
    .bind(&r.fail_reason)
    .bind(&r.channel_return_id)
    .bind(&r.error_code)
    .bind(&r.error_message)
    .bind(&r.fingerprint)
    .bind(unix_ms(r.created_at))
    .bind(unix_ms(r.updated_at))
    .bind(opt_ms(r.finished_at))
    .bind(opt_ms(r.last_polled_at))
    .bind(r.version)
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?
    .rows_affected();
    Ok(if inserted > 0 {
        CreateShareReturn::Created
    } else {
        // Taken meanwhile: the caller answers with the existing return.
        CreateShareReturn::NotReceiver
    })
}

fn decode_return(r: &PgRow) -> Result<ShareReturnRecord> {
    sharing::share_return(r)
}

async fn return_by_key(
    conn: &mut PgConnection,
    mchid: &str,
    out_return_no: &str,
) -> Result<Option<ShareReturnRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {RETURN_COLS} FROM share_returns WHERE mchid = $1 AND out_return_no = $2"
    ))
    .bind(mchid)
    .bind(out_return_no)
    .fetch_optional(conn)
    .await
    .map_err(pg_err)?;
    row.as_ref().map(decode_return).transpose()
}

pub(super) async fn get_return(
    pool: &PgPool,
    mchid: &str,
    out_return_no: &str,
) -> Result<Option<ShareReturnRecord>> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    return_by_key(&mut conn, mchid, out_return_no).await
}

pub(super) async fn get_return_by_id(
    pool: &PgPool,
    return_id: &str,
) -> Result<Option<ShareReturnRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {RETURN_COLS} FROM share_returns WHERE return_id = $1"
    ))
    .bind(return_id)
    .fetch_optional(pool)
    .await
    .map_err(pg_err)?;
    row.as_ref().map(decode_return).transpose()
}

pub(super) async fn apply_return_change(pool: &PgPool, c: &ShareReturnChange) -> Result<bool> {
    sharing::check_return_move(c)?;
    let mut tx = pool.begin().await.map_err(pg_err)?;
    let step = apply_return(&mut tx, c)
        .await
        .map(|applied| (applied, applied));
    end_tx(tx, step).await
}

async fn apply_return(conn: &mut PgConnection, c: &ShareReturnChange) -> Result<bool> {
    let moved = sqlx::query(
        "UPDATE share_returns SET state = $3, version = version + 1,
             fail_reason = COALESCE($4, fail_reason),
             channel_return_id = COALESCE($5, channel_return_id),
             error_code = COALESCE($6, error_code),
             error_message = COALESCE($7, error_message),
             finished_at = COALESCE($8, finished_at),
             updated_at = $9
         WHERE return_id = $1 AND state = $2
         RETURNING transaction_id, amount_fen",
    )
    .bind(&c.return_id)
    .bind(c.expected_state.as_str())
    .bind(c.new_state.as_str())
    .bind(&c.fail_reason)
    .bind(&c.channel_return_id)
    .bind(&c.error_code)
    .bind(&c.error_message)
    .bind(opt_ms(c.finished_at))
    .bind(unix_ms(c.updated_at))
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_err)?;
    let Some(row) = moved else {
        return Ok(false);
    };
    let transaction_id: String = row.try_get(0).map_err(pg_err)?;
    let amount_fen: i64 = row.try_get(1).map_err(pg_err)?;
    if c.new_state == ReturnState::Success {
        let n = sqlx::query(
            "UPDATE orders SET shared_fen = shared_fen - $2, share_released_fen = share_released_fen + $2,
                 version = version + 1, updated_at = $3
             WHERE transaction_id = $1 AND shared_fen >= $2",
        )
        .bind(&transaction_id)
        .bind(amount_fen)
        .bind(unix_ms(c.updated_at))
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Database(format!(
                "order {transaction_id}: shared_fen is below return {}",
                c.return_id
            )));
        }
    }
    if let Some(n) = &c.notification {
        insert_notification(conn, n).await?;
    }
    if let Some(posting) = &c.ledger {
        super::ledger::apply_posting(conn, posting, crate::ledger::now_ms(c.updated_at)).await?;
    }
    Ok(true)
}

pub(super) async fn returns_to_poll(
    pool: &PgPool,
    polled_before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<ShareReturnRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {RETURN_COLS} FROM share_returns
         WHERE state IN ('CREATED', 'PROCESSING')
           AND created_at < $1 AND (last_polled_at IS NULL OR last_polled_at < $1)
         ORDER BY last_polled_at NULLS FIRST, created_at, return_id
         LIMIT $2"
    ))
    .bind(unix_ms(polled_before))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, decode_return)
}

pub(super) async fn mark_return_polled(
    pool: &PgPool,
    return_id: &str,
    at: OffsetDateTime,
) -> Result<bool> {
    sqlx::query("UPDATE share_returns SET last_polled_at = $2 WHERE return_id = $1")
        .bind(return_id)
        .bind(unix_ms(at))
        .execute(pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(pg_err)
}
