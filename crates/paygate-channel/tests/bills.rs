//! Bill downloads through the channel against the simulator (reference §4.10): the trade
//! bill and the fund-flow bill of a closed day, gunzipped and hash-checked, readable by the
//! bill parsers; a day without trades is `None`; a partner channel's bill is per sub-merchant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{prepay, start};
use paygate_channel::{SubMerchant, WxChannel};
use paygate_wxpay::bill::{FundFlowBill, TradeBill, sha1_hex};
use paygate_wxpay::models::payments::TradeType;

/// Pays one attempt; returns its out_trade_no and the Beijing business date of the payment.
async fn paid(channel: &WxChannel, sub: &SubMerchant) -> (String, time::Date) {
    let p = prepay(TradeType::Native, sub);
    channel.prepay(&p).await.unwrap();
    channel
        .sandbox_pay(&p.out_trade_no, sub, true, None)
        .await
        .unwrap();
    let t = channel.query(&p.out_trade_no, sub).await.unwrap().unwrap();
    let when = t.success_time.unwrap();
    let date = paygate_core::timefmt::parse_date(&when[..10]).unwrap();
    (p.out_trade_no, date)
}

async fn close_day(base_url: &str, date: time::Date) {
    let url = format!(
        "{}/sandbox/v1/bills/close-day",
        base_url.trim_end_matches('/')
    );
    let body = serde_json::json!({"bill_date": paygate_core::timefmt::format_date(date)});
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test]
async fn trade_and_fund_flow_bills_download_verified_and_parse() {
    let h = start().await;
    let channel = h.direct();
    let (a, date) = paid(&channel, &SubMerchant::default()).await;
    let (b, _) = paid(&channel, &SubMerchant::default()).await;
    close_day(&channel.config().base_url, date).await;

    let trade = channel
        .trade_bill(date, &SubMerchant::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(trade.sha1, sha1_hex(&trade.bytes));
    assert!(
        trade.bytes.starts_with(b"\xEF\xBB\xBF"),
        "uncompressed CSV with its BOM"
    );
    let bill = TradeBill::parse(&trade.bytes).unwrap();
    bill.verify_summary().unwrap();
    let mut nos: Vec<_> = bill.rows.iter().map(|r| r.out_trade_no.clone()).collect();
    nos.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(nos, want);
    // The streaming reader (what reconciliation scans with) sees the same rows.
    let streamed = paygate_wxpay::bill::TradeBillReader::new(&trade.bytes[..]).unwrap();
    assert_eq!(streamed.map(Result::unwrap).count(), 2);

    let flow = channel.fund_flow_bill(date).await.unwrap().unwrap();
    let flow = FundFlowBill::parse(&flow.bytes).unwrap();
    flow.verify_summary().unwrap();
    assert!(flow.summary.income_count >= 2);

    let empty = date.previous_day().unwrap();
    assert_eq!(
        channel
            .trade_bill(empty, &SubMerchant::default())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_partner_bill_is_per_sub_merchant_and_needs_one() {
    let h = start().await;
    let (channel, sub) = h.partner().await;
    let (a, date) = paid(&channel, &sub).await;
    close_day(&channel.config().base_url, date).await;
    let bill = channel.trade_bill(date, &sub).await.unwrap().unwrap();
    let bill = TradeBill::parse(&bill.bytes).unwrap();
    assert_eq!(bill.rows.len(), 1);
    assert_eq!(bill.rows[0].out_trade_no, a);
    assert_eq!(bill.rows[0].sub_mchid, sub.sub_mchid.clone().unwrap());
    assert!(
        channel
            .trade_bill(date, &SubMerchant::default())
            .await
            .is_err()
    );
}
