//! The channel (WeChat-like): verifies request signature, answers a signed code_url.
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use floor::*;
use std::sync::Arc;

struct St {
    gw_pub: aws_lc_rs::signature::ParsedPublicKey,
    platform: Signer,
}

const PATH: &str = "/v3/pay/transactions/native";

async fn native(
    axum::extract::State(st): axum::extract::State<Arc<St>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !verify_request(&st.gw_pub, auth, "POST", PATH, &body) {
        return (StatusCode::UNAUTHORIZED, "bad sig").into_response();
    }
    let resp = format!(
        "{{\"code_url\":\"weixin://wxpay/bizpayurl?pr={:016x}\"}}",
        rand_u64()
    );
    let ts = now_secs().to_string();
    let n = nonce();
    let sig = st
        .platform
        .sign_b64(&resp_message(&ts, &n, resp.as_bytes()));
    signed_answer(resp.into_bytes(), &ts, &n, &sig, "PLATFORM_SERIAL_1")
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    // gateway signs upstream requests with the "merchant" key too (channel-merchant key); cost identical.
    let st = Arc::new(St {
        gw_pub: Signer::load("merchant").public(),
        platform: Signer::load("platform"),
    });
    let app = Router::new().route(PATH, post(native)).with_state(st);
    let l = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("upstream listening on {addr}");
    axum::serve(l, app).await.unwrap();
}
