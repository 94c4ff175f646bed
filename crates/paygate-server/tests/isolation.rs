//! Issue 7 §4: merchant isolation. Merchant B pays an order, refunds part of it and splits it
//! to a receiver; merchant A, correctly signed with its own credentials, then tries every
//! merchant endpoint on B's order, refund and share (by out_trade_no, by transaction_id, by
//! B's mchid in the query, writes and reads). Every answer is the documented 4xx in the V3
//! shape — 404 not-found, or 400/403 for another mchid — and none carries B's data; B's
//! order, refund and share are untouched afterwards. (Bills: bills.rs,
//! `another_merchants_bill_and_download_are_never_reachable`.) SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paygate_server::{channel_mapping, merchants};
use paygate_wxpay::client::{ClientError, KeyMode, WxClient};
use paygate_wxpay::crypto::VerifyingKey;
use serde_json::{Value, json};

mod common;

use common::*;

const TOTAL: i64 = 4321;
const RECEIVER: &str = "1900000201";

/// Merchant B's resources.
struct Owned {
    no: String,
    tx: String,
    /// A second order, paid for profit sharing (its funds stay frozen for the split).
    share_tx: String,
    refund_no: String,
    share_no: String,
}

async fn paid(gw: &Gw, sharing: bool) -> (String, String) {
    let no = out_no("B");
    let mut body = json!({"appid": gw.kit.merchant.appid, "mchid": gw.mchid(), "description": "隔离",
        "out_trade_no": no, "notify_url": "http://127.0.0.1:9/n",
        "amount": {"total": TOTAL, "currency": "CNY"}});
    if sharing {
        body["settle_info"] = json!({"profit_sharing": true});
    }
    let _: Value = gw
        .client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    gw.pay(&no).await;
    let tx = gw.wait_state(&no, "SUCCESS").await.transaction_id.unwrap();
    (no, tx)
}

async fn b_resources(gw: &Gw) -> Owned {
    let (no, tx) = paid(gw, false).await;
    let (_, share_tx) = paid(gw, true).await;
    let refund_no = format!("R{no}");
    let _: Value = gw
        .client
        .post_json(
            "/v3/refund/domestic/refunds",
            &json!({"out_trade_no": no, "out_refund_no": refund_no,
                    "amount": {"refund": 1000, "total": TOTAL, "currency": "CNY"}}),
        )
        .await
        .unwrap();
    let key = VerifyingKey::from_spki_pem(&gw.kit.pub_key_pem).unwrap();
    let name = paygate_wxpay::crypto::oaep::encrypt(&key, "示例商户全称").unwrap();
    let _: Value = gw
        .client
        .post_json(
            "/v3/profitsharing/receivers/add",
            &json!({"appid": gw.kit.merchant.appid, "type": "MERCHANT_ID", "account": RECEIVER,
                    "name": name, "relation_type": "PARTNER"}),
        )
        .await
        .unwrap();
    let share_no = out_no("S");
    let _: Value = gw
        .client
        .post_json(
            "/v3/profitsharing/orders",
            &json!({"appid": gw.kit.merchant.appid, "transaction_id": share_tx, "out_order_no": share_no,
                    "receivers": [{"type": "MERCHANT_ID", "account": RECEIVER, "amount": 100,
                                   "description": "分给商户", "name": name}],
                    "unfreeze_unsplit": false}),
        )
        .await
        .unwrap();
    Owned {
        no,
        tx,
        share_tx,
        refund_no,
        share_no,
    }
}

async fn merchant_a(gw: &Gw) -> (String, String, WxClient) {
    let channel = gw.gw.state.channel(&gw.gw.state.default_channel).unwrap();
    let a = merchants::onboard(
        gw.gw.state.store.as_ref(),
        &gw.gw.state.keys,
        &gw.gw.base_url,
        merchants::NewMerchant {
            name: "merchant A".into(),
            cert_pem: None,
            mapping: channel_mapping(channel.config(), None, None).unwrap(),
        },
    )
    .await
    .unwrap();
    let client = WxClient::from_kit(&a.kit, KeyMode::PublicKey, 10_000).unwrap();
    (a.kit.merchant.mchid, a.kit.merchant.appid, client)
}

/// One of A's attempts: refused with a V3 error that leaks nothing of B's.
fn refused(what: &str, r: Result<Value, ClientError>, b: &Owned, b_mchid: &str) -> u16 {
    match r {
        Err(ClientError::Api {
            status,
            code,
            message,
            body,
        }) => {
            assert!(
                matches!(status, 400 | 403 | 404),
                "{what}: {status} {code} {body}"
            );
            assert!(!code.is_empty() && !message.is_empty(), "{what}: {body}");
            for secret in [
                TOTAL.to_string(),
                b.tx.clone(),
                b.share_tx.clone(),
                b_mchid.to_string(),
            ] {
                // A may name B's ids in its own request; the answer must not add B's data.
                if !what.contains(&secret) {
                    assert!(!body.contains(&secret), "{what}: leaks {secret}: {body}");
                }
            }
            status
        }
        other => panic!("{what}: not refused: {other:?}"),
    }
}

#[tokio::test]
async fn merchant_a_reaches_none_of_merchant_bs_orders_refunds_or_shares() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let b_mchid = gw.mchid().to_string();
        let b = b_resources(&gw).await;
        let (a_mchid, a_appid, a) = merchant_a(&gw).await;

        let gets = [
            format!("/v3/pay/transactions/out-trade-no/{}?mchid={a_mchid}", b.no),
            format!("/v3/pay/transactions/id/{}?mchid={a_mchid}", b.tx),
            format!("/v3/pay/transactions/out-trade-no/{}?mchid={b_mchid}", b.no),
            format!("/v3/pay/transactions/id/{}?mchid={b_mchid}", b.tx),
            format!("/v3/refund/domestic/refunds/{}", b.refund_no),
            format!(
                "/v3/profitsharing/orders/{}?transaction_id={}",
                b.share_no, b.share_tx
            ),
            format!("/v3/profitsharing/transactions/{}/amounts", b.share_tx),
            format!(
                "/v3/profitsharing/return-orders/{}?out_order_no={}",
                "RET1", b.share_no
            ),
        ];
        for path in &gets {
            refused(
                &format!("GET {path}"),
                a.get_json::<Value>(path).await,
                &b,
                &b_mchid,
            );
        }
        let posts = [
            (
                format!("/v3/pay/transactions/out-trade-no/{}/close", b.no),
                json!({"mchid": a_mchid}),
            ),
            (
                format!("/v3/pay/transactions/out-trade-no/{}/close", b.no),
                json!({"mchid": b_mchid}),
            ),
            (
                "/paygate/v1/pay-params".to_string(),
                json!({"out_trade_no": b.no, "trade_type": "JSAPI"}),
            ),
            (
                "/v3/refund/domestic/refunds".to_string(),
                json!({"out_trade_no": b.no, "out_refund_no": "A-R1",
                       "amount": {"refund": 1, "total": TOTAL, "currency": "CNY"}}),
            ),
            (
                "/v3/refund/domestic/refunds".to_string(),
                json!({"transaction_id": b.tx, "out_refund_no": "A-R2",
                       "amount": {"refund": 1, "total": TOTAL, "currency": "CNY"}}),
            ),
            (
                "/v3/profitsharing/orders".to_string(),
                json!({"appid": a_appid, "transaction_id": b.share_tx, "out_order_no": "A-S1",
                       "receivers": [{"type": "MERCHANT_ID", "account": RECEIVER, "amount": 1,
                                      "description": "x"}],
                       "unfreeze_unsplit": true}),
            ),
            (
                "/v3/profitsharing/orders/unfreeze".to_string(),
                json!({"transaction_id": b.share_tx, "out_order_no": "A-U1", "description": "解冻"}),
            ),
            (
                "/v3/profitsharing/return-orders".to_string(),
                json!({"out_order_no": b.share_no, "out_return_no": "A-RET1",
                       "return_mchid": RECEIVER, "amount": 1, "description": "回退"}),
            ),
        ];
        for (path, body) in &posts {
            let what = format!("POST {path} {body}");
            refused(
                &what,
                a.post_json::<_, Value>(path, body).await,
                &b,
                &b_mchid,
            );
        }

        // B's things are as B left them.
        let order = gw.query(&b.no).await;
        assert_eq!(order.trade_state.as_str(), "REFUND", "not closed by A");
        let refund: Value = gw
            .client
            .get_json(&format!("/v3/refund/domestic/refunds/{}", b.refund_no))
            .await
            .unwrap();
        assert_eq!(refund["amount"]["refund"], 1000);
        let share: Value = gw
            .client
            .get_json(&format!(
                "/v3/profitsharing/orders/{}?transaction_id={}",
                b.share_no, b.share_tx
            ))
            .await
            .unwrap();
        assert_eq!(share["receivers"].as_array().unwrap().len(), 1, "{share}");
        gw.finish().await;
    }
}
