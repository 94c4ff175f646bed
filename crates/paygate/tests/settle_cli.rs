//! `paygate settle run|report` against a real store, on SQLite and (with
//! `PAYGATE_TEST_DATABASE_URL`) PostgreSQL: a day's payments and refund settle once however
//! often the command runs, the report shows the row and totals, and `paygate audit verify`
//! passes afterwards (journal and ledger replay with the settlement in it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use paygate_core::money::Money;
use paygate_ledger::recipes;
use paygate_server::config::Config;
use paygate_server::fees::{Journal, integrate_all};
use paygate_store::Store;

const PG_ENV: &str = "PAYGATE_TEST_DATABASE_URL";
const MCHID: &str = "1900000109";

fn paygate(dir: &Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(args)
        .arg("--data-dir")
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

async fn settles_once_and_audits(url: String, pg: Option<(String, String)>) {
    let dir =
        std::env::temp_dir().join(format!("paygate-settle-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config {
        data_dir: dir.clone(),
        database_url: Some(url.clone()),
        ..Config::default()
    };
    let journal = Journal::load_or_create(&config).unwrap();
    let store: Arc<dyn Store> = paygate_store::open(&url).await.unwrap();
    // 2026-01-01 10:00 Beijing: two payments and a refund of 1000 (fee share 6) on the day.
    let at = time::macros::datetime!(2026-01-01 10:00 +08:00);
    for (tx, total, fee) in [
        ("4200000000000000000000000501", 10_000, 60),
        ("4200000000000000000000000502", 5_000, 30),
    ] {
        let p = recipes::payment_success(&recipes::PaymentSuccess {
            transaction_id: tx,
            mchid: MCHID,
            channel_id: "wx-main",
            total: Money::cny_fen(total),
            fee: Money::cny_fen(fee),
            profit_sharing: false,
        })
        .unwrap();
        store.post_ledger(&p, at).await.unwrap();
    }
    let refund = recipes::Refund {
        refund_id: "50300000000000000000000000501",
        mchid: MCHID,
        channel_id: "wx-main",
        amount: Money::cny_fen(1_000),
        fee_refund: Money::cny_fen(6),
        funds: recipes::RefundFunds::Pending,
        timeout_s: 0,
    };
    store
        .post_ledger(&recipes::refund_requested(&refund).unwrap(), at)
        .await
        .unwrap();
    store.close().await;
    drop(store);

    let expected = 9_940 + 4_970 - 994;
    for _ in 0..2 {
        let (ok, stdout, stderr) = paygate(&dir, &url, &["settle", "run", "--date", "2026-01-01"]);
        assert!(ok, "{stdout}\n{stderr}");
        assert!(stdout.contains("SETTLED"), "{stdout}");
        assert!(
            stdout.contains(&format!("1 settlement(s), {expected} fen settled")),
            "{stdout}"
        );
    }
    let (ok, stdout, stderr) = paygate(
        &dir,
        &url,
        &["settle", "report", "--date", "2026-01-01", "--json"],
    );
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["total"]["amount_fen"], expected);
    assert_eq!(report["total"]["payments"], 2);
    assert_eq!(report["total"]["refunds"], 1);
    assert_eq!(report["total"]["fee_fen"], 90);
    assert_eq!(report["settlements"][0]["mchid"], MCHID);
    let (ok, _, stderr) = paygate(&dir, &url, &["settle", "run", "--date", "01/01/2026"]);
    assert!(!ok && stderr.contains("want YYYY-MM-DD"), "{stderr}");

    // The ledger with the settlement in it: journal integrated, audit passes.
    let store: Arc<dyn Store> = paygate_store::open(&url).await.unwrap();
    assert_eq!(
        integrate_all(store.as_ref(), &journal).await.unwrap(),
        4 + 2 + 1
    );
    store.close().await;
    drop(store);
    let (ok, stdout, stderr) = paygate(&dir, &url, &["audit", "verify"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("ok [ledger]"), "{stdout}");

    if let Some((base, schema)) = pg {
        paygate_store::drop_postgres_schema(&base, &schema)
            .await
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_cli_on_sqlite() {
    let dir = std::env::temp_dir().join(format!(
        "paygate-settle-db-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("paygate.db").display());
    settles_once_and_audits(url, None).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_cli_on_postgres() {
    let Some(base) = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty()) else {
        println!("skipped on PostgreSQL: {PG_ENV} is not set");
        return;
    };
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{base}?schema={schema}&max_connections=4");
    settles_once_and_audits(url, Some((base, schema))).await;
}
