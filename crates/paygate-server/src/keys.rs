//! The gateway's platform keys: to its merchants paygate *is* WeChat Pay, so it signs every
//! answer and notification with a platform certificate's key (certificate mode) or a
//! platform public key (`PUB_KEY_ID_…`, public-key mode). Created once, kept in the store,
//! so every node of a cluster signs with the same keys.

use paygate_store::{PlatformKeyKind, PlatformKeyRecord, Store, StoreError};
use paygate_wxpay::crypto::cert::{
    CertificateParams, parse_certificate_pem, self_signed_certificate,
};
use paygate_wxpay::crypto::{SignatureScheme, SigningKey, VerifyingKey};

pub struct PlatformKeys {
    pub cert_key: SigningKey,
    pub cert_serial: String,
    pub cert_pem: String,
    pub pub_key: SigningKey,
    pub pub_key_id: String,
    pub pub_key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("platform key: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> KeyError {
    KeyError::Crypto(e.to_string())
}

impl PlatformKeys {
    /// Loads the newest key of each kind, creating what is missing. Two nodes starting at
    /// once may both try to create one: the store takes one key per (kind, generation)
    /// (migration 0010), so the loser's insert conflicts and it re-reads the winner's key.
    pub async fn load_or_create(store: &dyn Store) -> Result<Self, KeyError> {
        for _ in 0..2 {
            let keys = store.platform_keys().await?;
            let newest = |kind| {
                keys.iter()
                    .filter(|k| k.kind == kind)
                    .max_by(|a, b| {
                        a.created_at
                            .cmp(&b.created_at)
                            .then_with(|| a.key_id.cmp(&b.key_id))
                    })
                    .cloned()
            };
            match (
                newest(PlatformKeyKind::Certificate),
                newest(PlatformKeyKind::PublicKey),
            ) {
                (Some(cert), Some(public)) => return Self::from_records(&cert, &public),
                (cert, public) => {
                    if cert.is_none() {
                        insert_ignoring_conflict(store, new_certificate_key()?).await?;
                    }
                    if public.is_none() {
                        insert_ignoring_conflict(store, new_public_key()?).await?;
                    }
                }
            }
        }
        Err(KeyError::Crypto(
            "platform keys could not be created".into(),
        ))
    }

    fn from_records(
        cert: &PlatformKeyRecord,
        public: &PlatformKeyRecord,
    ) -> Result<Self, KeyError> {
        let cert_pem = cert
            .certificate_pem
            .clone()
            .ok_or_else(|| crypto("certificate key without a certificate"))?;
        let pub_key = SigningKey::from_pkcs8_pem(&public.private_key_pem).map_err(crypto)?;
        Ok(Self {
            cert_key: SigningKey::from_pkcs8_pem(&cert.private_key_pem).map_err(crypto)?,
            cert_serial: cert.key_id.clone(),
            cert_pem,
            pub_key_pem: pub_key.verifying_key().to_spki_pem(),
            pub_key,
            pub_key_id: public.key_id.clone(),
        })
    }

    /// The key an answer is signed with: the one the request's `Wechatpay-Serial` names,
    /// else the platform certificate's (certificate-mode SDKs send no serial).
    pub fn answer_key(&self, requested_serial: Option<&str>) -> (&SigningKey, &str) {
        match requested_serial {
            Some(s) if s == self.pub_key_id => (&self.pub_key, &self.pub_key_id),
            _ => (&self.cert_key, &self.cert_serial),
        }
    }

    /// True if `serial` names one of these keys.
    pub fn knows(&self, serial: &str) -> bool {
        serial == self.pub_key_id || serial == self.cert_serial
    }

    pub fn public_verifying_key(&self) -> VerifyingKey {
        self.pub_key.verifying_key()
    }
}

async fn insert_ignoring_conflict(
    store: &dyn Store,
    record: PlatformKeyRecord,
) -> Result<(), KeyError> {
    match store.insert_platform_key(&record).await {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn new_certificate_key() -> Result<PlatformKeyRecord, KeyError> {
    let now = time::OffsetDateTime::now_utc();
    let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).map_err(crypto)?;
    let issued = self_signed_certificate(
        &key,
        &CertificateParams {
            common_name: "paygate platform certificate".into(),
            organization: "paygate".into(),
            not_before: now - time::Duration::days(1),
            not_after: now + time::Duration::days(5 * 365),
        },
    )
    .map_err(crypto)?;
    let serial = parse_certificate_pem(&issued.pem)
        .map_err(crypto)?
        .serial_no;
    Ok(PlatformKeyRecord {
        key_id: serial,
        kind: PlatformKeyKind::Certificate,
        private_key_pem: key.to_pkcs8_pem(),
        certificate_pem: Some(issued.pem),
        created_at: now,
    })
}

fn new_public_key() -> Result<PlatformKeyRecord, KeyError> {
    let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).map_err(crypto)?;
    Ok(PlatformKeyRecord {
        key_id: format!(
            "PUB_KEY_ID_01{:019}{:09}",
            rand::random::<u64>() % 10_000_000_000_000_000_000,
            rand::random::<u32>() % 1_000_000_000
        ),
        kind: PlatformKeyKind::PublicKey,
        private_key_pem: key.to_pkcs8_pem(),
        certificate_pem: None,
        created_at: time::OffsetDateTime::now_utc(),
    })
}
