//! The bills' SQL on PostgreSQL (see `crate::bills`). Each write is one statement or one
//! transaction; two nodes generating the same bill race on its primary key and both read back
//! the winner's bytes.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;

use super::{decode_all, pg_err};
use crate::bills::{
    self, BILL_DAY_COLS, BILL_DOWNLOAD_COLS, BILLED_REFUND, BillCursor, BillDayRecord,
    BillDownloadRecord, BillFileRecord, EXPIRED_DOWNLOADS_PRUNE_MAX, MerchantFlowTotals,
};
use crate::codec::{self, Cols, ORDER_COLS, unix_ms};
use crate::refunds::{self, REFUND_COLS};
use crate::{OrderRecord, RefundRecord, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

pub(super) async fn close_bill_day(pool: &PgPool, d: &BillDayRecord) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO bill_days (bill_date, closed_at, closed_by) VALUES ($1, $2, $3)
         ON CONFLICT (bill_date) DO NOTHING",
    )
    .bind(&d.bill_date)
    .bind(unix_ms(d.closed_at))
    .bind(&d.closed_by)
    .execute(pool)
    .await
    .map_err(pg_err)?
    .rows_affected();
    Ok(n > 0)
}

pub(super) async fn bill_day(pool: &PgPool, bill_date: &str) -> Result<Option<BillDayRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {BILL_DAY_COLS} FROM bill_days WHERE bill_date = $1"
    ))
    .bind(bill_date)
    .fetch_optional(pool)
    .await
    .map_err(pg_err)?;
    row.map(|r| bills::bill_day(&r)).transpose()
}

fn cursor_params(after: Option<&BillCursor>) -> (i64, String) {
    after.map_or((i64::MIN, String::new()), |c| (unix_ms(c.at), c.id.clone()))
}

pub(super) async fn paid_orders_between(
    pool: &PgPool,
    mchid: &str,
    (from, to): (OffsetDateTime, OffsetDateTime),
    after: Option<&BillCursor>,
    limit: u32,
) -> Result<Vec<OrderRecord>> {
    let (after_ms, after_id) = cursor_params(after);
    // COLLATE "C": the keyset order must be byte order, as on SQLite, whatever the
    // database's default collation.
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLS} FROM orders
         WHERE mchid = $1 AND success_time IS NOT NULL AND success_time >= $2 AND success_time < $3
           AND state IN ('SUCCESS', 'REFUND')
           AND (success_time, transaction_id COLLATE \"C\") > ($4, $5 COLLATE \"C\")
         ORDER BY success_time, transaction_id COLLATE \"C\" LIMIT $6"
    ))
    .bind(mchid)
    .bind(unix_ms(from))
    .bind(unix_ms(to))
    .bind(after_ms)
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, |r| codec::order(r, 0))
}

pub(super) async fn billed_refunds_between(
    pool: &PgPool,
    mchid: &str,
    (from, to): (OffsetDateTime, OffsetDateTime),
    after: Option<&BillCursor>,
    limit: u32,
) -> Result<Vec<RefundRecord>> {
    let (after_ms, after_id) = cursor_params(after);
    let rows = sqlx::query(&format!(
        "SELECT {REFUND_COLS} FROM refunds
         WHERE mchid = $1 AND created_at >= $2 AND created_at < $3 AND {BILLED_REFUND}
           AND (created_at, refund_id COLLATE \"C\") > ($4, $5 COLLATE \"C\")
         ORDER BY created_at, refund_id COLLATE \"C\" LIMIT $6"
    ))
    .bind(mchid)
    .bind(unix_ms(from))
    .bind(unix_ms(to))
    .bind(after_ms)
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    decode_all(&rows, refunds::refund)
}

pub(super) async fn merchant_flow_before(
    pool: &PgPool,
    mchid: &str,
    before: OffsetDateTime,
) -> Result<MerchantFlowTotals> {
    // SUM over BIGINT is NUMERIC in PostgreSQL: cast back, a day's money fits in 64 bits.
    let row = sqlx::query(&format!(
        "SELECT
           (SELECT COUNT(*) FROM orders WHERE mchid = $1 AND success_time IS NOT NULL
               AND success_time < $2 AND state IN ('SUCCESS', 'REFUND')),
           (SELECT COALESCE(SUM(total_fen), 0)::BIGINT FROM orders WHERE mchid = $1
               AND success_time IS NOT NULL AND success_time < $2 AND state IN ('SUCCESS', 'REFUND')),
           (SELECT COUNT(*) FROM refunds WHERE mchid = $1 AND created_at < $2 AND {BILLED_REFUND}),
           (SELECT COALESCE(SUM(amount_fen), 0)::BIGINT FROM refunds WHERE mchid = $1
               AND created_at < $2 AND {BILLED_REFUND}),
           (SELECT COALESCE(SUM(fee_fen), 0)::BIGINT FROM orders WHERE mchid = $1
               AND success_time IS NOT NULL AND success_time < $2 AND state IN ('SUCCESS', 'REFUND')),
           (SELECT COALESCE(SUM(FLOOR(o.fee_fen::NUMERIC * r.refunded_fen / o.total_fen)), 0)::BIGINT
            FROM (SELECT transaction_id, SUM(amount_fen) AS refunded_fen FROM refunds
                  WHERE mchid = $1 AND created_at < $2 AND {BILLED_REFUND} GROUP BY transaction_id) r
            JOIN orders o ON o.transaction_id = r.transaction_id)"
    ))
    .bind(mchid)
    .bind(unix_ms(before))
    .fetch_one(pool)
    .await
    .map_err(pg_err)?;
    Ok(MerchantFlowTotals {
        paid_count: row.int(0)?,
        paid_fen: row.int(1)?,
        refund_count: row.int(2)?,
        refund_fen: row.int(3)?,
        fee_fen: row.int(4)?,
        fee_refund_fen: row.int(5)?,
    })
}

fn file_of(r: &PgRow) -> Result<BillFileRecord> {
    Ok(BillFileRecord {
        mchid: r.text(0)?,
        bill_date: r.text(1)?,
        kind: r.text(2)?,
        sha1: r.text(3)?,
        bytes: r.try_get(4).map_err(pg_err)?,
        row_count: r.int(5)?,
        created_at: r.time(6)?,
    })
}

const FILE_SELECT: &str =
    "SELECT mchid, bill_date, kind, sha1, bytes, row_count, created_at FROM bill_files
     WHERE mchid = $1 AND bill_date = $2 AND kind = $3";

pub(super) async fn keep_bill_file(pool: &PgPool, f: &BillFileRecord) -> Result<BillFileRecord> {
    bills::check_file(f)?;
    // ON CONFLICT waits for a concurrent insert of the same key to commit; the SELECT after
    // it (a new snapshot under READ COMMITTED) then sees the winner.
    sqlx::query(
        "INSERT INTO bill_files (mchid, bill_date, kind, sha1, bytes, row_count, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (mchid, bill_date, kind) DO NOTHING",
    )
    .bind(&f.mchid)
    .bind(&f.bill_date)
    .bind(&f.kind)
    .bind(&f.sha1)
    .bind(&f.bytes)
    .bind(f.row_count)
    .bind(unix_ms(f.created_at))
    .execute(pool)
    .await
    .map_err(pg_err)?;
    bill_file(pool, &f.mchid, &f.bill_date, &f.kind)
        .await?
        .ok_or_else(|| StoreError::Database("bill file vanished after its insert".into()))
}

pub(super) async fn bill_file(
    pool: &PgPool,
    mchid: &str,
    bill_date: &str,
    kind: &str,
) -> Result<Option<BillFileRecord>> {
    let row = sqlx::query(FILE_SELECT)
        .bind(mchid)
        .bind(bill_date)
        .bind(kind)
        .fetch_optional(pool)
        .await
        .map_err(pg_err)?;
    row.map(|r| file_of(&r)).transpose()
}

pub(super) async fn insert_bill_download(
    pool: &PgPool,
    d: &BillDownloadRecord,
    now: OffsetDateTime,
) -> Result<()> {
    let mut tx = pool.begin().await.map_err(pg_err)?;
    // Bounded pruning on every insert keeps the table at about the live tokens.
    sqlx::query(
        "DELETE FROM bill_downloads WHERE token IN
             (SELECT token FROM bill_downloads WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(unix_ms(now))
    .bind(i64::from(EXPIRED_DOWNLOADS_PRUNE_MAX))
    .execute(&mut *tx)
    .await
    .map_err(pg_err)?;
    sqlx::query(
        "INSERT INTO bill_downloads (token, mchid, bill_date, kind, gzip, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&d.token)
    .bind(&d.mchid)
    .bind(&d.bill_date)
    .bind(&d.kind)
    .bind(d.gzip)
    .bind(unix_ms(d.expires_at))
    .execute(&mut *tx)
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)
}

pub(super) async fn bill_download(
    pool: &PgPool,
    token: &str,
) -> Result<Option<BillDownloadRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {BILL_DOWNLOAD_COLS} FROM bill_downloads WHERE token = $1"
    ))
    .bind(token)
    .fetch_optional(pool)
    .await
    .map_err(pg_err)?;
    row.map(|r| {
        Ok(BillDownloadRecord {
            token: r.text(0)?,
            mchid: r.text(1)?,
            bill_date: r.text(2)?,
            kind: r.text(3)?,
            gzip: r.try_get(4).map_err(pg_err)?,
            expires_at: r.time(5)?,
        })
    })
    .transpose()
}
