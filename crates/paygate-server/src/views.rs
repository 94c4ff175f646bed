//! Gateway records → the V3 wire models merchants see.

use paygate_core::timefmt::rfc3339_beijing;
use paygate_store::{OrderRecord, OrderState};
use paygate_wxpay::models::payments::{
    TradeState, TradeType, Transaction, TransactionAmount, TransactionPayer,
};

pub fn trade_state(state: OrderState) -> TradeState {
    match state {
        OrderState::Notpay => TradeState::Notpay,
        OrderState::Payerror => TradeState::Payerror,
        OrderState::Success => TradeState::Success,
        OrderState::Refund => TradeState::Refund,
        OrderState::Closed => TradeState::Closed,
    }
}

pub fn trade_type(wire: &str) -> Option<TradeType> {
    serde_json::from_value(serde_json::Value::String(wire.to_string())).ok()
}

/// The order as WeChat's Transaction object: the query answer and the notification plaintext.
pub fn transaction(order: &OrderRecord) -> Transaction {
    let paid = matches!(order.state, OrderState::Success | OrderState::Refund);
    let state = trade_state(order.state);
    Transaction {
        amount: Some(TransactionAmount {
            total: order.total_fen,
            payer_total: paid.then_some(order.total_fen),
            currency: order.currency.clone(),
            payer_currency: paid.then(|| order.currency.clone()),
        }),
        appid: Some(order.appid.clone()),
        mchid: Some(order.mchid.clone()),
        sp_appid: None,
        sp_mchid: None,
        sub_appid: None,
        sub_mchid: None,
        attach: order.attach.clone(),
        bank_type: order.bank_type.clone(),
        out_trade_no: order.out_trade_no.clone(),
        payer: order.payer_openid.clone().map(|openid| TransactionPayer {
            openid: Some(openid),
            sp_openid: None,
            sub_openid: None,
        }),
        promotion_detail: None,
        scene_info: None,
        success_time: order.success_time.map(rfc3339_beijing),
        trade_state: state,
        trade_state_desc: state.default_desc().to_string(),
        trade_type: trade_type(&order.trade_type),
        transaction_id: paid.then(|| order.transaction_id.clone()),
    }
}
