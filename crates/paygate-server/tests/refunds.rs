//! Refunds on the gateway over HTTP, as a merchant's V3 client sees them, on SQLite and (when
//! PAYGATE_TEST_DATABASE_URL is set) on PostgreSQL: partial and multiple refunds by either id,
//! idempotency, 100 concurrent refunds of one order, the refusals (unpaid, wrong total, too
//! late, not enough), risk control, the channel's ABNORMAL, refusals and timeouts, the signed
//! and encrypted REFUND.* notification, and the poller settling a refund whose callback was lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use paygate_store::{RefundState, Store};
use paygate_wxpay::client::ClientError;
use paygate_wxpay::crypto::VerifyingKey;
use paygate_wxpay::kit::MerchantKit;
use paygate_wxpay::models::refunds::{Refund, RefundNotifyPayload, RefundStatus};
use paygate_wxpay::notify::Notification;
use paygate_wxpay::sign::ResponseSignature;
use serde_json::{Value, json};

mod common;

use common::*;

impl Gw {
    fn store(&self) -> &dyn Store {
        self.gw.state.store.as_ref()
    }

    async fn prepay(&self, no: &str, total: i64, notify_url: &str, openid: Option<&str>) {
        let mut body = json!({"appid": self.kit.merchant.appid, "mchid": self.mchid(),
            "description": "退款测试", "out_trade_no": no, "notify_url": notify_url,
            "amount": {"total": total, "currency": "CNY"}});
        let product = match openid {
            Some(o) => {
                body["payer"] = json!({"openid": o});
                "jsapi"
            }
            None => "native",
        };
        let _: Value = self
            .client
            .post_json(&format!("/v3/pay/transactions/{product}"), &body)
            .await
            .unwrap();
    }

    /// A paid order: its gateway transaction id.
    async fn paid(&self, no: &str, total: i64, notify_url: &str) -> String {
        self.prepay(no, total, notify_url, None).await;
        self.pay(no).await;
        self.wait_state(no, "SUCCESS").await.transaction_id.unwrap()
    }

    fn refund_body(&self, by: (&str, &str), out_refund_no: &str, refund: i64, total: i64) -> Value {
        json!({by.0: by.1, "out_refund_no": out_refund_no, "reason": "商品已售完",
               "amount": {"refund": refund, "total": total, "currency": "CNY"}})
    }

    async fn refund(&self, body: &Value) -> Result<Refund, ClientError> {
        self.client
            .post_json("/v3/refund/domestic/refunds", body)
            .await
    }

    async fn query_refund(&self, out_refund_no: &str) -> Result<Refund, ClientError> {
        self.client
            .get_json(&format!("/v3/refund/domestic/refunds/{out_refund_no}"))
            .await
    }

    async fn wait_refund(&self, out_refund_no: &str, status: RefundStatus) -> Refund {
        eventually(|| async {
            let r = self.query_refund(out_refund_no).await.unwrap();
            (r.status == status).then_some(r)
        })
        .await
    }
}

fn api_error(r: Result<Refund, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected a V3 error, got {other:?}"),
    }
}

#[derive(Clone, Default)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn receiver() -> Receiver {
    let r = Receiver::default();
    let got = Arc::clone(&r.got);
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let got = Arc::clone(&got);
            async move {
                got.lock().unwrap().push((headers, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/notify"),
        ..r
    }
}

impl Receiver {
    /// Verified and opened notifications whose event type starts with `prefix`, once `n` came.
    async fn events(
        &self,
        kit: &MerchantKit,
        prefix: &str,
        n: usize,
    ) -> Vec<(Notification, Vec<u8>)> {
        eventually(|| async {
            let got = self.got.lock().unwrap().clone();
            let opened: Vec<_> = got
                .iter()
                .map(|(headers, body)| open(kit, headers, body))
                .filter(|(n, _)| n.event_type.starts_with(prefix))
                .collect();
            (opened.len() >= n).then_some(opened)
        })
        .await
    }
}

/// Verifies the signature with the kit's platform public key and decrypts with its APIv3 key.
fn open(kit: &MerchantKit, headers: &HeaderMap, body: &Bytes) -> (Notification, Vec<u8>) {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let sig = ResponseSignature::from_headers(header).unwrap();
    assert_eq!(sig.serial, kit.merchant.platform_public_key_id);
    sig.verify(
        &VerifyingKey::from_spki_pem(&kit.pub_key_pem).unwrap(),
        body,
    )
    .unwrap();
    let envelope: Notification = serde_json::from_slice(body).unwrap();
    let plaintext = envelope.open(kit.merchant.apiv3_key.as_bytes()).unwrap();
    (envelope, plaintext)
}

#[tokio::test]
async fn partial_and_multiple_refunds_by_either_id_up_to_the_paid_amount() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let no = out_no("P");
        let tid = gw.paid(&no, 100, "https://e.com/n").await;

        let first = gw
            .refund(&gw.refund_body(("out_trade_no", &no), "rf-a1", 30, 100))
            .await
            .unwrap();
        assert_eq!(first.status, RefundStatus::Processing);
        assert_eq!(first.refund_id.len(), 29);
        assert!(first.refund_id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(first.transaction_id, tid, "the gateway's transaction id");
        assert_eq!(first.out_trade_no, no, "the merchant's out_trade_no");
        assert_eq!((first.amount.refund, first.amount.total), (30, 100));
        // Accepted by the channel: the order is in refund.
        assert_eq!(gw.query(&no).await.trade_state.as_str(), "REFUND");

        let second = gw
            .refund(&gw.refund_body(("transaction_id", &tid), "rf-a2", 70, 100))
            .await
            .unwrap();
        assert_ne!(second.refund_id, first.refund_id);
        assert_eq!(
            api_error(
                gw.refund(&gw.refund_body(("out_trade_no", &no), "rf-a3", 1, 100))
                    .await
            ),
            (403, "NOT_ENOUGH".into())
        );
        let done = gw.wait_refund("rf-a1", RefundStatus::Success).await;
        assert_eq!(done.refund_id, first.refund_id);
        assert!(done.success_time.is_some());
        gw.wait_refund("rf-a2", RefundStatus::Success).await;
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(100));
        let t = gw.query(&no).await;
        assert_eq!(t.trade_state.as_str(), "REFUND");
        assert_eq!(t.transaction_id.as_deref(), Some(tid.as_str()));
        gw.finish().await;
    }
}

#[tokio::test]
async fn the_same_out_refund_no_is_the_same_refund_and_other_parameters_are_refused() {
    for pg in backends() {
        let gw = Arc::new(start(pg.as_deref(), |_| {}).await);
        let no = out_no("I");
        let tid = gw.paid(&no, 500, "https://e.com/n").await;
        let other = out_no("O");
        gw.paid(&other, 500, "https://e.com/n").await;
        let body = gw.refund_body(("out_trade_no", &no), "rf-same", 120, 500);
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (gw, body) = (Arc::clone(&gw), body.clone());
                tokio::spawn(async move { gw.refund(&body).await.unwrap().refund_id })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            ids.insert(t.await.unwrap());
        }
        assert_eq!(ids.len(), 1, "one refund for one out_refund_no");
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(120));
        // The same key with another amount, or on another order: refused, nothing changes.
        let changed = gw.refund_body(("out_trade_no", &no), "rf-same", 121, 500);
        assert_eq!(
            api_error(gw.refund(&changed).await),
            (400, "INVALID_REQUEST".into())
        );
        let elsewhere = gw.refund_body(("out_trade_no", &other), "rf-same", 120, 500);
        assert_eq!(
            api_error(gw.refund(&elsewhere).await),
            (400, "INVALID_REQUEST".into())
        );
        // Same request after it settled: the same refund, now SUCCESS.
        gw.wait_refund("rf-same", RefundStatus::Success).await;
        let again = gw.refund(&body).await.unwrap();
        assert!(ids.contains(&again.refund_id));
        assert_eq!(again.status, RefundStatus::Success);
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(120));
        assert_eq!(gw.store().refunds_of(&tid).await.unwrap().len(), 1);
        let Ok(gw) = Arc::try_unwrap(gw) else {
            panic!("every task finished")
        };
        gw.finish().await;
    }
}

#[tokio::test]
async fn refund_never_exceeds_paid_amount_under_concurrency() {
    for pg in backends() {
        // Risk control decides on each, in the sandbox's `lists` enforcement: its velocity
        // rules flag this burst of refunds to one new payer (REVIEW) and only a block list
        // would refuse, so every refusal here is the amount guard's.
        let gw = Arc::new(start(pg.as_deref(), |_| {}).await);
        let no = out_no("C");
        let total = 1000;
        let tid = gw.paid(&no, total, "https://e.com/n").await;
        let tasks: Vec<_> = (0..100i64)
            .map(|i| {
                let gw = Arc::clone(&gw);
                let amount = 1 + (i * 37) % 60;
                let body =
                    gw.refund_body(("out_trade_no", &no), &format!("rf-c{i}"), amount, total);
                tokio::spawn(async move { (amount, gw.refund(&body).await) })
            })
            .collect();
        let (mut accepted_fen, mut accepted, mut refused) = (0, 0, 0);
        for t in tasks {
            match t.await.unwrap() {
                (amount, Ok(r)) => {
                    assert_eq!(r.amount.refund, amount);
                    accepted_fen += amount;
                    accepted += 1;
                }
                (_, Err(ClientError::Api { status, code, .. })) => {
                    assert_eq!((status, code.as_str()), (403, "NOT_ENOUGH"));
                    refused += 1;
                }
                (_, Err(e)) => panic!("{e}"),
            }
        }
        assert_eq!(accepted + refused, 100);
        assert!(accepted_fen <= total, "refunded {accepted_fen} of {total}");
        assert!(refused > 0, "the 100 ask for ~3,000 fen of 1,000");
        assert!(
            accepted_fen > total - 60,
            "refusals only once less than 60 fen was left"
        );
        assert_eq!(
            gw.store().refunded_fen(&tid).await.unwrap(),
            Some(accepted_fen)
        );
        let stored = gw.store().refunds_of(&tid).await.unwrap();
        assert_eq!(stored.len(), accepted);
        assert_eq!(
            stored.iter().map(|r| r.amount_fen).sum::<i64>(),
            accepted_fen
        );
        // One risk decision per refund made (and one for the prepay); none for a refusal.
        let metrics = gw
            .http
            .get(format!("{}metrics", gw.gw.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let decisions: usize = metrics
            .lines()
            .filter(|l| l.starts_with("paygate_risk_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .sum();
        assert_eq!(decisions, 1 + accepted, "{metrics}");
        // And the channel refunds each exactly once: every one settles.
        for r in &stored {
            gw.wait_refund(&r.out_refund_no, RefundStatus::Success)
                .await;
        }
        let Ok(gw) = Arc::try_unwrap(gw) else {
            panic!("every task finished")
        };
        gw.finish().await;
    }
}

#[tokio::test]
async fn unpaid_unknown_late_and_mismatched_refunds_are_refused() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let unpaid = out_no("U");
        gw.prepay(&unpaid, 100, "https://e.com/n", None).await;
        let refund = |by: (&str, &str), rf: &str, amount: i64, total: i64| {
            gw.refund_body(by, rf, amount, total)
        };
        assert_eq!(
            api_error(
                gw.refund(&refund(("out_trade_no", &unpaid), "rf-u", 10, 100))
                    .await
            ),
            (404, "RESOURCE_NOT_EXISTS".into())
        );
        assert_eq!(
            api_error(
                gw.refund(&refund(("out_trade_no", "NOPE12345"), "rf-u", 10, 100))
                    .await
            ),
            (404, "RESOURCE_NOT_EXISTS".into())
        );
        assert_eq!(
            api_error(
                gw.refund(&refund(
                    ("transaction_id", "4200000000202601010000000000"),
                    "rf-u",
                    10,
                    100
                ))
                .await
            ),
            (404, "RESOURCE_NOT_EXISTS".into())
        );
        let no = out_no("W");
        let tid = gw.paid(&no, 100, "https://e.com/n").await;
        assert_eq!(
            api_error(
                gw.refund(&refund(("out_trade_no", &no), "rf-w", 10, 99))
                    .await
            ),
            (400, "INVALID_REQUEST".into()),
            "amount.total is not the order's"
        );
        assert_eq!(
            api_error(
                gw.refund(&refund(("out_trade_no", &no), "rf-w", 101, 100))
                    .await
            ),
            (400, "PARAM_ERROR".into()),
            "more than the total"
        );
        let mut partner = refund(("out_trade_no", &no), "rf-w", 10, 100);
        partner["sub_mchid"] = json!("1900000109");
        assert_eq!(
            api_error(gw.refund(&partner).await),
            (403, "NO_AUTH".into())
        );
        // transaction_id and out_trade_no naming different orders: no such order.
        let mut both = refund(("transaction_id", &tid), "rf-w", 10, 100);
        both["out_trade_no"] = json!(unpaid);
        assert_eq!(
            api_error(gw.refund(&both).await),
            (404, "RESOURCE_NOT_EXISTS".into())
        );
        assert_eq!(
            api_error(gw.query_refund("rf-none").await),
            (404, "RESOURCE_NOT_EXISTS".into())
        );
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(0));
        assert!(gw.store().refunds_of(&tid).await.unwrap().is_empty());

        // Paid 400 days ago (written straight to the store): out of the one-year window.
        let old = old_paid_order(&gw).await;
        assert_eq!(
            api_error(
                gw.refund(&refund(("out_trade_no", &old), "rf-old", 10, 100))
                    .await
            ),
            (400, "INVALID_REQUEST".into())
        );
        gw.finish().await;
    }
}

/// An order paid 400 days ago, as the store would hold it; its out_trade_no.
async fn old_paid_order(gw: &Gw) -> String {
    use paygate_store::{
        AttemptChange, AttemptRecord, AttemptState, OrderChange, OrderRecord, OrderState,
    };
    let paid_at = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    let tid = paygate_core::ids::transaction_id(paid_at);
    let no = out_no("OLD");
    let order = OrderRecord {
        transaction_id: tid.clone(),
        mchid: gw.mchid().to_string(),
        out_trade_no: no.clone(),
        appid: gw.kit.merchant.appid.clone(),
        trade_type: "NATIVE".into(),
        state: OrderState::Notpay,
        description: "old".into(),
        attach: None,
        notify_url: "https://e.com/n".into(),
        total_fen: 100,
        currency: "CNY".into(),
        payer_openid: None,
        time_expire: paid_at + time::Duration::hours(2),
        fingerprint: "old".into(),
        request_json: "{}".into(),
        created_at: paid_at,
        updated_at: paid_at,
        success_time: None,
        bank_type: None,
        version: 0,
        pricing: Default::default(),
        profit_sharing: false,
    };
    let attempt = AttemptRecord {
        attempt_id: format!("{tid}01"),
        transaction_id: tid.clone(),
        seq: 1,
        channel_id: gw.gw.state.default_channel.clone(),
        state: AttemptState::Prepaid,
        prepay_id: None,
        code_url: None,
        h5_url: None,
        prepay_expires_at: None,
        channel_transaction_id: None,
        error_code: None,
        error_message: None,
        decision: None,
        created_at: paid_at,
        updated_at: paid_at,
        last_polled_at: None,
        next_poll_at: None,
    };
    gw.store().create_order(&order, &attempt).await.unwrap();
    let change = OrderChange {
        transaction_id: tid.clone(),
        expected_state: OrderState::Notpay,
        new_state: OrderState::Success,
        success_time: Some(paid_at),
        bank_type: None,
        payer_openid: None,
        updated_at: paid_at,
        attempt: Some(AttemptChange::to(
            &attempt.attempt_id,
            &[AttemptState::Prepaid],
            AttemptState::Paid,
            paid_at,
        )),
        notification: None,
        repair: None,
        ledger: None,
    };
    assert!(gw.store().apply_order_change(&change).await.unwrap());
    no
}

#[tokio::test]
async fn a_refund_notification_is_signed_encrypted_and_carries_the_merchants_ids() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let order_rx = receiver().await;
        let refund_rx = receiver().await;
        let no = out_no("N");
        let tid = gw.paid(&no, 300, &order_rx.url).await;
        // No notify_url on the first refund: the order's; the second names its own.
        gw.refund(&gw.refund_body(("out_trade_no", &no), "rf-n1", 100, 300))
            .await
            .unwrap();
        let mut body = gw.refund_body(("out_trade_no", &no), "rf-n2", 200, 300);
        body["notify_url"] = json!(refund_rx.url);
        let created = gw.refund(&body).await.unwrap();

        let got = refund_rx.events(&gw.kit, "REFUND.", 1).await;
        let (envelope, plaintext) = &got[0];
        assert_eq!(envelope.event_type, "REFUND.SUCCESS");
        assert_eq!(envelope.resource.original_type, "refund");
        assert_eq!(envelope.summary, "退款成功");
        let p: RefundNotifyPayload = serde_json::from_slice(plaintext).unwrap();
        assert_eq!(p.mchid.as_deref(), Some(gw.mchid()), "the merchant's mchid");
        assert!(p.sp_mchid.is_none() && p.sub_mchid.is_none());
        assert_eq!(p.transaction_id, tid);
        assert_eq!(p.out_trade_no, no);
        assert_eq!(p.refund_id, created.refund_id);
        assert_eq!(p.out_refund_no, "rf-n2");
        assert_eq!(p.refund_status, RefundStatus::Success);
        assert!(p.success_time.is_some());
        assert_eq!((p.amount.refund, p.amount.total), (200, 300));

        let on_order_url = order_rx.events(&gw.kit, "REFUND.", 1).await;
        let p: RefundNotifyPayload = serde_json::from_slice(&on_order_url[0].1).unwrap();
        assert_eq!(p.out_refund_no, "rf-n1");
        // One notification per final state: payment + two refunds on the order.
        let (status, view) = gw
            .admin(reqwest::Method::GET, &format!("orders/{tid}"))
            .await;
        assert_eq!(status, 200);
        let events: Vec<&str> = view["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["notification"]["event_type"].as_str().unwrap())
            .collect();
        assert_eq!(
            events.iter().filter(|e| **e == "REFUND.SUCCESS").count(),
            2,
            "{events:?}"
        );
        gw.finish().await;
    }
}

#[tokio::test]
async fn an_abnormal_refund_is_notified_and_keeps_its_amount() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let rx = receiver().await;
        let no = out_no("A");
        let tid = gw.paid(&no, 100, &rx.url).await;
        gw.channel_faults(json!({"refund_abnormal_rate_ppm": 1_000_000}))
            .await;
        gw.refund(&gw.refund_body(("out_trade_no", &no), "rf-ab", 100, 100))
            .await
            .unwrap();
        let r = gw.wait_refund("rf-ab", RefundStatus::Abnormal).await;
        assert_eq!(r.success_time, None);
        let got = rx.events(&gw.kit, "REFUND.", 1).await;
        assert_eq!(got[0].0.event_type, "REFUND.ABNORMAL");
        assert_eq!(got[0].0.summary, "退款异常");
        let p: RefundNotifyPayload = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(p.refund_status, RefundStatus::Abnormal);
        // The money is still owed to the payer: nothing more can be refunded.
        gw.channel_faults(json!({})).await;
        assert_eq!(
            api_error(
                gw.refund(&gw.refund_body(("out_trade_no", &no), "rf-ab2", 1, 100))
                    .await
            ),
            (403, "NOT_ENOUGH".into())
        );
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(100));
        gw.finish().await;
    }
}

#[tokio::test]
async fn the_poller_settles_a_refund_whose_callback_was_dropped() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let rx = receiver().await;
        let no = out_no("D");
        let tid = gw.paid(&no, 100, &rx.url).await;
        gw.channel_faults(json!({"notify": {"drop_rate_ppm": 1_000_000}}))
            .await;
        gw.refund(&gw.refund_body(("out_trade_no", &no), "rf-drop", 60, 100))
            .await
            .unwrap();
        // Only the poller can learn it: the channel's callbacks never arrive and the merchant's
        // query reads the store.
        let r = gw.wait_refund("rf-drop", RefundStatus::Success).await;
        assert!(r.success_time.is_some());
        // The poller settles the refund, then records its visit (a second write): wait for it.
        let stored = eventually(|| async {
            let stored = gw.store().refunds_of(&tid).await.unwrap();
            stored[0].last_polled_at.is_some().then_some(stored)
        })
        .await;
        assert_eq!(
            stored[0].state,
            RefundState::Success,
            "settled by the poller"
        );
        let got = rx.events(&gw.kit, "REFUND.", 1).await;
        assert_eq!(got[0].0.event_type, "REFUND.SUCCESS");
        let sim = gw.gw.sandbox.as_ref().unwrap();
        let log: Value = gw
            .http
            .get(format!("{}sandbox/v1/notifications", sim.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            log.as_array()
                .unwrap()
                .iter()
                .filter(|d| d["event_type"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("REFUND")))
                .all(|d| d["acked"] == false),
            "no refund callback reached the gateway: {log}"
        );
        gw.finish().await;
    }
}

#[tokio::test]
async fn a_refund_the_channel_refuses_ends_closed_and_gives_the_amount_back() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let no = out_no("R");
        let tid = gw.paid(&no, 100, "https://e.com/n").await;
        gw.channel_faults(
            json!({"errors": [{"code": "USER_ACCOUNT_ABNORMAL", "rate_ppm": 1_000_000}],
                                 "operations": ["refund"]}),
        )
        .await;
        let body = gw.refund_body(("out_trade_no", &no), "rf-no", 100, 100);
        assert_eq!(
            api_error(gw.refund(&body).await),
            (403, "USER_ACCOUNT_ABNORMAL".into())
        );
        let stored = gw.store().refunds_of(&tid).await.unwrap();
        assert_eq!(stored[0].state, RefundState::Closed);
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(0));
        // The order never went into refund; for the merchant the refund does not exist, and
        // its out_refund_no answers with the refusal again.
        assert_eq!(gw.query(&no).await.trade_state.as_str(), "SUCCESS");
        assert_eq!(
            api_error(gw.query_refund("rf-no").await),
            (404, "RESOURCE_NOT_EXISTS".into())
        );
        gw.channel_faults(json!({})).await;
        assert_eq!(
            api_error(gw.refund(&body).await),
            (403, "USER_ACCOUNT_ABNORMAL".into())
        );
        // The amount is there again for a new refund.
        let r = gw
            .refund(&gw.refund_body(("out_trade_no", &no), "rf-yes", 100, 100))
            .await
            .unwrap();
        assert_eq!(r.amount.refund, 100);
        gw.finish().await;
    }
}

#[tokio::test]
async fn a_channel_timeout_is_settled_by_asking_the_channel_not_by_refunding_twice() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |c| c.sandbox.channel_timeout_ms = 400).await;
        let no = out_no("T");
        let tid = gw.paid(&no, 100, "https://e.com/n").await;
        gw.channel_faults(json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 1500,
                                 "operations": ["refund"], "notify": {"drop_rate_ppm": 1_000_000}}))
            .await;
        // Processed at the channel, answer withheld; the query that follows times out too, and
        // the channel's callbacks are lost: only asking the channel can tell.
        let retried = gw.refund_body(("out_trade_no", &no), "rf-t1", 40, 100);
        assert_eq!(
            api_error(gw.refund(&retried).await),
            (500, "SYSTEM_ERROR".into())
        );
        let left_alone = gw.refund_body(("out_trade_no", &no), "rf-t2", 60, 100);
        assert_eq!(
            api_error(gw.refund(&left_alone).await),
            (500, "SYSTEM_ERROR".into())
        );
        assert_eq!(
            gw.store().refunded_fen(&tid).await.unwrap(),
            Some(100),
            "reserved, not lost"
        );
        assert_eq!(
            gw.query(&no).await.trade_state.as_str(),
            "SUCCESS",
            "not known to be accepted"
        );
        gw.channel_faults(json!({"notify": {"drop_rate_ppm": 1_000_000}}))
            .await;
        // The merchant's retry: the same refund, found at the channel.
        let r = gw.refund(&retried).await.unwrap();
        let ids: Vec<String> = gw
            .store()
            .refunds_of(&tid)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.refund_id)
            .collect();
        assert!(ids.contains(&r.refund_id));
        // The other one is settled by the poller alone.
        gw.wait_refund("rf-t2", RefundStatus::Success).await;
        gw.wait_refund("rf-t1", RefundStatus::Success).await;
        assert_eq!(gw.store().refunds_of(&tid).await.unwrap().len(), 2);
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(100));
        assert_eq!(gw.query(&no).await.trade_state.as_str(), "REFUND");
        gw.finish().await;
    }
}

#[tokio::test]
async fn risk_control_denies_a_refund_before_the_channel_and_keeps_the_decision() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let openid = "oRefundBlocked00000000000000";
        let no = out_no("K");
        gw.prepay(&no, 100, "https://e.com/n", Some(openid)).await;
        let resp = gw
            .http
            .post(format!("{}sandbox/v1/pay", gw.gw.base_url))
            .json(&json!({"mchid": gw.mchid(), "out_trade_no": no, "result": "SUCCESS", "openid": openid}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        let tid = gw.wait_state(&no, "SUCCESS").await.transaction_id.unwrap();
        // The payer is blocked after paying (a chargeback, say): refunds to them stop.
        let engine = gw
            .gw
            .state
            .risk
            .clone()
            .expect("risk control is on by default");
        engine.set_lists(paygate_risk::Lists::new(vec![paygate_risk::ListEntry {
            kind: paygate_risk::ListKind::Block,
            entity: paygate_risk::ListEntity::Payer,
            value: engine.payer_key(openid),
            expires_at: None,
            reason: "test chargeback".into(),
        }]));
        assert_eq!(
            api_error(
                gw.refund(&gw.refund_body(("out_trade_no", &no), "rf-risk", 50, 100))
                    .await
            ),
            (403, "RULE_LIMIT".into())
        );
        assert!(
            gw.store().refunds_of(&tid).await.unwrap().is_empty(),
            "nothing created"
        );
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(0));
        let (status, kept) = gw
            .admin(
                reqwest::Method::GET,
                &format!("risk/decisions/{}/rf-risk", gw.mchid()),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(kept[0]["kind"], "REFUND");
        assert_eq!(kept[0]["action"], "DENY");
        assert_eq!(kept[0]["transaction_id"], tid.as_str());
        assert!(
            kept[0]["fired_json"]
                .as_str()
                .unwrap()
                .contains("LIST-BLOCK-PAYER")
        );
        // Unblocked, the same request goes through.
        engine.set_lists(paygate_risk::Lists::new(Vec::new()));
        gw.refund(&gw.refund_body(("out_trade_no", &no), "rf-risk", 50, 100))
            .await
            .unwrap();
        gw.finish().await;
    }
}

#[tokio::test]
async fn an_unverified_refund_callback_is_not_trusted_and_the_channel_is_asked() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let no = out_no("F");
        let tid = gw.paid(&no, 100, "https://e.com/n").await;
        // The channel will end this refund ABNORMAL, and drops its callbacks.
        gw.channel_faults(json!({"refund_abnormal_rate_ppm": 1_000_000,
                                 "notify": {"drop_rate_ppm": 1_000_000}}))
            .await;
        let created = gw
            .refund(&gw.refund_body(("out_trade_no", &no), "rf-forged", 100, 100))
            .await
            .unwrap();
        let stored = gw.store().refunds_of(&tid).await.unwrap().remove(0);
        // A REFUND.SUCCESS sealed with the channel's APIv3 key but signed by a stranger.
        let sim = gw.gw.sandbox.as_ref().unwrap();
        let payload = json!({"sp_mchid": sim.partner.merchant.mchid, "transaction_id": "4200000000000000000000000001",
            "out_trade_no": stored.attempt_id, "refund_id": "50300000000000000000000000001",
            "out_refund_no": stored.refund_id, "refund_status": "SUCCESS",
            "success_time": "2026-11-30T10:00:00+08:00",
            "amount": {"total": 100, "refund": 100, "payer_total": 100, "payer_refund": 100}});
        let sealed = Notification::seal(
            paygate_wxpay::crypto::aead::AeadAlgorithm::Aes256Gcm,
            sim.partner.merchant.apiv3_key.as_bytes(),
            "REFUND.SUCCESS",
            "退款成功",
            "refund",
            "refund",
            payload.to_string().as_bytes(),
            uuid::Uuid::new_v4().to_string(),
            "2026-11-30T10:00:00+08:00".into(),
        )
        .unwrap();
        let body = serde_json::to_vec(&sealed).unwrap();
        let stranger = paygate_wxpay::crypto::SigningKey::generate(
            paygate_wxpay::crypto::SignatureScheme::Rsa2048Sha256,
        )
        .unwrap();
        let signed = paygate_wxpay::sign::sign_response(
            &stranger,
            &sim.partner.merchant.platform_public_key_id,
            &body,
            time::OffsetDateTime::now_utc().unix_timestamp(),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        let mut req = gw
            .http
            .post(format!("{}callbacks/wxpay/sandbox", gw.gw.base_url))
            .header("Content-Type", "application/json")
            .body(body);
        for (name, value) in signed.headers() {
            req = req.header(name, value);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        // What the channel says (ABNORMAL) stands, not what the forgery claimed.
        let r = gw.wait_refund("rf-forged", RefundStatus::Abnormal).await;
        assert_eq!(r.refund_id, created.refund_id);
        assert_eq!(r.success_time, None);
        gw.finish().await;
    }
}

impl Gw {
    /// An order of `total` paid on its SECOND attempt while its first stays open at the
    /// channel (paygate believes it closed, as if its close had raced the payer): the
    /// gateway's transaction id and both attempts.
    async fn paid_on_a_second_attempt(
        &self,
        no: &str,
        total: i64,
        notify_url: &str,
    ) -> (
        String,
        paygate_store::AttemptRecord,
        paygate_store::AttemptRecord,
    ) {
        use paygate_store::{AttemptChange, AttemptState};
        self.prepay(no, total, notify_url, None).await;
        let tid = self
            .store()
            .get_order(self.mchid(), no)
            .await
            .unwrap()
            .unwrap()
            .transaction_id;
        let first = self.store().attempts(&tid).await.unwrap().remove(0);
        let closed = AttemptChange::to(
            &first.attempt_id,
            &[AttemptState::Prepaid],
            AttemptState::Closed,
            time::OffsetDateTime::now_utc(),
        );
        assert!(self.store().update_attempt(&closed).await.unwrap());
        // The merchant's retry makes a second attempt, which the payer pays.
        self.prepay(no, total, notify_url, None).await;
        let attempts = self.store().attempts(&tid).await.unwrap();
        assert_eq!(attempts.len(), 2);
        self.pay(no).await;
        self.wait_state(no, "SUCCESS").await;
        (tid, first, attempts[1].clone())
    }

    /// The sandbox payer pays `attempt` at the channel, whatever paygate thinks of it.
    async fn pay_at_channel(&self, attempt: &paygate_store::AttemptRecord) {
        let state = &self.gw.state;
        let merchant = state
            .store
            .get_merchant(self.mchid())
            .await
            .unwrap()
            .unwrap();
        state
            .channel(&attempt.channel_id)
            .unwrap()
            .sandbox_pay(
                &attempt.attempt_id,
                &paygate_server::flow::sub_at(state, &merchant, &attempt.channel_id).unwrap(),
                true,
                None,
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_second_attempt_the_payer_paid_too_is_refunded_to_the_payer_whole() {
    use paygate_ledger::chart::TransferCode;
    use paygate_server::flow::{self, Applied};
    use paygate_store::{AttemptState, RefundKind};
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let rx = receiver().await;
        let no = out_no("DUP");
        let (tid, first, second) = gw.paid_on_a_second_attempt(&no, 300, &rx.url).await;
        // The payer pays the first attempt too.
        gw.pay_at_channel(&first).await;
        let state = &gw.gw.state;

        // The channel's callback brings the first attempt's payment: it is refunded whole, at
        // the channel, and the channel's refund callback settles it.
        let dup = eventually(|| async {
            let refunds = gw.store().refunds_of(&tid).await.unwrap();
            refunds
                .into_iter()
                .find(|r| r.kind == RefundKind::Duplicate && r.state == RefundState::Success)
        })
        .await;
        assert_eq!(dup.attempt_id, first.attempt_id);
        assert_eq!((dup.amount_fen, dup.total_fen), (300, 300));
        assert!(dup.channel_refund_id.is_some());
        let attempts = gw.store().attempts(&tid).await.unwrap();
        assert_eq!(attempts[0].state, AttemptState::Paid);
        assert!(attempts[0].channel_transaction_id.is_some());
        assert_eq!(attempts[1].state, AttemptState::Paid);
        let repairs = gw.store().repairs(&tid).await.unwrap();
        assert_eq!(repairs.len(), 1);
        assert_eq!(repairs[0].way, "duplicate_payment_refunded");
        // The ledger: in with the payment, out with its refund; the merchant's money untouched.
        let legs = gw
            .store()
            .ledger_transfers_by_reference(&dup.refund_id)
            .await
            .unwrap();
        let codes: Vec<u16> = legs.iter().map(|l| l.record.transfer.code).collect();
        assert_eq!(
            codes,
            vec![
                TransferCode::DuplicatePayment.code(),
                TransferCode::DuplicateRefunded.code()
            ]
        );

        // The merchant's order is as one payment left it: SUCCESS, nothing refunded, one
        // notification, and no refund of theirs to see.
        assert_eq!(gw.query(&no).await.trade_state.as_str(), "SUCCESS");
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(0));
        let notes = gw.store().notifications_of(&tid).await.unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].event_type, "TRANSACTION.SUCCESS");
        let (status, _) = api_error(gw.query_refund(&dup.out_refund_no).await);
        assert!(status == 400 || status == 404, "{status}");

        // The same payment reported again (a repeated callback, the poller) changes nothing.
        let tx: paygate_wxpay::models::payments::Transaction = serde_json::from_value(json!({
            "out_trade_no": first.attempt_id, "transaction_id": attempts[0].channel_transaction_id,
            "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
            "amount": {"total": 300, "currency": "CNY"}
        }))
        .unwrap();
        assert_eq!(
            flow::apply_channel_transaction(state, &first.attempt_id, &tx, "callback")
                .await
                .unwrap(),
            Applied::AlreadyFinal
        );
        assert_eq!(gw.store().refunds_of(&tid).await.unwrap().len(), 1);

        // The merchant can still refund its whole order, on the attempt that paid it.
        let r = gw
            .refund(&gw.refund_body(("out_trade_no", &no), "rf-all", 300, 300))
            .await
            .unwrap();
        assert_eq!(r.amount.refund, 300);
        let mine = gw
            .store()
            .get_refund(gw.mchid(), "rf-all")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mine.attempt_id, second.attempt_id);
        gw.wait_refund("rf-all", RefundStatus::Success).await;

        let (code, body) = {
            let resp = gw
                .http
                .get(format!("{}metrics", gw.gw.base_url))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        };
        assert_eq!(code, 200);
        assert!(
            body.contains("paygate_duplicate_payments_total 1"),
            "{body}"
        );
        // Given back: nothing is left on the operator's list.
        let (_, open) = gw.admin(reqwest::Method::GET, "refunds/duplicates").await;
        assert_eq!(open["count"], 0, "{open}");
        gw.finish().await;
    }
}

#[tokio::test]
async fn a_duplicate_payment_the_channel_will_not_refund_stays_owed_to_the_payer() {
    use paygate_ledger::chart::{AccountKind, PLATFORM_OWNER, TransferCode};
    use paygate_store::RefundKind;
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let no = out_no("DUPNO");
        let (tid, first, _) = gw
            .paid_on_a_second_attempt(&no, 250, "https://e.com/n")
            .await;
        gw.channel_faults(
            json!({"errors": [{"code": "USER_ACCOUNT_ABNORMAL", "rate_ppm": 1_000_000}],
                   "operations": ["refund"]}),
        )
        .await;
        gw.pay_at_channel(&first).await;
        let dup = eventually(|| async {
            gw.store()
                .refunds_of(&tid)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.kind == RefundKind::Duplicate && r.state == RefundState::Closed)
        })
        .await;
        assert_eq!(dup.error_code.as_deref(), Some("USER_ACCOUNT_ABNORMAL"));
        // Still the payer's: in the ledger as received and owed, never paid back, never the
        // merchant's; the merchant's order and notifications as one payment left them.
        let legs = gw
            .store()
            .ledger_transfers_by_reference(&dup.refund_id)
            .await
            .unwrap();
        assert_eq!(legs.len(), 1);
        assert_eq!(
            legs[0].record.transfer.code,
            TransferCode::DuplicatePayment.code()
        );
        let payable = gw
            .store()
            .ledger_account(paygate_ledger::chart::account_id(
                AccountKind::RefundsPayable,
                PLATFORM_OWNER,
                paygate_core::money::Currency::CNY,
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            payable.balances.credits_posted - payable.balances.debits_posted,
            250
        );
        assert_eq!(gw.query(&no).await.trade_state.as_str(), "SUCCESS");
        assert_eq!(gw.store().refunded_fen(&tid).await.unwrap(), Some(0));
        assert_eq!(gw.store().notifications_of(&tid).await.unwrap().len(), 1);
        // The operator's list of payments not given back shows it, with what is owed.
        let (status, open) = gw.admin(reqwest::Method::GET, "refunds/duplicates").await;
        assert_eq!(status, 200, "{open}");
        assert_eq!(open["count"], 1, "{open}");
        assert_eq!(open["closed_owed_fen"], 250, "{open}");
        assert_eq!(open["refunds"][0]["refund_id"], dup.refund_id.as_str());
        assert_eq!(open["refunds"][0]["kind"], "DUPLICATE");
        gw.finish().await;
    }
}
