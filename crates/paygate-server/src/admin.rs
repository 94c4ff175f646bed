//! The operator's admin API under `/admin/v1/`, behind a bearer token: merchants (create
//! with their kit, disable/enable, register a certificate), an order with its attempts,
//! notifications, deliveries and repairs, and notification re-sends.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use paygate_core::error::{ApiError, ErrorCode, decode_json};
use paygate_store::{MerchantCertRecord, MerchantStatus, StoreError};
use serde::Deserialize;

use crate::http::{ApiFail, ApiResult, AppState, internal, ok_json};
use crate::merchants::{NewMerchant, OnboardError, onboard};

pub fn routes(app: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/admin/v1/merchants",
            post(create_merchant).get(list_merchants),
        )
        .route("/admin/v1/merchants/{mchid}", get(get_merchant))
        .route("/admin/v1/merchants/{mchid}/disable", post(disable))
        .route("/admin/v1/merchants/{mchid}/enable", post(enable))
        .route(
            "/admin/v1/merchants/{mchid}/certificates",
            post(add_certificate),
        )
        .route("/admin/v1/orders/{transaction_id}", get(order))
        .route("/admin/v1/refunds/duplicates", get(duplicate_refunds))
        .route("/admin/v1/notifications/{id}", get(notification))
        .route("/admin/v1/risk/decisions", get(risk_queue))
        .route("/admin/v1/risk/decisions/{mchid}/{reference}", get(risk_of))
        .merge(crate::risk_rules::routes())
        .merge(crate::ledger_admin::routes())
        .merge(crate::recon_admin::routes())
        .merge(crate::settlement::routes())
        .merge(crate::platform_keys_admin::routes())
        .route("/admin/v1/notifications/{id}/resend", post(resend))
        .route("/admin/v1/notifications/resend", post(resend_many))
        .route("/admin/v1/channels", get(channels))
        .route("/admin/v1/channels/metrics", get(channel_metrics))
        .route("/admin/v1/audit", get(crate::audit_trail::list))
        .route(
            "/admin/v1/audit/verify",
            get(crate::audit_trail::verify_handler),
        )
        .route(
            "/admin/v1/channels/{id}",
            get(channels).patch(change_channel),
        )
        .layer(axum::middleware::from_fn_with_state(app, operator_only))
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn operator_only(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !same_token(presented.as_bytes(), app.operator_token.as_bytes()) {
        return ApiFail(ApiError::new(
            ErrorCode::SignError,
            "需要有效的运维令牌 (Authorization: Bearer …)",
        ))
        .into_response();
    }
    // Every admin call that changes something goes to the audit trail (audit_trail.rs).
    if req.method() == axum::http::Method::GET {
        return next.run(req).await;
    }
    crate::audit_trail::recorded(&app, req, next).await
}

fn onboard_fail(e: OnboardError) -> ApiFail {
    match e {
        OnboardError::Invalid(m) => ApiFail(ApiError::new(ErrorCode::ParamError, m)),
        other => internal(other),
    }
}

fn not_found(what: &str) -> ApiFail {
    ApiFail(ApiError::new(
        ErrorCode::ResourceNotExists,
        format!("{what}不存在"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMerchant {
    name: String,
    #[serde(default)]
    cert_pem: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    sub_mchid: Option<String>,
    #[serde(default)]
    sub_appid: Option<String>,
}

async fn create_merchant(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: CreateMerchant = decode_json(&body)?;
    let channel_id = req
        .channel_id
        .unwrap_or_else(|| app.default_channel.clone());
    let channel = app
        .channels
        .get(&channel_id)
        .ok_or_else(|| ApiFail(ApiError::param("/channel_id", "no such channel")))?;
    let mapping = crate::channel_mapping(channel.config(), req.sub_mchid, req.sub_appid)
        .map_err(onboard_fail)?;
    let onboarded = onboard(
        app.store.as_ref(),
        &app.keys,
        &app.base_url,
        NewMerchant {
            name: req.name,
            cert_pem: req.cert_pem,
            mapping,
        },
    )
    .await
    .map_err(onboard_fail)?;
    tracing::info!(mchid = %onboarded.merchant.mchid, "merchant created by an operator");
    ok_json(&serde_json::json!({"merchant": onboarded.merchant_view(), "kit": onboarded.kit}))
}

async fn list_merchants(State(app): State<Arc<AppState>>) -> ApiResult {
    let merchants = app.store.list_merchants().await.map_err(internal)?;
    ok_json(
        &merchants
            .iter()
            .map(crate::merchants::merchant_view)
            .collect::<Vec<_>>(),
    )
}

async fn get_merchant(State(app): State<Arc<AppState>>, Path(mchid): Path<String>) -> ApiResult {
    let merchant = app
        .store
        .get_merchant(&mchid)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found("商户"))?;
    let certs = app.store.merchant_certs(&mchid).await.map_err(internal)?;
    let serials: Vec<&str> = certs.iter().map(|c| c.serial_no.as_str()).collect();
    ok_json(
        &serde_json::json!({"merchant": crate::merchants::merchant_view(&merchant), "certificate_serials": serials}),
    )
}

async fn set_status(app: &AppState, mchid: &str, status: MerchantStatus) -> ApiResult {
    if !app
        .store
        .set_merchant_status(mchid, status)
        .await
        .map_err(internal)?
    {
        return Err(not_found("商户"));
    }
    app.merchants.forget(mchid);
    tracing::info!(mchid, ?status, "merchant status changed by an operator");
    ok_json(&serde_json::json!({"mchid": mchid, "status": status}))
}

async fn disable(State(app): State<Arc<AppState>>, Path(mchid): Path<String>) -> ApiResult {
    set_status(&app, &mchid, MerchantStatus::Disabled).await
}

async fn enable(State(app): State<Arc<AppState>>, Path(mchid): Path<String>) -> ApiResult {
    set_status(&app, &mchid, MerchantStatus::Active).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddCertificate {
    pem: String,
}

/// A merchant registers its own API certificate (or rotates to a new one).
async fn add_certificate(
    State(app): State<Arc<AppState>>,
    Path(mchid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: AddCertificate = decode_json(&body)?;
    app.store
        .get_merchant(&mchid)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found("商户"))?;
    let info = paygate_wxpay::crypto::cert::parse_certificate_pem(&req.pem)
        .map_err(|e| ApiFail(ApiError::param("/pem", format!("not a certificate: {e}"))))?;
    let cert = MerchantCertRecord {
        mchid: mchid.clone(),
        serial_no: info.serial_no.clone(),
        pem: req.pem,
        created_at: time::OffsetDateTime::now_utc(),
    };
    match app.store.add_merchant_cert(&cert).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiFail(ApiError::new(
                ErrorCode::InvalidRequest,
                "证书序列号已登记",
            )));
        }
        Err(e) => return Err(internal(e)),
    }
    app.merchants.forget(&mchid);
    ok_json(&serde_json::json!({"mchid": mchid, "serial_no": info.serial_no}))
}

async fn order(State(app): State<Arc<AppState>>, Path(transaction_id): Path<String>) -> ApiResult {
    let order = app
        .store
        .get_order_by_transaction_id(&transaction_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found("订单"))?;
    let attempts = app
        .store
        .attempts(&transaction_id)
        .await
        .map_err(internal)?;
    let mut notifications = Vec::new();
    for n in app
        .store
        .notifications_of(&transaction_id)
        .await
        .map_err(internal)?
    {
        let deliveries = app.store.deliveries(&n.id).await.map_err(internal)?;
        notifications.push(serde_json::json!({"notification": n, "deliveries": deliveries}));
    }
    let repairs = app.store.repairs(&transaction_id).await.map_err(internal)?;
    let refunds = app
        .store
        .refunds_of(&transaction_id)
        .await
        .map_err(internal)?;
    // The ledger: the payment's transfers, then each refund's (helper LEDGER).
    let mut ledger = app
        .store
        .ledger_transfers_by_reference(&transaction_id)
        .await
        .map_err(internal)?;
    for r in &refunds {
        ledger.extend(
            app.store
                .ledger_transfers_by_reference(&r.refund_id)
                .await
                .map_err(internal)?,
        );
    }
    ok_json(&serde_json::json!({
        "order": order,
        "transaction": crate::views::transaction(&order),
        "attempts": attempts,
        "notifications": notifications,
        "repairs": repairs,
        "refunds": refunds,
        "ledger_transfers": ledger.iter().map(crate::ledger_admin::transfer_view).collect::<Vec<_>>(),
    }))
}

async fn notification(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    let n = app
        .store
        .get_notification(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found("通知"))?;
    let deliveries = app.store.deliveries(&id).await.map_err(internal)?;
    ok_json(&serde_json::json!({"notification": n, "deliveries": deliveries}))
}

async fn resend(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    if !app
        .store
        .resend_notification(&id, time::OffsetDateTime::now_utc())
        .await
        .map_err(internal)?
    {
        return Err(not_found("通知"));
    }
    app.outbox_wake.notify_one();
    tracing::info!(notification = %id, "notification re-sent by an operator");
    ok_json(&serde_json::json!({"id": id, "state": "PENDING"}))
}

/// At most this many notifications per bulk re-send (one transaction).
const RESEND_IDS_MAX: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResendMany {
    ids: Vec<String>,
}

/// Re-sends many notifications at once (a merchant's endpoint was down): one transaction.
async fn resend_many(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: ResendMany = decode_json(&body)?;
    if req.ids.is_empty() || req.ids.len() > RESEND_IDS_MAX {
        return Err(ApiFail(ApiError::param(
            "/ids",
            format!("between 1 and {RESEND_IDS_MAX} ids, got {}", req.ids.len()),
        )));
    }
    let resent = app
        .store
        .resend_notifications(&req.ids, time::OffsetDateTime::now_utc())
        .await
        .map_err(internal)?;
    app.outbox_wake.notify_one();
    tracing::info!(
        asked = req.ids.len(),
        resent,
        "notifications re-sent by an operator"
    );
    ok_json(&serde_json::json!({"asked": req.ids.len(), "resent": resent}))
}

/// Every channel's profile, health (breaker, windowed success rate and latency) and share
/// of the routing decisions inside the window.
async fn channels(State(app): State<Arc<AppState>>, id: Option<Path<String>>) -> ApiResult {
    let mut view = app.routing.health_json();
    if let Some(Path(id)) = id {
        let one = view["channels"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["id"] == id.as_str()).cloned())
            .ok_or_else(|| not_found("渠道"))?;
        view = one;
    }
    ok_json(&view)
}

/// The same figures in the Prometheus text format.
async fn channel_metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [("Content-Type", "text/plain; version=0.0.4")],
        app.routing.metrics_text(),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelChange {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    reset_breaker: bool,
}

/// Switches a channel on or off, changes its weight or closes its breaker, on this node
/// until restart (the configuration file is the lasting source).
async fn change_channel(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: ChannelChange = decode_json(&body)?;
    let router = &app.routing.router;
    let i = router.index_of(&id).ok_or_else(|| not_found("渠道"))?;
    if let Some(enabled) = req.enabled {
        router.set_enabled(i, enabled);
    }
    if let Some(weight) = req.weight {
        router.set_weight(i, weight);
    }
    if req.reset_breaker {
        router.reset_breaker(i);
    }
    tracing::info!(channel = %id, enabled = ?req.enabled, weight = ?req.weight, reset_breaker = req.reset_breaker, "channel changed by an operator");
    channels(State(app), Some(Path(id))).await
}

#[derive(Deserialize)]
struct RiskQueueQuery {
    #[serde(default = "review")]
    action: String,
    #[serde(default = "fifty")]
    limit: u32,
}

fn review() -> String {
    "REVIEW".into()
}

fn fifty() -> u32 {
    50
}

/// The review queue (or the newest DENY / CHALLENGE decisions): `?action=REVIEW&limit=50`.
async fn risk_queue(
    State(app): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<RiskQueueQuery>,
) -> ApiResult {
    let decisions = app
        .store
        .risk_decisions_by_action(&q.action, q.limit.min(1000))
        .await
        .map_err(internal)?;
    ok_json(&decisions)
}

/// Duplicate payments not given back yet: their refunds in flight, and those the channel
/// closed, whose money stays owed to the payer (refunds payable) for an operator to settle.
async fn duplicate_refunds(State(app): State<Arc<AppState>>) -> ApiResult {
    let refunds = app
        .store
        .duplicate_refunds_open(DUPLICATES_LISTED_MAX)
        .await
        .map_err(internal)?;
    let owed_fen: i64 = refunds
        .iter()
        .filter(|r| r.state == paygate_store::RefundState::Closed)
        .map(|r| r.amount_fen)
        .sum();
    ok_json(&serde_json::json!({
        "count": refunds.len(),
        "closed_owed_fen": owed_fen,
        "refunds": refunds,
    }))
}

/// Duplicate refunds one admin listing shows at most (oldest first).
const DUPLICATES_LISTED_MAX: u32 = 1000;

/// Every kept decision about one order (by out_trade_no) of a merchant.
async fn risk_of(
    State(app): State<Arc<AppState>>,
    Path((mchid, reference)): Path<(String, String)>,
) -> ApiResult {
    ok_json(
        &app.store
            .risk_decisions(&mchid, &reference)
            .await
            .map_err(internal)?,
    )
}
