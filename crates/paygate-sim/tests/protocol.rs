//! The V3 protocol edge of the simulator: request authentication over raw bytes, replay
//! and clock checks, SM2 merchants, response headers, notification retries and faults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;

use common::*;
use paygate_wxpay::crypto::{SigningKey, VerifyingKey};
use paygate_wxpay::kit::MerchantKit;
use paygate_wxpay::sign::{ResponseSignature, new_nonce, sign_request};
use serde_json::{Value, json};

/// Sends a request signed by hand, so a test controls every byte.
async fn raw(
    sim: &Sim,
    kit: &MerchantKit,
    method: &str,
    target: &str,
    body: &[u8],
    tamper: impl FnOnce(String) -> String,
    timestamp: i64,
    nonce: &str,
) -> reqwest::Response {
    let key = SigningKey::from_pkcs8_pem(&kit.apiclient_key_pem).unwrap();
    let auth = sign_request(
        &key,
        &kit.merchant.mchid,
        &kit.merchant.serial_no,
        method,
        target,
        body,
        timestamp,
        nonce,
    )
    .unwrap();
    let header = tamper(auth.to_header_value());
    let url = format!("{}{}", sim.sim.base_url.trim_end_matches('/'), target);
    sim.http
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .header("Authorization", header)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn native(kit: &MerchantKit, no: &str) -> Vec<u8> {
    let m = &kit.merchant;
    format!(
        r#"{{"appid":"{}","mchid":"{}","description":"d","out_trade_no":"{no}","notify_url":"https://e.com/n","amount":{{"total":1}}}}"#,
        m.appid, m.mchid
    )
    .into_bytes()
}

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].is_string(), "V3 error shape: {body}");
    (status, body["code"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn any_parameter_order_raw_bodies_and_every_response_header() {
    let sim = start_sim().await;
    let kit = sim.sim.direct.clone();
    // Python's order (mchid,nonce_str,signature,timestamp,serial_no) and a Go-style body
    // with a trailing newline: verified over the raw bytes, not a re-encoding.
    let mut body = native(&kit, &out_no("O"));
    body.push(b'\n');
    let reorder = |h: String| {
        let (scheme, params) = h.split_once(' ').unwrap();
        let mut parts: Vec<&str> = params.split(',').collect();
        parts.reverse();
        format!("{scheme} {}", parts.join(","))
    };
    let resp = raw(
        &sim,
        &kit,
        "POST",
        "/v3/pay/transactions/native",
        &body,
        reorder,
        now(),
        &new_nonce(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    for h in [
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
        "Wechatpay-Signature-Type",
        "Request-ID",
    ] {
        assert!(headers.contains_key(h), "missing {h}");
    }
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    // No Wechatpay-Serial sent: answered with the platform certificate's key.
    assert_eq!(
        headers["Wechatpay-Serial"],
        kit.merchant.platform_serial_no.as_str()
    );
    let body = resp.bytes().await.unwrap();
    let sig = ResponseSignature::from_headers(|h| {
        headers.get(h).map(|v| v.to_str().unwrap().to_string())
    })
    .unwrap();
    sig.verify(
        &VerifyingKey::from_certificate_pem(&kit.platform_cert_pem).unwrap(),
        &body,
    )
    .unwrap();
}

#[tokio::test]
async fn bad_signatures_replays_and_stale_clocks_are_sign_errors() {
    let sim = start_sim().await;
    let kit = sim.sim.direct.clone();
    let target = "/v3/pay/transactions/native";
    let body = native(&kit, &out_no("S"));

    let flip = |h: String| h.replace("signature=\"", "signature=\"A");
    let (status, code) =
        error_of(raw(&sim, &kit, "POST", target, &body, flip, now(), &new_nonce()).await).await;
    assert_eq!((status, code.as_str()), (401, "SIGN_ERROR"));

    let stale = now() - 301;
    let (status, code) = error_of(
        raw(
            &sim,
            &kit,
            "POST",
            target,
            &body,
            |h| h,
            stale,
            &new_nonce(),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "SIGN_ERROR"));
    let ts = now();
    let millis = |h: String| {
        h.replace(
            &format!("timestamp=\"{ts}\""),
            &format!("timestamp=\"{ts}000\""),
        )
    };
    let (status, _) =
        error_of(raw(&sim, &kit, "POST", target, &body, millis, ts, &new_nonce()).await).await;
    assert_eq!(status, 401);

    let nonce = new_nonce();
    let first = raw(&sim, &kit, "POST", target, &body, |h| h, now(), &nonce).await;
    assert_eq!(first.status(), 200);
    let (status, code) =
        error_of(raw(&sim, &kit, "POST", target, &body, |h| h, now(), &nonce).await).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "SIGN_ERROR"),
        "a replayed nonce is refused"
    );

    let wrong_serial = |h: String| h.replace(&kit.merchant.serial_no, "0123456789ABCDEF");
    let (status, _) = error_of(
        raw(
            &sim,
            &kit,
            "POST",
            target,
            &body,
            wrong_serial,
            now(),
            &new_nonce(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 401);

    // Signed over a different target than the one sent.
    let resp = sim
        .http
        .post(format!("{}v3/pay/transactions/app", sim.sim.base_url))
        .header("Authorization", {
            let key = SigningKey::from_pkcs8_pem(&kit.apiclient_key_pem).unwrap();
            sign_request(
                &key,
                &kit.merchant.mchid,
                &kit.merchant.serial_no,
                "POST",
                target,
                &body,
                now(),
                &new_nonce(),
            )
            .unwrap()
            .to_header_value()
        })
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 401);

    let no_auth = sim
        .http
        .post(format!("{}{}", sim.sim.base_url, &target[1..]))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(no_auth).await, (401, "SIGN_ERROR".to_string()));
}

#[tokio::test]
async fn malformed_bodies_are_param_errors_never_500s() {
    let sim = start_sim().await;
    let kit = sim.sim.direct.clone();
    let target = "/v3/pay/transactions/native";
    for body in [
        &b"{"[..],
        b"[]",
        b"{\"amount\":{\"total\":\"1\"}}",
        b"",
        "{\"description\":\"\u{1F600}\"}".as_bytes(),
    ] {
        let (status, code) =
            error_of(raw(&sim, &kit, "POST", target, body, |h| h, now(), &new_nonce()).await).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "PARAM_ERROR"),
            "body {:?}",
            String::from_utf8_lossy(body)
        );
    }
    let resp = raw(
        &sim,
        &kit,
        "GET",
        "/v3/no/such/path",
        b"",
        |h| h,
        now(),
        &new_nonce(),
    )
    .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn path_ids_are_verified_as_sent_percent_encoding_included() {
    let sim = start_sim().await;
    let kit = sim.sim.direct.clone();
    let no = "ab|cd*ef_12";
    let resp = raw(
        &sim,
        &kit,
        "POST",
        "/v3/pay/transactions/native",
        &native(&kit, no),
        |h| h,
        now(),
        &new_nonce(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let target = format!(
        "/v3/pay/transactions/out-trade-no/ab%7Ccd%2Aef_12?mchid={}",
        kit.merchant.mchid
    );
    let resp = raw(&sim, &kit, "GET", &target, b"", |h| h, now(), &new_nonce()).await;
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["out_trade_no"], no);
}

#[tokio::test]
async fn sm2_merchants_sign_with_sm3_and_get_sm2_answers_and_sm4_notifications() {
    let sim = start_sim().await;
    let rx = start_receiver().await;
    let (status, kit) = sim
        .sandbox("merchants", json!({"kind": "direct", "scheme": "SM2"}))
        .await;
    assert_eq!(status, 200, "{kit}");
    let kit: MerchantKit = serde_json::from_value(kit).unwrap();
    let client = sim.client(&kit, paygate_wxpay::client::KeyMode::PublicKey);
    let no = out_no("SM");
    let body = json!({"appid": kit.merchant.appid, "mchid": kit.merchant.mchid, "description": "国密",
                      "out_trade_no": no, "notify_url": rx.url, "amount": {"total": 8}});
    let r: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    assert!(r["code_url"].is_string());
    let (status, _) = sim
        .sandbox(
            "pay",
            json!({"mchid": kit.merchant.mchid, "out_trade_no": no, "result": "SUCCESS"}),
        )
        .await;
    assert_eq!(status, 200);
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].header("Wechatpay-Signature-Type").as_deref(),
        Some("WECHATPAY2-SM2-WITH-SM3")
    );
    let sig = ResponseSignature::from_headers(|h| got[0].header(h)).unwrap();
    sig.verify(
        &VerifyingKey::from_spki_pem(&kit.pub_key_pem).unwrap(),
        &got[0].body,
    )
    .unwrap();
    let env: paygate_wxpay::notify::Notification = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(env.resource.algorithm, "AEAD_SM4_GCM");
    let plain: Value =
        serde_json::from_slice(&env.open(kit.merchant.apiv3_key.as_bytes()).unwrap()).unwrap();
    assert_eq!(plain["trade_state"], "SUCCESS");
}

#[tokio::test]
async fn notifications_retry_until_acknowledged() {
    let sim = start_sim().await;
    let rx = start_receiver().await;
    *rx.fail_first.lock().unwrap() = 2;
    let client = sim.direct();
    let m = &sim.sim.direct.merchant;
    let no = out_no("NR");
    let body = json!({"appid": m.appid, "mchid": m.mchid, "description": "d", "out_trade_no": no,
                      "notify_url": rx.url, "amount": {"total": 1}});
    let _: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    sim.pay_direct(&no).await;
    let got = rx.wait_for(3).await;
    let ids: std::collections::HashSet<String> = got
        .iter()
        .map(|g| {
            serde_json::from_slice::<Value>(&g.body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "retries carry the same notification id");
    let log = eventually(|| async {
        let log = sim
            .sandbox_get(&format!("notifications?reference={no}"))
            .await;
        (log.as_array().unwrap().iter().any(|r| r["acked"] == true)).then_some(log)
    })
    .await;
    let attempts: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rx.count(), 3, "no more deliveries after the ack");
}

#[tokio::test]
async fn injected_errors_timeouts_and_notification_faults() {
    let sim = start_sim().await;
    let rx = start_receiver().await;
    let mchid = sim.sim.direct.merchant.mchid.clone();
    let client = sim.direct();
    let m = sim.sim.direct.merchant.clone();
    let body = |no: &str| {
        json!({"appid": m.appid, "mchid": m.mchid, "description": "d", "out_trade_no": no,
                                  "notify_url": rx.url, "amount": {"total": 1}})
    };

    let put = sim
        .sandbox_put(
            &format!("faults/{mchid}"),
            json!({"errors": [{"code": "FREQUENCY_LIMITED", "rate_ppm": 1_000_000}]}),
        )
        .await;
    assert_eq!(put, 200);
    match client
        .post_json::<_, Value>("/v3/pay/transactions/native", &body(&out_no("F")))
        .await
        .unwrap_err()
    {
        paygate_wxpay::client::ClientError::Api { status, code, .. } => {
            assert_eq!((status, code.as_str()), (429, "FREQUENCY_LIMITED"))
        }
        e => panic!("{e}"),
    }

    // A timeout processes the request but withholds the answer: the order exists.
    let put = sim
        .sandbox_put(
            &format!("faults/{mchid}"),
            json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 3000, "operations": ["prepay"]}),
        )
        .await;
    assert_eq!(put, 200);
    let quick = paygate_wxpay::client::WxClient::from_kit(
        &sim.sim.direct,
        paygate_wxpay::client::KeyMode::PublicKey,
        300,
    )
    .unwrap();
    let no = out_no("T");
    let err = quick
        .post_json::<_, Value>("/v3/pay/transactions/native", &body(&no))
        .await
        .unwrap_err();
    assert!(
        matches!(err, paygate_wxpay::client::ClientError::Timeout),
        "{err}"
    );
    let q: Value = client
        .get_json(&format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={mchid}"
        ))
        .await
        .unwrap();
    assert_eq!(q["trade_state"], "NOTPAY");

    // Notifications: a signature probe first, then the real one twice.
    let put = sim
        .sandbox_put(
            &format!("faults/{mchid}"),
            json!({"notify": {"signtest": true, "duplicate_rate_ppm": 1_000_000}}),
        )
        .await;
    assert_eq!(put, 200);
    sim.pay_direct(&no).await;
    let got = rx.wait_for(3).await;
    assert!(
        got[0]
            .header("Wechatpay-Signature")
            .unwrap()
            .starts_with("WECHATPAY/SIGNTEST/")
    );
    let key = VerifyingKey::from_spki_pem(&sim.sim.direct.pub_key_pem).unwrap();
    let cert_key = VerifyingKey::from_certificate_pem(&sim.sim.direct.platform_cert_pem).unwrap();
    for g in &got[1..] {
        let sig = ResponseSignature::from_headers(|h| g.header(h)).unwrap();
        assert!(sig.verify(&key, &g.body).is_ok() || sig.verify(&cert_key, &g.body).is_ok());
    }
    assert_eq!(
        got[1].body, got[2].body,
        "a duplicate is the same notification"
    );
    let cleared = sim
        .http
        .delete(format!("{}sandbox/v1/faults/{mchid}", sim.sim.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
}
