//! The bills' SQL on SQLite (see `crate::bills`). Writes run on the writer thread inside their
//! own savepoint; the row sources are keyset-paged reads on a reader connection.

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::super::sqlite_err;
use super::super::threads::Done;
use super::{execute, first, rows};
use crate::bills::{
    self, BILL_DAY_COLS, BILL_DOWNLOAD_COLS, BILLED_REFUND, BillCursor, BillDayRecord,
    BillDownloadRecord, BillFileRecord, EXPIRED_DOWNLOADS_PRUNE_MAX, MerchantFlowTotals,
};
use crate::codec::{self, Cols, ORDER_COLS, unix_ms};
use crate::refunds::{self, REFUND_COLS};
use crate::{OrderRecord, RefundRecord, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

pub(in crate::sqlite) fn close_bill_day(
    conn: &Connection,
    d: &BillDayRecord,
) -> Result<Done<bool>> {
    let n = execute(
        conn,
        "INSERT INTO bill_days (bill_date, closed_at, closed_by) VALUES (?1, ?2, ?3)
         ON CONFLICT (bill_date) DO NOTHING",
        params![d.bill_date, unix_ms(d.closed_at), d.closed_by],
    )?;
    Ok(Done::keep(n > 0))
}

pub(in crate::sqlite) fn bill_day(
    conn: &Connection,
    bill_date: &str,
) -> Result<Option<BillDayRecord>> {
    first(
        conn,
        &format!("SELECT {BILL_DAY_COLS} FROM bill_days WHERE bill_date = ?1"),
        [bill_date],
        |r| bills::bill_day(r),
    )
}

/// `(0, "")` sorts before every real row: the first page.
fn cursor_params(after: Option<&BillCursor>) -> (i64, String) {
    after.map_or((i64::MIN, String::new()), |c| (unix_ms(c.at), c.id.clone()))
}

pub(in crate::sqlite) fn paid_orders_between(
    conn: &Connection,
    mchid: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    after: Option<&BillCursor>,
    limit: u32,
) -> Result<Vec<OrderRecord>> {
    let (after_ms, after_id) = cursor_params(after);
    rows(
        conn,
        &format!(
            "SELECT {ORDER_COLS} FROM orders
             WHERE mchid = ?1 AND success_time IS NOT NULL AND success_time >= ?2 AND success_time < ?3
               AND state IN ('SUCCESS', 'REFUND') AND (success_time, transaction_id) > (?4, ?5)
             ORDER BY success_time, transaction_id LIMIT ?6"
        ),
        params![
            mchid,
            unix_ms(from),
            unix_ms(to),
            after_ms,
            after_id,
            i64::from(limit)
        ],
        |r| codec::order(r, 0),
    )
}

pub(in crate::sqlite) fn billed_refunds_between(
    conn: &Connection,
    mchid: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    after: Option<&BillCursor>,
    limit: u32,
) -> Result<Vec<RefundRecord>> {
    let (after_ms, after_id) = cursor_params(after);
    rows(
        conn,
        &format!(
            "SELECT {REFUND_COLS} FROM refunds
             WHERE mchid = ?1 AND created_at >= ?2 AND created_at < ?3 AND {BILLED_REFUND}
               AND (created_at, refund_id) > (?4, ?5)
             ORDER BY created_at, refund_id LIMIT ?6"
        ),
        params![
            mchid,
            unix_ms(from),
            unix_ms(to),
            after_ms,
            after_id,
            i64::from(limit)
        ],
        |r| refunds::refund(r),
    )
}

pub(in crate::sqlite) fn merchant_flow_before(
    conn: &Connection,
    mchid: &str,
    before: OffsetDateTime,
) -> Result<MerchantFlowTotals> {
    let before = unix_ms(before);
    let pair = |sql: &str| -> Result<(i64, i64)> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.query_row(params![mchid, before], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(sqlite_err)
    };
    let (paid_count, paid_fen) = pair(
        "SELECT COUNT(*), COALESCE(SUM(total_fen), 0) FROM orders
         WHERE mchid = ?1 AND success_time IS NOT NULL AND success_time < ?2
           AND state IN ('SUCCESS', 'REFUND')",
    )?;
    let (_, fee_fen) = pair(
        "SELECT COUNT(*), COALESCE(SUM(fee_fen), 0) FROM orders
         WHERE mchid = ?1 AND success_time IS NOT NULL AND success_time < ?2
           AND state IN ('SUCCESS', 'REFUND')",
    )?;
    let (refund_count, refund_fen) = pair(&format!(
        "SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM refunds
         WHERE mchid = ?1 AND created_at < ?2 AND {BILLED_REFUND}"
    ))?;
    // Integer division: floor for these non-negative amounts. fee × refunded stays far
    // below 2^63 for any order total WeChat accepts (fee <= total, refunded <= total).
    let (_, fee_refund_fen) = pair(&format!(
        "SELECT COUNT(*), COALESCE(SUM(o.fee_fen * r.refunded_fen / o.total_fen), 0)
         FROM (SELECT transaction_id, SUM(amount_fen) AS refunded_fen FROM refunds
               WHERE mchid = ?1 AND created_at < ?2 AND {BILLED_REFUND} GROUP BY transaction_id) r
         JOIN orders o ON o.transaction_id = r.transaction_id"
    ))?;
    Ok(MerchantFlowTotals {
        paid_count,
        paid_fen,
        fee_fen,
        refund_count,
        refund_fen,
        fee_refund_fen,
    })
}

fn file_of(r: &rusqlite::Row<'_>) -> Result<BillFileRecord> {
    let bytes: Vec<u8> = r.get(4).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(BillFileRecord {
        mchid: r.text(0)?,
        bill_date: r.text(1)?,
        kind: r.text(2)?,
        sha1: r.text(3)?,
        bytes,
        row_count: r.int(5)?,
        created_at: r.time(6)?,
    })
}

const FILE_SELECT: &str =
    "SELECT mchid, bill_date, kind, sha1, bytes, row_count, created_at FROM bill_files
     WHERE mchid = ?1 AND bill_date = ?2 AND kind = ?3";

pub(in crate::sqlite) fn keep_bill_file(
    conn: &Connection,
    f: &BillFileRecord,
) -> Result<Done<BillFileRecord>> {
    bills::check_file(f)?;
    execute(
        conn,
        "INSERT INTO bill_files (mchid, bill_date, kind, sha1, bytes, row_count, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (mchid, bill_date, kind) DO NOTHING",
        params![
            f.mchid,
            f.bill_date,
            f.kind,
            f.sha1,
            f.bytes,
            f.row_count,
            unix_ms(f.created_at)
        ],
    )?;
    let kept = first(
        conn,
        FILE_SELECT,
        [&f.mchid, &f.bill_date, &f.kind],
        file_of,
    )?
    .ok_or_else(|| StoreError::Database("bill file vanished after its insert".into()))?;
    Ok(Done::keep(kept))
}

pub(in crate::sqlite) fn bill_file(
    conn: &Connection,
    mchid: &str,
    bill_date: &str,
    kind: &str,
) -> Result<Option<BillFileRecord>> {
    first(conn, FILE_SELECT, [mchid, bill_date, kind], file_of)
}

pub(in crate::sqlite) fn insert_bill_download(
    conn: &Connection,
    d: &BillDownloadRecord,
    now: OffsetDateTime,
) -> Result<Done<()>> {
    // Bounded pruning on every insert keeps the table at about the live tokens.
    execute(
        conn,
        "DELETE FROM bill_downloads WHERE token IN
             (SELECT token FROM bill_downloads WHERE expires_at < ?1 LIMIT ?2)",
        params![unix_ms(now), i64::from(EXPIRED_DOWNLOADS_PRUNE_MAX)],
    )?;
    execute(
        conn,
        "INSERT INTO bill_downloads (token, mchid, bill_date, kind, gzip, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            d.token,
            d.mchid,
            d.bill_date,
            d.kind,
            i64::from(d.gzip),
            unix_ms(d.expires_at)
        ],
    )?;
    Ok(Done::keep(()))
}

pub(in crate::sqlite) fn bill_download(
    conn: &Connection,
    token: &str,
) -> Result<Option<BillDownloadRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {BILL_DOWNLOAD_COLS} FROM bill_downloads WHERE token = ?1"
    ))
    .and_then(|mut s| {
        s.query_row([token], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .optional()
    })
    .map_err(sqlite_err)?
    .map(|(token, mchid, bill_date, kind, gzip, expires_ms)| {
        Ok(BillDownloadRecord {
            token,
            mchid,
            bill_date,
            kind,
            gzip: gzip != 0,
            expires_at: codec::from_unix_ms(expires_ms)?,
        })
    })
    .transpose()
}
