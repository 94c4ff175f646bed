//! Prepay, query, close, idempotency, expiry and payment notifications, direct and partner,
//! driven over HTTP by a signing client exactly as a merchant SDK would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;

use common::*;
use paygate_wxpay::client::{ClientError, KeyMode};
use paygate_wxpay::crypto::VerifyingKey;
use paygate_wxpay::models::payments::Transaction;
use paygate_wxpay::notify::Notification;
use paygate_wxpay::sign::ResponseSignature;
use serde_json::{Value, json};

fn native_body(sim: &Sim, out_trade_no: &str, total: i64, notify_url: &str) -> Value {
    let m = &sim.sim.direct.merchant;
    json!({
        "appid": m.appid, "mchid": m.mchid, "description": "Image形象店-深圳腾大-QQ公仔",
        "out_trade_no": out_trade_no, "notify_url": notify_url,
        "amount": {"total": total, "currency": "CNY"}
    })
}

fn partner_body(sim: &Sim, out_trade_no: &str, total: i64, notify_url: &str) -> Value {
    let m = &sim.sim.partner.merchant;
    json!({
        "sp_appid": m.sp_appid, "sp_mchid": m.sp_mchid, "sub_mchid": m.sub_mchid,
        "description": "partner order", "out_trade_no": out_trade_no, "notify_url": notify_url,
        "amount": {"total": total}, "payer": {"sp_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
    })
}

#[tokio::test]
async fn native_payment_end_to_end_with_verified_notification() {
    let sim = start_sim().await;
    let rx = start_receiver().await;
    let client = sim.direct();
    let mchid = sim.sim.direct.merchant.mchid.clone();
    let no = out_no("N");
    let resp: Value = client
        .post_json(
            "/v3/pay/transactions/native",
            &native_body(&sim, &no, 100, &rx.url),
        )
        .await
        .unwrap();
    assert!(
        resp["code_url"]
            .as_str()
            .unwrap()
            .starts_with("weixin://wxpay/bizpayurl?pr=")
    );

    let q: Transaction = client
        .get_json(&format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={mchid}"
        ))
        .await
        .unwrap();
    assert_eq!(q.trade_state.as_str(), "NOTPAY");
    assert!(
        q.transaction_id.is_none(),
        "no transaction id before payment"
    );

    let paid = sim.pay_direct(&no).await;
    let transaction_id = paid["transaction_id"].as_str().unwrap().to_string();

    let got = rx.wait_for(1).await;
    let n = &got[0];
    // Verify exactly as an SDK does: the five headers, the platform key, then decrypt.
    let sig = ResponseSignature::from_headers(|h| n.header(h)).unwrap();
    assert_eq!(sig.serial, sim.sim.direct.merchant.platform_public_key_id);
    assert_eq!(
        n.header("Wechatpay-Signature-Type").as_deref(),
        Some("WECHATPAY2-SHA256-RSA2048")
    );
    let key = VerifyingKey::from_spki_pem(&sim.sim.direct.pub_key_pem).unwrap();
    sig.verify(&key, &n.body).unwrap();
    let envelope: Notification = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(envelope.event_type, "TRANSACTION.SUCCESS");
    assert_eq!(envelope.resource_type, "encrypt-resource");
    assert_eq!(envelope.resource.algorithm, "AEAD_AES_256_GCM");
    assert_eq!(envelope.resource.nonce.len(), 12);
    let plain = envelope
        .open(sim.sim.direct.merchant.apiv3_key.as_bytes())
        .unwrap();
    let t: Transaction = serde_json::from_slice(&plain).unwrap();
    assert_eq!(t.trade_state.as_str(), "SUCCESS");
    assert_eq!(t.amount.as_ref().unwrap().total, 100);
    assert_eq!(t.transaction_id.as_deref(), Some(transaction_id.as_str()));
    assert!(t.success_time.is_some());

    let by_id: Transaction = client
        .get_json(&format!(
            "/v3/pay/transactions/id/{transaction_id}?mchid={mchid}"
        ))
        .await
        .unwrap();
    assert_eq!(by_id.trade_state.as_str(), "SUCCESS");
    assert_eq!(by_id.out_trade_no, no);

    // Paid orders cannot be closed nor re-ordered.
    let err = client
        .post_no_content(
            &format!("/v3/pay/transactions/out-trade-no/{no}/close"),
            &json!({"mchid": mchid}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("ORDER_PAID"));
    let err = client
        .post_json::<_, Value>(
            "/v3/pay/transactions/native",
            &native_body(&sim, &no, 100, &rx.url),
        )
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("ORDER_PAID"));
}

#[tokio::test]
async fn every_product_prepays_and_jsapi_needs_an_openid() {
    let sim = start_sim().await;
    let client = sim.direct();
    let m = sim.sim.direct.merchant.clone();
    let mut jsapi = native_body(&sim, &out_no("J"), 1, "https://example.com/notify");
    let err = client
        .post_json::<_, Value>("/v3/pay/transactions/jsapi", &jsapi)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 400, .. }), "{err}");
    assert_eq!(err.api_code(), Some("PARAM_ERROR"));
    jsapi["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
    let r: Value = client
        .post_json("/v3/pay/transactions/jsapi", &jsapi)
        .await
        .unwrap();
    let prepay_id = r["prepay_id"].as_str().unwrap();
    assert!(prepay_id.starts_with("wx") && prepay_id.len() <= 64);

    let app: Value = client
        .post_json(
            "/v3/pay/transactions/app",
            &native_body(&sim, &out_no("A"), 1, "https://e.com/n"),
        )
        .await
        .unwrap();
    assert!(app["prepay_id"].is_string());

    let mut h5 = native_body(&sim, &out_no("H"), 1, "https://e.com/n");
    h5["scene_info"] = json!({"payer_client_ip": "14.23.150.211", "h5_info": {"type": "Wap"}});
    let r: Value = client
        .post_json("/v3/pay/transactions/h5", &h5)
        .await
        .unwrap();
    assert!(r["h5_url"].as_str().unwrap().starts_with("https://"));

    // The signer must be the merchant the body names; the appid must be its own.
    let mut other = native_body(&sim, &out_no("X"), 1, "https://e.com/n");
    other["mchid"] = json!("1900000000");
    let err = client
        .post_json::<_, Value>("/v3/pay/transactions/native", &other)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("INVALID_REQUEST"));
    let mut wrong_app = native_body(&sim, &out_no("X"), 1, "https://e.com/n");
    wrong_app["appid"] = json!("wx0000000000000000");
    let err = client
        .post_json::<_, Value>("/v3/pay/transactions/native", &wrong_app)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("APPID_MCHID_NOT_MATCH"));
    let _ = m;
}

#[tokio::test]
async fn resubmission_is_idempotent_and_other_parameters_are_refused() {
    let sim = start_sim().await;
    let client = sim.direct();
    let no = out_no("I");
    let body = native_body(&sim, &no, 100, "https://e.com/n");
    let a: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    let b: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    assert_eq!(a, b, "same parameters, same answer");
    let other = native_body(&sim, &no, 101, "https://e.com/n");
    match client
        .post_json::<_, Value>("/v3/pay/transactions/native", &other)
        .await
        .unwrap_err()
    {
        ClientError::Api { status, code, .. } => {
            assert_eq!((status, code.as_str()), (403, "OUT_TRADE_NO_USED"))
        }
        e => panic!("{e}"),
    }
    // Another product with the same out_trade_no is other parameters too.
    let err = client
        .post_json::<_, Value>("/v3/pay/transactions/app", &body)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("OUT_TRADE_NO_USED"));
}

#[tokio::test]
async fn close_is_reentrant_signed_204_and_final() {
    let sim = start_sim().await;
    let client = sim.direct();
    let mchid = sim.sim.direct.merchant.mchid.clone();
    let no = out_no("C");
    let body = native_body(&sim, &no, 100, "https://e.com/n");
    let _: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    let path = format!("/v3/pay/transactions/out-trade-no/{no}/close");
    // post_no_content verifies the signature over the empty body.
    assert_eq!(
        client
            .post_no_content(&path, &json!({"mchid": mchid}))
            .await
            .unwrap(),
        204
    );
    assert_eq!(
        client
            .post_no_content(&path, &json!({"mchid": mchid}))
            .await
            .unwrap(),
        204
    );
    let q: Transaction = client
        .get_json(&format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={mchid}"
        ))
        .await
        .unwrap();
    assert_eq!(q.trade_state.as_str(), "CLOSED");
    let err = client
        .post_json::<_, Value>("/v3/pay/transactions/native", &body)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("ORDER_CLOSED"));
    let (status, _) = sim
        .sandbox(
            "pay",
            json!({"mchid": mchid, "out_trade_no": no, "result": "SUCCESS"}),
        )
        .await;
    assert_eq!(status, 400, "a closed order cannot be paid");
}

#[tokio::test]
async fn unknown_orders_are_404_and_unpaid_ones_hide_from_id_queries() {
    let sim = start_sim().await;
    let client = sim.direct();
    let mchid = sim.sim.direct.merchant.mchid.clone();
    let err = client
        .get_json::<Transaction>(&format!(
            "/v3/pay/transactions/out-trade-no/NOPE123456?mchid={mchid}"
        ))
        .await
        .unwrap_err();
    match err {
        ClientError::Api { status, code, .. } => {
            assert_eq!((status, code.as_str()), (404, "ORDER_NOT_EXIST"))
        }
        e => panic!("{e}"),
    }
    let err = client
        .get_json::<Transaction>("/v3/pay/transactions/out-trade-no/NOPE123456")
        .await
        .unwrap_err();
    assert_eq!(
        err.api_code(),
        Some("PARAM_ERROR"),
        "mchid is a required query parameter"
    );
}

#[tokio::test]
async fn orders_expire_at_time_expire() {
    let sim = start_sim().await;
    let client = sim.direct();
    let mchid = sim.sim.direct.merchant.mchid.clone();
    let no = out_no("E");
    let mut body = native_body(&sim, &no, 100, "https://e.com/n");
    body["time_expire"] = json!("2018-06-08T10:34:56+08:00"); // in the past: clamped to now + 1 min
    let _: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    let (status, _) = sim.sandbox("clock/advance", json!({"seconds": 61})).await;
    assert_eq!(status, 200);
    let q: Transaction = client
        .get_json(&format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={mchid}"
        ))
        .await
        .unwrap();
    assert_eq!(q.trade_state.as_str(), "CLOSED");
}

#[tokio::test]
async fn a_failed_payment_leaves_the_order_payable() {
    let sim = start_sim().await;
    let client = sim.direct();
    let mchid = sim.sim.direct.merchant.mchid.clone();
    let no = out_no("F");
    let _: Value = client
        .post_json(
            "/v3/pay/transactions/native",
            &native_body(&sim, &no, 5, "https://e.com/n"),
        )
        .await
        .unwrap();
    let (status, body) = sim
        .sandbox(
            "pay",
            json!({"mchid": mchid, "out_trade_no": no, "result": "PAYERROR"}),
        )
        .await;
    assert_eq!(
        (status, body["trade_state"].as_str()),
        (200, Some("PAYERROR"))
    );
    let paid = sim.pay_direct(&no).await;
    assert_eq!(paid["trade_state"], "SUCCESS");
}

#[tokio::test]
async fn partner_mode_prepay_query_and_sub_merchant_binding() {
    let sim = start_sim().await;
    let rx = start_receiver().await;
    let client = sim.partner();
    let m = sim.sim.partner.merchant.clone();
    let sp = m.sp_mchid.clone().unwrap();
    let sub = m.sub_mchid.clone().unwrap();
    let no = out_no("P");
    let r: Value = client
        .post_json(
            "/v3/pay/partner/transactions/jsapi",
            &partner_body(&sim, &no, 300, &rx.url),
        )
        .await
        .unwrap();
    assert!(r["prepay_id"].is_string());

    let mut foreign = partner_body(&sim, &out_no("P"), 300, &rx.url);
    foreign["sub_mchid"] = json!("1700000000");
    let err = client
        .post_json::<_, Value>("/v3/pay/partner/transactions/native", &foreign)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("NO_AUTH"));

    // A direct-mode path is not for a service provider.
    let err = client
        .post_json::<_, Value>(
            "/v3/pay/transactions/native",
            &native_body(&sim, &out_no("P"), 1, &rx.url),
        )
        .await
        .unwrap_err();
    assert!(err.api_code().is_some(), "{err}");

    sim.pay_partner(&no).await;
    let got = rx.wait_for(1).await;
    let envelope: Notification = serde_json::from_slice(&got[0].body).unwrap();
    let t: Transaction =
        serde_json::from_slice(&envelope.open(m.apiv3_key.as_bytes()).unwrap()).unwrap();
    assert_eq!(t.sp_mchid.as_deref(), Some(sp.as_str()));
    assert_eq!(t.sub_mchid.as_deref(), Some(sub.as_str()));
    assert!(t.mchid.is_none());

    let q: Transaction = client
        .get_json(&format!(
            "/v3/pay/partner/transactions/out-trade-no/{no}?sp_mchid={sp}&sub_mchid={sub}"
        ))
        .await
        .unwrap();
    assert_eq!(q.trade_state.as_str(), "SUCCESS");
    let tid = q.transaction_id.unwrap();
    let by_id: Transaction = client
        .get_json(&format!(
            "/v3/pay/partner/transactions/id/{tid}?sp_mchid={sp}&sub_mchid={sub}"
        ))
        .await
        .unwrap();
    assert_eq!(by_id.out_trade_no, no);
    let close = format!("/v3/pay/partner/transactions/out-trade-no/{no}/close");
    let err = client
        .post_no_content(&close, &json!({"sp_mchid": sp, "sub_mchid": sub}))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("ORDER_PAID"));
}

#[tokio::test]
async fn certificate_mode_clients_get_certificate_signed_answers() {
    let sim = start_sim().await;
    let client = sim.client(&sim.sim.direct, KeyMode::Certificate);
    let mchid = sim.sim.direct.merchant.mchid.clone();
    // A certificate-mode client sends no Wechatpay-Serial and trusts only the certificate:
    // the call succeeding proves the answer was signed with the certificate's key.
    let _: Value = client
        .post_json(
            "/v3/pay/transactions/native",
            &native_body(&sim, &out_no("K"), 1, "https://e.com/n"),
        )
        .await
        .unwrap();
    let certs: paygate_wxpay::certificates::CertificatesResponse =
        client.get_json("/v3/certificates").await.unwrap();
    let pems = certs
        .decrypt_all(sim.sim.direct.merchant.apiv3_key.as_bytes())
        .unwrap();
    assert_eq!(pems.len(), 1);
    assert_eq!(pems[0].0, sim.sim.direct.merchant.platform_serial_no);
    let info = paygate_wxpay::crypto::cert::parse_certificate_pem(&pems[0].1).unwrap();
    assert_eq!(info.serial_no, pems[0].0);
    // Java's auto-config asks with ?algorithm_type=RSA.
    let _: Value = client
        .get_json("/v3/certificates?algorithm_type=RSA")
        .await
        .unwrap();
    let _ = mchid;
}

#[tokio::test]
async fn a_provider_can_onboard_more_sub_merchants() {
    let sim = start_sim().await;
    let sp = sim.sim.partner.merchant.mchid.clone();
    let (status, sub) = sim
        .sandbox(&format!("merchants/{sp}/sub-merchants"), json!({}))
        .await;
    assert_eq!(status, 200, "{sub}");
    let m = &sim.sim.partner.merchant;
    let body = json!({"sp_appid": m.sp_appid, "sp_mchid": sp, "sub_mchid": sub["sub_mchid"], "sub_appid": sub["sub_appid"],
        "description": "new sub", "out_trade_no": out_no("NS"), "notify_url": "https://e.com/n", "amount": {"total": 1},
        "payer": {"sub_openid": "o-sub-openid"}});
    let r: Value = sim
        .partner()
        .post_json("/v3/pay/partner/transactions/jsapi", &body)
        .await
        .unwrap();
    assert!(r["prepay_id"].is_string());
    let direct = sim.sim.direct.merchant.mchid.clone();
    let (status, _) = sim
        .sandbox(&format!("merchants/{direct}/sub-merchants"), json!({}))
        .await;
    assert_eq!(status, 404, "a direct merchant has no sub-merchants");
}

#[tokio::test]
async fn auto_onboarding_accepts_a_new_sub_merchant_on_first_use() {
    let dir = std::env::temp_dir().join(format!("paygate-sim-auto-{}", uuid::Uuid::new_v4()));
    let sim = paygate_sim::start(paygate_sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        kit_dir: dir.clone(),
        time_scale: 1000,
        public_base_url: None,
        auto_onboard_sub_merchants: true,
    })
    .await
    .unwrap();
    let client =
        paygate_wxpay::client::WxClient::from_kit(&sim.partner, KeyMode::PublicKey, 5000).unwrap();
    let m = &sim.partner.merchant;
    let body = json!({"sp_appid": m.sp_appid, "sp_mchid": m.sp_mchid, "sub_mchid": "1712345678",
        "description": "auto", "out_trade_no": out_no("AO"), "notify_url": "https://e.com/n", "amount": {"total": 1}});
    let r: Value = client
        .post_json("/v3/pay/partner/transactions/native", &body)
        .await
        .unwrap();
    assert!(r["code_url"].is_string());
    sim.task.abort();
    let _ = std::fs::remove_dir_all(dir);
}
