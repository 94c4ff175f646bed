//! The gateway over HTTP, as a merchant's V3 client sees it, on SQLite and (when
//! PAYGATE_TEST_DATABASE_URL is set) on PostgreSQL: prepay, idempotency, query, close,
//! notifications, channel faults, lost callbacks, probes, disabled merchants, pay-params.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use paygate_store::{AttemptChange, AttemptState};
use paygate_wxpay::client::ClientError;
use paygate_wxpay::crypto::VerifyingKey;
use paygate_wxpay::models::payments::Transaction;
use paygate_wxpay::notify::Notification;
use paygate_wxpay::sign::ResponseSignature;
use serde_json::{Value, json};

mod common;

use common::*;

impl Gw {
    fn native(&self, no: &str, total: i64, notify_url: &str) -> Value {
        json!({"appid": self.kit.merchant.appid, "mchid": self.mchid(), "description": "测试商品",
               "out_trade_no": no, "notify_url": notify_url, "amount": {"total": total, "currency": "CNY"}})
    }

    /// A Native prepay that must succeed.
    async fn prepay_native(&self, no: &str, total: i64, notify_url: &str) -> Value {
        self.client
            .post_json(
                "/v3/pay/transactions/native",
                &self.native(no, total, notify_url),
            )
            .await
            .unwrap()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    fail_first: Arc<Mutex<u32>>,
    /// Write-locked by a test to hold answers back (a delivery in flight).
    hold: Arc<tokio::sync::RwLock<()>>,
}

async fn receiver() -> Receiver {
    let r = Receiver::default();
    let (got, fail, hold) = (
        Arc::clone(&r.got),
        Arc::clone(&r.fail_first),
        Arc::clone(&r.hold),
    );
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (got, fail, hold) = (Arc::clone(&got), Arc::clone(&fail), Arc::clone(&hold));
            async move {
                got.lock().unwrap().push((headers, body));
                drop(hold.read().await);
                let mut f = fail.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
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
    async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Bytes)> {
        eventually(|| async {
            let got = self.got.lock().unwrap().clone();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

#[tokio::test]
async fn native_payment_is_notified_signed_and_encrypted_and_queryable() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let rx = receiver().await;
        let no = out_no("N");
        let r: Value = gw
            .client
            .post_json(
                "/v3/pay/transactions/native",
                &gw.native(&no, 1800, &rx.url),
            )
            .await
            .unwrap();
        assert!(r["code_url"].as_str().unwrap().starts_with("weixin://"));
        let q = gw.query(&no).await;
        assert_eq!(q.trade_state.as_str(), "NOTPAY");
        gw.pay(&no).await;
        let got = rx.wait_for(1).await;
        let (headers, body) = &got[0];
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(
            header("Wechatpay-Signature-Type").as_deref(),
            Some("WECHATPAY2-SHA256-RSA2048")
        );
        let sig = ResponseSignature::from_headers(header).unwrap();
        // The prepay asked for the public key (KeyMode::PublicKey): notifications follow.
        assert_eq!(sig.serial, gw.kit.merchant.platform_public_key_id);
        sig.verify(
            &VerifyingKey::from_spki_pem(&gw.kit.pub_key_pem).unwrap(),
            body,
        )
        .unwrap();
        let envelope: Notification = serde_json::from_slice(body).unwrap();
        let t: Transaction =
            serde_json::from_slice(&envelope.open(gw.kit.merchant.apiv3_key.as_bytes()).unwrap())
                .unwrap();
        assert_eq!(t.trade_state.as_str(), "SUCCESS");
        assert_eq!(t.amount.as_ref().unwrap().total, 1800);
        let tid = t.transaction_id.clone().unwrap();
        assert_eq!(tid.len(), 28);
        assert!(tid.bytes().all(|b| b.is_ascii_digit()));
        let q = gw.wait_state(&no, "SUCCESS").await;
        assert_eq!(q.transaction_id.as_deref(), Some(tid.as_str()));
        let by_id: Transaction = gw
            .client
            .get_json(&format!(
                "/v3/pay/transactions/id/{tid}?mchid={}",
                gw.mchid()
            ))
            .await
            .unwrap();
        assert_eq!(by_id.out_trade_no, no);
        // Exactly one notification record, delivered once, in the admin view.
        let (status, view) = gw
            .admin(reqwest::Method::GET, &format!("orders/{tid}"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(view["notifications"].as_array().unwrap().len(), 1);
        assert_eq!(view["attempts"][0]["state"], "PAID");
        gw.finish().await;
    }
}

#[tokio::test]
async fn prepay_is_idempotent_and_concurrent_calls_make_one_order() {
    for pg in backends() {
        let gw = Arc::new(start(pg.as_deref(), |_| {}).await);
        let no = out_no("I");
        let body = gw.native(&no, 100, "https://example.com/notify");
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (gw, body) = (Arc::clone(&gw), body.clone());
            tasks.push(tokio::spawn(async move {
                gw.client
                    .post_json::<_, Value>("/v3/pay/transactions/native", &body)
                    .await
                    .unwrap()
            }));
        }
        let mut urls = std::collections::HashSet::new();
        for t in tasks {
            urls.insert(t.await.unwrap()["code_url"].as_str().unwrap().to_string());
        }
        assert_eq!(urls.len(), 1, "one order, one credential");
        let other = gw.native(&no, 101, "https://example.com/notify");
        match gw
            .client
            .post_json::<_, Value>("/v3/pay/transactions/native", &other)
            .await
            .unwrap_err()
        {
            ClientError::Api { status, code, .. } => {
                assert_eq!((status, code.as_str()), (403, "OUT_TRADE_NO_USED"))
            }
            e => panic!("{e}"),
        }
        let order = gw
            .gw
            .state
            .store
            .get_order(gw.mchid(), &no)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            gw.gw
                .state
                .store
                .attempts(&order.transaction_id)
                .await
                .unwrap()
                .len(),
            1
        );
        let Ok(gw) = Arc::try_unwrap(gw) else {
            panic!("every task finished")
        };
        gw.finish().await;
    }
}

/// A prepay's credential is answered before it is on disk (`update_attempt_unsynced`). A power
/// cut that loses it leaves the attempt CREATED, as here: the merchant's retry must get a
/// credential for the SAME channel order (no second attempt, no second order), which then
/// pays once.
#[tokio::test]
async fn a_credential_lost_to_a_power_cut_is_given_again_for_the_same_order() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let no = out_no("L");
        let first = gw
            .prepay_native(&no, 100, "https://example.com/notify")
            .await;
        let store = &gw.gw.state.store;
        let order = store.get_order(gw.mchid(), &no).await.unwrap().unwrap();
        let attempt = store
            .attempts(&order.transaction_id)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(attempt.state, AttemptState::Prepaid);
        let lost = AttemptChange::to(
            &attempt.attempt_id,
            &[AttemptState::Prepaid],
            AttemptState::Created,
            attempt.updated_at,
        );
        assert!(store.update_attempt(&lost).await.unwrap());

        let again = gw
            .prepay_native(&no, 100, "https://example.com/notify")
            .await;
        assert_eq!(
            again["code_url"], first["code_url"],
            "the channel's same order"
        );
        let attempts = store.attempts(&order.transaction_id).await.unwrap();
        assert_eq!(attempts.len(), 1, "no second attempt");
        assert_eq!(attempts[0].state, AttemptState::Prepaid);
        gw.pay(&no).await;
        let paid = gw.wait_state(&no, "SUCCESS").await;
        assert_eq!(paid.amount.map(|a| a.total), Some(100));
        gw.finish().await;
    }
}

#[tokio::test]
async fn close_is_signed_204_and_final_and_paid_orders_refuse_it() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let no = out_no("C");
        let body = gw.native(&no, 100, "https://example.com/notify");
        let _: Value = gw
            .client
            .post_json("/v3/pay/transactions/native", &body)
            .await
            .unwrap();
        let close = format!("/v3/pay/transactions/out-trade-no/{no}/close");
        assert_eq!(
            gw.client
                .post_no_content(&close, &json!({"mchid": gw.mchid()}))
                .await
                .unwrap(),
            204
        );
        assert_eq!(
            gw.client
                .post_no_content(&close, &json!({"mchid": gw.mchid()}))
                .await
                .unwrap(),
            204
        );
        assert_eq!(gw.query(&no).await.trade_state.as_str(), "CLOSED");
        let err = gw
            .client
            .post_json::<_, Value>("/v3/pay/transactions/native", &body)
            .await
            .unwrap_err();
        assert_eq!(err.api_code(), Some("ORDER_CLOSED"));

        let paid = out_no("P");
        let _: Value = gw
            .client
            .post_json(
                "/v3/pay/transactions/native",
                &gw.native(&paid, 5, "https://e.com/n"),
            )
            .await
            .unwrap();
        gw.pay(&paid).await;
        gw.wait_state(&paid, "SUCCESS").await;
        let err = gw
            .client
            .post_no_content(
                &format!("/v3/pay/transactions/out-trade-no/{paid}/close"),
                &json!({"mchid": gw.mchid()}),
            )
            .await
            .unwrap_err();
        assert_eq!(err.api_code(), Some("ORDER_PAID"));
        // The sandbox payer answers a second payment as the channel does (a retried pay whose
        // first answer was lost relies on it), and refuses a closed order.
        for (order, code) in [(&paid, "ORDER_PAID"), (&no, "ORDER_CLOSED")] {
            let resp = gw
                .http
                .post(format!("{}sandbox/v1/pay", gw.gw.base_url))
                .json(&json!({"mchid": gw.mchid(), "out_trade_no": order, "result": "SUCCESS"}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400);
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["code"], code, "{v}");
        }
        let err = gw
            .client
            .get_json::<Transaction>(&format!(
                "/v3/pay/transactions/out-trade-no/NOPE1234?mchid={}",
                gw.mchid()
            ))
            .await
            .unwrap_err();
        assert_eq!(err.api_code(), Some("ORDER_NOT_EXIST"));
        gw.finish().await;
    }
}

#[tokio::test]
async fn channel_failures_are_never_a_200_and_unknown_outcomes_resolve_without_a_second_order() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |c| c.sandbox.channel_timeout_ms = 400).await;
        gw.channel_faults(json!({"errors": [{"code": "SYSTEM_ERROR", "rate_ppm": 1_000_000}], "operations": ["prepay"]})).await;
        let err = gw
            .client
            .post_json::<_, Value>(
                "/v3/pay/transactions/native",
                &gw.native(&out_no("F"), 1, "https://e.com/n"),
            )
            .await
            .unwrap_err();
        match err {
            ClientError::Api { status, code, .. } => {
                assert_eq!((status, code.as_str()), (500, "SYSTEM_ERROR"))
            }
            e => panic!("{e}"),
        }
        gw.channel_faults(json!({"errors": [{"code": "FREQUENCY_LIMITED", "rate_ppm": 1_000_000}], "operations": ["prepay"]})).await;
        let err = gw
            .client
            .post_json::<_, Value>(
                "/v3/pay/transactions/native",
                &gw.native(&out_no("F"), 1, "https://e.com/n"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Api { status: 429, .. }), "{err}");

        // A timeout: the channel created the order but its answer never came.
        gw.channel_faults(
            json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 1500, "operations": ["prepay"]}),
        )
        .await;
        let no = out_no("T");
        let body = gw.native(&no, 7, "https://e.com/n");
        let err = gw
            .client
            .post_json::<_, Value>("/v3/pay/transactions/native", &body)
            .await
            .unwrap_err();
        assert_eq!(err.api_code(), Some("SYSTEM_ERROR"));
        gw.channel_faults(json!({})).await;
        // The merchant retries with the same parameters: the same attempt, answered idempotently.
        let r: Value = gw
            .client
            .post_json("/v3/pay/transactions/native", &body)
            .await
            .unwrap();
        assert!(r["code_url"].is_string());
        let order = gw
            .gw
            .state
            .store
            .get_order(gw.mchid(), &no)
            .await
            .unwrap()
            .unwrap();
        let attempts = gw
            .gw
            .state
            .store
            .attempts(&order.transaction_id)
            .await
            .unwrap();
        assert_eq!(attempts.len(), 1, "no second channel order");
        assert_eq!(attempts[0].state, paygate_store::AttemptState::Prepaid);
        gw.pay(&no).await;
        gw.wait_state(&no, "SUCCESS").await;
        gw.finish().await;
    }
}

#[tokio::test]
async fn a_lost_callback_is_found_by_the_poller_and_probes_are_refused() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let rx = receiver().await;
        gw.channel_faults(json!({"notify": {"drop_rate_ppm": 1_000_000}}))
            .await;
        let no = out_no("L");
        gw.prepay_native(&no, 9, &rx.url).await;
        gw.pay(&no).await;
        gw.wait_state(&no, "SUCCESS").await;
        rx.wait_for(1).await;

        // A signature probe first, then the real callback: the probe gets a 4xx, the order pays.
        gw.channel_faults(json!({"notify": {"signtest": true}}))
            .await;
        let no = out_no("S");
        gw.prepay_native(&no, 9, &rx.url).await;
        gw.pay(&no).await;
        gw.wait_state(&no, "SUCCESS").await;
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
        let probe = log
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["probe"] == true)
            .expect("a probe was sent");
        assert_eq!(probe["status"], 401);

        let resp = gw
            .http
            .post(format!("{}callbacks/wxpay/sandbox", gw.gw.base_url))
            .header("Wechatpay-Signature", "WECHATPAY/SIGNTEST/abc")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error());
        gw.finish().await;
    }
}

#[tokio::test]
async fn notifications_retry_and_an_operator_can_resend() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let rx = receiver().await;
        *rx.fail_first.lock().unwrap() = 2;
        let no = out_no("R");
        gw.prepay_native(&no, 3, &rx.url).await;
        gw.pay(&no).await;
        rx.wait_for(3).await;
        let tid = gw.wait_state(&no, "SUCCESS").await.transaction_id.unwrap();
        let view = eventually(|| async {
            let (_, v) = gw
                .admin(reqwest::Method::GET, &format!("orders/{tid}"))
                .await;
            (v["notifications"][0]["notification"]["state"] == "DELIVERED").then_some(v)
        })
        .await;
        let deliveries = view["notifications"][0]["deliveries"].as_array().unwrap();
        let statuses: Vec<i64> = deliveries
            .iter()
            .map(|d| d["http_status"].as_i64().unwrap())
            .collect();
        assert_eq!(statuses, vec![503, 503, 200]);
        let id = view["notifications"][0]["notification"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, _) = gw
            .admin(reqwest::Method::POST, &format!("notifications/{id}/resend"))
            .await;
        assert_eq!(status, 200);
        let got = rx.wait_for(4).await;
        let ids: std::collections::HashSet<String> = got
            .iter()
            .map(|(_, b)| {
                serde_json::from_slice::<Value>(b).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "every delivery carries the same notification id"
        );
        let (status, _) = gw
            .admin(reqwest::Method::POST, "notifications/nope/resend")
            .await;
        assert_eq!(status, 404);
        // In bulk (a merchant's endpoint was down): one transaction, unknown ids not counted.
        // It lands while the previous resend's delivery is in flight (the receiver holds its
        // answer): that delivery's outcome is recorded, and the resend still goes out.
        let held = Arc::clone(&rx.hold).write_owned().await;
        let (status, _) = gw
            .admin(reqwest::Method::POST, &format!("notifications/{id}/resend"))
            .await;
        assert_eq!(status, 200);
        rx.wait_for(5).await;
        let (status, v) = gw
            .admin_json(
                reqwest::Method::POST,
                "notifications/resend",
                &serde_json::json!({"ids": [id, "nope"]}),
            )
            .await;
        assert_eq!(
            (status, v["asked"].as_i64(), v["resent"].as_i64()),
            (200, Some(2), Some(1))
        );
        drop(held);
        let got = rx.wait_for(6).await;
        assert_eq!(got.len(), 6);
        eventually(|| async {
            let (_, v) = gw
                .admin(reqwest::Method::GET, &format!("orders/{tid}"))
                .await;
            let n = &v["notifications"][0];
            let recorded = n["deliveries"].as_array().map_or(0, Vec::len);
            (recorded == 6 && n["notification"]["state"] == "DELIVERED").then_some(())
        })
        .await;
        for bad in [
            serde_json::json!({"ids": []}),
            serde_json::json!({"id": [id]}),
        ] {
            let (status, v) = gw
                .admin_json(reqwest::Method::POST, "notifications/resend", &bad)
                .await;
            assert_eq!(
                (status, v["code"].as_str()),
                (400, Some("PARAM_ERROR")),
                "{bad}"
            );
        }
        gw.finish().await;
    }
}

/// An orderly stop: new connections are refused at once, the delivery in flight finishes and
/// its outcome is recorded before the stop returns (a killed process would leave it leased,
/// to be delivered again).
#[tokio::test]
async fn an_orderly_stop_records_the_delivery_in_flight() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let rx = receiver().await;
        let held = Arc::clone(&rx.hold).write_owned().await;
        let no = out_no("S");
        gw.prepay_native(&no, 5, &rx.url).await;
        gw.pay(&no).await;
        let tid = gw.wait_state(&no, "SUCCESS").await.transaction_id.unwrap();
        rx.wait_for(1).await;
        let Gw {
            gw: running,
            config,
            dir,
            pg_schema,
            http,
            ..
        } = gw;
        let healthz = format!("{}healthz", running.base_url);
        let stopping = tokio::spawn(running.shutdown(Duration::from_secs(30)));
        eventually(|| async { http.get(&healthz).send().await.is_err().then_some(()) }).await;
        assert!(
            !stopping.is_finished(),
            "the held delivery keeps the stop waiting"
        );
        drop(held);
        assert_eq!(
            stopping.await.unwrap(),
            paygate_server::shutdown::Stopped::default()
        );
        let store = paygate_server::key_rotation::open_store(&config)
            .await
            .unwrap();
        let notifications = store.notifications_of(&tid).await.unwrap();
        assert_eq!(notifications.len(), 1);
        assert_eq!(
            (notifications[0].state, notifications[0].lease_until),
            (paygate_store::NotificationState::Delivered, None)
        );
        let deliveries = store.deliveries(&notifications[0].id).await.unwrap();
        assert_eq!(
            deliveries.iter().map(|d| d.http_status).collect::<Vec<_>>(),
            [Some(200)]
        );
        store.close().await;
        remove_data(&dir, pg_schema).await;
    }
}

/// With a drain configured, a stop first turns `/readyz` to 503 while the gateway still
/// answers merchants, then stops.
#[tokio::test]
async fn a_drain_turns_readiness_off_before_the_stop() {
    let gw = start(None, |c| c.shutdown_drain_ms = 3_000).await;
    let no = out_no("DR");
    gw.prepay_native(&no, 1, "https://e.com/n").await;
    let readyz = format!("{}readyz", gw.gw.base_url);
    let status = |url: String| {
        let http = gw.http.clone();
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(status(readyz.clone()).await.unwrap(), 200);
    let Gw {
        gw: running,
        client,
        kit,
        dir,
        pg_schema,
        ..
    } = gw;
    let healthz = format!("{}healthz", running.base_url);
    let stopping = tokio::spawn(running.shutdown(Duration::from_secs(30)));
    eventually(|| async { (status(readyz.clone()).await.ok() == Some(503)).then_some(()) }).await;
    assert_eq!(status(healthz.clone()).await.unwrap(), 200);
    let order: Transaction = client
        .get_json(&format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={}",
            kit.merchant.mchid
        ))
        .await
        .unwrap();
    assert_eq!(order.trade_state.as_str(), "NOTPAY");
    assert!(!stopping.is_finished(), "still draining");
    assert_eq!(
        stopping.await.unwrap(),
        paygate_server::shutdown::Stopped::default()
    );
    assert!(status(healthz).await.is_err());
    remove_data(&dir, pg_schema).await;
}

#[tokio::test]
async fn disabled_merchants_get_no_auth_and_bad_signatures_sign_error() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let body = gw.native(&out_no("D"), 1, "https://e.com/n");
        let (status, _) = gw
            .admin(
                reqwest::Method::POST,
                &format!("merchants/{}/disable", gw.mchid()),
            )
            .await;
        assert_eq!(status, 200);
        let err = gw
            .client
            .post_json::<_, Value>("/v3/pay/transactions/native", &body)
            .await
            .unwrap_err();
        match err {
            ClientError::Api { status, code, .. } => {
                assert_eq!((status, code.as_str()), (403, "NO_AUTH"))
            }
            e => panic!("{e}"),
        }
        let (status, _) = gw
            .admin(
                reqwest::Method::POST,
                &format!("merchants/{}/enable", gw.mchid()),
            )
            .await;
        assert_eq!(status, 200);
        let _: Value = gw
            .client
            .post_json("/v3/pay/transactions/native", &body)
            .await
            .unwrap();

        let resp = gw
            .http
            .post(format!("{}v3/pay/transactions/native", gw.gw.base_url))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let resp = gw
            .http
            .get(format!("{}admin/v1/merchants", gw.gw.base_url))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        gw.finish().await;
    }
}

#[tokio::test]
async fn jsapi_pay_params_carry_the_upstream_prepay_id_signed_by_the_channel() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let no = out_no("J");
        let mut body = gw.native(&no, 1, "https://e.com/n");
        body["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
        let r: Value = gw
            .client
            .post_json("/v3/pay/transactions/jsapi", &body)
            .await
            .unwrap();
        let prepay_id = r["prepay_id"].as_str().unwrap();
        let params: Value = gw
            .client
            .post_json(
                "/paygate/v1/pay-params",
                &json!({"out_trade_no": no, "trade_type": "JSAPI"}),
            )
            .await
            .unwrap();
        assert_eq!(params["package"], format!("prepay_id={prepay_id}"));
        assert_eq!(params["signType"], "RSA");
        let sim = gw.gw.sandbox.as_ref().unwrap();
        let channel_key =
            VerifyingKey::from_certificate_pem(&sim.partner.apiclient_cert_pem).unwrap();
        let message = format!(
            "{}\n{}\n{}\n{}\n",
            params["appId"].as_str().unwrap(),
            params["timeStamp"].as_str().unwrap(),
            params["nonceStr"].as_str().unwrap(),
            params["package"].as_str().unwrap()
        );
        channel_key
            .verify_base64(message.as_bytes(), params["paySign"].as_str().unwrap())
            .unwrap();
        let err = gw
            .client
            .post_json::<_, Value>(
                "/paygate/v1/pay-params",
                &json!({"out_trade_no": no, "trade_type": "APP"}),
            )
            .await
            .unwrap_err();
        assert_eq!(err.api_code(), Some("INVALID_REQUEST"));
        gw.finish().await;
    }
}

#[tokio::test]
async fn a_payment_after_a_close_becomes_success_with_a_repair_record() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let no = out_no("LATE");
        let _: Value = gw
            .client
            .post_json(
                "/v3/pay/transactions/native",
                &gw.native(&no, 4, "https://e.com/n"),
            )
            .await
            .unwrap();
        let store = &gw.gw.state.store;
        let order = store.get_order(gw.mchid(), &no).await.unwrap().unwrap();
        let attempt = store
            .attempts(&order.transaction_id)
            .await
            .unwrap()
            .remove(0);
        // Close locally only, as if the channel's close had raced a payment.
        let change = paygate_store::OrderChange {
            transaction_id: order.transaction_id.clone(),
            expected_state: paygate_store::OrderState::Notpay,
            new_state: paygate_store::OrderState::Closed,
            success_time: None,
            bank_type: None,
            payer_openid: None,
            updated_at: time::OffsetDateTime::now_utc(),
            attempt: None,
            notification: None,
            repair: None,
            ledger: None,
        };
        assert!(store.apply_order_change(&change).await.unwrap());
        let tx: Transaction = serde_json::from_value(json!({
            "out_trade_no": attempt.attempt_id, "transaction_id": "4200000000202611300000000042",
            "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "success_time": "2026-11-30T10:00:00+08:00",
            "amount": {"total": 4, "currency": "CNY"}
        }))
        .unwrap();
        let applied = paygate_server::flow::apply_channel_transaction(
            &gw.gw.state,
            &attempt.attempt_id,
            &tx,
            "callback",
        )
        .await
        .unwrap();
        assert_eq!(applied, paygate_server::flow::Applied::PaidAfterClose);
        assert_eq!(gw.query(&no).await.trade_state.as_str(), "SUCCESS");
        let repairs = store.repairs(&order.transaction_id).await.unwrap();
        assert_eq!(repairs.len(), 1);
        assert_eq!(repairs[0].way, "late_payment_after_close");
        // The same callback again changes nothing.
        let again = paygate_server::flow::apply_channel_transaction(
            &gw.gw.state,
            &attempt.attempt_id,
            &tx,
            "callback",
        )
        .await
        .unwrap();
        assert_eq!(again, paygate_server::flow::Applied::AlreadyFinal);
        assert_eq!(
            store
                .notifications_of(&order.transaction_id)
                .await
                .unwrap()
                .len(),
            1
        );
        gw.finish().await;
    }
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_code_and_deliveries() {
    let gw = start(None, |_| {}).await;
    let rx = receiver().await;
    let no = out_no("M");
    gw.prepay_native(&no, 2, &rx.url).await;
    let _ = gw
        .client
        .get_json::<Transaction>(&format!(
            "/v3/pay/transactions/out-trade-no/NOPE1234?mchid={}",
            gw.mchid()
        ))
        .await;
    gw.pay(&no).await;
    rx.wait_for(1).await;
    let text = eventually(|| async {
        let text = gw
            .http
            .get(format!("{}metrics", gw.gw.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("paygate_notifications_total{outcome=\"delivered\"} 1")
            .then_some(text)
    })
    .await;
    assert!(text.contains("paygate_http_requests_total{endpoint=\"POST /v3/pay/transactions/native\",code=\"200\"} 1"), "{text}");
    // The prepay's answer was signed while its PREPAID commit waited, not after.
    assert!(
        text.contains("paygate_answers_signed_total{when=\"ahead\"} 1\n"),
        "{text}"
    );
    // The store's pool gauges, labelled with the backend under test.
    assert!(
        text.contains(&format!(
            "paygate_db_connections{{backend=\"{}\",state=\"in_use\"}}",
            if gw.pg_schema.is_some() {
                "postgres"
            } else {
                "sqlite"
            }
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "endpoint=\"GET /v3/pay/transactions/out-trade-no/{out_trade_no}\",code=\"404\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("paygate_http_request_duration_seconds_count{endpoint=\"POST /v3/pay/transactions/native\"} 1"));
    assert!(
        text.contains("paygate_channel_share"),
        "the router's series are there too"
    );
    gw.finish().await;
}

#[tokio::test]
async fn risk_control_denies_a_blocked_payer_before_any_channel_order_and_keeps_the_decision() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let engine = gw
            .gw
            .state
            .risk
            .clone()
            .expect("risk control is on by default");
        let blocked_openid = "oBlockedPayer000000000000000";
        engine.set_lists(paygate_risk::Lists::new(vec![paygate_risk::ListEntry {
            kind: paygate_risk::ListKind::Block,
            entity: paygate_risk::ListEntity::Payer,
            value: engine.payer_key(blocked_openid),
            expires_at: None,
            reason: "test chargeback".into(),
        }]));
        let no = out_no("RISK");
        let mut body = gw.native(&no, 100, "https://e.com/n");
        body["payer"] = json!({"openid": blocked_openid});
        match gw
            .client
            .post_json::<_, Value>("/v3/pay/transactions/jsapi", &body)
            .await
            .unwrap_err()
        {
            ClientError::Api { status, code, .. } => {
                assert_eq!((status, code.as_str()), (403, "RULE_LIMIT"))
            }
            e => panic!("{e}"),
        }
        assert!(
            gw.gw
                .state
                .store
                .get_order(gw.mchid(), &no)
                .await
                .unwrap()
                .is_none(),
            "nothing created"
        );
        let (status, kept) = gw
            .admin(
                reqwest::Method::GET,
                &format!("risk/decisions/{}/{no}", gw.mchid()),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(kept[0]["action"], "DENY");
        assert!(
            kept[0]["fired_json"]
                .as_str()
                .unwrap()
                .contains("LIST-BLOCK-PAYER")
        );
        let (_, queue) = gw
            .admin(reqwest::Method::GET, "risk/decisions?action=DENY")
            .await;
        assert_eq!(queue.as_array().unwrap().len(), 1);
        // Another payer goes through.
        let ok = out_no("RISK");
        let mut body = gw.native(&ok, 100, "https://e.com/n");
        body["payer"] = json!({"openid": "oHonestPayer0000000000000000"});
        let r: Result<Value, _> = gw
            .client
            .post_json("/v3/pay/transactions/jsapi", &body)
            .await;
        let (_, why) = gw
            .admin(
                reqwest::Method::GET,
                &format!("risk/decisions/{}/{ok}", gw.mchid()),
            )
            .await;
        assert!(r.is_ok(), "refused: {why}");
        let metrics = gw
            .http
            .get(format!("{}metrics", gw.gw.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("paygate_risk_decisions_total{action=\"DENY\"} 1"),
            "{metrics}"
        );
        gw.finish().await;
    }
}

#[tokio::test]
async fn velocity_refusals_stand_when_enforcing_and_are_kept_as_reviews_in_the_sandbox() {
    for enforce in [None, Some(paygate_server::config::Enforce::All)] {
        let gw = start(None, |c| c.risk.enforce = enforce).await;
        let mut refused = 0;
        for _ in 0..12 {
            let mut body = gw.native(&out_no("VEL"), 100, "https://e.com/n");
            body["payer"] = json!({"openid": "oSamePayerEveryTime000000000"});
            if let Err(e) = gw
                .client
                .post_json::<_, Value>("/v3/pay/transactions/jsapi", &body)
                .await
            {
                assert_eq!(e.api_code(), Some("RULE_LIMIT"));
                refused += 1;
            }
        }
        match enforce {
            // The sandbox's test mode: the burst is flagged, never refused.
            None => {
                assert_eq!(refused, 0);
                let (_, queue) = gw
                    .admin(reqwest::Method::GET, "risk/decisions?action=REVIEW")
                    .await;
                assert!(
                    !queue.as_array().unwrap().is_empty(),
                    "the burst is in the review queue"
                );
            }
            Some(_) => assert!(
                refused >= 3,
                "twelve payments by one payer within seconds: {refused} refused"
            ),
        }
        gw.finish().await;
    }
}
