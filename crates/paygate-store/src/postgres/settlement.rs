//! Daily settlement on PostgreSQL (records and rule in `crate::settlement`). `settle_day` is one
//! transaction: an advisory transaction lock per merchant serializes settlement runs, and the
//! merchant's pending account row is locked FOR UPDATE before the ledger is read, so a refund
//! reserving from pending (which locks the same row) either committed before the read or waits
//! until the settlement committed: the amount is never stale.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::{PgStore, pg_err};
use crate::StoreError;
use crate::codec::{from_unix_ms, unix_ms};
use crate::settlement::{
    CREDITED_AFTER_SQL, DAY_COUNTS_SQL, DayFigures, FREE_SQL, HELD, NOTHING, RESERVED_AFTER_SQL,
    SETTLED, SETTLEMENT_COLS, SETTLEMENTS_PAGE_MAX, SettleDay, SettlementHold, SettlementRecord,
    SettlementStore, check_day, merchant_ids, settle_posting, settlement_id,
};

type Result<T> = std::result::Result<T, StoreError>;

fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

fn record(r: &PgRow) -> Result<SettlementRecord> {
    let g = |e: sqlx::Error| pg_err(e);
    Ok(SettlementRecord {
        mchid: r.try_get(0).map_err(g)?,
        business_date: r.try_get(1).map_err(g)?,
        settlement_id: r.try_get(2).map_err(g)?,
        status: r.try_get(3).map_err(g)?,
        amount_fen: r.try_get(4).map_err(g)?,
        payments: r.try_get(5).map_err(g)?,
        refunds: r.try_get(6).map_err(g)?,
        fee_fen: r.try_get(7).map_err(g)?,
        transfer_id: r.try_get(8).map_err(g)?,
        created_at: from_unix_ms(r.try_get(9).map_err(g)?)?,
        updated_at: from_unix_ms(r.try_get(10).map_err(g)?)?,
    })
}

async fn existing(
    conn: &mut PgConnection,
    mchid: &str,
    date: &str,
) -> Result<Option<SettlementRecord>> {
    sqlx::query(&format!(
        "SELECT {SETTLEMENT_COLS} FROM settlements WHERE mchid = $1 AND business_date = $2"
    ))
    .bind(mchid)
    .bind(date)
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_err)?
    .as_ref()
    .map(record)
    .transpose()
}

async fn scalar(
    conn: &mut PgConnection,
    sql: &str,
    binds: &[&str],
    cut: Option<i64>,
) -> Result<i64> {
    let sql = dollars(sql);
    let mut q = sqlx::query_scalar::<_, i64>(&sql);
    for b in binds {
        q = q.bind(*b);
    }
    if let Some(c) = cut {
        q = q.bind(c);
    }
    Ok(q.fetch_optional(&mut *conn)
        .await
        .map_err(pg_err)?
        .unwrap_or(0))
}

async fn figures(conn: &mut PgConnection, d: &SettleDay) -> Result<DayFigures> {
    let ids = merchant_ids(&d.mchid);
    let cut = unix_ms(d.to);
    let counts = sqlx::query(&dollars(DAY_COUNTS_SQL))
        .bind(&ids.pending)
        .bind(&ids.frozen)
        .bind(&ids.available)
        .bind(unix_ms(d.from))
        .bind(cut)
        .fetch_one(&mut *conn)
        .await
        .map_err(pg_err)?;
    let get = |i: usize| counts.try_get::<i64, _>(i).map_err(pg_err);
    let (payments, refunds, fee) = (get(0)?, get(1)?, get(2)?);
    Ok(DayFigures {
        free: scalar(conn, FREE_SQL, &[&ids.pending], None).await?,
        credited_after: scalar(conn, CREDITED_AFTER_SQL, &[&ids.pending], Some(cut)).await?,
        reserved_after: scalar(conn, RESERVED_AFTER_SQL, &[&ids.pending], Some(cut)).await?,
        payments,
        refunds,
        fee,
    })
}

async fn settle(conn: &mut PgConnection, d: &SettleDay) -> Result<SettlementRecord> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('paygate-settle:' || $1, 0))")
        .bind(&d.mchid)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    let prior = existing(conn, &d.mchid, &d.business_date).await?;
    if let Some(p) = &prior
        && p.status != HELD
    {
        return Ok(p.clone());
    }
    let ids = merchant_ids(&d.mchid);
    // The row refunds lock when they reserve from pending: taken before reading the ledger.
    sqlx::query("SELECT id FROM ledger_accounts WHERE id = $1 FOR UPDATE")
        .bind(&ids.pending)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    let held: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM settlement_holds WHERE mchid = $1)")
            .bind(&d.mchid)
            .fetch_one(&mut *conn)
            .await
            .map_err(pg_err)?;
    let id = settlement_id(&d.mchid, &d.business_date);
    let f = figures(conn, d).await?;
    let amount = if held { 0 } else { f.amount() };
    let status = match (held, amount) {
        (true, _) => HELD,
        (false, 0) => NOTHING,
        _ => SETTLED,
    };
    let mut transfer_id = None;
    if status == SETTLED {
        let posting = settle_posting(&d.mchid, &id, amount)?;
        transfer_id = posting.transfers.first().map(|t| t.id.to_hex());
        super::ledger::apply_posting(conn, &posting, crate::ledger::now_ms(d.at)).await?;
    }
    let at = unix_ms(d.at);
    let created = prior.as_ref().map(|p| unix_ms(p.created_at)).unwrap_or(at);
    sqlx::query(
        "INSERT INTO settlements (mchid, business_date, settlement_id, status, amount_fen, payments,
             refunds, fee_fen, transfer_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (mchid, business_date) DO UPDATE SET status = excluded.status,
             amount_fen = excluded.amount_fen, payments = excluded.payments,
             refunds = excluded.refunds, fee_fen = excluded.fee_fen,
             transfer_id = excluded.transfer_id, updated_at = excluded.updated_at
         WHERE settlements.status = 'HELD'",
    )
    .bind(&d.mchid)
    .bind(&d.business_date)
    .bind(&id)
    .bind(status)
    .bind(amount)
    .bind(f.payments)
    .bind(f.refunds)
    .bind(f.fee)
    .bind(&transfer_id)
    .bind(created)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?;
    existing(conn, &d.mchid, &d.business_date)
        .await?
        .ok_or_else(|| StoreError::Database("settlement row vanished in its transaction".into()))
}

#[async_trait]
impl SettlementStore for PgStore {
    async fn settle_day(&self, d: &SettleDay) -> Result<SettlementRecord> {
        check_day(d)?;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let rec = settle(&mut tx, d).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(rec)
    }

    async fn settlements(
        &self,
        mchid: Option<&str>,
        business_date: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SettlementRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SETTLEMENT_COLS} FROM settlements
             WHERE ($1::text IS NULL OR mchid = $1) AND ($2::text IS NULL OR business_date = $2)
             ORDER BY business_date, mchid LIMIT $3"
        ))
        .bind(mchid)
        .bind(business_date)
        .bind(i64::from(limit.clamp(1, SETTLEMENTS_PAGE_MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(record).collect()
    }

    async fn settlement_merchants(&self) -> Result<Vec<String>> {
        let code = i64::from(paygate_ledger::chart::AccountKind::MerchantPending.code());
        sqlx::query_scalar(
            "SELECT DISTINCT owner FROM ledger_accounts WHERE code = $1 ORDER BY owner",
        )
        .bind(code)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)
    }

    async fn released_held_settlements(&self, limit: u32) -> Result<Vec<SettlementRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SETTLEMENT_COLS} FROM settlements s WHERE status = 'HELD'
             AND NOT EXISTS (SELECT 1 FROM settlement_holds h WHERE h.mchid = s.mchid)
             ORDER BY business_date, mchid LIMIT $1"
        ))
        .bind(i64::from(limit.clamp(1, SETTLEMENTS_PAGE_MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(record).collect()
    }

    async fn hold_settlement(&self, mchid: &str, reason: &str, at: OffsetDateTime) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO settlement_holds (mchid, reason, held_at) VALUES ($1, $2, $3)
             ON CONFLICT (mchid) DO NOTHING",
        )
        .bind(mchid)
        .bind(reason)
        .bind(unix_ms(at))
        .execute(&self.pool)
        .await
        .map_err(pg_err)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn release_settlement(&self, mchid: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM settlement_holds WHERE mchid = $1")
            .bind(mchid)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?
            .rows_affected();
        Ok(n == 1)
    }

    async fn settlement_holds(&self) -> Result<Vec<SettlementHold>> {
        let rows =
            sqlx::query("SELECT mchid, reason, held_at FROM settlement_holds ORDER BY mchid")
                .fetch_all(&self.pool)
                .await
                .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(SettlementHold {
                    mchid: r.try_get(0).map_err(pg_err)?,
                    reason: r.try_get(1).map_err(pg_err)?,
                    held_at: from_unix_ms(r.try_get(2).map_err(pg_err)?)?,
                })
            })
            .collect()
    }
}
