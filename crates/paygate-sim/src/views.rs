//! Internal state → the V3 wire models. Kept apart from the transitions so the rules in
//! `state` read without serialization noise.

use paygate_core::timefmt::rfc3339_beijing;
use paygate_wxpay::models::payments::{
    Transaction, TransactionAmount, TransactionPayer, TransactionSceneInfo,
};
use paygate_wxpay::models::refunds::{
    Refund as RefundView, RefundAmount, RefundChannel, RefundNotifyAmount, RefundNotifyPayload,
};

use crate::state::{Order, Refund};

pub fn transaction(order: &Order) -> Transaction {
    let input = &order.input;
    let partner = input.owner.sub_mchid.is_some();
    let paid = order.state.is_paid();
    let payer = if partner {
        let sub = if paid {
            order
                .payer_openid
                .clone()
                .filter(|_| input.sub_appid.is_some())
        } else {
            None
        }
        .or_else(|| input.sub_openid.clone());
        let sp = if paid && input.sub_openid.is_none() {
            order.payer_openid.clone()
        } else {
            input.sp_openid.clone()
        };
        (sub.is_some() || sp.is_some()).then_some(TransactionPayer {
            openid: None,
            sp_openid: sp,
            sub_openid: sub,
        })
    } else {
        let openid = if paid {
            order.payer_openid.clone()
        } else {
            input.openid.clone()
        };
        openid.map(|openid| TransactionPayer {
            openid: Some(openid),
            sp_openid: None,
            sub_openid: None,
        })
    };
    Transaction {
        amount: Some(TransactionAmount {
            total: input.total_fen,
            payer_total: paid.then_some(input.total_fen),
            currency: input.currency.clone(),
            payer_currency: paid.then(|| input.currency.clone()),
        }),
        appid: (!partner).then(|| input.appid.clone()),
        mchid: (!partner).then(|| input.owner.mchid.clone()),
        sp_appid: partner.then(|| input.appid.clone()),
        sp_mchid: partner.then(|| input.owner.mchid.clone()),
        sub_appid: if partner {
            input.sub_appid.clone()
        } else {
            None
        },
        sub_mchid: input.owner.sub_mchid.clone(),
        attach: input.attach.clone(),
        bank_type: order.bank_type.clone(),
        out_trade_no: input.out_trade_no.clone(),
        payer,
        promotion_detail: None,
        scene_info: input
            .device_id
            .clone()
            .map(|d| TransactionSceneInfo { device_id: Some(d) }),
        success_time: order.success_time.map(rfc3339_beijing),
        trade_state: order.state,
        trade_state_desc: order.state.default_desc().to_string(),
        trade_type: Some(input.trade),
        transaction_id: paid.then(|| order.transaction_id.clone()),
    }
}

pub fn refund(r: &Refund) -> RefundView {
    RefundView {
        refund_id: r.refund_id.clone(),
        out_refund_no: r.out_refund_no.clone(),
        transaction_id: r.transaction_id.clone(),
        out_trade_no: r.out_trade_no.clone(),
        channel: RefundChannel::Original,
        user_received_account: r.user_received_account.clone(),
        success_time: r.success_time.map(rfc3339_beijing),
        create_time: rfc3339_beijing(r.created_at),
        status: r.state,
        funds_account: Some(r.funds_account),
        amount: RefundAmount {
            total: r.total_fen,
            refund: r.refund_fen,
            from: Some(Vec::new()),
            payer_total: r.total_fen,
            payer_refund: r.refund_fen,
            settlement_refund: r.refund_fen,
            settlement_total: r.total_fen,
            discount_refund: 0,
            currency: r.currency.clone(),
            refund_fee: Some(0),
        },
        promotion_detail: Some(Vec::new()),
    }
}

pub fn refund_notification(r: &Refund) -> RefundNotifyPayload {
    let partner = r.owner.sub_mchid.is_some();
    RefundNotifyPayload {
        mchid: (!partner).then(|| r.owner.mchid.clone()),
        sp_mchid: partner.then(|| r.owner.mchid.clone()),
        sub_mchid: r.owner.sub_mchid.clone(),
        transaction_id: r.transaction_id.clone(),
        out_trade_no: r.out_trade_no.clone(),
        refund_id: r.refund_id.clone(),
        out_refund_no: r.out_refund_no.clone(),
        refund_status: r.state,
        success_time: r.success_time.map(rfc3339_beijing),
        user_received_account: Some(r.user_received_account.clone()),
        amount: RefundNotifyAmount {
            total: r.total_fen,
            refund: r.refund_fen,
            payer_total: r.total_fen,
            payer_refund: r.refund_fen,
        },
    }
}
