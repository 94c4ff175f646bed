//! A WeChat Pay v3 HTTP client: signs every request as a merchant (or service provider)
//! and verifies every 2xx response against the platform keys it holds, exactly as the
//! official SDKs do. The gateway's channel adapter and the simulator's tests use it.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::crypto::{SigningKey, VerifyingKey};
use crate::kit::MerchantKit;
use crate::sign::{ResponseSignature, new_nonce, sign_request};

/// Which platform key a client trusts and asks for (the `Wechatpay-Serial` it sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// Public-key mode: trust `pub_key.pem` and send its `PUB_KEY_ID_…` as `Wechatpay-Serial`.
    PublicKey,
    /// Certificate mode: trust `platform_cert.pem` and send no `Wechatpay-Serial`.
    Certificate,
}

pub struct WxClientConfig {
    /// Base URL ending in `/`, e.g. `https://api.mch.weixin.qq.com/`.
    pub base_url: String,
    /// The signer: a direct merchant's mchid, or the service provider's `sp_mchid`.
    pub mchid: String,
    pub serial_no: String,
    pub signing_key: SigningKey,
    /// Platform keys by serial (certificate serial or `PUB_KEY_ID_…`).
    pub platform_keys: Vec<(String, VerifyingKey)>,
    /// Sent as `Wechatpay-Serial` on every request when set.
    pub wechatpay_serial: Option<String>,
    pub timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request timed out")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(String),
    #[error("HTTP {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        body: String,
    },
    #[error("response signature rejected: {0}")]
    BadSignature(String),
    #[error("response could not be decoded: {0}")]
    Decode(String),
    #[error("client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The V3 error code when the server answered with an error body.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A verified (or deliberately unverified, for downloads) response.
#[derive(Clone, Debug)]
pub struct WxResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WxResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct WxClient {
    base_url: String,
    mchid: String,
    serial_no: String,
    signing_key: SigningKey,
    platform_keys: HashMap<String, VerifyingKey>,
    wechatpay_serial: Option<String>,
    http: reqwest::Client,
}

impl WxClient {
    pub fn new(config: WxClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let mut base_url = config.base_url;
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        Ok(Self {
            base_url,
            mchid: config.mchid,
            serial_no: config.serial_no,
            signing_key: config.signing_key,
            platform_keys: config.platform_keys.into_iter().collect(),
            wechatpay_serial: config.wechatpay_serial,
            http,
        })
    }

    /// The same client, trusting only the CA certificates in `ca_pem` for TLS (a channel
    /// behind a private CA, or a test CA) instead of the system's web roots.
    pub fn trusting_only(mut self, ca_pem: &str, timeout_ms: u64) -> Result<Self, ClientError> {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
            .map_err(|e| ClientError::Config(format!("ca_file: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Config("ca_file: no certificate in it".into()));
        }
        self.http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .pool_max_idle_per_host(64)
            .tls_certs_only(certs)
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(self)
    }

    /// A client for a kit, in public-key or certificate mode.
    pub fn from_kit(
        kit: &MerchantKit,
        mode: KeyMode,
        timeout_ms: u64,
    ) -> Result<Self, ClientError> {
        let bad =
            |what: &str, e: &dyn std::fmt::Display| ClientError::Config(format!("{what}: {e}"));
        let signing_key = SigningKey::from_pkcs8_pem(&kit.apiclient_key_pem)
            .map_err(|e| bad("apiclient_key.pem", &e))?;
        let m = &kit.merchant;
        let (platform_keys, wechatpay_serial) = match mode {
            KeyMode::PublicKey => {
                let key = VerifyingKey::from_spki_pem(&kit.pub_key_pem)
                    .map_err(|e| bad("pub_key.pem", &e))?;
                (
                    vec![(m.platform_public_key_id.clone(), key)],
                    Some(m.platform_public_key_id.clone()),
                )
            }
            KeyMode::Certificate => {
                let key = VerifyingKey::from_certificate_pem(&kit.platform_cert_pem)
                    .map_err(|e| bad("platform_cert.pem", &e))?;
                (vec![(m.platform_serial_no.clone(), key)], None)
            }
        };
        Self::new(WxClientConfig {
            base_url: m.base_url.clone(),
            mchid: m.mchid.clone(),
            serial_no: m.serial_no.clone(),
            signing_key,
            platform_keys,
            wechatpay_serial,
            timeout_ms,
        })
    }

    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a signed request; `path_and_query` is the raw request target (`/v3/...?...`),
    /// already percent-encoded, and is signed exactly as sent. Non-2xx → [`ClientError::Api`];
    /// a 2xx whose signature does not verify → [`ClientError::BadSignature`].
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<WxResponse, ClientError> {
        let response = self.send_unverified(method, path_and_query, body).await?;
        self.verify(&response)?;
        Ok(response)
    }

    /// Like [`WxClient::send`] without the response signature check: bill downloads are
    /// served unsigned.
    pub async fn send_unverified(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<WxResponse, ClientError> {
        self.dispatch(self.sign(method, path_and_query, body)?)
            .await
    }

    /// Signs a request without sending it: the signature is the costly part of a call, and
    /// can be made while something else is awaited (the gateway signs a prepay while the
    /// order's commit waits for its fsync), the request sent after with
    /// [`WxClient::send_signed`]. Its timestamp is the signing time (WeChat allows ±5 min).
    pub fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<SignedRequest, ClientError> {
        let url = format!(
            "{}{}",
            self.base_url,
            path_and_query.trim_start_matches('/')
        );
        let target = request_target(&url)?;
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let auth = sign_request(
            &self.signing_key,
            &self.mchid,
            &self.serial_no,
            method,
            &target,
            body,
            timestamp,
            &new_nonce(),
        )
        .map_err(|e| ClientError::Config(format!("signing failed: {e}")))?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(SignedRequest {
            method,
            url,
            authorization: auth.to_header_value(),
            body: body.to_vec(),
        })
    }

    /// Sends a request made by [`WxClient::sign`] and checks the answer's signature, as
    /// [`WxClient::send`] does.
    pub async fn send_signed(&self, request: SignedRequest) -> Result<WxResponse, ClientError> {
        let response = self.dispatch(request).await?;
        self.verify(&response)?;
        Ok(response)
    }

    async fn dispatch(&self, request: SignedRequest) -> Result<WxResponse, ClientError> {
        let SignedRequest {
            method,
            url,
            authorization,
            body,
        } = request;
        let mut req = self
            .http
            .request(method, &url)
            .header("Authorization", authorization)
            .header("Accept", "application/json")
            .header(
                "User-Agent",
                concat!("paygate-wxpay/", env!("CARGO_PKG_VERSION")),
            );
        if !body.is_empty() {
            req = req.header("Content-Type", "application/json").body(body);
        }
        if let Some(serial) = &self.wechatpay_serial {
            req = req.header("Wechatpay-Serial", serial);
        }
        let waiting = std::time::Instant::now();
        let resp = req.send().await.map_err(transport_error);
        upstream::add(waiting.elapsed());
        let resp = resp?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let waiting = std::time::Instant::now();
        let body = resp.bytes().await.map_err(transport_error);
        upstream::add(waiting.elapsed());
        let body = body?.to_vec();
        let response = WxResponse {
            status,
            headers,
            body,
        };
        if !(200..300).contains(&status) {
            return Err(api_error(&response));
        }
        Ok(response)
    }

    fn verify(&self, response: &WxResponse) -> Result<(), ClientError> {
        let sig = ResponseSignature::from_headers(|name| response.header(name).map(str::to_string))
            .map_err(|e| ClientError::BadSignature(e.to_string()))?;
        let key = self.platform_keys.get(&sig.serial).ok_or_else(|| {
            ClientError::BadSignature(format!("unknown Wechatpay-Serial {}", sig.serial))
        })?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let ts: i64 = sig
            .timestamp
            .parse()
            .map_err(|_| ClientError::BadSignature("Wechatpay-Timestamp is not a number".into()))?;
        if (now - ts).abs() > 300 {
            return Err(ClientError::BadSignature(
                "Wechatpay-Timestamp outside ±5 min".into(),
            ));
        }
        if response.header("Request-ID").is_none() {
            return Err(ClientError::BadSignature("Request-ID missing".into()));
        }
        sig.verify(key, &response.body)
            .map_err(|e| ClientError::BadSignature(e.to_string()))
    }

    pub async fn post_json<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        path: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Config(e.to_string()))?;
        let response = self.send("POST", path, &body).await?;
        decode(&response.body)
    }

    /// POST expecting `204 No Content` (close order), signature still checked.
    pub async fn post_no_content<Req: Serialize + ?Sized>(
        &self,
        path: &str,
        request: &Req,
    ) -> Result<u16, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(self.send("POST", path, &body).await?.status)
    }

    pub async fn get_json<Resp: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<Resp, ClientError> {
        let response = self.send("GET", path_and_query, b"").await?;
        decode(&response.body)
    }

    /// GETs a `download_url` (absolute, on this client's base), signed, response unverified.
    pub async fn download(&self, download_url: &str) -> Result<Vec<u8>, ClientError> {
        let target = download_url
            .strip_prefix(self.base_url.trim_end_matches('/'))
            .ok_or_else(|| {
                ClientError::Config(format!(
                    "download_url {download_url} is not on {}",
                    self.base_url
                ))
            })?;
        Ok(self.send_unverified("GET", target, b"").await?.body)
    }
}

/// The raw request target of a URL: path plus `?query`, as it goes on the wire.
fn request_target(url: &str) -> Result<String, ClientError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| ClientError::Config(format!("bad URL {url}: {e}")))?;
    Ok(match parsed.query() {
        Some(q) => format!("{}?{}", parsed.path(), q),
        None => parsed.path().to_string(),
    })
}

fn transport_error(e: reqwest::Error) -> ClientError {
    if e.is_timeout() {
        ClientError::Timeout
    } else {
        ClientError::Transport(e.to_string())
    }
}

fn api_error(response: &WxResponse) -> ClientError {
    let body = String::from_utf8_lossy(&response.body).into_owned();
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    ClientError::Api {
        status: response.status,
        code: field("code"),
        message: field("message"),
        body,
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// A signed request not yet sent ([`WxClient::sign`]).
#[derive(Debug)]
pub struct SignedRequest {
    method: reqwest::Method,
    url: String,
    authorization: String,
    body: Vec<u8>,
}

/// Percent-encodes one path segment the way Go's `url.PathEscape` does, so ids with `|`
/// or `*` are sent (and signed) as every SDK sends them.
pub fn escape_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_target_keeps_the_raw_query() {
        assert_eq!(
            request_target("http://h:1/v3/pay/transactions/id/42?mchid=1900").unwrap(),
            "/v3/pay/transactions/id/42?mchid=1900"
        );
        assert_eq!(request_target("http://h/v3/a%7Cb").unwrap(), "/v3/a%7Cb");
    }

    #[test]
    fn path_segments_escape_like_go() {
        assert_eq!(escape_path_segment("abc_12-3"), "abc_12-3");
        assert_eq!(escape_path_segment("a|b*c"), "a%7Cb%2Ac");
    }
}

/// Time a task spent waiting on remote servers (request sent → answer read), so a server
/// can tell its own latency from its upstream's: the gateway scopes one per merchant request
/// and reports the difference as the latency it adds. Outside a scope nothing is counted.
pub mod upstream {
    use std::cell::Cell;
    use std::future::Future;
    use std::time::Duration;

    tokio::task_local! {
        static WAITED: Cell<Duration>;
    }

    /// Runs `f` with a fresh total; returns its output and the time it waited upstream.
    pub async fn measured<F: Future>(f: F) -> (F::Output, Duration) {
        WAITED
            .scope(Cell::new(Duration::ZERO), async {
                let out = f.await;
                (out, WAITED.with(Cell::get))
            })
            .await
    }

    pub(crate) fn add(waited: Duration) {
        let _ = WAITED.try_with(|w| w.set(w.get() + waited));
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test]
        async fn waits_add_up_inside_a_scope_only() {
            add(Duration::from_millis(5));
            let ((), waited) = measured(async {
                add(Duration::from_millis(2));
                add(Duration::from_millis(3));
            })
            .await;
            assert_eq!(waited, Duration::from_millis(5));
        }
    }
}
