//! The gateway's HTTP edge: shared state, the merchant authentication layer (raw bytes,
//! any parameter order, ±5 min, no replays; disabled merchants get NO_AUTH) and the signing
//! of every answer (204 included) with the platform key the request asks for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paygate_channel::WxChannel;
use paygate_core::error::{ApiError, ErrorCode};
use paygate_store::{MerchantRecord, Store};
use paygate_wxpay::server::{NonceCache, replay_error, request_id, verify_request};
use paygate_wxpay::sign::Authorization;

use crate::config::Config;
use crate::keys::PlatformKeys;
use crate::merchants::{MerchantCache, key_lookup};

/// Requests larger than this are refused before parsing.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Per-order locks are striped: concurrent calls on one order serialize within a node.
const ORDER_LOCK_STRIPES: usize = 1024;

pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub keys: PlatformKeys,
    pub merchants: MerchantCache,
    pub channels: HashMap<String, Arc<WxChannel>>,
    pub default_channel: String,
    /// Channel profiles, the router and each merchant's sub-merchant per channel.
    pub routing: crate::routing::Routing,
    /// Replay refusal within one node; on PostgreSQL the store's nonce table is used instead,
    /// shared by every node.
    pub nonces: Mutex<NonceCache>,
    /// Per-merchant token buckets; `None`: no limit configured.
    pub rate_limiter: Option<crate::ratelimit::RateLimiter>,
    pub base_url: String,
    pub operator_token: String,
    pub order_locks: Vec<tokio::sync::Mutex<()>>,
    /// Wakes the outbox worker when a notification was just written.
    pub outbox_wake: tokio::sync::Notify,
    /// Set when an orderly stop begins (shutdown.rs).
    pub shutdown: crate::shutdown::Shutdown,
    pub http: reqwest::Client,
    pub time_scale: u32,
    pub metrics: crate::metrics::Metrics,
    /// The risk engine, unless disabled by configuration.
    pub risk: Option<Arc<paygate_risk::RiskEngine>>,
    /// The stored rule sets, the reloader and their admin view.
    pub risk_rules: Arc<crate::risk_rules::RiskRules>,
    /// The ledger journal's signing key (a file, never the database) and origin (fees.rs).
    pub journal: crate::fees::Journal,
}

impl AppState {
    pub fn channel(&self, id: &str) -> Result<&Arc<WxChannel>, ApiError> {
        self.channels.get(id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::SystemError,
                format!("channel {id} is not configured"),
            )
        })
    }

    pub fn order_lock(&self, mchid: &str, out_trade_no: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (mchid, out_trade_no).hash(&mut h);
        &self.order_locks[(h.finish() as usize) % self.order_locks.len()]
    }

    pub fn new_order_locks() -> Vec<tokio::sync::Mutex<()>> {
        (0..ORDER_LOCK_STRIPES)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect()
    }

    /// A protocol delay divided by the sandbox time scale.
    pub fn scaled(&self, d: std::time::Duration) -> std::time::Duration {
        (d / self.time_scale.max(1)).max(std::time::Duration::from_millis(1))
    }
}

/// The authenticated merchant of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub merchant: MerchantRecord,
    /// The `Wechatpay-Serial` sent, if it names one of the platform keys.
    pub wechatpay_serial: Option<String>,
}

pub use paygate_http::{
    ApiFail, ApiResult, Unsigned, json_response, no_content, not_found, ok_json,
};

pub fn internal(e: impl std::fmt::Display) -> ApiFail {
    tracing::error!(error = %e, "internal error");
    ApiFail(ApiError::new(
        ErrorCode::SystemError,
        "系统错误，请使用相同参数重试",
    ))
}

async fn authenticate(
    app: &AppState,
    method: &str,
    target: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Caller, ApiFail> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // The merchant is fetched (async, cached) before the synchronous verification.
    let mchid = authorization
        .and_then(|a| Authorization::parse(a).ok())
        .map(|a| a.mchid);
    let merchant = match &mchid {
        Some(m) => app
            .merchants
            .get(app.store.as_ref(), m)
            .await
            .map_err(internal)?,
        None => None,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let auth = verify_request(authorization, method, target, body, now, |_, serial| {
        key_lookup(merchant.as_ref(), serial)
    })?;
    if !fresh_nonce(app, &auth.mchid, &auth.nonce_str, now).await? {
        return Err(ApiFail(replay_error()));
    }
    let merchant = merchant.ok_or_else(|| ApiFail(ApiError::of(ErrorCode::MchNotExists)))?;
    if let Some(limiter) = &app.rate_limiter {
        if !limiter.admit(&auth.mchid, std::time::Instant::now()) {
            return Err(ApiFail(ApiError::of(ErrorCode::FrequencyLimited)));
        }
    }
    let wechatpay_serial = headers
        .get("Wechatpay-Serial")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| app.keys.current().knows(s))
        .map(str::to_string);
    Ok(Caller {
        merchant: merchant.record,
        wechatpay_serial,
    })
}

/// True the first time `(mchid, nonce)` is seen within the timestamp window: in this process
/// on SQLite (one node), in the store's nonce table on PostgreSQL (every node sees it).
async fn fresh_nonce(app: &AppState, mchid: &str, nonce: &str, now: i64) -> Result<bool, ApiFail> {
    if app.store.backend() == "postgres" {
        let now = time::OffsetDateTime::from_unix_timestamp(now).map_err(internal)?;
        // A timestamp is accepted up to the window either side of now: a nonce must be
        // remembered for twice the window to cover both.
        let until = now + time::Duration::seconds(2 * paygate_wxpay::server::TIMESTAMP_WINDOW_S);
        return app
            .store
            .remember_nonce(mchid, nonce, until, now)
            .await
            .map_err(internal);
    }
    Ok(app
        .nonces
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check_and_insert(mchid, nonce, now))
}

/// Authenticates merchant calls over their raw bytes and signs whatever is answered.
pub async fn merchant_layer(
    State(app): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let request_id = request_id();
    let endpoint = crate::metrics::endpoint(req.method().as_str(), req.uri().path());
    let span = tracing::info_span!("request", request_id = %request_id, endpoint = %endpoint);
    // Inside the span, the channel calls made while answering log the merchant's request id.
    let (response, upstream) = paygate_wxpay::client::upstream::measured(
        tracing::Instrument::instrument(authenticated(&app, req, next, &request_id), span),
    )
    .await;
    app.metrics.observe_request(
        endpoint,
        response.status().as_u16(),
        started.elapsed(),
        upstream,
    );
    response
}

async fn authenticated(
    app: &Arc<AppState>,
    req: Request,
    next: Next,
    request_id: &str,
) -> Response {
    let (parts, body) = req.into_parts();
    let requested_serial = parts
        .headers
        .get("Wechatpay-Serial")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string());
    let response = async {
        let body = axum::body::to_bytes(body, BODY_BYTES_MAX)
            .await
            .map_err(|_| {
                ApiFail(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("请求体超过 {BODY_BYTES_MAX} 字节"),
                ))
            })?;
        // Verified over the raw request target as received, percent-encoding included.
        let target = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .to_string();
        let caller =
            authenticate(app, parts.method.as_str(), &target, &parts.headers, &body).await?;
        let mut req = Request::from_parts(parts, Body::from(body));
        req.extensions_mut().insert(caller);
        Ok::<_, ApiFail>(next.run(req).await)
    }
    .await
    .unwrap_or_else(IntoResponse::into_response);
    sign(app, requested_serial.as_deref(), response, request_id).await
}

async fn sign(
    app: &AppState,
    requested_serial: Option<&str>,
    response: Response,
    request_id: &str,
) -> Response {
    let keys = app.keys.current();
    let (key, serial) = keys.answer_key(requested_serial);
    let (response, signing) = paygate_http::sign_answer(response, key, serial, request_id).await;
    app.metrics.observe_answer_signing(signing);
    response
}
