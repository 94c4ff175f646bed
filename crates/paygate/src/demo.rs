//! `paygate demo`: the gateway's main job end to end, on the embedded sandbox, explained.
//! A demo merchant takes a Native payment: prepay → the sandbox payer pays → the signed,
//! encrypted notification reaches a local receiver and is verified and decrypted → the
//! query shows SUCCESS.

use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use paygate_server::config::Config;
use paygate_wxpay::client::{KeyMode, WxClient};
use paygate_wxpay::crypto::VerifyingKey;
use paygate_wxpay::models::payments::Transaction;
use paygate_wxpay::notify::Notification;
use paygate_wxpay::sign::ResponseSignature;
use tokio::sync::mpsc;

const NOTIFICATION_WAIT: Duration = Duration::from_secs(30);

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

pub async fn run(dir: &Path) -> Result<(), String> {
    println!(
        "paygate demo: a Native payment through the gateway and the embedded WeChat Pay sandbox"
    );
    let mut config = Config {
        data_dir: dir.join("data"),
        ..Config::default()
    };
    config.listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    // Retries and sandbox delays a hundred times faster than WeChat's real schedule.
    config.sandbox.time_scale = 100;
    config.workers.poll_interval_ms = 1_000;

    step(
        1,
        "start the gateway (SQLite store, platform keys, sandbox channel)",
    );
    let gateway = paygate_server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "    gateway at {}  (store: {})",
        gateway.base_url,
        gateway.state.store.backend()
    );

    step(2, "onboard a demo merchant and write its credential kit");
    let kit_dir = dir.join("merchant");
    let state = &gateway.state;
    let channel = state
        .channel(&state.default_channel)
        .map_err(|e| e.message.clone())?;
    let mapping =
        paygate_server::channel_mapping(channel.config(), None, None).map_err(|e| e.to_string())?;
    let onboarded = paygate_server::merchants::onboard(
        state.store.as_ref(),
        &state.keys,
        &gateway.base_url,
        paygate_server::merchants::NewMerchant {
            name: "demo shop".into(),
            cert_pem: None,
            mapping,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    onboarded
        .kit
        .write_to_dir(&kit_dir)
        .map_err(|e| e.to_string())?;
    let kit = onboarded.kit;
    println!(
        "    mchid {}  appid {}  kit {}",
        kit.merchant.mchid,
        kit.merchant.appid,
        kit_dir.display()
    );

    let (notify_url, mut notifications) = receiver().await?;
    let client = WxClient::from_kit(&kit, KeyMode::PublicKey, 10_000).map_err(|e| e.to_string())?;
    let out_trade_no = format!("DEMO{}", time::OffsetDateTime::now_utc().unix_timestamp());

    step(
        3,
        "the merchant asks for a Native prepay with its V3 signature (POST /v3/pay/transactions/native)",
    );
    let body = serde_json::json!({
        "appid": kit.merchant.appid, "mchid": kit.merchant.mchid, "description": "paygate demo - 一杯咖啡",
        "out_trade_no": out_trade_no, "notify_url": notify_url, "amount": {"total": 1800, "currency": "CNY"}
    });
    let prepay: serde_json::Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .map_err(|e| format!("prepay: {e}"))?;
    println!("    out_trade_no {out_trade_no}, 18.00 CNY");
    println!(
        "    code_url {}  (the answer's signature was verified with pub_key.pem)",
        prepay["code_url"].as_str().unwrap_or("?")
    );

    step(
        4,
        "the sandbox payer scans the code and pays (POST /sandbox/v1/pay)",
    );
    let paid = reqwest::Client::new()
        .post(format!("{}sandbox/v1/pay", gateway.base_url))
        .json(&serde_json::json!({"mchid": kit.merchant.mchid, "out_trade_no": out_trade_no, "result": "SUCCESS"}))
        .send()
        .await
        .map_err(|e| format!("sandbox pay: {e}"))?;
    if !paid.status().is_success() {
        return Err(format!("sandbox pay answered {}", paid.status()));
    }
    println!(
        "    paid at the channel; the channel's callback reaches the gateway, which updates the order"
    );

    step(
        5,
        "the merchant's notify_url receives TRANSACTION.SUCCESS; verify and decrypt it",
    );
    let (headers, raw) = tokio::time::timeout(NOTIFICATION_WAIT, notifications.recv())
        .await
        .map_err(|_| "no notification within 30 s".to_string())?
        .ok_or("the receiver stopped")?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = ResponseSignature::from_headers(header).map_err(|e| e.to_string())?;
    let key = VerifyingKey::from_spki_pem(&kit.pub_key_pem).map_err(|e| e.to_string())?;
    let cert_key =
        VerifyingKey::from_certificate_pem(&kit.platform_cert_pem).map_err(|e| e.to_string())?;
    let verified = signature
        .verify(&key, &raw)
        .or_else(|_| signature.verify(&cert_key, &raw));
    verified.map_err(|e| format!("notification signature: {e}"))?;
    let envelope: Notification = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    let plaintext = envelope
        .open(kit.merchant.apiv3_key.as_bytes())
        .map_err(|e| e.to_string())?;
    let notified: Transaction = serde_json::from_slice(&plaintext).map_err(|e| e.to_string())?;
    println!(
        "    {} signed by {} ({}), {} decrypted: trade_state {}, transaction_id {}",
        envelope.event_type,
        signature.serial,
        signature.scheme.as_str(),
        envelope.resource.algorithm,
        notified.trade_state.as_str(),
        notified.transaction_id.as_deref().unwrap_or("-"),
    );

    step(
        6,
        "the merchant queries the order (GET /v3/pay/transactions/out-trade-no/…)",
    );
    let query: Transaction = client
        .get_json(&format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            kit.merchant.mchid
        ))
        .await
        .map_err(|e| format!("query: {e}"))?;
    println!(
        "    trade_state {} ({}), amount {} fen, success_time {}",
        query.trade_state.as_str(),
        query.trade_state_desc,
        query.amount.as_ref().map_or(0, |a| a.total),
        query.success_time.as_deref().unwrap_or("-")
    );
    if query.trade_state.as_str() != "SUCCESS" {
        return Err(format!(
            "expected SUCCESS, the query says {}",
            query.trade_state.as_str()
        ));
    }

    println!(
        "\nDone: the payment went merchant → paygate → WeChat Pay (sandbox) → paygate → merchant."
    );
    println!("Where to look next:");
    println!(
        "  {}            the demo merchant's kit: point any WeChat Pay V3 SDK at base_url",
        kit_dir.display()
    );
    println!(
        "  paygate serve                        run the gateway (127.0.0.1:8080, ./paygate-data)"
    );
    println!("  paygate merchant create --name N --out DIR   onboard a merchant for it");
    println!(
        "  README.md                            the merchant API, the admin API and the sandbox"
    );
    // The delivery's outcome is recorded and the store closed before the process ends.
    gateway.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}

type Received = (HeaderMap, Bytes);

/// A notify_url on 127.0.0.1 that acknowledges with 204 and hands each delivery over.
async fn receiver() -> Result<(String, mpsc::Receiver<Received>), String> {
    let (tx, rx) = mpsc::channel::<Received>(16);
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body)).await;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/notify"), rx))
}
