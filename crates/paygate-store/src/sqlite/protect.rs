//! SQLite side of data protection (issue 7): vault keys, the openid vault, re-sealing,
//! the shared nonce table and the operator audit trail. The sealing itself is generic
//! (`crate::vault`); this file only says how SQLite reads and writes it.

use rusqlite::{Connection, OptionalExtension as _, params};
use time::OffsetDateTime;

use super::threads::Done;
use super::{SqliteStore, sqlite_err};
use crate::StoreError;
use crate::codec::{from_unix_ms, unix_ms};
use crate::vault::{
    AuditRecord, KeyPurpose, NewAuditEntry, OpenidRow, SealedColumn, Sealer, VaultBackend,
    WrappedKey, stale_page_sql,
};

type Result<T> = std::result::Result<T, StoreError>;

const KEY_COLS: &str =
    "key_id, purpose, master_key_id, wrapped, created_at, activate_at, retired_at";
const AUDIT_COLS: &str = "seq, at, actor, action, target, detail, prev_hash, hash";

/// Writes the vault row of an openid (kept if the token exists: same openid, same token).
pub(super) fn put_openid(conn: &Connection, row: Option<&OpenidRow>) -> Result<()> {
    if let Some(row) = row {
        conn.prepare_cached(
            "INSERT INTO openid_vault (token, sealed, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (token) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                row.token,
                row.sealed,
                unix_ms(OffsetDateTime::now_utc())
            ])
        })
        .map_err(sqlite_err)?;
    }
    Ok(())
}

/// The sealed openids of `tokens` found in the vault.
pub(super) fn openid_rows(conn: &Connection, tokens: &[String]) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare_cached("SELECT token, sealed FROM openid_vault WHERE token = ?1")
        .map_err(sqlite_err)?;
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        if let Some(sealed) = stmt
            .query_row([t], |r| r.get::<_, String>(1))
            .optional()
            .map_err(sqlite_err)?
        {
            out.push((t.clone(), sealed));
        }
    }
    Ok(out)
}

fn key_from_row(r: &rusqlite::Row<'_>) -> Result<WrappedKey> {
    let get = |e: rusqlite::Error| StoreError::Corrupt(e.to_string());
    let purpose: String = r.get(1).map_err(get)?;
    Ok(WrappedKey {
        key_id: r.get(0).map_err(get)?,
        purpose: KeyPurpose::parse(&purpose)
            .ok_or_else(|| StoreError::Corrupt(format!("vault key purpose {purpose:?}")))?,
        master_key_id: r.get(2).map_err(get)?,
        wrapped: r.get(3).map_err(get)?,
        created_at: from_unix_ms(r.get(4).map_err(get)?)?,
        activate_at: from_unix_ms(r.get(5).map_err(get)?)?,
        retired_at: r
            .get::<_, Option<i64>>(6)
            .map_err(get)?
            .map(from_unix_ms)
            .transpose()?,
    })
}

fn audit_from_row(r: &rusqlite::Row<'_>) -> Result<AuditRecord> {
    let get = |e: rusqlite::Error| StoreError::Corrupt(e.to_string());
    Ok(AuditRecord {
        seq: r.get(0).map_err(get)?,
        at: from_unix_ms(r.get(1).map_err(get)?)?,
        actor: r.get(2).map_err(get)?,
        action: r.get(3).map_err(get)?,
        target: r.get(4).map_err(get)?,
        detail: r.get(5).map_err(get)?,
        prev_hash: r.get(6).map_err(get)?,
        hash: r.get(7).map_err(get)?,
    })
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_err)?;
    let mut rows = stmt.query(params).map_err(sqlite_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_err)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn append_audit(conn: &Connection, key: &[u8; 32], entry: &NewAuditEntry) -> Result<AuditRecord> {
    // The writer thread runs one command at a time: reading the head and appending after it
    // cannot interleave with another append.
    let prev = conn
        .query_row(
            "SELECT seq, hash FROM operator_audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()
        .map_err(sqlite_err)?;
    let record = AuditRecord::chained(key, prev, entry);
    conn.execute(
        &format!(
            "INSERT INTO operator_audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        params![
            record.seq,
            unix_ms(record.at),
            record.actor,
            record.action,
            record.target,
            record.detail,
            record.prev_hash,
            record.hash
        ],
    )
    .map_err(sqlite_err)?;
    Ok(record)
}

impl SqliteStore {
    pub(super) async fn openids(&self, tokens: Vec<String>) -> Result<Vec<(String, String)>> {
        self.threads
            .read_now(move |c| openid_rows(c, &tokens))
            .await
    }

    pub(super) async fn p_retire_vault_key(&self, key_id: &str) -> Result<()> {
        crate::vault::check_retirable(self, key_id).await?;
        let key_id = key_id.to_string();
        let now = unix_ms(OffsetDateTime::now_utc());
        self.threads
            .write(move |c| {
                // Crypto-shredding: the wrapped key goes, so nothing can decrypt with it again.
                c.execute(
                    "UPDATE vault_keys SET retired_at = ?2, wrapped = ''
                     WHERE key_id = ?1 AND purpose = 'DATA' AND retired_at IS NULL",
                    params![key_id, now],
                )
                .map(|_| Done::keep(()))
                .map_err(sqlite_err)
            })
            .await?;
        crate::vault::refresh(self).await
    }

    pub(super) async fn p_append_audit(&self, entry: &NewAuditEntry) -> Result<AuditRecord> {
        let key = self.sealer.audit_key()?;
        let entry = entry.clone();
        self.threads
            .write(move |c| append_audit(c, &key, &entry).map(Done::keep))
            .await
    }

    pub(super) async fn p_audit_entries(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        self.threads
            .read(move |c| {
                collect(
                    c,
                    &format!("SELECT {AUDIT_COLS} FROM operator_audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
                    params![after_seq, limit],
                    audit_from_row,
                )
            })
            .await
    }

    pub(super) async fn p_remember_nonce(
        &self,
        mchid: &str,
        nonce: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let (mchid, nonce) = (mchid.to_string(), nonce.to_string());
        let (expires_at, now) = (unix_ms(expires_at), unix_ms(now));
        self.threads
            .write(move |c| {
                // A nonce seen before is refused only while its window lasts.
                c.execute(
                    "INSERT INTO request_nonces (mchid, nonce, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (mchid, nonce) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE request_nonces.expires_at <= ?4",
                    params![mchid, nonce, expires_at, now],
                )
                .map(|n| Done::keep(n > 0))
                .map_err(sqlite_err)
            })
            .await
    }

    pub(super) async fn p_purge_nonces(&self, before: OffsetDateTime) -> Result<u64> {
        let before = unix_ms(before);
        self.threads
            .write(move |c| {
                c.execute(
                    "DELETE FROM request_nonces WHERE expires_at <= ?1",
                    [before],
                )
                .map(|n| Done::keep(n as u64))
                .map_err(sqlite_err)
            })
            .await
    }
}

#[async_trait::async_trait]
impl VaultBackend for SqliteStore {
    fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    async fn vault_keys(&self) -> Result<Vec<WrappedKey>> {
        self.threads
            .read(|c| {
                collect(
                    c,
                    &format!("SELECT {KEY_COLS} FROM vault_keys ORDER BY created_at, key_id"),
                    [],
                    key_from_row,
                )
            })
            .await
    }

    async fn insert_vault_key(&self, k: &WrappedKey) -> Result<()> {
        let k = k.clone();
        self.threads
            .write(move |c| {
                c.execute(
                    &format!(
                        "INSERT INTO vault_keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ),
                    params![
                        k.key_id,
                        k.purpose.as_str(),
                        k.master_key_id,
                        k.wrapped,
                        unix_ms(k.created_at),
                        unix_ms(k.activate_at),
                        k.retired_at.map(unix_ms)
                    ],
                )
                .map(|_| Done::keep(()))
                .map_err(sqlite_err)
            })
            .await
    }

    async fn stale_values_after(
        &self,
        col: &SealedColumn,
        after: &str,
        keep_prefix: &str,
        limit: u32,
    ) -> Result<Vec<(String, Option<String>)>> {
        let sql = stale_page_sql(col, "?1", "?2", "?3");
        let (after, pattern) = (after.to_string(), keep_prefix.to_string());
        self.threads
            .read(move |c| {
                collect(c, &sql, params![after, pattern, limit], |r| {
                    Ok((
                        r.get(0).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        r.get(1).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    ))
                })
            })
            .await
    }

    async fn replace_value(
        &self,
        col: &SealedColumn,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE {table} SET {column} = ?3 WHERE {key} = ?1 AND {column} = ?2",
            table = col.table,
            column = col.column,
            key = col.key
        );
        let (key, old, new) = (key.to_string(), old.to_string(), new.to_string());
        self.threads
            .write(move |c| {
                c.execute(&sql, params![key, old, new])
                    .map(|n| Done::keep(n > 0))
                    .map_err(sqlite_err)
            })
            .await
    }

    async fn tokenize_order_openid(
        &self,
        transaction_id: &str,
        old: &str,
        row: &OpenidRow,
    ) -> Result<bool> {
        let (transaction_id, old, row) = (transaction_id.to_string(), old.to_string(), row.clone());
        self.threads
            .write(move |c| {
                put_openid(c, Some(&row))?;
                c.execute(
                    "UPDATE orders SET payer_openid = ?3 WHERE transaction_id = ?1 AND payer_openid = ?2",
                    params![transaction_id, old, row.token],
                )
                .map(|n| Done::keep(n > 0))
                .map_err(sqlite_err)
            })
            .await
    }

    async fn count_prefix(&self, col: &SealedColumn, prefix: &str) -> Result<i64> {
        let sql = format!(
            "SELECT COUNT(*) FROM {table} WHERE substr({column}, 1, length(?1)) = ?1",
            table = col.table,
            column = col.column
        );
        let pattern = prefix.to_string();
        self.threads
            .read(move |c| {
                c.query_row(&sql, [pattern], |r| r.get(0))
                    .map_err(sqlite_err)
            })
            .await
    }
}

// ---- opening what the reads return ----
impl SqliteStore {
    pub(super) async fn open_orders(
        &self,
        orders: Vec<crate::OrderRecord>,
    ) -> Result<Vec<crate::OrderRecord>> {
        self.sealer
            .open_orders(orders, |tokens| self.openids(tokens))
            .await
    }

    pub(super) async fn open_order(
        &self,
        order: Option<crate::OrderRecord>,
    ) -> Result<Option<crate::OrderRecord>> {
        Ok(self.open_orders(order.into_iter().collect()).await?.pop())
    }

    pub(super) async fn open_pairs(
        &self,
        pairs: Vec<(crate::OrderRecord, crate::AttemptRecord)>,
    ) -> Result<Vec<(crate::OrderRecord, crate::AttemptRecord)>> {
        let (orders, attempts): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        Ok(self
            .open_orders(orders)
            .await?
            .into_iter()
            .zip(attempts)
            .collect())
    }
}
