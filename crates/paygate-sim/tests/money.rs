//! Refunds, profit sharing and bills against the simulator, direct and partner.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;

use common::*;
use paygate_wxpay::bill::{FundFlowBill, TradeBill, gunzip, sha1_hex};
use paygate_wxpay::models::profitsharing::{OrdersEntity, ReturnOrdersEntity};
use paygate_wxpay::models::refunds::{Refund, RefundNotifyPayload};
use paygate_wxpay::notify::Notification;
use serde_json::{Value, json};

async fn paid_direct_order(
    sim: &Sim,
    total: i64,
    notify_url: &str,
    profit_sharing: bool,
) -> (String, String) {
    let m = &sim.sim.direct.merchant;
    let no = out_no("R");
    let body = json!({
        "appid": m.appid, "mchid": m.mchid, "description": "refund me", "out_trade_no": no,
        "notify_url": notify_url, "amount": {"total": total},
        "settle_info": {"profit_sharing": profit_sharing}
    });
    let _: Value = sim
        .direct()
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    let paid = sim.pay_direct(&no).await;
    (no, paid["transaction_id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn partial_refunds_up_to_the_paid_amount_then_success_and_notification() {
    let sim = start_sim().await;
    let rx = start_receiver().await;
    let client = sim.direct();
    let (no, tid) = paid_direct_order(&sim, 100, &rx.url, false).await;
    rx.wait_for(1).await; // the payment notification

    let refund = |out_refund_no: &str, amount: i64| {
        json!({"out_trade_no": no, "out_refund_no": out_refund_no, "reason": "缺货",
               "amount": {"refund": amount, "total": 100, "currency": "CNY"}})
    };
    let r1: Refund = client
        .post_json("/v3/refund/domestic/refunds", &refund("RF1", 60))
        .await
        .unwrap();
    assert_eq!(r1.status.as_str(), "PROCESSING");
    assert_eq!(r1.transaction_id, tid);
    // Same out_refund_no again: the same refund, not a second one.
    let again: Refund = client
        .post_json("/v3/refund/domestic/refunds", &refund("RF1", 60))
        .await
        .unwrap();
    assert_eq!(again.refund_id, r1.refund_id);
    // 60 + 50 > 100: refused; 60 + 40 fits exactly.
    let err = client
        .post_json::<_, Refund>("/v3/refund/domestic/refunds", &refund("RF2", 50))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("NOT_ENOUGH"));
    let by_tid = json!({"transaction_id": tid, "out_refund_no": "RF3",
                        "amount": {"refund": 40, "total": 100, "currency": "CNY"}});
    let r3: Refund = client
        .post_json("/v3/refund/domestic/refunds", &by_tid)
        .await
        .unwrap();
    assert_eq!(r3.amount.refund, 40);
    let err = client
        .post_json::<_, Refund>("/v3/refund/domestic/refunds", &refund("RF4", 1))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("NOT_ENOUGH"));

    let done = eventually(|| async {
        let r: Refund = client
            .get_json("/v3/refund/domestic/refunds/RF1")
            .await
            .unwrap();
        (r.status.as_str() == "SUCCESS").then_some(r)
    })
    .await;
    assert!(done.success_time.is_some());

    // Payment + two refund notifications, the refund ones with refund_status.
    let got = rx.wait_for(3).await;
    let mut statuses = Vec::new();
    for n in &got[1..] {
        let env: Notification = serde_json::from_slice(&n.body).unwrap();
        assert_eq!(env.event_type, "REFUND.SUCCESS");
        assert_eq!(env.resource.original_type, "refund");
        let p: RefundNotifyPayload = serde_json::from_slice(
            &env.open(sim.sim.direct.merchant.apiv3_key.as_bytes())
                .unwrap(),
        )
        .unwrap();
        statuses.push((p.out_refund_no, p.refund_status.as_str().to_string()));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            ("RF1".into(), "SUCCESS".into()),
            ("RF3".into(), "SUCCESS".into())
        ]
    );

    let q: paygate_wxpay::models::payments::Transaction = client
        .get_json(&format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={}",
            sim.sim.direct.merchant.mchid
        ))
        .await
        .unwrap();
    assert_eq!(q.trade_state.as_str(), "REFUND");
    let err = client
        .get_json::<Refund>("/v3/refund/domestic/refunds/NOPE")
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("RESOURCE_NOT_EXISTS"));
}

#[tokio::test]
async fn refunds_of_unpaid_orders_and_wrong_totals_are_refused() {
    let sim = start_sim().await;
    let client = sim.direct();
    let m = &sim.sim.direct.merchant;
    let no = out_no("U");
    let body = json!({"appid": m.appid, "mchid": m.mchid, "description": "d", "out_trade_no": no,
                      "notify_url": "https://e.com/n", "amount": {"total": 10}});
    let _: Value = client
        .post_json("/v3/pay/transactions/native", &body)
        .await
        .unwrap();
    let refund = json!({"out_trade_no": no, "out_refund_no": "U1", "amount": {"refund": 1, "total": 10, "currency": "CNY"}});
    let err = client
        .post_json::<_, Refund>("/v3/refund/domestic/refunds", &refund)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("RESOURCE_NOT_EXISTS"));
    sim.pay_direct(&no).await;
    let wrong_total = json!({"out_trade_no": no, "out_refund_no": "U2", "amount": {"refund": 1, "total": 11, "currency": "CNY"}});
    let err = client
        .post_json::<_, Refund>("/v3/refund/domestic/refunds", &wrong_total)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("INVALID_REQUEST"));
}

#[tokio::test]
async fn abnormal_refunds_can_be_reapplied() {
    let sim = start_sim().await;
    let client = sim.direct();
    let mchid = sim.sim.direct.merchant.mchid.clone();
    assert_eq!(
        sim.sandbox_put(
            &format!("faults/{mchid}"),
            json!({"refund_abnormal_rate_ppm": 1_000_000})
        )
        .await,
        200
    );
    let (no, _) = paid_direct_order(&sim, 10, "https://e.com/n", false).await;
    let body = json!({"out_trade_no": no, "out_refund_no": "AB1", "amount": {"refund": 10, "total": 10, "currency": "CNY"}});
    let r: Refund = client
        .post_json("/v3/refund/domestic/refunds", &body)
        .await
        .unwrap();
    let abnormal = eventually(|| async {
        let q: Refund = client
            .get_json("/v3/refund/domestic/refunds/AB1")
            .await
            .unwrap();
        (q.status.as_str() == "ABNORMAL").then_some(q)
    })
    .await;
    assert_eq!(abnormal.refund_id, r.refund_id);
    let apply = json!({"out_refund_no": "AB1", "type": "MERCHANT_BANK_CARD"});
    let re: Refund = client
        .post_json(
            &format!(
                "/v3/refund/domestic/refunds/{}/apply-abnormal-refund",
                r.refund_id
            ),
            &apply,
        )
        .await
        .unwrap();
    assert_eq!(re.status.as_str(), "PROCESSING");
    eventually(|| async {
        let q: Refund = client
            .get_json("/v3/refund/domestic/refunds/AB1")
            .await
            .unwrap();
        (q.status.as_str() == "SUCCESS").then_some(())
    })
    .await;
}

#[tokio::test]
async fn partner_refund_needs_its_sub_merchant() {
    let sim = start_sim().await;
    let client = sim.partner();
    let m = sim.sim.partner.merchant.clone();
    let no = out_no("PR");
    let body = json!({"sp_appid": m.sp_appid, "sp_mchid": m.sp_mchid, "sub_mchid": m.sub_mchid,
                      "description": "d", "out_trade_no": no, "notify_url": "https://e.com/n", "amount": {"total": 50}});
    let _: Value = client
        .post_json("/v3/pay/partner/transactions/native", &body)
        .await
        .unwrap();
    sim.pay_partner(&no).await;
    let without_sub = json!({"out_trade_no": no, "out_refund_no": "PR1", "amount": {"refund": 5, "total": 50, "currency": "CNY"}});
    let err = client
        .post_json::<_, Refund>("/v3/refund/domestic/refunds", &without_sub)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("PARAM_ERROR"));
    let with_sub = json!({"sub_mchid": m.sub_mchid, "out_trade_no": no, "out_refund_no": "PR1",
                          "amount": {"refund": 5, "total": 50, "currency": "CNY"}});
    let r: Refund = client
        .post_json("/v3/refund/domestic/refunds", &with_sub)
        .await
        .unwrap();
    assert_eq!(r.amount.refund, 5);
    let q: Refund = client
        .get_json(&format!(
            "/v3/refund/domestic/refunds/PR1?sub_mchid={}",
            m.sub_mchid.as_deref().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(q.refund_id, r.refund_id);
}

#[tokio::test]
async fn profit_sharing_rounds_unfreeze_and_return() {
    let sim = start_sim().await;
    let client = sim.direct();
    let m = sim.sim.direct.merchant.clone();
    let (_, tid) = paid_direct_order(&sim, 1000, "https://e.com/n", true).await;
    let receiver = "1900000109";
    let add = json!({"appid": m.appid, "type": "MERCHANT_ID", "account": receiver, "name": "示例商户",
                     "relation_type": "STORE"});
    let added: Value = client
        .post_json("/v3/profitsharing/receivers/add", &add)
        .await
        .unwrap();
    assert_eq!(added["account"], receiver);

    let order = |out_order_no: &str, amount: i64| {
        json!({"appid": m.appid, "transaction_id": tid, "out_order_no": out_order_no,
               "receivers": [{"type": "MERCHANT_ID", "account": receiver, "amount": amount, "description": "分给商户"}],
               "unfreeze_unsplit": false})
    };
    let first: OrdersEntity = client
        .post_json("/v3/profitsharing/orders", &order("PS1", 100))
        .await
        .unwrap();
    assert_eq!(first.receivers[0].amount, 100);
    // Same out_order_no again: the same order.
    let again: OrdersEntity = client
        .post_json("/v3/profitsharing/orders", &order("PS1", 100))
        .await
        .unwrap();
    assert_eq!(again.order_id, first.order_id);
    // A second round; 30% is the direct merchant's limit: 100 + 150 + 100 > 300.
    let _: OrdersEntity = client
        .post_json("/v3/profitsharing/orders", &order("PS2", 150))
        .await
        .unwrap();
    let err = client
        .post_json::<_, OrdersEntity>("/v3/profitsharing/orders", &order("PS3", 100))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("INVALID_REQUEST"));

    let finished = eventually(|| async {
        let q: OrdersEntity = client
            .get_json(&format!(
                "/v3/profitsharing/orders/PS1?transaction_id={tid}"
            ))
            .await
            .unwrap();
        (serde_json::to_value(q.state).unwrap() == "FINISHED").then_some(q)
    })
    .await;
    assert_eq!(
        serde_json::to_value(finished.receivers[0].result).unwrap(),
        "SUCCESS"
    );

    let amounts: Value = client
        .get_json(&format!("/v3/profitsharing/transactions/{tid}/amounts"))
        .await
        .unwrap();
    assert_eq!(amounts["unsplit_amount"], 750);

    let ret = json!({"out_order_no": "PS1", "out_return_no": "RET1", "return_mchid": receiver,
                     "amount": 40, "description": "回退"});
    let r: ReturnOrdersEntity = client
        .post_json("/v3/profitsharing/return-orders", &ret)
        .await
        .unwrap();
    assert_eq!(r.amount, 40);
    let too_much = json!({"out_order_no": "PS1", "out_return_no": "RET2", "return_mchid": receiver,
                          "amount": 61, "description": "回退"});
    let err = client
        .post_json::<_, ReturnOrdersEntity>("/v3/profitsharing/return-orders", &too_much)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("NOT_ENOUGH"));
    eventually(|| async {
        let q: ReturnOrdersEntity = client
            .get_json("/v3/profitsharing/return-orders/RET1?out_order_no=PS1")
            .await
            .unwrap();
        (serde_json::to_value(q.result).unwrap() == "SUCCESS").then_some(())
    })
    .await;

    let unfreeze =
        json!({"transaction_id": tid, "out_order_no": "UF1", "description": "解冻全部剩余资金"});
    let u: OrdersEntity = client
        .post_json("/v3/profitsharing/orders/unfreeze", &unfreeze)
        .await
        .unwrap();
    assert_eq!(u.receivers[0].amount, 750);
    let amounts: Value = client
        .get_json(&format!("/v3/profitsharing/transactions/{tid}/amounts"))
        .await
        .unwrap();
    assert_eq!(amounts["unsplit_amount"], 0);

    let del = json!({"appid": m.appid, "type": "MERCHANT_ID", "account": receiver});
    let _: Value = client
        .post_json("/v3/profitsharing/receivers/delete", &del)
        .await
        .unwrap();
}

#[tokio::test]
async fn profit_sharing_needs_the_flag_and_partner_has_a_ratio() {
    let sim = start_sim().await;
    let client = sim.direct();
    let m = sim.sim.direct.merchant.clone();
    let (_, tid) = paid_direct_order(&sim, 100, "https://e.com/n", false).await;
    let order = json!({"appid": m.appid, "transaction_id": tid, "out_order_no": "NF1",
        "receivers": [{"type": "MERCHANT_ID", "account": "1900000109", "amount": 1, "description": "d"}],
        "unfreeze_unsplit": true});
    let err = client
        .post_json::<_, OrdersEntity>("/v3/profitsharing/orders", &order)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("INVALID_REQUEST"));

    let p = sim.partner();
    let sub = sim.sim.partner.merchant.sub_mchid.clone().unwrap();
    let cfg: Value = p
        .get_json(&format!("/v3/profitsharing/merchant-configs/{sub}"))
        .await
        .unwrap();
    assert_eq!(cfg["max_ratio"], 2000);
}

#[tokio::test]
async fn bills_are_hashed_gzipped_and_match_the_day() {
    let sim = start_sim().await;
    let client = sim.direct();
    let (no, tid) = paid_direct_order(&sim, 1234, "https://e.com/n", false).await;
    let refund = json!({"out_trade_no": no, "out_refund_no": "B1", "amount": {"refund": 234, "total": 1234, "currency": "CNY"}});
    let _: Refund = client
        .post_json("/v3/refund/domestic/refunds", &refund)
        .await
        .unwrap();
    let today = paygate_core::timefmt::format_date(paygate_core::timefmt::beijing_date(
        time::OffsetDateTime::now_utc(),
    ));

    let err = client
        .get_json::<Value>(&format!("/v3/bill/tradebill?bill_date={today}"))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("STATEMENT_CREATING"));
    let (status, _) = sim
        .sandbox("bills/close-day", json!({"bill_date": today}))
        .await;
    assert_eq!(status, 200);

    for tar in ["", "&tar_type=GZIP"] {
        let applied: Value = client
            .get_json(&format!(
                "/v3/bill/tradebill?bill_date={today}&bill_type=ALL{tar}"
            ))
            .await
            .unwrap();
        assert_eq!(applied["hash_type"], "SHA1");
        let url = applied["download_url"].as_str().unwrap();
        assert!(
            url.starts_with(&sim.sim.base_url),
            "download_url on the simulator's own base"
        );
        let raw = client.download(url).await.unwrap();
        let csv = if tar.is_empty() {
            raw
        } else {
            gunzip(&raw, 1 << 20).unwrap()
        };
        assert_eq!(sha1_hex(&csv), applied["hash_value"].as_str().unwrap());
        assert!(csv.starts_with(b"\xEF\xBB\xBF"));
        let bill = TradeBill::parse(&csv).unwrap();
        assert_eq!(bill.rows.len(), 2);
        assert!(bill.rows.iter().all(|r| r.transaction_id == tid));
        assert_eq!(bill.summary.settlement_total_fen, 1234);
        assert_eq!(bill.summary.refund_fen, 234);
    }

    let flow: Value = client
        .get_json(&format!("/v3/bill/fundflowbill?bill_date={today}"))
        .await
        .unwrap();
    let csv = client
        .download(flow["download_url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(sha1_hex(&csv), flow["hash_value"].as_str().unwrap());
    let flow = FundFlowBill::parse(&csv).unwrap();
    // Income 12.34, fee 0.07 (0.60%), refund 2.34.
    assert_eq!(flow.summary.income_fen, 1234);
    assert_eq!(flow.summary.expense_fen, 7 + 234);
    assert_eq!(flow.rows.last().unwrap().balance_fen, 1234 - 7 - 234);

    // A day with no trades, a future day, and someone else's download URL.
    let err = client
        .get_json::<Value>("/v3/bill/tradebill?bill_date=2099-01-01")
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("PARAM_ERROR"));
    let yesterday = paygate_core::timefmt::format_date(paygate_core::timefmt::beijing_date(
        time::OffsetDateTime::now_utc() - time::Duration::days(1),
    ));
    let err = client
        .get_json::<Value>(&format!("/v3/bill/tradebill?bill_date={yesterday}"))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("NO_STATEMENT_EXIST"));
    let applied: Value = client
        .get_json(&format!("/v3/bill/tradebill?bill_date={today}"))
        .await
        .unwrap();
    let err = sim
        .partner()
        .download(applied["download_url"].as_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("NO_AUTH"));
}

#[tokio::test]
async fn partner_profit_sharing_and_bills_are_scoped_to_the_sub_merchant() {
    let sim = start_sim().await;
    let client = sim.partner();
    let m = sim.sim.partner.merchant.clone();
    let sub = m.sub_mchid.clone().unwrap();
    let no = out_no("PP");
    let body = json!({"sp_appid": m.sp_appid, "sp_mchid": m.sp_mchid, "sub_mchid": sub,
                      "description": "partner share", "out_trade_no": no, "notify_url": "https://e.com/n",
                      "amount": {"total": 1000}, "settle_info": {"profit_sharing": true}});
    let _: Value = client
        .post_json("/v3/pay/partner/transactions/native", &body)
        .await
        .unwrap();
    let tid = sim.pay_partner(&no).await["transaction_id"]
        .as_str()
        .unwrap()
        .to_string();

    let add = json!({"sub_mchid": sub, "appid": m.sp_appid, "type": "MERCHANT_ID", "account": m.sp_mchid,
                     "name": "服务商", "relation_type": "SERVICE_PROVIDER"});
    let _: Value = client
        .post_json("/v3/profitsharing/receivers/add", &add)
        .await
        .unwrap();
    let order = |out: &str, amount: i64| {
        json!({"sub_mchid": sub, "appid": m.sp_appid, "transaction_id": tid,
        "out_order_no": out, "unfreeze_unsplit": true,
        "receivers": [{"type": "MERCHANT_ID", "account": m.sp_mchid, "amount": amount, "description": "服务费"}]})
    };
    // The sub-merchant's limit is 20%: 201 fen of 1000 is refused, 200 is fine.
    let err = client
        .post_json::<_, OrdersEntity>("/v3/profitsharing/orders", &order("PPS0", 201))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("INVALID_REQUEST"));
    let share: OrdersEntity = client
        .post_json("/v3/profitsharing/orders", &order("PPS1", 200))
        .await
        .unwrap();
    assert_eq!(share.sub_mchid.as_deref(), Some(sub.as_str()));
    let q = format!("/v3/profitsharing/orders/PPS1?transaction_id={tid}&sub_mchid={sub}");
    eventually(|| async {
        let s: OrdersEntity = client.get_json(&q).await.unwrap();
        (serde_json::to_value(s.state).unwrap() == "FINISHED").then_some(())
    })
    .await;
    // unfreeze_unsplit released the remaining 800 to the sub-merchant.
    let amounts: Value = client
        .get_json(&format!("/v3/profitsharing/transactions/{tid}/amounts"))
        .await
        .unwrap();
    assert_eq!(amounts["unsplit_amount"], 0);
    // Without the sub_mchid the order is not found: shares are scoped to the sub-merchant.
    let err = client
        .get_json::<OrdersEntity>(&format!(
            "/v3/profitsharing/orders/PPS1?transaction_id={tid}"
        ))
        .await
        .unwrap_err();
    assert!(err.api_code().is_some());

    let today = paygate_core::timefmt::format_date(paygate_core::timefmt::beijing_date(
        time::OffsetDateTime::now_utc(),
    ));
    sim.sandbox("bills/close-day", json!({"bill_date": today}))
        .await;
    let applied: Value = client
        .get_json(&format!(
            "/v3/bill/tradebill?bill_date={today}&sub_mchid={sub}&tar_type=GZIP"
        ))
        .await
        .unwrap();
    let csv = gunzip(
        &client
            .download(applied["download_url"].as_str().unwrap())
            .await
            .unwrap(),
        1 << 20,
    )
    .unwrap();
    assert_eq!(sha1_hex(&csv), applied["hash_value"].as_str().unwrap());
    let bill = TradeBill::parse(&csv).unwrap();
    assert_eq!(bill.rows.len(), 1);
    assert_eq!(bill.rows[0].mchid, m.sp_mchid.clone().unwrap());
    assert_eq!(bill.rows[0].sub_mchid, sub);
    let ps: Value = client
        .get_json(&format!(
            "/v3/profitsharing/bills?bill_date={today}&sub_mchid={sub}"
        ))
        .await
        .unwrap();
    let csv = client
        .download(ps["download_url"].as_str().unwrap())
        .await
        .unwrap();
    let bill = paygate_wxpay::bill::ProfitSharingBill::parse(&csv).unwrap();
    assert_eq!(bill.total_amount_fen(), Some(200));
}
