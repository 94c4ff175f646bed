//! Issue 7 §2: platform signing key rotation with a grace period, over HTTP, as merchants'
//! SDKs see it: `/v3/certificates` lists the old and the new certificate; a client that
//! names the old serial is still answered with the old key; a client that names none is
//! answered with the new key after the switch; after the grace period the old key is gone;
//! two nodes on one PostgreSQL database serve the same keys after a rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gw, backends, eventually, out_no, start};
use paygate_server::config::Config;
use paygate_wxpay::certificates::CertificatesResponse;
use paygate_wxpay::client::{ClientError, WxClient, WxClientConfig};
use paygate_wxpay::crypto::{SigningKey, VerifyingKey};
use paygate_wxpay::sign::ResponseSignature;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

fn fast_rotation(grace_s: u64) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.platform_keys.grace_s = grace_s;
        c.platform_keys.switch_after_s = 0;
        c.platform_keys.reload_interval_ms = 100;
    }
}

/// An SDK-style client of the test merchant at `base_url` that trusts exactly one platform
/// key and names it in `Wechatpay-Serial` when `name_it`.
fn client_trusting(
    gw: &Gw,
    base_url: &str,
    key_id: &str,
    key: VerifyingKey,
    name_it: bool,
) -> WxClient {
    WxClient::new(WxClientConfig {
        base_url: base_url.to_string(),
        mchid: gw.mchid().to_string(),
        serial_no: gw.kit.merchant.serial_no.clone(),
        signing_key: SigningKey::from_pkcs8_pem(&gw.kit.apiclient_key_pem).unwrap(),
        platform_keys: vec![(key_id.to_string(), key)],
        wechatpay_serial: name_it.then(|| key_id.to_string()),
        timeout_ms: 10_000,
    })
    .unwrap()
}

/// `(serial, pem)` of every certificate `/v3/certificates` lists (the answer verified by `client`).
async fn certificates(gw: &Gw, client: &WxClient) -> Result<Vec<(String, String)>, ClientError> {
    let answer: CertificatesResponse = client.get_json("/v3/certificates").await?;
    Ok(answer
        .decrypt_all(gw.kit.merchant.apiv3_key.as_bytes())
        .unwrap())
}

async fn rotate(gw: &Gw, body: Value) -> Value {
    let resp = gw
        .http
        .post(format!("{}admin/v1/platform-keys/rotate", gw.gw.base_url))
        .bearer_auth("operator-secret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

type Delivered = Arc<Mutex<Vec<(axum::http::HeaderMap, Bytes)>>>;

/// A notify_url that answers 200 and keeps the headers and body of what it got.
async fn notify_sink() -> (String, Delivered) {
    let got: Delivered = Arc::default();
    let keep = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock().unwrap().push((headers, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/notify"), got)
}

/// Prepays through `client` (whose `Wechatpay-Serial` is recorded with the order), pays, and
/// returns the serial the payment notification was signed with, checked against `key`.
async fn notified_serial(gw: &Gw, client: &WxClient, key: &VerifyingKey) -> String {
    let (url, got) = notify_sink().await;
    let no = out_no("RN");
    let body = json!({"appid": gw.kit.merchant.appid, "mchid": gw.mchid(),
        "description": "轮换通知", "out_trade_no": no, "notify_url": url,
        "payer": {"openid": "o_rotation_payer"}, "amount": {"total": 4, "currency": "CNY"}});
    let _: Value = client
        .post_json("/v3/pay/transactions/jsapi", &body)
        .await
        .unwrap();
    gw.pay(&no).await;
    let (headers, body) = eventually(|| async { got.lock().unwrap().first().cloned() }).await;
    let sig = ResponseSignature::from_headers(|name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
    .unwrap();
    sig.verify(key, &body).unwrap();
    sig.serial
}

/// A prepay and its query through `client`: both answers verified by it.
async fn prepay_and_query(gw: &Gw, client: &WxClient) -> Result<(), ClientError> {
    let no = out_no("RK");
    let body = json!({"appid": gw.kit.merchant.appid, "mchid": gw.mchid(),
        "description": "轮换", "out_trade_no": no, "notify_url": "http://127.0.0.1:9/n",
        "payer": {"openid": "o_rotation_payer"}, "amount": {"total": 3, "currency": "CNY"}});
    let _: Value = client
        .post_json("/v3/pay/transactions/jsapi", &body)
        .await?;
    let _: Value = client
        .get_json(&format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={}",
            gw.mchid()
        ))
        .await?;
    Ok(())
}

fn served_ids(view: &Value) -> Vec<(String, bool)> {
    view["served"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_id"].as_str().unwrap().to_string(),
                k["default"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_serves_the_old_and_the_new_key_during_the_grace_period() {
    for pg in backends() {
        let gw = start(pg.as_deref(), fast_rotation(3600)).await;
        let base = gw.gw.base_url.clone();
        let m = gw.kit.merchant.clone();
        let old_cert = VerifyingKey::from_certificate_pem(&gw.kit.platform_cert_pem).unwrap();
        let old_client = client_trusting(&gw, &base, &m.platform_serial_no, old_cert.clone(), true);

        // A second node on the same PostgreSQL database, started before the rotation.
        let node_b = match pg {
            Some(_) => {
                let mut c = gw.gw.state.config.clone();
                c.listen = "127.0.0.1:0".parse().unwrap();
                Some(paygate_server::start(c).await.unwrap())
            }
            None => None,
        };

        // Before: one certificate, the kit's.
        let before = certificates(&gw, &old_client).await.unwrap();
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].0, m.platform_serial_no);

        let rotated = rotate(&gw, json!({})).await;
        assert_eq!(rotated["rotated"].as_array().unwrap().len(), 2, "{rotated}");
        let id_of = |kind: &str| {
            rotated["rotated"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["kind"] == kind)
                .unwrap()["key_id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let (new_serial, new_pub_id) = (id_of("CERTIFICATE"), id_of("PUBLIC_KEY"));
        assert_eq!(served_ids(&rotated).len(), 4);

        // Both certificates listed, to a client naming the old serial (verified with the old key).
        let listed = certificates(&gw, &old_client).await.unwrap();
        let serials: Vec<&str> = listed.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            serials,
            vec![m.platform_serial_no.as_str(), new_serial.as_str()]
        );
        prepay_and_query(&gw, &old_client).await.unwrap();
        // The kit's public-key client names the old PUB_KEY_ID: still answered with it.
        prepay_and_query(&gw, &gw.client).await.unwrap();

        // After the switch, answers naming no key are signed with the new certificate: a
        // client that downloaded it verifies them, one that only knows the old one does not.
        let new_pem = &listed.iter().find(|(s, _)| *s == new_serial).unwrap().1;
        let new_cert = VerifyingKey::from_certificate_pem(new_pem).unwrap();
        let new_client = client_trusting(&gw, &base, &new_serial, new_cert.clone(), false);
        prepay_and_query(&gw, &new_client).await.unwrap();
        // Notifications follow the same rule, by the serial named at prepay.
        let old_key = VerifyingKey::from_certificate_pem(&gw.kit.platform_cert_pem).unwrap();
        assert_eq!(
            notified_serial(&gw, &old_client, &old_key).await,
            m.platform_serial_no
        );
        assert_eq!(
            notified_serial(&gw, &new_client, &new_cert).await,
            new_serial
        );
        let stale = client_trusting(&gw, &base, &m.platform_serial_no, old_cert, false);
        match prepay_and_query(&gw, &stale).await {
            Err(ClientError::BadSignature(e)) => assert!(e.contains(&new_serial), "{e}"),
            other => panic!("a client without the new certificate verified: {other:?}"),
        }

        // The new public key (operator view) verifies answers to a client naming it.
        let (status, view) = gw.admin(reqwest::Method::GET, "platform-keys").await;
        assert_eq!(status, 200);
        let new_pub = view["served"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == new_pub_id.as_str())
            .unwrap();
        let new_pub =
            VerifyingKey::from_spki_pem(new_pub["public_key_pem"].as_str().unwrap()).unwrap();
        prepay_and_query(
            &gw,
            &client_trusting(&gw, &base, &new_pub_id, new_pub, true),
        )
        .await
        .unwrap();

        // The other node picks the rotation up by itself and serves the same keys.
        if let Some(b) = node_b {
            let on_b = client_trusting(
                &gw,
                &b.base_url,
                &m.platform_serial_no,
                VerifyingKey::from_certificate_pem(&gw.kit.platform_cert_pem).unwrap(),
                true,
            );
            let listed_b = eventually(|| async {
                let l = certificates(&gw, &on_b).await.unwrap();
                (l.len() == 2).then_some(l)
            })
            .await;
            assert_eq!(
                listed_b.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
                listed.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()
            );
            assert_eq!(
                served_ids(&b.state.keys.current().view()),
                served_ids(&view)
            );
            b.task.abort();
            b.state.store.close().await;
        }
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_grace_period_the_old_key_is_retired() {
    for pg in backends() {
        let gw = start(pg.as_deref(), fast_rotation(2)).await;
        let base = gw.gw.base_url.clone();
        let m = gw.kit.merchant.clone();
        let rotated = rotate(&gw, json!({"kind": "CERTIFICATE"})).await;
        let new_serial = rotated["rotated"][0]["key_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(rotated["rotated"].as_array().unwrap().len(), 1);

        let (status, view) = eventually(|| async {
            let (status, view) = gw.admin(reqwest::Method::GET, "platform-keys").await;
            (view["retired"].as_array().is_some_and(|r| !r.is_empty())).then_some((status, view))
        })
        .await;
        assert_eq!(status, 200);
        assert_eq!(view["retired"], json!([m.platform_serial_no]));

        // Only the new certificate is listed; naming the old serial gets the new key.
        let listed = eventually(|| async {
            let l = certificates(&gw, &gw.client).await.unwrap();
            (l.len() == 1).then_some(l)
        })
        .await;
        assert_eq!(listed[0].0, new_serial);
        let old_cert = VerifyingKey::from_certificate_pem(&gw.kit.platform_cert_pem).unwrap();
        let old_client = client_trusting(&gw, &base, &m.platform_serial_no, old_cert, true);
        assert!(matches!(
            prepay_and_query(&gw, &old_client).await,
            Err(ClientError::BadSignature(_))
        ));
        let new_cert = VerifyingKey::from_certificate_pem(&listed[0].1).unwrap();
        prepay_and_query(
            &gw,
            &client_trusting(&gw, &base, &new_serial, new_cert, true),
        )
        .await
        .unwrap();
        // The public key was not rotated: the kit's client still works.
        prepay_and_query(&gw, &gw.client).await.unwrap();

        // Refused input is a V3 error.
        let resp = gw
            .http
            .post(format!("{}admin/v1/platform-keys/rotate", gw.gw.base_url))
            .bearer_auth("operator-secret")
            .json(&json!({"kind": "SM2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], "PARAM_ERROR");
        gw.finish().await;
    }
}
