//! The scale-out backend: PostgreSQL through an sqlx pool. Several `paygate serve` nodes share
//! one database, so everything that must not happen twice is decided by the database: the
//! order CAS (`… WHERE state = expected`, row-locked), the idempotency key (`ON CONFLICT DO
//! NOTHING`, which waits for a concurrent insert of the same key), and the outbox claim
//! (`FOR UPDATE SKIP LOCKED` plus a lease, so a dead node's claims come back when it expires).
//! Each writing method is one transaction; group commit is PostgreSQL's own, across the pool.
//!
//! URL: `postgres://…[?schema=NAME&max_connections=N]` (or `postgresql://`). Other query
//! parameters (`sslmode`, …) go to sqlx. `schema` puts every table in that schema (created if
//! missing) by setting the connections' `search_path`: this is how tests, and several
//! independent gateways, share one database without seeing each other. `max_connections` is
//! the store's pool. Beside it, up to `nonces::UNSYNCED_MAX` (8) connections whose commits do not
//! wait for the WAL flush carry the replay check's nonce inserts (`postgres/nonces.rs`) and
//! `update_attempt_unsynced`, so a node holds at most N + 8 backends.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use time::OffsetDateTime;

use crate::codec::{
    self, ATTEMPT_COLS, CERT_COLS, Cols, DELIVERY_COLS, MERCHANT_COLS, NOTIFICATION_COLS,
    ORDER_COL_COUNT, ORDER_COLS, PLATFORM_KEY_COLS, REPAIR_COLS, RISK_COLS, RULE_AUDIT_COLS,
    RULE_SET_COLS, opt_ms, unix_ms,
};
use crate::{
    AttemptChange, AttemptRecord, ChannelVolume, CreateOrder, DeliveryRecord, FinishedDelivery,
    MerchantCertRecord, MerchantRecord, MerchantStatus, NotificationRecord, NotificationState,
    OrderChange, OrderRecord, PlatformKeyRecord, RepairRecord, Store, StoreError, migrate,
};

/// Pool size unless told otherwise (measured.md: 16 connections commit ~20k tx/s).
pub const MAX_CONNECTIONS_DEFAULT: u32 = 16;
/// Upper bound on `max_connections` from a URL.
pub const MAX_CONNECTIONS_MAX: usize = 1024;
/// How long a call waits for a free connection before failing.
pub const ACQUIRE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// A schema name, as `schema=` accepts it: lowercase letters, digits and `_`, at most 63 bytes
/// (PostgreSQL's identifier length), not starting with a digit. No quoting games.
pub const SCHEMA_NAME_BYTES_MAX: usize = 63;

/// How long [`drop_schema`] waits for locks on the schema's tables.
pub const DROP_LOCK_TIMEOUT_MS: u64 = 10_000;

type Result<T> = std::result::Result<T, StoreError>;
use crate::sharing::{
    CreateShare, CreateShareReturn, ShareAmounts, ShareChange, ShareLimits, ShareOrderRecord,
    ShareReceiverRecord, ShareReturnChange, ShareReturnRecord,
};

// Refunds live in their own file; they share this file's helpers.
mod refunds;
// Profit sharing, likewise (helper SHARING).
mod sharing;
// The ledger and its journal (helper LEDGER).
pub(crate) mod ledger;
// A day's clearing movements (postgres/ledger_day.rs; helper LEDGER-RECON).
mod ledger_day;
// Bills, likewise.
mod bills;
// Data protection (vault keys, openid vault, nonces, audit trail), likewise.
mod protect;
// The replay check's nonce inserts, batched (nonces.rs).
mod nonces;
// Reconciliation (postgres/recon.rs; helper RECON).
mod recon;
// Daily settlement (postgres/settlement.rs; helper SETTLE).
mod settlement;

#[derive(Clone, Debug)]
pub struct PgOptions {
    pub max_connections: u32,
    /// Tables live in this schema (created if missing) instead of the server's default.
    pub schema: Option<String>,
    pub acquire_timeout_ms: u64,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS_DEFAULT,
            schema: None,
            acquire_timeout_ms: ACQUIRE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl PgOptions {
    /// Takes this store's own parameters (`schema`, `max_connections`) out of `url`, leaving
    /// the rest for sqlx.
    pub fn from_url(url: &str) -> Result<(String, Self)> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut options = Self::default();
        let mut rest = Vec::new();
        for (key, value) in crate::url_params(query)? {
            match key {
                "schema" => options.schema = Some(check_schema_name(value)?.to_string()),
                "max_connections" => {
                    let n = crate::parse_count("max_connections", value, MAX_CONNECTIONS_MAX)?;
                    options.max_connections = u32::try_from(n).unwrap_or(MAX_CONNECTIONS_DEFAULT);
                }
                _ => rest.push(format!("{key}={value}")),
            }
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        Ok((url, options))
    }
}

/// Checks a schema name (see [`SCHEMA_NAME_BYTES_MAX`]).
pub fn check_schema_name(name: &str) -> Result<&str> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok_start && ok_chars && name.len() <= SCHEMA_NAME_BYTES_MAX {
        Ok(name)
    } else {
        Err(StoreError::BadUrl(format!(
            "schema name {name:?}: want [a-z_][a-z0-9_]{{0,62}}"
        )))
    }
}

pub struct PgStore {
    pool: PgPool,
    /// Connections with `synchronous_commit = off`, opened when first needed (`nonces::pool`).
    unsynced: PgPool,
    nonces: nonces::NonceBatcher,
    /// Seals sensitive fields once a vault is attached (crate::vault, postgres/protect.rs).
    sealer: crate::vault::Sealer,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions> {
    // sqlx's message may quote the URL, password included: say only that it is malformed.
    PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::BadUrl("malformed PostgreSQL URL".into()))
}

impl PgStore {
    /// One order by either key, as stored (sealed).
    async fn read_order(&self, key: crate::OrderKey<'_>) -> Result<Option<OrderRecord>> {
        match key {
            crate::OrderKey::OutTradeNo {
                mchid,
                out_trade_no,
            } => {
                let mut conn = self.pool.acquire().await.map_err(pg_err)?;
                order_by_key(&mut conn, mchid, out_trade_no).await
            }
            crate::OrderKey::TransactionId(id) => {
                let row = sqlx::query(&format!(
                    "SELECT {ORDER_COLS} FROM orders WHERE transaction_id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(pg_err)?;
                row.map(|r| codec::order(&r, 0)).transpose()
            }
        }
    }

    /// Connects by URL, honouring `schema` and `max_connections` (see the module doc).
    pub async fn connect_url(url: &str) -> Result<Self> {
        let (url, options) = PgOptions::from_url(url)?;
        Self::connect(&url, &options).await
    }

    /// Connects the pool, creating `options.schema` if missing, and applies the migrations.
    pub async fn connect(url: &str, options: &PgOptions) -> Result<Self> {
        let mut connect = connect_options(url)?;
        if let Some(schema) = &options.schema {
            create_schema(&connect, check_schema_name(schema)?).await?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            // No ping before every checkout (a round trip per call): a connection that died
            // fails its next statement once and is dropped from the pool; every write here is
            // one transaction, so such a failure writes nothing and a retry is safe.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_millis(options.acquire_timeout_ms))
            .connect_with(connect.clone())
            .await
            .map_err(pg_err)?;
        migrate_postgres(&pool).await?;
        let unsynced = nonces::pool(connect, options);
        Ok(Self {
            nonces: nonces::NonceBatcher::new(unsynced.clone()),
            unsynced,
            pool,
            sealer: Default::default(),
        })
    }

    /// The pool, for callers that keep other tables in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn create_schema(connect: &PgConnectOptions, schema: &str) -> Result<()> {
    let mut conn = PgConnection::connect_with(connect).await.map_err(pg_err)?;
    let created = simple(
        &mut conn,
        &format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
    )
    .await;
    let _ = conn.close().await;
    match created {
        // Two processes creating the same schema at once: the loser's conflict means it exists.
        Err(StoreError::Conflict(_)) => Ok(()),
        other => other,
    }
}

/// Drops `schema` and everything in it (a test's clean-up). Connect with the URL without
/// `schema=`; the name is checked like `schema=`'s.
pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    // A bounded wait: a connection left inside a transaction on the schema (a store not closed)
    // must make this fail, not hang the caller.
    let sql = format!(
        "SET lock_timeout = {DROP_LOCK_TIMEOUT_MS}; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        check_schema_name(schema)?
    );
    let (url, _) = PgOptions::from_url(url)?;
    let mut conn = PgConnection::connect_with(&connect_options(&url)?)
        .await
        .map_err(pg_err)?;
    let dropped = simple(&mut conn, &sql).await;
    let _ = conn.close().await;
    dropped
}

/// Runs `sql` — one or more statements without parameters, e.g. a migration file — with the
/// simple query protocol. (Not `sqlx::raw_sql`: rustc cannot prove its future `Send` for every
/// lifetime, which made `open(..)` unusable inside `tokio::spawn`.)
async fn simple(conn: &mut PgConnection, sql: &str) -> Result<()> {
    conn.execute(sql).await.map(|_| ()).map_err(pg_err)
}

async fn migrate_postgres(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await.map_err(pg_err)?;
    // Nodes starting together take turns (per schema); the lock ends with the transaction.
    simple(
        &mut tx,
        "SELECT pg_advisory_xact_lock(1885697, hashtext(COALESCE(current_schema(), '')))",
    )
    .await?;
    simple(
        &mut tx,
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    BIGINT NOT NULL PRIMARY KEY,
             name       TEXT   NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    )
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_err)?;
    let now = unix_ms(OffsetDateTime::now_utc());
    for m in migrate::pending(migrate::POSTGRES, current)? {
        simple(&mut tx, m.sql).await?;
        sqlx::query("INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied PostgreSQL migration"
        );
    }
    tx.commit().await.map_err(pg_err)
}

/// sqlx's error in the store's terms: SQLSTATE 23505 (unique violation) is a conflict.
pub(crate) fn pg_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            StoreError::Conflict(db.message().to_string())
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Database(e.to_string()),
    }
}

impl Cols for PgRow {
    fn text(&self, i: usize) -> Result<String> {
        self.try_get(i).map_err(pg_err)
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.try_get(i).map_err(pg_err)
    }

    fn int(&self, i: usize) -> Result<i64> {
        self.try_get(i).map_err(pg_err)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.try_get(i).map_err(pg_err)
    }

    fn int32(&self, i: usize) -> Result<i32> {
        self.try_get(i).map_err(pg_err)
    }

    fn opt_int32(&self, i: usize) -> Result<Option<i32>> {
        self.try_get(i).map_err(pg_err)
    }
}

fn order_attempt_select() -> String {
    format!(
        "SELECT {}, {} FROM attempts a JOIN orders o ON o.transaction_id = a.transaction_id",
        codec::qualified("o", ORDER_COLS),
        codec::qualified("a", ATTEMPT_COLS)
    )
}

fn order_and_attempt(r: &PgRow) -> Result<(OrderRecord, AttemptRecord)> {
    Ok((codec::order(r, 0)?, codec::attempt(r, ORDER_COL_COUNT)?))
}

fn decode_all<T>(rows: &[PgRow], decode: impl Fn(&PgRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(decode).collect()
}

async fn insert_cert(conn: &mut PgConnection, c: &MerchantCertRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO merchant_certs (mchid, serial_no, pem, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&c.mchid)
    .bind(&c.serial_no)
    .bind(&c.pem)
    .bind(unix_ms(c.created_at))
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(pg_err)
}

async fn insert_attempt(conn: &mut PgConnection, a: &AttemptRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO attempts (attempt_id, transaction_id, seq, channel_id, state, prepay_id, code_url, h5_url,
             prepay_expires_at, channel_transaction_id, error_code, error_message, decision, created_at,
             updated_at, last_polled_at, next_poll_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&a.attempt_id)
    .bind(&a.transaction_id)
    .bind(a.seq)
    .bind(&a.channel_id)
    .bind(a.state.as_str())
    .bind(&a.prepay_id)
    .bind(&a.code_url)
    .bind(&a.h5_url)
    .bind(opt_ms(a.prepay_expires_at))
    .bind(&a.channel_transaction_id)
    .bind(&a.error_code)
    .bind(&a.error_message)
    .bind(&a.decision)
    .bind(unix_ms(a.created_at))
    .bind(unix_ms(a.updated_at))
    .bind(opt_ms(a.last_polled_at))
    .bind(opt_ms(a.poll_schedule()))
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(pg_err)
}

/// The attempt compare-and-set; with `of_order`, the attempt must also belong to that order.
async fn update_attempt(
    conn: &mut PgConnection,
    c: &AttemptChange,
    of_order: Option<&str>,
) -> Result<bool> {
    let expected: Vec<&str> = c.expected_states.iter().map(|s| s.as_str()).collect();
    let done = sqlx::query(
        "UPDATE attempts SET state = $2,
             prepay_id = COALESCE($3, prepay_id),
             code_url = COALESCE($4, code_url),
             h5_url = COALESCE($5, h5_url),
             prepay_expires_at = COALESCE($6, prepay_expires_at),
             channel_transaction_id = COALESCE($7, channel_transaction_id),
             error_code = COALESCE($8, error_code),
             error_message = COALESCE($9, error_message),
             last_polled_at = COALESCE($10, last_polled_at),
             updated_at = $11,
             -- A final attempt leaves the poll index (its WHERE is next_poll_at IS NOT NULL).
             next_poll_at = CASE WHEN $15 THEN COALESCE($14, next_poll_at) END
         WHERE attempt_id = $1 AND state = ANY($12) AND ($13::TEXT IS NULL OR transaction_id = $13)",
    )
    .bind(&c.attempt_id)
    .bind(c.new_state.as_str())
    .bind(&c.prepay_id)
    .bind(&c.code_url)
    .bind(&c.h5_url)
    .bind(opt_ms(c.prepay_expires_at))
    .bind(&c.channel_transaction_id)
    .bind(&c.error_code)
    .bind(&c.error_message)
    .bind(opt_ms(c.last_polled_at))
    .bind(unix_ms(c.updated_at))
    .bind(expected)
    .bind(of_order)
    .bind(opt_ms(c.next_poll_at))
    .bind(c.new_state.is_pending())
    .execute(conn)
    .await
    .map_err(pg_err)?;
    Ok(done.rows_affected() > 0)
}

async fn insert_notification(conn: &mut PgConnection, n: &NotificationRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO notifications (id, mchid, transaction_id, event_type, url, plaintext, state, attempts,
             next_attempt_at, lease_until, created_at, delivered_at, answer_serial)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&n.id)
    .bind(&n.mchid)
    .bind(&n.transaction_id)
    .bind(&n.event_type)
    .bind(&n.url)
    .bind(&n.plaintext)
    .bind(codec::notification_state_str(n.state))
    .bind(n.attempts)
    .bind(unix_ms(n.next_attempt_at))
    .bind(opt_ms(n.lease_until))
    .bind(unix_ms(n.created_at))
    .bind(opt_ms(n.delivered_at))
    .bind(&n.answer_serial)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(pg_err)
}

async fn insert_repair(conn: &mut PgConnection, r: &RepairRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO order_repairs (id, transaction_id, source, way, before_state, after_state, detail, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&r.id)
    .bind(&r.transaction_id)
    .bind(&r.source)
    .bind(&r.way)
    .bind(r.before_state.as_str())
    .bind(r.after_state.as_str())
    .bind(&r.detail)
    .bind(unix_ms(r.at))
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(pg_err)
}

async fn order_by_key(
    conn: &mut PgConnection,
    mchid: &str,
    out_trade_no: &str,
) -> Result<Option<OrderRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLS} FROM orders WHERE mchid = $1 AND out_trade_no = $2"
    ))
    .bind(mchid)
    .bind(out_trade_no)
    .fetch_optional(conn)
    .await
    .map_err(pg_err)?;
    row.map(|r| codec::order(&r, 0)).transpose()
}

async fn insert_merchant(
    conn: &mut PgConnection,
    m: &MerchantRecord,
    cert: &MerchantCertRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO merchants (mchid, name, appid, apiv3_key, status, channel_id, channel_sub_mchid,
             channel_sub_appid, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&m.mchid)
    .bind(&m.name)
    .bind(&m.appid)
    .bind(&m.apiv3_key)
    .bind(codec::merchant_status_str(m.status))
    .bind(&m.channel_id)
    .bind(&m.channel_sub_mchid)
    .bind(&m.channel_sub_appid)
    .bind(unix_ms(m.created_at))
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?;
    insert_cert(conn, cert).await
}

/// The money-safety path: order CAS, attempt CAS, outbox row, repair row. Ok(false) when a
/// compare-and-set did not match: the caller rolls everything back.
async fn apply_order_change(conn: &mut PgConnection, c: &OrderChange) -> Result<bool> {
    // The row lock taken here serializes racing changes; a loser re-checks `state` after
    // the winner commits (READ COMMITTED) and matches nothing.
    let moved = sqlx::query(
        "UPDATE orders SET state = $3, version = version + 1,
             success_time = COALESCE($4, success_time),
             bank_type = COALESCE($5, bank_type),
             payer_openid = COALESCE($6, payer_openid),
             updated_at = $7
         WHERE transaction_id = $1 AND state = $2",
    )
    .bind(&c.transaction_id)
    .bind(c.expected_state.as_str())
    .bind(c.new_state.as_str())
    .bind(opt_ms(c.success_time))
    .bind(&c.bank_type)
    .bind(&c.payer_openid)
    .bind(unix_ms(c.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?
    .rows_affected();
    if moved == 0 {
        return Ok(false);
    }
    if let Some(attempt) = &c.attempt {
        if !update_attempt(conn, attempt, Some(&c.transaction_id)).await? {
            return Ok(false);
        }
    }
    if let Some(n) = &c.notification {
        insert_notification(conn, n).await?;
    }
    if let Some(r) = &c.repair {
        insert_repair(conn, r).await?;
    }
    if let Some(posting) = &c.ledger {
        // A refusal is an error: the caller rolls the whole change back.
        ledger::apply_posting(conn, posting, crate::ledger::now_ms(c.updated_at)).await?;
    }
    Ok(true)
}

/// Many deliveries in ONE statement: each attempt row is inserted only for a notification that
/// exists and an attempt number not yet recorded, and only the notifications whose row went in
/// move on, and only those still due when they were claimed change state (no re-send since).
/// Ids are de-duplicated (the first stays) and sorted, so two batches lock rows in the same
/// order.
async fn finish_deliveries(pool: &PgPool, done: &[FinishedDelivery]) -> Result<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut rows: Vec<&FinishedDelivery> = done
        .iter()
        .filter(|f| seen.insert(f.delivery.notification_id.as_str()))
        .collect();
    rows.sort_by(|a, b| a.delivery.notification_id.cmp(&b.delivery.notification_id));
    let mut cols = DeliveryColumns::default();
    for finished in rows {
        let d = &finished.delivery;
        let (state, delivered_at, next_attempt_at) = codec::delivery_effect(d, &finished.outcome);
        cols.id.push(d.notification_id.as_str());
        cols.attempt.push(d.attempt);
        cols.at.push(unix_ms(d.at));
        cols.http_status.push(d.http_status);
        cols.error.push(d.error.as_deref());
        cols.duration_ms.push(d.duration_ms);
        cols.state.push(state);
        cols.delivered_at.push(delivered_at);
        cols.next_attempt_at.push(next_attempt_at);
        cols.claimed_due.push(unix_ms(finished.claimed_due));
    }
    // Every right-hand side of the SET reads the row as it was, so both CASEs test the
    // claimed due.
    let recorded = sqlx::query(
        "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::int[], $3::bigint[], $4::int[], $5::text[],
                                  $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[])
                 AS t(id, attempt, at, http_status, error, duration_ms, state, delivered_at,
                      next_attempt_at, claimed_due)),
         recorded AS (
             INSERT INTO notification_deliveries (notification_id, attempt, at, http_status, error, duration_ms)
             SELECT i.id, i.attempt, i.at, i.http_status, i.error, i.duration_ms
             FROM input i JOIN notifications n ON n.id = i.id
             ON CONFLICT (notification_id, attempt) DO NOTHING
             RETURNING notification_id)
         UPDATE notifications n SET attempts = n.attempts + 1, lease_until = NULL,
             state = CASE WHEN n.next_attempt_at = i.claimed_due THEN i.state ELSE n.state END,
             delivered_at = COALESCE(i.delivered_at, n.delivered_at),
             next_attempt_at = CASE WHEN n.next_attempt_at = i.claimed_due
                 THEN COALESCE(i.next_attempt_at, n.next_attempt_at) ELSE n.next_attempt_at END
         FROM input i JOIN recorded r ON r.notification_id = i.id
         WHERE n.id = i.id",
    )
    .bind(&cols.id)
    .bind(&cols.attempt)
    .bind(&cols.at)
    .bind(&cols.http_status)
    .bind(&cols.error)
    .bind(&cols.duration_ms)
    .bind(&cols.state)
    .bind(&cols.delivered_at)
    .bind(&cols.next_attempt_at)
    .bind(&cols.claimed_due)
    .execute(pool)
    .await
    .map_err(pg_err)?
    .rows_affected();
    Ok(usize::try_from(recorded).unwrap_or(usize::MAX))
}

/// `finish_deliveries`' parameters, one array per column.
#[derive(Default)]
struct DeliveryColumns<'a> {
    id: Vec<&'a str>,
    attempt: Vec<i32>,
    at: Vec<i64>,
    http_status: Vec<Option<i32>>,
    error: Vec<Option<&'a str>>,
    duration_ms: Vec<i64>,
    state: Vec<&'static str>,
    delivered_at: Vec<Option<i64>>,
    next_attempt_at: Vec<Option<i64>>,
    claimed_due: Vec<i64>,
}

/// The version check and both inserts of a rule set, inside the caller's transaction. Two
/// transactions that read the same newest version both try to insert the next one: the
/// primary key makes the second wait for the first and then fail (23505, a conflict).
async fn insert_risk_rule_set(
    conn: &mut PgConnection,
    set: &crate::RiskRuleSetRecord,
    changes_json: &str,
) -> Result<()> {
    let newest: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM risk_rule_sets")
            .fetch_one(&mut *conn)
            .await
            .map_err(pg_err)?;
    if set.version != newest + 1 {
        return Err(codec::rule_set_version_conflict(set.version, newest));
    }
    sqlx::query(
        "INSERT INTO risk_rule_sets (version, rules_json, lists_json, created_by, created_at, comment)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(set.version)
    .bind(&set.rules_json)
    .bind(&set.lists_json)
    .bind(&set.created_by)
    .bind(unix_ms(set.created_at))
    .bind(&set.comment)
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?;
    sqlx::query(
        "INSERT INTO risk_rule_audit (version, author, at, comment, changes_json)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(set.version)
    .bind(&set.created_by)
    .bind(unix_ms(set.created_at))
    .bind(&set.comment)
    .bind(changes_json)
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(pg_err)
}

/// Ends a method's transaction before the method returns: commit when the step says to keep
/// its writes, roll back otherwise — on an error too, so the connection goes back to the pool
/// clean instead of relying on sqlx's background clean-up (which needs a live runtime).
async fn end_tx<T>(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    step: Result<(T, bool)>,
) -> Result<T> {
    match step {
        Ok((value, true)) => tx.commit().await.map(|()| value).map_err(pg_err),
        Ok((value, false)) => tx.rollback().await.map(|()| value).map_err(pg_err),
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback after a failed store call failed");
            }
            Err(e)
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    // ---- data protection (issue 7; crate::vault, postgres/protect.rs) ----

    async fn attach_vault(
        &self,
        master: std::sync::Arc<dyn crate::vault::MasterKey>,
    ) -> Result<()> {
        crate::vault::attach(self, master).await
    }

    async fn refresh_vault_keys(&self) -> Result<()> {
        crate::vault::refresh(self).await
    }

    async fn rotate_data_key(&self) -> Result<crate::vault::WrappedKey> {
        crate::vault::rotate(self).await
    }

    async fn retire_data_key(&self, key_id: &str) -> Result<()> {
        self.p_retire_vault_key(key_id).await
    }

    async fn reseal_batch(&self) -> Result<crate::vault::ResealReport> {
        crate::vault::reseal_batch(self).await
    }

    async fn vault_status(&self) -> Result<crate::vault::VaultStatus> {
        crate::vault::status(self).await
    }

    async fn remember_nonce(
        &self,
        mchid: &str,
        nonce: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.p_remember_nonce(mchid, nonce, expires_at, now).await
    }

    async fn purge_nonces(&self, before: OffsetDateTime) -> Result<u64> {
        self.p_purge_nonces(before).await
    }

    async fn append_audit(
        &self,
        entry: &crate::vault::NewAuditEntry,
    ) -> Result<crate::vault::AuditRecord> {
        self.p_append_audit(entry).await
    }

    async fn audit_entries(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::vault::AuditRecord>> {
        self.p_audit_entries(after_seq, limit).await
    }

    async fn verify_audit(&self) -> Result<crate::vault::AuditVerdict> {
        crate::vault::verify_audit(&self.sealer, self).await
    }

    async fn insert_merchant(&self, m: &MerchantRecord, cert: &MerchantCertRecord) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let step = insert_merchant(&mut tx, m, cert).await.map(|()| ((), true));
        end_tx(tx, step).await
    }

    async fn get_merchant(&self, mchid: &str) -> Result<Option<MerchantRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MERCHANT_COLS} FROM merchants WHERE mchid = $1"
        ))
        .bind(mchid)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        row.as_ref().map(codec::merchant).transpose()
    }

    async fn list_merchants(&self) -> Result<Vec<MerchantRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {MERCHANT_COLS} FROM merchants ORDER BY mchid"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, codec::merchant)
    }

    async fn set_merchant_status(&self, mchid: &str, status: MerchantStatus) -> Result<bool> {
        let done = sqlx::query("UPDATE merchants SET status = $2 WHERE mchid = $1")
            .bind(mchid)
            .bind(codec::merchant_status_str(status))
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_merchant_cert(&self, cert: &MerchantCertRecord) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(pg_err)?;
        insert_cert(&mut conn, cert).await
    }

    async fn merchant_certs(&self, mchid: &str) -> Result<Vec<MerchantCertRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {CERT_COLS} FROM merchant_certs WHERE mchid = $1 ORDER BY created_at, serial_no"
        ))
        .bind(mchid)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, codec::cert)
    }

    async fn insert_platform_key(&self, k: &PlatformKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO platform_keys (key_id, kind, private_key_pem, certificate_pem, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&k.key_id)
        .bind(codec::key_kind_str(k.kind))
        .bind(&k.private_key_pem)
        .bind(&k.certificate_pem)
        .bind(unix_ms(k.created_at))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_err)
    }

    async fn rotate_platform_key(&self, k: &PlatformKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO platform_keys (key_id, kind, private_key_pem, certificate_pem, created_at, generation)
             SELECT $1, $2, $3, $4, $5, COALESCE(MAX(generation), 0) + 1 FROM platform_keys WHERE kind = $2",
        )
        .bind(&k.key_id)
        .bind(codec::key_kind_str(k.kind))
        .bind(&k.private_key_pem)
        .bind(&k.certificate_pem)
        .bind(unix_ms(k.created_at))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_err)
    }

    async fn platform_keys(&self) -> Result<Vec<PlatformKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PLATFORM_KEY_COLS} FROM platform_keys ORDER BY created_at, key_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, codec::platform_key)
    }

    async fn create_order_with_risk(
        &self,
        o: &OrderRecord,
        a: &AttemptRecord,
        risk: Option<&crate::RiskDecisionRecord>,
    ) -> Result<CreateOrder> {
        // Stored sealed: the openid's vault row first, the order with its token after.
        let (sealed, openid) = self.sealer.seal_order(o)?;
        self.put_openid(openid.as_ref()).await?;
        let o = &sealed;
        // One statement, so one round trip and its own transaction: the attempt is inserted
        // only from the order row the CTE inserted (none on a key conflict), and an error in
        // either insert fails both. ON CONFLICT covers the idempotency key only: a concurrent
        // insert of the same key makes this wait for it, then do nothing; a clash on
        // transaction_id (or attempt_id) stays a Conflict.
        let inserted = sqlx::query(
            "WITH new_order AS (
                 INSERT INTO orders (transaction_id, mchid, out_trade_no, appid, trade_type, state,
                     description, attach, notify_url, total_fen, currency, payer_openid, time_expire,
                     fingerprint, request_json, created_at, updated_at, success_time, bank_type, version,
                     fee_rate_ppm, fee_fen, channel_cost_ppm, channel_cost_fen, profit_sharing)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                     $19, $20, $37, $38, $39, $40, $41)
                 ON CONFLICT (mchid, out_trade_no) DO NOTHING
                 RETURNING transaction_id)
             , new_risk AS (
                 INSERT INTO risk_decisions (id, mchid, kind, reference, transaction_id, action, score,
                     fired_json, rules_version, at)
                 SELECT $42, $43, $44, $45, $46, $47, $48, $49, $50, $51
                 FROM new_order WHERE $42::text IS NOT NULL)
             INSERT INTO attempts (attempt_id, transaction_id, seq, channel_id, state, prepay_id, code_url,
                 h5_url, prepay_expires_at, channel_transaction_id, error_code, error_message, decision,
                 created_at, updated_at, last_polled_at, next_poll_at)
             SELECT $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36,
                 $52
             FROM new_order",
        )
        .bind(&o.transaction_id)
        .bind(&o.mchid)
        .bind(&o.out_trade_no)
        .bind(&o.appid)
        .bind(&o.trade_type)
        .bind(o.state.as_str())
        .bind(&o.description)
        .bind(&o.attach)
        .bind(&o.notify_url)
        .bind(o.total_fen)
        .bind(&o.currency)
        .bind(&o.payer_openid)
        .bind(unix_ms(o.time_expire))
        .bind(&o.fingerprint)
        .bind(&o.request_json)
        .bind(unix_ms(o.created_at))
        .bind(unix_ms(o.updated_at))
        .bind(opt_ms(o.success_time))
        .bind(&o.bank_type)
        .bind(o.version)
        .bind(&a.attempt_id)
        .bind(&a.transaction_id)
        .bind(a.seq)
        .bind(&a.channel_id)
        .bind(a.state.as_str())
        .bind(&a.prepay_id)
        .bind(&a.code_url)
        .bind(&a.h5_url)
        .bind(opt_ms(a.prepay_expires_at))
        .bind(&a.channel_transaction_id)
        .bind(&a.error_code)
        .bind(&a.error_message)
        .bind(&a.decision)
        .bind(unix_ms(a.created_at))
        .bind(unix_ms(a.updated_at))
        .bind(opt_ms(a.last_polled_at))
        .bind(o.pricing.fee_rate_ppm)
        .bind(o.pricing.fee_fen)
        .bind(o.pricing.channel_cost_ppm)
        .bind(o.pricing.channel_cost_fen)
        .bind(i64::from(o.profit_sharing))
        .bind(risk.map(|d| d.id.as_str()))
        .bind(risk.map(|d| d.mchid.as_str()))
        .bind(risk.map(|d| d.kind.as_str()))
        .bind(risk.map(|d| d.reference.as_str()))
        .bind(risk.and_then(|d| d.transaction_id.as_deref()))
        .bind(risk.map(|d| d.action.as_str()))
        .bind(risk.map(|d| d.score))
        .bind(risk.map(|d| d.fired_json.as_str()))
        .bind(risk.map(|d| d.rules_version))
        .bind(risk.map(|d| unix_ms(d.at)))
        .bind(opt_ms(a.poll_schedule()))
        .execute(&self.pool)
        .await
        .map_err(pg_err)?
        .rows_affected();
        if inserted > 0 {
            return Ok(CreateOrder::Created);
        }
        // READ COMMITTED: a new statement sees the row the conflicting transaction committed.
        let mut conn = self.pool.acquire().await.map_err(pg_err)?;
        let existing = order_by_key(&mut conn, &o.mchid, &o.out_trade_no)
            .await?
            .ok_or_else(|| {
                StoreError::Database(format!(
                    "order ({}, {}) conflicted but is not there",
                    o.mchid, o.out_trade_no
                ))
            })?;
        Ok(CreateOrder::Exists(
            self.open_orders(vec![existing]).await?.remove(0),
        ))
    }

    async fn get_order(&self, mchid: &str, out_trade_no: &str) -> Result<Option<OrderRecord>> {
        let key = crate::OrderKey::OutTradeNo {
            mchid,
            out_trade_no,
        };
        let order = self.read_order(key).await?;
        self.open_order(order).await
    }

    async fn get_order_by_transaction_id(
        &self,
        transaction_id: &str,
    ) -> Result<Option<OrderRecord>> {
        let order = self
            .read_order(crate::OrderKey::TransactionId(transaction_id))
            .await?;
        self.open_order(order).await
    }

    async fn get_order_view(&self, key: crate::OrderKey<'_>) -> Result<Option<OrderRecord>> {
        let order = self.read_order(key).await?;
        (self.sealer)
            .open_order_view(order, |t| self.openids(t))
            .await
    }

    async fn attempts(&self, transaction_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE transaction_id = $1 ORDER BY seq"
        ))
        .bind(transaction_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, |r| codec::attempt(r, 0))
    }

    async fn find_attempt(&self, attempt_id: &str) -> Result<Option<(OrderRecord, AttemptRecord)>> {
        let row = sqlx::query(&format!(
            "{} WHERE a.attempt_id = $1",
            order_attempt_select()
        ))
        .bind(attempt_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        let found = row.as_ref().map(order_and_attempt).transpose()?;
        Ok(self.open_pairs(found.into_iter().collect()).await?.pop())
    }

    async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(pg_err)?;
        insert_attempt(&mut conn, attempt).await
    }

    async fn update_attempt(&self, change: &AttemptChange) -> Result<bool> {
        let mut conn = self.pool.acquire().await.map_err(pg_err)?;
        update_attempt(&mut conn, change, None).await
    }

    async fn update_attempt_unsynced(&self, change: &AttemptChange) -> Result<bool> {
        // One statement, its own transaction, committed without waiting for the WAL flush.
        // PostgreSQL flushes its WAL in order, so a later synced commit (the order's PAID, say)
        // makes this one durable too.
        let mut conn = self.unsynced.acquire().await.map_err(pg_err)?;
        update_attempt(&mut conn, change, None).await
    }

    async fn apply_order_change(&self, c: &OrderChange) -> Result<bool> {
        let mut sealed = c.clone();
        let (token, openid) = self.sealer.seal_openid(c.payer_openid.as_deref())?;
        sealed.payer_openid = token;
        if let Some(n) = &c.notification {
            sealed.notification = Some(self.sealer.seal_notification(n)?);
        }
        self.put_openid(openid.as_ref()).await?;
        let c = &sealed;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let step = apply_order_change(&mut tx, c)
            .await
            .map(|applied| (applied, applied));
        end_tx(tx, step).await
    }

    async fn attempts_to_poll(
        &self,
        due_by: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(OrderRecord, AttemptRecord)>> {
        // `next_poll_at <= $1` implies the partial index's `next_poll_at IS NOT NULL` (migrate.rs).
        let rows = sqlx::query(&format!(
            "{} WHERE a.state IN ('CREATED', 'PREPAID', 'UNKNOWN')
               AND o.state IN ('NOTPAY', 'PAYERROR')
               AND a.next_poll_at <= $1
             ORDER BY a.next_poll_at, a.attempt_id
             LIMIT $2",
            order_attempt_select()
        ))
        .bind(unix_ms(due_by))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        let pairs = decode_all(&rows, order_and_attempt)?;
        self.open_pairs(pairs).await
    }

    async fn insert_risk_decision(&self, d: &crate::RiskDecisionRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO risk_decisions (id, mchid, kind, reference, transaction_id, action, score, fired_json, rules_version, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&d.id)
        .bind(&d.mchid)
        .bind(&d.kind)
        .bind(&d.reference)
        .bind(&d.transaction_id)
        .bind(&d.action)
        .bind(d.score)
        .bind(&d.fired_json)
        .bind(d.rules_version)
        .bind(unix_ms(d.at))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_err)
    }

    async fn risk_decisions(
        &self,
        mchid: &str,
        reference: &str,
    ) -> Result<Vec<crate::RiskDecisionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {RISK_COLS} FROM risk_decisions WHERE mchid = $1 AND reference = $2 ORDER BY at, id"
        ))
        .bind(mchid)
        .bind(reference)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, codec::risk_decision)
    }

    async fn risk_decisions_by_action(
        &self,
        action: &str,
        limit: u32,
    ) -> Result<Vec<crate::RiskDecisionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {RISK_COLS} FROM risk_decisions WHERE action = $1 ORDER BY at DESC, id DESC LIMIT $2"
        ))
        .bind(action)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, codec::risk_decision)
    }

    async fn insert_risk_rule_set(
        &self,
        set: &crate::RiskRuleSetRecord,
        changes_json: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let step = insert_risk_rule_set(&mut tx, set, changes_json)
            .await
            .map(|()| ((), true));
        end_tx(tx, step).await
    }

    async fn risk_rule_set_version(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM risk_rule_sets")
            .fetch_one(&self.pool)
            .await
            .map_err(pg_err)
    }

    async fn risk_rule_set(&self, version: i64) -> Result<Option<crate::RiskRuleSetRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {RULE_SET_COLS} FROM risk_rule_sets WHERE version = $1"
        ))
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        row.as_ref().map(codec::risk_rule_set).transpose()
    }

    async fn risk_rule_audit(&self, limit: u32) -> Result<Vec<crate::RiskRuleAuditRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {RULE_AUDIT_COLS} FROM risk_rule_audit ORDER BY version DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, codec::risk_rule_audit)
    }

    async fn repairs(&self, transaction_id: &str) -> Result<Vec<RepairRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {REPAIR_COLS} FROM order_repairs WHERE transaction_id = $1 ORDER BY at, id"
        ))
        .bind(transaction_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, codec::repair)
    }

    async fn channel_volumes(&self, since: OffsetDateTime) -> Result<Vec<ChannelVolume>> {
        let rows = sqlx::query(
            "SELECT a.channel_id, SUM(o.total_fen)::BIGINT FROM attempts a
               JOIN orders o ON o.transaction_id = a.transaction_id
              WHERE a.created_at >= $1 AND a.state IN ('PREPAID', 'PAID')
              GROUP BY a.channel_id ORDER BY a.channel_id",
        )
        .bind(unix_ms(since))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, |r| {
            Ok(ChannelVolume {
                channel_id: r.try_get(0).map_err(pg_err)?,
                amount_fen: r.try_get(1).map_err(pg_err)?,
            })
        })
    }

    async fn claim_notifications(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>> {
        // SKIP LOCKED: a row another node is claiming right now is passed over, not waited
        // for; once that node commits, its lease keeps the row out of later claims.
        let rows = sqlx::query(&format!(
            "WITH due AS (
                 SELECT id FROM notifications
                 WHERE state = $3 AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
                 ORDER BY next_attempt_at, id
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             UPDATE notifications n SET lease_until = $2 FROM due WHERE n.id = due.id
             RETURNING {}",
            codec::qualified("n", NOTIFICATION_COLS)
        ))
        .bind(unix_ms(now))
        .bind(unix_ms(lease_until))
        .bind(codec::notification_state_str(NotificationState::Pending))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        let mut claimed = decode_all(&rows, codec::notification)?;
        codec::sort_claimed(&mut claimed);
        self.sealer.open_notifications(claimed)
    }

    async fn finish_deliveries(&self, done: &[FinishedDelivery]) -> Result<usize> {
        finish_deliveries(&self.pool, done).await
    }

    async fn resend_notifications(&self, ids: &[String], now: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE notifications SET state = $2,
                 next_attempt_at = CASE WHEN next_attempt_at = $3 THEN $3 + 1 ELSE $3 END
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(codec::notification_state_str(NotificationState::Pending))
        .bind(unix_ms(now))
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(done.rows_affected())
    }

    async fn get_notification(&self, id: &str) -> Result<Option<NotificationRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLS} FROM notifications WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        row.as_ref()
            .map(codec::notification)
            .transpose()?
            .map(|n| self.sealer.open_notification(n))
            .transpose()
    }

    async fn notifications_of(&self, transaction_id: &str) -> Result<Vec<NotificationRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLS} FROM notifications WHERE transaction_id = $1 ORDER BY created_at, id"
        ))
        .bind(transaction_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        self.sealer
            .open_notifications(decode_all(&rows, codec::notification)?)
    }

    fn pool_stats(&self) -> crate::PoolStats {
        // The unsynced connections (postgres/nonces.rs) count too: they are PostgreSQL
        // backends like the others.
        let unsynced = &self.unsynced;
        let idle = self.pool.num_idle().saturating_add(unsynced.num_idle());
        crate::PoolStats {
            connections: self.pool.size().saturating_add(unsynced.size()),
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            ..Default::default()
        }
    }

    async fn close(&self) {
        self.unsynced.close().await;
        self.pool.close().await;
    }

    async fn deliveries(&self, notification_id: &str) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM notification_deliveries WHERE notification_id = $1 ORDER BY attempt"
        ))
        .bind(notification_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        decode_all(&rows, codec::delivery)
    }

    // ---- profit sharing (postgres/sharing.rs; helper SHARING) ----

    async fn upsert_share_receiver(&self, receiver: &ShareReceiverRecord) -> Result<()> {
        // A personal account is stored as its vault token; the vault row goes first.
        let (receiver, row) = self.sealer.seal_receiver(receiver)?;
        self.put_openid(row.as_ref()).await?;
        sharing::upsert_receiver(&self.pool, &receiver).await
    }

    async fn delete_share_receiver(
        &self,
        mchid: &str,
        r#type: &str,
        account: &str,
    ) -> Result<bool> {
        let (account, _) = self.sealer.seal_account(r#type, account)?;
        sharing::delete_receiver(&self.pool, mchid, r#type, &account).await
    }

    async fn share_receivers(&self, mchid: &str) -> Result<Vec<ShareReceiverRecord>> {
        let list = sharing::receivers(&self.pool, mchid).await?;
        let openids = self
            .open_openid_tokens(crate::receiver_seal::receiver_tokens(&list))
            .await?;
        Ok(crate::receiver_seal::open_receivers(&openids, list))
    }

    async fn share_receiver_users(
        &self,
        channel_id: &str,
        r#type: &str,
        account: &str,
    ) -> Result<i64> {
        let (account, _) = self.sealer.seal_account(r#type, account)?;
        sharing::receiver_users(&self.pool, channel_id, r#type, &account).await
    }

    async fn share_max_ratio(&self, mchid: &str) -> Result<Option<u32>> {
        sharing::max_ratio(&self.pool, mchid).await
    }

    async fn set_share_max_ratio(
        &self,
        mchid: &str,
        max_ratio_bp: u32,
        at: OffsetDateTime,
    ) -> Result<()> {
        sharing::set_max_ratio(&self.pool, mchid, max_ratio_bp, at).await
    }

    async fn create_share(
        &self,
        order: &ShareOrderRecord,
        limits: ShareLimits,
    ) -> Result<CreateShare> {
        let (order, rows) = self.sealer.seal_share(order)?;
        for row in &rows {
            self.put_openid(Some(row)).await?;
        }
        let created = sharing::create_share(&self.pool, &order, limits).await?;
        let tokens =
            crate::receiver_seal::share_tokens(crate::receiver_seal::created_share(&created));
        let openids = self.open_openid_tokens(tokens).await?;
        crate::receiver_seal::open_created(&self.sealer, &openids, created)
    }

    async fn get_share(&self, mchid: &str, out_order_no: &str) -> Result<Option<ShareOrderRecord>> {
        let found = sharing::get_share(&self.pool, mchid, out_order_no).await?;
        Ok(self.open_shares(found.into_iter().collect()).await?.pop())
    }

    async fn get_share_by_id(&self, order_id: &str) -> Result<Option<ShareOrderRecord>> {
        let found = sharing::get_share_by_id(&self.pool, order_id).await?;
        Ok(self.open_shares(found.into_iter().collect()).await?.pop())
    }

    async fn shares_of(&self, transaction_id: &str) -> Result<Vec<ShareOrderRecord>> {
        let list = sharing::shares_of(&self.pool, transaction_id).await?;
        self.open_shares(list).await
    }

    async fn share_amounts(&self, transaction_id: &str) -> Result<Option<ShareAmounts>> {
        sharing::share_amounts(&self.pool, transaction_id).await
    }

    async fn apply_share_change(&self, change: &ShareChange) -> Result<bool> {
        let mut change = change.clone();
        for n in change.notifications.iter_mut() {
            *n = self.sealer.seal_notification(n)?;
        }
        if let Some(lines) = &change.receivers {
            let (sealed, rows) = self.sealer.seal_lines(lines)?;
            for row in &rows {
                self.put_openid(Some(row)).await?;
            }
            change.receivers = Some(sealed);
        }
        sharing::apply_share_change(&self.pool, &change).await
    }

    async fn shares_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ShareOrderRecord>> {
        let list = sharing::shares_to_poll(&self.pool, polled_before, limit).await?;
        self.open_shares(list).await
    }

    async fn mark_share_polled(&self, order_id: &str, at: OffsetDateTime) -> Result<bool> {
        sharing::mark_share_polled(&self.pool, order_id, at).await
    }

    async fn create_share_return(&self, ret: &ShareReturnRecord) -> Result<CreateShareReturn> {
        sharing::create_return(&self.pool, ret).await
    }

    async fn get_share_return(
        &self,
        mchid: &str,
        out_return_no: &str,
    ) -> Result<Option<ShareReturnRecord>> {
        sharing::get_return(&self.pool, mchid, out_return_no).await
    }

    async fn get_share_return_by_id(&self, return_id: &str) -> Result<Option<ShareReturnRecord>> {
        sharing::get_return_by_id(&self.pool, return_id).await
    }

    async fn apply_share_return_change(&self, change: &ShareReturnChange) -> Result<bool> {
        let mut change = change.clone();
        if let Some(n) = &change.notification {
            change.notification = Some(self.sealer.seal_notification(n)?);
        }
        sharing::apply_return_change(&self.pool, &change).await
    }

    async fn share_returns_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ShareReturnRecord>> {
        sharing::returns_to_poll(&self.pool, polled_before, limit).await
    }

    async fn mark_share_return_polled(&self, return_id: &str, at: OffsetDateTime) -> Result<bool> {
        sharing::mark_return_polled(&self.pool, return_id, at).await
    }

    // ---- refunds (postgres/refunds.rs) ----

    async fn create_refund(&self, refund: &crate::RefundRecord) -> Result<crate::CreateRefund> {
        refunds::create_refund(&self.pool, refund).await
    }

    async fn get_refund(
        &self,
        mchid: &str,
        out_refund_no: &str,
    ) -> Result<Option<crate::RefundRecord>> {
        refunds::get_refund(&self.pool, mchid, out_refund_no).await
    }

    async fn get_refund_by_id(&self, refund_id: &str) -> Result<Option<crate::RefundRecord>> {
        refunds::get_refund_by_id(&self.pool, refund_id).await
    }

    async fn refunds_of(&self, transaction_id: &str) -> Result<Vec<crate::RefundRecord>> {
        refunds::refunds_of(&self.pool, transaction_id).await
    }

    async fn duplicate_refunds_open(&self, limit: u32) -> Result<Vec<crate::RefundRecord>> {
        refunds::duplicate_refunds_open(&self.pool, limit).await
    }

    async fn refunded_fen(&self, transaction_id: &str) -> Result<Option<i64>> {
        refunds::refunded_fen(&self.pool, transaction_id).await
    }

    async fn apply_refund_change(&self, change: &crate::RefundChange) -> Result<bool> {
        let mut change = change.clone();
        if let Some(n) = &change.notification {
            change.notification = Some(self.sealer.seal_notification(n)?);
        }
        refunds::apply_refund_change(&self.pool, &change).await
    }

    async fn record_duplicate_payment(&self, d: &crate::DuplicatePayment) -> Result<bool> {
        refunds::record_duplicate_payment(&self.pool, d).await
    }

    async fn refunds_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<crate::RefundRecord>> {
        refunds::refunds_to_poll(&self.pool, polled_before, limit).await
    }

    async fn mark_refund_polled(&self, refund_id: &str, at: OffsetDateTime) -> Result<bool> {
        refunds::mark_refund_polled(&self.pool, refund_id, at).await
    }

    // ---- merchant bills (postgres/bills.rs) ----

    async fn close_bill_day(&self, day: &crate::bills::BillDayRecord) -> Result<bool> {
        bills::close_bill_day(&self.pool, day).await
    }

    async fn bill_day(&self, bill_date: &str) -> Result<Option<crate::bills::BillDayRecord>> {
        bills::bill_day(&self.pool, bill_date).await
    }

    async fn paid_orders_between(
        &self,
        mchid: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&crate::bills::BillCursor>,
        limit: u32,
    ) -> Result<Vec<OrderRecord>> {
        let orders =
            bills::paid_orders_between(&self.pool, mchid, (from, to), after, limit).await?;
        self.open_orders(orders).await
    }

    async fn billed_refunds_between(
        &self,
        mchid: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&crate::bills::BillCursor>,
        limit: u32,
    ) -> Result<Vec<crate::RefundRecord>> {
        bills::billed_refunds_between(&self.pool, mchid, (from, to), after, limit).await
    }

    async fn merchant_flow_before(
        &self,
        mchid: &str,
        before: OffsetDateTime,
    ) -> Result<crate::bills::MerchantFlowTotals> {
        bills::merchant_flow_before(&self.pool, mchid, before).await
    }

    async fn keep_bill_file(
        &self,
        file: &crate::bills::BillFileRecord,
    ) -> Result<crate::bills::BillFileRecord> {
        bills::keep_bill_file(&self.pool, file).await
    }

    async fn bill_file(
        &self,
        mchid: &str,
        bill_date: &str,
        kind: &str,
    ) -> Result<Option<crate::bills::BillFileRecord>> {
        bills::bill_file(&self.pool, mchid, bill_date, kind).await
    }

    async fn insert_bill_download(
        &self,
        download: &crate::bills::BillDownloadRecord,
        now: OffsetDateTime,
    ) -> Result<()> {
        bills::insert_bill_download(&self.pool, download, now).await
    }

    async fn bill_download(&self, token: &str) -> Result<Option<crate::bills::BillDownloadRecord>> {
        bills::bill_download(&self.pool, token).await
    }

    // ---- the ledger (postgres/ledger.rs; helper LEDGER) ----

    async fn post_ledger(
        &self,
        posting: &paygate_ledger::Posting,
        at: OffsetDateTime,
    ) -> Result<paygate_ledger::Applied> {
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let step = ledger::apply_posting(&mut tx, posting, crate::ledger::now_ms(at))
            .await
            .map(|applied| (applied, true));
        end_tx(tx, step).await
    }

    async fn ledger_accounts(&self, owner: Option<&str>) -> Result<Vec<paygate_ledger::Account>> {
        ledger::accounts_of(&self.pool, owner).await
    }

    async fn ledger_account(
        &self,
        id: paygate_ledger::AccountId,
    ) -> Result<Option<paygate_ledger::Account>> {
        ledger::account_by_id(&self.pool, &id.to_hex()).await
    }

    async fn ledger_transfer(
        &self,
        id: paygate_ledger::TransferId,
    ) -> Result<Option<crate::ledger::LedgerTransferRow>> {
        ledger::transfer_by_id(&self.pool, &id.to_hex()).await
    }

    async fn ledger_transfers_by_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<crate::ledger::LedgerTransferRow>> {
        ledger::transfers_by_reference(&self.pool, reference).await
    }

    async fn journal_entries(
        &self,
        from_index: u64,
        limit: u32,
    ) -> Result<Vec<crate::ledger::LedgerTransferRow>> {
        ledger::journal_entries(&self.pool, from_index, limit).await
    }

    async fn unsequenced_transfers(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::ledger::LedgerTransferRow>> {
        ledger::unsequenced(&self.pool, after_seq, limit).await
    }

    async fn ledger_checkpoints(&self, limit: u32) -> Result<Vec<crate::ledger::CheckpointRecord>> {
        ledger::checkpoints(&self.pool, limit).await
    }

    async fn integrate_journal(
        &self,
        signer: std::sync::Arc<paygate_ledger::NoteSigner>,
        origin: &str,
        batch_max: u32,
        now: OffsetDateTime,
    ) -> Result<crate::ledger::Integrated> {
        ledger::integrate(&self.pool, &signer, origin, batch_max, now).await
    }
}
