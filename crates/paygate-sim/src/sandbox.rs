//! The sandbox control API under `/sandbox/v1/`: plays the payer, closes a bill day,
//! moves business time, injects faults, adds accounts and shows notification deliveries.
//! Never part of the V3 surface, and unsigned: it stands for the real world's people and
//! clocks, not for a merchant.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::routing::{get, post, put};
use paygate_core::error::{ApiError, ErrorCode, decode_json};
use paygate_http::V3Path as Path;
use paygate_wxpay::models::bills::parse_query;
use serde::Deserialize;

use crate::accounts::{AccountKind, AccountScheme};
use crate::faults::Faults;
use crate::server::{ApiFail, ApiResult, AppState, ok_json};
use crate::state::Owner;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/pay", post(pay))
        .route("/bills/close-day", post(close_day))
        .route("/clock/advance", post(advance_clock))
        .route(
            "/faults/{mchid}",
            put(set_faults).get(get_faults).delete(clear_faults),
        )
        .route("/merchants", post(create_merchant))
        .route(
            "/merchants/{sp_mchid}/sub-merchants",
            post(add_sub_merchant),
        )
        .route("/notifications", get(notifications))
}

#[derive(Deserialize)]
struct PayRequest {
    mchid: Option<String>,
    sp_mchid: Option<String>,
    sub_mchid: Option<String>,
    out_trade_no: String,
    result: String,
    openid: Option<String>,
}

async fn pay(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: PayRequest = decode_json(&body)?;
    let owner = match (req.mchid, req.sp_mchid, req.sub_mchid) {
        (Some(mchid), None, None) => Owner {
            mchid,
            sub_mchid: None,
        },
        (None, Some(sp), Some(sub)) => Owner {
            mchid: sp,
            sub_mchid: Some(sub),
        },
        (Some(sp), None, Some(sub)) => Owner {
            mchid: sp,
            sub_mchid: Some(sub),
        },
        _ => return Err(ApiError::param("/mchid", "give mchid, or sp_mchid and sub_mchid").into()),
    };
    let success = match req.result.as_str() {
        "SUCCESS" => true,
        "PAYERROR" => false,
        _ => return Err(ApiError::param("/result", "must be SUCCESS or PAYERROR").into()),
    };
    let now = app.clock.now();
    let (outgoing, order) = {
        let mut store = app.store();
        let outgoing = store.pay(&owner, &req.out_trade_no, success, req.openid, now)?;
        let order = store.query_by_out_trade_no(&owner, &req.out_trade_no, now)?;
        (outgoing, order)
    };
    if let Some(outgoing) = outgoing {
        crate::api::emit(&app, outgoing);
    }
    ok_json(&serde_json::json!({
        "out_trade_no": order.input.out_trade_no,
        "transaction_id": order.transaction_id,
        "trade_state": order.state.as_str(),
    }))
}

#[derive(Deserialize)]
struct CloseDay {
    bill_date: String,
}

async fn close_day(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: CloseDay = decode_json(&body)?;
    let date = paygate_core::timefmt::parse_date(&req.bill_date)
        .ok_or_else(|| ApiError::param("/bill_date", "must be YYYY-MM-DD"))?;
    app.bills
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .close_day(date);
    ok_json(&serde_json::json!({"bill_date": req.bill_date, "closed": true}))
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: Advance = decode_json(&body)?;
    if req.seconds < 0 {
        return Err(ApiError::param("/seconds", "time only moves forward").into());
    }
    app.clock.advance(req.seconds);
    crate::api::settle_due(&app);
    ok_json(&serde_json::json!({"now": paygate_core::timefmt::rfc3339_beijing(app.clock.now())}))
}

fn known_account(app: &AppState, mchid: &str) -> Result<(), ApiFail> {
    if app.directory().account(mchid).is_none() {
        return Err(ApiError::new(
            ErrorCode::MchNotExists,
            format!("no sandbox account {mchid}"),
        )
        .with_status(404)
        .into());
    }
    Ok(())
}

async fn set_faults(
    State(app): State<Arc<AppState>>,
    Path(mchid): Path<String>,
    body: Bytes,
) -> ApiResult {
    known_account(&app, &mchid)?;
    let faults: Faults = decode_json(&body)?;
    for e in &faults.errors {
        if ErrorCode::parse(&e.code).is_none() {
            return Err(
                ApiError::param("/errors/code", format!("unknown V3 code {}", e.code)).into(),
            );
        }
    }
    app.faults
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(mchid, faults.clone());
    ok_json(&faults)
}

async fn get_faults(State(app): State<Arc<AppState>>, Path(mchid): Path<String>) -> ApiResult {
    known_account(&app, &mchid)?;
    ok_json(&app.faults_for(&mchid))
}

async fn clear_faults(State(app): State<Arc<AppState>>, Path(mchid): Path<String>) -> ApiResult {
    known_account(&app, &mchid)?;
    app.faults
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&mchid);
    ok_json(&Faults::default())
}

#[derive(Deserialize)]
struct NewMerchant {
    kind: String,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    sub_merchants: Option<usize>,
}

/// Adds an account and returns its kit (also written under `<kit-dir>/<mchid>/`).
async fn create_merchant(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: NewMerchant = decode_json(&body)?;
    let kind = match req.kind.as_str() {
        "direct" => AccountKind::Direct,
        "partner" => AccountKind::ServiceProvider,
        _ => return Err(ApiError::param("/kind", "must be direct or partner").into()),
    };
    let scheme = match req.scheme.as_deref() {
        None | Some("RSA") => AccountScheme::Rsa,
        Some("SM2") => AccountScheme::Sm2,
        Some(_) => return Err(ApiError::param("/scheme", "must be RSA or SM2").into()),
    };
    let subs = match kind {
        AccountKind::Direct => 0,
        AccountKind::ServiceProvider => req.sub_merchants.unwrap_or(1).clamp(1, 100),
    };
    let created = crate::create_account(&app, kind, scheme, subs)
        .map_err(|e| ApiError::new(ErrorCode::SystemError, e))?;
    ok_json(&created)
}

/// Adds a sub-merchant to a service provider (a gateway onboarding a merchant onto its
/// partner channel does this): `{"sub_mchid", "sub_appid", "max_ratio"}`.
async fn add_sub_merchant(
    State(app): State<Arc<AppState>>,
    Path(sp_mchid): Path<String>,
) -> ApiResult {
    let sub = {
        let mut directory = app.directory.write().unwrap_or_else(|p| p.into_inner());
        let sub = directory.add_sub_merchant(&sp_mchid).ok_or_else(|| {
            ApiError::new(
                ErrorCode::MchNotExists,
                format!("no service provider {sp_mchid}"),
            )
            .with_status(404)
        })?;
        directory
            .save(&app.kit_dir.join(crate::IDENTITY_DIR))
            .map_err(|e| ApiError::new(ErrorCode::SystemError, e.to_string()))?;
        sub
    };
    ok_json(&sub)
}

#[derive(Deserialize)]
struct DeliveryFilter {
    #[serde(default)]
    mchid: Option<String>,
    #[serde(default)]
    reference: Option<String>,
}

async fn notifications(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> ApiResult {
    let filter: DeliveryFilter = parse_query(&query.unwrap_or_default())?;
    ok_json(
        &app.notifier
            .deliveries(filter.mchid.as_deref(), filter.reference.as_deref()),
    )
}
