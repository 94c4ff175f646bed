//! Operator calls on the platform signing keys (issue 7 §2): their status and a rotation.
//! Every non-GET admin call is recorded in the operator trail by admin.rs.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use paygate_core::error::{ApiError, decode_json};
use paygate_store::{PlatformKeyKind, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::http::{ApiFail, ApiResult, AppState, internal, ok_json};
use crate::keys::{self, KeyError};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/platform-keys", get(status))
        .route("/admin/v1/platform-keys/rotate", post(rotate))
}

async fn status(State(app): State<Arc<AppState>>) -> ApiResult {
    ok_json(&app.keys.current().view())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// `CERTIFICATE` or `PUBLIC_KEY`; absent: both.
    #[serde(default)]
    kind: Option<String>,
}

async fn rotate(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        decode_json(&body)?
    };
    let kinds = match req.kind.as_deref() {
        None => vec![PlatformKeyKind::Certificate, PlatformKeyKind::PublicKey],
        Some(k) => vec![keys::parse_kind(k).ok_or_else(|| {
            ApiFail(ApiError::param(
                "/kind",
                "must be CERTIFICATE or PUBLIC_KEY",
            ))
        })?],
    };
    let mut rotated = Vec::new();
    for kind in kinds {
        match keys::rotate(app.store.as_ref(), kind).await {
            Ok(id) => rotated.push(json!({"kind": keys::kind_str(kind), "key_id": id})),
            // Another node rotated this kind at the same instant: its key is the new generation.
            Err(KeyError::Store(StoreError::Conflict(_))) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    app.keys
        .reload(app.store.as_ref())
        .await
        .map_err(internal)?;
    let mut view = app.keys.current().view();
    view["rotated"] = json!(rotated);
    ok_json(&view)
}
