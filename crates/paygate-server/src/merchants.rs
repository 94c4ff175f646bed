//! Merchants of the gateway: onboarding (keys, certificate, APIv3 key, the channel mapping,
//! and the credential kit in the simulator's layout), and a short-lived cache of who may
//! call with which key, so authentication does not hit the store on every request.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use paygate_core::error::{ApiError, ErrorCode};
use paygate_store::{MerchantCertRecord, MerchantRecord, MerchantStatus, Store, StoreError};
use paygate_wxpay::crypto::cert::{
    CertificateParams, parse_certificate_pem, self_signed_certificate,
};
use paygate_wxpay::crypto::{SignatureScheme, SigningKey, VerifyingKey};
use paygate_wxpay::kit::{MerchantJson, MerchantKit};
use paygate_wxpay::server::KeyLookup;

use crate::keys::PlatformKeys;

/// How long a cached merchant is trusted: a disable on another node takes effect within it.
const CACHE_TTL: Duration = Duration::from_secs(2);
const CACHE_ENTRIES_MAX: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("crypto: {0}")]
    Crypto(String),
}

/// What onboarding needs to know about the merchant's channel.
pub struct ChannelMapping {
    pub channel_id: String,
    pub sub_mchid: Option<String>,
    pub sub_appid: Option<String>,
}

pub struct NewMerchant {
    pub name: String,
    /// The merchant's own certificate (PEM); without it a key pair is generated for the kit.
    pub cert_pem: Option<String>,
    pub mapping: ChannelMapping,
}

pub struct Onboarded {
    pub merchant: MerchantRecord,
    /// The kit; `apiclient_key_pem` is empty when the merchant registered its own certificate.
    pub kit: MerchantKit,
}

/// Creates a merchant and its kit.
pub async fn onboard(
    store: &dyn Store,
    keys: &PlatformKeys,
    base_url: &str,
    new: NewMerchant,
) -> Result<Onboarded, OnboardError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(OnboardError::Invalid(
            "a merchant name of 1 to 64 characters is required".into(),
        ));
    }
    let now = time::OffsetDateTime::now_utc();
    let crypto = |e: &dyn std::fmt::Display| OnboardError::Crypto(e.to_string());
    // The kit names the keys that sign answers naming none (keys.rs rotation rule).
    let keys = keys.current();
    for _ in 0..5 {
        let mchid = format!("18{:08}", rand::random::<u32>() % 100_000_000);
        let (key_pem, cert_pem) = match &new.cert_pem {
            Some(pem) => (String::new(), pem.clone()),
            None => {
                let key =
                    SigningKey::generate(SignatureScheme::Rsa2048Sha256).map_err(|e| crypto(&e))?;
                let issued = self_signed_certificate(
                    &key,
                    &CertificateParams {
                        common_name: mchid.clone(),
                        organization: name.to_string(),
                        not_before: now - time::Duration::days(1),
                        not_after: now + time::Duration::days(5 * 365),
                    },
                )
                .map_err(|e| crypto(&e))?;
                (key.to_pkcs8_pem(), issued.pem)
            }
        };
        let info = parse_certificate_pem(&cert_pem)
            .map_err(|e| OnboardError::Invalid(format!("certificate: {e}")))?;
        let merchant = MerchantRecord {
            mchid: mchid.clone(),
            name: name.to_string(),
            appid: format!("wx{:016x}", rand::random::<u64>()),
            apiv3_key: paygate_core::ids::token(32),
            status: MerchantStatus::Active,
            channel_id: new.mapping.channel_id.clone(),
            channel_sub_mchid: new.mapping.sub_mchid.clone(),
            channel_sub_appid: new.mapping.sub_appid.clone(),
            created_at: now,
        };
        let cert = MerchantCertRecord {
            mchid: mchid.clone(),
            serial_no: info.serial_no.clone(),
            pem: cert_pem.clone(),
            created_at: now,
        };
        match store.insert_merchant(&merchant, &cert).await {
            Ok(()) => {
                let kit = MerchantKit {
                    merchant: MerchantJson {
                        mchid,
                        appid: merchant.appid.clone(),
                        serial_no: info.serial_no,
                        apiv3_key: merchant.apiv3_key.clone(),
                        base_url: base_url.to_string(),
                        platform_public_key_id: keys.pub_key_id.clone(),
                        platform_serial_no: keys.cert_serial.clone(),
                        sp_mchid: None,
                        sub_mchid: None,
                        sp_appid: None,
                        sub_appid: None,
                    },
                    apiclient_key_pem: key_pem,
                    apiclient_cert_pem: cert_pem,
                    pub_key_pem: keys.pub_key_pem.clone(),
                    platform_cert_pem: keys.cert_pem.clone(),
                };
                return Ok(Onboarded { merchant, kit });
            }
            // A random mchid collided: draw another.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(OnboardError::Invalid(
        "could not allocate a merchant number".into(),
    ))
}

/// A sub-merchant number for a merchant on a sandbox provider channel (the simulator
/// onboards it on first use).
pub fn sandbox_sub_mchid() -> String {
    format!("17{:08}", rand::random::<u32>() % 100_000_000)
}

#[derive(Clone)]
pub struct CachedMerchant {
    pub record: MerchantRecord,
    pub keys: HashMap<String, VerifyingKey>,
    fetched: Instant,
}

#[derive(Default)]
pub struct MerchantCache {
    entries: RwLock<HashMap<String, CachedMerchant>>,
}

impl MerchantCache {
    pub async fn get(
        &self,
        store: &dyn Store,
        mchid: &str,
    ) -> Result<Option<CachedMerchant>, StoreError> {
        let cached = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(mchid)
            .cloned();
        if let Some(c) = cached.filter(|c| c.fetched.elapsed() < CACHE_TTL) {
            return Ok(Some(c));
        }
        let Some(record) = store.get_merchant(mchid).await? else {
            return Ok(None);
        };
        let mut keys = HashMap::new();
        for cert in store.merchant_certs(mchid).await? {
            let key = VerifyingKey::from_certificate_pem(&cert.pem)
                .or_else(|_| VerifyingKey::from_spki_pem(&cert.pem));
            if let Ok(key) = key {
                keys.insert(cert.serial_no, key);
            }
        }
        let entry = CachedMerchant {
            record,
            keys,
            fetched: Instant::now(),
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(mchid.to_string(), entry.clone());
        Ok(Some(entry))
    }

    pub fn forget(&self, mchid: &str) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(mchid);
    }
}

/// The authentication view of a (possibly absent) merchant.
pub fn key_lookup(merchant: Option<&CachedMerchant>, serial: &str) -> KeyLookup {
    let Some(m) = merchant else {
        return KeyLookup::UnknownMerchant;
    };
    if m.record.status != MerchantStatus::Active {
        return KeyLookup::Refused(ApiError::new(ErrorCode::NoAuth, "商户已被停用，无权调用"));
    }
    match m.keys.get(serial) {
        Some(key) => KeyLookup::Key(key.clone()),
        None => KeyLookup::UnknownSerial,
    }
}

/// A merchant as the admin API shows it: everything but the APIv3 key.
pub fn merchant_view(m: &MerchantRecord) -> serde_json::Value {
    serde_json::json!({
        "mchid": m.mchid,
        "name": m.name,
        "appid": m.appid,
        "status": m.status,
        "channel_id": m.channel_id,
        "channel_sub_mchid": m.channel_sub_mchid,
        "created_at": paygate_core::timefmt::rfc3339_beijing(m.created_at),
    })
}

impl Onboarded {
    pub fn merchant_view(&self) -> serde_json::Value {
        merchant_view(&self.merchant)
    }
}
