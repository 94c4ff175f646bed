//! A channel's configuration: one upstream WeChat Pay account (a direct merchant, or a service
//! provider collecting for its sub-merchants) and how paygate reaches it.

use paygate_wxpay::crypto::cert::parse_certificate_pem;
use paygate_wxpay::crypto::{SigningKey, VerifyingKey};
use paygate_wxpay::kit::MerchantKit;
use serde::{Deserialize, Serialize};

/// Default answer deadline of one channel call.
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// No channel call may wait longer than this: a stuck upstream must not pin a request forever.
pub const TIMEOUT_MS_MAX: u64 = 120_000;
/// WeChat Pay's APIv3 key is 32 ASCII characters (AES-256).
pub const APIV3_KEY_BYTES: usize = 32;

/// Which side of WeChat Pay the channel account is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A direct merchant (普通商户): `/v3/pay/transactions/…`, `appid` + `mchid`.
    WxDirect,
    /// A service provider (服务商): `/v3/pay/partner/transactions/…`, `sp_*` + `sub_*`.
    WxPartner,
}

/// One upstream account. Secrets (`private_key_pem`, `apiv3_key`) never reach `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConfig {
    pub id: String,
    pub kind: ChannelKind,
    /// WeChat Pay's base URL, e.g. `https://api.mch.weixin.qq.com/` (or the simulator's).
    pub base_url: String,
    /// The direct mchid, or the service provider's `sp_mchid`: requests are signed as it.
    pub mchid: String,
    /// The direct appid, or the service provider's `sp_appid`.
    pub appid: String,
    /// Serial of the merchant API certificate matching `private_key_pem`.
    pub serial_no: String,
    /// Merchant API private key (PKCS#8 PEM, RSA or SM2).
    pub private_key_pem: String,
    pub apiv3_key: String,
    /// `PUB_KEY_ID_…` of WeChat Pay's public key (public-key mode). Empty with an empty
    /// `platform_public_key_pem` for a merchant still in certificate mode.
    pub platform_public_key_id: String,
    pub platform_public_key_pem: String,
    /// WeChat Pay's platform certificate, trusted as well (certificate mode or migration).
    #[serde(default)]
    pub platform_cert_pem: Option<String>,
    #[serde(default = "timeout_ms_default")]
    pub timeout_ms: u64,
    /// The gateway's callback URL for this channel, sent as `notify_url` on every prepay.
    pub notify_url: String,
    /// The simulator's sandbox API may be called (never true against the real WeChat Pay).
    #[serde(default)]
    pub sandbox: bool,
}

fn timeout_ms_default() -> u64 {
    TIMEOUT_MS_DEFAULT
}

impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("serial_no", &self.serial_no)
            .field("private_key_pem", &"***")
            .field("apiv3_key", &"***")
            .field("platform_public_key_id", &self.platform_public_key_id)
            .field("timeout_ms", &self.timeout_ms)
            .field("notify_url", &self.notify_url)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl ChannelConfig {
    /// A channel for a merchant kit (the simulator writes one per sandbox account). A kit with
    /// `sp_mchid` is a service provider's; its `mchid`/`appid` are then the sp ones.
    pub fn from_kit(id: &str, kit: &MerchantKit, notify_url: &str, sandbox: bool) -> Self {
        let m = &kit.merchant;
        let kind = if m.sp_mchid.is_some() {
            ChannelKind::WxPartner
        } else {
            ChannelKind::WxDirect
        };
        let cert = kit.platform_cert_pem.trim();
        Self {
            id: id.to_string(),
            kind,
            base_url: m.base_url.clone(),
            mchid: m.sp_mchid.clone().unwrap_or_else(|| m.mchid.clone()),
            appid: m.sp_appid.clone().unwrap_or_else(|| m.appid.clone()),
            serial_no: m.serial_no.clone(),
            private_key_pem: kit.apiclient_key_pem.clone(),
            apiv3_key: m.apiv3_key.clone(),
            platform_public_key_id: m.platform_public_key_id.clone(),
            platform_public_key_pem: kit.pub_key_pem.clone(),
            platform_cert_pem: (!cert.is_empty()).then(|| kit.platform_cert_pem.clone()),
            timeout_ms: TIMEOUT_MS_DEFAULT,
            notify_url: notify_url.to_string(),
            sandbox,
        }
    }
}

/// Why a configuration cannot make a channel. Messages never carry key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("channel config field {field}: {issue}")]
    Field { field: &'static str, issue: String },
    #[error("channel {field} is not a usable key: {issue}")]
    Key { field: &'static str, issue: String },
}

fn field(field: &'static str, issue: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        issue: issue.into(),
    }
}

fn key(field: &'static str, issue: impl std::fmt::Display) -> ConfigError {
    ConfigError::Key {
        field,
        issue: issue.to_string(),
    }
}

/// What a checked configuration yields: the parsed keys, by the serial WeChat Pay names them by.
pub(crate) struct Keys {
    pub signing_key: SigningKey,
    /// (serial or `PUB_KEY_ID_…`, key); the public key first when there is one.
    pub platform_keys: Vec<(String, VerifyingKey)>,
    /// The serial asked for in `Wechatpay-Serial`: the public key's id when configured.
    pub wechatpay_serial: Option<String>,
}

impl ChannelConfig {
    /// Checks every field and parses the keys once.
    pub(crate) fn check(&self) -> Result<Keys, ConfigError> {
        if self.id.trim().is_empty() {
            return Err(field("id", "must not be empty"));
        }
        let url =
            reqwest::Url::parse(&self.base_url).map_err(|e| field("base_url", e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(field("base_url", "must be an http(s) URL with a host"));
        }
        for (name, value) in [
            ("mchid", &self.mchid),
            ("appid", &self.appid),
            ("serial_no", &self.serial_no),
        ] {
            paygate_wxpay::rules::check_id(name, value, 64).map_err(|e| field(name, e.message))?;
        }
        if self.apiv3_key.len() != APIV3_KEY_BYTES {
            return Err(field(
                "apiv3_key",
                format!(
                    "must be {APIV3_KEY_BYTES} bytes, got {}",
                    self.apiv3_key.len()
                ),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > TIMEOUT_MS_MAX {
            return Err(field(
                "timeout_ms",
                format!("must be within 1..={TIMEOUT_MS_MAX}"),
            ));
        }
        paygate_wxpay::rules::check_notify_url("notify_url", &self.notify_url)
            .map_err(|e| field("notify_url", e.message))?;
        let signing_key = SigningKey::from_pkcs8_pem(&self.private_key_pem)
            .map_err(|e| key("private_key_pem", e))?;
        let (platform_keys, wechatpay_serial) = self.platform_keys()?;
        Ok(Keys {
            signing_key,
            platform_keys,
            wechatpay_serial,
        })
    }

    #[allow(clippy::type_complexity)] // a list of (serial, key) and the serial to ask for
    fn platform_keys(&self) -> Result<(Vec<(String, VerifyingKey)>, Option<String>), ConfigError> {
        let mut keys = Vec::with_capacity(2);
        let mut wechatpay_serial = None;
        let has_pub_key = !self.platform_public_key_pem.trim().is_empty();
        if has_pub_key {
            if self.platform_public_key_id.trim().is_empty() {
                return Err(field(
                    "platform_public_key_id",
                    "required with platform_public_key_pem",
                ));
            }
            let k = VerifyingKey::from_spki_pem(&self.platform_public_key_pem)
                .map_err(|e| key("platform_public_key_pem", e))?;
            keys.push((self.platform_public_key_id.clone(), k));
            // Asking for the public key makes WeChat Pay sign answers and callbacks with it.
            wechatpay_serial = Some(self.platform_public_key_id.clone());
        }
        if let Some(pem) = self
            .platform_cert_pem
            .as_deref()
            .filter(|p| !p.trim().is_empty())
        {
            let info = parse_certificate_pem(pem).map_err(|e| key("platform_cert_pem", e))?;
            if !info.is_valid_at(time::OffsetDateTime::now_utc()) {
                return Err(key(
                    "platform_cert_pem",
                    format!("certificate {} is not valid now", info.serial_no),
                ));
            }
            keys.push((info.serial_no, info.public_key));
        }
        if keys.is_empty() {
            return Err(field(
                "platform_public_key_pem",
                "give the platform public key or the platform certificate",
            ));
        }
        Ok((keys, wechatpay_serial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_wire_names() {
        assert_eq!(
            serde_json::to_string(&ChannelKind::WxDirect).unwrap(),
            "\"wx_direct\""
        );
        assert_eq!(
            serde_json::from_str::<ChannelKind>("\"wx_partner\"").unwrap(),
            ChannelKind::WxPartner
        );
    }

    fn sample() -> ChannelConfig {
        use paygate_wxpay::crypto::SignatureScheme;
        let merchant = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let platform = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        ChannelConfig {
            id: "wx".into(),
            kind: ChannelKind::WxDirect,
            base_url: "http://127.0.0.1:9/".into(),
            mchid: "1230000109".into(),
            appid: "wxd678efh567hg6787".into(),
            serial_no: "5F1C72E2A8931B72A2E13AF8DEE92471EB397115".into(),
            private_key_pem: merchant.to_pkcs8_pem(),
            apiv3_key: "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb".into(),
            platform_public_key_id: "PUB_KEY_ID_0112345678".into(),
            platform_public_key_pem: platform.verifying_key().to_spki_pem(),
            platform_cert_pem: None,
            timeout_ms: TIMEOUT_MS_DEFAULT,
            notify_url: "http://127.0.0.1:8080/callbacks/wxpay/wx".into(),
            sandbox: false,
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let c = sample();
        let printed = format!("{c:?}");
        assert!(!printed.contains(&c.apiv3_key));
        assert!(!printed.contains("PRIVATE KEY"));
        assert!(printed.contains("***"));
    }

    #[test]
    fn serde_defaults_and_round_trip() {
        let c = sample();
        let mut v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["kind"], "wx_direct");
        let o = v.as_object_mut().unwrap();
        o.remove("timeout_ms");
        o.remove("sandbox");
        o.remove("platform_cert_pem");
        let back: ChannelConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn check_parses_keys_and_refuses_bad_fields() {
        let keys = sample().check().unwrap();
        assert_eq!(keys.platform_keys.len(), 1);
        assert_eq!(
            keys.wechatpay_serial.as_deref(),
            Some("PUB_KEY_ID_0112345678")
        );
        let bad = [
            ChannelConfig {
                apiv3_key: "short".into(),
                ..sample()
            },
            ChannelConfig {
                timeout_ms: 0,
                ..sample()
            },
            ChannelConfig {
                timeout_ms: TIMEOUT_MS_MAX + 1,
                ..sample()
            },
            ChannelConfig {
                notify_url: "http://gw/cb?x=1".into(),
                ..sample()
            },
            ChannelConfig {
                base_url: "ftp://x/".into(),
                ..sample()
            },
            ChannelConfig {
                private_key_pem: "nope".into(),
                ..sample()
            },
            ChannelConfig {
                mchid: String::new(),
                ..sample()
            },
            ChannelConfig {
                platform_public_key_pem: String::new(),
                ..sample()
            },
        ];
        for c in bad {
            assert!(c.check().is_err(), "{c:?}");
        }
    }
}
