//! A day's clearing movements on PostgreSQL (query and meaning in `crate::ledger_day`).

use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::{PgStore, pg_err};
use crate::StoreError;
use crate::codec::unix_ms;
use crate::ledger_day::{DAY_SQL, LedgerDayRow, LedgerDayStore, clearing_id};

#[async_trait]
impl LedgerDayStore for PgStore {
    async fn ledger_clearing_day(
        &self,
        channel_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<LedgerDayRow>, StoreError> {
        let rows = sqlx::query(&DAY_SQL.replace('?', "$"))
            .bind(clearing_id(channel_id))
            .bind(unix_ms(from))
            .bind(unix_ms(to))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let code: i64 = r.try_get(0).map_err(pg_err)?;
                Ok(LedgerDayRow {
                    code: u16::try_from(code)
                        .map_err(|_| StoreError::Database(format!("transfer code {code}")))?,
                    mchid: r.try_get(1).map_err(pg_err)?,
                    count: r.try_get(2).map_err(pg_err)?,
                    amount_fen: r.try_get(3).map_err(pg_err)?,
                })
            })
            .collect()
    }
}
