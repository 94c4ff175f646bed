//! The V3 endpoints (reference §4), direct and partner. Each handler checks who may do
//! what (the signer against the body's mchid/sp_mchid, sub-merchant bindings, appids),
//! turns the request into a state transition and answers with the wire model; the layer
//! in `server` has already authenticated the request and will sign the answer.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::routing::{get, post};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::timefmt::rfc3339_beijing;
use paygate_http::V3Path as Path;
use paygate_wxpay::certificates::build_certificates_response;
use paygate_wxpay::crypto::aead::AeadAlgorithm;
use paygate_wxpay::models::bills::parse_query_validated;
use paygate_wxpay::models::certificates::{AlgorithmType, CertificatesQuery};
use paygate_wxpay::models::payments::{
    CloseRequest, CodeUrlResponse, H5UrlResponse, PartnerCloseRequest, PartnerPrepayRequest,
    PartnerQueryOrderQuery, PrepayIdResponse, PrepayRequest, QueryOrderQuery, TradeType,
};
use paygate_wxpay::models::refunds::{AbnormalRefundRequest, RefundRequest};
use paygate_wxpay::notify::Notification;
use paygate_wxpay::rules::{Validate, parse_json};
use serde::de::DeserializeOwned;

use crate::accounts::{Account, AccountKind};
use crate::notify::Envelope;
use crate::server::{ApiFail, ApiResult, AppState, Caller, no_content, ok_json};
use crate::state::{Order, Outgoing, OutgoingKind, Owner, PrepayInput, RefundInput};
use crate::views;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v3/pay/transactions/{product}", post(prepay_direct))
        .route(
            "/v3/pay/partner/transactions/{product}",
            post(prepay_partner),
        )
        .route(
            "/v3/pay/transactions/id/{transaction_id}",
            get(query_direct_by_id),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            get(query_direct_by_out_trade_no),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            post(close_direct),
        )
        .route(
            "/v3/pay/partner/transactions/id/{transaction_id}",
            get(query_partner_by_id),
        )
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{out_trade_no}",
            get(query_partner_by_out_trade_no),
        )
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{out_trade_no}/close",
            post(close_partner),
        )
        .route("/v3/refund/domestic/refunds", post(create_refund))
        .route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            get(query_refund),
        )
        .route(
            "/v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund",
            post(apply_abnormal_refund),
        )
        .route("/v3/certificates", get(certificates))
        .merge(crate::api_profitsharing::routes())
        .merge(crate::bills::routes())
}

// ---- who may act ----

fn account(app: &AppState, mchid: &str) -> Result<Account, ApiFail> {
    app.directory()
        .account(mchid)
        .cloned()
        .ok_or_else(|| ApiFail(ApiError::new(ErrorCode::MchNotExists, "商户号不存在")))
}

/// The signer must be the merchant the body names (§1.1).
fn same_signer(caller: &Caller, mchid: &str) -> Result<(), ApiFail> {
    if caller.mchid != mchid {
        return Err(ApiFail(ApiError::new(
            ErrorCode::InvalidRequest,
            "http header中的mchid与post payload中的mchid不匹配",
        )));
    }
    Ok(())
}

/// The owner of a call: a direct merchant alone, or a provider with one of its sub-merchants.
pub(crate) fn owner(
    app: &AppState,
    caller: &Caller,
    sub_mchid: Option<&str>,
) -> Result<(Owner, Account), ApiFail> {
    let mut account = account(app, &caller.mchid)?;
    if let Some(sub) = sub_mchid {
        let unknown =
            account.kind == AccountKind::ServiceProvider && !account.subs.contains_key(sub);
        if unknown
            && app.auto_onboard_sub_merchants
            && paygate_wxpay::rules::check_id("/sub_mchid", sub, 32).is_ok()
        {
            let mut directory = app.directory.write().unwrap_or_else(|p| p.into_inner());
            if let Some(onboarded) = directory.onboard_sub_merchant(&account.mchid, sub, None) {
                account.subs.insert(onboarded.sub_mchid.clone(), onboarded);
            }
        }
    }
    let owner = match (&account.kind, sub_mchid) {
        (AccountKind::Direct, None) => Owner {
            mchid: account.mchid.clone(),
            sub_mchid: None,
        },
        (AccountKind::Direct, Some(_)) => {
            return Err(ApiFail(ApiError::new(
                ErrorCode::NoAuth,
                "普通商户无服务商权限，请勿传入 sub_mchid",
            )));
        }
        (AccountKind::ServiceProvider, Some(sub)) if account.subs.contains_key(sub) => Owner {
            mchid: account.mchid.clone(),
            sub_mchid: Some(sub.to_string()),
        },
        (AccountKind::ServiceProvider, Some(_)) => {
            return Err(ApiFail(ApiError::new(
                ErrorCode::NoAuth,
                "特约商户号与服务商不存在受理关系",
            )));
        }
        (AccountKind::ServiceProvider, None) => {
            return Err(ApiFail(ApiError::param(
                "/sub_mchid",
                "服务商模式下 sub_mchid 必填",
            )));
        }
    };
    Ok((owner, account))
}

fn direct_only(account: &Account) -> Result<(), ApiFail> {
    if account.kind != AccountKind::Direct {
        return Err(ApiFail(ApiError::new(
            ErrorCode::NoAuth,
            "服务商请使用服务商模式接口 /v3/pay/partner/…",
        )));
    }
    Ok(())
}

/// Parses a URL query into a model, with the same field rules and error shape as bodies.
pub(crate) fn parse_query<T: DeserializeOwned + Validate>(
    query: Option<String>,
) -> Result<T, ApiFail> {
    Ok(parse_query_validated(&query.unwrap_or_default())?)
}

fn product(segment: &str) -> Result<TradeType, ApiFail> {
    TradeType::from_product(segment).ok_or_else(|| {
        ApiFail(ApiError::new(ErrorCode::InvalidRequest, "不支持的支付产品").with_status(404))
    })
}

// ---- prepay, query, close (§4.1–4.5) ----

fn fingerprint<T: serde::Serialize>(trade: TradeType, request: &T) -> String {
    // serde_json's map is ordered, so equal parameters give equal strings whatever the
    // client's key order or whitespace.
    let value = serde_json::to_value(request).unwrap_or_default();
    format!("{}:{value}", trade.as_str())
}

fn prepay_answer(order: &Order) -> ApiResult {
    match order.input.trade {
        TradeType::Native => ok_json(&CodeUrlResponse {
            code_url: order.code_url.clone(),
        }),
        TradeType::Mweb => ok_json(&H5UrlResponse {
            h5_url: format!(
                "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={}&package={}",
                order.prepay_id,
                crate::ids::token(10)
            ),
        }),
        _ => ok_json(&PrepayIdResponse {
            prepay_id: order.prepay_id.clone(),
        }),
    }
}

async fn prepay_direct(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(segment): Path<String>,
    body: Bytes,
) -> ApiResult {
    let trade = product(&segment)?;
    let req: PrepayRequest = parse_json(&body)?;
    req.validate_for(trade)?;
    same_signer(&caller, &req.mchid)?;
    let (owner, account) = owner(&app, &caller, None)?;
    direct_only(&account)?;
    if req.appid != account.appid {
        return Err(ApiFail(ApiError::new(
            ErrorCode::AppidMchidNotMatch,
            "appid和mch_id不匹配",
        )));
    }
    let input = PrepayInput {
        owner,
        appid: req.appid.clone(),
        sub_appid: None,
        trade,
        out_trade_no: req.out_trade_no.clone(),
        description: req.description.clone(),
        attach: req.attach.clone(),
        notify_url: req.notify_url.clone(),
        total_fen: req.amount.total,
        currency: req.amount.currency_or_cny().to_string(),
        time_expire: req.time_expire_at()?,
        openid: req.payer.as_ref().map(|p| p.openid.clone()),
        sp_openid: None,
        sub_openid: None,
        profit_sharing: req
            .settle_info
            .as_ref()
            .and_then(|s| s.profit_sharing)
            .unwrap_or(false),
        device_id: req.scene_info.as_ref().and_then(|s| s.device_id.clone()),
        fingerprint: fingerprint(trade, &req),
    };
    let order = app.store().prepay(input, app.clock.now())?;
    prepay_answer(&order)
}

async fn prepay_partner(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(segment): Path<String>,
    body: Bytes,
) -> ApiResult {
    let trade = product(&segment)?;
    let req: PartnerPrepayRequest = parse_json(&body)?;
    req.validate_for(trade)?;
    same_signer(&caller, &req.sp_mchid)?;
    let (owner, account) = owner(&app, &caller, Some(&req.sub_mchid))?;
    if req.sp_appid != account.appid {
        return Err(ApiFail(ApiError::new(
            ErrorCode::AppidMchidNotMatch,
            "sp_appid和sp_mchid不匹配",
        )));
    }
    if let Some(sub_appid) = &req.sub_appid {
        let bound = account
            .subs
            .get(&req.sub_mchid)
            .is_some_and(|s| &s.sub_appid == sub_appid);
        if !bound {
            return Err(ApiFail(ApiError::new(
                ErrorCode::AppidMchidNotMatch,
                "sub_appid和sub_mchid不匹配",
            )));
        }
    }
    let input = PrepayInput {
        owner,
        appid: req.sp_appid.clone(),
        sub_appid: req.sub_appid.clone(),
        trade,
        out_trade_no: req.out_trade_no.clone(),
        description: req.description.clone(),
        attach: req.attach.clone(),
        notify_url: req.notify_url.clone(),
        total_fen: req.amount.total,
        currency: req.amount.currency_or_cny().to_string(),
        time_expire: req.time_expire_at()?,
        openid: None,
        sp_openid: req.payer.as_ref().and_then(|p| p.sp_openid.clone()),
        sub_openid: req.payer.as_ref().and_then(|p| p.sub_openid.clone()),
        profit_sharing: req
            .settle_info
            .as_ref()
            .and_then(|s| s.profit_sharing)
            .unwrap_or(false),
        device_id: req.scene_info.as_ref().and_then(|s| s.device_id.clone()),
        fingerprint: fingerprint(trade, &req),
    };
    let order = app.store().prepay(input, app.clock.now())?;
    prepay_answer(&order)
}

fn direct_owner(app: &AppState, caller: &Caller, query: Option<String>) -> Result<Owner, ApiFail> {
    let q: QueryOrderQuery = parse_query(query)?;
    same_signer(caller, &q.mchid)?;
    let (owner, account) = owner(app, caller, None)?;
    direct_only(&account)?;
    Ok(owner)
}

fn partner_owner(app: &AppState, caller: &Caller, query: Option<String>) -> Result<Owner, ApiFail> {
    let q: PartnerQueryOrderQuery = parse_query(query)?;
    same_signer(caller, &q.sp_mchid)?;
    Ok(owner(app, caller, Some(&q.sub_mchid))?.0)
}

async fn query_direct_by_id(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(transaction_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let owner = direct_owner(&app, &caller, query)?;
    let order = app
        .store()
        .query_by_transaction_id(&owner, &transaction_id, app.clock.now())?;
    ok_json(&views::transaction(&order))
}

async fn query_direct_by_out_trade_no(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_trade_no): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let owner = direct_owner(&app, &caller, query)?;
    let order = app
        .store()
        .query_by_out_trade_no(&owner, &out_trade_no, app.clock.now())?;
    ok_json(&views::transaction(&order))
}

async fn query_partner_by_id(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(transaction_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let owner = partner_owner(&app, &caller, query)?;
    let order = app
        .store()
        .query_by_transaction_id(&owner, &transaction_id, app.clock.now())?;
    ok_json(&views::transaction(&order))
}

async fn query_partner_by_out_trade_no(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_trade_no): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let owner = partner_owner(&app, &caller, query)?;
    let order = app
        .store()
        .query_by_out_trade_no(&owner, &out_trade_no, app.clock.now())?;
    ok_json(&views::transaction(&order))
}

async fn close_direct(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: CloseRequest = parse_json(&body)?;
    same_signer(&caller, &req.mchid)?;
    let (owner, account) = owner(&app, &caller, None)?;
    direct_only(&account)?;
    app.store().close(&owner, &out_trade_no, app.clock.now())?;
    no_content()
}

async fn close_partner(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: PartnerCloseRequest = parse_json(&body)?;
    same_signer(&caller, &req.sp_mchid)?;
    let (owner, _) = owner(&app, &caller, Some(&req.sub_mchid))?;
    app.store().close(&owner, &out_trade_no, app.clock.now())?;
    no_content()
}

// ---- refunds (§4.7) ----

async fn create_refund(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: RefundRequest = parse_json(&body)?;
    let (owner, _) = owner(&app, &caller, req.sub_mchid.as_deref())?;
    let input = RefundInput {
        owner,
        transaction_id: req.transaction_id.clone(),
        out_trade_no: req.out_trade_no.clone(),
        out_refund_no: req.out_refund_no.clone(),
        reason: req.reason.clone(),
        notify_url: req.notify_url.clone(),
        refund_fen: req.amount.refund,
        total_fen: req.amount.total,
        currency: req.amount.currency.clone(),
        funds_account: None,
    };
    let abnormal = crate::faults::roll(app.faults_for(&caller.mchid).refund_abnormal_rate_ppm);
    let delay = app.scaled(app.delays.refund);
    let refund = app
        .store()
        .create_refund(input, abnormal, delay, app.clock.now())?;
    ok_json(&views::refund(&refund))
}

#[derive(serde::Deserialize)]
struct SubMchidQuery {
    #[serde(default)]
    sub_mchid: Option<String>,
}

impl Validate for SubMchidQuery {
    fn validate(&self) -> Result<(), ApiError> {
        match &self.sub_mchid {
            Some(sub) => paygate_wxpay::rules::check_id("/sub_mchid", sub, 32),
            None => Ok(()),
        }
    }
}

async fn query_refund(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(out_refund_no): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: SubMchidQuery = parse_query(query)?;
    let (owner, _) = owner(&app, &caller, q.sub_mchid.as_deref())?;
    settle_due(&app);
    let refund = app.store().query_refund(&owner, &out_refund_no)?;
    ok_json(&views::refund(&refund))
}

async fn apply_abnormal_refund(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(refund_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: AbnormalRefundRequest = parse_json(&body)?;
    let (owner, _) = owner(&app, &caller, req.sub_mchid.as_deref())?;
    let delay = app.scaled(app.delays.refund);
    let refund = app.store().apply_abnormal_refund(
        &owner,
        &refund_id,
        &req.out_refund_no,
        delay,
        app.clock.now(),
    )?;
    ok_json(&views::refund(&refund))
}

// ---- platform certificates (§4.9) ----

async fn certificates(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: CertificatesQuery = parse_query(query)?;
    let account = account(&app, &caller.mchid)?;
    // SM2 platform keys are served in public-key mode only: there is no SM2 certificate.
    let pems: Vec<String> = match q.algorithm_type {
        Some(AlgorithmType::Sm2) => Vec::new(),
        _ => vec![app.directory().platform.cert_pem.clone()],
    };
    let refs: Vec<&str> = pems.iter().map(String::as_str).collect();
    let response = build_certificates_response(
        &refs,
        AeadAlgorithm::Aes256Gcm,
        account.apiv3_key.as_bytes(),
    )
    .map_err(|e| ApiError::new(ErrorCode::SystemError, e.to_string()))?;
    ok_json(&response)
}

// ---- time and notifications ----

/// Settles due refunds, shares and returns, and sends what they announce.
pub fn settle_due(app: &Arc<AppState>) {
    let now = app.clock.now();
    let mut out = Vec::new();
    {
        let mut store = app.store();
        store.settle_refunds(now, &mut out);
        store.settle_shares(now);
    }
    for outgoing in out {
        emit(app, outgoing);
    }
}

/// Seals and dispatches one notification, signed with the platform key the merchant last
/// asked for (public key or certificate), like WeChat Pay during a key migration.
pub fn emit(app: &Arc<AppState>, outgoing: Outgoing) {
    let plaintext = {
        let store = app.store();
        match &outgoing.kind {
            OutgoingKind::Transaction { key } => store.orders.get(key).map(|o| {
                (
                    o.input.out_trade_no.clone(),
                    serde_json::to_vec(&views::transaction(o)),
                )
            }),
            OutgoingKind::Refund { key } => store.refunds.get(key).map(|r| {
                (
                    r.out_refund_no.clone(),
                    serde_json::to_vec(&views::refund_notification(r)),
                )
            }),
        }
    };
    let Some((reference, Ok(plaintext))) = plaintext else {
        return;
    };
    let Ok(account) = account(app, &outgoing.mchid) else {
        return;
    };
    let now = app.clock.now();
    let sealed = Notification::seal(
        account.aead(),
        account.apiv3_key.as_bytes(),
        outgoing.event_type,
        outgoing.summary,
        outgoing.original_type,
        outgoing.associated_data,
        &plaintext,
        uuid::Uuid::new_v4().to_string(),
        rfc3339_beijing(now),
    );
    let Ok(notification) = sealed else { return };
    let Ok(body) = serde_json::to_vec(&notification) else {
        return;
    };
    let (key, serial) = {
        let directory = app.directory();
        let preferred = app.notify_serial(&account.mchid);
        let scheme = match account.scheme {
            crate::accounts::AccountScheme::Rsa => {
                paygate_wxpay::crypto::SignatureScheme::Rsa2048Sha256
            }
            crate::accounts::AccountScheme::Sm2 => {
                paygate_wxpay::crypto::SignatureScheme::Sm2WithSm3
            }
        };
        let (key, serial) = directory
            .platform
            .response_key(preferred.as_deref(), scheme);
        (key.clone(), serial.to_string())
    };
    let envelope = Envelope {
        id: notification.id.clone(),
        mchid: account.mchid.clone(),
        url: outgoing.url,
        event_type: outgoing.event_type.to_string(),
        reference,
        body,
        key,
        serial,
    };
    app.notifier
        .dispatch(envelope, app.faults_for(&account.mchid).notify);
}
