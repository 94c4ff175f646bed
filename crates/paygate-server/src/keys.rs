//! The gateway's platform keys: to its merchants paygate *is* WeChat Pay, so it signs every
//! answer and notification with a platform certificate's key (certificate mode) or a
//! platform public key (`PUB_KEY_ID_…`, public-key mode). Kept in the store, so every node of
//! a cluster signs with the same keys.
//!
//! Rotation (issue 7 §2), as WeChat does it: a rotation adds the next generation of a kind
//! and it is published at once (`/v3/certificates` lists every served certificate, and a
//! request naming its serial / public key id in `Wechatpay-Serial` is answered with it).
//! Requests that name no key keep being signed with the previous generation until
//! `switch_after_s` has passed (time for merchants to download the new certificate), then
//! with the new one. The previous generation stays served for `grace_s` after the rotation
//! and is retired afterwards (no longer listed nor used; a request naming it gets the
//! default key). Every node derives this from the stored keys and the clock alone, reloading
//! every `reload_interval_ms`, so nodes converge without coordination.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use paygate_store::{PlatformKeyKind, PlatformKeyRecord, Store, StoreError};
use paygate_wxpay::crypto::cert::{
    CertificateParams, parse_certificate_pem, self_signed_certificate,
};
use paygate_wxpay::crypto::{SignatureScheme, SigningKey, VerifyingKey};
use serde::Deserialize;
use time::OffsetDateTime;

/// `[platform_keys]` in paygate.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformKeyConfig {
    /// How long the previous generation is still served after a rotation.
    pub grace_s: u64,
    /// After a rotation, how long answers naming no key are still signed with the previous
    /// generation. Capped at `grace_s`.
    pub switch_after_s: u64,
    /// How often every node re-reads the stored keys.
    pub reload_interval_ms: u64,
}

impl Default for PlatformKeyConfig {
    fn default() -> Self {
        Self {
            grace_s: 7 * 86_400,
            switch_after_s: 86_400,
            reload_interval_ms: 10_000,
        }
    }
}

impl PlatformKeyConfig {
    fn policy(&self) -> Policy {
        let grace = time::Duration::seconds(i64::try_from(self.grace_s).unwrap_or(i64::MAX));
        let switch = time::Duration::seconds(
            i64::try_from(self.switch_after_s.min(self.grace_s)).unwrap_or(i64::MAX),
        );
        Policy { grace, switch }
    }
}

#[derive(Clone, Copy, Debug)]
struct Policy {
    grace: time::Duration,
    switch: time::Duration,
}

/// One key as served right now.
#[derive(Clone)]
pub struct ServedKey {
    pub key_id: String,
    pub kind: PlatformKeyKind,
    /// 1 for the first key of its kind, +1 per rotation.
    pub generation: usize,
    pub key: SigningKey,
    pub certificate_pem: Option<String>,
    pub created_at: OffsetDateTime,
    /// When it stops being served (a newer generation exists), if it will.
    pub retires_at: Option<OffsetDateTime>,
    /// Signs answers that name no key (or name a retired one).
    pub default: bool,
}

/// The keys served at one moment: the default of each kind, and every served generation.
pub struct KeySet {
    pub cert_key: SigningKey,
    pub cert_serial: String,
    pub cert_pem: String,
    pub pub_key: SigningKey,
    pub pub_key_id: String,
    pub pub_key_pem: String,
    /// Oldest first.
    pub served: Vec<ServedKey>,
    /// Keys of past generations no longer served.
    pub retired: Vec<String>,
}

impl KeySet {
    /// The key an answer is signed with: the served one the request's `Wechatpay-Serial`
    /// names, else the default platform certificate's (certificate-mode SDKs send no serial).
    pub fn answer_key(&self, requested_serial: Option<&str>) -> (&SigningKey, &str) {
        match requested_serial.and_then(|s| self.served.iter().find(|k| k.key_id == s)) {
            Some(k) => (&k.key, &k.key_id),
            None => (&self.cert_key, &self.cert_serial),
        }
    }

    /// The private key of the key a merchant encrypted a sensitive field for.
    pub fn decrypting_key(&self, requested_serial: Option<&str>) -> &SigningKey {
        self.answer_key(requested_serial).0
    }

    /// True if `serial` names a served key.
    pub fn knows(&self, serial: &str) -> bool {
        self.served.iter().any(|k| k.key_id == serial)
    }

    /// Every served certificate, oldest first (what `/v3/certificates` lists).
    pub fn certificate_pems(&self) -> Vec<&str> {
        self.served
            .iter()
            .filter_map(|k| k.certificate_pem.as_deref())
            .collect()
    }

    pub fn public_verifying_key(&self) -> VerifyingKey {
        self.pub_key.verifying_key()
    }

    /// The operator's view (no private key).
    pub fn view(&self) -> serde_json::Value {
        let ts = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        serde_json::json!({
            "served": self.served.iter().map(|k| serde_json::json!({
                "key_id": k.key_id,
                "kind": kind_str(k.kind),
                "generation": k.generation,
                "created_at": ts(k.created_at),
                "retires_at": k.retires_at.map(ts),
                "default": k.default,
                // Public: what a merchant verifies with (public-key mode).
                "public_key_pem": k.key.verifying_key().to_spki_pem(),
            })).collect::<Vec<_>>(),
            "retired": self.retired,
        })
    }

    fn build(
        records: &[PlatformKeyRecord],
        policy: Policy,
        now: OffsetDateTime,
    ) -> Result<Self, KeyError> {
        let mut served = Vec::new();
        let mut retired = Vec::new();
        for kind in [PlatformKeyKind::Certificate, PlatformKeyKind::PublicKey] {
            let mut gens: Vec<&PlatformKeyRecord> =
                records.iter().filter(|k| k.kind == kind).collect();
            gens.sort_by(|a, b| {
                a.created_at
                    .cmp(&b.created_at)
                    .then_with(|| a.key_id.cmp(&b.key_id))
            });
            // The newest generation whose switch time has come; before any, the oldest served.
            let switched = gens
                .iter()
                .rposition(|k| k.created_at + policy.switch <= now);
            let mut first_served = None;
            for (i, rec) in gens.iter().enumerate() {
                let retires_at = gens.get(i + 1).map(|next| next.created_at + policy.grace);
                if retires_at.is_some_and(|t| t <= now) {
                    retired.push(rec.key_id.clone());
                    continue;
                }
                first_served.get_or_insert(i);
                served.push((
                    i,
                    ServedKey {
                        key_id: rec.key_id.clone(),
                        kind,
                        generation: i + 1,
                        key: SigningKey::from_pkcs8_pem(&rec.private_key_pem).map_err(crypto)?,
                        certificate_pem: rec.certificate_pem.clone(),
                        created_at: rec.created_at,
                        retires_at,
                        default: false,
                    },
                ));
            }
            let default = match (switched, first_served) {
                (Some(s), Some(f)) => s.max(f),
                (None, Some(f)) => f,
                (_, None) => continue,
            };
            if let Some((_, k)) = served
                .iter_mut()
                .find(|(i, k)| k.kind == kind && *i == default)
            {
                k.default = true;
            }
        }
        let served: Vec<ServedKey> = served.into_iter().map(|(_, k)| k).collect();
        let default_of = |kind| {
            served
                .iter()
                .find(|k| k.kind == kind && k.default)
                .ok_or_else(|| crypto(format!("no {} platform key", kind_str(kind))))
        };
        let cert = default_of(PlatformKeyKind::Certificate)?;
        let public = default_of(PlatformKeyKind::PublicKey)?;
        let cert_pem = cert
            .certificate_pem
            .clone()
            .ok_or_else(|| crypto("certificate key without a certificate"))?;
        Ok(Self {
            cert_key: cert.key.clone(),
            cert_serial: cert.key_id.clone(),
            cert_pem,
            pub_key: public.key.clone(),
            pub_key_id: public.key_id.clone(),
            pub_key_pem: public.key.verifying_key().to_spki_pem(),
            served: served.clone(),
            retired,
        })
    }
}

/// The platform keys of this node: the current [`KeySet`], swapped whole on reload.
pub struct PlatformKeys {
    policy: Policy,
    set: RwLock<Arc<KeySet>>,
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

pub fn kind_str(kind: PlatformKeyKind) -> &'static str {
    match kind {
        PlatformKeyKind::Certificate => "CERTIFICATE",
        PlatformKeyKind::PublicKey => "PUBLIC_KEY",
    }
}

pub fn parse_kind(s: &str) -> Option<PlatformKeyKind> {
    match s {
        "CERTIFICATE" => Some(PlatformKeyKind::Certificate),
        "PUBLIC_KEY" => Some(PlatformKeyKind::PublicKey),
        _ => None,
    }
}

impl PlatformKeys {
    /// Loads the keys with the default rotation policy, creating what is missing.
    pub async fn load_or_create(store: &dyn Store) -> Result<Self, KeyError> {
        Self::load_or_create_with(store, &PlatformKeyConfig::default()).await
    }

    /// Loads the served keys, creating a first key of each kind if missing. Two nodes
    /// starting at once may both try to create one: the store takes one key per (kind,
    /// generation) (migration 0010), so the loser's insert conflicts and it re-reads the
    /// winner's key.
    pub async fn load_or_create_with(
        store: &dyn Store,
        config: &PlatformKeyConfig,
    ) -> Result<Self, KeyError> {
        let policy = config.policy();
        for _ in 0..2 {
            let keys = store.platform_keys().await?;
            let has = |kind| keys.iter().any(|k| k.kind == kind);
            match (
                has(PlatformKeyKind::Certificate),
                has(PlatformKeyKind::PublicKey),
            ) {
                (true, true) => {
                    let set = KeySet::build(&keys, policy, OffsetDateTime::now_utc())?;
                    return Ok(Self {
                        policy,
                        set: RwLock::new(Arc::new(set)),
                    });
                }
                (cert, public) => {
                    if !cert {
                        insert_ignoring_conflict(store, new_key(PlatformKeyKind::Certificate)?)
                            .await?;
                    }
                    if !public {
                        insert_ignoring_conflict(store, new_key(PlatformKeyKind::PublicKey)?)
                            .await?;
                    }
                }
            }
        }
        Err(KeyError::Crypto(
            "platform keys could not be created".into(),
        ))
    }

    /// The keys served now. Hold the `Arc` for one answer: a reload swaps in a new set.
    pub fn current(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the stored keys and recomputes what is served at this moment.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), KeyError> {
        let keys = store.platform_keys().await?;
        let set = Arc::new(KeySet::build(
            &keys,
            self.policy,
            OffsetDateTime::now_utc(),
        )?);
        match self.set.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        Ok(())
    }
}

/// Adds the next generation of `kind`; returns its key id. Conflict if another node rotated
/// the same kind at the same moment (that node's key is the new generation).
pub async fn rotate(store: &dyn Store, kind: PlatformKeyKind) -> Result<String, KeyError> {
    let record = new_key(kind)?;
    store.rotate_platform_key(&record).await?;
    Ok(record.key_id)
}

/// Every node re-reads the keys periodically: rotations by another node (or the CLI) are
/// picked up, and switches/retirements happen when their time comes.
pub fn spawn_reloader(state: Arc<crate::http::AppState>) {
    let every = Duration::from_millis(state.config.platform_keys.reload_interval_ms.max(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = state.keys.reload(state.store.as_ref()).await {
                tracing::warn!(error = %e, "platform keys not reloaded");
            }
        }
    });
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

fn new_key(kind: PlatformKeyKind) -> Result<PlatformKeyRecord, KeyError> {
    match kind {
        PlatformKeyKind::Certificate => new_certificate_key(),
        PlatformKeyKind::PublicKey => new_public_key(),
    }
}

fn new_certificate_key() -> Result<PlatformKeyRecord, KeyError> {
    let now = OffsetDateTime::now_utc();
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
        // After the (slow) key generation: the grace period starts when the key is stored.
        created_at: OffsetDateTime::now_utc(),
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
        created_at: OffsetDateTime::now_utc(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(rec: PlatformKeyRecord, t: OffsetDateTime) -> PlatformKeyRecord {
        PlatformKeyRecord {
            created_at: t,
            ..rec
        }
    }

    #[test]
    fn the_rotation_policy_is_read_from_paygate_toml() {
        let c: crate::config::Config = toml::from_str(
            "[platform_keys]\ngrace_s = 60\nswitch_after_s = 600\nreload_interval_ms = 250\n",
        )
        .unwrap();
        assert_eq!(c.platform_keys.reload_interval_ms, 250);
        // The switch never comes after the old key is retired.
        let p = c.platform_keys.policy();
        assert_eq!(
            (p.grace, p.switch),
            (time::Duration::minutes(1), time::Duration::minutes(1))
        );
        assert!(toml::from_str::<crate::config::Config>("[platform_keys]\ngrace = 1").is_err());
    }

    #[test]
    fn rotation_publishes_then_switches_then_retires() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let day = time::Duration::days(1);
        let policy = Policy {
            grace: 7 * day,
            switch: day,
        };
        let c1 = at(new_certificate_key().unwrap(), t0);
        let p1 = at(new_public_key().unwrap(), t0);
        let c2 = at(new_certificate_key().unwrap(), t0 + 10 * day);
        let recs = vec![c1.clone(), p1.clone(), c2.clone()];

        let before = KeySet::build(&recs[..2], policy, t0 + 10 * day).unwrap();
        assert_eq!(before.served.len(), 2);
        assert_eq!(before.certificate_pems().len(), 1);

        // Just rotated: both served, the old one still signs what names no key.
        let s = KeySet::build(&recs, policy, t0 + 10 * day).unwrap();
        assert_eq!(s.certificate_pems().len(), 2);
        assert_eq!(s.cert_serial, c1.key_id);
        assert_eq!(s.answer_key(Some(&c2.key_id)).1, c2.key_id);
        assert_eq!(s.answer_key(None).1, c1.key_id);
        assert_eq!(
            s.served
                .iter()
                .find(|k| k.key_id == c1.key_id)
                .unwrap()
                .retires_at,
            Some(t0 + 17 * day)
        );

        // After the switch: the new one is the default, the old one still answers by name.
        let s = KeySet::build(&recs, policy, t0 + 11 * day).unwrap();
        assert_eq!(s.answer_key(None).1, c2.key_id);
        assert_eq!(s.answer_key(Some(&c1.key_id)).1, c1.key_id);
        assert!(s.knows(&c1.key_id));

        // After the grace period: retired, naming it gets the default.
        let s = KeySet::build(&recs, policy, t0 + 17 * day).unwrap();
        assert!(!s.knows(&c1.key_id));
        assert_eq!(s.retired, vec![c1.key_id.clone()]);
        assert_eq!(s.answer_key(Some(&c1.key_id)).1, c2.key_id);
        assert_eq!(s.certificate_pems().len(), 1);
        assert_eq!(s.pub_key_id, p1.key_id);
    }
}
