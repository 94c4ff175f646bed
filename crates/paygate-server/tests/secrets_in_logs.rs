//! Issue 7 §7: every log line of a full flow (JSAPI prepay with an openid, the payment, its
//! notification, a refund and its notification), captured as the binary writes them with
//! `PAYGATE_LOG_FORMAT=json` and at DEBUG for every crate, holds no private key, APIv3 key,
//! master key, operator token, openid or signature; and the secret-holding types print `***`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{Value, json};

mod common;

use common::*;

const OPENID: &str = "oSecretOpenid_M2pxb1Q9zNjWeS6o";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A notify_url that answers 200 and keeps the signature headers it got.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: axum::http::HeaderMap, _body: Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                if let Some(sig) = headers.get("Wechatpay-Signature") {
                    keep.lock().unwrap().push(sig.to_str().unwrap().to_string());
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/notify"), got)
}

/// The base64 body lines of a PEM: what a leaked key would show.
fn pem_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_flow_logs_no_key_openid_or_signature() {
    let captured = Captured::default();
    let sink = captured.clone();
    // As `paygate` sets it up for PAYGATE_LOG_FORMAT=json, but at DEBUG for everything.
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || sink.clone())
        .init();

    let gw = start(None, |_| {}).await;
    let (notify_url, signatures) = receiver().await;
    let no = out_no("LOG");
    let body = json!({"appid": gw.kit.merchant.appid, "mchid": gw.mchid(),
        "description": "日志", "out_trade_no": no, "notify_url": notify_url,
        "payer": {"openid": OPENID}, "amount": {"total": 200, "currency": "CNY"}});
    let _: Value = gw
        .client
        .post_json("/v3/pay/transactions/jsapi", &body)
        .await
        .unwrap();
    let _: Value = gw
        .client
        .post_json(
            "/paygate/v1/pay-params",
            &json!({"out_trade_no": no, "trade_type": "JSAPI"}),
        )
        .await
        .unwrap();
    gw.pay(&no).await;
    gw.wait_state(&no, "SUCCESS").await;
    let _: Value = gw
        .client
        .post_json(
            "/v3/refund/domestic/refunds",
            &json!({"out_trade_no": no, "out_refund_no": format!("R{no}"),
                    "notify_url": notify_url,
                    "amount": {"refund": 50, "total": 200, "currency": "CNY"}}),
        )
        .await
        .unwrap();
    // A refused call too: errors are where secrets like to slip out.
    let _ = gw
        .client
        .post_json::<_, Value>("/v3/pay/transactions/jsapi", &json!({"mchid": gw.mchid()}))
        .await;
    eventually(|| async { (signatures.lock().unwrap().len() >= 2).then_some(()) }).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.lines().count() > 20, "logs were captured:\n{logs}");
    assert!(logs.contains("\"request_id\""), "the request span is there");

    let mut secrets: Vec<(String, String)> = vec![
        ("openid".into(), OPENID.into()),
        (
            "merchant APIv3 key".into(),
            gw.kit.merchant.apiv3_key.clone(),
        ),
        ("operator token".into(), "operator-secret".into()),
        (
            "master key".into(),
            std::fs::read_to_string(gw.dir.join("master.key"))
                .unwrap()
                .trim()
                .to_string(),
        ),
    ];
    for line in pem_lines(&gw.kit.apiclient_key_pem) {
        secrets.push(("merchant private key".into(), line));
    }
    if let Some(sim) = &gw.gw.sandbox {
        secrets.push((
            "channel APIv3 key".into(),
            sim.partner.merchant.apiv3_key.clone(),
        ));
        for line in pem_lines(&sim.partner.apiclient_key_pem) {
            secrets.push(("channel private key".into(), line));
        }
    }
    for k in gw.gw.state.store.platform_keys().await.unwrap() {
        for line in pem_lines(&k.private_key_pem) {
            secrets.push(("platform private key".into(), line));
        }
    }
    for s in signatures.lock().unwrap().iter() {
        secrets.push(("notification signature".into(), s.clone()));
    }
    for (what, secret) in &secrets {
        assert!(!secret.is_empty());
        assert!(!logs.contains(secret.as_str()), "{what} in the logs");
    }
    // No Authorization header (its signature) either, whatever its shape.
    assert!(
        !logs.contains("signature=\""),
        "an Authorization header in the logs"
    );

    // Debug of the secret holders.
    let merchant = gw
        .gw
        .state
        .store
        .get_merchant(gw.mchid())
        .await
        .unwrap()
        .unwrap();
    let shown = [
        format!("{merchant:?}"),
        format!("{:?}", gw.kit),
        format!("{:?}", gw.gw.state.store.platform_keys().await.unwrap()),
        format!(
            "{:?}",
            paygate_store::vault::LocalMasterKey::from_hex(&secrets[3].1).unwrap()
        ),
    ];
    for s in &shown {
        assert!(s.contains("***"), "{s}");
        for (what, secret) in &secrets {
            assert!(!s.contains(secret.as_str()), "{what} in {s}");
        }
    }
    gw.finish().await;
}
