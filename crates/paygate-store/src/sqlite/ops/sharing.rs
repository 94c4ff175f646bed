//! Profit sharing's SQL on SQLite (see `crate::sharing` for the money rule). Writes run on the
//! one writer thread inside their own savepoint: each function is one all-or-nothing step.

use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::super::sqlite_err;
use super::super::threads::Done;
use super::{execute, first, insert_notification, rows};
use crate::StoreError;
use crate::codec::{opt_ms, unix_ms};
use crate::sharing::{
    self, CreateShare, CreateShareReturn, RECEIVER_COLS, RETURN_COLS, ReturnState, SHARE_COLS,
    ShareAmounts, ShareChange, ShareKind, ShareLimits, ShareOrderRecord, ShareReceiverRecord,
    ShareReturnChange, ShareReturnRecord,
};

type Result<T> = std::result::Result<T, StoreError>;

// ---- receivers and configuration ----

pub(in crate::sqlite) fn upsert_receiver(conn: &Connection, r: &ShareReceiverRecord) -> Result<()> {
    execute(
        conn,
        "INSERT INTO share_receivers (mchid, type, account, channel_id, relation_type, custom_relation, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (mchid, type, account) DO UPDATE SET channel_id = excluded.channel_id,
             relation_type = excluded.relation_type, custom_relation = excluded.custom_relation",
        params![
            r.mchid,
            r.r#type,
            r.account,
            r.channel_id,
            r.relation_type,
            r.custom_relation,
            unix_ms(r.created_at)
        ],
    )
    .map(|_| ())
}

pub(in crate::sqlite) fn delete_receiver(
    conn: &Connection,
    mchid: &str,
    r#type: &str,
    account: &str,
) -> Result<bool> {
    execute(
        conn,
        "DELETE FROM share_receivers WHERE mchid = ?1 AND type = ?2 AND account = ?3",
        params![mchid, r#type, account],
    )
    .map(|n| n > 0)
}

pub(in crate::sqlite) fn receivers(
    conn: &Connection,
    mchid: &str,
) -> Result<Vec<ShareReceiverRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {RECEIVER_COLS} FROM share_receivers WHERE mchid = ?1 ORDER BY created_at, type, account"
        ),
        [mchid],
        |r| sharing::receiver(r),
    )
}

pub(in crate::sqlite) fn receiver_users(
    conn: &Connection,
    channel_id: &str,
    r#type: &str,
    account: &str,
) -> Result<i64> {
    first(
        conn,
        "SELECT COUNT(*) FROM share_receivers WHERE channel_id = ?1 AND type = ?2 AND account = ?3",
        params![channel_id, r#type, account],
        |r| r.get(0).map_err(sqlite_err),
    )
    .map(|n| n.unwrap_or(0))
}

pub(in crate::sqlite) fn max_ratio(conn: &Connection, mchid: &str) -> Result<Option<u32>> {
    first(
        conn,
        "SELECT max_ratio_bp FROM share_configs WHERE mchid = ?1",
        [mchid],
        |r| r.get(0).map_err(sqlite_err),
    )
}

pub(in crate::sqlite) fn set_max_ratio(
    conn: &Connection,
    mchid: &str,
    max_ratio_bp: u32,
    at: OffsetDateTime,
) -> Result<()> {
    execute(
        conn,
        "INSERT INTO share_configs (mchid, max_ratio_bp, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (mchid) DO UPDATE SET max_ratio_bp = excluded.max_ratio_bp, updated_at = excluded.updated_at",
        params![mchid, max_ratio_bp, unix_ms(at)],
    )
    .map(|_| ())
}

// ---- share orders ----

/// Reserve (a split) or unfreeze, then insert: a refused reservation or a taken key rolls
/// the command back whole.
pub(in crate::sqlite) fn create_share(
    conn: &Connection,
    r: &ShareOrderRecord,
    limits: ShareLimits,
) -> Result<Done<CreateShare>> {
    if let Some(existing) = get_share(conn, &r.mchid, &r.out_order_no)? {
        return Ok(Done::undo(CreateShare::Exists(Box::new(existing))));
    }
    let t = unix_ms(r.created_at);
    let reserved = match r.kind {
        ShareKind::Split => execute(
            conn,
            "UPDATE orders SET shared_fen = shared_fen + ?2, share_unfrozen = ?5,
                 version = version + 1, updated_at = ?3
             WHERE transaction_id = ?1 AND state IN ('SUCCESS', 'REFUND') AND share_unfrozen = 0
               AND refunded_fen + shared_fen + share_released_fen + ?4 + ?2 <= total_fen
               AND (shared_fen + ?2) * 10000 <= total_fen * ?6",
            params![
                r.transaction_id,
                r.amount_fen,
                t,
                limits.fee_fen,
                i64::from(r.unfreeze_unsplit),
                limits.max_ratio_bp
            ],
        )?,
        // Compare-and-set on the very amount unfrozen: a split or refund committed since it
        // was computed makes this miss, and the caller re-reads.
        ShareKind::Unfreeze => execute(
            conn,
            "UPDATE orders SET share_unfrozen = 1, version = version + 1, updated_at = ?3
             WHERE transaction_id = ?1 AND state IN ('SUCCESS', 'REFUND') AND share_unfrozen = 0
               AND total_fen - ?4 - refunded_fen - shared_fen - share_released_fen = ?2",
            params![r.transaction_id, r.amount_fen, t, limits.fee_fen],
        )?,
    };
    if reserved == 0 {
        let (paid, amounts) = order_side(conn, &r.transaction_id)?;
        return Ok(Done::undo(sharing::split_refusal(paid, amounts, r, limits)));
    }
    execute(
        conn,
        &format!(
            "INSERT INTO share_orders ({SHARE_COLS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
        ),
        params![
            r.order_id,
            r.mchid,
            r.out_order_no,
            r.transaction_id,
            r.attempt_id,
            r.channel_id,
            r.kind.as_str(),
            r.state.as_str(),
            r.amount_fen,
            i64::from(r.unfreeze_unsplit),
            sharing::lines_to_json(&r.receivers)?,
            r.description,
            r.fingerprint,
            r.channel_order_id,
            r.error_code,
            r.error_message,
            unix_ms(r.created_at),
            unix_ms(r.updated_at),
            opt_ms(r.finished_at),
            opt_ms(r.last_polled_at),
            r.version
        ],
    )?;
    Ok(Done::keep(CreateShare::Created))
}

fn order_side(conn: &Connection, transaction_id: &str) -> Result<(bool, Option<ShareAmounts>)> {
    let row: Option<(String, ShareAmounts)> = first(
        conn,
        "SELECT state, total_fen, refunded_fen, shared_fen, share_released_fen, share_unfrozen
         FROM orders WHERE transaction_id = ?1",
        [transaction_id],
        |r| {
            Ok((
                r.get(0).map_err(sqlite_err)?,
                ShareAmounts {
                    total_fen: r.get(1).map_err(sqlite_err)?,
                    refunded_fen: r.get(2).map_err(sqlite_err)?,
                    shared_fen: r.get(3).map_err(sqlite_err)?,
                    released_fen: r.get(4).map_err(sqlite_err)?,
                    unfrozen: r.get::<_, i64>(5).map_err(sqlite_err)? != 0,
                },
            ))
        },
    )?;
    Ok(match row {
        Some((state, a)) => (state == "SUCCESS" || state == "REFUND", Some(a)),
        None => (false, None),
    })
}

pub(in crate::sqlite) fn share_amounts(
    conn: &Connection,
    transaction_id: &str,
) -> Result<Option<ShareAmounts>> {
    order_side(conn, transaction_id).map(|(_, a)| a)
}

pub(in crate::sqlite) fn get_share(
    conn: &Connection,
    mchid: &str,
    out_order_no: &str,
) -> Result<Option<ShareOrderRecord>> {
    first(
        conn,
        &format!("SELECT {SHARE_COLS} FROM share_orders WHERE mchid = ?1 AND out_order_no = ?2"),
        [mchid, out_order_no],
        |r| sharing::share(r),
    )
}

pub(in crate::sqlite) fn get_share_by_id(
    conn: &Connection,
    order_id: &str,
) -> Result<Option<ShareOrderRecord>> {
    first(
        conn,
        &format!("SELECT {SHARE_COLS} FROM share_orders WHERE order_id = ?1"),
        [order_id],
        |r| sharing::share(r),
    )
}

pub(in crate::sqlite) fn shares_of(
    conn: &Connection,
    transaction_id: &str,
) -> Result<Vec<ShareOrderRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {SHARE_COLS} FROM share_orders WHERE transaction_id = ?1 ORDER BY created_at, order_id"
        ),
        [transaction_id],
        |r| sharing::share(r),
    )
}

/// Share CAS, the order's side, the outbox rows: all kept or all rolled back.
pub(in crate::sqlite) fn apply_share_change(
    conn: &Connection,
    c: &ShareChange,
) -> Result<Done<bool>> {
    sharing::check_share_move(c)?;
    let lines = c
        .receivers
        .as_deref()
        .map(sharing::lines_to_json)
        .transpose()?;
    let moved: Option<String> = first(
        conn,
        "UPDATE share_orders SET state = ?3, version = version + 1,
             receivers_json = COALESCE(?4, receivers_json),
             channel_order_id = COALESCE(?5, channel_order_id),
             error_code = COALESCE(?6, error_code),
             error_message = COALESCE(?7, error_message),
             finished_at = COALESCE(?8, finished_at),
             updated_at = ?9
         WHERE order_id = ?1 AND version = ?2 AND state = ?10
         RETURNING transaction_id",
        params![
            c.order_id,
            c.expected_version,
            c.new_state.as_str(),
            lines,
            c.channel_order_id,
            c.error_code,
            c.error_message,
            opt_ms(c.finished_at),
            unix_ms(c.updated_at),
            c.expected_state.as_str()
        ],
        |r| r.get(0).map_err(sqlite_err),
    )?;
    let Some(transaction_id) = moved else {
        return Ok(Done::undo(false));
    };
    if c.released_fen > 0 || c.refreeze {
        let released = execute(
            conn,
            "UPDATE orders SET shared_fen = shared_fen - ?2,
                 share_unfrozen = CASE WHEN ?4 THEN 0 ELSE share_unfrozen END,
                 version = version + 1, updated_at = ?3
             WHERE transaction_id = ?1 AND shared_fen >= ?2",
            params![
                transaction_id,
                c.released_fen,
                unix_ms(c.updated_at),
                c.refreeze
            ],
        )?;
        if released == 0 {
            return Err(StoreError::Database(format!(
                "order {transaction_id}: shared_fen is below what share order {} gives back",
                c.order_id
            )));
        }
    }
    for n in &c.notifications {
        insert_notification(conn, n)?;
    }
    if let Some(posting) = &c.ledger {
        crate::sqlite::ledger::apply_posting(conn, posting, crate::ledger::now_ms(c.updated_at))?;
    }
    Ok(Done::keep(true))
}

pub(in crate::sqlite) fn shares_to_poll(
    conn: &Connection,
    polled_before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<ShareOrderRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {SHARE_COLS} FROM share_orders
             WHERE state IN ('CREATED', 'PROCESSING')
               AND created_at < ?1 AND (last_polled_at IS NULL OR last_polled_at < ?1)
             ORDER BY last_polled_at, created_at, order_id
             LIMIT ?2"
        ),
        params![unix_ms(polled_before), limit],
        |r| sharing::share(r),
    )
}

pub(in crate::sqlite) fn mark_share_polled(
    conn: &Connection,
    order_id: &str,
    at: OffsetDateTime,
) -> Result<bool> {
    execute(
        conn,
        "UPDATE share_orders SET last_polled_at = ?2 WHERE order_id = ?1",
        params![order_id, unix_ms(at)],
    )
    .map(|n| n > 0)
}

// ---- returns ----

/// Checks the receiver's line and what its other returns took, then inserts. The writer
/// thread runs one command at a time, so the check and the insert cannot interleave.
pub(in crate::sqlite) fn create_return(
    conn: &Connection,
    r: &ShareReturnRecord,
) -> Result<Done<CreateShareReturn>> {
    if let Some(existing) = get_return(conn, &r.mchid, &r.out_return_no)? {
        return Ok(Done::undo(CreateShareReturn::Exists(Box::new(existing))));
    }
    let Some(order) = get_share_by_id(conn, &r.share_order_id)? else {
        return Ok(Done::undo(CreateShareReturn::NotReceiver));
    };
    let Some(line_fen) = sharing::returnable(&order, &r.return_mchid) else {
        return Ok(Done::undo(CreateShareReturn::NotReceiver));
    };
    let taken: i64 = first(
        conn,
        "SELECT COALESCE(SUM(amount_fen), 0) FROM share_returns
         WHERE share_order_id = ?1 AND return_mchid = ?2 AND state <> 'FAILED'",
        params![r.share_order_id, r.return_mchid],
        |row| row.get(0).map_err(sqlite_err),
    )?
    .unwrap_or(0);
    if taken + r.amount_fen > line_fen {
        return Ok(Done::undo(CreateShareReturn::NotEnough {
            returnable_fen: line_fen - taken,
        }));
    }
    execute(
        conn,
        &format!(
            "INSERT INTO share_returns ({RETURN_COLS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
        ),
        params![
            r.return_id,
            r.mchid,
            r.out_return_no,
            r.share_order_id,
            r.out_order_no,
            r.transaction_id,
            r.channel_id,
            r.return_mchid,
            r.amount_fen,
            r.description,
            r.state.as_str(),
            r.fail_reason,
            r.channel_return_id,
            r.error_code,
            r.error_message,
            r.fingerprint,
            unix_ms(r.created_at),
            unix_ms(r.updated_at),
            opt_ms(r.finished_at),
            opt_ms(r.last_polled_at),
            r.version
        ],
    )?;
    Ok(Done::keep(CreateShareReturn::Created))
}

pub(in crate::sqlite) fn get_return(
    conn: &Connection,
    mchid: &str,
    out_return_no: &str,
) -> Result<Option<ShareReturnRecord>> {
    first(
        conn,
        &format!("SELECT {RETURN_COLS} FROM share_returns WHERE mchid = ?1 AND out_return_no = ?2"),
        [mchid, out_return_no],
        |r| sharing::share_return(r),
    )
}

pub(in crate::sqlite) fn get_return_by_id(
    conn: &Connection,
    return_id: &str,
) -> Result<Option<ShareReturnRecord>> {
    first(
        conn,
        &format!("SELECT {RETURN_COLS} FROM share_returns WHERE return_id = ?1"),
        [return_id],
        |r| sharing::share_return(r),
    )
}

/// Return CAS; a SUCCESS moves its amount from what receivers hold to what came back.
pub(in crate::sqlite) fn apply_return_change(
    conn: &Connection,
    c: &ShareReturnChange,
) -> Result<Done<bool>> {
    sharing::check_return_move(c)?;
    let moved: Option<(String, i64)> = first(
        conn,
        "UPDATE share_returns SET state = ?3, version = version + 1,
             fail_reason = COALESCE(?4, fail_reason),
             channel_return_id = COALESCE(?5, channel_return_id),
             error_code = COALESCE(?6, error_code),
             error_message = COALESCE(?7, error_message),
             finished_at = COALESCE(?8, finished_at),
             updated_at = ?9
         WHERE return_id = ?1 AND state = ?2
         RETURNING transaction_id, amount_fen",
        params![
            c.return_id,
            c.expected_state.as_str(),
            c.new_state.as_str(),
            c.fail_reason,
            c.channel_return_id,
            c.error_code,
            c.error_message,
            opt_ms(c.finished_at),
            unix_ms(c.updated_at)
        ],
        |r| Ok((r.get(0).map_err(sqlite_err)?, r.get(1).map_err(sqlite_err)?)),
    )?;
    let Some((transaction_id, amount_fen)) = moved else {
        return Ok(Done::undo(false));
    };
    if c.new_state == ReturnState::Success {
        let n = execute(
            conn,
            "UPDATE orders SET shared_fen = shared_fen - ?2, share_released_fen = share_released_fen + ?2,
                 version = version + 1, updated_at = ?3
             WHERE transaction_id = ?1 AND shared_fen >= ?2",
            params![transaction_id, amount_fen, unix_ms(c.updated_at)],
        )?;
        if n == 0 {
            return Err(StoreError::Database(format!(
                "order {transaction_id}: shared_fen is below return {}",
                c.return_id
            )));
        }
    }
    if let Some(n) = &c.notification {
        insert_notification(conn, n)?;
    }
    if let Some(posting) = &c.ledger {
        crate::sqlite::ledger::apply_posting(conn, posting, crate::ledger::now_ms(c.updated_at))?;
    }
    Ok(Done::keep(true))
}

pub(in crate::sqlite) fn returns_to_poll(
    conn: &Connection,
    polled_before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<ShareReturnRecord>> {
    rows(
        conn,
        &format!(
            "SELECT {RETURN_COLS} FROM share_returns
             WHERE state IN ('CREATED', 'PROCESSING')
               AND created_at < ?1 AND (last_polled_at IS NULL OR last_polled_at < ?1)
             ORDER BY last_polled_at, created_at, return_id
             LIMIT ?2"
        ),
        params![unix_ms(polled_before), limit],
        |r| sharing::share_return(r),
    )
}

pub(in crate::sqlite) fn mark_return_polled(
    conn: &Connection,
    return_id: &str,
    at: OffsetDateTime,
) -> Result<bool> {
    execute(
        conn,
        "UPDATE share_returns SET last_polled_at = ?2 WHERE return_id = ?1",
        params![return_id, unix_ms(at)],
    )
    .map(|n| n > 0)
}
