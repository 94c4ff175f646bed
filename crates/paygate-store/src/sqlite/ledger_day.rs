//! A day's clearing movements on SQLite (query and meaning in `crate::ledger_day`).

use async_trait::async_trait;
use rusqlite::params;
use time::OffsetDateTime;

use super::{SqliteStore, sqlite_err};
use crate::StoreError;
use crate::codec::unix_ms;
use crate::ledger_day::{DAY_SQL, LedgerDayRow, LedgerDayStore, clearing_id};

#[async_trait]
impl LedgerDayStore for SqliteStore {
    async fn ledger_clearing_day(
        &self,
        channel_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<LedgerDayRow>, StoreError> {
        let (id, from, to) = (clearing_id(channel_id), unix_ms(from), unix_ms(to));
        self.threads
            .read(move |c| {
                let mut stmt = c.prepare_cached(DAY_SQL).map_err(sqlite_err)?;
                let rows = stmt
                    .query_map(params![id, from, to], |r| {
                        Ok(LedgerDayRow {
                            code: r.get(0)?,
                            mchid: r.get(1)?,
                            count: r.get(2)?,
                            amount_fen: r.get(3)?,
                        })
                    })
                    .map_err(sqlite_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sqlite_err)
            })
            .await
    }
}
