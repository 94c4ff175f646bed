//! The operator audit trail (issue 7 §6): every admin action is appended to the store's
//! chained journal (`operator_audit`, each entry's HMAC-SM3 over the previous hash and its
//! fields) after the action took effect; `GET /admin/v1/audit` lists it and
//! [`verify`] (`paygate audit verify`) recomputes the chain, naming the first entry that was
//! edited, deleted or forged.

use std::sync::Arc;

use axum::extract::{Query, State};
use paygate_store::Store;
use paygate_store::vault::{AuditVerdict, NewAuditEntry};
use serde::Deserialize;

use crate::http::{ApiResult, AppState, internal, ok_json};

/// Entries per page at most.
pub const AUDIT_PAGE_MAX: u32 = 500;

/// Appends one action. A failure is logged loudly, not hidden: the action itself already
/// took effect (the trail cannot share every action's transaction, see README).
pub async fn record(
    store: &dyn Store,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) {
    let entry = NewAuditEntry {
        at: time::OffsetDateTime::now_utc(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail: detail.to_string(),
    };
    if let Err(e) = store.append_audit(&entry).await {
        tracing::error!(error = %e, action, target, "operator audit entry NOT recorded");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    pub after_seq: i64,
    pub limit: Option<u32>,
}

/// `GET /admin/v1/audit?after_seq=&limit=`: entries oldest first, with whether the chain holds.
pub async fn list(State(app): State<Arc<AppState>>, Query(q): Query<AuditQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(100).clamp(1, AUDIT_PAGE_MAX);
    let entries = app
        .store
        .audit_entries(q.after_seq.max(0), limit)
        .await
        .map_err(internal)?;
    ok_json(&serde_json::json!({ "entries": entries, "count": entries.len() }))
}

/// `GET /admin/v1/audit/verify`.
pub async fn verify_handler(State(app): State<Arc<AppState>>) -> ApiResult {
    let verdict = verify(app.store.as_ref()).await.map_err(internal)?;
    ok_json(&verdict_json(&verdict))
}

pub async fn verify(store: &dyn Store) -> Result<AuditVerdict, paygate_store::StoreError> {
    store.verify_audit().await
}

pub fn verdict_json(v: &AuditVerdict) -> serde_json::Value {
    serde_json::json!({
        "intact": v.broken.is_none(),
        "entries_verified": v.entries,
        "broken": v.broken.as_ref().map(|b| serde_json::json!({"seq": b.seq, "reason": b.reason})),
    })
}

/// Admin request bodies hashed for the trail at most (they are small JSON documents).
const AUDITED_BODY_BYTES_MAX: usize = 1024 * 1024;

/// Runs an admin call that changes something, then appends it to the trail: the route
/// (`POST /admin/v1/merchants/{mchid}/disable`) as the action, the concrete path as the
/// target, the answer's status and the SM3 of the body (never the body: it may carry a
/// certificate, a rule with an openid, ...).
pub async fn recorded(
    app: &AppState,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, AUDITED_BODY_BYTES_MAX).await else {
        return crate::http::ApiFail(paygate_core::error::ApiError::new(
            paygate_core::error::ErrorCode::InvalidRequest,
            format!("请求体超过 {AUDITED_BODY_BYTES_MAX} 字节"),
        ))
        .into_response();
    };
    let route = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let action = format!("{} {route}", parts.method);
    let target = parts.uri.path().to_string();
    let body_sm3 = hex::encode(paygate_vault::sm::sm3(&bytes));
    let response = next
        .run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await;
    let detail = serde_json::json!({
        "status": response.status().as_u16(),
        "body_sm3": body_sm3,
    });
    record(app.store.as_ref(), "operator", &action, &target, detail).await;
    response
}
