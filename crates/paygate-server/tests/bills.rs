//! Merchant bills on the gateway over HTTP, as a merchant's V3 client sees them, on SQLite and
//! (when PAYGATE_TEST_DATABASE_URL is set) on PostgreSQL: pay and refund, close the day through
//! the sandbox, apply for the trade and fund-flow bills, download (plain and gzip), parse them
//! with the wxpay parser and check rows, summary and hash; the day cut at 00:00 Beijing; the
//! errors before a day is closed and for days out of range; bills frozen once made; another
//! merchant's bill and download never reachable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paygate_core::timefmt::{BEIJING, beijing_date, format_date};
use paygate_server::merchants;
use paygate_store::{AttemptRecord, OrderRecord, Store};
use paygate_wxpay::bill::{FundFlowBill, TradeBill, TradeBillType, gunzip, sha1_hex};
use paygate_wxpay::client::{ClientError, KeyMode, WxClient};
use paygate_wxpay::models::bills::BillResponse;
use paygate_wxpay::models::refunds::{Refund, RefundStatus};
use serde_json::{Value, json};
use time::{Date, OffsetDateTime};

mod common;

use common::*;

fn today() -> Date {
    beijing_date(OffsetDateTime::now_utc())
}

async fn apply(client: &WxClient, path_and_query: &str) -> Result<BillResponse, ClientError> {
    client.get_json(path_and_query).await
}

fn api_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected a V3 error, got {other:?}"),
    }
}

/// Applies and downloads; checks the hash of the uncompressed bytes, gunzipping when asked.
async fn fetch(client: &WxClient, path_and_query: &str, gzip: bool) -> (BillResponse, Vec<u8>) {
    let path = if gzip {
        format!("{path_and_query}&tar_type=GZIP")
    } else {
        path_and_query.to_string()
    };
    let answer = apply(client, &path).await.unwrap();
    assert_eq!(answer.hash_value.len(), 40);
    let body = client.download(&answer.download_url).await.unwrap();
    let bytes = if gzip {
        assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip body");
        gunzip(&body, 1 << 24).unwrap()
    } else {
        body
    };
    assert_eq!(
        sha1_hex(&bytes),
        answer.hash_value,
        "hash_value = SHA1 of the file"
    );
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF", "UTF-8 BOM");
    assert!(bytes.ends_with(b"\r\n"), "CRLF, last line included");
    (answer, bytes)
}

impl Gw {
    async fn paid_order(&self, no: &str, total: i64) -> String {
        let body = json!({"appid": self.kit.merchant.appid, "mchid": self.mchid(),
            "description": "账单, 测试", "attach": "a,b", "out_trade_no": no,
            "notify_url": "http://127.0.0.1:9/notify",
            "scene_info": {"payer_client_ip": "127.0.0.1", "device_id": "POS-7"},
            "amount": {"total": total, "currency": "CNY"}});
        let _: Value = self
            .client
            .post_json("/v3/pay/transactions/native", &body)
            .await
            .unwrap();
        self.pay(no).await;
        self.wait_state(no, "SUCCESS").await.transaction_id.unwrap()
    }

    async fn refunded(
        &self,
        transaction_id: &str,
        out_refund_no: &str,
        amount: i64,
        total: i64,
    ) -> Refund {
        let body = json!({"transaction_id": transaction_id, "out_refund_no": out_refund_no,
            "reason": "不想要了", "amount": {"refund": amount, "total": total, "currency": "CNY"}});
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
            (r.status == RefundStatus::Success).then_some(r)
        })
        .await
    }

    async fn close_day(&self, date: Date) -> Value {
        let resp = self
            .http
            .post(format!("{}sandbox/v1/bills/close-day", self.gw.base_url))
            .json(&json!({"bill_date": format_date(date)}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// A second merchant of the same gateway, with its own client.
    async fn other_merchant(&self) -> (String, WxClient) {
        let channel = self
            .gw
            .state
            .channel(&self.gw.state.default_channel)
            .unwrap();
        let mapping = paygate_server::channel_mapping(channel.config(), None, None).unwrap();
        let onboarded = merchants::onboard(
            self.gw.state.store.as_ref(),
            &self.gw.state.keys,
            &self.gw.base_url,
            merchants::NewMerchant {
                name: "other shop".into(),
                cert_pem: None,
                mapping,
            },
        )
        .await
        .unwrap();
        let client = WxClient::from_kit(&onboarded.kit, KeyMode::PublicKey, 10_000).unwrap();
        (onboarded.kit.merchant.mchid, client)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trade_and_fund_flow_bills_of_a_closed_day_list_the_merchants_payments_and_refunds() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let (a, b) = (out_no("billA"), out_no("billB"));
        let tx_a = gw.paid_order(&a, 1234).await;
        let tx_b = gw.paid_order(&b, 500).await;
        let refund_no = out_no("rfA");
        let refund = gw.refunded(&tx_a, &refund_no, 300, 1234).await;
        let day = today();
        let trade_all = format!("/v3/bill/tradebill?bill_date={}", format_date(day));

        // Not closed yet: WeChat's "still being generated".
        assert_eq!(
            api_code(apply(&gw.client, &trade_all).await),
            (400, "STATEMENT_CREATING".into())
        );
        assert_eq!(gw.close_day(day).await["newly_closed"], true);
        assert_eq!(
            gw.close_day(day).await["newly_closed"],
            false,
            "closing twice is one close"
        );

        let (answer, bytes) = fetch(&gw.client, &trade_all, false).await;
        let bill = TradeBill::parse(&bytes).unwrap();
        bill.verify_summary().unwrap();
        assert_eq!(bill.bill_type, TradeBillType::All);
        assert_eq!(
            bill.rows.len(),
            3,
            "two payments and a refund: {:?}",
            bill.rows
        );
        let pay_a = bill
            .rows
            .iter()
            .find(|r| r.out_trade_no == a && r.trade_state == "SUCCESS")
            .unwrap();
        assert_eq!(pay_a.transaction_id, tx_a, "paygate's own transaction id");
        assert_eq!(pay_a.mchid, gw.mchid());
        assert_eq!(pay_a.appid, gw.kit.merchant.appid);
        assert_eq!(pay_a.sub_mchid, "0", "a direct merchant");
        assert_eq!(pay_a.device_id, "POS-7");
        assert_eq!(pay_a.trade_type, "NATIVE");
        assert_eq!(
            (pay_a.settlement_total_fen, pay_a.order_total_fen),
            (1234, 1234)
        );
        assert_eq!(
            (pay_a.refund_id.as_str(), pay_a.out_refund_no.as_str()),
            ("0", "0")
        );
        assert_eq!(pay_a.goods_name, "账单, 测试", "a comma in text survives");
        assert_eq!(pay_a.attach, "a,b");
        // The fee snapshotted on the order: 0.60% of 12.34 yuan, rounded half-up to the fen.
        assert_eq!(
            (pay_a.fee_milli_fen, pay_a.fee_rate.as_str()),
            (7_000, "0.60%")
        );
        let refund_row = bill
            .rows
            .iter()
            .find(|r| r.trade_state == "REFUND")
            .unwrap();
        assert_eq!(refund_row.out_trade_no, a);
        assert_eq!(refund_row.transaction_id, tx_a);
        assert_eq!(
            refund_row.refund_id, refund.refund_id,
            "paygate's own refund id"
        );
        assert_eq!(refund_row.out_refund_no, refund_no);
        assert_eq!(
            (refund_row.refund_fen, refund_row.refund_request_fen),
            (300, 300)
        );
        // The fee given back with the refund: floor(7 × 300 / 1234) = 1 fen, shown negative.
        assert_eq!(refund_row.fee_milli_fen, -1_000);
        assert_eq!(refund_row.settlement_total_fen, 0);
        assert_eq!(
            (
                refund_row.refund_type.as_str(),
                refund_row.refund_status.as_str()
            ),
            ("ORIGINAL", "SUCCESS")
        );
        assert!(
            bill.rows
                .iter()
                .any(|r| r.transaction_id == tx_b && r.settlement_total_fen == 500)
        );
        assert!(
            bill.rows
                .windows(2)
                .all(|w| w[0].trade_time <= w[1].trade_time),
            "rows in time order"
        );
        assert_eq!(bill.summary.trade_count, 3);
        assert_eq!(bill.summary.settlement_total_fen, 1734);
        assert_eq!(bill.summary.refund_fen, 300);
        assert_eq!(bill.summary.order_total_fen, 1734);
        assert_eq!(bill.summary.fee_milli_fen, (7 + 3 - 1) * 1_000);

        // gzip: the same file compressed, the same hash; again: the same bytes.
        let (gz_answer, gz_bytes) = fetch(&gw.client, &trade_all, true).await;
        assert!(gz_answer.download_url.ends_with("&tartype=gzip"));
        assert_eq!(gz_answer.hash_value, answer.hash_value);
        assert_eq!(gz_bytes, bytes);
        assert!(
            answer
                .download_url
                .starts_with(&format!("{}v3/billdownload/file?token=", gw.gw.base_url))
        );

        // SUCCESS: payments only; REFUND: refunds only, with their request time.
        let (_, bytes) = fetch(&gw.client, &format!("{trade_all}&bill_type=SUCCESS"), false).await;
        let success = TradeBill::parse(&bytes).unwrap();
        assert_eq!(success.bill_type, TradeBillType::Success);
        assert_eq!(success.rows.len(), 2);
        assert!(success.rows.iter().all(|r| r.trade_state == "SUCCESS"));
        let (_, bytes) = fetch(&gw.client, &format!("{trade_all}&bill_type=REFUND"), false).await;
        let refunds = TradeBill::parse(&bytes).unwrap();
        assert_eq!(refunds.bill_type, TradeBillType::Refund);
        assert_eq!(refunds.rows.len(), 1);
        assert_eq!(
            refunds.rows[0].trade_time, pay_a.trade_time,
            "REFUND bills date the payment"
        );
        assert!(!refunds.rows[0].refund_apply_time.is_empty());
        assert!(!refunds.rows[0].refund_success_time.is_empty());

        // Fund flow: two incomes, one expense, a running balance from zero.
        let flow_path = format!("/v3/bill/fundflowbill?bill_date={}", format_date(day));
        for gzip in [false, true] {
            let (_, bytes) = fetch(&gw.client, &flow_path, gzip).await;
            let flow = FundFlowBill::parse(&bytes).unwrap();
            flow.verify_summary().unwrap();
            // Payment, its fee; payment, its fee; refund, the fee share given back.
            assert_eq!(flow.rows.len(), 6);
            assert_eq!(
                (flow.summary.income_count, flow.summary.income_fen),
                (3, 1234 + 500 + 1)
            );
            assert_eq!(
                (flow.summary.expense_count, flow.summary.expense_fen),
                (3, 7 + 3 + 300)
            );
            let mut balance = 0;
            for r in &flow.rows {
                balance += if r.direction == "收入" {
                    r.amount_fen
                } else {
                    -r.amount_fen
                };
                assert_eq!(r.balance_fen, balance, "a running balance from zero: {r:?}");
            }
            assert_eq!(balance, 1234 + 500 - 7 - 3 - 300 + 1);
            let refund_flow = flow.rows.iter().find(|r| r.biz_name == "退款").unwrap();
            assert_eq!(
                (refund_flow.transaction_id.as_str(), refund_flow.amount_fen),
                (refund.refund_id.as_str(), 300)
            );
        }

        // Bills paygate never has, and the types WeChat answers with NO_STATEMENT_EXIST.
        for q in ["bill_type=ALL_SPECIAL", "bill_type=RECHARGE_REFUND"] {
            assert_eq!(
                api_code(apply(&gw.client, &format!("{trade_all}&{q}")).await),
                (400, "NO_STATEMENT_EXIST".into()),
                "{q}"
            );
        }
        assert_eq!(
            api_code(apply(&gw.client, &format!("{flow_path}&account_type=OPERATION")).await),
            (400, "NO_STATEMENT_EXIST".into())
        );
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bill_is_made_once_and_later_payments_do_not_change_it() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        gw.paid_order(&out_no("frozen"), 100).await;
        let day = today();
        gw.close_day(day).await;
        let path = format!("/v3/bill/tradebill?bill_date={}", format_date(day));
        let (first, first_bytes) = fetch(&gw.client, &path, false).await;
        let late = out_no("late");
        gw.paid_order(&late, 200).await;
        let (again, again_bytes) = fetch(&gw.client, &path, false).await;
        assert_eq!(again.hash_value, first.hash_value);
        assert_eq!(again_bytes, first_bytes, "byte-identical downloads");
        assert_ne!(
            again.download_url, first.download_url,
            "a fresh token each time"
        );
        let text = String::from_utf8(again_bytes).unwrap();
        assert!(
            !text.contains(&late),
            "a payment after the close is not in the closed bill"
        );
        // The file is answered unsigned, as WeChat does (§4.10), as plain text or gzip.
        let target = first
            .download_url
            .strip_prefix(gw.gw.base_url.trim_end_matches('/'))
            .unwrap();
        let raw = gw.client.send_unverified("GET", target, b"").await.unwrap();
        assert_eq!(raw.status, 200);
        assert!(
            raw.header("Wechatpay-Signature").is_none(),
            "no signature headers"
        );
        assert_eq!(
            raw.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        let gz = apply(&gw.client, &format!("{path}&tar_type=GZIP"))
            .await
            .unwrap();
        let target = gz
            .download_url
            .strip_prefix(gw.gw.base_url.trim_end_matches('/'))
            .unwrap();
        let raw = gw.client.send_unverified("GET", target, b"").await.unwrap();
        assert_eq!(raw.header("Content-Type"), Some("application/x-gzip"));
        assert!(raw.header("Wechatpay-Signature").is_none());
        // Both URLs work until they expire; an unknown token is refused like an expired one.
        assert_eq!(
            gw.client.download(&first.download_url).await.unwrap(),
            text.as_bytes()
        );
        let unknown = format!("{}v3/billdownload/file?token=nope", gw.gw.base_url);
        assert_eq!(
            api_code(gw.client.download(&unknown).await),
            (400, "INVALID_REQUEST".into())
        );
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bill_dates_out_of_range_and_bad_queries_get_wechats_errors() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let day = today();
        let bill = |d: Date| format!("/v3/bill/tradebill?bill_date={}", format_date(d));
        let tomorrow = day.next_day().unwrap();
        assert_eq!(
            api_code(apply(&gw.client, &bill(tomorrow)).await),
            (400, "PARAM_ERROR".into())
        );
        let long_ago = day - time::Duration::days(100);
        assert_eq!(
            api_code(apply(&gw.client, &bill(long_ago)).await),
            (400, "INVALID_REQUEST".into())
        );
        for q in [
            "bill_date=2026-1-01",
            "bill_type=ALL",
            "bill_date=2026-01-01&bill_type=SOME",
        ] {
            assert_eq!(
                api_code(apply(&gw.client, &format!("/v3/bill/tradebill?{q}")).await),
                (400, "PARAM_ERROR".into()),
                "{q}"
            );
        }
        // A closed day without any trade of the merchant.
        gw.close_day(day).await;
        assert_eq!(
            api_code(apply(&gw.client, &bill(day)).await),
            (400, "NO_STATEMENT_EXIST".into())
        );
        assert_eq!(
            api_code(apply(&gw.client, &format!("{}&sub_mchid=1900000110", bill(day))).await),
            (403, "NO_AUTH".into())
        );
        // Unsigned: refused like any V3 call.
        let resp = gw
            .http
            .get(format!(
                "{}v3/bill/tradebill?bill_date={}",
                gw.gw.base_url,
                format_date(day)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        gw.finish().await;
    }
}

/// An order already paid at `success_time`, written straight into the store (a test cannot
/// make the channel pay at a chosen instant). Built from JSON so fields added to the records
/// later keep their defaults.
async fn paid_at(
    store: &dyn Store,
    mchid: &str,
    appid: &str,
    no: &str,
    total: i64,
    success_time: OffsetDateTime,
) -> String {
    let tx = paygate_core::ids::transaction_id(success_time);
    let t = time::format_description::well_known::Rfc3339;
    let at = success_time.format(&t).unwrap();
    let order: OrderRecord = serde_json::from_value(json!({
        "transaction_id": tx, "mchid": mchid, "out_trade_no": no, "appid": appid,
        "trade_type": "NATIVE", "state": "SUCCESS", "description": "边界", "attach": null,
        "notify_url": "http://127.0.0.1:9/n", "total_fen": total, "currency": "CNY",
        "payer_openid": "o-boundary", "time_expire": at, "fingerprint": no, "request_json": "{}",
        "created_at": at, "updated_at": at, "success_time": at, "bank_type": "OTHERS", "version": 1
    }))
    .unwrap();
    let attempt: AttemptRecord = serde_json::from_value(json!({
        "attempt_id": format!("{tx}-1"), "transaction_id": tx, "seq": 1, "channel_id": "sandbox",
        "state": "PAID", "prepay_id": null, "code_url": null, "h5_url": null,
        "prepay_expires_at": null, "channel_transaction_id": null, "error_code": null,
        "error_message": null, "decision": null, "created_at": at, "updated_at": at,
        "last_polled_at": null
    }))
    .unwrap();
    assert_eq!(
        store.create_order(&order, &attempt).await.unwrap(),
        paygate_store::CreateOrder::Created
    );
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_business_day_ends_at_midnight_beijing() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let store = gw.gw.state.store.as_ref();
        let day = today() - time::Duration::days(3);
        let next = day.next_day().unwrap();
        let midnight = next.midnight().assume_offset(BEIJING);
        let (appid, mchid) = (gw.kit.merchant.appid.clone(), gw.mchid().to_string());
        let last_ms = paid_at(
            store,
            &mchid,
            &appid,
            "edge-2359",
            101,
            midnight - time::Duration::milliseconds(1),
        )
        .await;
        let first_ms = paid_at(store, &mchid, &appid, "edge-0000", 202, midnight).await;
        for d in [day, next] {
            gw.close_day(d).await;
        }
        let rows = |d: Date| {
            let client = &gw.client;
            async move {
                let (_, bytes) = fetch(
                    client,
                    &format!("/v3/bill/tradebill?bill_date={}", format_date(d)),
                    false,
                )
                .await;
                TradeBill::parse(&bytes).unwrap().rows
            }
        };
        let before = rows(day).await;
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].transaction_id, last_ms);
        assert_eq!(
            before[0].trade_time,
            format!("{} 23:59:59", format_date(day))
        );
        let after = rows(next).await;
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].transaction_id, first_ms);
        assert_eq!(
            after[0].trade_time,
            format!("{} 00:00:00", format_date(next))
        );
        // The fund flow of the second day opens with the first day's balance.
        let (_, bytes) = fetch(
            &gw.client,
            &format!("/v3/bill/fundflowbill?bill_date={}", format_date(next)),
            false,
        )
        .await;
        let flow = FundFlowBill::parse(&bytes).unwrap();
        assert_eq!(flow.rows.len(), 1);
        assert_eq!(flow.rows[0].balance_fen, 101 + 202);
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_merchants_bill_and_download_are_never_reachable() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let (other_mchid, other) = gw.other_merchant().await;
        let mine = out_no("mine");
        gw.paid_order(&mine, 300).await;
        let day = today();
        gw.close_day(day).await;
        let path = format!("/v3/bill/tradebill?bill_date={}", format_date(day));
        // The other merchant had no trade that day: nothing, not our bill.
        assert_eq!(
            api_code(apply(&other, &path).await),
            (400, "NO_STATEMENT_EXIST".into())
        );
        let (answer, bytes) = fetch(&gw.client, &path, false).await;
        // Our download URL, signed by the other merchant: refused.
        assert_eq!(
            api_code(other.download(&answer.download_url).await),
            (403, "NO_AUTH".into())
        );
        let rows = TradeBill::parse(&bytes).unwrap().rows;
        assert!(
            rows.iter()
                .all(|r| r.mchid == gw.mchid() && r.out_trade_no == mine)
        );
        assert!(!String::from_utf8(bytes).unwrap().contains(&other_mchid));
        gw.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_job_closes_yesterday_and_the_missed_days_before_it() {
    for pg in backends() {
        // Due at 00:00 Beijing: whenever the test runs, yesterday is due.
        let gw = start(pg.as_deref(), |c| {
            c.bills.close_after = "00:00".into();
            c.bills.catch_up_days = 2;
            c.bills.check_interval_s = 1;
        })
        .await;
        let store = gw.gw.state.store.as_ref();
        let yesterday = today().previous_day().unwrap();
        let due: Vec<Date> = (0..3)
            .map(|n| yesterday - time::Duration::days(n))
            .collect();
        for d in &due {
            let closed =
                eventually(|| async { store.bill_day(&format_date(*d)).await.unwrap() }).await;
            assert_eq!(closed.closed_by, "schedule", "{d}");
        }
        let older = yesterday - time::Duration::days(3);
        assert!(
            store.bill_day(&format_date(older)).await.unwrap().is_none(),
            "beyond catch_up_days"
        );
        assert!(
            store
                .bill_day(&format_date(today()))
                .await
                .unwrap()
                .is_none(),
            "today is not over"
        );
        // Yesterday is closed and the merchant had no trade: WeChat's "no statement".
        let path = format!("/v3/bill/tradebill?bill_date={}", format_date(yesterday));
        assert_eq!(
            api_code(apply(&gw.client, &path).await),
            (400, "NO_STATEMENT_EXIST".into())
        );
        gw.finish().await;
    }
}
