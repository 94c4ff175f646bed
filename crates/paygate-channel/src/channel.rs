//! [`WxChannel`]: the transport half of the adapter. It sends what [`crate::transform`] builds
//! through the signing, answer-verifying [`WxClient`] and maps the outcome to paygate's terms.

use std::sync::Arc;
use std::time::Duration;

use paygate_core::error::ApiError;
use paygate_wxpay::client::{WxClient, WxClientConfig};
use paygate_wxpay::crypto::SigningKey;
use paygate_wxpay::crypto::aead::{AeadAlgorithm, AeadKey};
use paygate_wxpay::models::payments::Transaction;
use paygate_wxpay::models::refunds::Refund;
use paygate_wxpay::paysign::{self, AppPayParams, JsapiPayParams};
use paygate_wxpay::sign::new_nonce;
use serde::Deserialize;

use crate::callback::{CallbackError, CallbackEvent, CallbackReader};
use crate::config::{ChannelConfig, ChannelKind, ConfigError};
use crate::error::ChannelError;
use crate::transform::{
    self, ChannelPrepay, ChannelRefund, PrepayCredential, SubMerchant, WireRequest,
};

/// Longest prepay_id accepted for signing pay parameters (reference §8: ≤64).
pub const PREPAY_ID_CHARS_MAX: usize = 64;

/// The outcome of closing an order at the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Closed now or before (close is re-entrant): no payment can arrive any more.
    Closed,
    /// The order was paid: it cannot be closed, and the payment must be booked.
    AlreadyPaid,
}

/// A prepay signed and not yet sent ([`WxChannel::sign_prepay`]).
#[derive(Debug)]
pub struct SignedPrepay {
    trade_type: paygate_wxpay::models::payments::TradeType,
    request: paygate_wxpay::client::SignedRequest,
}

/// A WeChat Pay v3 channel: one upstream account. Cheap to clone and share.
#[derive(Clone)]
pub struct WxChannel {
    inner: Arc<Inner>,
}

struct Inner {
    config: ChannelConfig,
    client: WxClient,
    signing_key: SigningKey,
    callbacks: CallbackReader,
    /// Only for `config.sandbox`: the simulator's unsigned control API.
    sandbox: Option<reqwest::Client>,
}

impl std::fmt::Debug for WxChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WxChannel")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SandboxSubMerchant {
    sub_mchid: String,
    sub_appid: String,
}

fn key_error(field: &'static str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Key {
        field,
        issue: e.to_string(),
    }
}

impl WxChannel {
    /// [`WxChannel::new`], with TLS to the channel trusting only the CAs in `ca_pem`
    /// (`[[channels]] ca_file`); `None`: the system's web roots.
    pub fn with_ca(config: ChannelConfig, ca_pem: Option<&str>) -> Result<Self, ConfigError> {
        let channel = Self::new(config)?;
        let Some(ca_pem) = ca_pem else {
            return Ok(channel);
        };
        // Just built: the only handle to its state, so it can be rebuilt in place.
        let mut inner = Arc::try_unwrap(channel.inner)
            .map_err(|_| key_error("ca_file", "channel already shared"))?;
        inner.client = inner
            .client
            .trusting_only(ca_pem, inner.config.timeout_ms)
            .map_err(|e| key_error("ca_file", e))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Checks the configuration and parses every key once.
    pub fn new(config: ChannelConfig) -> Result<Self, ConfigError> {
        let keys = config.check()?;
        let apiv3 = config.apiv3_key.as_bytes();
        let callbacks = CallbackReader {
            kind: config.kind,
            mchid: config.mchid.clone(),
            platform_keys: keys.platform_keys.iter().cloned().collect(),
            aes: AeadKey::new(AeadAlgorithm::Aes256Gcm, apiv3)
                .map_err(|e| key_error("apiv3_key", e))?,
            sm4: AeadKey::new(AeadAlgorithm::Sm4Gcm, apiv3)
                .map_err(|e| key_error("apiv3_key", e))?,
        };
        let client = WxClient::new(WxClientConfig {
            base_url: config.base_url.clone(),
            mchid: config.mchid.clone(),
            serial_no: config.serial_no.clone(),
            signing_key: keys.signing_key.clone(),
            platform_keys: keys.platform_keys,
            wechatpay_serial: keys.wechatpay_serial,
            timeout_ms: config.timeout_ms,
        })
        .map_err(|e| key_error("base_url", e))?;
        let sandbox = if config.sandbox {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(config.timeout_ms))
                .build()
                .map_err(|e| key_error("base_url", e))?;
            Some(http)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                signing_key: keys.signing_key,
                config,
                client,
                callbacks,
                sandbox,
            }),
        })
    }

    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    pub fn kind(&self) -> ChannelKind {
        self.inner.config.kind
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.inner.config
    }

    /// The signing client, for the bill downloads (`bills.rs`), which answer unsigned.
    pub(crate) fn client(&self) -> &WxClient {
        &self.inner.client
    }

    pub(crate) async fn send(
        &self,
        request: &WireRequest,
    ) -> Result<paygate_wxpay::client::WxResponse, ChannelError> {
        Ok(self
            .inner
            .client
            .send(request.method, &request.target, &request.body)
            .await?)
    }

    /// Places (or, with identical parameters, refreshes) the prepay of one attempt.
    pub async fn prepay(&self, p: &ChannelPrepay) -> Result<PrepayCredential, ChannelError> {
        self.send_prepay(self.sign_prepay(p)?).await
    }

    /// The prepay of one attempt, signed but not sent (see [`WxClient::sign`]).
    pub fn sign_prepay(&self, p: &ChannelPrepay) -> Result<SignedPrepay, ChannelError> {
        let request = transform::prepay_request(&self.inner.config, p)?;
        Ok(SignedPrepay {
            trade_type: p.trade_type,
            request: self
                .inner
                .client
                .sign(request.method, &request.target, &request.body)?,
        })
    }

    /// Sends a prepay made by [`WxChannel::sign_prepay`].
    pub async fn send_prepay(&self, p: SignedPrepay) -> Result<PrepayCredential, ChannelError> {
        let response = self.inner.client.send_signed(p.request).await?;
        transform::prepay_credential(p.trade_type, &response.body)
    }

    /// The order at the channel; `None` when WeChat Pay does not know it (`ORDER_NOT_EXIST`).
    pub async fn query(
        &self,
        out_trade_no: &str,
        sub: &SubMerchant,
    ) -> Result<Option<Transaction>, ChannelError> {
        let request = transform::query_request(&self.inner.config, out_trade_no, sub)?;
        match self.send(&request).await {
            Ok(response) => {
                transform::query_answer(&self.inner.config, out_trade_no, sub, &response.body)
                    .map(Some)
            }
            Err(e) if matches!(e.code(), Some("ORDER_NOT_EXIST" | "ORDERNOTEXIST")) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Closes an unpaid order so no payment can arrive for it any more.
    pub async fn close(
        &self,
        out_trade_no: &str,
        sub: &SubMerchant,
    ) -> Result<CloseOutcome, ChannelError> {
        let request = transform::close_request(&self.inner.config, out_trade_no, sub)?;
        match self.send(&request).await {
            Ok(_) => Ok(CloseOutcome::Closed),
            Err(e) if matches!(e.code(), Some("ORDER_PAID" | "ORDERPAID")) => {
                Ok(CloseOutcome::AlreadyPaid)
            }
            Err(e) => Err(e),
        }
    }

    /// Refunds (part of) a paid attempt. Re-sending the same `r` is safe: the channel refunds
    /// one out_refund_no once and answers the same refund again. An unknown outcome is settled
    /// with [`WxChannel::query_refund`] before deciding anything.
    pub async fn refund(&self, r: &ChannelRefund) -> Result<Refund, ChannelError> {
        let request = transform::refund_request(&self.inner.config, r)?;
        let response = self.send(&request).await?;
        transform::refund_answer(&r.out_refund_no, &response.body)
    }

    /// The refund at the channel; `None` when WeChat Pay does not know it
    /// (`RESOURCE_NOT_EXISTS`: it never arrived).
    pub async fn query_refund(
        &self,
        out_refund_no: &str,
        sub: &SubMerchant,
    ) -> Result<Option<Refund>, ChannelError> {
        let request = transform::refund_query_request(&self.inner.config, out_refund_no, sub)?;
        match self.send(&request).await {
            Ok(response) => transform::refund_answer(out_refund_no, &response.body).map(Some),
            Err(e) if matches!(e.code(), Some("RESOURCE_NOT_EXISTS" | "NOT_FOUND")) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Verifies and decrypts a callback; `header` looks headers up case-insensitively.
    pub fn parse_callback(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<CallbackEvent, CallbackError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.inner.callbacks.parse(header, body, now)
    }

    /// `wx.requestPayment` parameters, signed with the channel's merchant key: the prepay_id
    /// belongs to the channel account, so only its key makes a paySign WeChat accepts. `appid` is
    /// the app the payer is in (the appid, sp_appid or sub_appid the prepay named).
    pub fn jsapi_pay_params(
        &self,
        appid: &str,
        prepay_id: &str,
    ) -> Result<JsapiPayParams, ChannelError> {
        check_pay_inputs(appid, prepay_id)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        paysign::jsapi_pay_params(&self.inner.signing_key, appid, prepay_id, now, &new_nonce())
            .map_err(|e| ChannelError::config(format!("signing pay parameters: {e}")))
    }

    /// APP SDK `PayReq` parameters, signed with the channel's merchant key. `partnerid` is the
    /// direct mchid, or in partner mode the SUB-merchant's mchid (V2 partner APP 调起支付 doc:
    /// "partnerid 子商户号"), so `sub.sub_mchid` is required for a partner channel.
    pub fn app_pay_params(
        &self,
        appid: &str,
        prepay_id: &str,
        sub: &SubMerchant,
    ) -> Result<AppPayParams, ChannelError> {
        check_pay_inputs(appid, prepay_id)?;
        let config = &self.inner.config;
        let partnerid = match config.kind {
            ChannelKind::WxDirect => config.mchid.as_str(),
            ChannelKind::WxPartner => sub.sub_mchid.as_deref().ok_or_else(|| {
                ChannelError::local(ApiError::param(
                    "/sub_mchid",
                    "partnerid of a partner APP payment is the sub_mchid",
                ))
            })?,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        paysign::app_pay_params(
            &self.inner.signing_key,
            appid,
            partnerid,
            prepay_id,
            now,
            &new_nonce(),
        )
        .map_err(|e| ChannelError::config(format!("signing pay parameters: {e}")))
    }

    fn sandbox(&self) -> Result<&reqwest::Client, ChannelError> {
        self.inner
            .sandbox
            .as_ref()
            .ok_or_else(|| ChannelError::Rejected {
                status: 403,
                code: "NO_AUTH".into(),
                message: format!("channel {} is not a sandbox channel", self.id()),
            })
    }

    async fn sandbox_post(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, ChannelError> {
        let http = self.sandbox()?;
        let base = self.inner.config.base_url.trim_end_matches('/');
        let response = http
            .post(format!("{base}/sandbox/v1/{path}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ChannelError::unknown(format!("sandbox transport: {e}")))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ChannelError::unknown(format!("sandbox transport: {e}")))?
            .to_vec();
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let (code, message) = ApiError::from_body(status, &bytes)
            .map(|e| (e.code.as_str().to_string(), e.message))
            .unwrap_or_else(|| {
                (
                    format!("HTTP_{status}"),
                    String::from_utf8_lossy(&bytes).into_owned(),
                )
            });
        if (400..500).contains(&status) {
            Err(ChannelError::Rejected {
                status,
                code,
                message,
            })
        } else {
            Err(ChannelError::unknown(format!(
                "sandbox HTTP {status} {code}: {message}"
            )))
        }
    }

    /// Sandbox only: plays the payer (success, or a failed attempt that leaves the order payable).
    pub async fn sandbox_pay(
        &self,
        out_trade_no: &str,
        sub: &SubMerchant,
        success: bool,
        openid: Option<&str>,
    ) -> Result<(), ChannelError> {
        self.sandbox()?;
        let body =
            transform::sandbox_pay_body(&self.inner.config, out_trade_no, sub, success, openid)?;
        self.sandbox_post("pay", body).await.map(|_| ())
    }

    /// Sandbox only: onboards a new sub-merchant under this service provider.
    pub async fn sandbox_add_sub_merchant(&self) -> Result<SubMerchant, ChannelError> {
        self.sandbox()?;
        let config = &self.inner.config;
        if config.kind != ChannelKind::WxPartner {
            return Err(ChannelError::Rejected {
                status: 403,
                code: "NO_AUTH".into(),
                message: "a direct channel has no sub-merchants".into(),
            });
        }
        let path = format!(
            "merchants/{}/sub-merchants",
            paygate_wxpay::client::escape_path_segment(&config.mchid)
        );
        let body = self.sandbox_post(&path, b"{}".to_vec()).await?;
        let sub: SandboxSubMerchant = serde_json::from_slice(&body)
            .map_err(|e| ChannelError::unknown(format!("sandbox answer unreadable: {e}")))?;
        Ok(SubMerchant {
            sub_mchid: Some(sub.sub_mchid),
            sub_appid: Some(sub.sub_appid),
        })
    }
}

fn check_pay_inputs(appid: &str, prepay_id: &str) -> Result<(), ChannelError> {
    paygate_wxpay::rules::check_id("/appid", appid, 32).map_err(ChannelError::local)?;
    paygate_wxpay::rules::check_id("/prepay_id", prepay_id, PREPAY_ID_CHARS_MAX)
        .map_err(ChannelError::local)
}
