//! Test databases and record fixtures shared by the store's integration tests.
//!
//! Every test gets a database of its own: SQLite a file in a fresh temporary directory,
//! PostgreSQL (when `PAYGATE_TEST_DATABASE_URL` is set) a fresh schema `t_<uuid>` in the shared
//! server, reached through the store's `schema=` URL parameter and dropped at the end.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use paygate_store::*;
use time::OffsetDateTime;

pub const PG_ENV: &str = "PAYGATE_TEST_DATABASE_URL";
/// Connections per test store: two tests run at once per binary, and other crates' tests
/// share the server (its default max_connections is 100).
const PG_TEST_POOL: u32 = 8;

#[derive(Clone, Debug)]
pub enum Db {
    /// `query`: URL parameters after `?` (empty for none).
    Sqlite {
        dir: PathBuf,
        file: PathBuf,
        query: String,
    },
    Postgres {
        base_url: String,
        schema: String,
    },
}

impl Db {
    pub fn sqlite() -> Db {
        Self::sqlite_with("")
    }

    /// A SQLite database opened with URL parameters `query` (`synchronous=normal`, say).
    pub fn sqlite_with(query: &str) -> Db {
        let dir = std::env::temp_dir().join(format!(
            "paygate-store-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        // A directory level that does not exist yet: `open` must create it.
        let file = dir.join("data").join("paygate.db");
        Db::Sqlite {
            dir,
            file,
            query: query.to_string(),
        }
    }

    /// None (the test prints that it was skipped) when no PostgreSQL URL is configured.
    pub fn postgres() -> Option<Db> {
        let base_url = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty())?;
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        Some(Db::Postgres { base_url, schema })
    }

    pub fn url(&self) -> String {
        match self {
            Db::Sqlite { file, query, .. } if query.is_empty() => {
                format!("sqlite://{}", file.display())
            }
            Db::Sqlite { file, query, .. } => format!("sqlite://{}?{query}", file.display()),
            Db::Postgres { base_url, schema } => {
                let sep = if base_url.contains('?') { '&' } else { '?' };
                format!("{base_url}{sep}schema={schema}&max_connections={PG_TEST_POOL}")
            }
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        open(&self.url()).await.expect("open the test store")
    }

    pub async fn cleanup(&self) {
        match self {
            Db::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Db::Postgres { base_url, schema } => {
                if let Err(e) = drop_postgres_schema(base_url, schema).await {
                    eprintln!("could not drop test schema {schema}: {e}");
                }
            }
        }
    }

    /// Writes an order state the code does not know, past the CHECK constraint, as a damaged
    /// or foreign-written database might hold.
    pub async fn corrupt_order_state(&self, transaction_id: &str) {
        match self {
            Db::Sqlite { file, .. } => {
                let conn = rusqlite::Connection::open(file).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .unwrap();
                conn.execute_batch("PRAGMA ignore_check_constraints = ON")
                    .unwrap();
                conn.execute(
                    "UPDATE orders SET state = 'PAID' WHERE transaction_id = ?1",
                    [transaction_id],
                )
                .unwrap();
            }
            Db::Postgres { base_url, schema } => {
                use sqlx::Connection;
                let mut conn = pg_connection(base_url, schema).await;
                sqlx::raw_sql("ALTER TABLE orders DROP CONSTRAINT orders_state_check")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query("UPDATE orders SET state = 'PAID' WHERE transaction_id = $1")
                    .bind(transaction_id)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

/// Runs one behaviour on `db`, then cleans up, also when the behaviour panicked.
/// A plain connection to a test's PostgreSQL schema, behind the store's back.
pub async fn pg_connection(base_url: &str, schema: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let options: sqlx::postgres::PgConnectOptions = base_url.parse().unwrap();
    sqlx::PgConnection::connect_with(&options.options([("search_path", schema)]))
        .await
        .unwrap()
}

pub async fn run<F, Fut>(db: Db, behaviour: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let _cleanup = Cleanup(db.clone());
    behaviour(db).await;
}

/// Drops the test database when it goes out of scope (a panic unwinds through here too).
pub struct Cleanup(pub Db);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let db = self.0.clone();
        // Drop cannot await, and the test's runtime may be the one unwinding: use a runtime
        // of its own on a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(db.cleanup());
        })
        .join();
        if done.is_err() {
            eprintln!("test database clean-up panicked");
        }
    }
}

pub fn skipped(test: &str) {
    println!("skipped {test} on PostgreSQL: {PG_ENV} is not set");
}

// ---- fixtures (whole milliseconds, so a read-back record compares equal) ----

/// 2026-01-01T00:00:00Z plus `ms` milliseconds.
pub fn t(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(1_767_225_600_000 + ms) * 1_000_000)
        .unwrap()
}

pub fn merchant(mchid: &str) -> MerchantRecord {
    MerchantRecord {
        mchid: mchid.into(),
        name: format!("商户 {mchid}"),
        appid: "wxd678efh567hg6787".into(),
        apiv3_key: "0123456789abcdef0123456789abcdef".into(),
        status: MerchantStatus::Active,
        channel_id: "wx-main".into(),
        channel_sub_mchid: Some("1900000200".into()),
        channel_sub_appid: None,
        created_at: t(0),
    }
}

pub fn cert(mchid: &str, serial_no: &str, at_ms: i64) -> MerchantCertRecord {
    MerchantCertRecord {
        mchid: mchid.into(),
        serial_no: serial_no.into(),
        pem: format!("-----BEGIN CERTIFICATE-----\n{serial_no}\n-----END CERTIFICATE-----\n"),
        created_at: t(at_ms),
    }
}

pub fn order(transaction_id: &str, out_trade_no: &str) -> OrderRecord {
    OrderRecord {
        transaction_id: transaction_id.into(),
        mchid: "1900000109".into(),
        out_trade_no: out_trade_no.into(),
        appid: "wxd678efh567hg6787".into(),
        trade_type: "JSAPI".into(),
        state: OrderState::Notpay,
        description: "Image形象店-深圳腾大-QQ公仔".into(),
        attach: None,
        notify_url: "https://merchant.example/notify".into(),
        total_fen: 100,
        currency: "CNY".into(),
        payer_openid: None,
        time_expire: t(7_200_000),
        fingerprint: format!("fp-{out_trade_no}"),
        request_json: "{\"amount\":{\"total\":100}}".into(),
        created_at: t(0),
        updated_at: t(0),
        success_time: None,
        bank_type: None,
        version: 0,
        pricing: Default::default(),
        profit_sharing: false,
    }
}

pub fn attempt(attempt_id: &str, transaction_id: &str, seq: i32) -> AttemptRecord {
    AttemptRecord {
        attempt_id: attempt_id.into(),
        transaction_id: transaction_id.into(),
        seq,
        channel_id: "wx-main".into(),
        state: AttemptState::Created,
        prepay_id: None,
        code_url: None,
        h5_url: None,
        prepay_expires_at: None,
        channel_transaction_id: None,
        error_code: None,
        error_message: None,
        decision: Some("only channel".into()),
        created_at: t(i64::from(seq)),
        updated_at: t(i64::from(seq)),
        last_polled_at: None,
        // As the store keeps an attempt inserted without one: due from its creation.
        next_poll_at: Some(t(i64::from(seq))),
    }
}

pub fn notification(id: &str, transaction_id: &str, due_ms: i64) -> NotificationRecord {
    NotificationRecord {
        id: id.into(),
        mchid: "1900000109".into(),
        transaction_id: transaction_id.into(),
        event_type: "TRANSACTION.SUCCESS".into(),
        url: "https://merchant.example/notify".into(),
        plaintext: format!("{{\"transaction_id\":\"{transaction_id}\"}}"),
        state: NotificationState::Pending,
        attempts: 0,
        next_attempt_at: t(due_ms),
        lease_until: None,
        created_at: t(due_ms),
        delivered_at: None,
        answer_serial: Some("PUB_KEY_ID_0000000000000000000000000001".into()),
    }
}

pub fn repair(
    id: &str,
    transaction_id: &str,
    before: OrderState,
    after: OrderState,
) -> RepairRecord {
    RepairRecord {
        id: id.into(),
        transaction_id: transaction_id.into(),
        source: "callback".into(),
        way: "late_payment_after_close".into(),
        before_state: before,
        after_state: after,
        detail: "paid at the channel after the close".into(),
        at: t(50),
    }
}

/// A duplicate payment of `amount_fen` on attempt `attempt_id` (already inserted) of paid order
/// `tx` of 1900000109, on `channel_id`, at `at_ms`: the attempt to PAID from any open or closed
/// state, its DUPLICATE refund (CREATED) and its repair record.
pub fn duplicate_payment(
    refund_id: &str,
    tx: &str,
    attempt_id: &str,
    channel_id: &str,
    amount_fen: i64,
    at_ms: i64,
) -> DuplicatePayment {
    let mut paid = AttemptChange::to(
        attempt_id,
        &[
            AttemptState::Created,
            AttemptState::Prepaid,
            AttemptState::Unknown,
            AttemptState::Closed,
            AttemptState::Failed,
        ],
        AttemptState::Paid,
        t(at_ms),
    );
    paid.channel_transaction_id = Some(format!("4200{attempt_id}"));
    let refund = RefundRecord {
        refund_id: refund_id.into(),
        mchid: "1900000109".into(),
        out_refund_no: duplicate_out_refund_no(attempt_id),
        transaction_id: tx.into(),
        out_trade_no: format!("out-{tx}"),
        attempt_id: attempt_id.into(),
        channel_id: channel_id.into(),
        state: RefundState::Created,
        amount_fen,
        total_fen: amount_fen,
        currency: "CNY".into(),
        reason: Some("重复支付退款".into()),
        notify_url: "https://merchant.example/notify".into(),
        fingerprint: format!("{attempt_id}:{amount_fen}"),
        request_json: "{}".into(),
        channel_refund_id: None,
        user_received_account: None,
        funds_account: None,
        error_code: None,
        error_message: None,
        created_at: t(at_ms),
        updated_at: t(at_ms),
        success_time: None,
        last_polled_at: None,
        version: 0,
        kind: RefundKind::Duplicate,
    };
    let mut repair = repair(
        &format!("rp-{refund_id}"),
        tx,
        OrderState::Success,
        OrderState::Success,
    );
    repair.way = "duplicate_payment_refunded".into();
    repair.at = t(at_ms);
    DuplicatePayment {
        attempt: paid,
        refund,
        repair,
    }
}

/// A bare change of the order's state.
pub fn change(transaction_id: &str, expected: OrderState, new: OrderState) -> OrderChange {
    OrderChange {
        transaction_id: transaction_id.into(),
        expected_state: expected,
        new_state: new,
        success_time: None,
        bank_type: None,
        payer_openid: None,
        updated_at: t(10),
        attempt: None,
        notification: None,
        repair: None,
        ledger: None,
    }
}

/// Creates order `transaction_id` (with attempt `<transaction_id>-1`) and returns both.
pub async fn seed_order(store: &dyn Store, transaction_id: &str) -> (OrderRecord, AttemptRecord) {
    let o = order(transaction_id, &format!("out-{transaction_id}"));
    let a = attempt(&format!("{transaction_id}-1"), transaction_id, 1);
    assert_eq!(
        store.create_order(&o, &a).await.unwrap(),
        CreateOrder::Created
    );
    (o, a)
}

/// Puts `n` in the outbox the only way there is: with a change of an order of its own.
pub async fn seed_notification(store: &dyn Store, n: &NotificationRecord) {
    seed_order(store, &n.transaction_id).await;
    let mut c = change(&n.transaction_id, OrderState::Notpay, OrderState::Success);
    c.notification = Some(n.clone());
    assert!(store.apply_order_change(&c).await.unwrap());
}
