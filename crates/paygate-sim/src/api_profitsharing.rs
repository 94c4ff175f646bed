//! Profit sharing (分账, reference §4.8): receivers, split orders in several rounds,
//! unfreezing the rest, returns, the unsplit amount and the partner ratio limit.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::routing::{get, post};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::timefmt::rfc3339_beijing;
use paygate_http::V3Path as Path;
use paygate_wxpay::models::profitsharing::{
    AddReceiverRequest, AddReceiverResponse, DeleteReceiverRequest, DeleteReceiverResponse,
    MerchantConfigResponse, OrderQuery, OrderReceiverDetail, OrderState, OrdersEntity,
    ProfitSharingOrderRequest, ReturnOrderQuery, ReturnOrderRequest, ReturnOrdersEntity,
    UnfreezeRequest, UnsplitAmountResponse,
};
use paygate_wxpay::rules::parse_json;

use crate::accounts::{Account, AccountKind};
use crate::api::{owner, parse_query};
use crate::server::{ApiFail, ApiResult, AppState, Caller, ok_json};
use crate::state::{Owner, Receiver, ReturnOrder, ShareOrder};

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

/// `appid` is the merchant's (or the provider's) appid; `sub_appid` must be the sub-merchant's.
fn check_appids(
    account: &Account,
    owner: &Owner,
    appid: &str,
    sub_appid: Option<&str>,
) -> Result<(), ApiFail> {
    if appid != account.appid {
        return Err(ApiFail(ApiError::new(
            ErrorCode::AppidMchidNotMatch,
            "appid和mch_id不匹配",
        )));
    }
    if let (Some(sub_appid), Some(sub)) = (sub_appid, &owner.sub_mchid) {
        if account
            .subs
            .get(sub)
            .is_none_or(|s| s.sub_appid != sub_appid)
        {
            return Err(ApiFail(ApiError::new(
                ErrorCode::AppidMchidNotMatch,
                "sub_appid和sub_mchid不匹配",
            )));
        }
    }
    Ok(())
}

fn max_ratio(account: &Account, owner: &Owner) -> u32 {
    match &owner.sub_mchid {
        Some(sub) => account.subs.get(sub).map_or(0, |s| s.max_ratio),
        None => account.max_ratio,
    }
}

fn orders_entity(share: &ShareOrder) -> OrdersEntity {
    OrdersEntity {
        sub_mchid: share.owner.sub_mchid.clone(),
        transaction_id: share.transaction_id.clone(),
        out_order_no: share.out_order_no.clone(),
        order_id: share.order_id.clone(),
        state: if share.finished {
            OrderState::Finished
        } else {
            OrderState::Processing
        },
        receivers: share
            .receivers
            .iter()
            .map(|r| OrderReceiverDetail {
                amount: r.amount_fen,
                description: r.description.clone(),
                r#type: r.kind,
                account: r.account.clone(),
                result: r.result,
                fail_reason: r.fail_reason,
                detail_id: r.detail_id.clone(),
                create_time: rfc3339_beijing(r.create_time),
                // Go's model requires finish_time: until then it is the creation time.
                finish_time: Some(rfc3339_beijing(r.finish_time.unwrap_or(r.create_time))),
            })
            .collect(),
    }
}

fn return_entity(r: &ReturnOrder) -> ReturnOrdersEntity {
    ReturnOrdersEntity {
        sub_mchid: r.owner.sub_mchid.clone(),
        order_id: r.order_id.clone(),
        out_order_no: r.out_order_no.clone(),
        out_return_no: r.out_return_no.clone(),
        return_id: r.return_id.clone(),
        return_mchid: r.return_mchid.clone(),
        amount: r.amount_fen,
        description: r.description.clone(),
        result: r.result,
        fail_reason: None,
        create_time: rfc3339_beijing(r.create_time),
        finish_time: Some(rfc3339_beijing(r.finish_time.unwrap_or(r.create_time))),
    }
}

async fn add_receiver(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: AddReceiverRequest = parse_json(&body)?;
    let (owner, account) = owner(&app, &caller, req.sub_mchid.as_deref())?;
    check_appids(&account, &owner, &req.appid, req.sub_appid.as_deref())?;
    let receiver = Receiver {
        kind: req.r#type,
        account: req.account.clone(),
        name: req.name.clone(),
        relation_type: req.relation_type,
        custom_relation: req.custom_relation.clone(),
    };
    app.store().add_receiver(&owner, receiver);
    ok_json(&AddReceiverResponse {
        sub_mchid: req.sub_mchid,
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
    let (owner, account) = owner(&app, &caller, req.sub_mchid.as_deref())?;
    check_appids(&account, &owner, &req.appid, req.sub_appid.as_deref())?;
    app.store()
        .delete_receiver(&owner, req.r#type, &req.account)?;
    ok_json(&DeleteReceiverResponse {
        sub_mchid: req.sub_mchid,
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
    let (owner, account) = owner(&app, &caller, req.sub_mchid.as_deref())?;
    check_appids(&account, &owner, &req.appid, req.sub_appid.as_deref())?;
    let fingerprint = serde_json::to_value(&req).unwrap_or_default().to_string();
    let receivers = req
        .receivers
        .iter()
        .map(|r| (r.r#type, r.account.clone(), r.amount, r.description.clone()))
        .collect();
    let delay = app.scaled(app.delays.share);
    let share = app.store().create_share(
        &owner,
        &req.transaction_id,
        &req.out_order_no,
        receivers,
        req.unfreeze_unsplit,
        max_ratio(&account, &owner),
        fingerprint,
        delay,
        app.clock.now(),
    )?;
    ok_json(&orders_entity(&share))
}

async fn query_order(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_order_no): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: OrderQuery = parse_query(query)?;
    let (owner, _) = owner(&app, &caller, q.sub_mchid.as_deref())?;
    let share =
        app.store()
            .query_share(&owner, &out_order_no, &q.transaction_id, app.clock.now())?;
    ok_json(&orders_entity(&share))
}

async fn unfreeze(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: UnfreezeRequest = parse_json(&body)?;
    let (owner, _) = owner(&app, &caller, req.sub_mchid.as_deref())?;
    let share = app.store().unfreeze(
        &owner,
        &req.transaction_id,
        &req.out_order_no,
        &req.description,
        app.clock.now(),
    )?;
    ok_json(&orders_entity(&share))
}

async fn create_return(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: ReturnOrderRequest = parse_json(&body)?;
    let (owner, _) = owner(&app, &caller, req.sub_mchid.as_deref())?;
    let delay = app.scaled(app.delays.share_return);
    let ret = app.store().create_return(
        &owner,
        req.order_id.as_deref(),
        req.out_order_no.as_deref(),
        &req.out_return_no,
        &req.return_mchid,
        req.amount,
        &req.description,
        delay,
        app.clock.now(),
    )?;
    ok_json(&return_entity(&ret))
}

async fn query_return(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_return_no): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: ReturnOrderQuery = parse_query(query)?;
    let (owner, _) = owner(&app, &caller, q.sub_mchid.as_deref())?;
    let ret = app
        .store()
        .query_return(&owner, &out_return_no, &q.out_order_no, app.clock.now())?;
    ok_json(&return_entity(&ret))
}

async fn amounts(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(transaction_id): Path<String>,
) -> ApiResult {
    let unsplit = app
        .store()
        .unsplit_amount(&caller.mchid, &transaction_id, app.clock.now())?;
    ok_json(&UnsplitAmountResponse {
        transaction_id,
        unsplit_amount: unsplit,
    })
}

async fn merchant_config(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(sub_mchid): Path<String>,
) -> ApiResult {
    let (owner, account) = owner(&app, &caller, Some(&sub_mchid))?;
    if account.kind != AccountKind::ServiceProvider {
        return Err(ApiFail(ApiError::new(
            ErrorCode::NoAuth,
            "仅服务商可查询子商户最大分账比例",
        )));
    }
    ok_json(&MerchantConfigResponse {
        sub_mchid,
        max_ratio: i64::from(max_ratio(&account, &owner)),
    })
}
