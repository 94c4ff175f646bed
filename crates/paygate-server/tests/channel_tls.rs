//! Issue 7 §5: TLS to channels with a configurable CA (`[[channels]] ca_file`). A channel
//! endpoint served over HTTPS with a certificate from a private CA is refused by the default
//! client (system web roots) and reached once the client trusts that CA; a CA file with no
//! certificate is refused at configuration time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paygate_server::config::TlsConfig;
use paygate_wxpay::client::{ClientError, WxClient, WxClientConfig};
use paygate_wxpay::crypto::{SignatureScheme, SigningKey};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use serde_json::Value;

/// A CA, and a server certificate for 127.0.0.1 it issued: (ca pem, cert pem, key pem).
fn private_ca() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn client(base_url: &str) -> WxClient {
    WxClient::new(WxClientConfig {
        base_url: base_url.to_string(),
        mchid: "1900000109".into(),
        serial_no: "SERIAL".into(),
        signing_key: SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap(),
        platform_keys: Vec::new(),
        wechatpay_serial: None,
        timeout_ms: 5_000,
    })
    .unwrap()
}

#[tokio::test]
async fn a_channel_behind_a_private_ca_is_reached_only_when_its_ca_is_configured() {
    let dir = std::env::temp_dir().join(format!("paygate-chtls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = private_ca();
    std::fs::write(dir.join("server.pem"), &cert).unwrap();
    std::fs::write(dir.join("server.key"), &key).unwrap();
    // The "channel": an HTTPS endpoint answering a V3 error, unsigned.
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#,
        )
    });
    let rustls = paygate_server::tls::server_config(&TlsConfig {
        cert_pem: dir.join("server.pem"),
        key_pem: dir.join("server.key"),
        client_ca_pem: None,
    })
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "https://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let _server = paygate_server::tls::serve(listener, rustls, app, std::future::pending());

    // System roots only: the handshake fails, nothing reaches the channel.
    let r = client(&base)
        .get_json::<Value>("/v3/pay/transactions/out-trade-no/x?mchid=1900000109")
        .await;
    assert!(matches!(r, Err(ClientError::Transport(_))), "{r:?}");

    // Trusting the private CA: TLS holds and the channel's answer comes back.
    let trusted = client(&base).trusting_only(&ca, 5_000).unwrap();
    let r = trusted
        .get_json::<Value>("/v3/pay/transactions/out-trade-no/x?mchid=1900000109")
        .await;
    assert!(
        !matches!(
            r,
            Err(ClientError::Transport(_)) | Err(ClientError::Timeout)
        ),
        "{r:?}"
    );

    // Another CA is not enough.
    let (other_ca, _, _) = private_ca();
    let r = client(&base)
        .trusting_only(&other_ca, 5_000)
        .unwrap()
        .get_json::<Value>("/v3/pay/transactions/out-trade-no/x?mchid=1900000109")
        .await;
    assert!(matches!(r, Err(ClientError::Transport(_))), "{r:?}");
    assert!(client(&base).trusting_only("not a pem", 5_000).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
