//! Envelope encryption of sensitive fields at rest (DESIGN.md rule 7): SM4-GCM under data
//! keys, the data keys wrapped by a master key ([`MasterKey`]: a local file or environment
//! variable here, a KMS behind the same trait), the data key's id written into every
//! ciphertext so old keys stay readable after a rotation, and keyed hashes (HMAC-SM3) to find
//! a value without decrypting anything. The store uses a [`Vault`] to seal on write and open
//! on read, so the rest of the code only ever sees plaintext records.
//!
//! ```
//! use std::sync::Arc;
//! use paygate_vault::{LocalMasterKey, Vault};
//! let master = Arc::new(LocalMasterKey::from_hex("00112233445566778899aabbccddeeff").unwrap());
//! let vault = Vault::new(master);
//! let now = time::OffsetDateTime::now_utc();
//! let keys = [vault.new_index_key(now).unwrap(), vault.new_data_key(now, time::Duration::ZERO).unwrap()];
//! vault.install(&keys).unwrap(); // normally: stored first, then installed on every node
//! let plain = r#"{"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
//! let sealed = vault.seal("orders.request_json", plain).unwrap();
//! // A whole openid, not a short one: two random base64 characters can spell "o1".
//! assert!(!sealed.contains("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"));
//! assert_eq!(vault.open("orders.request_json", &sealed).unwrap(), plain);
//! ```
//!
//! Sealed text: `pgv1.<data key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, the AAD being the
//! field's purpose (`orders.request_json`), so a ciphertext moved to another column fails.

pub mod chain;
mod master;
pub mod sm;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use time::OffsetDateTime;

pub use master::{LocalMasterKey, MasterKey, MasterKeySource};

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "pgv1.";
/// What every openid vault token starts with.
pub const OPENID_TOKEN_PREFIX: &str = "ov_";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A key is missing, malformed, or does not unwrap with this master key.
    #[error("key error: {0}")]
    Key(String),
    /// The sealed value names a data key this vault has not loaded (reload and retry).
    #[error("unknown data key {0}")]
    UnknownKey(String),
    /// A ciphertext that does not decrypt (edited, moved, truncated).
    #[error("crypto error: {0}")]
    Crypto(String),
}

/// What a stored key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Encrypts fields; rotated.
    Data,
    /// Keys the blind indexes (openid tokens) and the audit chain; one per database, never
    /// rotated (a new one would change every token).
    Index,
}

impl KeyPurpose {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Data => "DATA",
            Self::Index => "INDEX",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DATA" => Some(Self::Data),
            "INDEX" => Some(Self::Index),
            _ => None,
        }
    }
}

/// A key as stored beside the data: wrapped by the master key.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub key_id: String,
    pub purpose: KeyPurpose,
    pub master_key_id: String,
    /// Empty once retired (the key material is destroyed).
    pub wrapped: String,
    pub created_at: OffsetDateTime,
    /// A data key seals nothing before this instant, so every node has loaded it by then.
    pub activate_at: OffsetDateTime,
    pub retired_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("key_id", &self.key_id)
            .field("purpose", &self.purpose)
            .field("master_key_id", &self.master_key_id)
            .field("wrapped", &"***")
            .field("created_at", &self.created_at)
            .field("activate_at", &self.activate_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

struct LiveKey {
    id: String,
    cipher: sm::Sm4Gcm,
    activate_at: OffsetDateTime,
    created_at: OffsetDateTime,
}

#[derive(Default)]
struct Ring {
    /// Sorted by (activate_at, created_at, id): the last activated one seals.
    data: Vec<LiveKey>,
    by_id: HashMap<String, usize>,
    index: Option<[u8; 32]>,
}

/// The keyring of one database: its data keys (unwrapped in memory), its index key, and the
/// master key that unwraps them.
pub struct Vault {
    master: Arc<dyn MasterKey>,
    ring: RwLock<Ring>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({}, ***)", self.master.id())
    }
}

impl Vault {
    pub fn new(master: Arc<dyn MasterKey>) -> Self {
        Self {
            master,
            ring: RwLock::new(Ring::default()),
        }
    }

    pub fn master_key_id(&self) -> &str {
        self.master.id()
    }

    fn wrap_new(
        &self,
        purpose: KeyPurpose,
        now: OffsetDateTime,
        activate_at: OffsetDateTime,
    ) -> Result<WrappedKey, VaultError> {
        let raw: [u8; 32] = sm::random_bytes();
        let key_id = format!(
            "{}_{}",
            if purpose == KeyPurpose::Data {
                "dk"
            } else {
                "ix"
            },
            hex::encode(sm::random_bytes::<8>())
        );
        let material = if purpose == KeyPurpose::Data {
            &raw[..sm::SM4_KEY_LEN]
        } else {
            &raw[..]
        };
        Ok(WrappedKey {
            wrapped: self.master.wrap(material, &key_id)?,
            key_id,
            purpose,
            master_key_id: self.master.id().to_string(),
            created_at: now,
            activate_at,
            retired_at: None,
        })
    }

    /// A fresh data key to store, sealing from `now + activate_after` on.
    pub fn new_data_key(
        &self,
        now: OffsetDateTime,
        activate_after: time::Duration,
    ) -> Result<WrappedKey, VaultError> {
        self.wrap_new(KeyPurpose::Data, now, now + activate_after)
    }

    /// The database's index key (made once, when the database has none).
    pub fn new_index_key(&self, now: OffsetDateTime) -> Result<WrappedKey, VaultError> {
        self.wrap_new(KeyPurpose::Index, now, now)
    }

    /// Loads the stored keys: unknown live ones are unwrapped, retired ones forgotten.
    pub fn install(&self, keys: &[WrappedKey]) -> Result<(), VaultError> {
        let mut unwrapped = Vec::new();
        let mut index = None;
        {
            let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
            for k in keys {
                let known = ring.by_id.contains_key(&k.key_id);
                match k.purpose {
                    KeyPurpose::Index if ring.index.is_none() && index.is_none() => {
                        let raw = self.master.unwrap(&k.wrapped, &k.key_id)?;
                        index = Some(<[u8; 32]>::try_from(raw.as_slice()).map_err(|_| {
                            VaultError::Key(format!("index key {} is not 32 bytes", k.key_id))
                        })?);
                    }
                    KeyPurpose::Data if !known && k.retired_at.is_none() => {
                        let raw = self.master.unwrap(&k.wrapped, &k.key_id)?;
                        unwrapped.push(LiveKey {
                            id: k.key_id.clone(),
                            cipher: sm::sm4_gcm(&raw)?,
                            activate_at: k.activate_at,
                            created_at: k.created_at,
                        });
                    }
                    _ => {}
                }
            }
        }
        let retired: Vec<&str> = keys
            .iter()
            .filter(|k| k.retired_at.is_some())
            .map(|k| k.key_id.as_str())
            .collect();
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        if index.is_some() && ring.index.is_none() {
            ring.index = index;
        }
        ring.data.retain(|k| !retired.contains(&k.id.as_str()));
        for k in unwrapped {
            if !ring.data.iter().any(|d| d.id == k.id) {
                ring.data.push(k);
            }
        }
        ring.data.sort_by(|a, b| {
            (a.activate_at, a.created_at, &a.id).cmp(&(b.activate_at, b.created_at, &b.id))
        });
        let by_id = ring
            .data
            .iter()
            .enumerate()
            .map(|(i, k)| (k.id.clone(), i))
            .collect();
        ring.by_id = by_id;
        Ok(())
    }

    /// The data key that seals at `now`: the last one activated.
    pub fn active_key_id(&self, now: OffsetDateTime) -> Option<String> {
        self.active_key(now).map(|(id, _)| id)
    }

    /// The data key that seals at `now`, with the time it started sealing.
    pub fn active_key(&self, now: OffsetDateTime) -> Option<(String, OffsetDateTime)> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        ring.data
            .iter()
            .rev()
            .find(|k| k.activate_at <= now)
            .map(|k| (k.id.clone(), k.activate_at))
    }

    /// Whether the ring has what sealing needs (an index key and an active data key).
    pub fn is_ready(&self) -> bool {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        ring.index.is_some() && !ring.data.is_empty()
    }

    /// Encrypts `plaintext` for the field `purpose` under the active data key.
    pub fn seal(&self, purpose: &str, plaintext: &str) -> Result<String, VaultError> {
        let now = OffsetDateTime::now_utc();
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        // Before its first activation instant the oldest key seals (a fresh database).
        let key = ring
            .data
            .iter()
            .rev()
            .find(|k| k.activate_at <= now)
            .or_else(|| ring.data.first())
            .ok_or_else(|| VaultError::Key("no data key loaded".into()))?;
        let sealed = sm::seal(&key.cipher, purpose.as_bytes(), plaintext.as_bytes())?;
        Ok(format!(
            "{SEALED_PREFIX}{}.{}",
            key.id,
            B64URL.encode(sealed)
        ))
    }

    /// Decrypts a sealed value; a value that is not sealed (written before encryption was
    /// on, awaiting re-encryption) comes back as it is.
    pub fn open(&self, purpose: &str, value: &str) -> Result<String, VaultError> {
        let Some((key_id, body)) = split_sealed(value) else {
            return Ok(value.to_string());
        };
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let key = ring
            .by_id
            .get(key_id)
            .and_then(|&i| ring.data.get(i))
            .ok_or_else(|| VaultError::UnknownKey(key_id.to_string()))?;
        let raw = B64URL
            .decode(body)
            .map_err(|_| VaultError::Crypto(format!("{purpose}: sealed value is not base64url")))?;
        let plain = sm::open(&key.cipher, purpose.as_bytes(), &raw)?;
        String::from_utf8(plain).map_err(|_| VaultError::Crypto(format!("{purpose}: not UTF-8")))
    }

    /// Keyed hash of `value` in the namespace `kind`, hex: equal values give equal hashes,
    /// and nobody without the index key can test a guess.
    pub fn blind_index(&self, kind: &str, value: &str) -> Result<String, VaultError> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let key = ring
            .index
            .ok_or_else(|| VaultError::Key("no index key loaded".into()))?;
        Ok(hex::encode(sm::hmac_sm3(
            &key,
            &[kind.as_bytes(), value.as_bytes()],
        )))
    }

    /// The openid vault's token for `openid`: the same openid always gets the same token.
    pub fn openid_token(&self, openid: &str) -> Result<String, VaultError> {
        let h = self.blind_index("openid", openid)?;
        Ok(format!("{OPENID_TOKEN_PREFIX}{}", &h[..40]))
    }

    /// The key that chains the audit trail (derived from the index key, so a database
    /// editor without the master key cannot recompute the chain).
    pub fn audit_key(&self) -> Result<[u8; 32], VaultError> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let key = ring
            .index
            .ok_or_else(|| VaultError::Key("no index key loaded".into()))?;
        Ok(sm::hmac_sm3(&key, &[b"paygate audit chain v1"]))
    }
}

/// `(key id, base64 body)` of a sealed value; `None` if `value` is not sealed.
pub fn split_sealed(value: &str) -> Option<(&str, &str)> {
    value.strip_prefix(SEALED_PREFIX)?.split_once('.')
}

/// The data key id a sealed value names.
pub fn sealed_key_id(value: &str) -> Option<&str> {
    split_sealed(value).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(hex_key: &str) -> Vault {
        Vault::new(Arc::new(LocalMasterKey::from_hex(hex_key).unwrap()))
    }

    #[test]
    fn seals_with_the_newest_key_and_reads_the_old_ones_until_retired() {
        let v = vault("00112233445566778899aabbccddeeff");
        let t0 = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let mut stored = vec![
            v.new_index_key(t0).unwrap(),
            v.new_data_key(t0, time::Duration::ZERO).unwrap(),
        ];
        v.install(&stored).unwrap();
        let old = v
            .seal("orders.request_json", "4000 0012 3456 7899")
            .unwrap();
        assert!(old.starts_with(&format!("pgv1.{}.", stored[1].key_id)));
        // Rotation: a key activating in the future seals nothing yet.
        let later = v
            .new_data_key(OffsetDateTime::now_utc(), time::Duration::hours(1))
            .unwrap();
        stored.push(later.clone());
        v.install(&stored).unwrap();
        assert_eq!(
            sealed_key_id(&v.seal("f", "x").unwrap()),
            Some(stored[1].key_id.as_str())
        );
        let now_key = v
            .new_data_key(OffsetDateTime::now_utc(), time::Duration::ZERO)
            .unwrap();
        stored[2] = now_key.clone();
        v.install(&stored).unwrap();
        assert_eq!(
            sealed_key_id(&v.seal("f", "x").unwrap()),
            Some(now_key.key_id.as_str())
        );
        assert_eq!(
            v.open("orders.request_json", &old).unwrap(),
            "4000 0012 3456 7899"
        );
        // A second node with the same master key reads everything.
        let w = vault("00112233445566778899aabbccddeeff");
        w.install(&stored).unwrap();
        assert_eq!(
            w.open("orders.request_json", &old).unwrap(),
            "4000 0012 3456 7899"
        );
        assert_eq!(w.openid_token("o1").unwrap(), v.openid_token("o1").unwrap());
        // Retired: forgotten.
        stored[1].retired_at = Some(OffsetDateTime::now_utc());
        stored[1].wrapped.clear();
        w.install(&stored).unwrap();
        assert!(matches!(
            w.open("orders.request_json", &old),
            Err(VaultError::UnknownKey(_))
        ));
    }

    #[test]
    fn plaintext_passes_through_and_other_master_keys_fail_loudly() {
        let v = vault("00112233445566778899aabbccddeeff");
        let now = OffsetDateTime::now_utc();
        let stored = [
            v.new_index_key(now).unwrap(),
            v.new_data_key(now, time::Duration::ZERO).unwrap(),
        ];
        v.install(&stored).unwrap();
        assert_eq!(v.open("x", "{\"legacy\":1}").unwrap(), "{\"legacy\":1}");
        let other = vault("ffeeddccbbaa99887766554433221100");
        assert!(matches!(other.install(&stored), Err(VaultError::Key(_))));
        let token = v.openid_token("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").unwrap();
        assert!(token.starts_with(OPENID_TOKEN_PREFIX) && token.len() == 43);
        assert_ne!(
            token,
            v.openid_token("oUpF8uMuAJO_M2pxb1Q9zNjWeS6p").unwrap()
        );
        let sealed = v.seal("a", "secret").unwrap();
        assert!(matches!(v.open("b", &sealed), Err(VaultError::Crypto(_))));
    }
}
