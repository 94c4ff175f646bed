//! Reconciliation's SQL on SQLite (records in `crate::recon`). `save_recon_run` is one write
//! command, so one savepoint of the group commit: the whole run or nothing.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::threads::Done;
use super::{SqliteStore, sqlite_err};
use crate::StoreError;
use crate::codec::{from_unix_ms, opt_ms, unix_ms};
use crate::recon::{
    AUDIT_COLS, BALANCE_COLS, DISCREPANCY_COLS, DiscrepancyRecord, PAYMENTS_PAGE, POOL_COLS,
    RECON_PAGE_MAX, REFUNDS_PAGE, RUN_COLS, ReconAuditRecord, ReconBalanceRecord, ReconCursor,
    ReconPlatformRow, ReconPoolRecord, ReconRunRecord, ReconSave, ReconStore, ResolveDiscrepancy,
};

type Result<T> = std::result::Result<T, StoreError>;

fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<Result<T>>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_err)?;
    let mut rows = stmt.query(params).map_err(sqlite_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_err)? {
        out.push(decode(row).map_err(sqlite_err)??);
    }
    Ok(out)
}

fn opt_time(ms: Option<i64>) -> Result<Option<OffsetDateTime>> {
    ms.map(from_unix_ms).transpose()
}

fn run(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ReconRunRecord>> {
    let (started, finished): (i64, i64) = (r.get(4)?, r.get(5)?);
    let mut rec = ReconRunRecord {
        run_id: r.get(0)?,
        bill_date: r.get(1)?,
        channel_id: r.get(2)?,
        status: r.get(3)?,
        started_at: OffsetDateTime::UNIX_EPOCH,
        finished_at: OffsetDateTime::UNIX_EPOCH,
        bill_rows: r.get(6)?,
        platform_rows: r.get(7)?,
        matched: r.get(8)?,
        discrepancies: r.get(9)?,
        trade_bill_sha1: r.get(10)?,
        fundflow_bill_sha1: r.get(11)?,
        summary_json: r.get(12)?,
        error: r.get(13)?,
    };
    Ok((|| {
        rec.started_at = from_unix_ms(started)?;
        rec.finished_at = from_unix_ms(finished)?;
        Ok(rec)
    })())
}

fn discrepancy(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<DiscrepancyRecord>> {
    let (created, resolved): (i64, Option<i64>) = (r.get(16)?, r.get(17)?);
    let rec = DiscrepancyRecord {
        id: r.get(0)?,
        run_id: r.get(1)?,
        bill_date: r.get(2)?,
        channel_id: r.get(3)?,
        class: r.get(4)?,
        kind: r.get(5)?,
        out_no: r.get(6)?,
        seq: r.get(7)?,
        mchid: r.get(8)?,
        transaction_id: r.get(9)?,
        channel_json: r.get(10)?,
        platform_json: r.get(11)?,
        state: r.get(12)?,
        resolution: r.get(13)?,
        resolved_by: r.get(14)?,
        reason: r.get(15)?,
        created_at: OffsetDateTime::UNIX_EPOCH,
        resolved_at: None,
    };
    Ok((|| {
        Ok(DiscrepancyRecord {
            created_at: from_unix_ms(created)?,
            resolved_at: opt_time(resolved)?,
            ..rec
        })
    })())
}

fn pool_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ReconPoolRecord>> {
    let created: i64 = r.get(9)?;
    let rec = ReconPoolRecord {
        id: r.get(0)?,
        channel_id: r.get(1)?,
        bill_date: r.get(2)?,
        class: r.get(3)?,
        kind: r.get(4)?,
        out_no: r.get(5)?,
        record_json: r.get(6)?,
        state: r.get(7)?,
        settled_date: r.get(8)?,
        created_at: OffsetDateTime::UNIX_EPOCH,
    };
    Ok(from_unix_ms(created).map(|created_at| ReconPoolRecord { created_at, ..rec }))
}

fn balance(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ReconBalanceRecord>> {
    let at: i64 = r.get(7)?;
    let balanced: i64 = r.get(5)?;
    let rec = ReconBalanceRecord {
        bill_date: r.get(0)?,
        channel_id: r.get(1)?,
        scope: r.get(2)?,
        platform_json: r.get(3)?,
        channel_json: r.get(4)?,
        balanced: balanced == 1,
        detail: r.get(6)?,
        at: OffsetDateTime::UNIX_EPOCH,
    };
    Ok(from_unix_ms(at).map(|at| ReconBalanceRecord { at, ..rec }))
}

fn audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ReconAuditRecord>> {
    let at: i64 = r.get(6)?;
    let rec = ReconAuditRecord {
        discrepancy_id: r.get(0)?,
        actor: r.get(1)?,
        action: r.get(2)?,
        before_state: r.get(3)?,
        after_state: r.get(4)?,
        reason: r.get(5)?,
        at: OffsetDateTime::UNIX_EPOCH,
    };
    Ok(from_unix_ms(at).map(|at| ReconAuditRecord { at, ..rec }))
}

fn exec(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(p))
        .map_err(sqlite_err)
}

fn save(conn: &Connection, s: &ReconSave) -> Result<()> {
    let r = &s.run;
    exec(
        conn,
        "DELETE FROM recon_runs WHERE bill_date = ?1 AND channel_id = ?2",
        params![r.bill_date, r.channel_id],
    )?;
    exec(
        conn,
        &format!(
            "INSERT INTO recon_runs ({RUN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            r.run_id,
            r.bill_date,
            r.channel_id,
            r.status,
            unix_ms(r.started_at),
            unix_ms(r.finished_at),
            r.bill_rows,
            r.platform_rows,
            r.matched,
            r.discrepancies,
            r.trade_bill_sha1,
            r.fundflow_bill_sha1,
            r.summary_json,
            r.error
        ],
    )?;
    // An earlier run's OPEN findings of this day are replaced; resolved ones stay, and the
    // same finding again is skipped by the unique key.
    exec(
        conn,
        "DELETE FROM recon_discrepancies WHERE bill_date = ?1 AND channel_id = ?2 AND state = 'OPEN'",
        params![r.bill_date, r.channel_id],
    )?;
    for d in &s.discrepancies {
        exec(
            conn,
            &format!("INSERT INTO recon_discrepancies ({DISCREPANCY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
              ON CONFLICT (bill_date, channel_id, class, kind, out_no, seq) DO NOTHING"),
            params![
                d.id, d.run_id, d.bill_date, d.channel_id, d.class, d.kind, d.out_no, d.seq, d.mchid,
                d.transaction_id, d.channel_json, d.platform_json, d.state, d.resolution, d.resolved_by,
                d.reason, unix_ms(d.created_at), opt_ms(d.resolved_at)
            ],
        )?;
    }
    for p in &s.hold {
        exec(
            conn,
            &format!("INSERT INTO recon_pool ({POOL_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
              ON CONFLICT (channel_id, bill_date, class, kind, out_no) DO NOTHING"),
            params![
                p.id, p.channel_id, p.bill_date, p.class, p.kind, p.out_no, p.record_json, p.state,
                p.settled_date, unix_ms(p.created_at)
            ],
        )?;
    }
    for (id, state) in &s.settled {
        exec(
            conn,
            "UPDATE recon_pool SET state = ?2, settled_date = ?3 WHERE id = ?1 AND state = 'HELD'",
            params![id, state, r.bill_date],
        )?;
    }
    for b in &s.balances {
        exec(
            conn,
            &format!("INSERT INTO recon_balances ({BALANCE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
              ON CONFLICT (bill_date, channel_id, scope) DO UPDATE SET platform_json = excluded.platform_json,
                channel_json = excluded.channel_json, balanced = excluded.balanced, detail = excluded.detail, at = excluded.at"),
            params![b.bill_date, b.channel_id, b.scope, b.platform_json, b.channel_json, i64::from(b.balanced), b.detail, unix_ms(b.at)],
        )?;
    }
    Ok(())
}

fn resolve(conn: &Connection, r: &ResolveDiscrepancy) -> Result<bool> {
    let n = exec(
        conn,
        "UPDATE recon_discrepancies SET state = ?3, resolution = ?4, resolved_by = ?5, reason = ?6, resolved_at = ?7
         WHERE id = ?1 AND state = ?2",
        params![r.id, r.expected_state, r.new_state, r.resolution, r.actor, r.reason, unix_ms(r.at)],
    )?;
    if n == 0 {
        return Ok(false);
    }
    exec(
        conn,
        &format!("INSERT INTO recon_audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            r.id,
            r.actor,
            r.resolution,
            r.expected_state,
            r.new_state,
            r.reason,
            unix_ms(r.at)
        ],
    )?;
    Ok(true)
}

fn page(
    conn: &Connection,
    kind: &str,
    channel_id: &str,
    from: i64,
    to: i64,
    after: Option<ReconCursor>,
    limit: u32,
) -> Result<Vec<ReconPlatformRow>> {
    let sql = match kind {
        "P" => PAYMENTS_PAGE,
        "R" => REFUNDS_PAGE,
        other => {
            return Err(StoreError::Database(format!(
                "recon page kind {other:?}: want P or R"
            )));
        }
    };
    let (after_ms, after_no) = after.map_or((i64::MIN, String::new()), |c| (c.at_ms, c.out_no));
    let limit = i64::from(limit.clamp(1, RECON_PAGE_MAX));
    all(
        conn,
        sql,
        params![channel_id, from, to, after_ms, after_no, limit],
        |r| {
            let at: i64 = r.get(5)?;
            let row = ReconPlatformRow {
                kind: kind.to_string(),
                out_no: r.get(0)?,
                transaction_id: r.get(1)?,
                mchid: r.get(2)?,
                amount_fen: r.get(3)?,
                state: r.get(4)?,
                at: OffsetDateTime::UNIX_EPOCH,
            };
            Ok(from_unix_ms(at).map(|at| ReconPlatformRow { at, ..row }))
        },
    )
}

#[async_trait]
impl ReconStore for SqliteStore {
    async fn recon_platform_page(
        &self,
        kind: &str,
        channel_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&ReconCursor>,
        limit: u32,
    ) -> Result<Vec<ReconPlatformRow>> {
        let (kind, channel_id, after) = (kind.to_string(), channel_id.to_string(), after.cloned());
        let (from, to) = (unix_ms(from), unix_ms(to));
        self.threads
            .read(move |c| page(c, &kind, &channel_id, from, to, after, limit))
            .await
    }

    async fn save_recon_run(&self, s: &ReconSave) -> Result<()> {
        let s = s.clone();
        self.threads
            .write(move |c| save(c, &s).map(Done::keep))
            .await
    }

    async fn recon_runs(&self, bill_date: &str) -> Result<Vec<ReconRunRecord>> {
        let d = bill_date.to_string();
        self.threads
            .read(move |c| {
                all(
                    c,
                    &format!(
                        "SELECT {RUN_COLS} FROM recon_runs WHERE bill_date = ?1 ORDER BY channel_id"
                    ),
                    params![d],
                    run,
                )
            })
            .await
    }

    async fn recon_discrepancies(
        &self,
        bill_date: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DiscrepancyRecord>> {
        let (d, s) = (bill_date.map(str::to_string), state.map(str::to_string));
        self.threads
            .read(move |c| {
                all(
                    c,
                    &format!(
                        "SELECT {DISCREPANCY_COLS} FROM recon_discrepancies
                         WHERE (?1 IS NULL OR bill_date = ?1) AND (?2 IS NULL OR state = ?2)
                         ORDER BY bill_date DESC, channel_id, class, out_no, seq LIMIT ?3"
                    ),
                    params![d, s, i64::from(limit)],
                    discrepancy,
                )
            })
            .await
    }

    async fn get_recon_discrepancy(&self, id: &str) -> Result<Option<DiscrepancyRecord>> {
        let id = id.to_string();
        self.threads
            .read(move |c| {
                all(
                    c,
                    &format!("SELECT {DISCREPANCY_COLS} FROM recon_discrepancies WHERE id = ?1"),
                    params![id],
                    discrepancy,
                )
                .map(|v| v.into_iter().next())
            })
            .await
    }

    async fn resolve_recon_discrepancy(&self, r: &ResolveDiscrepancy) -> Result<bool> {
        let r = r.clone();
        self.threads
            .write(move |c| {
                resolve(c, &r).map(|done| {
                    if done {
                        Done::keep(true)
                    } else {
                        Done::undo(false)
                    }
                })
            })
            .await
    }

    async fn recon_audit(&self, discrepancy_id: &str) -> Result<Vec<ReconAuditRecord>> {
        let id = discrepancy_id.to_string();
        self.threads
            .read(move |c| {
                all(
                    c,
                    &format!(
                        "SELECT {AUDIT_COLS} FROM recon_audit WHERE discrepancy_id = ?1 ORDER BY at"
                    ),
                    params![id],
                    audit,
                )
            })
            .await
    }

    async fn recon_pool_held(&self, channel_id: &str) -> Result<Vec<ReconPoolRecord>> {
        let ch = channel_id.to_string();
        self.threads
            .read(move |c| {
                all(
                    c,
                    &format!("SELECT {POOL_COLS} FROM recon_pool WHERE channel_id = ?1 AND state = 'HELD' ORDER BY bill_date, out_no"),
                    params![ch],
                    pool_item,
                )
            })
            .await
    }

    async fn recon_pool_settled_on(
        &self,
        channel_id: &str,
        bill_date: &str,
    ) -> Result<Vec<ReconPoolRecord>> {
        let (ch, d) = (channel_id.to_string(), bill_date.to_string());
        self.threads
            .read(move |c| {
                all(
                    c,
                    &format!("SELECT {POOL_COLS} FROM recon_pool WHERE channel_id = ?1 AND settled_date = ?2 AND state IN ('MATCHED', 'MISMATCHED') ORDER BY bill_date, out_no"),
                    params![ch, d],
                    pool_item,
                )
            })
            .await
    }

    async fn recon_balances(&self, bill_date: &str) -> Result<Vec<ReconBalanceRecord>> {
        let d = bill_date.to_string();
        self.threads
            .read(move |c| {
                all(c, &format!("SELECT {BALANCE_COLS} FROM recon_balances WHERE bill_date = ?1 ORDER BY channel_id, scope"), params![d], balance)
            })
            .await
    }
}
