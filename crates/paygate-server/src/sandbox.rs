//! The gateway's sandbox payer (`POST /sandbox/v1/pay`), on only when the sandbox is
//! enabled (never in a production configuration): it pays the order's live attempt AT THE
//! CHANNEL, so the real callback path runs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use paygate_core::error::{ApiError, ErrorCode, decode_json};
use paygate_store::{AttemptState, OrderState};
use serde::Deserialize;

use crate::flow::channel_error_to_api;
use crate::http::{ApiFail, ApiResult, AppState, internal, ok_json};

#[derive(Deserialize)]
struct Pay {
    mchid: String,
    out_trade_no: String,
    result: String,
    #[serde(default)]
    openid: Option<String>,
}

pub async fn pay(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: Pay = decode_json(&body)?;
    let success = match req.result.as_str() {
        "SUCCESS" => true,
        "PAYERROR" => false,
        _ => return Err(ApiError::param("/result", "must be SUCCESS or PAYERROR").into()),
    };
    let not_found = || ApiFail(ApiError::new(ErrorCode::OrderNotExist, "订单不存在"));
    let merchant = app
        .store
        .get_merchant(&req.mchid)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let order = app
        .store
        .get_order(&req.mchid, &req.out_trade_no)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    // A paid (or refunded) order answers as the channel does for a second payment, whether or
    // not its callback has landed yet; a retried pay whose first answer was lost relies on it.
    match order.state {
        OrderState::Success | OrderState::Refund => {
            return Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付").into());
        }
        OrderState::Closed => {
            return Err(ApiError::new(ErrorCode::OrderClosed, "订单已关闭").into());
        }
        _ => {}
    }
    let attempts = app
        .store
        .attempts(&order.transaction_id)
        .await
        .map_err(internal)?;
    // The order was read before the attempts: a callback committing in between leaves a paid
    // attempt on an order read as unpaid. That is a second payment too.
    if attempts.iter().any(|a| a.state == AttemptState::Paid) {
        return Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付").into());
    }
    let attempt = attempts
        .iter()
        .rev()
        .find(|a| {
            matches!(
                a.state,
                AttemptState::Prepaid | AttemptState::Unknown | AttemptState::Created
            )
        })
        .ok_or_else(|| {
            ApiFail(ApiError::new(
                ErrorCode::InvalidRequest,
                "订单没有可支付的渠道单",
            ))
        })?;
    let channel = app.channel(&attempt.channel_id)?;
    channel
        .sandbox_pay(
            &attempt.attempt_id,
            &crate::flow::sub_at(&app, &merchant, &attempt.channel_id)?,
            success,
            req.openid.as_deref(),
        )
        .await
        .map_err(|e| channel_error_to_api(&e))?;
    ok_json(&serde_json::json!({
        "mchid": req.mchid,
        "out_trade_no": req.out_trade_no,
        "transaction_id": order.transaction_id,
        "result": req.result,
    }))
}
