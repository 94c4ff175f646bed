//! Daily settlement through the gateway, on SQLite and (with `PAYGATE_TEST_DATABASE_URL`)
//! PostgreSQL: payments made with the sandbox and a refund, the day settled through the admin
//! API, pending → available moving exactly payments − fees − refunds, once however often it
//! runs; a held merchant skipped, then settled by the next run after the release; the daily
//! job honouring T+N per merchant; the ledger replayed from its transfers afterwards equals the
//! stored balances with every invariant holding; bad admin input answered in the V3 shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paygate_core::timefmt::{BEIJING, format_date};
use paygate_ledger::LedgerState;
use paygate_store::Store;
use paygate_wxpay::models::refunds::{Refund, RefundStatus};
use serde_json::{Value, json};
use time::OffsetDateTime;

mod common;

use common::*;

impl Gw {
    async fn paid(&self, no: &str, total: i64) -> String {
        let body = json!({"appid": self.kit.merchant.appid, "mchid": self.mchid(),
            "description": "结算测试", "out_trade_no": no, "notify_url": "https://e.com/n",
            "amount": {"total": total, "currency": "CNY"}});
        let _: Value = self
            .client
            .post_json("/v3/pay/transactions/native", &body)
            .await
            .unwrap();
        self.pay(no).await;
        self.wait_state(no, "SUCCESS").await.transaction_id.unwrap()
    }

    async fn refunded(&self, no: &str, out_refund_no: &str, refund: i64, total: i64) {
        let body = json!({"out_trade_no": no, "out_refund_no": out_refund_no,
            "amount": {"refund": refund, "total": total, "currency": "CNY"}});
        let _: Refund = self
            .client
            .post_json("/v3/refund/domestic/refunds", &body)
            .await
            .unwrap();
        eventually(|| async {
            let r: Refund = self
                .client
                .get_json(&format!("/v3/refund/domestic/refunds/{out_refund_no}"))
                .await
                .unwrap();
            (r.status == RefundStatus::Success).then_some(())
        })
        .await
    }

    async fn admin_body(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}admin/v1/{path}", self.gw.base_url))
            .bearer_auth("operator-secret")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// The merchant's `kind` account balance (credits − debits posted, debits pending).
    async fn balance(&self, kind: &str) -> (i64, u64) {
        let (status, body) = self
            .admin(
                reqwest::Method::GET,
                &format!("ledger/accounts?owner={}", self.mchid()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == kind)
            .map_or((0, 0), |a| {
                (
                    a["balance_posted"].as_str().unwrap().parse().unwrap(),
                    a["debits_pending"].as_u64().unwrap(),
                )
            })
    }

    async fn settle(&self, date: &str) -> Value {
        let (status, body) = self
            .admin_body(
                reqwest::Method::POST,
                "settlements/run",
                &json!({"date": date, "mchid": self.mchid()}).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn today() -> String {
    format_date(OffsetDateTime::now_utc().to_offset(BEIJING).date())
}

/// The ledger replayed from every stored transfer (in insert order) equals the stored
/// balances, and its invariants (Σ debits = Σ credits, limits) hold.
async fn ledger_replays(store: &dyn Store) {
    let mut rows = Vec::new();
    let mut from = 0;
    loop {
        let page = store.journal_entries(from, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.leaf_index.unwrap() + 1;
        rows.extend(page);
    }
    let mut after = 0;
    loop {
        let page = store.unsequenced_transfers(after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        rows.extend(page);
    }
    rows.sort_by_key(|r| r.seq);
    let accounts = store.ledger_accounts(None).await.unwrap();
    let records: Vec<_> = rows.iter().map(|r| r.record.clone()).collect();
    let replayed = LedgerState::replay(&accounts, &records).unwrap();
    replayed.check_invariants().unwrap();
    for a in &accounts {
        assert_eq!(replayed.account(a.id).unwrap().balances, a.balances);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_settles_payments_minus_fees_and_refunds_once() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |c| c.settlement.enabled = false).await;
        let date = today();
        let (a, b, c) = (out_no("sa"), out_no("sb"), out_no("sc"));
        gw.paid(&a, 10_000).await;
        gw.paid(&b, 5_000).await;
        gw.paid(&c, 2_000).await;
        // 1000 of 10000 back: the fee share given back is floor(60 × 1000 / 10000) = 6.
        gw.refunded(&a, &out_no("ra"), 1_000, 10_000).await;
        let fees = 60 + 30 + 12;
        let expected = 17_000 - fees - (1_000 - 6);
        assert_eq!(
            gw.balance("merchant_pending").await,
            (expected, 0),
            "pending before"
        );
        let body = gw.settle(&date).await;
        let row = &body["settlements"][0];
        assert_eq!(row["status"], "SETTLED", "{body}");
        assert_eq!(row["amount_fen"], expected);
        assert_eq!(row["payments"], 3);
        assert_eq!(row["refunds"], 1);
        assert_eq!(row["fee_fen"], fees);
        assert_eq!(gw.balance("merchant_pending").await, (0, 0));
        assert_eq!(gw.balance("merchant_available").await, (expected, 0));
        // Again: the same row, nothing moves.
        let again = gw.settle(&date).await;
        assert_eq!(again["settlements"][0], *row);
        assert_eq!(gw.balance("merchant_available").await, (expected, 0));
        // The report.
        let (status, report) = gw
            .admin(
                reqwest::Method::GET,
                &format!("settlements?mchid={}&date={date}", gw.mchid()),
            )
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["settlements"].as_array().unwrap().len(), 1);
        assert_eq!(report["total"]["amount_fen"], expected);
        assert_eq!(report["total"]["settled"], 1);
        // A refund after settlement comes from available.
        gw.refunded(&b, &out_no("rb"), 500, 5_000).await;
        assert_eq!(gw.balance("merchant_pending").await, (0, 0));
        assert_eq!(
            gw.balance("merchant_available").await,
            (expected - (500 - 3), 0)
        );
        ledger_replays(gw.gw.state.store.as_ref()).await;

        // Client mistakes: the V3 error shape, never a 5xx.
        let (s, e) = gw
            .admin(reqwest::Method::GET, "settlements?date=2026-13-01")
            .await;
        assert_eq!((s, e["code"].as_str()), (400, Some("PARAM_ERROR")), "{e}");
        let (s, e) = gw
            .admin(reqwest::Method::GET, "settlements?dat=2026-01-01")
            .await;
        assert_eq!((s, e["code"].as_str()), (400, Some("PARAM_ERROR")), "{e}");
        let (s, e) = gw
            .admin_body(
                reqwest::Method::POST,
                "settlements/run",
                r#"{"date": "2999-01-01"}"#,
            )
            .await;
        assert_eq!((s, e["code"].as_str()), (400, Some("PARAM_ERROR")), "{e}");
        let (s, e) = gw
            .admin_body(reqwest::Method::POST, "settlements/run", "{not json")
            .await;
        assert_eq!(s, 400, "{e}");
        assert!(e["message"].is_string());
        let (s, e) = gw
            .admin_body(
                reqwest::Method::POST,
                "merchants/1999999999/settlement-hold",
                "{}",
            )
            .await;
        assert_eq!(
            (s, e["code"].as_str()),
            (404, Some("RESOURCE_NOT_EXISTS")),
            "{e}"
        );
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_merchant_is_skipped_then_settled_after_release() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |c| c.settlement.enabled = false).await;
        let date = today();
        gw.paid(&out_no("ha"), 8_000).await;
        let net = 8_000 - 48;
        let (s, body) = gw
            .admin_body(
                reqwest::Method::POST,
                &format!("merchants/{}/settlement-hold", gw.mchid()),
                r#"{"reason": "kyc review"}"#,
            )
            .await;
        assert_eq!((s, &body["newly_held"]), (200, &json!(true)), "{body}");
        let held = gw.settle(&date).await;
        assert_eq!(held["settlements"][0]["status"], "HELD", "{held}");
        assert_eq!(held["settlements"][0]["amount_fen"], 0);
        assert_eq!(gw.balance("merchant_pending").await, (net, 0));
        assert_eq!(gw.balance("merchant_available").await, (0, 0));
        let (_, report) = gw
            .admin(
                reqwest::Method::GET,
                &format!("settlements?mchid={}", gw.mchid()),
            )
            .await;
        assert_eq!(report["holds"][0]["reason"], "kyc review", "{report}");
        assert_eq!(report["total"]["held"], 1);
        let (s, body) = gw
            .admin_body(
                reqwest::Method::POST,
                &format!("merchants/{}/settlement-release", gw.mchid()),
                "",
            )
            .await;
        assert_eq!((s, &body["released"]), (200, &json!(true)), "{body}");
        // The daily job's next round (the day after, past run_after) settles the released day.
        let tomorrow = OffsetDateTime::now_utc()
            .to_offset(BEIJING)
            .date()
            .next_day()
            .unwrap();
        let at = tomorrow.with_hms(3, 0, 0).unwrap().assume_offset(BEIJING);
        let config = gw.gw.state.config.settlement.clone();
        let rows = paygate_server::settlement::run_due(gw.gw.state.store.as_ref(), &config, at)
            .await
            .unwrap();
        let settled = rows
            .iter()
            .find(|r| r.business_date == date && r.mchid == gw.mchid())
            .unwrap();
        assert_eq!(
            (settled.status.as_str(), settled.amount_fen),
            ("SETTLED", net)
        );
        assert_eq!(gw.balance("merchant_pending").await, (0, 0));
        assert_eq!(gw.balance("merchant_available").await, (net, 0));
        ledger_replays(gw.gw.state.store.as_ref()).await;
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_job_settles_t_plus_n_per_merchant() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |c| c.settlement.enabled = false).await;
        let date = today();
        gw.paid(&out_no("ja"), 3_000).await;
        let mut config = gw.gw.state.config.settlement.clone();
        config.merchant_delay_days.insert(gw.mchid().to_string(), 2);
        config.catch_up_days = 1;
        let day = OffsetDateTime::now_utc().to_offset(BEIJING).date();
        let at = |days: i64, h: u8| {
            (day + time::Duration::days(days))
                .with_hms(h, 0, 0)
                .unwrap()
                .assume_offset(BEIJING)
        };
        let store = gw.gw.state.store.as_ref();
        let job = paygate_server::settlement::run_due;
        // T+1 would settle today tomorrow; this merchant is T+2, and before run_after nothing.
        for now in [at(1, 3), at(2, 1)] {
            let rows = job(store, &config, now).await.unwrap();
            assert!(rows.iter().all(|r| r.business_date != date), "{rows:?}");
        }
        assert_eq!(gw.balance("merchant_available").await, (0, 0));
        let rows = job(store, &config, at(2, 3)).await.unwrap();
        let row = rows.iter().find(|r| r.business_date == date).unwrap();
        assert_eq!(
            (row.status.as_str(), row.amount_fen),
            ("SETTLED", 3_000 - 18)
        );
        // The next round writes nothing for days already settled.
        let rows = job(store, &config, at(2, 4)).await.unwrap();
        assert!(rows.is_empty(), "{rows:?}");
        assert_eq!(gw.balance("merchant_available").await, (3_000 - 18, 0));
        ledger_replays(store).await;
        gw.finish().await;
    }
}
