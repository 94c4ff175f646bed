//! Profit sharing (分账, reference §4.8) for the gateway's direct merchants: the merchant API
//! (routes, request checks, the WeChat Pay views of share orders and returns). How a share is
//! made at the channel and kept safe is in [`crate::sharing_flow`].
//!
//! Only orders paid with `settle_info.profit_sharing = true` can be shared, in several rounds
//! until an unfreeze; `(mchid, out_order_no)` and `(mchid, out_return_no)` are idempotency keys;
//! a receiver's `name` arrives RSA-OAEP encrypted for the gateway's platform key (the SDKs use
//! the key of the `Wechatpay-Serial` they send), is decrypted here and sealed again for the
//! channel, and is never stored in plaintext. `merchant-configs/{sub_mchid}` is a partner API:
//! direct merchants get 403 NO_AUTH, as from WeChat Pay.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::routing::{get, post};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::timefmt::rfc3339_beijing;
use paygate_http::V3Path as Path;
use paygate_store::{
    ReturnState, ShareKind, ShareLine, ShareOrderRecord, ShareReturnRecord, ShareState,
};
use paygate_wxpay::models::bills::parse_query_validated;
use paygate_wxpay::models::profitsharing::{
    AddReceiverRequest, AddReceiverResponse, DeleteReceiverRequest, DeleteReceiverResponse,
    DetailFailReason, DetailResult, OrderQuery, OrderReceiverDetail, OrderState, OrdersEntity,
    ProfitSharingOrderRequest, ReceiverType, ReturnFailReason, ReturnOrderQuery,
    ReturnOrderRequest, ReturnOrdersEntity, ReturnResult, UnfreezeRequest, UnsplitAmountResponse,
};
use paygate_wxpay::rules::parse_json;
use serde::de::DeserializeOwned;

use crate::http::{ApiFail, ApiResult, AppState, Caller, ok_json};
use crate::sharing_flow as flow;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v3/profitsharing/receivers/add", post(add_receiver))
        .route("/v3/profitsharing/receivers/delete", post(delete_receiver))
        .route("/v3/profitsharing/orders", post(create_order))
        .route("/v3/profitsharing/orders/unfreeze", post(unfreeze))
        .route("/v3/profitsharing/orders/{out_order_no}", get(query_order))
        .route("/v3/profitsharing/return-orders", post(create_return))
        .route(
            "/v3/profitsharing/return-orders/{out_return_no}",
            get(query_return),
        )
        .route(
            "/v3/profitsharing/transactions/{transaction_id}/amounts",
            get(amounts),
        )
        .route(
            "/v3/profitsharing/merchant-configs/{sub_mchid}",
            get(merchant_config),
        )
}

/// A direct merchant has no sub-merchants: `sub_mchid` is a partner's field.
fn no_sub(sub_mchid: Option<&String>) -> Result<(), ApiError> {
    if sub_mchid.is_some() {
        return Err(ApiError::new(
            ErrorCode::NoAuth,
            "普通商户无服务商权限，请勿传入 sub_mchid",
        ));
    }
    Ok(())
}

fn same_appid(caller: &Caller, appid: &str, sub_appid: Option<&String>) -> Result<(), ApiError> {
    if appid != caller.merchant.appid || sub_appid.is_some() {
        return Err(ApiError::new(
            ErrorCode::AppidMchidNotMatch,
            "appid和mch_id不匹配",
        ));
    }
    Ok(())
}

fn query<T: DeserializeOwned + paygate_wxpay::rules::Validate>(
    raw: Option<String>,
) -> Result<T, ApiFail> {
    Ok(parse_query_validated(&raw.unwrap_or_default())?)
}

async fn add_receiver(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: AddReceiverRequest = parse_json(&body)?;
    no_sub(req.sub_mchid.as_ref())?;
    same_appid(&caller, &req.appid, req.sub_appid.as_ref())?;
    flow::add_receiver(&app, &caller, &req).await?;
    ok_json(&AddReceiverResponse {
        sub_mchid: None,
        r#type: req.r#type,
        account: req.account,
        name: req.name,
        relation_type: req.relation_type,
        custom_relation: req.custom_relation,
    })
}

async fn delete_receiver(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: DeleteReceiverRequest = parse_json(&body)?;
    no_sub(req.sub_mchid.as_ref())?;
    same_appid(&caller, &req.appid, req.sub_appid.as_ref())?;
    flow::delete_receiver(&app, &caller.merchant, req.r#type, &req.account).await?;
    ok_json(&DeleteReceiverResponse {
        sub_mchid: None,
        r#type: req.r#type,
        account: req.account,
    })
}

async fn create_order(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: ProfitSharingOrderRequest = parse_json(&body)?;
    no_sub(req.sub_mchid.as_ref())?;
    same_appid(&caller, &req.appid, req.sub_appid.as_ref())?;
    let share = flow::create_split(&app, &caller, &req).await?;
    ok_json(&orders_entity(&share))
}

async fn query_order(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_order_no): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q: OrderQuery = query(raw)?;
    no_sub(q.sub_mchid.as_ref())?;
    paygate_wxpay::rules::check_out_request_no("/out_order_no", &out_order_no)?;
    let share = flow::query_share(&app, &caller.merchant, &out_order_no, &q.transaction_id).await?;
    ok_json(&orders_entity(&share))
}

async fn unfreeze(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: UnfreezeRequest = parse_json(&body)?;
    no_sub(req.sub_mchid.as_ref())?;
    let share = flow::create_unfreeze(&app, &caller.merchant, &req).await?;
    ok_json(&orders_entity(&share))
}

async fn create_return(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: ReturnOrderRequest = parse_json(&body)?;
    no_sub(req.sub_mchid.as_ref())?;
    let ret = flow::create_return(&app, &caller.merchant, &req).await?;
    ok_json(&return_entity(&ret))
}

async fn query_return(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_return_no): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q: ReturnOrderQuery = query(raw)?;
    no_sub(q.sub_mchid.as_ref())?;
    paygate_wxpay::rules::check_out_request_no("/out_return_no", &out_return_no)?;
    let ret = flow::query_return(&app, &caller.merchant, &out_return_no, &q.out_order_no).await?;
    ok_json(&return_entity(&ret))
}

async fn amounts(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(transaction_id): Path<String>,
) -> ApiResult {
    paygate_wxpay::rules::check_id("/transaction_id", &transaction_id, 32)?;
    let unsplit_amount = flow::unsplit_amount(&app, &caller.merchant, &transaction_id).await?;
    ok_json(&UnsplitAmountResponse {
        transaction_id,
        unsplit_amount,
    })
}

async fn merchant_config(Path(_sub_mchid): Path<String>) -> ApiResult {
    Err(ApiFail(ApiError::new(
        ErrorCode::NoAuth,
        "仅服务商可查询子商户最大分账比例",
    )))
}

// ---- what merchants see ----

fn parse_wire<T: DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn time_of(ms: i64) -> String {
    paygate_store::from_unix_ms(ms).map_or_else(|_| String::new(), rfc3339_beijing)
}

fn line_view(l: &ShareLine) -> OrderReceiverDetail {
    OrderReceiverDetail {
        amount: l.amount_fen,
        description: l.description.clone(),
        r#type: parse_wire(&l.r#type).unwrap_or(ReceiverType::MerchantId),
        account: l.account.clone(),
        result: parse_wire(&l.result).unwrap_or(DetailResult::Pending),
        fail_reason: l
            .fail_reason
            .as_deref()
            .and_then(parse_wire::<DetailFailReason>),
        detail_id: l.detail_id.clone(),
        create_time: time_of(l.create_time_ms),
        // Go's model requires finish_time: until the line ends it is the creation time.
        finish_time: Some(time_of(l.finish_time_ms.unwrap_or(l.create_time_ms))),
    }
}

/// The share order as WeChat's OrdersEntity, with the gateway's ids (never the channel's).
pub fn orders_entity(s: &ShareOrderRecord) -> OrdersEntity {
    OrdersEntity {
        sub_mchid: None,
        transaction_id: s.transaction_id.clone(),
        out_order_no: s.out_order_no.clone(),
        order_id: s.order_id.clone(),
        state: match s.state {
            ShareState::Finished | ShareState::Closed => OrderState::Finished,
            ShareState::Created | ShareState::Processing => OrderState::Processing,
        },
        receivers: s.receivers.iter().map(line_view).collect(),
    }
}

/// The return as WeChat's ReturnOrdersEntity, with the gateway's ids.
pub fn return_entity(r: &ShareReturnRecord) -> ReturnOrdersEntity {
    ReturnOrdersEntity {
        sub_mchid: None,
        order_id: r.share_order_id.clone(),
        out_order_no: r.out_order_no.clone(),
        out_return_no: r.out_return_no.clone(),
        return_id: r.return_id.clone(),
        return_mchid: r.return_mchid.clone(),
        amount: r.amount_fen,
        description: r.description.clone(),
        result: match r.state {
            ReturnState::Created | ReturnState::Processing => ReturnResult::Processing,
            ReturnState::Success => ReturnResult::Success,
            ReturnState::Failed => ReturnResult::Failed,
        },
        fail_reason: r
            .fail_reason
            .as_deref()
            .and_then(parse_wire::<ReturnFailReason>),
        create_time: rfc3339_beijing(r.created_at),
        finish_time: Some(rfc3339_beijing(r.finished_at.unwrap_or(r.created_at))),
    }
}

/// An unfreeze reads as one line: the merchant itself receiving what was left.
pub fn is_unfreeze(s: &ShareOrderRecord) -> bool {
    s.kind == ShareKind::Unfreeze
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn record(state: ShareState, result: &str) -> ShareOrderRecord {
        let t = OffsetDateTime::from_unix_timestamp(1_780_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        ShareOrderRecord {
            order_id: "30082026010100000000000001".into(),
            mchid: "1900000109".into(),
            out_order_no: "P1".into(),
            transaction_id: "4200000000202601010000000001".into(),
            attempt_id: "att".into(),
            channel_id: "sandbox".into(),
            kind: ShareKind::Split,
            state,
            amount_fen: 10,
            unfreeze_unsplit: false,
            receivers: vec![ShareLine {
                r#type: "PERSONAL_OPENID".into(),
                account: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
                name: None,
                amount_fen: 10,
                description: "分给用户".into(),
                result: result.into(),
                fail_reason: (result == "CLOSED").then(|| "NO_RELATION".into()),
                detail_id: "36011".into(),
                create_time_ms: 1_780_000_000_000,
                finish_time_ms: None,
                sent: true,
            }],
            description: None,
            fingerprint: "x".into(),
            channel_order_id: Some("3008channel".into()),
            error_code: None,
            error_message: None,
            created_at: t,
            updated_at: t,
            finished_at: None,
            last_polled_at: None,
            version: 0,
        }
    }

    #[test]
    fn merchants_see_their_ids_and_processing_until_the_channel_answers() {
        let e = orders_entity(&record(ShareState::Created, "PENDING"));
        assert_eq!(e.state, OrderState::Processing);
        assert_eq!(e.order_id, "30082026010100000000000001");
        assert_eq!(e.receivers[0].r#type, ReceiverType::PersonalOpenid);
        assert_eq!(e.receivers[0].result, DetailResult::Pending);
        assert_eq!(
            e.receivers[0].finish_time.as_deref(),
            Some(e.receivers[0].create_time.as_str())
        );
        let closed = orders_entity(&record(ShareState::Finished, "CLOSED"));
        assert_eq!(closed.state, OrderState::Finished);
        assert_eq!(
            closed.receivers[0].fail_reason,
            Some(DetailFailReason::NoRelation)
        );
    }
}
