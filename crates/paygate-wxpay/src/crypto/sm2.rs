//! SM2 with SM3 (`WECHATPAY2-SM2-WITH-SM3`), on RustCrypto `sm2`.
//!
//! The signer user id is the GM/T 0009 default `1234567812345678`, as in wechatpay-java's
//! `shangmi` module (Tencent Kona provider). Signatures are emitted as ASN.1 DER
//! `SEQUENCE { r INTEGER, s INTEGER }`, which is what Kona's `SM2` signature produces (the Java
//! SDK's test vector `MEYCIQD35Rp3…` is DER); verification also accepts raw 64-byte `r || s`.

use std::sync::Arc;

use ::sm2::dsa::{self, signature::Signer as _, signature::Verifier as _};
use ::sm2::elliptic_curve::Generate as _;
use ::sm2::pkcs8::der::Decode as _;
use ::sm2::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use ::sm2::pkcs8::{PrivateKeyInfoRef, SubjectPublicKeyInfoRef};
use ::sm2::{PublicKey, SecretKey};

use super::CryptoError;

/// The distinguishing identifier every WeChat Pay SM2 signer uses.
pub const SM2_USER_ID: &str = "1234567812345678";

struct Inner {
    key: dsa::SigningKey,
    pkcs8_der: Vec<u8>,
}

/// An SM2 private key, parsed once.
#[derive(Clone)]
pub struct Sm2SigningKey {
    inner: Arc<Inner>,
    verifying: Sm2VerifyingKey,
}

impl std::fmt::Debug for Sm2SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Sm2SigningKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let secret = SecretKey::try_generate().map_err(|_| CryptoError::Rng)?;
        Self::from_secret(&secret)
    }

    /// PKCS#8 DER. The algorithm is `id-ecPublicKey` with the SM2 curve as parameter (or, from
    /// some tools, the SM2 curve OID itself); the caller has checked that.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let info = PrivateKeyInfoRef::from_der(der)
            .map_err(|e| CryptoError::BadKey(format!("SM2 PKCS#8: {e}")))?;
        Self::from_sec1_der(info.private_key.as_bytes())
    }

    /// SEC1 `ECPrivateKey` DER (`EC PRIVATE KEY`).
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, CryptoError> {
        let secret = SecretKey::from_sec1_der(der)
            .map_err(|e| CryptoError::BadKey(format!("SM2 private key: {e}")))?;
        Self::from_secret(&secret)
    }

    fn from_secret(secret: &SecretKey) -> Result<Self, CryptoError> {
        let key = dsa::SigningKey::new(SM2_USER_ID, secret)
            .map_err(|_| CryptoError::BadKey("invalid SM2 private key".into()))?;
        let pkcs8_der = secret
            .to_pkcs8_der()
            .map_err(|e| CryptoError::BadKey(format!("cannot encode SM2 key: {e}")))?
            .as_bytes()
            .to_vec();
        let verifying = Sm2VerifyingKey::from_public_key(secret.public_key())?;
        Ok(Self {
            inner: Arc::new(Inner { key, pkcs8_der }),
            verifying,
        })
    }

    pub fn pkcs8_der(&self) -> &[u8] {
        &self.inner.pkcs8_der
    }

    pub fn verifying_key(&self) -> &Sm2VerifyingKey {
        &self.verifying
    }

    /// DER-encoded signature (deterministic nonce, RFC 6979 style, as RustCrypto does).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let signature: dsa::Signature = self
            .inner
            .key
            .try_sign(message)
            .map_err(|_| CryptoError::SigningFailed)?;
        let der = dsa::DerSignature::from(signature);
        Ok(der.as_bytes().to_vec())
    }

    /// Raw 64-byte `r || s` signature, for peers that want that encoding.
    pub fn sign_raw(&self, message: &[u8]) -> Result<[u8; 64], CryptoError> {
        let signature: dsa::Signature = self
            .inner
            .key
            .try_sign(message)
            .map_err(|_| CryptoError::SigningFailed)?;
        let mut out = [0u8; 64];
        out.copy_from_slice(&signature.to_bytes());
        Ok(out)
    }
}

/// An SM2 public key with its user-id hash `Z` precomputed.
#[derive(Clone)]
pub struct Sm2VerifyingKey {
    key: Arc<dsa::VerifyingKey>,
    spki_der: Arc<[u8]>,
}

impl std::fmt::Debug for Sm2VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sm2VerifyingKey")
    }
}

impl Sm2VerifyingKey {
    /// From a DER SubjectPublicKeyInfo whose algorithm the caller has checked to be SM2.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        let info = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| CryptoError::BadKey(format!("SM2 public key: {e}")))?;
        let point = info.subject_public_key.as_bytes().ok_or_else(|| {
            CryptoError::BadKey("SM2 public key bit string is not whole bytes".into())
        })?;
        Self::from_sec1_bytes(point)
    }

    /// From a SEC1 point (`04 || x || y`, or compressed).
    pub fn from_sec1_bytes(point: &[u8]) -> Result<Self, CryptoError> {
        let public = PublicKey::from_sec1_bytes(point)
            .map_err(|_| CryptoError::BadKey("invalid SM2 public point".into()))?;
        Self::from_public_key(public)
    }

    fn from_public_key(public: PublicKey) -> Result<Self, CryptoError> {
        let spki_der = public
            .to_public_key_der()
            .map_err(|e| CryptoError::BadKey(format!("cannot encode SM2 public key: {e}")))?;
        let key = dsa::VerifyingKey::new(SM2_USER_ID, public)
            .map_err(|_| CryptoError::BadKey("invalid SM2 public key".into()))?;
        Ok(Self {
            key: Arc::new(key),
            spki_der: Arc::from(spki_der.as_bytes()),
        })
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Accepts DER (what WeChat Pay's Java SDK sends) or raw 64-byte `r || s`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        let candidates = [
            dsa::Signature::from_der(signature).ok(),
            if signature.len() == dsa::Signature::BYTE_SIZE {
                dsa::Signature::from_slice(signature).ok()
            } else {
                None
            },
        ];
        // A 64-byte string can parse both ways; it is valid if either reading verifies.
        let verified = candidates
            .into_iter()
            .flatten()
            .any(|sig| self.key.verify(message, &sig).is_ok());
        if verified {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_der_and_raw_form_verifies_too() {
        let key = Sm2SigningKey::generate().unwrap();
        let der = key.sign(b"message").unwrap();
        assert_eq!(der[0], 0x30, "DER SEQUENCE");
        assert!(der.len() <= 72);
        key.verifying_key().verify(b"message", &der).unwrap();

        let raw = key.sign_raw(b"message").unwrap();
        key.verifying_key().verify(b"message", &raw).unwrap();
        assert!(key.verifying_key().verify(b"massage", &raw).is_err());
        assert!(key.verifying_key().verify(b"massage", &der).is_err());
    }

    #[test]
    fn garbage_signatures_are_rejected() {
        let key = Sm2SigningKey::generate().unwrap();
        for sig in [
            &[][..],
            &[0x30, 0x00][..],
            &[0u8; 64][..],
            &[0xffu8; 64][..],
            &[1u8; 65][..],
        ] {
            assert!(key.verifying_key().verify(b"m", sig).is_err());
        }
    }

    #[test]
    fn sec1_point_round_trips() {
        let key = Sm2SigningKey::generate().unwrap();
        let spki = key.verifying_key().spki_der().to_vec();
        let again = Sm2VerifyingKey::from_spki_der(&spki).unwrap();
        assert_eq!(again.spki_der(), &spki[..]);
    }
}
