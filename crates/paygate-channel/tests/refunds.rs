//! Refunds through the WeChat Pay channel against an in-process simulator, as a direct
//! merchant and as a service provider: create, the idempotent re-send, query until SUCCESS,
//! the signed REFUND.* callback, ABNORMAL, a refund the channel never had, refusals, and a
//! timeout that is an unknown outcome settled by the query.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, prepay, start};
use paygate_channel::{CallbackEvent, ChannelConfig, ChannelRefund, SubMerchant, WxChannel};
use paygate_wxpay::models::payments::TradeType;
use paygate_wxpay::models::refunds::{Refund, RefundStatus};
use serde_json::json;

const SETTLE_WAIT: Duration = Duration::from_secs(10);

async fn both(h: &Harness) -> Vec<(WxChannel, SubMerchant)> {
    let (partner, sub) = h.partner().await;
    vec![(h.direct(), SubMerchant::default()), (partner, sub)]
}

/// A paid attempt at `channel`: its out_trade_no and the channel's transaction id.
async fn paid(channel: &WxChannel, sub: &SubMerchant) -> (String, String) {
    let p = prepay(TradeType::Native, sub);
    channel.prepay(&p).await.unwrap();
    channel
        .sandbox_pay(&p.out_trade_no, sub, true, None)
        .await
        .unwrap();
    let t = channel.query(&p.out_trade_no, sub).await.unwrap().unwrap();
    (p.out_trade_no, t.transaction_id.unwrap())
}

fn refund_of(
    out_trade_no: &str,
    transaction_id: &str,
    amount_fen: i64,
    sub: &SubMerchant,
) -> ChannelRefund {
    ChannelRefund {
        out_refund_no: paygate_core::ids::refund_id(time::OffsetDateTime::now_utc()),
        out_trade_no: out_trade_no.to_string(),
        transaction_id: Some(transaction_id.to_string()),
        reason: Some("商品已售完".into()),
        amount_fen,
        total_fen: 1234,
        currency: "CNY".into(),
        funds_account: None,
        sub: sub.clone(),
    }
}

async fn settled(channel: &WxChannel, r: &ChannelRefund) -> Refund {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        let got = channel
            .query_refund(&r.out_refund_no, &r.sub)
            .await
            .unwrap()
            .expect("the refund exists");
        if got.status != RefundStatus::Processing {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refund never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_refund_is_created_once_and_settles_in_both_modes() {
    let h = start().await;
    for (channel, sub) in both(&h).await {
        let (attempt, tx) = paid(&channel, &sub).await;
        let r = refund_of(&attempt, &tx, 400, &sub);
        let created = channel.refund(&r).await.unwrap();
        assert_eq!(created.out_refund_no, r.out_refund_no);
        assert_eq!(created.out_trade_no, attempt);
        assert_eq!(created.amount.refund, 400);
        // The same refund again is the same refund, not a second one.
        let again = channel.refund(&r).await.unwrap();
        assert_eq!(again.refund_id, created.refund_id);
        let done = settled(&channel, &r).await;
        assert_eq!(done.status, RefundStatus::Success);
        assert!(done.success_time.is_some());
        // A second, partial refund up to what is left; more than that is refused.
        let rest = refund_of(&attempt, &tx, 834, &sub);
        channel.refund(&rest).await.unwrap();
        let e = channel
            .refund(&refund_of(&attempt, &tx, 1, &sub))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("NOT_ENOUGH"));
        assert!(!e.is_retryable());
        // Never sent: the channel does not know it.
        assert_eq!(
            channel
                .query_refund(&refund_of(&attempt, &tx, 1, &sub).out_refund_no, &sub)
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn the_refund_callback_verifies_and_carries_refund_status() {
    let mut h = start().await;
    for (channel, sub) in both(&h).await {
        let (attempt, tx) = paid(&channel, &sub).await;
        let r = refund_of(&attempt, &tx, 1234, &sub);
        channel.refund(&r).await.unwrap();
        let payload = loop {
            let cb = h.next_callback(SETTLE_WAIT).await;
            if let Ok(CallbackEvent::Refund(p)) =
                channel.parse_callback(&|n| cb.header(n), &cb.body)
            {
                if p.out_refund_no == r.out_refund_no {
                    break p;
                }
            }
        };
        assert_eq!(payload.refund_status, RefundStatus::Success);
        assert_eq!(payload.out_trade_no, attempt);
        assert_eq!(payload.amount.refund, 1234);
        assert_eq!(payload.sub_mchid, sub.sub_mchid);
    }
}

#[tokio::test]
async fn an_abnormal_refund_and_refusals_come_back_as_such() {
    let h = start().await;
    let channel = h.direct();
    let none = SubMerchant::default();
    let mchid = channel.config().mchid.clone();
    let (attempt, tx) = paid(&channel, &none).await;
    h.set_faults(&mchid, json!({"refund_abnormal_rate_ppm": 1_000_000}))
        .await;
    let r = refund_of(&attempt, &tx, 100, &none);
    channel.refund(&r).await.unwrap();
    assert_eq!(settled(&channel, &r).await.status, RefundStatus::Abnormal);
    h.set_faults(
        &mchid,
        json!({"errors": [{"code": "USER_ACCOUNT_ABNORMAL", "rate_ppm": 1_000_000}], "operations": ["refund"]}),
    )
    .await;
    let e = channel
        .refund(&refund_of(&attempt, &tx, 100, &none))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("USER_ACCOUNT_ABNORMAL"));
    assert!(!e.is_unknown() && !e.is_retryable());
    h.clear_faults(&mchid).await;
}

#[tokio::test]
async fn a_timed_out_refund_is_unknown_and_the_query_finds_it() {
    let h = start().await;
    let (partner, sub) = h.partner().await;
    for (channel, sub) in [(h.direct(), SubMerchant::default()), (partner, sub)] {
        let mchid = channel.config().mchid.clone();
        let impatient = WxChannel::new(ChannelConfig {
            timeout_ms: 300,
            ..channel.config().clone()
        })
        .unwrap();
        let (attempt, tx) = paid(&channel, &sub).await;
        h.set_faults(
            &mchid,
            json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 2000, "operations": ["refund"]}),
        )
        .await;
        let r = refund_of(&attempt, &tx, 500, &sub);
        let e = impatient.refund(&r).await.unwrap_err();
        assert!(e.is_unknown(), "{e:?}");
        h.clear_faults(&mchid).await;
        // It was processed although no answer came: the query says so, and the re-send is
        // the same refund.
        let found = channel
            .query_refund(&r.out_refund_no, &sub)
            .await
            .unwrap()
            .expect("processed at the channel");
        assert_eq!(found.amount.refund, 500);
        assert_eq!(channel.refund(&r).await.unwrap().refund_id, found.refund_id);
    }
}
