//! Daily settlement on SQLite (records and rule in `crate::settlement`). `settle_day` is one
//! write command: the single writer is the merchant's lock, so no refund can reserve between
//! reading the ledger and posting the settlement, and the row and posting commit together.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::threads::Done;
use super::{SqliteStore, sqlite_err};
use crate::StoreError;
use crate::codec::{from_unix_ms, unix_ms};
use crate::settlement::{
    CREDITED_AFTER_SQL, DAY_COUNTS_SQL, DayFigures, FREE_SQL, HELD, NOTHING, RESERVED_AFTER_SQL,
    SETTLED, SETTLEMENT_COLS, SETTLEMENTS_PAGE_MAX, SettleDay, SettlementHold, SettlementRecord,
    SettlementStore, check_day, merchant_ids, settle_posting, settlement_id,
};

type Result<T> = std::result::Result<T, StoreError>;

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<(SettlementRecord, i64, i64)> {
    Ok((
        SettlementRecord {
            mchid: r.get(0)?,
            business_date: r.get(1)?,
            settlement_id: r.get(2)?,
            status: r.get(3)?,
            amount_fen: r.get(4)?,
            payments: r.get(5)?,
            refunds: r.get(6)?,
            fee_fen: r.get(7)?,
            transfer_id: r.get(8)?,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        },
        r.get(9)?,
        r.get(10)?,
    ))
}

fn finish((mut rec, created, updated): (SettlementRecord, i64, i64)) -> Result<SettlementRecord> {
    rec.created_at = from_unix_ms(created)?;
    rec.updated_at = from_unix_ms(updated)?;
    Ok(rec)
}

fn query(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<SettlementRecord>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_err)?;
    let rows = stmt.query_map(p, record).map_err(sqlite_err)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(finish(row.map_err(sqlite_err)?)?);
    }
    Ok(out)
}

fn existing(conn: &Connection, mchid: &str, date: &str) -> Result<Option<SettlementRecord>> {
    let sql = format!(
        "SELECT {SETTLEMENT_COLS} FROM settlements WHERE mchid = ?1 AND business_date = ?2"
    );
    Ok(query(conn, &sql, params![mchid, date])?.into_iter().next())
}

fn scalar(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<i64> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row(p, |r| r.get::<_, i64>(0)))
        .optional()
        .map_err(sqlite_err)
        .map(|v| v.unwrap_or(0))
}

fn figures(conn: &Connection, d: &SettleDay) -> Result<DayFigures> {
    let ids = merchant_ids(&d.mchid);
    let cut = unix_ms(d.to);
    let counts = conn
        .prepare_cached(DAY_COUNTS_SQL)
        .and_then(|mut s| {
            s.query_row(
                params![ids.pending, ids.frozen, ids.available, unix_ms(d.from), cut],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
        })
        .map_err(sqlite_err)?;
    Ok(DayFigures {
        free: scalar(conn, FREE_SQL, params![ids.pending])?,
        credited_after: scalar(conn, CREDITED_AFTER_SQL, params![ids.pending, cut])?,
        reserved_after: scalar(conn, RESERVED_AFTER_SQL, params![ids.pending, cut])?,
        payments: counts.0,
        refunds: counts.1,
        fee: counts.2,
    })
}

fn settle(conn: &Connection, d: &SettleDay) -> Result<SettlementRecord> {
    let prior = existing(conn, &d.mchid, &d.business_date)?;
    if let Some(p) = &prior
        && p.status != HELD
    {
        return Ok(p.clone());
    }
    let held = scalar(
        conn,
        "SELECT COUNT(*) FROM settlement_holds WHERE mchid = ?1",
        params![d.mchid],
    )? > 0;
    let id = settlement_id(&d.mchid, &d.business_date);
    let f = figures(conn, d)?;
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
        super::ledger::apply_posting(conn, &posting, crate::ledger::now_ms(d.at))?;
    }
    let at = unix_ms(d.at);
    let created = prior.as_ref().map(|p| unix_ms(p.created_at)).unwrap_or(at);
    // A HELD row is replaced under the writer; a final row was returned above.
    conn.prepare_cached(
        "INSERT INTO settlements (mchid, business_date, settlement_id, status, amount_fen, payments,
             refunds, fee_fen, transfer_id, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (mchid, business_date) DO UPDATE SET status = excluded.status,
             amount_fen = excluded.amount_fen, payments = excluded.payments,
             refunds = excluded.refunds, fee_fen = excluded.fee_fen,
             transfer_id = excluded.transfer_id, updated_at = excluded.updated_at
         WHERE settlements.status = 'HELD'",
    )
    .and_then(|mut s| {
        s.execute(params![
            d.mchid,
            d.business_date,
            id,
            status,
            amount,
            f.payments,
            f.refunds,
            f.fee,
            transfer_id,
            created,
            at
        ])
    })
    .map_err(sqlite_err)?;
    existing(conn, &d.mchid, &d.business_date)?
        .ok_or_else(|| StoreError::Database("settlement row vanished in its transaction".into()))
}

#[async_trait]
impl SettlementStore for SqliteStore {
    async fn settle_day(&self, d: &SettleDay) -> Result<SettlementRecord> {
        check_day(d)?;
        let d = d.clone();
        self.threads
            .write(move |c| settle(c, &d).map(Done::keep))
            .await
    }

    async fn settlements(
        &self,
        mchid: Option<&str>,
        business_date: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SettlementRecord>> {
        let (m, d) = (mchid.map(str::to_owned), business_date.map(str::to_owned));
        let limit = limit.clamp(1, SETTLEMENTS_PAGE_MAX);
        self.threads
            .read(move |c| {
                let sql = format!(
                    "SELECT {SETTLEMENT_COLS} FROM settlements
                     WHERE (?1 IS NULL OR mchid = ?1) AND (?2 IS NULL OR business_date = ?2)
                     ORDER BY business_date, mchid LIMIT ?3"
                );
                query(c, &sql, params![m, d, limit])
            })
            .await
    }

    async fn settlement_merchants(&self) -> Result<Vec<String>> {
        let code = paygate_ledger::chart::AccountKind::MerchantPending.code();
        self.threads
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT DISTINCT owner FROM ledger_accounts WHERE code = ?1 ORDER BY owner",
                    )
                    .map_err(sqlite_err)?;
                let rows = stmt
                    .query_map(params![code], |r| r.get::<_, String>(0))
                    .map_err(sqlite_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sqlite_err)
            })
            .await
    }

    async fn released_held_settlements(&self, limit: u32) -> Result<Vec<SettlementRecord>> {
        let limit = limit.clamp(1, SETTLEMENTS_PAGE_MAX);
        self.threads
            .read(move |c| {
                let sql = format!(
                    "SELECT {SETTLEMENT_COLS} FROM settlements s WHERE status = 'HELD'
                     AND NOT EXISTS (SELECT 1 FROM settlement_holds h WHERE h.mchid = s.mchid)
                     ORDER BY business_date, mchid LIMIT ?1"
                );
                query(c, &sql, params![limit])
            })
            .await
    }

    async fn hold_settlement(&self, mchid: &str, reason: &str, at: OffsetDateTime) -> Result<bool> {
        let (m, r, at) = (mchid.to_owned(), reason.to_owned(), unix_ms(at));
        self.threads
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO settlement_holds (mchid, reason, held_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (mchid) DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![m, r, at]))
                .map(|n| Done::keep(n == 1))
                .map_err(sqlite_err)
            })
            .await
    }

    async fn release_settlement(&self, mchid: &str) -> Result<bool> {
        let m = mchid.to_owned();
        self.threads
            .write(move |c| {
                c.prepare_cached("DELETE FROM settlement_holds WHERE mchid = ?1")
                    .and_then(|mut s| s.execute(params![m]))
                    .map(|n| Done::keep(n == 1))
                    .map_err(sqlite_err)
            })
            .await
    }

    async fn settlement_holds(&self) -> Result<Vec<SettlementHold>> {
        self.threads
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT mchid, reason, held_at FROM settlement_holds ORDER BY mchid",
                    )
                    .map_err(sqlite_err)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .map_err(sqlite_err)?;
                let mut out = Vec::new();
                for row in rows {
                    let (mchid, reason, held_at) = row.map_err(sqlite_err)?;
                    out.push(SettlementHold {
                        mchid,
                        reason,
                        held_at: from_unix_ms(held_at)?,
                    });
                }
                Ok(out)
            })
            .await
    }
}
