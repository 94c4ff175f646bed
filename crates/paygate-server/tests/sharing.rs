//! Profit sharing on the gateway over HTTP, as a merchant's V3 client sees it, on SQLite and
//! (when PAYGATE_TEST_DATABASE_URL is set) on PostgreSQL: receivers with an encrypted name, two
//! rounds, a return, the unfreeze and the amounts, with the ledger postings and the
//! PROFITSHARING.* notifications; idempotency; the refusals; 50 concurrent splits of one order;
//! and merchants that cannot see each other's shares.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use paygate_server::{channel_mapping, merchants};
use paygate_store::Store;
use paygate_wxpay::client::{ClientError, KeyMode, WxClient};
use paygate_wxpay::crypto::VerifyingKey;
use paygate_wxpay::models::profitsharing::{
    DetailFailReason, DetailResult, OrderState, OrdersEntity, ReturnOrdersEntity, ReturnResult,
    UnsplitAmountResponse,
};
use serde_json::{Value, json};

mod common;

use common::*;

const RECEIVER: &str = "1900000201";

impl Gw {
    fn store(&self) -> &dyn Store {
        self.gw.state.store.as_ref()
    }

    /// A paid order of `total` fen (profit sharing as asked): its transaction id.
    async fn paid_with(
        &self,
        client: &WxClient,
        mchid: &str,
        appid: &str,
        total: i64,
        sharing: bool,
        notify_url: &str,
    ) -> String {
        let no = out_no("ps");
        let mut body = json!({"appid": appid, "mchid": mchid, "description": "分账测试",
            "out_trade_no": no, "notify_url": notify_url, "amount": {"total": total, "currency": "CNY"}});
        if sharing {
            body["settle_info"] = json!({"profit_sharing": true});
        }
        let _: Value = client
            .post_json("/v3/pay/transactions/native", &body)
            .await
            .unwrap();
        let resp = self
            .http
            .post(format!("{}sandbox/v1/pay", self.gw.base_url))
            .json(&json!({"mchid": mchid, "out_trade_no": no, "result": "SUCCESS"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let t: paygate_wxpay::models::payments::Transaction = eventually(|| async {
            let t: paygate_wxpay::models::payments::Transaction = client
                .get_json(&format!(
                    "/v3/pay/transactions/out-trade-no/{no}?mchid={mchid}"
                ))
                .await
                .unwrap();
            (t.trade_state.as_str() == "SUCCESS").then_some(t)
        })
        .await;
        t.transaction_id.unwrap()
    }

    async fn paid(&self, total: i64, sharing: bool, notify_url: &str) -> String {
        self.paid_with(
            &self.client,
            self.mchid(),
            &self.kit.merchant.appid,
            total,
            sharing,
            notify_url,
        )
        .await
    }

    /// The name encrypted for the gateway's platform public key (the client sends its id).
    fn sealed(&self, name: &str) -> String {
        let key = VerifyingKey::from_spki_pem(&self.kit.pub_key_pem).unwrap();
        paygate_wxpay::crypto::oaep::encrypt(&key, name).unwrap()
    }

    async fn add_receiver(&self, account: &str) {
        let body = json!({"appid": self.kit.merchant.appid, "type": "MERCHANT_ID", "account": account,
            "name": self.sealed("示例商户全称"), "relation_type": "PARTNER"});
        let answer: Value = self
            .client
            .post_json("/v3/profitsharing/receivers/add", &body)
            .await
            .unwrap();
        assert_eq!(answer["account"], account);
    }

    fn split_body(&self, tx: &str, no: &str, lines: &[(&str, i64)], unfreeze: bool) -> Value {
        let receivers: Vec<Value> = lines
            .iter()
            .map(|(a, amount)| {
                json!({"type": "MERCHANT_ID", "account": a, "amount": amount,
                "description": "分给商户", "name": self.sealed("示例商户全称")})
            })
            .collect();
        json!({"appid": self.kit.merchant.appid, "transaction_id": tx, "out_order_no": no,
            "receivers": receivers, "unfreeze_unsplit": unfreeze})
    }

    async fn split(&self, body: &Value) -> Result<OrdersEntity, ClientError> {
        self.client
            .post_json("/v3/profitsharing/orders", body)
            .await
    }

    async fn query_split(&self, no: &str, tx: &str) -> Result<OrdersEntity, ClientError> {
        self.client
            .get_json(&format!(
                "/v3/profitsharing/orders/{no}?transaction_id={tx}"
            ))
            .await
    }

    async fn finished(&self, no: &str, tx: &str) -> OrdersEntity {
        eventually(|| async {
            let e = self.query_split(no, tx).await.unwrap();
            (e.state == OrderState::Finished).then_some(e)
        })
        .await
    }

    async fn unsplit(&self, tx: &str) -> i64 {
        let a: UnsplitAmountResponse = self
            .client
            .get_json(&format!("/v3/profitsharing/transactions/{tx}/amounts"))
            .await
            .unwrap();
        assert_eq!(a.transaction_id, tx);
        a.unsplit_amount
    }
}

fn api_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected a V3 error, got {other:?}"),
    }
}

#[derive(Clone, Default)]
struct Notified {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn notify_server() -> Notified {
    let n = Notified::default();
    let got = Arc::clone(&n.got);
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
    Notified {
        url: format!("http://{addr}/notify"),
        ..n
    }
}

impl Notified {
    /// The opened plaintexts of the notifications of `event_type`, once `n` came.
    async fn plaintexts(&self, gw: &Gw, event_type: &str, n: usize) -> Vec<Value> {
        eventually(|| async {
            let got = self.got.lock().unwrap().clone();
            let opened: Vec<Value> = got
                .iter()
                .filter_map(|(_, body)| {
                    let n: paygate_wxpay::notify::Notification =
                        serde_json::from_slice(body).ok()?;
                    (n.event_type == event_type).then_some(n)
                })
                .map(|n| {
                    let plain = n.open(gw.kit.merchant.apiv3_key.as_bytes()).unwrap();
                    serde_json::from_slice(&plain).unwrap()
                })
                .collect();
            (opened.len() >= n).then_some(opened)
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rounds_return_unfreeze_and_amounts_on_both_backends() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let notified = notify_server().await;
        gw.add_receiver(RECEIVER).await;
        let tx = gw.paid(1000, true, &notified.url).await;
        // paygate's fee (0.6% by default) is never split: 1000 - 6.
        assert_eq!(gw.unsplit(&tx).await, 994);

        let first = gw.split_body(&tx, "P1", &[(RECEIVER, 100), ("1900000999", 7)], false);
        let created = gw.split(&first).await.unwrap();
        assert_eq!(
            created.transaction_id, tx,
            "the gateway's ids, not the channel's"
        );
        assert_eq!(
            created.receivers[1].result,
            DetailResult::Closed,
            "never added"
        );
        assert_eq!(
            created.receivers[1].fail_reason,
            Some(DetailFailReason::NoRelation)
        );
        let done = gw.finished("P1", &tx).await;
        assert_eq!(done.order_id, created.order_id);
        assert_eq!(done.receivers[0].result, DetailResult::Success);
        let second = gw.split_body(&tx, "P2", &[(RECEIVER, 50)], false);
        gw.split(&second).await.unwrap();
        gw.finished("P2", &tx).await;
        assert_eq!(gw.unsplit(&tx).await, 994 - 150);

        // The split is in the ledger, in the transaction that finished it.
        let mchid = gw.mchid().to_string();
        let posted = gw
            .store()
            .ledger_transfers_by_reference(&format!("{mchid}/P1"))
            .await
            .unwrap();
        assert_eq!(posted.len(), 1, "one line succeeded: one transfer");
        // The merchant heard of both successful lines.
        let events = notified.plaintexts(&gw, "PROFITSHARING.SUCCESS", 2).await;
        assert!(events.iter().all(|e| e["transaction_id"] == tx.as_str()));

        // A return of 30 from the first round.
        let ret = json!({"out_order_no": "P1", "out_return_no": "R1", "return_mchid": RECEIVER,
            "amount": 30, "description": "用户退款"});
        let r: ReturnOrdersEntity = gw
            .client
            .post_json("/v3/profitsharing/return-orders", &ret)
            .await
            .unwrap();
        assert_eq!(
            (r.amount, r.order_id.as_str()),
            (30, created.order_id.as_str())
        );
        let r = eventually(|| async {
            let q: ReturnOrdersEntity = gw
                .client
                .get_json("/v3/profitsharing/return-orders/R1?out_order_no=P1")
                .await
                .unwrap();
            (q.result == ReturnResult::Success).then_some(q)
        })
        .await;
        assert_eq!(r.return_id.len(), 28);
        let over = json!({"out_order_no": "P1", "out_return_no": "R2", "return_mchid": RECEIVER,
            "amount": 71, "description": "用户退款"});
        let refused: Result<ReturnOrdersEntity, _> = gw
            .client
            .post_json("/v3/profitsharing/return-orders", &over)
            .await;
        assert_eq!(api_error(refused), (403, "NOT_ENOUGH".into()));
        assert_eq!(
            gw.unsplit(&tx).await,
            994 - 150,
            "returned money is not split again"
        );

        // Unfreeze: the rest goes to the merchant, and no round can follow.
        let unfreeze =
            json!({"transaction_id": tx, "out_order_no": "U1", "description": "解冻全部剩余资金"});
        let u: OrdersEntity = gw
            .client
            .post_json("/v3/profitsharing/orders/unfreeze", &unfreeze)
            .await
            .unwrap();
        assert_eq!(u.receivers[0].amount, 994 - 150);
        assert_eq!(u.receivers[0].account, mchid);
        gw.finished("U1", &tx).await;
        assert_eq!(gw.unsplit(&tx).await, 0);
        let late = gw
            .split(&gw.split_body(&tx, "P3", &[(RECEIVER, 1)], false))
            .await;
        assert_eq!(api_error(late), (400, "INVALID_REQUEST".into()));
        assert!(
            !gw.store()
                .ledger_transfers_by_reference(&format!("{mchid}/U1"))
                .await
                .unwrap()
                .is_empty(),
            "the unfreeze is posted"
        );
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shares_are_idempotent_and_refused_where_the_protocol_refuses() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        gw.add_receiver(RECEIVER).await;
        let tx = gw.paid(1000, true, "https://merchant.example/n").await;
        let body = gw.split_body(&tx, "P1", &[(RECEIVER, 100)], false);
        let a = gw.split(&body).await.unwrap();
        // The same out_order_no again (names re-encrypted: other ciphertexts, same request).
        let again = gw
            .split(&gw.split_body(&tx, "P1", &[(RECEIVER, 100)], false))
            .await
            .unwrap();
        assert_eq!(again.order_id, a.order_id);
        let other = gw
            .split(&gw.split_body(&tx, "P1", &[(RECEIVER, 101)], false))
            .await;
        assert_eq!(api_error(other), (400, "INVALID_REQUEST".into()));
        assert_eq!(gw.unsplit(&tx).await, 994 - 100, "reserved once");

        // Over the channel's ratio (20% for the sandbox's sub-merchants): refused, given back.
        let greedy = gw
            .split(&gw.split_body(&tx, "P2", &[(RECEIVER, 150)], false))
            .await;
        assert_eq!(api_error(greedy), (400, "INVALID_REQUEST".into()));
        assert_eq!(gw.unsplit(&tx).await, 994 - 100);
        let again = gw
            .split(&gw.split_body(&tx, "P2", &[(RECEIVER, 150)], false))
            .await;
        assert_eq!(
            api_error(again),
            (400, "INVALID_REQUEST".into()),
            "the refusal stands"
        );
        let missing = gw.query_split("P2", &tx).await;
        assert_eq!(api_error(missing), (404, "RESOURCE_NOT_EXISTS".into()));
        // The merchant's own ratio is the gateway's first line.
        let mchid = gw.mchid().to_string();
        gw.store()
            .set_share_max_ratio(&mchid, 1000, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
        let capped = gw
            .split(&gw.split_body(&tx, "P3", &[(RECEIVER, 1)], false))
            .await;
        assert_eq!(api_error(capped), (400, "INVALID_REQUEST".into()));

        // Refunds take only what receivers do not hold (the store's reservation says how much).
        let refund = json!({"transaction_id": tx, "out_refund_no": "RF1",
            "amount": {"refund": 901, "total": 1000, "currency": "CNY"}});
        let too_much: Result<Value, _> = gw
            .client
            .post_json("/v3/refund/domestic/refunds", &refund)
            .await;
        match too_much {
            Err(ClientError::Api {
                status,
                code,
                message,
                ..
            }) => {
                assert_eq!((status, code.as_str()), (403, "NOT_ENOUGH"));
                assert!(message.contains("900"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // With the ratio out of the way, what is left bounds a split: 1000 - 6 - 100 = 894.
        gw.store()
            .set_share_max_ratio(&mchid, 10_000, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
        let over = gw
            .split(&gw.split_body(&tx, "P4", &[(RECEIVER, 895)], false))
            .await;
        assert_eq!(api_error(over), (403, "NOT_ENOUGH".into()));
        // An order paid without settle_info.profit_sharing, or not there at all.
        let plain = gw.paid(500, false, "https://merchant.example/n").await;
        let no = gw
            .split(&gw.split_body(&plain, "P5", &[(RECEIVER, 1)], false))
            .await;
        assert_eq!(api_error(no), (400, "INVALID_REQUEST".into()));
        assert_eq!(gw.unsplit(&plain).await, 0);
        let ghost = gw
            .split(&gw.split_body(
                "4200000000202601010000000000",
                "P6",
                &[(RECEIVER, 1)],
                false,
            ))
            .await;
        assert_eq!(api_error(ghost), (404, "RESOURCE_NOT_EXISTS".into()));
        // A name that was not encrypted for the gateway's key.
        let mut bad = gw.split_body(&tx, "P7", &[(RECEIVER, 1)], false);
        bad["receivers"][0]["name"] = json!("bm90IGVuY3J5cHRlZA==");
        assert_eq!(api_error(gw.split(&bad).await), (400, "PARAM_ERROR".into()));
        // Direct merchants have no sub-merchants, nor their ratio API.
        let cfg: Result<Value, _> = gw
            .client
            .get_json("/v3/profitsharing/merchant-configs/1900000109")
            .await;
        assert_eq!(api_error(cfg), (403, "NO_AUTH".into()));
        let del =
            json!({"appid": gw.kit.merchant.appid, "type": "MERCHANT_ID", "account": "1900000888"});
        let unknown: Result<Value, _> = gw
            .client
            .post_json("/v3/profitsharing/receivers/delete", &del)
            .await;
        assert_eq!(api_error(unknown), (400, "INVALID_REQUEST".into()));
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_splits_of_one_order_never_exceed_the_ratio() {
    for pg in backends() {
        let gw = Arc::new(start(pg.as_deref(), |_| {}).await);
        gw.add_receiver(RECEIVER).await;
        let tx = gw.paid(1000, true, "https://merchant.example/n").await;
        // The channel's 20% is the bound: 200 fen, at most 20 of the 50 splits of 10 fen.
        let mchid = gw.mchid().to_string();
        gw.store()
            .set_share_max_ratio(&mchid, 2000, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let gw = Arc::clone(&gw);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let body = gw.split_body(&tx, &format!("C{i}"), &[(RECEIVER, 10)], false);
                    gw.split(&body).await
                })
            })
            .collect();
        let mut accepted = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => accepted += 1,
                Err(ClientError::Api { code, .. }) => assert_eq!(code, "INVALID_REQUEST"),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(accepted, 20, "exactly the ratio's worth");
        assert_eq!(gw.unsplit(&tx).await, 994 - 200);
        let shares = gw.store().shares_of(&tx).await.unwrap();
        let held: i64 = shares.iter().map(|s| s.amount_fen).sum();
        assert_eq!(held, 200);
        let gw = Arc::into_inner(gw).unwrap();
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merchant_cannot_see_or_share_another_merchants_orders() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        gw.add_receiver(RECEIVER).await;
        let tx = gw.paid(1000, true, "https://merchant.example/n").await;
        gw.split(&gw.split_body(&tx, "P1", &[(RECEIVER, 100)], false))
            .await
            .unwrap();

        let channel = gw.gw.state.channel(&gw.gw.state.default_channel).unwrap();
        let b = merchants::onboard(
            gw.store(),
            &gw.gw.state.keys,
            &gw.gw.base_url,
            merchants::NewMerchant {
                name: "shop B".into(),
                cert_pem: None,
                mapping: channel_mapping(channel.config(), None, None).unwrap(),
            },
        )
        .await
        .unwrap();
        let client_b = WxClient::from_kit(&b.kit, KeyMode::PublicKey, 10_000).unwrap();
        let seen: Result<OrdersEntity, _> = client_b
            .get_json(&format!("/v3/profitsharing/orders/P1?transaction_id={tx}"))
            .await;
        assert_eq!(api_error(seen), (404, "RESOURCE_NOT_EXISTS".into()));
        let body = json!({"appid": b.kit.merchant.appid, "transaction_id": tx, "out_order_no": "PB",
            "receivers": [{"type": "MERCHANT_ID", "account": RECEIVER, "amount": 1, "description": "x"}],
            "unfreeze_unsplit": false});
        let shared: Result<OrdersEntity, _> =
            client_b.post_json("/v3/profitsharing/orders", &body).await;
        assert_eq!(api_error(shared), (404, "RESOURCE_NOT_EXISTS".into()));
        let amounts: Result<Value, _> = client_b
            .get_json(&format!("/v3/profitsharing/transactions/{tx}/amounts"))
            .await;
        assert_eq!(api_error(amounts), (404, "RESOURCE_NOT_EXISTS".into()));
        let ret = json!({"out_order_no": "P1", "out_return_no": "RB", "return_mchid": RECEIVER,
            "amount": 1, "description": "x"});
        let returned: Result<Value, _> = client_b
            .post_json("/v3/profitsharing/return-orders", &ret)
            .await;
        assert_eq!(api_error(returned), (404, "RESOURCE_NOT_EXISTS".into()));
        // B's own order: A's receiver is not B's, so the line closes with NO_RELATION.
        let tx_b = gw
            .paid_with(
                &client_b,
                &b.kit.merchant.mchid,
                &b.kit.merchant.appid,
                1000,
                true,
                "https://merchant.example/n",
            )
            .await;
        let body = json!({"appid": b.kit.merchant.appid, "transaction_id": tx_b, "out_order_no": "P1",
            "receivers": [{"type": "MERCHANT_ID", "account": RECEIVER, "amount": 1, "description": "x"}],
            "unfreeze_unsplit": false});
        let own: OrdersEntity = client_b
            .post_json("/v3/profitsharing/orders", &body)
            .await
            .unwrap();
        assert_eq!(
            own.receivers[0].fail_reason,
            Some(DetailFailReason::NoRelation)
        );
        assert_eq!(own.state, OrderState::Finished);
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_channel_timeout_is_settled_by_asking_the_channel_not_by_splitting_twice() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |c| c.sandbox.channel_timeout_ms = 400).await;
        gw.add_receiver(RECEIVER).await;
        let tx = gw.paid(1000, true, "https://merchant.example/n").await;
        // Processed at the channel, answers withheld (the query that follows times out too).
        gw.channel_faults(json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 1500,
                                 "operations": ["profitsharing"]}))
            .await;
        let retried = gw.split_body(&tx, "T1", &[(RECEIVER, 100)], false);
        assert_eq!(
            api_error(gw.split(&retried).await),
            (500, "SYSTEM_ERROR".into())
        );
        let left_alone = gw.split_body(&tx, "T2", &[(RECEIVER, 60)], false);
        assert_eq!(
            api_error(gw.split(&left_alone).await),
            (500, "SYSTEM_ERROR".into())
        );
        gw.channel_faults(json!({})).await;
        assert_eq!(gw.unsplit(&tx).await, 994 - 160, "reserved, not lost");
        // The merchant's retry: the same order, found at the channel, not sent twice.
        let again = gw.split(&retried).await.unwrap();
        let stored = gw.store().shares_of(&tx).await.unwrap();
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().any(|s| s.order_id == again.order_id));
        gw.finished("T1", &tx).await;
        // The other one is settled by the poller alone.
        gw.finished("T2", &tx).await;
        assert_eq!(gw.unsplit(&tx).await, 994 - 160);
        gw.finish().await;
    }
}
