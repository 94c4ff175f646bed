//! Reconciliation's SQL on PostgreSQL (records in `crate::recon`). `save_recon_run` is one
//! transaction; a resolution is a compare-and-set and its audit row in one transaction.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::{PgStore, end_tx, pg_err};
use crate::StoreError;
use crate::codec::{from_unix_ms, opt_ms, unix_ms};
use crate::recon::{
    AUDIT_COLS, BALANCE_COLS, DISCREPANCY_COLS, DiscrepancyRecord, PAYMENTS_PAGE, POOL_COLS,
    RECON_PAGE_MAX, REFUNDS_PAGE, RUN_COLS, ReconAuditRecord, ReconBalanceRecord, ReconCursor,
    ReconPlatformRow, ReconPoolRecord, ReconRunRecord, ReconSave, ReconStore, ResolveDiscrepancy,
};

type Result<T> = std::result::Result<T, StoreError>;

/// `?N` → `$N`: the page queries are shared with SQLite.
fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    r: &'r PgRow,
    i: usize,
) -> Result<T> {
    r.try_get(i).map_err(pg_err)
}

fn run(r: &PgRow) -> Result<ReconRunRecord> {
    Ok(ReconRunRecord {
        run_id: get(r, 0)?,
        bill_date: get(r, 1)?,
        channel_id: get(r, 2)?,
        status: get(r, 3)?,
        started_at: from_unix_ms(get(r, 4)?)?,
        finished_at: from_unix_ms(get(r, 5)?)?,
        bill_rows: get(r, 6)?,
        platform_rows: get(r, 7)?,
        matched: get(r, 8)?,
        discrepancies: get(r, 9)?,
        trade_bill_sha1: get(r, 10)?,
        fundflow_bill_sha1: get(r, 11)?,
        summary_json: get(r, 12)?,
        error: get(r, 13)?,
    })
}

fn discrepancy(r: &PgRow) -> Result<DiscrepancyRecord> {
    Ok(DiscrepancyRecord {
        id: get(r, 0)?,
        run_id: get(r, 1)?,
        bill_date: get(r, 2)?,
        channel_id: get(r, 3)?,
        class: get(r, 4)?,
        kind: get(r, 5)?,
        out_no: get(r, 6)?,
        seq: get(r, 7)?,
        mchid: get(r, 8)?,
        transaction_id: get(r, 9)?,
        channel_json: get(r, 10)?,
        platform_json: get(r, 11)?,
        state: get(r, 12)?,
        resolution: get(r, 13)?,
        resolved_by: get(r, 14)?,
        reason: get(r, 15)?,
        created_at: from_unix_ms(get(r, 16)?)?,
        resolved_at: get::<Option<i64>>(r, 17)?.map(from_unix_ms).transpose()?,
    })
}

fn pool_item(r: &PgRow) -> Result<ReconPoolRecord> {
    Ok(ReconPoolRecord {
        id: get(r, 0)?,
        channel_id: get(r, 1)?,
        bill_date: get(r, 2)?,
        class: get(r, 3)?,
        kind: get(r, 4)?,
        out_no: get(r, 5)?,
        record_json: get(r, 6)?,
        state: get(r, 7)?,
        settled_date: get(r, 8)?,
        created_at: from_unix_ms(get(r, 9)?)?,
    })
}

fn balance(r: &PgRow) -> Result<ReconBalanceRecord> {
    Ok(ReconBalanceRecord {
        bill_date: get(r, 0)?,
        channel_id: get(r, 1)?,
        scope: get(r, 2)?,
        platform_json: get(r, 3)?,
        channel_json: get(r, 4)?,
        balanced: get(r, 5)?,
        detail: get(r, 6)?,
        at: from_unix_ms(get(r, 7)?)?,
    })
}

fn audit(r: &PgRow) -> Result<ReconAuditRecord> {
    Ok(ReconAuditRecord {
        discrepancy_id: get(r, 0)?,
        actor: get(r, 1)?,
        action: get(r, 2)?,
        before_state: get(r, 3)?,
        after_state: get(r, 4)?,
        reason: get(r, 5)?,
        at: from_unix_ms(get(r, 6)?)?,
    })
}

async fn save(conn: &mut PgConnection, s: &ReconSave) -> Result<()> {
    let r = &s.run;
    sqlx::query("DELETE FROM recon_runs WHERE bill_date = $1 AND channel_id = $2")
        .bind(&r.bill_date)
        .bind(&r.channel_id)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    sqlx::query(&format!(
        "INSERT INTO recon_runs ({RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(&r.run_id)
    .bind(&r.bill_date)
    .bind(&r.channel_id)
    .bind(&r.status)
    .bind(unix_ms(r.started_at))
    .bind(unix_ms(r.finished_at))
    .bind(r.bill_rows)
    .bind(r.platform_rows)
    .bind(r.matched)
    .bind(r.discrepancies)
    .bind(&r.trade_bill_sha1)
    .bind(&r.fundflow_bill_sha1)
    .bind(&r.summary_json)
    .bind(&r.error)
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?;
    sqlx::query("DELETE FROM recon_discrepancies WHERE bill_date = $1 AND channel_id = $2 AND state = 'OPEN'")
        .bind(&r.bill_date)
        .bind(&r.channel_id)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    for d in &s.discrepancies {
        sqlx::query(&format!(
            "INSERT INTO recon_discrepancies ({DISCREPANCY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (bill_date, channel_id, class, kind, out_no, seq) DO NOTHING"
        ))
        .bind(&d.id)
        .bind(&d.run_id)
        .bind(&d.bill_date)
        .bind(&d.channel_id)
        .bind(&d.class)
        .bind(&d.kind)
        .bind(&d.out_no)
        .bind(d.seq)
        .bind(&d.mchid)
        .bind(&d.transaction_id)
        .bind(&d.channel_json)
        .bind(&d.platform_json)
        .bind(&d.state)
        .bind(&d.resolution)
        .bind(&d.resolved_by)
        .bind(&d.reason)
        .bind(unix_ms(d.created_at))
        .bind(opt_ms(d.resolved_at))
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    }
    for p in &s.hold {
        sqlx::query(&format!(
            "INSERT INTO recon_pool ({POOL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (channel_id, bill_date, class, kind, out_no) DO NOTHING"
        ))
        .bind(&p.id)
        .bind(&p.channel_id)
        .bind(&p.bill_date)
        .bind(&p.class)
        .bind(&p.kind)
        .bind(&p.out_no)
        .bind(&p.record_json)
        .bind(&p.state)
        .bind(&p.settled_date)
        .bind(unix_ms(p.created_at))
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    }
    for (id, state) in &s.settled {
        sqlx::query(
            "UPDATE recon_pool SET state = $2, settled_date = $3 WHERE id = $1 AND state = 'HELD'",
        )
        .bind(id)
        .bind(state)
        .bind(&r.bill_date)
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    }
    for b in &s.balances {
        sqlx::query(&format!(
            "INSERT INTO recon_balances ({BALANCE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (bill_date, channel_id, scope) DO UPDATE SET platform_json = excluded.platform_json,
               channel_json = excluded.channel_json, balanced = excluded.balanced, detail = excluded.detail, at = excluded.at"
        ))
        .bind(&b.bill_date)
        .bind(&b.channel_id)
        .bind(&b.scope)
        .bind(&b.platform_json)
        .bind(&b.channel_json)
        .bind(b.balanced)
        .bind(&b.detail)
        .bind(unix_ms(b.at))
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    }
    Ok(())
}

async fn resolve(conn: &mut PgConnection, r: &ResolveDiscrepancy) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE recon_discrepancies SET state = $3, resolution = $4, resolved_by = $5, reason = $6, resolved_at = $7
         WHERE id = $1 AND state = $2",
    )
    .bind(&r.id)
    .bind(&r.expected_state)
    .bind(&r.new_state)
    .bind(&r.resolution)
    .bind(&r.actor)
    .bind(&r.reason)
    .bind(unix_ms(r.at))
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    sqlx::query(&format!(
        "INSERT INTO recon_audit ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&r.id)
    .bind(&r.actor)
    .bind(&r.resolution)
    .bind(&r.expected_state)
    .bind(&r.new_state)
    .bind(&r.reason)
    .bind(unix_ms(r.at))
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?;
    Ok(true)
}

#[async_trait]
impl ReconStore for PgStore {
    async fn recon_platform_page(
        &self,
        kind: &str,
        channel_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&ReconCursor>,
        limit: u32,
    ) -> Result<Vec<ReconPlatformRow>> {
        let sql = match kind {
            "P" => dollars(PAYMENTS_PAGE),
            "R" => dollars(REFUNDS_PAGE),
            other => {
                return Err(StoreError::Database(format!(
                    "recon page kind {other:?}: want P or R"
                )));
            }
        };
        let (after_ms, after_no) =
            after.map_or((i64::MIN, String::new()), |c| (c.at_ms, c.out_no.clone()));
        let rows = sqlx::query(&sql)
            .bind(channel_id)
            .bind(unix_ms(from))
            .bind(unix_ms(to))
            .bind(after_ms)
            .bind(after_no)
            .bind(i64::from(limit.clamp(1, RECON_PAGE_MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(ReconPlatformRow {
                    kind: kind.to_string(),
                    out_no: get(r, 0)?,
                    transaction_id: get(r, 1)?,
                    mchid: get(r, 2)?,
                    amount_fen: get(r, 3)?,
                    state: get(r, 4)?,
                    at: from_unix_ms(get(r, 5)?)?,
                })
            })
            .collect()
    }

    async fn save_recon_run(&self, s: &ReconSave) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let step = save(&mut tx, s).await.map(|()| ((), true));
        end_tx(tx, step).await
    }

    async fn recon_runs(&self, bill_date: &str) -> Result<Vec<ReconRunRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLS} FROM recon_runs WHERE bill_date = $1 ORDER BY channel_id"
        ))
        .bind(bill_date)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(run).collect()
    }

    async fn recon_discrepancies(
        &self,
        bill_date: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DiscrepancyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DISCREPANCY_COLS} FROM recon_discrepancies
             WHERE ($1::text IS NULL OR bill_date = $1) AND ($2::text IS NULL OR state = $2)
             ORDER BY bill_date DESC, channel_id, class, out_no, seq LIMIT $3"
        ))
        .bind(bill_date)
        .bind(state)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(discrepancy).collect()
    }

    async fn get_recon_discrepancy(&self, id: &str) -> Result<Option<DiscrepancyRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DISCREPANCY_COLS} FROM recon_discrepancies WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        row.as_ref().map(discrepancy).transpose()
    }

    async fn resolve_recon_discrepancy(&self, r: &ResolveDiscrepancy) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let step = resolve(&mut tx, r).await.map(|done| (done, done));
        end_tx(tx, step).await
    }

    async fn recon_audit(&self, discrepancy_id: &str) -> Result<Vec<ReconAuditRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLS} FROM recon_audit WHERE discrepancy_id = $1 ORDER BY at"
        ))
        .bind(discrepancy_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(audit).collect()
    }

    async fn recon_pool_held(&self, channel_id: &str) -> Result<Vec<ReconPoolRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {POOL_COLS} FROM recon_pool WHERE channel_id = $1 AND state = 'HELD' ORDER BY bill_date, out_no"
        ))
        .bind(channel_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(pool_item).collect()
    }

    async fn recon_pool_settled_on(
        &self,
        channel_id: &str,
        bill_date: &str,
    ) -> Result<Vec<ReconPoolRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {POOL_COLS} FROM recon_pool WHERE channel_id = $1 AND settled_date = $2 AND state IN ('MATCHED', 'MISMATCHED') ORDER BY bill_date, out_no"
        ))
        .bind(channel_id)
        .bind(bill_date)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(pool_item).collect()
    }

    async fn recon_balances(&self, bill_date: &str) -> Result<Vec<ReconBalanceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {BALANCE_COLS} FROM recon_balances WHERE bill_date = $1 ORDER BY channel_id, scope"
        ))
        .bind(bill_date)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(balance).collect()
    }
}
