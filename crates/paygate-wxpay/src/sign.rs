//! Request and response signatures of API v3 (reference §1, §2).
//!
//! A request is signed over `METHOD\nTARGET\nTIMESTAMP\nNONCE\nBODY\n` and carries the result in
//! `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",timestamp="…",serial_no="…",signature="…"`.
//! A response (and a callback) is signed over `TIMESTAMP\nNONCE\nBODY\n` and carries it in the
//! `Wechatpay-*` headers. Everything is verified over the raw strings and bytes as received:
//! never a re-encoded target, re-serialised body or re-formatted timestamp.
//!
//! ```
//! use paygate_wxpay::crypto::{SignatureScheme, SigningKey};
//! use paygate_wxpay::sign::{Authorization, sign_request};
//! let key = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
//! let auth = sign_request(&key, "1900000001", "SERIAL", "GET", "/v3/certificates", b"",
//!     1_554_208_460, "593BEC0C930BF1AFEB40B4A08C8FB242").unwrap();
//! let parsed = Authorization::parse(&auth.to_header_value()).unwrap();
//! parsed.verify(&key.verifying_key(), "GET", "/v3/certificates", b"").unwrap();
//! ```

use crate::crypto::{CryptoError, SignatureScheme, SigningKey, VerifyingKey};

/// The signed message of a request: five lines, each ending in `\n`, the last being the body.
pub fn request_message(
    method: &str,
    target: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(
        method.len() + target.len() + timestamp.len() + nonce.len() + body.len() + 5,
    );
    for line in [
        method.as_bytes(),
        target.as_bytes(),
        timestamp.as_bytes(),
        nonce.as_bytes(),
        body,
    ] {
        message.extend_from_slice(line);
        message.push(b'\n');
    }
    message
}

/// The signed message of a response or a callback: `ts\nnonce\nbody\n` (`ts\nnonce\n\n` for 204).
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    for line in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        message.extend_from_slice(line);
        message.push(b'\n');
    }
    message
}

/// 32 random characters of `[0-9A-Za-z]`, the Go SDK's request nonce.
pub fn new_nonce() -> String {
    crate::crypto::aead::random_alphanumeric(32)
}

/// Why a signature (or the headers carrying it) was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Authorization header missing or empty")]
    Missing,
    #[error("malformed Authorization header: {0}")]
    Malformed(String),
    #[error("unknown signature scheme {0:?}")]
    UnknownScheme(String),
    #[error("Authorization parameter {0} missing or empty")]
    MissingParam(&'static str),
    #[error("Authorization parameter {0} given more than once")]
    DuplicateParam(String),
    #[error("header {0} missing or empty")]
    MissingHeader(&'static str),
    #[error("timestamp is not decimal Unix seconds")]
    BadTimestamp,
    #[error("timestamp {timestamp} is more than {window_s} s away from now ({now})")]
    StaleTimestamp {
        timestamp: i64,
        now: i64,
        window_s: i64,
    },
    #[error("signature scheme {scheme} does not match the {key} key")]
    SchemeMismatch {
        scheme: SignatureScheme,
        key: SignatureScheme,
    },
    #[error("signature: {0}")]
    Signature(#[from] CryptoError),
}

/// The parsed `Authorization` header of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub scheme: SignatureScheme,
    pub mchid: String,
    pub serial_no: String,
    pub nonce_str: String,
    pub timestamp: String,
    pub signature: String,
}

const PARAM_NAMES: [&str; 5] = ["mchid", "nonce_str", "timestamp", "serial_no", "signature"];

impl Authorization {
    /// Parses `SCHEME k="v",k="v",…`. Parameters may come in any order (each SDK has its own),
    /// with optional spaces around commas; all five are required, each once. Unknown
    /// parameters are ignored, as a lenient server should.
    pub fn parse(header_value: &str) -> Result<Self, AuthError> {
        let header_value = header_value.trim();
        if header_value.is_empty() {
            return Err(AuthError::Missing);
        }
        let (scheme_text, params_text) = header_value
            .split_once(' ')
            .ok_or_else(|| AuthError::Malformed("no parameters after the scheme".into()))?;
        let scheme = SignatureScheme::parse(scheme_text)
            .ok_or_else(|| AuthError::UnknownScheme(scheme_text.to_string()))?;

        let mut values: [Option<String>; 5] = Default::default();
        for (key, value) in parse_params(params_text)? {
            if let Some(slot) = PARAM_NAMES.iter().position(|name| *name == key) {
                if values[slot].is_some() {
                    return Err(AuthError::DuplicateParam(key.to_string()));
                }
                values[slot] = Some(value.to_string());
            }
        }
        let [mchid, nonce_str, timestamp, serial_no, signature] = values;
        let required = |value: Option<String>, name: &'static str| match value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(AuthError::MissingParam(name)),
        };
        Ok(Self {
            scheme,
            mchid: required(mchid, "mchid")?,
            nonce_str: required(nonce_str, "nonce_str")?,
            timestamp: required(timestamp, "timestamp")?,
            serial_no: required(serial_no, "serial_no")?,
            signature: required(signature, "signature")?,
        })
    }

    /// The header value in the Go/Java SDK order: `mchid,nonce_str,timestamp,serial_no,signature`.
    pub fn to_header_value(&self) -> String {
        format!(
            "{} mchid=\"{}\",nonce_str=\"{}\",timestamp=\"{}\",serial_no=\"{}\",signature=\"{}\"",
            self.scheme.as_str(),
            self.mchid,
            self.nonce_str,
            self.timestamp,
            self.serial_no,
            self.signature
        )
    }

    /// The timestamp as Unix seconds. Only plain decimal digits are accepted; a millisecond
    /// timestamp parses (it is digits) and is then caught by the freshness window.
    pub fn timestamp_secs(&self) -> Result<i64, AuthError> {
        parse_timestamp(&self.timestamp)
    }

    /// Rejects a timestamp more than `window_s` seconds away from `now_secs` (either side).
    pub fn check_freshness(&self, now_secs: i64, window_s: i64) -> Result<(), AuthError> {
        check_window(self.timestamp_secs()?, now_secs, window_s)
    }

    /// Verifies the signature over the raw method, target, timestamp, nonce and body.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<(), AuthError> {
        if key.scheme() != self.scheme {
            return Err(AuthError::SchemeMismatch {
                scheme: self.scheme,
                key: key.scheme(),
            });
        }
        let message = request_message(method, target, &self.timestamp, &self.nonce_str, body);
        key.verify_base64(&message, &self.signature)?;
        Ok(())
    }
}

/// Splits `k="v", k2="v2"` into pairs. Values are quoted and cannot contain `"`.
fn parse_params(text: &str) -> Result<Vec<(&str, &str)>, AuthError> {
    let mut pairs = Vec::with_capacity(5);
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (key, after_key) = rest
            .split_once('=')
            .ok_or_else(|| AuthError::Malformed(format!("expected key=\"value\" at {rest:?}")))?;
        let key = key.trim();
        if key.is_empty() || key.contains([',', '"', ' ']) {
            return Err(AuthError::Malformed(format!("bad parameter name {key:?}")));
        }
        let quoted = after_key
            .strip_prefix('"')
            .ok_or_else(|| AuthError::Malformed(format!("value of {key} is not quoted")))?;
        let (value, after_value) = quoted
            .split_once('"')
            .ok_or_else(|| AuthError::Malformed(format!("unterminated value of {key}")))?;
        pairs.push((key, value));
        let after_value = after_value.trim_start();
        rest = match after_value.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if after_value.is_empty() => after_value,
            None => {
                return Err(AuthError::Malformed(format!(
                    "expected ',' after the value of {key}"
                )));
            }
        };
    }
    if pairs.is_empty() {
        return Err(AuthError::Malformed("no parameters".into()));
    }
    Ok(pairs)
}

fn parse_timestamp(text: &str) -> Result<i64, AuthError> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::BadTimestamp);
    }
    text.parse().map_err(|_| AuthError::BadTimestamp)
}

fn check_window(timestamp: i64, now: i64, window_s: i64) -> Result<(), AuthError> {
    if timestamp.abs_diff(now) > window_s.unsigned_abs() {
        return Err(AuthError::StaleTimestamp {
            timestamp,
            now,
            window_s,
        });
    }
    Ok(())
}

/// Signs a request and returns its `Authorization`.
#[allow(clippy::too_many_arguments)] // mirrors the five signed fields plus identity
pub fn sign_request(
    key: &SigningKey,
    mchid: &str,
    serial_no: &str,
    method: &str,
    target: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> Result<Authorization, CryptoError> {
    let timestamp = timestamp.to_string();
    let message = request_message(method, target, &timestamp, nonce, body);
    Ok(Authorization {
        scheme: key.scheme(),
        mchid: mchid.to_string(),
        serial_no: serial_no.to_string(),
        nonce_str: nonce.to_string(),
        timestamp,
        signature: key.sign_base64(&message)?,
    })
}

pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
pub const HEADER_SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";

/// The `Wechatpay-*` signature headers of a response or a callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseSignature {
    pub timestamp: String,
    pub nonce: String,
    pub serial: String,
    pub signature: String,
    pub scheme: SignatureScheme,
}

impl ResponseSignature {
    /// The five headers to send (Python's SDK requires `Wechatpay-Signature-Type`).
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            (HEADER_TIMESTAMP, self.timestamp.clone()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
            (HEADER_SERIAL, self.serial.clone()),
            (HEADER_SIGNATURE_TYPE, self.scheme.as_str().to_string()),
        ]
    }

    /// Reads the headers through `get` (which should match names case-insensitively). Timestamp,
    /// nonce, signature and serial must be present and non-blank, as Go requires; an absent
    /// `Wechatpay-Signature-Type` means RSA, as Go and Java assume.
    pub fn from_headers(get: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        let required = |name: &'static str| match get(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(AuthError::MissingHeader(name)),
        };
        let scheme = match get(HEADER_SIGNATURE_TYPE) {
            None => SignatureScheme::Rsa2048Sha256,
            Some(v) if v.trim().is_empty() => SignatureScheme::Rsa2048Sha256,
            Some(v) => SignatureScheme::parse(v.trim()).ok_or(AuthError::UnknownScheme(v))?,
        };
        Ok(Self {
            timestamp: required(HEADER_TIMESTAMP)?,
            nonce: required(HEADER_NONCE)?,
            signature: required(HEADER_SIGNATURE)?,
            serial: required(HEADER_SERIAL)?,
            scheme,
        })
    }

    pub fn timestamp_secs(&self) -> Result<i64, AuthError> {
        parse_timestamp(&self.timestamp)
    }

    /// Rejects a timestamp more than `window_s` seconds away from `now_secs` (SDKs use 300 s).
    pub fn check_freshness(&self, now_secs: i64, window_s: i64) -> Result<(), AuthError> {
        check_window(self.timestamp_secs()?, now_secs, window_s)
    }

    /// Verifies over the raw body bytes (empty for 204).
    pub fn verify(&self, key: &VerifyingKey, body: &[u8]) -> Result<(), AuthError> {
        if key.scheme() != self.scheme {
            return Err(AuthError::SchemeMismatch {
                scheme: self.scheme,
                key: key.scheme(),
            });
        }
        let message = response_message(&self.timestamp, &self.nonce, body);
        key.verify_base64(&message, &self.signature)?;
        Ok(())
    }
}

/// Signs a response or a callback body (same message format).
pub fn sign_response(
    key: &SigningKey,
    serial: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> Result<ResponseSignature, CryptoError> {
    let timestamp = timestamp.to_string();
    let message = response_message(&timestamp, nonce, body);
    Ok(ResponseSignature {
        signature: key.sign_base64(&message)?,
        timestamp,
        nonce: nonce.to_string(),
        serial: serial.to_string(),
        scheme: key.scheme(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_end_every_line_with_lf() {
        assert_eq!(
            request_message("GET", "/v3/x?a=1", "1", "n", b""),
            b"GET\n/v3/x?a=1\n1\nn\n\n"
        );
        assert_eq!(response_message("1", "n", b"{}"), b"1\nn\n{}\n");
        assert_eq!(response_message("1", "n", b""), b"1\nn\n\n");
    }

    #[test]
    fn nonce_is_32_alphanumerics() {
        let n = new_nonce();
        assert_eq!(n.len(), 32);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn params_tolerate_spaces_and_reject_junk() {
        let pairs = parse_params(r#"a="1" , b="2",c="""#).unwrap();
        assert_eq!(pairs, vec![("a", "1"), ("b", "2"), ("c", "")]);
        assert!(parse_params(r#"a=1"#).is_err());
        assert!(parse_params(r#"a="1"b="2""#).is_err());
        assert!(parse_params(r#"a="1"#).is_err());
        assert!(parse_params(r#"="1""#).is_err());
        assert!(parse_params("").is_err());
    }

    #[test]
    fn timestamps_must_be_plain_digits() {
        assert_eq!(parse_timestamp("1554208460").unwrap(), 1_554_208_460);
        for bad in ["", "-1", "+1", "1.5", " 1", "1e9", "12345678901234567890"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn window_is_symmetric() {
        assert!(check_window(1000, 1300, 300).is_ok());
        assert!(check_window(1300, 1000, 300).is_ok());
        assert!(check_window(1000, 1301, 300).is_err());
        assert!(check_window(1301, 1000, 300).is_err());
    }
}
