//! The merchant API: WeChat Pay v3 direct-merchant paths (§4.1, §4.3, §4.4, §4.7, §4.9) and one
//! documented extension outside `/v3`, `POST /paygate/v1/pay-params`, which returns JSAPI
//! or APP invocation parameters signed by paygate: paygate owns the upstream prepay_id, so
//! only paygate's channel key makes a `paySign` WeChat accepts.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::routing::{get, post};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_http::V3Path as Path;
use paygate_store::{AttemptState, OrderRecord};
use paygate_wxpay::certificates::build_certificates_response;
use paygate_wxpay::crypto::aead::AeadAlgorithm;
use paygate_wxpay::models::bills::parse_query_validated;
use paygate_wxpay::models::certificates::{AlgorithmType, CertificatesQuery};
use paygate_wxpay::models::payments::{CloseRequest, PrepayRequest, QueryOrderQuery, TradeType};
use paygate_wxpay::models::refunds::{RefundQuery, RefundRequest};
use paygate_wxpay::rules::{Validate, parse_json};
use serde::Deserialize;

use crate::flow::{self, PrepayCall};
use crate::http::{ApiFail, ApiResult, AppState, Caller, internal, no_content, ok_json};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v3/pay/transactions/{product}", post(prepay))
        .route("/v3/pay/transactions/id/{transaction_id}", get(query_by_id))
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            get(query_by_out_trade_no),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            post(close),
        )
        .route("/v3/refund/domestic/refunds", post(create_refund))
        .route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            get(query_refund),
        )
        .route("/v3/certificates", get(certificates))
        .route("/paygate/v1/pay-params", post(pay_params))
        // Profit sharing (§4.8; sharing.rs).
        .merge(crate::sharing::routes())
}

fn same_signer(caller: &Caller, mchid: &str) -> Result<(), ApiFail> {
    if caller.merchant.mchid != mchid {
        return Err(ApiFail(ApiError::new(
            ErrorCode::InvalidRequest,
            "http header中的mchid与post payload中的mchid不匹配",
        )));
    }
    Ok(())
}

fn store_fail(e: paygate_store::StoreError) -> ApiFail {
    internal(e)
}

async fn prepay(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(segment): Path<String>,
    body: Bytes,
) -> ApiResult {
    let trade = TradeType::from_product(&segment).ok_or_else(|| {
        ApiFail(ApiError::new(ErrorCode::InvalidRequest, "不支持的支付产品").with_status(404))
    })?;
    let request: PrepayRequest = parse_json(&body)?;
    request.validate_for(trade)?;
    same_signer(&caller, &request.mchid)?;
    if request.appid != caller.merchant.appid {
        return Err(ApiFail(ApiError::new(
            ErrorCode::AppidMchidNotMatch,
            "appid和mch_id不匹配",
        )));
    }
    let call = PrepayCall {
        merchant: caller.merchant,
        trade,
        request,
        wechatpay_serial: caller.wechatpay_serial,
    };
    let prepaid = flow::prepay(&app, call).await?;
    match prepaid.presigned {
        Some(presigned) => Ok(presigned.into_response()),
        None => Ok(paygate_http::json_response(
            axum::http::StatusCode::OK,
            prepaid.credential.answer_body()?,
        )),
    }
}

fn check_query_mchid(caller: &Caller, query: Option<String>) -> Result<(), ApiFail> {
    let q: QueryOrderQuery = parse_query_validated(&query.unwrap_or_default())?;
    same_signer(caller, &q.mchid)
}

fn not_exist() -> ApiFail {
    ApiFail(ApiError::new(ErrorCode::OrderNotExist, "订单不存在"))
}

async fn query_by_id(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(transaction_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    check_query_mchid(&caller, query)?;
    let order = app
        .store
        .get_order_view(paygate_store::OrderKey::TransactionId(&transaction_id))
        .await
        .map_err(store_fail)?
        // §4.3: an unpaid order is found by out_trade_no only; another merchant's never.
        .filter(|o| {
            o.mchid == caller.merchant.mchid
                && matches!(
                    o.state,
                    paygate_store::OrderState::Success | paygate_store::OrderState::Refund
                )
        })
        .ok_or_else(not_exist)?;
    ok_json(&crate::views::transaction(&order))
}

async fn query_by_out_trade_no(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_trade_no): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    check_query_mchid(&caller, query)?;
    let order = app
        .store
        .get_order_view(paygate_store::OrderKey::OutTradeNo {
            mchid: &caller.merchant.mchid,
            out_trade_no: &out_trade_no,
        })
        .await
        .map_err(store_fail)?
        .ok_or_else(not_exist)?;
    ok_json(&crate::views::transaction(&order))
}

async fn close(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request: CloseRequest = parse_json(&body)?;
    same_signer(&caller, &request.mchid)?;
    let order = app
        .store
        .get_order(&caller.merchant.mchid, &out_trade_no)
        .await
        .map_err(store_fail)?
        .ok_or_else(not_exist)?;
    flow::close(&app, &caller.merchant, &order, "merchant").await?;
    no_content()
}

/// §4.7: a refund of a paid order, for the gateway's direct merchants (no `sub_mchid`).
async fn create_refund(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let request: RefundRequest = parse_json(&body)?;
    let refund = crate::refunds::create(&app, &caller.merchant, request).await?;
    ok_json(&crate::refunds::view(&refund))
}

async fn query_refund(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_refund_no): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: RefundQuery = parse_query_validated(&query.unwrap_or_default())?;
    if q.sub_mchid.is_some() {
        return Err(ApiFail(ApiError::new(
            ErrorCode::NoAuth,
            "普通商户无服务商权限，请勿传入 sub_mchid",
        )));
    }
    paygate_wxpay::rules::check_out_request_no("/out_refund_no", &out_refund_no)?;
    let refund = crate::refunds::query(&app, &caller.merchant, &out_refund_no).await?;
    ok_json(&crate::refunds::view(&refund))
}

async fn certificates(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: CertificatesQuery = parse_query_validated(&query.unwrap_or_default())?;
    let keys = app.keys.current();
    // Every served generation: during a rotation's grace period, the old and the new.
    let pems: Vec<&str> = match q.algorithm_type {
        Some(AlgorithmType::Sm2) => Vec::new(),
        _ => keys.certificate_pems(),
    };
    let answer = build_certificates_response(
        &pems,
        AeadAlgorithm::Aes256Gcm,
        caller.merchant.apiv3_key.as_bytes(),
    )
    .map_err(internal)?;
    ok_json(&answer)
}

#[derive(Deserialize)]
struct PayParamsRequest {
    out_trade_no: String,
    trade_type: String,
}

impl Validate for PayParamsRequest {
    fn validate(&self) -> Result<(), ApiError> {
        paygate_wxpay::rules::check_out_trade_no("/out_trade_no", &self.out_trade_no)?;
        match self.trade_type.as_str() {
            "JSAPI" | "APP" => Ok(()),
            _ => Err(ApiError::param("/trade_type", "must be JSAPI or APP")),
        }
    }
}

/// JSAPI/APP invocation parameters for the order's live prepay_id, signed with the key of
/// the channel that issued it.
async fn pay_params(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let request: PayParamsRequest = parse_json(&body)?;
    let order: OrderRecord = app
        .store
        .get_order(&caller.merchant.mchid, &request.out_trade_no)
        .await
        .map_err(store_fail)?
        .ok_or_else(not_exist)?;
    if order.trade_type != request.trade_type {
        return Err(ApiFail(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("订单的交易类型是 {}", order.trade_type),
        )));
    }
    let attempts = app
        .store
        .attempts(&order.transaction_id)
        .await
        .map_err(store_fail)?;
    let attempt = attempts
        .iter()
        .rev()
        .find(|a| a.state == AttemptState::Prepaid && a.prepay_id.is_some())
        .ok_or_else(|| {
            ApiFail(ApiError::new(
                ErrorCode::InvalidRequest,
                "订单没有有效的 prepay_id，请先下单",
            ))
        })?;
    let prepay_id = attempt.prepay_id.clone().unwrap_or_default();
    let channel = app.channel(&attempt.channel_id)?;
    // The payer's app is the merchant's sub_appid at a provider channel, else the channel's
    // appid; the sub-merchant is the one at the attempt's channel (failover may have moved it).
    let sub = flow::sub_at(&app, &caller.merchant, &attempt.channel_id)?;
    let appid = sub
        .sub_appid
        .clone()
        .unwrap_or_else(|| channel.config().appid.clone());
    if request.trade_type == "JSAPI" {
        ok_json(
            &channel
                .jsapi_pay_params(&appid, &prepay_id)
                .map_err(|e| flow::channel_error_to_api(&e))?,
        )
    } else {
        ok_json(
            &channel
                .app_pay_params(&appid, &prepay_id, &sub)
                .map_err(|e| flow::channel_error_to_api(&e))?,
        )
    }
}
