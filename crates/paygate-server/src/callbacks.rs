//! Channel callbacks (`POST /callbacks/wxpay/{channel_id}`): verify → decrypt → apply
//! through the state machine. A callback whose signature does not verify is not trusted:
//! the channel is queried for the order instead, and the sender gets a 4xx (WeChat's
//! `WECHATPAY/SIGNTEST/` probes expect one).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use paygate_channel::{CallbackError, CallbackEvent};
use paygate_http::V3Path as Path;

use crate::flow::apply_channel_transaction;
use crate::http::AppState;

fn answer(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    (
        status,
        [("Content-Type", "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

pub async fn wxpay_callback(
    State(app): State<Arc<AppState>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(channel) = app.channels.get(&channel_id).cloned() else {
        return answer(StatusCode::NOT_FOUND, "FAIL", "unknown channel");
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match channel.parse_callback(&header, &body) {
        Ok(CallbackEvent::Transaction(tx)) => {
            match apply_channel_transaction(&app, &tx.out_trade_no, &tx, "callback").await {
                Ok(applied) => {
                    tracing::info!(channel = %channel_id, attempt = %tx.out_trade_no, ?applied, "channel callback applied");
                    answer(StatusCode::OK, "SUCCESS", "成功")
                }
                // Not acknowledged: the channel retries, and the poller is there too.
                Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, "FAIL", &e.message),
            }
        }
        Ok(CallbackEvent::Refund(payload)) => {
            match crate::refunds::apply_callback(&app, &payload).await {
                Ok(()) => answer(StatusCode::OK, "SUCCESS", "成功"),
                // Not acknowledged: the channel retries, and the poller is there too.
                Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, "FAIL", &e.message),
            }
        }
        Err(CallbackError::Unverified { reason, hint }) => {
            tracing::warn!(channel = %channel_id, %reason, "unverified channel callback");
            if let Some(attempt_id) = hint {
                // The hint names the paid attempt of a refund callback too: both are asked.
                verify_by_query(&app, &channel_id, &attempt_id).await;
                crate::refunds::settle_unverified(&app, &attempt_id).await;
            }
            answer(StatusCode::UNAUTHORIZED, "FAIL", "签名验证失败")
        }
        Err(CallbackError::Malformed(reason)) => {
            tracing::warn!(channel = %channel_id, %reason, "malformed channel callback");
            answer(StatusCode::BAD_REQUEST, "FAIL", "无法解析的通知")
        }
    }
}

/// Learns the truth about an attempt from the channel itself.
async fn verify_by_query(app: &AppState, channel_id: &str, attempt_id: &str) {
    let Ok(Some((order, _))) = app.store.find_attempt(attempt_id).await else {
        return;
    };
    let Ok(Some(merchant)) = app.store.get_merchant(&order.mchid).await else {
        return;
    };
    let Some(channel) = app.channels.get(channel_id) else {
        return;
    };
    let Some(sub) = app.routing.sub_for(&merchant, channel_id) else {
        return;
    };
    match channel.query(attempt_id, &sub).await {
        Ok(Some(tx)) => {
            if let Err(e) = apply_channel_transaction(app, attempt_id, &tx, "callback_query").await
            {
                tracing::warn!(attempt_id, error = %e.message, "applying a queried transaction failed");
            }
        }
        Ok(None) => tracing::warn!(
            attempt_id,
            "channel does not know the attempt an unverified callback named"
        ),
        Err(e) => {
            tracing::warn!(attempt_id, error = %e, "channel query after an unverified callback failed")
        }
    }
}
