//! Profit sharing through the WeChat Pay channel against an in-process simulator, as a direct
//! merchant and as a service provider: receivers, two split rounds, the idempotent re-send,
//! query until FINISHED, returns, unfreeze, the unsplit amount, refusals and the ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, prepay, start};
use paygate_channel::{
    ChannelError, ChannelReceiver, ChannelShare, ChannelShareReturn, ShareReceiverCall,
    SubMerchant, WxChannel,
};
use paygate_wxpay::models::payments::TradeType;
use paygate_wxpay::models::profitsharing::{
    DetailFailReason, DetailResult, OrderState, OrdersEntity, ReceiverType, RelationType,
    ReturnResult,
};

const SETTLE_WAIT: Duration = Duration::from_secs(10);
const RECEIVER: &str = "1900000109";

async fn both(h: &Harness) -> Vec<(WxChannel, SubMerchant)> {
    let (partner, sub) = h.partner().await;
    vec![(h.direct(), SubMerchant::default()), (partner, sub)]
}

/// A paid profit-sharing attempt (1234 fen): the channel's transaction id.
async fn paid(channel: &WxChannel, sub: &SubMerchant) -> String {
    let mut p = prepay(TradeType::Native, sub);
    p.profit_sharing = true;
    channel.prepay(&p).await.unwrap();
    channel
        .sandbox_pay(&p.out_trade_no, sub, true, None)
        .await
        .unwrap();
    let t = channel.query(&p.out_trade_no, sub).await.unwrap().unwrap();
    t.transaction_id.unwrap()
}

fn no() -> String {
    format!("ps{}", &uuid::Uuid::new_v4().simple().to_string()[..24])
}

fn split(
    channel: &WxChannel,
    tx: &str,
    account: &str,
    amount_fen: i64,
    sub: &SubMerchant,
) -> ChannelShare {
    ChannelShare {
        out_order_no: no(),
        transaction_id: tx.into(),
        receivers: vec![ShareReceiverCall {
            r#type: ReceiverType::MerchantId,
            account: account.into(),
            name: Some(channel.seal_name("示例商户全称").unwrap()),
            amount_fen,
            description: "分给商户".into(),
        }],
        unfreeze_unsplit: false,
        sub: sub.clone(),
    }
}

async fn finished(channel: &WxChannel, s: &ChannelShare) -> OrdersEntity {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        let got = channel
            .query_share(&s.out_order_no, &s.transaction_id, &s.sub)
            .await
            .unwrap()
            .expect("the share order exists");
        if got.state == OrderState::Finished {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn splits_returns_and_unfreeze_in_both_modes() {
    let h = start().await;
    for (channel, sub) in both(&h).await {
        channel
            .add_receiver(&ChannelReceiver {
                r#type: ReceiverType::MerchantId,
                account: RECEIVER.into(),
                name: Some(channel.seal_name("示例商户全称").unwrap()),
                relation_type: RelationType::Partner,
                custom_relation: None,
                sub: sub.clone(),
            })
            .await
            .unwrap();
        let tx = paid(&channel, &sub).await;
        assert_eq!(channel.unsplit_amount(&tx).await.unwrap(), 1234);
        let first = split(&channel, &tx, RECEIVER, 100, &sub);
        let created = channel.share(&first).await.unwrap();
        assert_eq!(created.receivers[0].result, DetailResult::Pending);
        let again = channel.share(&first).await.unwrap();
        assert_eq!(
            again.order_id, created.order_id,
            "one order per out_order_no"
        );
        let done = finished(&channel, &first).await;
        assert_eq!(done.receivers[0].result, DetailResult::Success);
        // A receiver never added is closed with NO_RELATION.
        let stranger = split(&channel, &tx, "1900000999", 50, &sub);
        let closed = channel.share(&stranger).await.unwrap();
        assert_eq!(closed.receivers[0].result, DetailResult::Closed);
        assert_eq!(
            closed.receivers[0].fail_reason,
            Some(DetailFailReason::NoRelation)
        );
        // Within the partner's 20% (246 of 1234) as well as the direct 30%.
        let second = split(&channel, &tx, RECEIVER, 140, &sub);
        channel.share(&second).await.unwrap();
        assert_eq!(channel.unsplit_amount(&tx).await.unwrap(), 1234 - 240);

        let ret = ChannelShareReturn {
            out_return_no: no(),
            out_order_no: first.out_order_no.clone(),
            return_mchid: RECEIVER.into(),
            amount_fen: 40,
            description: "用户退款".into(),
            sub: sub.clone(),
        };
        let r = channel.share_return(&ret).await.unwrap();
        assert_eq!(r.amount, 40);
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let q = channel
                .query_share_return(&ret.out_return_no, &ret.out_order_no, &sub)
                .await
                .unwrap()
                .unwrap();
            if q.result == ReturnResult::Success {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let too_much = ChannelShareReturn {
            out_return_no: no(),
            amount_fen: 61,
            ..ret.clone()
        };
        let refused = channel.share_return(&too_much).await.unwrap_err();
        assert_eq!(refused.code(), Some("NOT_ENOUGH"));

        let unfreeze_no = no();
        let u = channel
            .unfreeze(&unfreeze_no, &tx, "解冻全部剩余资金", &sub)
            .await
            .unwrap();
        assert_eq!(u.state, OrderState::Finished);
        assert_eq!(channel.unsplit_amount(&tx).await.unwrap(), 0);
        let late = channel
            .share(&split(&channel, &tx, RECEIVER, 1, &sub))
            .await;
        assert!(matches!(late, Err(ChannelError::Rejected { .. })));

        assert!(
            channel
                .query_share(&no(), &tx, &sub)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            channel
                .query_share_return(&no(), &first.out_order_no, &sub)
                .await
                .unwrap()
                .is_none()
        );
        channel
            .delete_receiver(ReceiverType::MerchantId, RECEIVER, &sub)
            .await
            .unwrap();
        // Deleting again: the channel no longer knows it, which is what was asked.
        channel
            .delete_receiver(ReceiverType::MerchantId, RECEIVER, &sub)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn over_the_ratio_and_unpaid_orders_are_refused_and_ratios_are_partner_only() {
    let h = start().await;
    let channel = h.direct();
    let sub = SubMerchant::default();
    let tx = paid(&channel, &sub).await;
    // 30% of 1234 is 370.2: 371 is over.
    let refused = channel
        .share(&split(&channel, &tx, RECEIVER, 371, &sub))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("INVALID_REQUEST"));
    let missing = channel
        .share(&split(
            &channel,
            "4200000000202601010000000000",
            RECEIVER,
            1,
            &sub,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("RESOURCE_NOT_EXISTS"));
    assert!(channel.share_max_ratio(&sub).await.is_err());
    let (partner, psub) = h.partner().await;
    assert_eq!(partner.share_max_ratio(&psub).await.unwrap(), 2000);
    // A direct channel is never handed a sub-merchant.
    assert!(
        channel
            .share(&split(&channel, &tx, RECEIVER, 1, &psub))
            .await
            .is_err()
    );
}
