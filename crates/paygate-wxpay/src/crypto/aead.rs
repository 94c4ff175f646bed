//! AEAD of callbacks, `/v3/certificates` and sealed fields: `AEAD_AES_256_GCM` and `AEAD_SM4_GCM`.
//!
//! Wire form: `base64(ciphertext || tag16)`, a 12-byte nonce sent as an ASCII string, the
//! associated data as bytes. AES uses the APIv3 key's bytes directly (16 bytes → AES-128, as in
//! the Go SDK's test vectors; 32 bytes → AES-256). SM4 uses the first 16 bytes of SM3(APIv3 key),
//! as wechatpay-java's `AeadSM4Cipher` does.
//!
//! For hot paths build an [`AeadKey`] once (key schedule done once); the free functions are
//! conveniences that build one per call.

use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut as _, KeyInit as _};
use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng as _;

use super::{CryptoError, hash};

/// The GCM nonce length every SDK uses; Go's `cipher.NewGCM(...).Open` panics on any other.
pub const NONCE_LEN: usize = 12;
/// The GCM tag length appended to the ciphertext.
pub const TAG_LEN: usize = 16;

type Sm4Gcm = aes_gcm::AesGcm<sm4::Sm4, U12>;

/// The `algorithm` values of an encrypted resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AeadAlgorithm {
    Aes256Gcm,
    Sm4Gcm,
}

impl AeadAlgorithm {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Aes256Gcm => "AEAD_AES_256_GCM",
            Self::Sm4Gcm => "AEAD_SM4_GCM",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AEAD_AES_256_GCM" => Some(Self::Aes256Gcm),
            "AEAD_SM4_GCM" => Some(Self::Sm4Gcm),
            _ => None,
        }
    }
}

impl std::fmt::Display for AeadAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// 12 random ASCII alphanumerics, the nonce form WeChat Pay sends.
pub fn new_nonce() -> String {
    random_alphanumeric(NONCE_LEN)
}

pub(crate) fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Encrypts and returns `base64(ciphertext || tag)`.
pub fn encrypt(
    alg: AeadAlgorithm,
    apiv3_key: &[u8],
    nonce: &str,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<String, CryptoError> {
    AeadKey::new(alg, apiv3_key)?.encrypt(nonce, aad, plaintext)
}

/// Decrypts `base64(ciphertext || tag)`.
pub fn decrypt(
    alg: AeadAlgorithm,
    apiv3_key: &[u8],
    nonce: &str,
    aad: &[u8],
    ciphertext_b64: &str,
) -> Result<Vec<u8>, CryptoError> {
    AeadKey::new(alg, apiv3_key)?.decrypt(nonce, aad, ciphertext_b64)
}

enum Cipher {
    Aes(LessSafeKey),
    Sm4(Box<Sm4Gcm>),
}

/// An AEAD key with its schedule computed once.
pub struct AeadKey {
    alg: AeadAlgorithm,
    cipher: Cipher,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AeadKey({}, ***)", self.alg)
    }
}

impl AeadKey {
    /// `apiv3_key`: 16 or 32 bytes for AES-GCM; any non-empty key for SM4-GCM (derived by SM3).
    pub fn new(alg: AeadAlgorithm, apiv3_key: &[u8]) -> Result<Self, CryptoError> {
        let cipher = match alg {
            AeadAlgorithm::Aes256Gcm => {
                let algorithm = match apiv3_key.len() {
                    16 => &AES_128_GCM,
                    32 => &AES_256_GCM,
                    n => return Err(CryptoError::BadKeyLength(n)),
                };
                let key = UnboundKey::new(algorithm, apiv3_key)
                    .map_err(|_| CryptoError::BadKeyLength(apiv3_key.len()))?;
                Cipher::Aes(LessSafeKey::new(key))
            }
            AeadAlgorithm::Sm4Gcm => {
                if apiv3_key.is_empty() {
                    return Err(CryptoError::BadKeyLength(0));
                }
                let digest = hash::sm3(apiv3_key);
                let cipher = Sm4Gcm::new_from_slice(&digest[..16])
                    .map_err(|_| CryptoError::BadKeyLength(apiv3_key.len()))?;
                Cipher::Sm4(Box::new(cipher))
            }
        };
        Ok(Self { alg, cipher })
    }

    pub fn algorithm(&self) -> AeadAlgorithm {
        self.alg
    }

    /// Encrypts and returns raw `ciphertext || tag`.
    pub fn encrypt_raw(
        &self,
        nonce: &str,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = nonce_bytes(nonce)?;
        let mut buffer = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buffer.extend_from_slice(plaintext);
        match &self.cipher {
            Cipher::Aes(key) => key
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut buffer,
                )
                .map_err(|_| CryptoError::Encrypt)?,
            Cipher::Sm4(cipher) => {
                let tag = cipher
                    .encrypt_inout_detached(&nonce.into(), aad, buffer.as_mut_slice().into())
                    .map_err(|_| CryptoError::Encrypt)?;
                buffer.extend_from_slice(&tag);
            }
        }
        Ok(buffer)
    }

    /// Decrypts raw `ciphertext || tag`.
    pub fn decrypt_raw(
        &self,
        nonce: &str,
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = nonce_bytes(nonce)?;
        let body_len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(CryptoError::Decrypt)?;
        match &self.cipher {
            Cipher::Aes(key) => {
                let mut buffer = ciphertext.to_vec();
                key.open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut buffer,
                )
                .map_err(|_| CryptoError::Decrypt)?;
                buffer.truncate(body_len);
                Ok(buffer)
            }
            Cipher::Sm4(cipher) => {
                let (body, tag) = ciphertext.split_at(body_len);
                let tag = aes_gcm::Tag::try_from(tag).map_err(|_| CryptoError::Decrypt)?;
                let mut buffer = body.to_vec();
                cipher
                    .decrypt_inout_detached(&nonce.into(), aad, buffer.as_mut_slice().into(), &tag)
                    .map_err(|_| CryptoError::Decrypt)?;
                Ok(buffer)
            }
        }
    }

    /// Encrypts and returns `base64(ciphertext || tag)`.
    pub fn encrypt(
        &self,
        nonce: &str,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        Ok(BASE64.encode(self.encrypt_raw(nonce, aad, plaintext)?))
    }

    /// Decrypts `base64(ciphertext || tag)`.
    pub fn decrypt(
        &self,
        nonce: &str,
        aad: &[u8],
        ciphertext_b64: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let raw = BASE64
            .decode(ciphertext_b64.as_bytes())
            .map_err(|_| CryptoError::BadBase64)?;
        self.decrypt_raw(nonce, aad, &raw)
    }
}

fn nonce_bytes(nonce: &str) -> Result<[u8; NONCE_LEN], CryptoError> {
    nonce
        .as_bytes()
        .try_into()
        .map_err(|_| CryptoError::BadNonce(nonce.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_twelve_alphanumerics() {
        let n = new_nonce();
        assert_eq!(n.len(), 12);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(n, new_nonce());
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Sm4Gcm] {
            assert_eq!(AeadAlgorithm::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(AeadAlgorithm::parse("AEAD_AES_128_GCM"), None);
    }

    #[test]
    fn aes_rejects_other_key_lengths() {
        for len in [0, 15, 24, 31, 33] {
            let key = vec![7u8; len];
            assert!(matches!(
                AeadKey::new(AeadAlgorithm::Aes256Gcm, &key),
                Err(CryptoError::BadKeyLength(n)) if n == len
            ));
        }
        assert!(AeadKey::new(AeadAlgorithm::Sm4Gcm, b"").is_err());
    }

    #[test]
    fn empty_plaintext_and_short_ciphertext() {
        for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Sm4Gcm] {
            let key = AeadKey::new(alg, &[1u8; 32]).unwrap();
            let ct = key.encrypt_raw("abcdefghijkl", b"", b"").unwrap();
            assert_eq!(ct.len(), TAG_LEN);
            assert_eq!(key.decrypt_raw("abcdefghijkl", b"", &ct).unwrap(), b"");
            assert!(matches!(
                key.decrypt_raw("abcdefghijkl", b"", &ct[..15]),
                Err(CryptoError::Decrypt)
            ));
        }
    }
}
