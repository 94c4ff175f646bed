//! RSA-2048 with RSASSA-PKCS1-v1_5 / SHA-256 (`WECHATPAY2-SHA256-RSA2048`), on aws-lc-rs.
//!
//! Signing is the gateway's most expensive step, so the key pair and the public key are parsed
//! once and shared behind an `Arc`; every call only signs or verifies.

use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey};

use super::CryptoError;

struct Inner {
    pair: KeyPair,
    pkcs8_der: Vec<u8>,
    verifying: RsaVerifyingKey,
}

/// An RSA private key, parsed once.
#[derive(Clone)]
pub struct RsaSigningKey {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl RsaSigningKey {
    /// A fresh RSA-2048 key.
    pub fn generate() -> Result<Self, CryptoError> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| CryptoError::BadKey("RSA key generation failed".into()))?;
        Self::from_pair(pair)
    }

    /// PKCS#8 DER (`PRIVATE KEY`).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let pair = KeyPair::from_pkcs8(der)
            .map_err(|e| CryptoError::BadKey(format!("RSA PKCS#8: {e}")))?;
        Self::from_pair(pair)
    }

    /// PKCS#1 DER (`RSA PRIVATE KEY`), as in the official docs' 调起支付 pages.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, CryptoError> {
        let pair =
            KeyPair::from_der(der).map_err(|e| CryptoError::BadKey(format!("RSA PKCS#1: {e}")))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> Result<Self, CryptoError> {
        let pkcs8: Pkcs8V1Der<'static> = pair
            .as_der()
            .map_err(|_| CryptoError::BadKey("cannot encode RSA key as PKCS#8".into()))?;
        let spki: PublicKeyX509Der<'static> = pair
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::BadKey("cannot encode RSA public key".into()))?;
        let verifying = RsaVerifyingKey::from_der(spki.as_ref())?;
        Ok(Self {
            inner: Arc::new(Inner {
                pkcs8_der: pkcs8.as_ref().to_vec(),
                pair,
                verifying,
            }),
        })
    }

    pub fn pkcs8_der(&self) -> &[u8] {
        &self.inner.pkcs8_der
    }

    pub fn verifying_key(&self) -> &RsaVerifyingKey {
        &self.inner.verifying
    }

    /// The public key as a PKCS#1 `RSAPublicKey` DER (what X.509 puts in the SPKI bit string).
    pub fn public_key_pkcs1_der(&self) -> &[u8] {
        self.inner.pair.public_key().as_ref()
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.inner.pair.public_modulus_len() * 8
    }

    /// RSASSA-PKCS1-v1_5 SHA-256; deterministic.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut signature = vec![0u8; self.inner.pair.public_modulus_len()];
        // aws-lc-rs ignores the rng for PKCS#1 v1.5; it is required by the signature only.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.inner
            .pair
            .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .map_err(|_| CryptoError::SigningFailed)?;
        Ok(signature)
    }
}

/// An RSA public key, pre-parsed for verification.
#[derive(Clone)]
pub struct RsaVerifyingKey {
    parsed: ParsedPublicKey,
    spki_der: Arc<[u8]>,
}

impl std::fmt::Debug for RsaVerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaVerifyingKey")
    }
}

impl RsaVerifyingKey {
    /// From a DER SubjectPublicKeyInfo or a PKCS#1 `RSAPublicKey`; 2048 to 8192 bits.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let parsed = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| CryptoError::BadKey(format!("RSA public key: {e}")))?;
        // Normalise to SPKI so that equal keys compare equal whatever form they came in.
        let spki: PublicKeyX509Der<'static> = parsed
            .as_der()
            .map_err(|_| CryptoError::BadKey("cannot encode RSA public key".into()))?;
        Ok(Self {
            spki_der: Arc::from(spki.as_ref()),
            parsed,
        })
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.parsed
            .verify_sig(message, signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_2048_bits_and_signs_deterministically() {
        let key = RsaSigningKey::generate().unwrap();
        assert_eq!(key.bits(), 2048);
        let a = key.sign(b"abc").unwrap();
        let b = key.sign(b"abc").unwrap();
        assert_eq!(a.len(), 256);
        assert_eq!(a, b);
        key.verifying_key().verify(b"abc", &a).unwrap();
    }

    #[test]
    fn pkcs1_and_spki_public_keys_are_the_same_key() {
        let key = RsaSigningKey::generate().unwrap();
        let from_pkcs1 = RsaVerifyingKey::from_der(key.public_key_pkcs1_der()).unwrap();
        assert_eq!(from_pkcs1.spki_der(), key.verifying_key().spki_der());
    }

    #[test]
    fn truncated_signature_is_rejected() {
        let key = RsaSigningKey::generate().unwrap();
        let sig = key.sign(b"abc").unwrap();
        assert!(key.verifying_key().verify(b"abc", &sig[..255]).is_err());
    }
}
