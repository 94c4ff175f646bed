//! What every paygate HTTP server that speaks WeChat Pay v3 to merchants shares (the
//! gateway and the simulator): V3 error answers, JSON and 204 answers, and the signing of an
//! answer's exact bytes with the `Wechatpay-*` headers and a `Request-ID`.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_wxpay::crypto::SigningKey;
use paygate_wxpay::server::answer_headers;

/// An error answer in the V3 shape `{code, message, detail?}` with its HTTP status.
#[derive(Debug)]
pub struct ApiFail(pub ApiError);

impl From<ApiError> for ApiFail {
    fn from(e: ApiError) -> Self {
        ApiFail(e)
    }
}

impl IntoResponse for ApiFail {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, self.0.to_body())
    }
}

pub type ApiResult = Result<Response, ApiFail>;

/// Marks an answer that goes out unsigned (bill files).
#[derive(Clone, Copy, Debug)]
pub struct Unsigned;

pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// 200 with the compact JSON of `value`.
pub fn ok_json<T: serde::Serialize>(value: &T) -> ApiResult {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiFail(ApiError::new(ErrorCode::SystemError, e.to_string())))?;
    Ok(json_response(StatusCode::OK, body))
}

pub fn no_content() -> ApiResult {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// The answer to an unknown path or method, in the V3 shape.
pub async fn not_found() -> ApiFail {
    ApiFail(
        ApiError::new(
            ErrorCode::InvalidRequest,
            "请求的资源不存在：请检查 URL 与 HTTP 方法",
        )
        .with_status(404),
    )
}

/// Adds `Request-ID` and, unless the answer is marked [`Unsigned`], the five `Wechatpay-*`
/// headers over the exact bytes sent (204 included); sets `Content-Length` so nothing
/// re-encodes the body after signing.
pub async fn sign_answer(
    response: Response,
    key: &SigningKey,
    serial: &str,
    request_id: &str,
) -> Response {
    let unsigned = response.extensions().get::<Unsigned>().is_some();
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        parts.headers.insert("Request-ID", v);
    }
    if !unsigned {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match answer_headers(key, serial, &body, now) {
            Ok(headers) => {
                for (name, value) in headers {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        parts.headers.insert(name, v);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "signing an answer failed"),
        }
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use paygate_wxpay::crypto::SignatureScheme;
    use paygate_wxpay::sign::ResponseSignature;

    #[tokio::test]
    async fn answers_are_signed_over_their_exact_bytes_204_included() {
        let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        for response in [
            ok_json(&serde_json::json!({"a": 1})).unwrap(),
            no_content().unwrap(),
        ] {
            let signed = sign_answer(response, &key, "SERIAL1", "RID-0").await;
            let headers = signed.headers().clone();
            let body = axum::body::to_bytes(signed.into_body(), usize::MAX)
                .await
                .unwrap();
            let get = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            assert_eq!(get("Request-ID").as_deref(), Some("RID-0"));
            assert_eq!(get("content-length").unwrap(), body.len().to_string());
            let sig = ResponseSignature::from_headers(get).unwrap();
            sig.verify(&key.verifying_key(), &body).unwrap();
        }
    }

    #[tokio::test]
    async fn unsigned_answers_and_errors() {
        let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let mut resp = ok_json(&1).unwrap();
        resp.extensions_mut().insert(Unsigned);
        let signed = sign_answer(resp, &key, "S", "R").await;
        assert!(signed.headers().get("Wechatpay-Signature").is_none());
        let fail = ApiFail(ApiError::of(ErrorCode::OrderNotExist)).into_response();
        assert_eq!(fail.status(), 404);
        assert_eq!(not_found().await.into_response().status(), 404);
    }
}
