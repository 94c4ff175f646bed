//! The WeChat Pay channel against an in-process simulator, as a direct merchant and as a
//! service provider with a sub-merchant onboarded through the sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, attempt_id, prepay, start};
use paygate_channel::{
    CallbackError, CallbackEvent, ChannelConfig, ChannelError, ChannelKind, CloseOutcome,
    ErrorAction, PrepayCredential, SubMerchant, WxChannel,
};
use paygate_wxpay::crypto::VerifyingKey;
use paygate_wxpay::models::payments::{TradeState, TradeType, Transaction};
use paygate_wxpay::paysign::pay_message;
use serde_json::json;

const CALLBACK_WAIT: Duration = Duration::from_secs(10);

async fn both(h: &Harness) -> Vec<(WxChannel, SubMerchant)> {
    let (partner, sub) = h.partner().await;
    vec![(h.direct(), SubMerchant::default()), (partner, sub)]
}

fn prepay_id(c: PrepayCredential) -> String {
    match c {
        PrepayCredential::PrepayId(id) => id,
        other => panic!("expected a prepay_id, got {other:?}"),
    }
}

async fn query_some(channel: &WxChannel, no: &str, sub: &SubMerchant) -> Transaction {
    channel.query(no, sub).await.unwrap().expect("order exists")
}

#[tokio::test]
async fn every_product_prepays_in_both_modes() {
    let h = start().await;
    for (channel, sub) in both(&h).await {
        for trade_type in [
            TradeType::Jsapi,
            TradeType::App,
            TradeType::Native,
            TradeType::Mweb,
        ] {
            let credential = channel.prepay(&prepay(trade_type, &sub)).await.unwrap();
            match (trade_type, &credential) {
                (TradeType::Jsapi | TradeType::App, PrepayCredential::PrepayId(id)) => {
                    assert!(id.starts_with("wx"))
                }
                (TradeType::Native, PrepayCredential::CodeUrl(url)) => {
                    assert!(url.starts_with("weixin://"))
                }
                (TradeType::Mweb, PrepayCredential::H5Url(url)) => {
                    assert!(url.starts_with("https://"))
                }
                _ => panic!("{trade_type:?} gave {credential:?}"),
            }
        }
    }
}

#[tokio::test]
async fn partner_jsapi_pays_with_sp_openid_without_a_sub_appid() {
    let h = start().await;
    let (channel, sub) = h.partner().await;
    let sp_only = SubMerchant {
        sub_mchid: sub.sub_mchid.clone(),
        sub_appid: None,
    };
    let p = prepay(TradeType::Jsapi, &sp_only);
    prepay_id(channel.prepay(&p).await.unwrap());
    let t = query_some(&channel, &p.out_trade_no, &sp_only).await;
    assert_eq!(t.sub_mchid, sub.sub_mchid);
    assert_eq!(t.sub_appid, None);
}

#[tokio::test]
async fn query_close_and_pay_lifecycle_in_both_modes() {
    let h = start().await;
    for (channel, sub) in both(&h).await {
        // Unknown order: None, not an error.
        assert_eq!(channel.query(&attempt_id(), &sub).await.unwrap(), None);

        let open = prepay(TradeType::Native, &sub);
        channel.prepay(&open).await.unwrap();
        let t = query_some(&channel, &open.out_trade_no, &sub).await;
        assert_eq!(t.trade_state, TradeState::Notpay);
        assert_eq!(t.amount.as_ref().unwrap().total, 1234);
        assert_eq!(
            channel.close(&open.out_trade_no, &sub).await.unwrap(),
            CloseOutcome::Closed
        );
        // Close is re-entrant.
        assert_eq!(
            channel.close(&open.out_trade_no, &sub).await.unwrap(),
            CloseOutcome::Closed
        );
        assert_eq!(
            query_some(&channel, &open.out_trade_no, &sub)
                .await
                .trade_state,
            TradeState::Closed
        );
        // A closed order takes no payment.
        let e = channel
            .sandbox_pay(&open.out_trade_no, &sub, true, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("ORDER_CLOSED"));

        let paid = prepay(TradeType::Jsapi, &sub);
        channel.prepay(&paid).await.unwrap();
        channel
            .sandbox_pay(&paid.out_trade_no, &sub, true, None)
            .await
            .unwrap();
        let t = query_some(&channel, &paid.out_trade_no, &sub).await;
        assert_eq!(t.trade_state, TradeState::Success);
        assert!(t.transaction_id.is_some() && t.success_time.is_some());
        match channel.kind() {
            ChannelKind::WxDirect => {
                assert_eq!(t.mchid.as_deref(), Some(channel.config().mchid.as_str()))
            }
            ChannelKind::WxPartner => {
                assert_eq!(t.sp_mchid.as_deref(), Some(channel.config().mchid.as_str()));
                assert_eq!(t.sub_mchid, sub.sub_mchid);
            }
        }
        assert_eq!(
            channel.close(&paid.out_trade_no, &sub).await.unwrap(),
            CloseOutcome::AlreadyPaid
        );
    }
}

#[tokio::test]
async fn a_failed_payment_leaves_the_order_payable() {
    let h = start().await;
    let channel = h.direct();
    let none = SubMerchant::default();
    let p = prepay(TradeType::App, &none);
    channel.prepay(&p).await.unwrap();
    channel
        .sandbox_pay(&p.out_trade_no, &none, false, None)
        .await
        .unwrap();
    assert_eq!(
        query_some(&channel, &p.out_trade_no, &none)
            .await
            .trade_state,
        TradeState::Payerror
    );
    channel
        .sandbox_pay(&p.out_trade_no, &none, true, Some("oPayer"))
        .await
        .unwrap();
    let t = query_some(&channel, &p.out_trade_no, &none).await;
    assert_eq!(t.trade_state, TradeState::Success);
    assert_eq!(t.payer.unwrap().openid.as_deref(), Some("oPayer"));
}

/// Waits for the callback about `out_trade_no` (probes included, as they come).
async fn callback_for(
    h: &mut Harness,
    channel: &WxChannel,
    out_trade_no: &str,
) -> common::Callback {
    loop {
        let cb = h.next_callback(CALLBACK_WAIT).await;
        let about = match channel.parse_callback(&|n| cb.header(n), &cb.body) {
            Ok(CallbackEvent::Transaction(t)) => Some(t.out_trade_no),
            Err(CallbackError::Unverified { hint, .. }) => hint,
            _ => None,
        };
        if about.as_deref() == Some(out_trade_no) {
            return cb;
        }
    }
}

#[tokio::test]
async fn a_real_callback_verifies_and_tampered_ones_do_not() {
    let mut h = start().await;
    for (channel, sub) in both(&h).await {
        let p = prepay(TradeType::Native, &sub);
        channel.prepay(&p).await.unwrap();
        channel
            .sandbox_pay(&p.out_trade_no, &sub, true, None)
            .await
            .unwrap();
        let cb = callback_for(&mut h, &channel, &p.out_trade_no).await;

        let event = channel.parse_callback(&|n| cb.header(n), &cb.body).unwrap();
        let CallbackEvent::Transaction(t) = event else {
            panic!("not a transaction: {event:?}")
        };
        assert_eq!(t.trade_state, TradeState::Success);
        assert_eq!(t.out_trade_no, p.out_trade_no);
        assert_eq!(t.amount.unwrap().total, p.total_fen);
        assert_eq!(t.attach.as_deref(), Some("order=42"));
        if channel.kind() == ChannelKind::WxPartner {
            assert_eq!(t.sub_mchid, sub.sub_mchid);
        }

        // The envelope edited after signing: not trusted, but the order is named for a query.
        let mut envelope: serde_json::Value = serde_json::from_slice(&cb.body).unwrap();
        envelope["event_type"] = json!("TRANSACTION.SUCCESS ");
        let tampered = serde_json::to_vec(&envelope).unwrap();
        match channel.parse_callback(&|n| cb.header(n), &tampered) {
            Err(CallbackError::Unverified { hint, .. }) => {
                assert_eq!(hint.as_deref(), Some(p.out_trade_no.as_str()))
            }
            other => panic!("tampered envelope: {other:?}"),
        }
        // WeChat Pay's signature probe.
        let sig = cb.header("Wechatpay-Signature").unwrap();
        let probe = cb.with_header("Wechatpay-Signature", &format!("WECHATPAY/SIGNTEST/{sig}"));
        match channel.parse_callback(&|n| probe.header(n), &probe.body) {
            Err(CallbackError::Unverified { hint, .. }) => {
                assert_eq!(hint.as_deref(), Some(p.out_trade_no.as_str()))
            }
            other => panic!("probe: {other:?}"),
        }
        // A forged ciphertext neither verifies nor decrypts: no hint.
        let mut forged = envelope.clone();
        forged["event_type"] = json!("TRANSACTION.SUCCESS");
        let ct = forged["resource"]["ciphertext"]
            .as_str()
            .unwrap()
            .to_string();
        let flipped = if ct.starts_with('A') {
            ct.replacen('A', "B", 1)
        } else {
            format!("A{}", &ct[1..])
        };
        forged["resource"]["ciphertext"] = json!(flipped);
        let forged = serde_json::to_vec(&forged).unwrap();
        match channel.parse_callback(&|n| cb.header(n), &forged) {
            Err(CallbackError::Unverified { hint, .. }) => assert_eq!(hint, None),
            other => panic!("forged: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_simulators_signtest_probe_is_refused_before_the_real_callback() {
    let mut h = start().await;
    let channel = h.direct();
    let none = SubMerchant::default();
    h.set_faults(
        &channel.config().mchid,
        json!({"notify": {"signtest": true}}),
    )
    .await;
    let p = prepay(TradeType::Native, &none);
    channel.prepay(&p).await.unwrap();
    channel
        .sandbox_pay(&p.out_trade_no, &none, true, None)
        .await
        .unwrap();
    let first = h.next_callback(CALLBACK_WAIT).await;
    assert!(
        first
            .header("Wechatpay-Signature")
            .unwrap()
            .starts_with("WECHATPAY/SIGNTEST/")
    );
    match channel.parse_callback(&|n| first.header(n), &first.body) {
        Err(CallbackError::Unverified { hint, .. }) => {
            assert_eq!(hint.as_deref(), Some(p.out_trade_no.as_str()))
        }
        other => panic!("probe: {other:?}"),
    }
    let second = h.next_callback(CALLBACK_WAIT).await;
    let event = channel
        .parse_callback(&|n| second.header(n), &second.body)
        .unwrap();
    assert!(matches!(event, CallbackEvent::Transaction(t) if t.out_trade_no == p.out_trade_no));
}

#[tokio::test]
async fn re_prepay_after_a_timeout_returns_a_credential_for_the_same_order() {
    let h = start().await;
    let (partner, sub) = h.partner().await;
    let direct = h.direct();
    for (channel, sub) in [(direct, SubMerchant::default()), (partner, sub)] {
        let mchid = channel.config().mchid.clone();
        // A short deadline, so the withheld answer is a timeout.
        let impatient = WxChannel::new(ChannelConfig {
            timeout_ms: 300,
            ..channel.config().clone()
        })
        .unwrap();
        h.set_faults(
            &mchid,
            json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 2000, "operations": ["prepay"]}),
        )
        .await;
        let p = prepay(TradeType::Jsapi, &sub);
        let e = impatient.prepay(&p).await.unwrap_err();
        assert!(e.is_unknown() && e.is_retryable(), "{e:?}");
        h.clear_faults(&mchid).await;
        // The request was processed although no answer came back.
        assert_eq!(
            query_some(&channel, &p.out_trade_no, &sub)
                .await
                .trade_state,
            TradeState::Notpay
        );
        // Identical parameters: WeChat Pay hands the credential out again.
        let id = prepay_id(impatient.prepay(&p).await.unwrap());
        assert_eq!(prepay_id(channel.prepay(&p.clone()).await.unwrap()), id);
        // Different parameters under the same out_trade_no: a definite, final refusal.
        let mut changed = p.clone();
        changed.total_fen += 1;
        let e = channel.prepay(&changed).await.unwrap_err();
        assert_eq!(e.code(), Some("OUT_TRADE_NO_USED"));
        assert!(!e.is_retryable());
    }
}

#[tokio::test]
async fn injected_errors_are_classified_by_the_table() {
    let h = start().await;
    let channel = h.direct();
    let mchid = channel.config().mchid.clone();
    let none = SubMerchant::default();
    let cases = [
        ("SYSTEM_ERROR", true, true, ErrorAction::Retry),
        ("FREQUENCY_LIMITED", false, true, ErrorAction::Retry),
        ("PARAM_ERROR", false, false, ErrorAction::Stop),
        ("NO_AUTH", false, false, ErrorAction::SwitchChannel),
    ];
    for (code, unknown, retryable, action) in cases {
        h.set_faults(
            &mchid,
            json!({"errors": [{"code": code, "rate_ppm": 1_000_000}], "operations": ["prepay"]}),
        )
        .await;
        let e = channel
            .prepay(&prepay(TradeType::Native, &none))
            .await
            .unwrap_err();
        assert_eq!(e.is_unknown(), unknown, "{code}: {e:?}");
        assert_eq!(e.is_retryable(), retryable, "{code}: {e:?}");
        assert_eq!(e.action(), action, "{code}");
        if !unknown {
            assert_eq!(e.code(), Some(code));
        }
        if code == "FREQUENCY_LIMITED" {
            assert!(
                matches!(e, ChannelError::Rejected { status: 429, .. }),
                "{e:?}"
            );
        }
    }
    h.clear_faults(&mchid).await;
    channel
        .prepay(&prepay(TradeType::Native, &none))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unverifiable_answer_is_unknown_not_failure() {
    let h = start().await;
    let good = h.direct();
    // Trust a platform key WeChat Pay does not sign with.
    let stranger = paygate_wxpay::crypto::SigningKey::generate(
        paygate_wxpay::crypto::SignatureScheme::Rsa2048Sha256,
    )
    .unwrap();
    let config = ChannelConfig {
        platform_public_key_pem: stranger.verifying_key().to_spki_pem(),
        platform_cert_pem: None,
        ..good.config().clone()
    };
    let blind = WxChannel::new(config).unwrap();
    let none = SubMerchant::default();
    let p = prepay(TradeType::Native, &none);
    let e = blind.prepay(&p).await.unwrap_err();
    assert!(e.is_unknown(), "{e:?}");
    // It did happen: the order exists.
    assert_eq!(
        query_some(&good, &p.out_trade_no, &none).await.trade_state,
        TradeState::Notpay
    );
}

#[tokio::test]
async fn sub_merchant_mistakes_are_refused() {
    let h = start().await;
    let (partner, _) = h.partner().await;
    let stranger = SubMerchant {
        sub_mchid: Some("1799999999".into()),
        sub_appid: None,
    };
    let e = partner
        .prepay(&prepay(TradeType::Native, &stranger))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("NO_AUTH"));
    assert_eq!(e.action(), ErrorAction::SwitchChannel);
    // No sub-merchant at all, or one handed to a direct channel: refused locally.
    let e = partner
        .prepay(&prepay(TradeType::Native, &SubMerchant::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("PARAM_ERROR"));
    let e = h
        .direct()
        .query(&attempt_id(), &stranger)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("PARAM_ERROR"));
    let e = h.direct().sandbox_add_sub_merchant().await.unwrap_err();
    assert_eq!(e.code(), Some("NO_AUTH"));
}

#[tokio::test]
async fn the_sandbox_is_closed_to_non_sandbox_channels() {
    let h = start().await;
    let live = WxChannel::new(ChannelConfig {
        sandbox: false,
        ..h.direct_config()
    })
    .unwrap();
    let none = SubMerchant::default();
    let p = prepay(TradeType::Native, &none);
    live.prepay(&p).await.unwrap();
    let e = live
        .sandbox_pay(&p.out_trade_no, &none, true, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("NO_AUTH"));
    assert!(matches!(e, ChannelError::Rejected { status: 403, .. }));
}

#[tokio::test]
async fn pay_params_are_signed_with_the_channel_merchant_key() {
    let h = start().await;
    for (kit, (channel, sub)) in [&h.sim.direct, &h.sim.partner]
        .into_iter()
        .zip(both(&h).await)
    {
        let merchant_key = VerifyingKey::from_certificate_pem(&kit.apiclient_cert_pem).unwrap();
        let appid = sub
            .sub_appid
            .clone()
            .unwrap_or_else(|| channel.config().appid.clone());

        let id = prepay_id(
            channel
                .prepay(&prepay(TradeType::Jsapi, &sub))
                .await
                .unwrap(),
        );
        let js = channel.jsapi_pay_params(&appid, &id).unwrap();
        assert_eq!(js.package, format!("prepay_id={id}"));
        assert_eq!(js.sign_type, "RSA");
        let message = pay_message(&js.app_id, &js.time_stamp, &js.nonce_str, &js.package);
        merchant_key.verify_base64(&message, &js.pay_sign).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((now - js.time_stamp.parse::<i64>().unwrap()).abs() <= 5);
        // Fresh nonce every time.
        assert_ne!(
            channel.jsapi_pay_params(&appid, &id).unwrap().nonce_str,
            js.nonce_str
        );

        let id = prepay_id(channel.prepay(&prepay(TradeType::App, &sub)).await.unwrap());
        let app = channel.app_pay_params(&appid, &id, &sub).unwrap();
        let expected_partner = match channel.kind() {
            ChannelKind::WxDirect => channel.config().mchid.clone(),
            ChannelKind::WxPartner => sub.sub_mchid.clone().unwrap(),
        };
        assert_eq!(app.partnerid, expected_partner);
        assert_eq!(app.package, "Sign=WXPay");
        let message = pay_message(&app.appid, &app.timestamp, &app.noncestr, &app.prepayid);
        merchant_key.verify_base64(&message, &app.sign).unwrap();
    }
    let (partner, _) = h.partner().await;
    let e = partner
        .app_pay_params("wx1", "wx2", &SubMerchant::default())
        .unwrap_err();
    assert_eq!(e.code(), Some("PARAM_ERROR"));
}

#[tokio::test]
async fn channels_are_cheap_to_share_across_tasks() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<WxChannel>();
    let h = start().await;
    let channel = h.direct();
    let none = SubMerchant::default();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let channel = channel.clone();
            let none = none.clone();
            tokio::spawn(async move { channel.prepay(&prepay(TradeType::Native, &none)).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(
            t.await.unwrap().unwrap(),
            PrepayCredential::CodeUrl(_)
        ));
    }
}
