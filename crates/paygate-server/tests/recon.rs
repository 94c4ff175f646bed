//! End-of-day reconciliation against the simulator's bills (issue 9 §5), on SQLite and on
//! PostgreSQL: a clean day (payments and a refund) shows no discrepancy and balances; a day
//! with a lost notification, a changed amount, a changed fee, a missing row and a duplicated
//! row finds each exactly once, repairs the lost notification through the state machine
//! (repair record, merchant notification), and leaves the rest to the operator queue, whose
//! resolution is a compare-and-set with an audit row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gw, backends, eventually, out_no, start};
use paygate_wxpay::models::payments::Transaction;
use serde_json::{Value, json};

async fn admin_post(gw: &Gw, path: &str, body: Value) -> (u16, Value) {
    let resp = gw
        .http
        .post(format!("{}admin/v1/{path}", gw.gw.base_url))
        .bearer_auth("operator-secret")
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn prepay(gw: &Gw, no: &str, total: i64) {
    let body = json!({"appid": gw.kit.merchant.appid, "mchid": gw.mchid(), "description": "对账测试",
        "out_trade_no": no, "notify_url": "https://merchant.invalid/notify",
        "amount": {"total": total, "currency": "CNY"}});
    let _: Value = gw
        .client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
}

async fn paid(gw: &Gw, total: i64) -> Transaction {
    let no = out_no("rc");
    prepay(gw, &no, total).await;
    gw.pay(&no).await;
    gw.wait_state(&no, "SUCCESS").await
}

/// The channel's out_trade_no of an order's first attempt.
fn attempt_of(t: &Transaction) -> String {
    format!("{}01", t.transaction_id.clone().unwrap())
}

fn day_of(t: &Transaction) -> String {
    t.success_time.clone().unwrap()[..10].to_string()
}

async fn sim_post(gw: &Gw, path: &str, body: Value) {
    let sim = gw.gw.sandbox.as_ref().unwrap();
    let r = gw
        .http
        .post(format!("{}sandbox/v1/{path}", sim.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn sim_faults(gw: &Gw, faults: Value) {
    let sim = gw.gw.sandbox.as_ref().unwrap();
    let sp = &sim.partner.merchant.mchid;
    let r = gw
        .http
        .put(format!("{}sandbox/v1/faults/{sp}", sim.base_url))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn reconcile(gw: &Gw, day: &str) -> Value {
    sim_post(gw, "bills/close-day", json!({"bill_date": day})).await;
    let (status, body) = admin_post(gw, "recon/runs", json!({"bill_date": day})).await;
    assert_eq!(status, 200, "{body}");
    body["runs"][0].clone()
}

async fn report(gw: &Gw, day: &str) -> Value {
    let (status, report) = gw
        .admin(
            reqwest::Method::GET,
            &format!("recon/report?bill_date={day}"),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    report
}

/// The balance row of `scope` in a day's report.
fn balance<'a>(report: &'a Value, scope: &str) -> &'a Value {
    report["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == scope)
        .unwrap_or_else(|| panic!("no {scope} balance: {report}"))
}

/// (paygate's, the channel's) payments and refunds of a balance row, in fen.
fn figures(b: &Value) -> ((i64, i64), (i64, i64)) {
    let f = |v: &Value| {
        (
            v["payment_fen"].as_i64().unwrap(),
            v["refund_fen"].as_i64().unwrap(),
        )
    };
    (f(&b["paygate"]), f(&b["channel"]))
}

/// The business day after `day` (`YYYY-MM-DD`).
fn day_after(day: &str) -> String {
    let d = time::Date::parse(
        day,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .unwrap();
    paygate_core::timefmt::format_date(d.next_day().unwrap())
}

/// Refunds `amount` of `t` and waits until the gateway has it SUCCESS; the gateway's
/// refund_id, which is the channel's out_refund_no.
async fn refunded(gw: &Gw, t: &Transaction, amount: i64) -> String {
    let total = t.amount.as_ref().unwrap().total;
    let refund = json!({"out_trade_no": t.out_trade_no, "out_refund_no": out_no("rf"),
        "amount": {"refund": amount, "total": total, "currency": "CNY"}});
    let r: Value = gw
        .client
        .post_json("/v3/refund/domestic/refunds", &refund)
        .await
        .unwrap();
    let out_refund_no = r["out_refund_no"].as_str().unwrap().to_string();
    eventually(|| async {
        let r: Value = gw
            .client
            .get_json(&format!("/v3/refund/domestic/refunds/{out_refund_no}"))
            .await
            .unwrap();
        (r["status"] == "SUCCESS").then_some(())
    })
    .await;
    r["refund_id"].as_str().unwrap().to_string()
}

fn counts(run: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<_> = run["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect();
    v.sort();
    v.retain(|(_, n)| *n > 0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_day_shows_no_discrepancy_and_balances() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let a = paid(&gw, 100).await;
        paid(&gw, 2_345).await;
        let c = paid(&gw, 1).await;
        // A refund, settled at the gateway before the day is reconciled.
        let refund = json!({"out_trade_no": a.out_trade_no, "out_refund_no": out_no("rf"),
            "amount": {"refund": 40, "total": 100, "currency": "CNY"}});
        let r: Value = gw
            .client
            .post_json("/v3/refund/domestic/refunds", &refund)
            .await
            .unwrap();
        let out_refund_no = r["out_refund_no"].as_str().unwrap().to_string();
        eventually(|| async {
            let r: Value = gw
                .client
                .get_json(&format!("/v3/refund/domestic/refunds/{out_refund_no}"))
                .await
                .unwrap();
            (r["status"] == "SUCCESS").then_some(())
        })
        .await;
        let day = day_of(&c);
        assert_eq!(day, day_of(&a), "the test ran across midnight Beijing time");

        let run = reconcile(&gw, &day).await;
        assert_eq!(counts(&run), vec![], "{run}");
        assert_eq!(
            (
                run["bill_rows"].as_u64(),
                run["platform_rows"].as_u64(),
                run["matched"].as_u64()
            ),
            (Some(4), Some(4), Some(4)),
            "{run}"
        );
        assert_eq!(run["balanced"], true, "{run}");

        let (status, report) = gw
            .admin(
                reqwest::Method::GET,
                &format!("recon/report?bill_date={day}"),
            )
            .await;
        assert_eq!(status, 200);
        let scopes: Vec<&str> = report["balances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["scope"].as_str().unwrap())
            .collect();
        assert!(
            scopes.contains(&"CHANNEL") && scopes.contains(&"FUND_FLOW"),
            "{report}"
        );
        assert!(
            report["balances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["balanced"] == true),
            "{report}"
        );
        assert!(report["runs"][0]["trade_bill_sha1"].as_str().unwrap().len() >= 40);

        // The ledger's view: what the day moved through the channel's clearing account
        // (payments in, the refund out) equals the bill's summary, in total and for the merchant.
        let ledger = balance(&report, "LEDGER:CHANNEL");
        assert_eq!(ledger["balanced"], true, "{ledger}");
        assert_eq!(figures(ledger), ((2_446, 40), (2_446, 40)), "{ledger}");
        assert_eq!(
            ledger["paygate"]["net_fen"].as_i64().unwrap()
                + ledger["paygate"]["fee_fen"].as_i64().unwrap(),
            2_446,
            "{ledger}"
        );
        assert_eq!(
            (
                ledger["paygate"]["payments"].as_i64(),
                ledger["paygate"]["refunds"].as_i64()
            ),
            (Some(3), Some(1)),
            "{ledger}"
        );
        let merchant = balance(&report, &format!("LEDGER:MERCHANT:{}", gw.mchid()));
        assert_eq!(merchant["balanced"], true, "{merchant}");
        assert_eq!(figures(merchant), ((2_446, 40), (2_446, 40)), "{merchant}");
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_injected_class_is_found_once_and_resolved_as_designed() {
    for pg in backends() {
        // The poller must not find the lost payment before the reconciliation does.
        let gw = start(pg.as_deref(), |c| {
            c.workers.poll_interval_ms = 3_600_000_000
        })
        .await;
        let changed = paid(&gw, 500).await;
        let fee = paid(&gw, 10_000).await;
        let missing = paid(&gw, 700).await;
        let twice = paid(&gw, 800).await;
        // The lost notification: the channel has the payment, the gateway never heard.
        sim_faults(&gw, json!({"notify": {"drop_rate_ppm": 1_000_000}})).await;
        let lost_no = out_no("lost");
        prepay(&gw, &lost_no, 900).await;
        gw.pay(&lost_no).await;
        assert_eq!(gw.query(&lost_no).await.trade_state.as_str(), "NOTPAY");
        let lost_tx = gw
            .gw
            .state
            .store
            .get_order(gw.mchid(), &lost_no)
            .await
            .unwrap()
            .unwrap()
            .transaction_id;
        let lost_attempt = format!("{lost_tx}01");
        let day = day_of(&twice);
        sim_faults(
            &gw,
            json!({"bill": {
                "drop": [attempt_of(&missing)],
                "duplicate": [attempt_of(&twice)],
                "amount_delta_fen": {attempt_of(&changed): 1},
                "fee_delta_fen": {attempt_of(&fee): 1},
            }}),
        )
        .await;

        let run = reconcile(&gw, &day).await;
        // The ledger balance, taken before the run's repairs: the ledger has the four payments
        // paygate booked (500 + 10000 + 700 + 800); the bill's summary has 501 (changed),
        // 10000, 800 twice and the lost 900, not the dropped 700.
        let ledger = balance(&report(&gw, &day).await, "LEDGER:CHANNEL").clone();
        assert_eq!(ledger["balanced"], false, "{ledger}");
        assert_eq!(figures(&ledger), ((12_000, 0), (13_001, 0)), "{ledger}");
        assert!(
            ledger["detail"]
                .as_str()
                .unwrap()
                .contains("12000 fen vs 13001 fen"),
            "{ledger}"
        );
        let want: Vec<(String, u64)> = [
            "AMOUNT_MISMATCH",
            "DUPLICATE",
            "FEE_MISMATCH",
            "STATUS_MISMATCH",
        ]
        .iter()
        .map(|c| (c.to_string(), 1))
        .collect();
        let mut got = counts(&run);
        // The missing row waits in the cross-day pool (it may be in tomorrow's bill).
        assert_eq!(run["pool"]["held"], 1, "{run}");
        got.retain(|(c, _)| c != "PLATFORM_ONLY");
        assert_eq!(got, want, "{run}");
        assert_eq!(
            run["auto_resolved"], 1,
            "only the lost notification is repaired: {run}"
        );

        // The repair went through the state machine: paid, a repair record, a notification.
        gw.wait_state(&lost_no, "SUCCESS").await;
        let repairs = gw.gw.state.store.repairs(&lost_tx).await.unwrap();
        assert_eq!(repairs.len(), 1);
        assert_eq!(
            (repairs[0].source.as_str(), repairs[0].way.as_str()),
            ("reconciliation", "query_and_apply")
        );
        assert_eq!(repairs[0].before_state.as_str(), "NOTPAY");
        let notes = gw.gw.state.store.notifications_of(&lost_tx).await.unwrap();
        assert!(notes.iter().any(|n| n.event_type == "TRANSACTION.SUCCESS"));

        // The operator queue: the other findings, with both sides' evidence.
        let (status, open) = gw
            .admin(
                reqwest::Method::GET,
                &format!("recon/discrepancies?bill_date={day}&state=OPEN"),
            )
            .await;
        assert_eq!(status, 200);
        let open = open["data"].as_array().unwrap().clone();
        assert_eq!(open.len(), 3, "{open:?}");
        let amount = open
            .iter()
            .find(|d| d["class"] == "AMOUNT_MISMATCH")
            .unwrap();
        assert_eq!(amount["out_no"], attempt_of(&changed));
        assert_eq!(amount["channel"]["amount_fen"], 501);
        assert_eq!(amount["paygate"]["amount_fen"], 500);
        assert_eq!(
            amount["channel"]["bill_row"]["out_trade_no"],
            attempt_of(&changed)
        );
        assert_eq!(
            amount["paygate"]["transaction_id"],
            changed.transaction_id.clone().unwrap()
        );
        let (status, auto) = gw
            .admin(
                reqwest::Method::GET,
                &format!("recon/discrepancies?bill_date={day}&state=AUTO_RESOLVED"),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(auto["data"][0]["out_no"], lost_attempt);
        assert_eq!(auto["data"][0]["resolution"], "QUERY_AND_APPLY");

        // Resolving: a reason is required; once; audited.
        let id = amount["id"].as_str().unwrap();
        let (status, err) = admin_post(
            &gw,
            &format!("recon/discrepancies/{id}/resolve"),
            json!({"reason": " "}),
        )
        .await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("PARAM_ERROR")),
            "{err}"
        );
        let (status, err) =
            admin_post(&gw, &format!("recon/discrepancies/{id}/resolve"), json!({})).await;
        assert_eq!(status, 400, "{err}");
        let (status, done) = admin_post(
            &gw,
            &format!("recon/discrepancies/{id}/resolve"),
            json!({"reason": "coupon booked by the channel", "operator": "ops-1"}),
        )
        .await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["state"], "RESOLVED");
        assert_eq!(done["audit"][0]["actor"], "ops-1");
        assert_eq!(done["audit"][0]["before"], "OPEN");
        let (status, again) = admin_post(
            &gw,
            &format!("recon/discrepancies/{id}/resolve"),
            json!({"reason": "again"}),
        )
        .await;
        assert_eq!(
            (status, again["code"].as_str()),
            (400, Some("INVALID_REQUEST")),
            "{again}"
        );
        let (status, _) = admin_post(
            &gw,
            "recon/discrepancies/nope/resolve",
            json!({"reason": "x"}),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = admin_post(&gw, "recon/runs", json!({"bill_date": "2026-13-01"})).await;
        assert_eq!(status, 400);

        // A re-run of the day keeps the resolved and repaired findings, finds nothing new.
        let again = reconcile(&gw, &day).await;
        assert_eq!(again["auto_resolved"], 0, "{again}");
        let (_, all) = gw
            .admin(
                reqwest::Method::GET,
                &format!("recon/discrepancies?bill_date={day}"),
            )
            .await;
        let states: Vec<&str> = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["state"].as_str().unwrap())
            .collect();
        assert_eq!(
            states.iter().filter(|s| **s == "RESOLVED").count(),
            1,
            "{all}"
        );
        let (_, report) = gw
            .admin(
                reqwest::Method::GET,
                &format!("recon/report?bill_date={day}"),
            )
            .await;
        assert!(
            report["balances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["balanced"] == false),
            "a faulty bill does not balance: {report}"
        );
        // After the repair the ledger has the lost payment too; the changed amount, the
        // duplicate and the dropped row still differ: 13001 - 12900 = 1 + 800 - 700.
        let ledger = balance(&report, "LEDGER:CHANNEL");
        assert_eq!(figures(ledger), ((12_900, 0), (13_001, 0)), "{ledger}");
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_booked_after_the_cut_waits_in_the_pool_and_pairs_the_next_day() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        // Paid "at 23:59:59.9": the channel books it at the next midnight, in the next bill.
        let late = paid(&gw, 300).await;
        paid(&gw, 400).await;
        let day = day_of(&late);
        sim_faults(&gw, json!({"bill": {"next_day": [attempt_of(&late)]}})).await;

        let first = reconcile(&gw, &day).await;
        assert_eq!(
            counts(&first),
            vec![],
            "a day-cut item is held, not reported: {first}"
        );
        assert_eq!(first["pool"]["held"], 1, "{first}");
        assert_eq!(first["matched"], 1, "{first}");

        // The next business day at the channel.
        sim_post(&gw, "clock/advance", json!({"seconds": 86_400})).await;
        let next = time::Date::parse(
            &day,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .unwrap()
        .next_day()
        .unwrap();
        let next = paygate_core::timefmt::format_date(next);
        let second = reconcile(&gw, &next).await;
        assert_eq!(counts(&second), vec![], "{second}");
        assert_eq!(
            second["pool"]["matched_across_days"], 1,
            "the halves pair up: {second}"
        );
        assert_eq!(second["pool"]["held"], 0, "{second}");
        let (_, all) = gw.admin(reqwest::Method::GET, "recon/discrepancies").await;
        assert_eq!(all["data"].as_array().unwrap().len(), 0, "{all}");
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_whose_outcome_was_lost_is_repaired_and_the_ledger_then_balances() {
    for pg in backends() {
        // Only the reconciliation may find the lost refund outcome, not the poller.
        let gw = start(pg.as_deref(), |c| {
            c.workers.poll_interval_ms = 3_600_000_000
        })
        .await;
        let t = paid(&gw, 1_000).await;
        sim_faults(&gw, json!({"notify": {"drop_rate_ppm": 1_000_000}})).await;
        let refund = json!({"out_trade_no": t.out_trade_no, "out_refund_no": out_no("rf"),
            "amount": {"refund": 300, "total": 1_000, "currency": "CNY"}});
        let r: Value = gw
            .client
            .post_json("/v3/refund/domestic/refunds", &refund)
            .await
            .unwrap();
        let refund_id = r["refund_id"].as_str().unwrap().to_string();
        // The channel refunded the payer; its REFUND.SUCCESS notification never arrived.
        let sim = gw.gw.sandbox.as_ref().unwrap();
        eventually(|| async {
            let v: Value = gw
                .http
                .get(format!("{}sandbox/v1/notifications", sim.base_url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .any(|d| d["event_type"] == "REFUND.SUCCESS")
                .then_some(())
        })
        .await;
        let stored = gw
            .gw
            .state
            .store
            .get_refund_by_id(&refund_id)
            .await
            .unwrap();
        assert_eq!(stored.unwrap().state.as_str(), "PROCESSING");
        let day = day_of(&t);

        let run = reconcile(&gw, &day).await;
        assert_eq!(
            counts(&run),
            vec![("STATUS_MISMATCH".to_string(), 1)],
            "{run}"
        );
        assert_eq!(run["auto_resolved"], 1, "{run}");
        // Before the repair the ledger had not paid the refund out of clearing: a difference
        // with both figures. The order/refund cross-check counts the PROCESSING refund as booked.
        let first = report(&gw, &day).await;
        let ledger = balance(&first, "LEDGER:CHANNEL");
        assert_eq!(ledger["balanced"], false, "{ledger}");
        assert_eq!(figures(ledger), ((1_000, 0), (1_000, 300)), "{ledger}");
        assert_eq!(balance(&first, "CHANNEL")["balanced"], true, "{first}");

        // The run repaired the refund through the state machine (ledger posted, notification).
        let stored = gw
            .gw
            .state
            .store
            .get_refund_by_id(&refund_id)
            .await
            .unwrap();
        assert_eq!(stored.unwrap().state.as_str(), "SUCCESS");
        let (_, auto) = gw
            .admin(
                reqwest::Method::GET,
                &format!("recon/discrepancies?bill_date={day}&state=AUTO_RESOLVED"),
            )
            .await;
        assert_eq!(auto["data"][0]["kind"], "REFUND", "{auto}");
        assert_eq!(auto["data"][0]["resolution"], "QUERY_AND_APPLY", "{auto}");

        // A re-run finds nothing and the ledger now agrees with the bill.
        let again = reconcile(&gw, &day).await;
        assert_eq!(counts(&again), vec![], "{again}");
        assert_eq!(again["balanced"], true, "{again}");
        let second = report(&gw, &day).await;
        let ledger = balance(&second, "LEDGER:CHANNEL");
        assert_eq!(figures(ledger), ((1_000, 300), (1_000, 300)), "{ledger}");
        let merchant = balance(&second, &format!("LEDGER:MERCHANT:{}", gw.mchid()));
        assert_eq!(merchant["balanced"], true, "{merchant}");
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_booked_after_the_cut_waits_in_the_pool_and_pairs_the_next_day() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        // Refunded "at 23:59:59": paygate has the refund on its day, the channel books it
        // after midnight, in the next day's bill.
        let t = paid(&gw, 1_000).await;
        let refund_id = refunded(&gw, &t, 300).await;
        let day = day_of(&t);
        sim_faults(&gw, json!({"bill": {"refund_next_day": [refund_id]}})).await;

        let first = reconcile(&gw, &day).await;
        assert_eq!(
            counts(&first),
            vec![],
            "a day-cut refund is held, not reported: {first}"
        );
        assert_eq!(first["pool"]["held"], 1, "{first}");
        assert_eq!(
            (first["bill_rows"].as_u64(), first["platform_rows"].as_u64()),
            (Some(1), Some(2)),
            "the day's bill lists the payment only: {first}"
        );
        assert_eq!(first["matched"], 1, "{first}");

        // The next business day at the channel: the refund row is there, paygate has no
        // refund of that day; the probe finds the refund on the day before and the pool pairs it.
        sim_post(&gw, "clock/advance", json!({"seconds": 86_400})).await;
        let next = day_after(&day);
        let second = reconcile(&gw, &next).await;
        assert_eq!(counts(&second), vec![], "{second}");
        assert_eq!(second["bill_rows"], 1, "{second}");
        assert_eq!(
            second["pool"]["matched_across_days"], 1,
            "the halves pair up: {second}"
        );
        assert_eq!(second["pool"]["held"], 0, "{second}");
        assert_eq!(second["pool"]["expired"], 0, "{second}");
        let (_, all) = gw.admin(reqwest::Method::GET, "recon/discrepancies").await;
        assert_eq!(all["data"].as_array().unwrap().len(), 0, "{all}");

        // Settled for good: a re-run of the next day pairs the refund again, holds and
        // reports nothing, so nothing is left to expire into a false discrepancy.
        let again = reconcile(&gw, &next).await;
        assert_eq!(counts(&again), vec![], "{again}");
        assert_eq!(again["pool"]["held"], 0, "{again}");
        assert_eq!(again["pool"]["matched_across_days"], 1, "{again}");
        let channel = again["channel_id"].as_str().unwrap();
        let pool = gw.gw.state.store.recon_pool_held(channel).await.unwrap();
        assert!(pool.is_empty(), "{pool:?}");
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_item_never_matched_becomes_a_discrepancy_after_the_holding_period() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |c| c.recon.hold_days = 1).await;
        // The channel never books this payment, on no day.
        let lost = paid(&gw, 700).await;
        paid(&gw, 800).await;
        let day = day_of(&lost);
        sim_faults(&gw, json!({"bill": {"drop": [attempt_of(&lost)]}})).await;

        let first = reconcile(&gw, &day).await;
        assert_eq!(counts(&first), vec![], "held, not yet reported: {first}");
        assert_eq!(first["pool"]["held"], 1, "{first}");

        // One day later (hold_days 1) its time is up: a PLATFORM_ONLY discrepancy, once,
        // with paygate's side as evidence and nothing from the channel.
        sim_post(&gw, "clock/advance", json!({"seconds": 86_400})).await;
        let next = day_after(&day);
        let second = reconcile(&gw, &next).await;
        assert_eq!(
            counts(&second),
            vec![("PLATFORM_ONLY".to_string(), 1)],
            "{second}"
        );
        assert_eq!(second["pool"]["expired"], 1, "{second}");
        assert_eq!(second["pool"]["matched_across_days"], 0, "{second}");
        let (status, open) = gw
            .admin(
                reqwest::Method::GET,
                &format!("recon/discrepancies?bill_date={next}&state=OPEN"),
            )
            .await;
        assert_eq!(status, 200, "{open}");
        let open = open["data"].as_array().unwrap();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(open[0]["class"], "PLATFORM_ONLY");
        assert_eq!(open[0]["out_no"], attempt_of(&lost));
        assert_eq!(open[0]["paygate"]["amount_fen"], 700, "{open:?}");
        assert!(open[0]["channel"].is_null(), "{open:?}");

        // Expired once: the pool no longer holds it, so a re-run does not report it again.
        let again = reconcile(&gw, &next).await;
        assert_eq!(counts(&again), vec![], "{again}");
        assert_eq!(again["pool"]["expired"], 0, "{again}");
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_payment_paygate_never_heard_of_is_found_and_refunded() {
    use paygate_store::{AttemptChange, AttemptState, RefundKind, RefundState};
    for pg in backends() {
        // Only the reconciliation may find the duplicate payment, not the poller.
        let gw = start(pg.as_deref(), |c| {
            c.workers.poll_interval_ms = 3_600_000_000
        })
        .await;
        let state = &gw.gw.state;
        let no = out_no("dup");
        prepay(&gw, &no, 600).await;
        let tid = state
            .store
            .get_order(gw.mchid(), &no)
            .await
            .unwrap()
            .unwrap()
            .transaction_id;
        let first = state.store.attempts(&tid).await.unwrap().remove(0);
        // paygate believes the first attempt closed; the channel still has it open. The
        // merchant's retry makes a second attempt, which the payer pays.
        let closed = AttemptChange::to(
            &first.attempt_id,
            &[AttemptState::Prepaid],
            AttemptState::Closed,
            time::OffsetDateTime::now_utc(),
        );
        assert!(state.store.update_attempt(&closed).await.unwrap());
        prepay(&gw, &no, 600).await;
        gw.pay(&no).await;
        let t = gw.wait_state(&no, "SUCCESS").await;
        // The payer pays the first attempt too, and its notification is lost.
        sim_faults(&gw, json!({"notify": {"drop_rate_ppm": 1_000_000}})).await;
        let merchant = state.store.get_merchant(gw.mchid()).await.unwrap().unwrap();
        state
            .channel(&first.channel_id)
            .unwrap()
            .sandbox_pay(
                &first.attempt_id,
                &paygate_server::flow::sub_at(state, &merchant, &first.channel_id).unwrap(),
                true,
                None,
            )
            .await
            .unwrap();
        assert!(state.store.refunds_of(&tid).await.unwrap().is_empty());

        // The bill has the first attempt paid; paygate has it closed: a status mismatch, which
        // the run repairs by asking the channel, and the payment goes back to the payer.
        let run = reconcile(&gw, &day_of(&t)).await;
        assert_eq!(
            counts(&run),
            vec![("STATUS_MISMATCH".to_string(), 1)],
            "{run}"
        );
        assert_eq!(run["auto_resolved"], 1, "{run}");
        let attempts = state.store.attempts(&tid).await.unwrap();
        assert_eq!(attempts[0].state, AttemptState::Paid);
        let refunds = state.store.refunds_of(&tid).await.unwrap();
        assert_eq!(refunds.len(), 1, "{refunds:?}");
        assert_eq!(refunds[0].kind, RefundKind::Duplicate);
        assert_eq!(refunds[0].attempt_id, first.attempt_id);
        assert_eq!(refunds[0].amount_fen, 600);
        let (_, auto) = gw
            .admin(
                reqwest::Method::GET,
                &format!(
                    "recon/discrepancies?bill_date={}&state=AUTO_RESOLVED",
                    day_of(&t)
                ),
            )
            .await;
        assert_eq!(auto["data"][0]["kind"], "PAYMENT", "{auto}");
        assert!(
            auto["data"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("DUPLICATE_PAYMENT_REFUNDED"),
            "{auto}"
        );
        // The refund's own notification is lost too: the refund poller settles it.
        let refund_id = refunds[0].refund_id.clone();
        eventually(|| async {
            paygate_server::refunds::poll_once(state).await.unwrap();
            let r = state.store.get_refund_by_id(&refund_id).await.unwrap();
            r.filter(|r| r.state == RefundState::Success)
        })
        .await;
        assert_eq!(gw.query(&no).await.trade_state.as_str(), "SUCCESS");
        gw.finish().await;
    }
}
