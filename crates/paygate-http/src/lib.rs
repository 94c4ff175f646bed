//! What every paygate HTTP server that speaks WeChat Pay v3 to merchants shares (the
//! gateway and the simulator): V3 error answers, JSON and 204 answers, and the signing of an
//! answer's exact bytes with the `Wechatpay-*` headers and a `Request-ID`.

use axum::body::{Body, Bytes};
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

/// An answer's `Wechatpay-*` headers made ahead of time, while the handler still waited on
/// something else (the prepay's PREPAID commit): an RSA signature is the costliest step of an
/// answer, and overlapping it with an fsync takes it off the latency path. [`sign_answer`]
/// uses them only over the very bytes it sends and with the key it would pick itself;
/// otherwise it signs as usual.
#[derive(Clone, Debug)]
pub struct PreSigned {
    serial: String,
    body: Bytes,
    headers: [(&'static str, String); 5],
}

impl PreSigned {
    pub fn new(
        key: &SigningKey,
        serial: &str,
        body: Bytes,
    ) -> Result<Self, paygate_wxpay::crypto::CryptoError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let headers = answer_headers(key, serial, &body, now)?;
        Ok(Self {
            serial: serial.to_string(),
            body,
            headers,
        })
    }

    /// 200 with the signed JSON body, carrying its headers for [`sign_answer`].
    pub fn into_response(self) -> Response {
        let mut resp = json_response(StatusCode::OK, self.body.clone());
        resp.extensions_mut().insert(self);
        resp
    }
}

/// How an answer went out: signed ahead ([`PreSigned`]), signed as it left, or unsigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    Ahead,
    AtAnswer,
    Unsigned,
}

pub fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
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

/// `axum::extract::Path` whose rejection (a segment that is not valid percent-encoded UTF-8,
/// say) is a V3 `PARAM_ERROR`, not axum's plain-text 400. Import it as `Path`.
pub struct V3Path<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for V3Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiFail;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiFail> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(V3Path(value)),
            Err(rejection) => Err(ApiFail(ApiError::param_in(
                "path",
                "",
                rejection.body_text(),
            ))),
        }
    }
}

/// The answer to a known path with another method, in the V3 shape (axum's own 405 has no body).
pub async fn method_not_allowed() -> ApiFail {
    ApiFail(ApiError::new(ErrorCode::InvalidRequest, "HTTP 方法不被允许").with_status(405))
}

/// Adds `Request-ID` and, on a 2xx not marked [`Unsigned`], the five `Wechatpay-*` headers
/// over the exact bytes sent (204 included); sets `Content-Length` so nothing re-encodes the
/// body after signing. Error answers are not signed: no SDK verifies them (reference §0), and
/// an RSA signature per refused request would hand attackers a cheap way to burn our CPU.
pub async fn sign_answer(
    response: Response,
    key: &SigningKey,
    serial: &str,
    request_id: &str,
) -> (Response, Signing) {
    let unsigned =
        response.extensions().get::<Unsigned>().is_some() || !response.status().is_success();
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        parts.headers.insert("Request-ID", v);
    }
    let presigned = parts
        .extensions
        .remove::<PreSigned>()
        .filter(|p| p.serial == serial && p.body == body);
    let mut signing = Signing::Unsigned;
    if !unsigned {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let headers = match presigned {
            Some(p) => {
                signing = Signing::Ahead;
                Ok(p.headers)
            }
            None => {
                signing = Signing::AtAnswer;
                answer_headers(key, serial, &body, now)
            }
        };
        match headers {
            Ok(headers) => {
                for (name, value) in headers {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        parts.headers.insert(name, v);
                    }
                }
            }
            Err(e) => {
                signing = Signing::Unsigned;
                tracing::error!(error = %e, "signing an answer failed")
            }
        }
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    (Response::from_parts(parts, Body::from(body)), signing)
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
            let (signed, how) = sign_answer(response, &key, "SERIAL1", "RID-0").await;
            assert_eq!(how, Signing::AtAnswer);
            let (get, body) = sent(signed).await;
            assert_eq!(get("Request-ID").as_deref(), Some("RID-0"));
            assert_eq!(get("content-length").unwrap(), body.len().to_string());
            let sig = ResponseSignature::from_headers(&get).unwrap();
            sig.verify(&key.verifying_key(), &body).unwrap();
        }
    }

    /// What went out: a reader of its headers, and its body.
    async fn sent(response: Response) -> (impl Fn(&str) -> Option<String>, Bytes) {
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let get = move |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (get, body)
    }

    /// The nonce an answer went out with, and whether its signature verifies with `key`.
    async fn signature_of(
        response: Response,
        key: &SigningKey,
    ) -> (Option<String>, Result<(), String>) {
        let (get, body) = sent(response).await;
        let sig = ResponseSignature::from_headers(&get).unwrap();
        let verified = sig
            .verify(&key.verifying_key(), &body)
            .map_err(|e| e.to_string());
        (get("Wechatpay-Nonce"), verified)
    }

    #[tokio::test]
    async fn a_presigned_answer_is_used_only_for_its_own_bytes_and_key() {
        let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let other = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let body = Bytes::from_static(br#"{"code_url":"weixin://wxpay/bizpayurl?pr=abc"}"#);
        let pre = PreSigned::new(&key, "S1", body.clone()).unwrap();
        let nonce = pre
            .headers
            .iter()
            .find(|(n, _)| *n == "Wechatpay-Nonce")
            .map(|(_, v)| v.clone());

        // Same bytes, same key: its headers go out as made.
        let (signed, how) = sign_answer(pre.clone().into_response(), &key, "S1", "R").await;
        assert_eq!(how, Signing::Ahead);
        let (sent_nonce, verified) = signature_of(signed, &key).await;
        assert_eq!(sent_nonce, nonce, "the pre-made headers were used");
        verified.unwrap();

        // The layer picks another key: signed afresh with that one.
        let (signed, how) = sign_answer(pre.clone().into_response(), &other, "S2", "R").await;
        assert_eq!(how, Signing::AtAnswer);
        let (sent_nonce, verified) = signature_of(signed, &other).await;
        assert_ne!(sent_nonce, nonce);
        verified.unwrap();

        // Other bytes under the pre-made headers: signed afresh over what is sent.
        let mut swapped = json_response(StatusCode::OK, br#"{"code_url":"x"}"#.to_vec());
        swapped.extensions_mut().insert(pre);
        let (signed, how) = sign_answer(swapped, &key, "S1", "R").await;
        assert_eq!(how, Signing::AtAnswer);
        let (sent_nonce, verified) = signature_of(signed, &key).await;
        assert_ne!(sent_nonce, nonce);
        verified.unwrap();
    }

    #[tokio::test]
    async fn unsigned_answers_and_errors() {
        let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let mut resp = ok_json(&1).unwrap();
        resp.extensions_mut().insert(Unsigned);
        let (signed, how) = sign_answer(resp, &key, "S", "R").await;
        assert_eq!(how, Signing::Unsigned);
        assert!(signed.headers().get("Wechatpay-Signature").is_none());
        let fail = ApiFail(ApiError::of(ErrorCode::OrderNotExist)).into_response();
        assert_eq!(fail.status(), 404);
        let (signed, _) = sign_answer(fail, &key, "S", "R").await;
        assert!(
            signed.headers().get("Wechatpay-Signature").is_none(),
            "errors are not signed"
        );
        assert!(signed.headers().get("Request-ID").is_some());
        assert_eq!(not_found().await.into_response().status(), 404);
        assert_eq!(method_not_allowed().await.into_response().status(), 405);
    }
}
