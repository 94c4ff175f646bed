//! The simulator's HTTP edge: shared state, the V3 authentication and response-signing
//! layer, fault injection at the door, and the error shape. Handlers live in `api` and
//! `sandbox`; they see an authenticated [`Caller`] and return bytes or an [`ApiFail`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_wxpay::crypto::SignatureScheme;
use paygate_wxpay::server::{KeyLookup, NonceCache, replay_error, request_id, verify_request};

use crate::accounts::Directory;
use crate::clock::SimClock;
use crate::faults::{Decision, Faults};
use crate::notify::Notifier;
use crate::state::{Delays, Store};

/// Requests larger than this are refused before any parsing.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

pub struct AppState {
    pub directory: RwLock<Directory>,
    pub store: Mutex<Store>,
    pub clock: Arc<SimClock>,
    pub faults: RwLock<HashMap<String, Faults>>,
    pub notifier: Arc<Notifier>,
    pub bills: Mutex<crate::bills::BillCache>,
    pub nonces: Mutex<NonceCache>,
    pub base_url: String,
    pub kit_dir: PathBuf,
    pub delays: Delays,
    pub auto_onboard_sub_merchants: bool,
    /// The platform key each account last asked for, which its notifications are signed with.
    pub notify_serials: RwLock<HashMap<String, String>>,
}

impl AppState {
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn directory(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults_for(&self, mchid: &str) -> Faults {
        let faults = self.faults.read().unwrap_or_else(|p| p.into_inner());
        faults.get(mchid).cloned().unwrap_or_default()
    }

    pub fn notify_serial(&self, mchid: &str) -> Option<String> {
        self.notify_serials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(mchid)
            .cloned()
    }

    fn remember_serial(&self, caller: &Caller) {
        let Some(serial) = &caller.wechatpay_serial else {
            return;
        };
        let known = {
            let p = &self.directory().platform;
            serial == &p.pub_key_id || serial == &p.cert_serial || serial == &p.sm2_key_id
        };
        if known && self.notify_serial(&caller.mchid).as_ref() != Some(serial) {
            let mut serials = self
                .notify_serials
                .write()
                .unwrap_or_else(|p| p.into_inner());
            serials.insert(caller.mchid.clone(), serial.clone());
        }
    }

    pub fn scaled(&self, d: Duration) -> time::Duration {
        time::Duration::try_from(self.clock.scaled(d)).unwrap_or(time::Duration::ZERO)
    }
}

/// The authenticated signer of a V3 request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub mchid: String,
    pub scheme: SignatureScheme,
    /// The `Wechatpay-Serial` the client sent: which platform key it wants.
    pub wechatpay_serial: Option<String>,
}

pub use paygate_http::{ApiFail, ApiResult, Unsigned, json_response, no_content, ok_json};

/// The operation a path belongs to, for fault filters.
fn operation(method: &axum::http::Method, path: &str) -> &'static str {
    if path.starts_with("/v3/refund") {
        "refund"
    } else if path.starts_with("/v3/profitsharing") {
        "profitsharing"
    } else if path.starts_with("/v3/bill") {
        "bill"
    } else if path.starts_with("/v3/certificates") {
        "certificates"
    } else if path.ends_with("/close") {
        "close"
    } else if method == axum::http::Method::GET {
        "query"
    } else {
        "prepay"
    }
}

/// Authenticates the request over its raw bytes, applies faults, runs the handler and
/// signs whatever it answers (204 included).
async fn v3_layer(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let request_id = request_id();
    let (parts, body) = req.into_parts();
    let outcome = async {
        let body = axum::body::to_bytes(body, BODY_BYTES_MAX)
            .await
            .map_err(|_| {
                ApiFail(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("请求体超过 {BODY_BYTES_MAX} 字节"),
                ))
            })?;
        let caller = authenticate(&app, &parts.method, &parts.uri, &parts.headers, &body)?;
        app.remember_serial(&caller);
        let op = operation(&parts.method, parts.uri.path());
        let decision = app.faults_for(&caller.mchid).decide(op);
        let mut req = Request::from_parts(parts, Body::from(body));
        req.extensions_mut().insert(caller.clone());
        match decision {
            Decision::Proceed { delay_ms } => {
                sleep_ms(delay_ms).await;
                Ok((caller, next.run(req).await))
            }
            Decision::Error { code, delay_ms } => {
                sleep_ms(delay_ms).await;
                let code = ErrorCode::parse(&code).unwrap_or(ErrorCode::SystemError);
                Err(ApiFail(ApiError::of(code)))
            }
            Decision::Timeout { hold_ms } => {
                // The work is done, the answer is not: the caller cannot tell which.
                let _ = next.run(req).await;
                sleep_ms(hold_ms).await;
                Err(ApiFail(ApiError::new(ErrorCode::SystemError, "系统超时")))
            }
        }
    }
    .await;
    let (caller, response) = match outcome {
        Ok((caller, response)) => (Some(caller), response),
        Err(fail) => (None, fail.into_response()),
    };
    finish(&app, caller.as_ref(), response, request_id).await
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn authenticate(
    app: &AppState,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Caller, ApiFail> {
    let now = app.clock.real_unix();
    // Verified over the raw request target and body bytes, never a re-encoding.
    let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let auth = verify_request(
        authorization,
        method.as_str(),
        target,
        body,
        now,
        |mchid, serial| {
            let directory = app.directory();
            if directory.account(mchid).is_none() {
                return KeyLookup::UnknownMerchant;
            }
            match directory
                .api_keys
                .get(&(mchid.to_string(), serial.to_string()))
            {
                Some(key) => KeyLookup::Key(key.clone()),
                None => KeyLookup::UnknownSerial,
            }
        },
    )?;
    let fresh = app
        .nonces
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check_and_insert(&auth.mchid, &auth.nonce_str, now);
    if !fresh {
        return Err(ApiFail(replay_error()));
    }
    let wechatpay_serial = headers
        .get("Wechatpay-Serial")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(Caller {
        mchid: auth.mchid,
        scheme: auth.scheme,
        wechatpay_serial,
    })
}

/// Signs the answer with the platform key the caller asked for (or the certificate's).
async fn finish(
    app: &AppState,
    caller: Option<&Caller>,
    response: Response,
    request_id: String,
) -> Response {
    let (key, serial) = {
        let directory = app.directory();
        let (key, serial) = directory.platform.response_key(
            caller.and_then(|c| c.wechatpay_serial.as_deref()),
            caller.map_or(SignatureScheme::Rsa2048Sha256, |c| c.scheme),
        );
        (key.clone(), serial.to_string())
    };
    paygate_http::sign_answer(response, &key, &serial, &request_id)
        .await
        .0
}

pub fn router(app: Arc<AppState>) -> Router {
    let v3 = crate::api::routes()
        .fallback(paygate_http::not_found)
        .method_not_allowed_fallback(paygate_http::method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), v3_layer));
    Router::new()
        .merge(v3)
        .nest("/sandbox/v1", crate::sandbox::routes())
        .fallback(paygate_http::not_found)
        .method_not_allowed_fallback(paygate_http::method_not_allowed)
        .with_state(app)
}

/// Serves until the listener fails; the ticker settles refunds and shares on time.
pub async fn serve(app: Arc<AppState>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let ticker = Arc::clone(&app);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(20));
        loop {
            interval.tick().await;
            crate::api::settle_due(&ticker);
        }
    });
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_follow_paths() {
        use axum::http::Method;
        assert_eq!(
            operation(&Method::POST, "/v3/pay/transactions/native"),
            "prepay"
        );
        assert_eq!(
            operation(&Method::GET, "/v3/pay/transactions/id/1"),
            "query"
        );
        assert_eq!(
            operation(&Method::POST, "/v3/pay/transactions/out-trade-no/x/close"),
            "close"
        );
        assert_eq!(
            operation(&Method::POST, "/v3/refund/domestic/refunds"),
            "refund"
        );
    }
}
