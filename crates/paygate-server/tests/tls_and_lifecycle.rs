//! HTTPS and mutual TLS on the merchant API, a merchant with its own certificate, and the
//! poller closing an expired order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paygate_server::config::{Config, TlsConfig};
use paygate_server::{channel_mapping, merchants};
use paygate_store::{AttemptRecord, AttemptState, CreateOrder, OrderRecord, OrderState};
use paygate_wxpay::client::{KeyMode, WxClient, WxClientConfig};
use paygate_wxpay::crypto::cert::{CertificateParams, self_signed_certificate};
use paygate_wxpay::crypto::{SignatureScheme, SigningKey, VerifyingKey};
use rcgen::{BasicConstraints, CertificateParams as RcParams, IsCa, KeyPair, SanType};
use serde_json::{Value, json};

fn base_config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.sandbox.time_scale = 1000;
    c.operator_token = Some("t".into());
    c
}

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = RcParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = RcParams::new(vec!["localhost".to_string()]).unwrap();
    server_params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server = server_params.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = RcParams::new(vec!["merchant-client".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

#[tokio::test]
async fn https_and_mutual_tls_guard_the_merchant_api() {
    let dir = std::env::temp_dir().join(format!("paygate-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = pki();
    for (name, body) in [
        ("ca.pem", &p.ca_pem),
        ("server.pem", &p.server_cert),
        ("server.key", &p.server_key),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
    }
    let mut config = base_config(&dir.join("data"));
    config.tls = Some(TlsConfig {
        cert_pem: dir.join("server.pem"),
        key_pem: dir.join("server.key"),
        client_ca_pem: Some(dir.join("ca.pem")),
    });
    let gw = paygate_server::start(config).await.unwrap();
    assert!(gw.base_url.starts_with("https://"));
    let ca = reqwest::Certificate::from_pem(p.ca_pem.as_bytes()).unwrap();
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", p.client_cert, p.client_key).as_bytes())
            .unwrap();
    let with_cert = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .identity(identity)
        .build()
        .unwrap();
    let resp = with_cert
        .get(format!("{}healthz", gw.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let without_cert = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    assert!(
        without_cert
            .get(format!("{}healthz", gw.base_url))
            .send()
            .await
            .is_err(),
        "no client certificate, no connection"
    );
    // An orderly stop of the TLS listener ends it in time and refuses new connections.
    let base_url = gw.base_url.clone();
    let stopped = gw.shutdown(std::time::Duration::from_secs(10)).await;
    assert_eq!(stopped, paygate_server::shutdown::Stopped::default());
    assert!(
        with_cert
            .get(format!("{base_url}healthz"))
            .send()
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_merchant_can_register_its_own_certificate() {
    let dir = std::env::temp_dir().join(format!("paygate-own-{}", uuid::Uuid::new_v4()));
    let gw = paygate_server::start(base_config(&dir)).await.unwrap();
    let own_key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let own_cert = self_signed_certificate(
        &own_key,
        &CertificateParams {
            common_name: "my shop".into(),
            organization: "my shop".into(),
            not_before: now - time::Duration::days(1),
            not_after: now + time::Duration::days(365),
        },
    )
    .unwrap();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}admin/v1/merchants", gw.base_url))
        .bearer_auth("t")
        .json(&json!({"name": "my shop", "cert_pem": own_cert.pem}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kit = &created["kit"];
    assert_eq!(
        kit["apiclient_key_pem"], "",
        "the gateway never had the merchant's private key"
    );
    assert_eq!(kit["merchant"]["serial_no"], own_cert.serial_no);
    let mchid = kit["merchant"]["mchid"].as_str().unwrap().to_string();
    let client = WxClient::new(WxClientConfig {
        base_url: gw.base_url.clone(),
        mchid: mchid.clone(),
        serial_no: own_cert.serial_no.clone(),
        signing_key: own_key,
        platform_keys: vec![(
            kit["merchant"]["platform_public_key_id"]
                .as_str()
                .unwrap()
                .to_string(),
            VerifyingKey::from_spki_pem(kit["pub_key_pem"].as_str().unwrap()).unwrap(),
        )],
        wechatpay_serial: Some(
            kit["merchant"]["platform_public_key_id"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        timeout_ms: 5000,
    })
    .unwrap();
    let body = json!({"appid": kit["merchant"]["appid"], "mchid": mchid, "description": "own cert",
        "out_trade_no": "OWNCERT0001", "notify_url": "https://e.com/n", "amount": {"total": 1}});
    let r: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    assert!(r["code_url"].is_string());
    // A malformed certificate is refused with the V3 error shape.
    let resp = http
        .post(format!(
            "{}admin/v1/merchants/{mchid}/certificates",
            gw.base_url
        ))
        .bearer_auth("t")
        .json(&json!({"pem": "not a certificate"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    gw.task.abort();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_poller_closes_expired_orders_after_asking_the_channel() {
    let dir = std::env::temp_dir().join(format!("paygate-exp-{}", uuid::Uuid::new_v4()));
    let gw = paygate_server::start(base_config(&dir)).await.unwrap();
    let state = &gw.state;
    let channel = state.channel(&state.default_channel).unwrap();
    let onboarded = merchants::onboard(
        state.store.as_ref(),
        &state.keys,
        &gw.base_url,
        merchants::NewMerchant {
            name: "exp".into(),
            cert_pem: None,
            mapping: channel_mapping(channel.config(), None, None).unwrap(),
        },
    )
    .await
    .unwrap();
    let client = WxClient::from_kit(&onboarded.kit, KeyMode::PublicKey, 5000).unwrap();
    let mchid = onboarded.merchant.mchid.clone();
    // An order whose expiry has passed, with an attempt that reached the channel…
    let body = json!({"appid": onboarded.merchant.appid, "mchid": mchid, "description": "expires",
        "out_trade_no": "EXPIRE0001", "notify_url": "https://e.com/n", "amount": {"total": 1}});
    let _: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    // …and one whose attempt never did (a crash between the two writes).
    let t = time::OffsetDateTime::now_utc();
    let mut order: OrderRecord = state
        .store
        .get_order(&mchid, "EXPIRE0001")
        .await
        .unwrap()
        .unwrap();
    order.transaction_id = paygate_core::ids::transaction_id(t);
    order.out_trade_no = "EXPIRE0002".into();
    order.time_expire = t - time::Duration::minutes(1);
    let attempt = AttemptRecord {
        attempt_id: format!("{}01", order.transaction_id),
        transaction_id: order.transaction_id.clone(),
        seq: 1,
        channel_id: state.default_channel.clone(),
        state: AttemptState::Created,
        prepay_id: None,
        code_url: None,
        h5_url: None,
        prepay_expires_at: None,
        channel_transaction_id: None,
        error_code: None,
        error_message: None,
        decision: None,
        created_at: t,
        updated_at: t,
        last_polled_at: None,
        next_poll_at: None,
    };
    assert_eq!(
        state.store.create_order(&order, &attempt).await.unwrap(),
        CreateOrder::Created
    );
    paygate_server::workers::poll_once(state).await.unwrap();
    let closed = state
        .store
        .get_order(&mchid, "EXPIRE0002")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.state, OrderState::Closed);
    let attempts = state.store.attempts(&closed.transaction_id).await.unwrap();
    assert_eq!(
        attempts[0].state,
        AttemptState::Failed,
        "never reached the channel: nothing to close there"
    );
    let open = state
        .store
        .get_order(&mchid, "EXPIRE0001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open.state, OrderState::Notpay, "not expired, left alone");
    gw.task.abort();
    let _ = std::fs::remove_dir_all(dir);
}
