//! PostgreSQL side of data protection (issue 7): vault keys, the openid vault, re-sealing,
//! the nonce table shared by every node, and the operator audit trail (appends serialized by
//! a transaction-scoped advisory lock).

use sqlx::Row as _;
use time::OffsetDateTime;

use super::{PgStore, pg_err};
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
/// The advisory lock that serializes audit appends across nodes ("audit" in ASCII).
const AUDIT_LOCK: i64 = 0x61_7564_6974;

fn corrupt(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn key_from_row(r: &sqlx::postgres::PgRow) -> Result<WrappedKey> {
    let purpose: String = r.try_get(1).map_err(corrupt)?;
    Ok(WrappedKey {
        key_id: r.try_get(0).map_err(corrupt)?,
        purpose: KeyPurpose::parse(&purpose)
            .ok_or_else(|| StoreError::Corrupt(format!("vault key purpose {purpose:?}")))?,
        master_key_id: r.try_get(2).map_err(corrupt)?,
        wrapped: r.try_get(3).map_err(corrupt)?,
        created_at: from_unix_ms(r.try_get(4).map_err(corrupt)?)?,
        activate_at: from_unix_ms(r.try_get(5).map_err(corrupt)?)?,
        retired_at: r
            .try_get::<Option<i64>, _>(6)
            .map_err(corrupt)?
            .map(from_unix_ms)
            .transpose()?,
    })
}

fn audit_from_row(r: &sqlx::postgres::PgRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get(0).map_err(corrupt)?,
        at: from_unix_ms(r.try_get(1).map_err(corrupt)?)?,
        actor: r.try_get(2).map_err(corrupt)?,
        action: r.try_get(3).map_err(corrupt)?,
        target: r.try_get(4).map_err(corrupt)?,
        detail: r.try_get(5).map_err(corrupt)?,
        prev_hash: r.try_get(6).map_err(corrupt)?,
        hash: r.try_get(7).map_err(corrupt)?,
    })
}

impl PgStore {
    /// Writes the vault row of an openid before the row that references it: idempotent (the
    /// same openid always has the same token), and an orphan holds only ciphertext.
    pub(super) async fn put_openid(&self, row: Option<&OpenidRow>) -> Result<()> {
        if let Some(row) = row {
            sqlx::query(
                "INSERT INTO openid_vault (token, sealed, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (token) DO NOTHING",
            )
            .bind(&row.token)
            .bind(&row.sealed)
            .bind(unix_ms(OffsetDateTime::now_utc()))
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        }
        Ok(())
    }

    pub(super) async fn openids(&self, tokens: Vec<String>) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT token, sealed FROM openid_vault WHERE token = ANY($1)")
            .bind(&tokens)
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(corrupt)?,
                    r.try_get(1).map_err(corrupt)?,
                ))
            })
            .collect()
    }

    /// The openids of vault tokens (profit-sharing receivers, crate::receiver_seal).
    pub(super) async fn open_openid_tokens(
        &self,
        tokens: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>> {
        self.sealer.open_tokens(tokens, |t| self.openids(t)).await
    }

    /// Share orders with their personal receivers' openids back in place.
    pub(super) async fn open_shares(
        &self,
        list: Vec<crate::sharing::ShareOrderRecord>,
    ) -> Result<Vec<crate::sharing::ShareOrderRecord>> {
        let openids = self
            .open_openid_tokens(crate::receiver_seal::share_tokens(&list))
            .await?;
        list.into_iter()
            .map(|o| crate::receiver_seal::open_share(&self.sealer, &openids, o))
            .collect()
    }

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

    pub(super) async fn p_retire_vault_key(&self, key_id: &str) -> Result<()> {
        crate::vault::check_retirable(self, key_id).await?;
        // Crypto-shredding: the wrapped key goes, so nothing can decrypt with it again.
        sqlx::query(
            "UPDATE vault_keys SET retired_at = $2, wrapped = ''
             WHERE key_id = $1 AND purpose = 'DATA' AND retired_at IS NULL",
        )
        .bind(key_id)
        .bind(unix_ms(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        crate::vault::refresh(self).await
    }

    pub(super) async fn p_append_audit(&self, entry: &NewAuditEntry) -> Result<AuditRecord> {
        let key = self.sealer.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let step = async {
            // Appends from every node take turns: the head read and the insert after it are
            // one step.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(pg_err)?;
            let prev =
                sqlx::query("SELECT seq, hash FROM operator_audit ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(pg_err)?
                    .map(|r| -> Result<(i64, String)> {
                        Ok((
                            r.try_get(0).map_err(corrupt)?,
                            r.try_get(1).map_err(corrupt)?,
                        ))
                    })
                    .transpose()?;
            let record = AuditRecord::chained(&key, prev, entry);
            sqlx::query(&format!(
                "INSERT INTO operator_audit ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(record.seq)
            .bind(unix_ms(record.at))
            .bind(&record.actor)
            .bind(&record.action)
            .bind(&record.target)
            .bind(&record.detail)
            .bind(&record.prev_hash)
            .bind(&record.hash)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
            Ok((record, true))
        }
        .await;
        super::end_tx(tx, step).await
    }

    pub(super) async fn p_audit_entries(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLS} FROM operator_audit WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    pub(super) async fn p_remember_nonce(
        &self,
        mchid: &str,
        nonce: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        // A nonce seen before is refused only while its window lasts; two nodes inserting the
        // same one at once: the unique key lets exactly one through (nonces.rs batches them).
        self.nonces
            .remember(mchid, nonce, unix_ms(expires_at), unix_ms(now))
            .await
    }

    pub(super) async fn p_purge_nonces(&self, before: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM request_nonces WHERE expires_at <= $1")
            .bind(unix_ms(before))
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait::async_trait]
impl VaultBackend for PgStore {
    fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    async fn vault_keys(&self) -> Result<Vec<WrappedKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM vault_keys ORDER BY created_at, key_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn insert_vault_key(&self, k: &WrappedKey) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO vault_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&k.key_id)
        .bind(k.purpose.as_str())
        .bind(&k.master_key_id)
        .bind(&k.wrapped)
        .bind(unix_ms(k.created_at))
        .bind(unix_ms(k.activate_at))
        .bind(k.retired_at.map(unix_ms))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_err)
    }

    async fn stale_values_after(
        &self,
        col: &SealedColumn,
        after: &str,
        keep_prefix: &str,
        limit: u32,
    ) -> Result<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(&stale_page_sql(col, "$1", "$2", "$3"))
            .bind(after)
            .bind(keep_prefix)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(corrupt)?,
                    r.try_get(1).map_err(corrupt)?,
                ))
            })
            .collect()
    }

    async fn replace_value(
        &self,
        col: &SealedColumn,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE {table} SET {column} = $3 WHERE {key} = $1 AND {column} = $2",
            table = col.table,
            column = col.column,
            key = col.key
        ))
        .bind(key)
        .bind(old)
        .bind(new)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn tokenize_order_openid(
        &self,
        transaction_id: &str,
        old: &str,
        row: &OpenidRow,
    ) -> Result<bool> {
        self.put_openid(Some(row)).await?;
        let done = sqlx::query(
            "UPDATE orders SET payer_openid = $3 WHERE transaction_id = $1 AND payer_openid = $2",
        )
        .bind(transaction_id)
        .bind(old)
        .bind(&row.token)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_prefix(&self, col: &SealedColumn, prefix: &str) -> Result<i64> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) FROM {table} WHERE substr({column}, 1, length($1)) = $1",
            table = col.table,
            column = col.column
        ))
        .bind(prefix)
        .fetch_one(&self.pool)
        .await
        .map_err(pg_err)?;
        row.try_get(0).map_err(corrupt)
    }
}
