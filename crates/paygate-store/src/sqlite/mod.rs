//! The embedded backend: one SQLite file in WAL mode, written by ONE thread that
//! group-commits (see `threads.rs`), read by a few read-only connections on their own threads
//! (point reads on the calling thread).
//!
//! Why this shape (reference/measured.md, "Durable writes"): rusqlite on its own thread costs
//! ~2 µs a statement against ~50 µs through sqlx's worker hand-off, and a commit costs an
//! fsync (~90 µs) whatever it carries. So every write command is a closure run on the writer
//! thread, and the commands that queue up while one commit is in flight share the next one.
//!
//! Durability: `synchronous=FULL` by default. In WAL mode FULL syncs the WAL at every commit,
//! so an acknowledged payment survives a power cut, not only a `kill -9`. NORMAL (selectable
//! with `?synchronous=normal`) also survives a killed process — the WAL is written before the
//! commit returns, and the OS keeps it — but may lose the last commits on power loss. Group
//! commit makes FULL cheap: the fsync is paid per batch, not per payment. Measured with
//! `cargo bench -p paygate-store` on a busy 2-vCPU machine (fdatasync ~150 µs): FULL gives
//! ~5k `create_order`/s one caller at a time and ~45k/s with 64 callers in flight (~33k/s for
//! `apply_order_change` with its attempt CAS and outbox row). tests/crash.rs kills a writing
//! process with SIGKILL and finds every acknowledged order, under FULL and NORMAL alike.
//!
//! URL: `sqlite://PATH[?synchronous=full|normal&readers=N]`; `sqlite:PATH` works too. The file
//! and its directory are created if missing.

pub(crate) mod ledger;
// A day's clearing movements (ledger_day.rs; helper LEDGER-RECON).
mod ledger_day;
mod ops;
mod protect;
mod receiver_seal;
// Reconciliation (recon.rs; helper RECON).
mod recon;
// Daily settlement (settlement.rs; helper SETTLE).
mod settlement;
mod threads;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use time::OffsetDateTime;

use crate::codec::{self, Cols};
use crate::sharing::{
    CreateShare, CreateShareReturn, ShareAmounts, ShareChange, ShareLimits, ShareOrderRecord,
    ShareReceiverRecord, ShareReturnChange, ShareReturnRecord,
};
use crate::{
    AttemptChange, AttemptRecord, ChannelVolume, CreateOrder, DeliveryRecord, FinishedDelivery,
    MerchantCertRecord, MerchantRecord, MerchantStatus, NotificationRecord, OrderChange,
    OrderRecord, PlatformKeyRecord, RepairRecord, Store, StoreError, migrate,
};
use threads::{Bounds, Done, Threads};

/// Reader connections unless told otherwise: enough to overlap reads on two cores with the
/// writer busy; WAL readers never wait for the writer.
pub const READERS_DEFAULT: usize = 4;
/// Upper bound on `readers` from a URL.
pub const READERS_MAX: usize = 64;
/// Write commands sharing one transaction at most: bounds the latency one batch adds.
pub const WRITE_BATCH_MAX_DEFAULT: usize = 256;
/// Write commands waiting for the writer at most; a full queue makes callers wait (backpressure).
pub const WRITE_QUEUE_MAX_DEFAULT: usize = 4096;
/// Reads waiting for a reader at most.
pub const READ_QUEUE_MAX_DEFAULT: usize = 4096;
/// How long a connection waits for another process's lock before failing.
pub const BUSY_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Prepared statements kept per connection (the store uses a few dozen distinct ones).
const STATEMENT_CACHE_CAPACITY: usize = 128;
/// The writer's page cache, `PRAGMA cache_size` in -KiB: 64 MiB.
const WRITER_CACHE_KIB: i64 = -65_536;

/// SQLite's `synchronous` setting for the write connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteSync {
    /// fsync the WAL at every commit: survives power loss. The default.
    Full,
    /// No fsync at commit: survives a killed process, may lose the last commits on power loss.
    Normal,
}

#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pub synchronous: SqliteSync,
    pub readers: usize,
    pub write_batch_max: usize,
    pub write_queue_max: usize,
    pub read_queue_max: usize,
    pub busy_timeout_ms: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: SqliteSync::Full,
            readers: READERS_DEFAULT,
            write_batch_max: WRITE_BATCH_MAX_DEFAULT,
            write_queue_max: WRITE_QUEUE_MAX_DEFAULT,
            read_queue_max: READ_QUEUE_MAX_DEFAULT,
            busy_timeout_ms: BUSY_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl SqliteOptions {
    /// Splits what follows `sqlite://` into the file path and the options its query sets.
    pub fn from_url_tail(tail: &str) -> Result<(PathBuf, Self), StoreError> {
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        if path.is_empty() {
            return Err(StoreError::BadUrl("sqlite URL without a file path".into()));
        }
        // Each connection would get a database of its own: the readers would see nothing.
        if path.starts_with(":memory:") || path.starts_with("file:") {
            return Err(StoreError::BadUrl(format!(
                "sqlite path {path:?}: in-memory and URI databases are not supported, use a file"
            )));
        }
        let mut options = Self::default();
        for (key, value) in crate::url_params(query)? {
            match key {
                "synchronous" => {
                    options.synchronous = match value.to_ascii_lowercase().as_str() {
                        "full" => SqliteSync::Full,
                        "normal" => SqliteSync::Normal,
                        _ => {
                            return Err(StoreError::BadUrl(format!(
                                "synchronous={value}: want full or normal"
                            )));
                        }
                    }
                }
                "readers" => options.readers = crate::parse_count("readers", value, READERS_MAX)?,
                _ => {
                    return Err(StoreError::BadUrl(format!(
                        "unknown sqlite URL parameter {key:?}"
                    )));
                }
            }
        }
        Ok((PathBuf::from(path), options))
    }
}

pub struct SqliteStore {
    threads: Threads,
    path: PathBuf,
    /// Seals sensitive fields once a vault is attached (crate::vault, sqlite/protect.rs).
    sealer: crate::vault::Sealer,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) and migrates the database at `path`.
    /// Blocking work (file creation, migrations) runs off the async reactor.
    pub async fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, &options))
            .await
            .map_err(|e| StoreError::Database(format!("SQLite open task failed: {e}")))?
    }

    fn open_blocking(path: PathBuf, options: &SqliteOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut writer = open_writer(&path, options)?;
        migrate_sqlite(&mut writer)?;
        // Readers open after the writer: a read-only connection cannot create the file or
        // switch it to WAL.
        let readers = (0..options.readers.max(1))
            .map(|_| open_reader(&path, options))
            .collect::<Result<Vec<_>, _>>()?;
        let bounds = Bounds {
            write_queue_max: options.write_queue_max,
            write_batch_max: options.write_batch_max,
            read_queue_max: options.read_queue_max,
            synced_commits: options.synchronous == SqliteSync::Full,
        };
        let inline = (0..inline_readers())
            .map(|_| open_reader(&path, options))
            .collect::<Result<Vec<_>, _>>()?;
        let threads = Threads::start(writer, readers, inline, &bounds)?;
        Ok(Self {
            threads,
            path,
            sealer: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Connections for point reads on the caller's thread (`Threads::read_now`): one per core, as
/// many as the async workers that call at once.
fn inline_readers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8))
}

fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite_err)?;
    conn.busy_timeout(Duration::from_millis(options.busy_timeout_ms))
        .map_err(sqlite_err)?;
    let mode = wal_mode(&conn, Duration::from_millis(options.busy_timeout_ms))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "SQLite refused WAL mode (journal_mode={mode})"
        )));
    }
    let sync = match options.synchronous {
        SqliteSync::Full => "FULL",
        SqliteSync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(sqlite_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite_err)?;
    // Every write command runs in its own SAVEPOINT; once a batch's savepoint journal passes
    // 64 KiB, SQLite spills it to a fresh temp file (create, unlink, write, close: ~40 files a
    // second under prepay load). In memory it is a memcpy; it is never needed after a crash.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sqlite_err)?;
    // The one writer keeps its pages across transactions (it is the only one changing the
    // file), so a larger cache saves a pread per index leaf that random keys (uuids) touch;
    // SQLite's default is 2 MiB. Negative: KiB.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
        .map_err(sqlite_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(conn)
}

/// Switches the file to WAL. SQLite answers this pragma SQLITE_BUSY at once, without its busy
/// handler, while another connection is switching the same new file (several nodes starting
/// together): it is retried until the busy timeout.
fn wal_mode(conn: &Connection, busy_timeout: Duration) -> Result<String, StoreError> {
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            answer => return answer.map_err(sqlite_err),
        }
    }
}

fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite_err)?;
    conn.busy_timeout(Duration::from_millis(options.busy_timeout_ms))
        .map_err(sqlite_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(conn)
}

fn migrate_sqlite(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE takes the write lock first: a second process opening the same file waits here
    // and then finds the migrations applied.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER NOT NULL PRIMARY KEY,
             name       TEXT    NOT NULL,
             applied_at INTEGER NOT NULL
         ) STRICT",
    )
    .map_err(sqlite_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_err)?;
    let now = codec::unix_ms(OffsetDateTime::now_utc());
    for m in migrate::pending(migrate::SQLITE, current)? {
        tx.execute_batch(m.sql).map_err(sqlite_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.version, m.name, now],
        )
        .map_err(sqlite_err)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied SQLite migration"
        );
    }
    tx.commit().map_err(sqlite_err)
}

/// rusqlite's error in the store's terms: a unique or primary-key violation is a conflict.
pub(crate) fn sqlite_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(msg.clone().unwrap_or_else(|| e.to_string()))
        }
        _ => StoreError::Database(e.to_string()),
    }
}

impl Cols for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.get(i).map_err(column_err)
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.get(i).map_err(column_err)
    }

    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.get(i).map_err(column_err)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.get(i).map_err(column_err)
    }

    fn int32(&self, i: usize) -> Result<i32, StoreError> {
        self.get(i).map_err(column_err)
    }

    fn opt_int32(&self, i: usize) -> Result<Option<i32>, StoreError> {
        self.get(i).map_err(column_err)
    }
}

/// A column that does not hold what its record field needs (NULL, wrong type, out of range).
fn column_err(e: rusqlite::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl SqliteStore {
    /// One order by either key, as stored (sealed): a point read on the caller's thread.
    async fn read_order(
        &self,
        key: crate::OrderKey<'_>,
    ) -> Result<Option<OrderRecord>, StoreError> {
        match key {
            crate::OrderKey::OutTradeNo {
                mchid,
                out_trade_no,
            } => {
                let (mchid, out_trade_no) = (mchid.to_string(), out_trade_no.to_string());
                self.threads
                    .read_now(move |c| ops::get_order(c, &mchid, &out_trade_no))
                    .await
            }
            crate::OrderKey::TransactionId(id) => {
                let id = id.to_string();
                self.threads
                    .read_now(move |c| ops::get_order_by_transaction_id(c, &id))
                    .await
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> crate::PoolStats {
        let (writes, reads) = self.threads.queued();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        crate::PoolStats {
            connections: count(self.threads.connections()),
            idle: 0,
            writes_queued: count(writes),
            reads_queued: count(reads),
        }
    }

    // ---- data protection (issue 7; crate::vault, sqlite/protect.rs) ----

    async fn attach_vault(
        &self,
        master: std::sync::Arc<dyn crate::vault::MasterKey>,
    ) -> Result<(), StoreError> {
        crate::vault::attach(self, master).await
    }

    async fn refresh_vault_keys(&self) -> Result<(), StoreError> {
        crate::vault::refresh(self).await
    }

    async fn rotate_data_key(&self) -> Result<crate::vault::WrappedKey, StoreError> {
        crate::vault::rotate(self).await
    }

    async fn retire_data_key(&self, key_id: &str) -> Result<(), StoreError> {
        self.p_retire_vault_key(key_id).await
    }

    async fn reseal_batch(&self) -> Result<crate::vault::ResealReport, StoreError> {
        crate::vault::reseal_batch(self).await
    }

    async fn vault_status(&self) -> Result<crate::vault::VaultStatus, StoreError> {
        crate::vault::status(self).await
    }

    async fn remember_nonce(
        &self,
        mchid: &str,
        nonce: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.p_remember_nonce(mchid, nonce, expires_at, now).await
    }

    async fn purge_nonces(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.p_purge_nonces(before).await
    }

    async fn append_audit(
        &self,
        entry: &crate::vault::NewAuditEntry,
    ) -> Result<crate::vault::AuditRecord, StoreError> {
        self.p_append_audit(entry).await
    }

    async fn audit_entries(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::vault::AuditRecord>, StoreError> {
        self.p_audit_entries(after_seq, limit).await
    }

    async fn verify_audit(&self) -> Result<crate::vault::AuditVerdict, StoreError> {
        crate::vault::verify_audit(&self.sealer, self).await
    }

    async fn insert_merchant(
        &self,
        merchant: &MerchantRecord,
        cert: &MerchantCertRecord,
    ) -> Result<(), StoreError> {
        let (merchant, cert) = (merchant.clone(), cert.clone());
        self.threads
            .write(move |c| ops::insert_merchant(c, &merchant, &cert).map(Done::keep))
            .await
    }

    async fn get_merchant(&self, mchid: &str) -> Result<Option<MerchantRecord>, StoreError> {
        let mchid = mchid.to_string();
        self.threads
            .read_now(move |c| ops::get_merchant(c, &mchid))
            .await
    }

    async fn list_merchants(&self) -> Result<Vec<MerchantRecord>, StoreError> {
        self.threads.read(ops::list_merchants).await
    }

    async fn set_merchant_status(
        &self,
        mchid: &str,
        status: MerchantStatus,
    ) -> Result<bool, StoreError> {
        let mchid = mchid.to_string();
        self.threads
            .write(move |c| ops::set_merchant_status(c, &mchid, status).map(Done::keep))
            .await
    }

    async fn add_merchant_cert(&self, cert: &MerchantCertRecord) -> Result<(), StoreError> {
        let cert = cert.clone();
        self.threads
            .write(move |c| ops::insert_cert(c, &cert).map(Done::keep))
            .await
    }

    async fn merchant_certs(&self, mchid: &str) -> Result<Vec<MerchantCertRecord>, StoreError> {
        let mchid = mchid.to_string();
        self.threads
            .read(move |c| ops::merchant_certs(c, &mchid))
            .await
    }

    async fn insert_platform_key(&self, key: &PlatformKeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.threads
            .write(move |c| ops::insert_platform_key(c, &key).map(Done::keep))
            .await
    }

    async fn platform_keys(&self) -> Result<Vec<PlatformKeyRecord>, StoreError> {
        self.threads.read(ops::platform_keys).await
    }

    async fn rotate_platform_key(&self, key: &PlatformKeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.threads
            .write(move |c| ops::rotate_platform_key(c, &key).map(Done::keep))
            .await
    }

    async fn create_order_with_risk(
        &self,
        order: &OrderRecord,
        first_attempt: &AttemptRecord,
        risk: Option<&crate::RiskDecisionRecord>,
    ) -> Result<CreateOrder, StoreError> {
        let ((order, openid), attempt) = (self.sealer.seal_order(order)?, first_attempt.clone());
        let risk = risk.cloned();
        let created = self
            .threads
            .write(move |c| {
                protect::put_openid(c, openid.as_ref())?;
                let done = ops::create_order(c, &order, &attempt)?;
                if let (CreateOrder::Created, Some(risk)) = (&done.value, &risk) {
                    ops::insert_risk_decision(c, risk)?;
                }
                Ok(done)
            })
            .await?;
        match created {
            CreateOrder::Exists(o) => Ok(CreateOrder::Exists(
                self.open_orders(vec![o]).await?.remove(0),
            )),
            created => Ok(created),
        }
    }

    async fn get_order(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> Result<Option<OrderRecord>, StoreError> {
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
    ) -> Result<Option<OrderRecord>, StoreError> {
        let order = self
            .read_order(crate::OrderKey::TransactionId(transaction_id))
            .await?;
        self.open_order(order).await
    }

    async fn get_order_view(
        &self,
        key: crate::OrderKey<'_>,
    ) -> Result<Option<OrderRecord>, StoreError> {
        let order = self.read_order(key).await?;
        (self.sealer)
            .open_order_view(order, |t| self.openids(t))
            .await
    }

    async fn attempts(&self, transaction_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let transaction_id = transaction_id.to_string();
        self.threads
            .read_now(move |c| ops::attempts(c, &transaction_id))
            .await
    }

    async fn find_attempt(
        &self,
        attempt_id: &str,
    ) -> Result<Option<(OrderRecord, AttemptRecord)>, StoreError> {
        let attempt_id = attempt_id.to_string();
        let found = self
            .threads
            .read_now(move |c| ops::find_attempt(c, &attempt_id))
            .await?;
        Ok(self.open_pairs(found.into_iter().collect()).await?.pop())
    }

    async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError> {
        let attempt = attempt.clone();
        self.threads
            .write(move |c| ops::insert_attempt(c, &attempt).map(Done::keep))
            .await
    }

    async fn update_attempt(&self, change: &AttemptChange) -> Result<bool, StoreError> {
        let change = change.clone();
        self.threads
            .write(move |c| ops::update_attempt(c, &change, None).map(Done::keep))
            .await
    }

    async fn update_attempt_unsynced(&self, change: &AttemptChange) -> Result<bool, StoreError> {
        let change = change.clone();
        self.threads
            .write_unsynced(move |c| ops::update_attempt(c, &change, None).map(Done::keep))
            .await
    }

    async fn apply_order_change(&self, change: &OrderChange) -> Result<bool, StoreError> {
        let mut change = change.clone();
        let (token, openid) = self.sealer.seal_openid(change.payer_openid.as_deref())?;
        change.payer_openid = token;
        if let Some(n) = &change.notification {
            change.notification = Some(self.sealer.seal_notification(n)?);
        }
        self.threads
            .write(move |c| {
                protect::put_openid(c, openid.as_ref())?;
                ops::apply_order_change(c, &change)
            })
            .await
    }

    async fn attempts_to_poll(
        &self,
        due_by: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(OrderRecord, AttemptRecord)>, StoreError> {
        let pairs = self
            .threads
            .read(move |c| ops::attempts_to_poll(c, due_by, limit))
            .await?;
        self.open_pairs(pairs).await
    }

    async fn insert_risk_decision(
        &self,
        decision: &crate::RiskDecisionRecord,
    ) -> Result<(), StoreError> {
        let decision = decision.clone();
        self.threads
            .write(move |c| ops::insert_risk_decision(c, &decision).map(Done::keep))
            .await
    }

    async fn risk_decisions(
        &self,
        mchid: &str,
        reference: &str,
    ) -> Result<Vec<crate::RiskDecisionRecord>, StoreError> {
        let (mchid, reference) = (mchid.to_string(), reference.to_string());
        self.threads
            .read(move |c| ops::risk_decisions(c, &mchid, &reference))
            .await
    }

    async fn risk_decisions_by_action(
        &self,
        action: &str,
        limit: u32,
    ) -> Result<Vec<crate::RiskDecisionRecord>, StoreError> {
        let action = action.to_string();
        self.threads
            .read(move |c| ops::risk_decisions_by_action(c, &action, limit))
            .await
    }

    async fn insert_risk_rule_set(
        &self,
        set: &crate::RiskRuleSetRecord,
        changes_json: &str,
    ) -> Result<(), StoreError> {
        let (set, changes_json) = (set.clone(), changes_json.to_string());
        self.threads
            .write(move |c| ops::insert_risk_rule_set(c, &set, &changes_json).map(Done::keep))
            .await
    }

    async fn risk_rule_set_version(&self) -> Result<i64, StoreError> {
        self.threads.read_now(ops::risk_rule_set_version).await
    }

    async fn risk_rule_set(
        &self,
        version: i64,
    ) -> Result<Option<crate::RiskRuleSetRecord>, StoreError> {
        self.threads
            .read(move |c| ops::risk_rule_set(c, version))
            .await
    }

    async fn risk_rule_audit(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::RiskRuleAuditRecord>, StoreError> {
        self.threads
            .read(move |c| ops::risk_rule_audit(c, limit))
            .await
    }

    async fn repairs(&self, transaction_id: &str) -> Result<Vec<RepairRecord>, StoreError> {
        let transaction_id = transaction_id.to_string();
        self.threads
            .read(move |c| ops::repairs(c, &transaction_id))
            .await
    }

    async fn channel_volumes(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<ChannelVolume>, StoreError> {
        self.threads
            .read(move |c| ops::channel_volumes(c, since))
            .await
    }

    async fn claim_notifications(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let claimed = self
            .threads
            .write(move |c| ops::claim_notifications(c, now, lease_until, limit).map(Done::keep))
            .await?;
        self.sealer.open_notifications(claimed)
    }

    async fn finish_deliveries(&self, done: &[FinishedDelivery]) -> Result<usize, StoreError> {
        let done = done.to_vec();
        self.threads
            .write(move |c| ops::finish_deliveries(c, &done).map(Done::keep))
            .await
    }

    async fn resend_notifications(
        &self,
        ids: &[String],
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.threads
            .write(move |c| {
                let mut found = 0;
                for id in &ids {
                    found += u64::from(ops::resend_notification(c, id, now)?);
                }
                Ok(Done::keep(found))
            })
            .await
    }

    async fn get_notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError> {
        let id = id.to_string();
        let found = self
            .threads
            .read_now(move |c| ops::get_notification(c, &id))
            .await?;
        found.map(|n| self.sealer.open_notification(n)).transpose()
    }

    async fn notifications_of(
        &self,
        transaction_id: &str,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let transaction_id = transaction_id.to_string();
        let list = self
            .threads
            .read(move |c| ops::notifications_of(c, &transaction_id))
            .await?;
        self.sealer.open_notifications(list)
    }

    async fn deliveries(&self, notification_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        let notification_id = notification_id.to_string();
        self.threads
            .read(move |c| ops::deliveries(c, &notification_id))
            .await
    }

    // ---- profit sharing (ops/sharing.rs; helper SHARING) ----

    async fn upsert_share_receiver(
        &self,
        receiver: &ShareReceiverRecord,
    ) -> Result<(), StoreError> {
        // A personal account is stored as its vault token, the vault row in the same write.
        let (r, row) = self.sealer.seal_receiver(receiver)?;
        self.threads
            .write(move |c| {
                protect::put_openid(c, row.as_ref())?;
                ops::sharing::upsert_receiver(c, &r).map(Done::keep)
            })
            .await
    }

    async fn delete_share_receiver(
        &self,
        mchid: &str,
        r#type: &str,
        account: &str,
    ) -> Result<bool, StoreError> {
        let (a, _) = self.sealer.seal_account(r#type, account)?;
        let (m, t) = (mchid.to_string(), r#type.to_string());
        self.threads
            .write(move |c| ops::sharing::delete_receiver(c, &m, &t, &a).map(Done::keep))
            .await
    }

    async fn share_receivers(&self, mchid: &str) -> Result<Vec<ShareReceiverRecord>, StoreError> {
        let m = mchid.to_string();
        let list = self
            .threads
            .read(move |c| ops::sharing::receivers(c, &m))
            .await?;
        let openids = self
            .sealer
            .open_tokens(crate::receiver_seal::receiver_tokens(&list), |t| {
                self.openids(t)
            })
            .await?;
        Ok(crate::receiver_seal::open_receivers(&openids, list))
    }

    async fn share_receiver_users(
        &self,
        channel_id: &str,
        r#type: &str,
        account: &str,
    ) -> Result<i64, StoreError> {
        let (a, _) = self.sealer.seal_account(r#type, account)?;
        let (ch, t) = (channel_id.to_string(), r#type.to_string());
        self.threads
            .read(move |c| ops::sharing::receiver_users(c, &ch, &t, &a))
            .await
    }

    async fn share_max_ratio(&self, mchid: &str) -> Result<Option<u32>, StoreError> {
        let m = mchid.to_string();
        self.threads
            .read_now(move |c| ops::sharing::max_ratio(c, &m))
            .await
    }

    async fn set_share_max_ratio(
        &self,
        mchid: &str,
        max_ratio_bp: u32,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let m = mchid.to_string();
        self.threads
            .write(move |c| ops::sharing::set_max_ratio(c, &m, max_ratio_bp, at).map(Done::keep))
            .await
    }

    async fn create_share(
        &self,
        order: &ShareOrderRecord,
        limits: ShareLimits,
    ) -> Result<CreateShare, StoreError> {
        let (order, rows) = self.sealer.seal_share(order)?;
        let created = self
            .threads
            .write(move |c| {
                for row in &rows {
                    protect::put_openid(c, Some(row))?;
                }
                ops::sharing::create_share(c, &order, limits)
            })
            .await?;
        let tokens =
            crate::receiver_seal::share_tokens(crate::receiver_seal::created_share(&created));
        let openids = self.sealer.open_tokens(tokens, |t| self.openids(t)).await?;
        crate::receiver_seal::open_created(&self.sealer, &openids, created)
    }

    async fn get_share(
        &self,
        mchid: &str,
        out_order_no: &str,
    ) -> Result<Option<ShareOrderRecord>, StoreError> {
        let (m, n) = (mchid.to_string(), out_order_no.to_string());
        let found = self
            .threads
            .read_now(move |c| ops::sharing::get_share(c, &m, &n))
            .await?;
        Ok(self.open_shares(found.into_iter().collect()).await?.pop())
    }

    async fn get_share_by_id(
        &self,
        order_id: &str,
    ) -> Result<Option<ShareOrderRecord>, StoreError> {
        let id = order_id.to_string();
        let found = self
            .threads
            .read_now(move |c| ops::sharing::get_share_by_id(c, &id))
            .await?;
        Ok(self.open_shares(found.into_iter().collect()).await?.pop())
    }

    async fn shares_of(&self, transaction_id: &str) -> Result<Vec<ShareOrderRecord>, StoreError> {
        let t = transaction_id.to_string();
        let list = self
            .threads
            .read(move |c| ops::sharing::shares_of(c, &t))
            .await?;
        self.open_shares(list).await
    }

    async fn share_amounts(
        &self,
        transaction_id: &str,
    ) -> Result<Option<ShareAmounts>, StoreError> {
        let t = transaction_id.to_string();
        self.threads
            .read(move |c| ops::sharing::share_amounts(c, &t))
            .await
    }

    async fn apply_share_change(&self, change: &ShareChange) -> Result<bool, StoreError> {
        let mut change = change.clone();
        for n in change.notifications.iter_mut() {
            *n = self.sealer.seal_notification(n)?;
        }
        let mut rows = Vec::new();
        if let Some(lines) = &change.receivers {
            let (sealed, r) = self.sealer.seal_lines(lines)?;
            change.receivers = Some(sealed);
            rows = r;
        }
        self.threads
            .write(move |c| {
                for row in &rows {
                    protect::put_openid(c, Some(row))?;
                }
                ops::sharing::apply_share_change(c, &change)
            })
            .await
    }

    async fn shares_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ShareOrderRecord>, StoreError> {
        let list = self
            .threads
            .read(move |c| ops::sharing::shares_to_poll(c, polled_before, limit))
            .await?;
        self.open_shares(list).await
    }

    async fn mark_share_polled(
        &self,
        order_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let id = order_id.to_string();
        self.threads
            .write(move |c| ops::sharing::mark_share_polled(c, &id, at).map(Done::keep))
            .await
    }

    async fn create_share_return(
        &self,
        ret: &ShareReturnRecord,
    ) -> Result<CreateShareReturn, StoreError> {
        let ret = ret.clone();
        self.threads
            .write(move |c| ops::sharing::create_return(c, &ret))
            .await
    }

    async fn get_share_return(
        &self,
        mchid: &str,
        out_return_no: &str,
    ) -> Result<Option<ShareReturnRecord>, StoreError> {
        let (m, n) = (mchid.to_string(), out_return_no.to_string());
        self.threads
            .read(move |c| ops::sharing::get_return(c, &m, &n))
            .await
    }

    async fn get_share_return_by_id(
        &self,
        return_id: &str,
    ) -> Result<Option<ShareReturnRecord>, StoreError> {
        let id = return_id.to_string();
        self.threads
            .read(move |c| ops::sharing::get_return_by_id(c, &id))
            .await
    }

    async fn apply_share_return_change(
        &self,
        change: &ShareReturnChange,
    ) -> Result<bool, StoreError> {
        let mut change = change.clone();
        if let Some(n) = &change.notification {
            change.notification = Some(self.sealer.seal_notification(n)?);
        }
        self.threads
            .write(move |c| ops::sharing::apply_return_change(c, &change))
            .await
    }

    async fn share_returns_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ShareReturnRecord>, StoreError> {
        self.threads
            .read(move |c| ops::sharing::returns_to_poll(c, polled_before, limit))
            .await
    }

    async fn mark_share_return_polled(
        &self,
        return_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let id = return_id.to_string();
        self.threads
            .write(move |c| ops::sharing::mark_return_polled(c, &id, at).map(Done::keep))
            .await
    }

    // ---- refunds (ops/refunds.rs) ----

    async fn create_refund(
        &self,
        refund: &crate::RefundRecord,
    ) -> Result<crate::CreateRefund, StoreError> {
        let refund = refund.clone();
        self.threads
            .write(move |c| ops::refunds::create_refund(c, &refund))
            .await
    }

    async fn get_refund(
        &self,
        mchid: &str,
        out_refund_no: &str,
    ) -> Result<Option<crate::RefundRecord>, StoreError> {
        let (mchid, out_refund_no) = (mchid.to_string(), out_refund_no.to_string());
        self.threads
            .read_now(move |c| ops::refunds::get_refund(c, &mchid, &out_refund_no))
            .await
    }

    async fn get_refund_by_id(
        &self,
        refund_id: &str,
    ) -> Result<Option<crate::RefundRecord>, StoreError> {
        let refund_id = refund_id.to_string();
        self.threads
            .read_now(move |c| ops::refunds::get_refund_by_id(c, &refund_id))
            .await
    }

    async fn refunds_of(
        &self,
        transaction_id: &str,
    ) -> Result<Vec<crate::RefundRecord>, StoreError> {
        let transaction_id = transaction_id.to_string();
        self.threads
            .read(move |c| ops::refunds::refunds_of(c, &transaction_id))
            .await
    }

    async fn duplicate_refunds_open(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::RefundRecord>, StoreError> {
        self.threads
            .read(move |c| ops::refunds::duplicate_refunds_open(c, limit))
            .await
    }

    async fn refunded_fen(&self, transaction_id: &str) -> Result<Option<i64>, StoreError> {
        let transaction_id = transaction_id.to_string();
        self.threads
            .read_now(move |c| ops::refunds::refunded_fen(c, &transaction_id))
            .await
    }

    async fn apply_refund_change(&self, change: &crate::RefundChange) -> Result<bool, StoreError> {
        let mut change = change.clone();
        if let Some(n) = &change.notification {
            change.notification = Some(self.sealer.seal_notification(n)?);
        }
        self.threads
            .write(move |c| ops::refunds::apply_refund_change(c, &change))
            .await
    }

    async fn record_duplicate_payment(
        &self,
        d: &crate::DuplicatePayment,
    ) -> Result<bool, StoreError> {
        let d = d.clone();
        self.threads
            .write(move |c| ops::refunds::record_duplicate_payment(c, &d))
            .await
    }

    async fn refunds_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<crate::RefundRecord>, StoreError> {
        self.threads
            .read(move |c| ops::refunds::refunds_to_poll(c, polled_before, limit))
            .await
    }

    async fn mark_refund_polled(
        &self,
        refund_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let refund_id = refund_id.to_string();
        self.threads
            .write(move |c| ops::refunds::mark_refund_polled(c, &refund_id, at).map(Done::keep))
            .await
    }

    // ---- merchant bills (ops/bills.rs) ----

    async fn close_bill_day(&self, day: &crate::bills::BillDayRecord) -> Result<bool, StoreError> {
        let day = day.clone();
        self.threads
            .write(move |c| ops::bills::close_bill_day(c, &day))
            .await
    }

    async fn bill_day(
        &self,
        bill_date: &str,
    ) -> Result<Option<crate::bills::BillDayRecord>, StoreError> {
        let bill_date = bill_date.to_string();
        self.threads
            .read(move |c| ops::bills::bill_day(c, &bill_date))
            .await
    }

    async fn paid_orders_between(
        &self,
        mchid: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&crate::bills::BillCursor>,
        limit: u32,
    ) -> Result<Vec<OrderRecord>, StoreError> {
        let (mchid, after) = (mchid.to_string(), after.cloned());
        let orders = self
            .threads
            .read(move |c| {
                ops::bills::paid_orders_between(c, &mchid, from, to, after.as_ref(), limit)
            })
            .await?;
        self.open_orders(orders).await
    }

    async fn billed_refunds_between(
        &self,
        mchid: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&crate::bills::BillCursor>,
        limit: u32,
    ) -> Result<Vec<crate::RefundRecord>, StoreError> {
        let (mchid, after) = (mchid.to_string(), after.cloned());
        self.threads
            .read(move |c| {
                ops::bills::billed_refunds_between(c, &mchid, from, to, after.as_ref(), limit)
            })
            .await
    }

    async fn merchant_flow_before(
        &self,
        mchid: &str,
        before: OffsetDateTime,
    ) -> Result<crate::bills::MerchantFlowTotals, StoreError> {
        let mchid = mchid.to_string();
        self.threads
            .read(move |c| ops::bills::merchant_flow_before(c, &mchid, before))
            .await
    }

    async fn keep_bill_file(
        &self,
        file: &crate::bills::BillFileRecord,
    ) -> Result<crate::bills::BillFileRecord, StoreError> {
        let file = file.clone();
        self.threads
            .write(move |c| ops::bills::keep_bill_file(c, &file))
            .await
    }

    async fn bill_file(
        &self,
        mchid: &str,
        bill_date: &str,
        kind: &str,
    ) -> Result<Option<crate::bills::BillFileRecord>, StoreError> {
        let (mchid, bill_date, kind) = (mchid.to_string(), bill_date.to_string(), kind.to_string());
        self.threads
            .read(move |c| ops::bills::bill_file(c, &mchid, &bill_date, &kind))
            .await
    }

    async fn insert_bill_download(
        &self,
        download: &crate::bills::BillDownloadRecord,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let download = download.clone();
        self.threads
            .write(move |c| ops::bills::insert_bill_download(c, &download, now))
            .await
    }

    async fn bill_download(
        &self,
        token: &str,
    ) -> Result<Option<crate::bills::BillDownloadRecord>, StoreError> {
        let token = token.to_string();
        self.threads
            .read(move |c| ops::bills::bill_download(c, &token))
            .await
    }

    // ---- the ledger (ledger.rs; helper LEDGER) ----

    async fn post_ledger(
        &self,
        posting: &paygate_ledger::Posting,
        at: OffsetDateTime,
    ) -> Result<paygate_ledger::Applied, StoreError> {
        let posting = posting.clone();
        self.threads
            .write(move |c| {
                ledger::apply_posting(c, &posting, crate::ledger::now_ms(at)).map(Done::keep)
            })
            .await
    }

    async fn ledger_accounts(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<paygate_ledger::Account>, StoreError> {
        let owner = owner.map(str::to_string);
        self.threads
            .read(move |c| ledger::accounts_of(c, owner.as_deref()))
            .await
    }

    async fn ledger_account(
        &self,
        id: paygate_ledger::AccountId,
    ) -> Result<Option<paygate_ledger::Account>, StoreError> {
        self.threads
            .read(move |c| ledger::account_by_id(c, &id.to_hex()))
            .await
    }

    async fn ledger_transfer(
        &self,
        id: paygate_ledger::TransferId,
    ) -> Result<Option<crate::ledger::LedgerTransferRow>, StoreError> {
        self.threads
            .read(move |c| ledger::transfer_by_id(c, &id.to_hex()))
            .await
    }

    async fn ledger_transfers_by_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<crate::ledger::LedgerTransferRow>, StoreError> {
        let reference = reference.to_string();
        self.threads
            .read(move |c| ledger::transfers_by_reference(c, &reference))
            .await
    }

    async fn journal_entries(
        &self,
        from_index: u64,
        limit: u32,
    ) -> Result<Vec<crate::ledger::LedgerTransferRow>, StoreError> {
        self.threads
            .read(move |c| ledger::journal_entries(c, from_index, limit))
            .await
    }

    async fn unsequenced_transfers(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::ledger::LedgerTransferRow>, StoreError> {
        self.threads
            .read(move |c| ledger::unsequenced(c, after_seq, limit))
            .await
    }

    async fn ledger_checkpoints(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::ledger::CheckpointRecord>, StoreError> {
        self.threads
            .read(move |c| ledger::checkpoints(c, limit))
            .await
    }

    async fn integrate_journal(
        &self,
        signer: std::sync::Arc<paygate_ledger::NoteSigner>,
        origin: &str,
        batch_max: u32,
        now: OffsetDateTime,
    ) -> Result<crate::ledger::Integrated, StoreError> {
        let origin = origin.to_string();
        self.threads
            .write(move |c| ledger::integrate(c, &signer, &origin, batch_max, now).map(Done::keep))
            .await
    }
}
