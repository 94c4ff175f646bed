//! The server side of the V3 handshake, free of any HTTP framework: verifying a merchant's
//! signed request over its raw bytes, refusing replays, and the headers that sign an answer.
//! The simulator and the gateway both answer merchants, so both use this.

use std::collections::{HashSet, VecDeque};

use paygate_core::error::{ApiError, ErrorCode};

use crate::crypto::{SigningKey, VerifyingKey};
use crate::sign::{Authorization, new_nonce, sign_response};

/// §1.2: the window the official guide tells merchants to stay within.
pub const TIMESTAMP_WINDOW_S: i64 = 300;
const NONCES_MAX: usize = 1_000_000;

/// What the server knows about the key a request claims to be signed with.
pub enum KeyLookup {
    Key(VerifyingKey),
    UnknownMerchant,
    UnknownSerial,
    /// The merchant exists but may not call (disabled).
    Refused(ApiError),
}

/// Verifies `Authorization` over the raw method, request target and body. The nonce is
/// not checked here: see [`NonceCache`], which the caller consults after this succeeds so a
/// forged request cannot burn a real nonce.
pub fn verify_request(
    authorization: Option<&str>,
    method: &str,
    target: &str,
    body: &[u8],
    now_unix: i64,
    lookup: impl FnOnce(&str, &str) -> KeyLookup,
) -> Result<Authorization, ApiError> {
    let sign_error = |m: &str| ApiError::new(ErrorCode::SignError, m);
    let header = authorization.ok_or_else(|| {
        sign_error("Http头缺少Authorization，请参考《微信支付商户REST API签名规则》")
    })?;
    let auth = Authorization::parse(header).map_err(|e| {
        sign_error(&format!(
            "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》: {e}"
        ))
    })?;
    let ts = auth
        .timestamp_secs()
        .map_err(|_| sign_error("Authorization 中 timestamp 应为秒级 Unix 时间戳"))?;
    if (now_unix - ts).abs() > TIMESTAMP_WINDOW_S {
        return Err(sign_error("请求时间戳与当前时间相差超过5分钟"));
    }
    let key = match lookup(&auth.mchid, &auth.serial_no) {
        KeyLookup::Key(key) => key,
        KeyLookup::UnknownMerchant => {
            return Err(ApiError::new(ErrorCode::MchNotExists, "商户号不存在"));
        }
        KeyLookup::UnknownSerial => {
            return Err(sign_error(
                "商户证书序列号有误，请确认商户证书序列号与商户号匹配",
            ));
        }
        KeyLookup::Refused(e) => return Err(e),
    };
    auth.verify(&key, method, target, body)
        .map_err(|_| sign_error("签名错误，请检查后再试"))?;
    Ok(auth)
}

/// The error a replayed nonce gets.
pub fn replay_error() -> ApiError {
    ApiError::new(ErrorCode::SignError, "重复的请求：nonce_str 已使用")
}

/// Nonces seen within the timestamp window, per merchant, bounded in size.
#[derive(Default)]
pub struct NonceCache {
    seen: HashSet<(String, String)>,
    order: VecDeque<(i64, String, String)>,
}

impl NonceCache {
    /// Records the nonce; false if it was already seen within the window.
    pub fn check_and_insert(&mut self, mchid: &str, nonce: &str, now_unix: i64) -> bool {
        while let Some((ts, _, _)) = self.order.front() {
            if now_unix - *ts <= TIMESTAMP_WINDOW_S * 2 && self.order.len() < NONCES_MAX {
                break;
            }
            if let Some((_, m, n)) = self.order.pop_front() {
                self.seen.remove(&(m, n));
            }
        }
        let key = (mchid.to_string(), nonce.to_string());
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back((now_unix, key.0, key.1));
        true
    }
}

/// `Request-ID` in WeChat's shape: hex, a dash, an internal code.
pub fn request_id() -> String {
    format!(
        "{:016X}{:016X}{:08X}-0",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// The five `Wechatpay-*` headers signing `body` (empty for a 204).
pub fn answer_headers(
    key: &SigningKey,
    serial: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<[(&'static str, String); 5], crate::crypto::CryptoError> {
    Ok(sign_response(key, serial, body, now_unix, &new_nonce())?.headers())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SignatureScheme;
    use crate::sign::{ResponseSignature, sign_request};

    #[test]
    fn replayed_nonces_are_refused_within_the_window() {
        let mut cache = NonceCache::default();
        assert!(cache.check_and_insert("1900", "n1", 1000));
        assert!(!cache.check_and_insert("1900", "n1", 1001));
        assert!(
            cache.check_and_insert("1901", "n1", 1001),
            "nonces are per merchant"
        );
        assert!(
            cache.check_and_insert("1900", "n1", 1000 + 2 * TIMESTAMP_WINDOW_S + 1),
            "expired"
        );
    }

    #[test]
    fn verifies_and_refuses_with_v3_codes() {
        let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let auth = sign_request(&key, "1900", "SER", "POST", "/v3/x", b"{}", 1000, "n").unwrap();
        let header = auth.to_header_value();
        let ok = verify_request(Some(&header), "POST", "/v3/x", b"{}", 1010, |_, _| {
            KeyLookup::Key(key.verifying_key())
        });
        assert_eq!(ok.unwrap().mchid, "1900");
        let code = |r: Result<Authorization, ApiError>| r.unwrap_err().code;
        let lookup = |_: &str, _: &str| KeyLookup::Key(key.verifying_key());
        assert_eq!(
            code(verify_request(
                Some(&header),
                "POST",
                "/v3/y",
                b"{}",
                1010,
                lookup
            )),
            ErrorCode::SignError
        );
        assert_eq!(
            code(verify_request(
                Some(&header),
                "POST",
                "/v3/x",
                b"{}",
                1400,
                lookup
            )),
            ErrorCode::SignError
        );
        assert_eq!(
            code(verify_request(None, "POST", "/v3/x", b"{}", 1000, lookup)),
            ErrorCode::SignError
        );
        let unknown = |_: &str, _: &str| KeyLookup::UnknownMerchant;
        assert_eq!(
            code(verify_request(
                Some(&header),
                "POST",
                "/v3/x",
                b"{}",
                1000,
                unknown
            )),
            ErrorCode::MchNotExists
        );
        let refused = |_: &str, _: &str| KeyLookup::Refused(ApiError::of(ErrorCode::NoAuth));
        assert_eq!(
            code(verify_request(
                Some(&header),
                "POST",
                "/v3/x",
                b"{}",
                1000,
                refused
            )),
            ErrorCode::NoAuth
        );
    }

    #[test]
    fn answer_headers_verify() {
        let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let headers = answer_headers(&key, "PUB_KEY_ID_1", b"", 1000).unwrap();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let sig = ResponseSignature::from_headers(get).unwrap();
        sig.verify(&key.verifying_key(), b"").unwrap();
        assert_eq!(sig.serial, "PUB_KEY_ID_1");
    }
}
