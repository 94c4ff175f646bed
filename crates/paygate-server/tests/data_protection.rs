//! Issue 7 §1 and §8: a full flow (JSAPI prepay with an openid and a merchant data package
//! carrying an ID number and a bank card, the payment, its notification, a refund and its
//! notification), then the database itself is searched — the SQLite file with its WAL, and a
//! `pg_dump` of the test schema on PostgreSQL — for every openid, ID number and card number
//! used: none is there in plaintext, while the API still answers them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{Value, json};

mod common;

use common::*;

const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "6222021234567890128";
/// A profit-sharing receiver's personal account (PERSONAL_OPENID).
const RECEIVER_OPENID: &str = "oRcvR8uMuAJO_M2pxb1Q9zNjWeS7p";

/// A notify_url that answers 200 and keeps what it got.
async fn receiver() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/notify"), got)
}

/// Everything the database holds, as bytes: the SQLite file and its WAL, or a pg_dump.
fn database_bytes(gw: &Gw) -> Vec<u8> {
    match &gw.pg_schema {
        None => {
            let mut all = Vec::new();
            for name in ["paygate.db", "paygate.db-wal"] {
                if let Ok(b) = std::fs::read(gw.dir.join(name)) {
                    all.extend(b);
                }
            }
            assert!(all.len() > 4096, "the SQLite file was read");
            all
        }
        Some((url, schema)) => {
            let out = std::process::Command::new("pg_dump")
                .args(["--schema", schema, "--data-only", "--dbname", url])
                .output()
                .expect("pg_dump runs");
            assert!(
                out.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("COPY"),
                "a dump"
            );
            out.stdout
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn after_a_full_flow_no_openid_id_number_or_card_number_is_stored_in_plaintext() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let (notify_url, got) = receiver().await;
        let no = out_no("DP");
        let body = json!({"appid": gw.kit.merchant.appid, "mchid": gw.mchid(),
            "description": "数据保护", "out_trade_no": no, "notify_url": notify_url,
            "attach": format!("身份证 {ID_NUMBER} 卡 {CARD}"),
            "payer": {"openid": OPENID}, "amount": {"total": 300, "currency": "CNY"}});
        let _: Value = gw
            .client
            .post_json("/v3/pay/transactions/jsapi", &body)
            .await
            .unwrap();
        gw.pay(&no).await;
        let paid = gw.wait_state(&no, "SUCCESS").await;
        // Through the API everything is there, in plaintext.
        assert_eq!(paid.payer.unwrap().openid.as_deref(), Some(OPENID));
        assert_eq!(
            paid.attach.as_deref(),
            Some(format!("身份证 {ID_NUMBER} 卡 {CARD}").as_str())
        );
        let refund: Value = gw
            .client
            .post_json(
                "/v3/refund/domestic/refunds",
                &json!({"out_trade_no": no, "out_refund_no": format!("R{no}"),
                        "notify_url": notify_url,
                        "amount": {"refund": 100, "total": 300, "currency": "CNY"}}),
            )
            .await
            .unwrap();
        assert!(refund["refund_id"].is_string(), "{refund}");
        // The payment's and the refund's notifications were delivered.
        eventually(|| async { (got.lock().unwrap().len() >= 2).then_some(()) }).await;

        // Profit sharing to a person: the receiver is added, a paid order split to it twice
        // (the second line updates the first order's receivers), removed and added again.
        let shared = out_no("DS");
        let _: Value = gw
            .client
            .post_json(
                "/v3/pay/transactions/native",
                &json!({"appid": gw.kit.merchant.appid, "mchid": gw.mchid(),
                    "description": "分账", "out_trade_no": shared, "notify_url": notify_url,
                    "settle_info": {"profit_sharing": true},
                    "amount": {"total": 1000, "currency": "CNY"}}),
            )
            .await
            .unwrap();
        gw.pay(&shared).await;
        let tx = gw
            .wait_state(&shared, "SUCCESS")
            .await
            .transaction_id
            .unwrap();
        let add = json!({"appid": gw.kit.merchant.appid, "type": "PERSONAL_OPENID",
            "account": RECEIVER_OPENID, "relation_type": "USER"});
        let added: Value = gw
            .client
            .post_json("/v3/profitsharing/receivers/add", &add)
            .await
            .unwrap();
        assert_eq!(added["account"], RECEIVER_OPENID);
        for round in 0..2 {
            let no = format!("{shared}S{round}");
            let split: Value = gw
                .client
                .post_json(
                    "/v3/profitsharing/orders",
                    &json!({"appid": gw.kit.merchant.appid, "transaction_id": tx,
                        "out_order_no": no, "unfreeze_unsplit": round == 1,
                        "receivers": [{"type": "PERSONAL_OPENID", "account": RECEIVER_OPENID,
                            "amount": 50, "description": "分给个人"}]}),
                )
                .await
                .unwrap();
            assert!(split["order_id"].is_string(), "{split}");
            // Read back through the API: the openid, in plaintext, once the split settles.
            let done: Value = eventually(|| async {
                let q: Value = gw
                    .client
                    .get_json(&format!(
                        "/v3/profitsharing/orders/{no}?transaction_id={tx}"
                    ))
                    .await
                    .unwrap();
                (q["receivers"][0]["result"] == "SUCCESS").then_some(q)
            })
            .await;
            assert_eq!(done["receivers"][0]["account"], RECEIVER_OPENID, "{done}");
        }
        let removed: Value = gw
            .client
            .post_json(
                "/v3/profitsharing/receivers/delete",
                &json!({"appid": gw.kit.merchant.appid, "type": "PERSONAL_OPENID",
                    "account": RECEIVER_OPENID}),
            )
            .await
            .unwrap();
        assert_eq!(removed["account"], RECEIVER_OPENID);
        let _: Value = gw
            .client
            .post_json("/v3/profitsharing/receivers/add", &add)
            .await
            .unwrap();
        let receivers = gw.gw.state.store.share_receivers(gw.mchid()).await.unwrap();
        assert_eq!(receivers.len(), 1);
        assert_eq!(receivers[0].account, RECEIVER_OPENID);

        let bytes = database_bytes(&gw);
        for secret in [OPENID, ID_NUMBER, CARD, RECEIVER_OPENID] {
            assert!(
                !contains(&bytes, secret),
                "{secret} stored in plaintext (pg: {})",
                pg.is_some()
            );
        }
        assert!(contains(&bytes, "pgv1.dk_"), "sealed values are there");
        assert!(
            contains(&bytes, "ov_"),
            "the order references the openid vault"
        );
        gw.finish().await;
    }
}

#[tokio::test]
async fn a_restarted_gateway_with_the_same_master_key_reads_its_sealed_orders() {
    let gw = start(None, |_| {}).await;
    let no = out_no("RS");
    let body = json!({"appid": gw.kit.merchant.appid, "mchid": gw.mchid(),
        "description": "重启", "out_trade_no": no, "notify_url": "http://127.0.0.1:9/n",
        "payer": {"openid": OPENID}, "amount": {"total": 5, "currency": "CNY"}});
    let _: Value = gw
        .client
        .post_json("/v3/pay/transactions/jsapi", &body)
        .await
        .unwrap();
    let config = gw.gw.state.config.clone();
    let store = paygate_server::key_rotation::open_store(&config)
        .await
        .unwrap();
    let order = store.get_order(gw.mchid(), &no).await.unwrap().unwrap();
    assert_eq!(order.payer_openid.as_deref(), Some(OPENID));
    // The master key is a file of the data directory, readable by its owner only.
    let key = config.data_dir.join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Without it, or with another one, nothing is guessed.
    let mut other = config.clone();
    other.security.master_key = Some(format!(
        "file:{}",
        config.data_dir.join("other.key").display()
    ));
    assert!(
        paygate_server::key_rotation::open_store(&other)
            .await
            .is_err()
    );
    gw.finish().await;
}

/// Issue 7 §2: two nodes starting at once on an empty database end with ONE platform key
/// of each kind, and both sign with it (the store refuses a second generation-1 key).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_racing_on_an_empty_database_agree_on_one_platform_key_per_kind() {
    for pg in backends() {
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(format!("paygate-race-{}", uuid::Uuid::new_v4()));
            let (url, schema) = match &pg {
                None => (
                    format!("sqlite://{}", dir.join("paygate.db").display()),
                    None,
                ),
                Some(base) => {
                    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                    let sep = if base.contains('?') { '&' } else { '?' };
                    (
                        format!("{base}{sep}schema={schema}"),
                        Some((base.clone(), schema)),
                    )
                }
            };
            let (a, b) = (
                paygate_store::open(&url).await.unwrap(),
                paygate_store::open(&url).await.unwrap(),
            );
            let (ka, kb) = tokio::join!(
                paygate_server::keys::PlatformKeys::load_or_create(a.as_ref()),
                paygate_server::keys::PlatformKeys::load_or_create(b.as_ref()),
            );
            let (ka, kb) = (ka.unwrap(), kb.unwrap());
            let (ka, kb) = (ka.current(), kb.current());
            assert_eq!(ka.cert_serial, kb.cert_serial);
            assert_eq!(ka.pub_key_id, kb.pub_key_id);
            assert_eq!(a.platform_keys().await.unwrap().len(), 2);
            a.close().await;
            b.close().await;
            let _ = std::fs::remove_dir_all(&dir);
            if let Some((base, schema)) = schema {
                paygate_store::drop_postgres_schema(&base, &schema)
                    .await
                    .unwrap();
            }
        }
    }
}
