//! Who the simulator knows: its platform keys (certificate mode, public-key mode, and an
//! SM2 public key for the ShangMi scheme) and the sandbox accounts (direct merchants and
//! service providers with sub-merchants), each with the API certificates it signs with.
//! Identities persist in `<kit-dir>/.sim/identity.json` so a restarted simulator keeps
//! accepting the kits it wrote before; business state lives in memory only.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use paygate_wxpay::crypto::aead::AeadAlgorithm;
use paygate_wxpay::crypto::cert::{CertificateParams, self_signed_certificate};
use paygate_wxpay::crypto::{SignatureScheme, SigningKey, VerifyingKey};
use paygate_wxpay::kit::{MerchantJson, MerchantKit};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}")]
    Crypto(String),
    #[error("identity file {path}: {message}")]
    File { path: String, message: String },
}

fn crypto(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Crypto(e.to_string())
}

/// The platform's signing keys, as WeChat Pay holds them.
pub struct Platform {
    pub cert_key: SigningKey,
    pub cert_pem: String,
    pub cert_serial: String,
    pub pub_key: SigningKey,
    pub pub_key_id: String,
    pub sm2_key: SigningKey,
    pub sm2_key_id: String,
}

impl Platform {
    fn generate(now: OffsetDateTime) -> Result<Self, IdentityError> {
        let cert_key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).map_err(crypto)?;
        let issued = self_signed_certificate(
            &cert_key,
            &CertificateParams {
                common_name: "Tenpay.com Root CA (paygate simulator)".into(),
                organization: "paygate simulator".into(),
                not_before: now - time::Duration::days(1),
                not_after: now + time::Duration::days(5 * 365),
            },
        )
        .map_err(crypto)?;
        let pub_key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).map_err(crypto)?;
        let sm2_key = SigningKey::generate(SignatureScheme::Sm2WithSm3).map_err(crypto)?;
        Ok(Self {
            cert_key,
            cert_pem: issued.pem,
            cert_serial: issued.serial_no,
            pub_key,
            pub_key_id: format!("PUB_KEY_ID_01{:020}", rand::random::<u64>() % 10u64.pow(19)),
            sm2_key,
            sm2_key_id: format!("PUB_KEY_ID_02{:020}", rand::random::<u64>() % 10u64.pow(19)),
        })
    }

    /// The key a response is signed with: the one the request's `Wechatpay-Serial` names,
    /// else the SM2 key for an SM2-signed request, else the platform certificate's key
    /// (certificate-mode SDKs send no serial and must still verify).
    pub fn response_key(
        &self,
        requested_serial: Option<&str>,
        scheme: SignatureScheme,
    ) -> (&SigningKey, &str) {
        match requested_serial {
            Some(s) if s == self.pub_key_id => (&self.pub_key, &self.pub_key_id),
            Some(s) if s == self.sm2_key_id => (&self.sm2_key, &self.sm2_key_id),
            Some(s) if s == self.cert_serial && scheme == SignatureScheme::Rsa2048Sha256 => {
                (&self.cert_key, &self.cert_serial)
            }
            _ if scheme == SignatureScheme::Sm2WithSm3 => (&self.sm2_key, &self.sm2_key_id),
            _ => (&self.cert_key, &self.cert_serial),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubMerchant {
    pub sub_mchid: String,
    pub sub_appid: String,
    /// Profit-sharing maximum ratio in basis points of ten thousand (2000 = 20%).
    pub max_ratio: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Direct,
    ServiceProvider,
}

/// A sandbox account: a direct merchant, or a service provider with sub-merchants.
#[derive(Clone, Serialize, Deserialize)]
pub struct Account {
    pub mchid: String,
    pub appid: String,
    pub kind: AccountKind,
    pub apiv3_key: String,
    /// Merchant API certificates by serial: the keys requests are verified with.
    pub api_certs: BTreeMap<String, String>,
    pub subs: BTreeMap<String, SubMerchant>,
    /// Channel fee in basis points (60 = 0.60%), used for bills.
    pub fee_rate_bp: u32,
    /// Direct merchants' profit-sharing ratio limit (3000 = 30%).
    pub max_ratio: u32,
    pub scheme: AccountScheme,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountScheme {
    Rsa,
    Sm2,
}

impl Account {
    pub fn aead(&self) -> AeadAlgorithm {
        match self.scheme {
            AccountScheme::Rsa => AeadAlgorithm::Aes256Gcm,
            AccountScheme::Sm2 => AeadAlgorithm::Sm4Gcm,
        }
    }
}

/// Accounts plus the parsed verifying keys, ready for the request path.
pub struct Directory {
    pub platform: Platform,
    pub accounts: HashMap<String, Account>,
    pub api_keys: HashMap<(String, String), VerifyingKey>,
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    platform_cert_key_pem: String,
    platform_cert_pem: String,
    platform_pub_key_pem: String,
    platform_pub_key_id: String,
    platform_sm2_key_pem: String,
    platform_sm2_key_id: String,
    accounts: Vec<Account>,
}

pub struct NewAccount {
    pub account: Account,
    pub kit: MerchantKit,
}

impl Directory {
    pub fn new(now: OffsetDateTime) -> Result<Self, IdentityError> {
        Ok(Self {
            platform: Platform::generate(now)?,
            accounts: HashMap::new(),
            api_keys: HashMap::new(),
        })
    }

    /// Loads `identity.json` from `dir` when present, else starts afresh.
    pub fn load_or_new(dir: &Path, now: OffsetDateTime) -> Result<Self, IdentityError> {
        let path = dir.join("identity.json");
        let Ok(bytes) = std::fs::read(&path) else {
            return Self::new(now);
        };
        let file_err = |message: String| IdentityError::File {
            path: path.display().to_string(),
            message,
        };
        let file: IdentityFile =
            serde_json::from_slice(&bytes).map_err(|e| file_err(e.to_string()))?;
        let cert_serial =
            paygate_wxpay::crypto::cert::parse_certificate_pem(&file.platform_cert_pem)
                .map_err(|e| file_err(e.to_string()))?
                .serial_no;
        let platform = Platform {
            cert_key: SigningKey::from_pkcs8_pem(&file.platform_cert_key_pem).map_err(crypto)?,
            cert_pem: file.platform_cert_pem,
            cert_serial,
            pub_key: SigningKey::from_pkcs8_pem(&file.platform_pub_key_pem).map_err(crypto)?,
            pub_key_id: file.platform_pub_key_id,
            sm2_key: SigningKey::from_pkcs8_pem(&file.platform_sm2_key_pem).map_err(crypto)?,
            sm2_key_id: file.platform_sm2_key_id,
        };
        let mut dirx = Self {
            platform,
            accounts: HashMap::new(),
            api_keys: HashMap::new(),
        };
        for account in file.accounts {
            dirx.insert(account)?;
        }
        Ok(dirx)
    }

    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let mut accounts: Vec<Account> = self.accounts.values().cloned().collect();
        accounts.sort_by(|a, b| a.mchid.cmp(&b.mchid));
        let file = IdentityFile {
            platform_cert_key_pem: self.platform.cert_key.to_pkcs8_pem(),
            platform_cert_pem: self.platform.cert_pem.clone(),
            platform_pub_key_pem: self.platform.pub_key.to_pkcs8_pem(),
            platform_pub_key_id: self.platform.pub_key_id.clone(),
            platform_sm2_key_pem: self.platform.sm2_key.to_pkcs8_pem(),
            platform_sm2_key_id: self.platform.sm2_key_id.clone(),
            accounts,
        };
        let path = dir.join("identity.json");
        let err = |message: String| IdentityError::File {
            path: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| err(e.to_string()))?;
        std::fs::write(&path, bytes).map_err(|e| err(e.to_string()))
    }

    pub fn insert(&mut self, account: Account) -> Result<(), IdentityError> {
        for (serial, pem) in &account.api_certs {
            let key = VerifyingKey::from_certificate_pem(pem)
                .or_else(|_| VerifyingKey::from_spki_pem(pem))
                .map_err(crypto)?;
            self.api_keys
                .insert((account.mchid.clone(), serial.clone()), key);
        }
        self.accounts.insert(account.mchid.clone(), account);
        Ok(())
    }

    /// The account that owns `mchid`, or the service provider a sub-merchant belongs to.
    pub fn account(&self, mchid: &str) -> Option<&Account> {
        self.accounts.get(mchid)
    }

    /// Creates a sandbox account and its kit. `sub_count` sub-merchants for a provider.
    pub fn create_account(
        &mut self,
        kind: AccountKind,
        scheme: AccountScheme,
        sub_count: usize,
        base_url: &str,
        now: OffsetDateTime,
    ) -> Result<NewAccount, IdentityError> {
        let signature_scheme = match scheme {
            AccountScheme::Rsa => SignatureScheme::Rsa2048Sha256,
            AccountScheme::Sm2 => SignatureScheme::Sm2WithSm3,
        };
        let key = SigningKey::generate(signature_scheme).map_err(crypto)?;
        let mchid = self.fresh_mchid(if kind == AccountKind::Direct {
            "19"
        } else {
            "16"
        });
        let (cert_pem, serial_no) = match signature_scheme {
            SignatureScheme::Rsa2048Sha256 => {
                let issued = self_signed_certificate(
                    &key,
                    &CertificateParams {
                        common_name: mchid.clone(),
                        organization: "paygate sandbox merchant".into(),
                        not_before: now - time::Duration::days(1),
                        not_after: now + time::Duration::days(5 * 365),
                    },
                )
                .map_err(crypto)?;
                (issued.pem, issued.serial_no)
            }
            // No X.509 SM2 certificates here: an SM2 merchant registers its public key,
            // identified by a serial of our choosing.
            SignatureScheme::Sm2WithSm3 => (key.verifying_key().to_spki_pem(), hex_serial()),
        };
        let mut subs = BTreeMap::new();
        for _ in 0..sub_count {
            let sub_mchid = self.fresh_mchid("17");
            subs.insert(
                sub_mchid.clone(),
                SubMerchant {
                    sub_mchid,
                    sub_appid: fresh_appid(),
                    max_ratio: 2000,
                },
            );
        }
        let account = Account {
            mchid: mchid.clone(),
            appid: fresh_appid(),
            kind: kind.clone(),
            apiv3_key: crate::ids::token(32),
            api_certs: BTreeMap::from([(serial_no.clone(), cert_pem.clone())]),
            subs,
            fee_rate_bp: 60,
            max_ratio: 3000,
            scheme,
        };
        let first_sub = account.subs.values().next();
        let partner = kind == AccountKind::ServiceProvider;
        let pub_key_pem = match scheme {
            AccountScheme::Rsa => self.platform.pub_key.verifying_key().to_spki_pem(),
            AccountScheme::Sm2 => self.platform.sm2_key.verifying_key().to_spki_pem(),
        };
        let kit = MerchantKit {
            merchant: MerchantJson {
                mchid: mchid.clone(),
                appid: account.appid.clone(),
                serial_no,
                apiv3_key: account.apiv3_key.clone(),
                base_url: base_url.to_string(),
                platform_public_key_id: match scheme {
                    AccountScheme::Rsa => self.platform.pub_key_id.clone(),
                    AccountScheme::Sm2 => self.platform.sm2_key_id.clone(),
                },
                platform_serial_no: self.platform.cert_serial.clone(),
                sp_mchid: partner.then(|| mchid.clone()),
                sub_mchid: first_sub.filter(|_| partner).map(|s| s.sub_mchid.clone()),
                sp_appid: partner.then(|| account.appid.clone()),
                sub_appid: first_sub.filter(|_| partner).map(|s| s.sub_appid.clone()),
            },
            apiclient_key_pem: key.to_pkcs8_pem(),
            apiclient_cert_pem: cert_pem,
            pub_key_pem,
            platform_cert_pem: self.platform.cert_pem.clone(),
        };
        self.insert(account.clone())?;
        Ok(NewAccount { account, kit })
    }

    /// A new sub-merchant under a service provider; `None` if `sp_mchid` is not one.
    pub fn add_sub_merchant(&mut self, sp_mchid: &str) -> Option<SubMerchant> {
        let is_provider = self
            .accounts
            .get(sp_mchid)
            .is_some_and(|a| a.kind == AccountKind::ServiceProvider);
        if !is_provider {
            return None;
        }
        let sub_mchid = self.fresh_mchid("17");
        let sub = SubMerchant {
            sub_mchid: sub_mchid.clone(),
            sub_appid: fresh_appid(),
            max_ratio: 2000,
        };
        self.accounts
            .get_mut(sp_mchid)?
            .subs
            .insert(sub_mchid, sub.clone());
        Some(sub)
    }

    /// Registers `sub_mchid` under a provider as it is first used (sandbox auto-onboarding).
    pub fn onboard_sub_merchant(
        &mut self,
        sp_mchid: &str,
        sub_mchid: &str,
        sub_appid: Option<&str>,
    ) -> Option<SubMerchant> {
        let taken = self.accounts.contains_key(sub_mchid);
        let account = self
            .accounts
            .get_mut(sp_mchid)
            .filter(|a| a.kind == AccountKind::ServiceProvider)?;
        if taken {
            return None;
        }
        let sub = account
            .subs
            .entry(sub_mchid.to_string())
            .or_insert_with(|| SubMerchant {
                sub_mchid: sub_mchid.to_string(),
                sub_appid: sub_appid.map_or_else(fresh_appid, str::to_string),
                max_ratio: 2000,
            });
        Some(sub.clone())
    }

    fn fresh_mchid(&self, prefix: &str) -> String {
        loop {
            let candidate = format!("{prefix}{:08}", rand::random::<u32>() % 100_000_000);
            let taken = self.accounts.contains_key(&candidate)
                || self
                    .accounts
                    .values()
                    .any(|a| a.subs.contains_key(&candidate));
            if !taken {
                return candidate;
            }
        }
    }
}

fn fresh_appid() -> String {
    format!("wx{:016x}", rand::random::<u64>())
}

fn hex_serial() -> String {
    format!(
        "{:016X}{:016X}{:08X}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}
