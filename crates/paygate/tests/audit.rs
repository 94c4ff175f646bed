//! `paygate audit verify` against a real store, on SQLite and (with
//! `PAYGATE_TEST_DATABASE_URL`) PostgreSQL: it passes on an honest ledger, and when one stored
//! transfer row or one account row is edited behind the store's back it exits non-zero naming
//! that entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use paygate_core::money::Money;
use paygate_ledger::recipes;
use paygate_server::config::Config;
use paygate_server::fees::{Journal, integrate_all};
use paygate_store::Store;

const PG_ENV: &str = "PAYGATE_TEST_DATABASE_URL";

enum Backend {
    Sqlite,
    Postgres { base: String, schema: String },
}

impl Backend {
    fn url(&self, dir: &Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}", dir.join("paygate.db").display()),
            Backend::Postgres { base, schema } => {
                format!("{base}?schema={schema}&max_connections=4")
            }
        }
    }

    /// Runs one statement behind the store's back.
    async fn tamper(&self, dir: &Path, sql: &str) {
        match self {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(dir.join("paygate.db")).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .unwrap();
                assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
            }
            Backend::Postgres { base, schema } => {
                use sqlx::Connection;
                let options: sqlx::postgres::PgConnectOptions = base.parse().unwrap();
                let mut conn = sqlx::PgConnection::connect_with(
                    &options.options([("search_path", schema.as_str())]),
                )
                .await
                .unwrap();
                let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
                assert_eq!(done.rows_affected(), 1, "{sql}");
                conn.close().await.unwrap();
            }
        }
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("paygate-audit-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `paygate audit verify` on the store: (exit ok, stdout, stderr).
fn audit(dir: &Path, url: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .args(["--database-url", url])
        .env_remove("PAYGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Payments, a settlement and a refund (reserved, then posted), sequenced under a signed
/// checkpoint, plus one payment the integrator has not reached.
async fn seed(store: &dyn Store, journal: &Journal) {
    let at = time::OffsetDateTime::now_utc();
    for i in 0..6 {
        let tx = format!("42000000000000000000000003{i:02}");
        let posting = recipes::payment_success(&recipes::PaymentSuccess {
            transaction_id: &tx,
            mchid: "1900000109",
            channel_id: "wx-main",
            total: Money::cny_fen(10_000 + i),
            fee: Money::cny_fen(60),
            profit_sharing: false,
        })
        .unwrap();
        store.post_ledger(&posting, at).await.unwrap();
    }
    store
        .post_ledger(
            &recipes::settle(
                "1900000109",
                "1900000109/2026-01-01",
                Money::cny_fen(20_000),
            )
            .unwrap(),
            at,
        )
        .await
        .unwrap();
    let refund = recipes::Refund {
        refund_id: "50300000000000000000000000301",
        mchid: "1900000109",
        channel_id: "wx-main",
        amount: Money::cny_fen(3_000),
        fee_refund: Money::cny_fen(18),
        funds: recipes::RefundFunds::Pending,
        timeout_s: 0,
    };
    store
        .post_ledger(&recipes::refund_requested(&refund).unwrap(), at)
        .await
        .unwrap();
    store
        .post_ledger(&recipes::refund_succeeded(&refund).unwrap(), at)
        .await
        .unwrap();
    assert_eq!(integrate_all(store, journal).await.unwrap(), 12 + 1 + 2 + 3);
    let late = recipes::payment_success(&recipes::PaymentSuccess {
        transaction_id: "4200000000000000000000000399",
        mchid: "1900000109",
        channel_id: "wx-main",
        total: Money::cny_fen(500),
        fee: Money::cny_fen(3),
        profit_sharing: false,
    })
    .unwrap();
    store.post_ledger(&late, at).await.unwrap();
}

async fn audit_names_the_edited_entry(backend: Backend) {
    let dir = temp_dir();
    let url = backend.url(&dir);
    let config = Config {
        data_dir: dir.clone(),
        database_url: Some(url.clone()),
        ..Config::default()
    };
    let journal = Journal::load_or_create(&config).unwrap();
    let store: Arc<dyn Store> = paygate_store::open(&url).await.unwrap();
    seed(store.as_ref(), &journal).await;
    let victim = store.journal_entries(3, 1).await.unwrap().remove(0);
    store.close().await;
    drop(store);

    let (ok, stdout, stderr) = audit(&dir, &url);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ok [journal] 18 entries re-hashed"),
        "{stdout}"
    );
    assert!(stdout.contains("2 transfers not sequenced yet"), "{stdout}");
    assert!(stdout.contains("ok [ledger]"), "{stdout}");
    println!("{stdout}");

    // One transfer's amount edited: the journal names it.
    let id = victim.record.transfer.id.to_hex();
    backend
        .tamper(
            &dir,
            &format!("UPDATE ledger_transfers SET amount = amount + 1 WHERE id = '{id}'"),
        )
        .await;
    let (ok, stdout, stderr) = audit(&dir, &url);
    assert!(!ok, "an edited transfer must fail the audit: {stdout}");
    assert!(
        stderr.contains(&format!("journal entry 3 (transfer {id}) was edited")),
        "{stderr}"
    );
    backend
        .tamper(
            &dir,
            &format!("UPDATE ledger_transfers SET amount = amount - 1 WHERE id = '{id}'"),
        )
        .await;
    assert!(audit(&dir, &url).0, "restored");

    // One balance edited (its transfers untouched): the replay names the account.
    let account = victim.record.transfer.credit_account_id.to_hex();
    backend
        .tamper(
            &dir,
            &format!("UPDATE ledger_accounts SET credits_posted = credits_posted + 100 WHERE id = '{account}'"),
        )
        .await;
    let (ok, _, stderr) = audit(&dir, &url);
    assert!(!ok);
    assert!(
        stderr.contains("[ledger]") && stderr.contains(&account),
        "{stderr}"
    );

    if let Backend::Postgres { base, schema } = &backend {
        paygate_store::drop_postgres_schema(base, schema)
            .await
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_an_edited_row_on_sqlite() {
    audit_names_the_edited_entry(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_an_edited_row_on_postgres() {
    let Some(base) = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty()) else {
        println!("skipped on PostgreSQL: {PG_ENV} is not set");
        return;
    };
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    audit_names_the_edited_entry(Backend::Postgres { base, schema }).await;
}
