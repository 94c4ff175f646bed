//! Cryptography of WeChat Pay API v3: signing keys (RSA-2048 / SM2), verifying keys, AEAD
//! (AES-GCM / SM4-GCM), hashes and X.509 certificates.
//!
//! Keys are parsed once and kept pre-parsed (`aws-lc-rs` `RsaKeyPair` / `ParsedPublicKey`, RustCrypto
//! SM2 keys), so signing and verifying never re-parse DER on the hot path.
//!
//! ```
//! use paygate_wxpay::crypto::{SignatureScheme, SigningKey};
//! let key = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
//! let signature = key.sign_base64(b"message").unwrap();
//! key.verifying_key().verify_base64(b"message", &signature).unwrap();
//! ```

pub mod aead;
pub mod cert;
pub mod cost;
pub mod hash;
pub mod oaep;
pub mod rsa;
pub mod sm2;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The two signature schemes of the protocol, named as in the `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (the scheme every SDK uses).
    Rsa2048Sha256,
    /// SM2 with SM3 and the default user id `1234567812345678` (ShangMi).
    Sm2WithSm3,
}

impl SignatureScheme {
    /// The wire name, as in `Authorization` and `Wechatpay-Signature-Type`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Rsa2048Sha256 => "WECHATPAY2-SHA256-RSA2048",
            Self::Sm2WithSm3 => "WECHATPAY2-SM2-WITH-SM3",
        }
    }

    /// Parses a wire name (exact, case-sensitive as the SDKs send it).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "WECHATPAY2-SHA256-RSA2048" => Some(Self::Rsa2048Sha256),
            "WECHATPAY2-SM2-WITH-SM3" => Some(Self::Sm2WithSm3),
            _ => None,
        }
    }
}

impl std::fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in this module. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("unsupported key algorithm: {0}")]
    UnsupportedAlgorithm(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("signing failed")]
    SigningFailed,
    #[error("invalid base64")]
    BadBase64,
    #[error("decryption failed (wrong key, nonce, associated data or corrupted ciphertext)")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("nonce must be exactly 12 bytes, got {0}")]
    BadNonce(usize),
    #[error(
        "AEAD key length {0} not supported (AES-GCM needs 16 or 32 bytes, SM4-GCM a non-empty key)"
    )]
    BadKeyLength(usize),
    #[error("unknown AEAD algorithm {0:?}")]
    UnknownAeadAlgorithm(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("random number generator failed")]
    Rng,
}

/// A private key that signs protocol messages. Cheap to clone (the parsed key is shared).
#[derive(Clone)]
pub enum SigningKey {
    Rsa(rsa::RsaSigningKey),
    Sm2(sm2::Sm2SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl SigningKey {
    /// A fresh key: RSA-2048 (aws-lc-rs) or SM2.
    pub fn generate(scheme: SignatureScheme) -> Result<Self, CryptoError> {
        match scheme {
            SignatureScheme::Rsa2048Sha256 => Ok(Self::Rsa(rsa::RsaSigningKey::generate()?)),
            SignatureScheme::Sm2WithSm3 => Ok(Self::Sm2(sm2::Sm2SigningKey::generate()?)),
        }
    }

    /// Loads a private key from PEM. Accepts PKCS#8 `PRIVATE KEY` (RSA or SM2, told apart by the
    /// algorithm OID), the Go SDK's `TESTING KEY` label (PKCS#8 as well), PKCS#1
    /// `RSA PRIVATE KEY` and SEC1 `EC PRIVATE KEY` on the SM2 curve. Text around the block and
    /// other blocks (e.g. `EC PARAMETERS`) are ignored.
    pub fn from_pkcs8_pem(pem_text: &str) -> Result<Self, CryptoError> {
        let blocks = pem::parse_many(pem_text).map_err(|e| CryptoError::Pem(e.to_string()))?;
        for block in &blocks {
            match block.tag() {
                "PRIVATE KEY" | "TESTING KEY" => return Self::from_pkcs8_der(block.contents()),
                "RSA PRIVATE KEY" => {
                    return Ok(Self::Rsa(rsa::RsaSigningKey::from_pkcs1_der(
                        block.contents(),
                    )?));
                }
                "EC PRIVATE KEY" => {
                    return Ok(Self::Sm2(sm2::Sm2SigningKey::from_sec1_der(
                        block.contents(),
                    )?));
                }
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(CryptoError::BadKey(
                        "encrypted PKCS#8 keys are not supported; decrypt the key first".into(),
                    ));
                }
                _ => {}
            }
        }
        Err(CryptoError::Pem("no private key block found".into()))
    }

    /// Loads a PKCS#8 DER private key, RSA or SM2 by its algorithm OID.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        match oid::private_key_kind(der)? {
            oid::KeyKind::Rsa => Ok(Self::Rsa(rsa::RsaSigningKey::from_pkcs8_der(der)?)),
            oid::KeyKind::Sm2 => Ok(Self::Sm2(sm2::Sm2SigningKey::from_pkcs8_der(der)?)),
        }
    }

    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`, LF line endings).
    pub fn to_pkcs8_pem(&self) -> String {
        let der = match self {
            Self::Rsa(k) => k.pkcs8_der(),
            Self::Sm2(k) => k.pkcs8_der(),
        };
        pem_encode("PRIVATE KEY", der)
    }

    pub fn scheme(&self) -> SignatureScheme {
        match self {
            Self::Rsa(_) => SignatureScheme::Rsa2048Sha256,
            Self::Sm2(_) => SignatureScheme::Sm2WithSm3,
        }
    }

    /// Raw signature bytes: PKCS#1 v1.5 for RSA, ASN.1 DER `SEQUENCE { r, s }` for SM2 (as the
    /// Java SDK's Kona provider emits).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        cost::signing(|| match self {
            Self::Rsa(k) => k.sign(message),
            Self::Sm2(k) => k.sign(message),
        })
    }

    /// Standard base64 (with padding) of [`SigningKey::sign`].
    pub fn sign_base64(&self, message: &[u8]) -> Result<String, CryptoError> {
        Ok(BASE64.encode(self.sign(message)?))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            Self::Rsa(k) => VerifyingKey::Rsa(k.verifying_key().clone()),
            Self::Sm2(k) => VerifyingKey::Sm2(k.verifying_key().clone()),
        }
    }
}

/// A public key that verifies protocol signatures. Cheap to clone.
#[derive(Clone)]
pub enum VerifyingKey {
    Rsa(rsa::RsaVerifyingKey),
    Sm2(sm2::Sm2VerifyingKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A short fingerprint tells keys apart in logs without dumping the whole key.
        let fingerprint = hash::sha256(self.spki_der());
        write!(
            f,
            "VerifyingKey({}, sha256:{})",
            self.scheme(),
            hex::encode(&fingerprint[..8])
        )
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der() == other.spki_der()
    }
}

impl Eq for VerifyingKey {}

impl VerifyingKey {
    /// Loads a `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo) PEM, RSA or SM2 by its algorithm OID.
    /// A `BEGIN CERTIFICATE` PEM is accepted too, for convenience.
    pub fn from_spki_pem(pem_text: &str) -> Result<Self, CryptoError> {
        let blocks = pem::parse_many(pem_text).map_err(|e| CryptoError::Pem(e.to_string()))?;
        for block in &blocks {
            match block.tag() {
                "PUBLIC KEY" => return Self::from_spki_der(block.contents()),
                "RSA PUBLIC KEY" => {
                    return Ok(Self::Rsa(rsa::RsaVerifyingKey::from_der(block.contents())?));
                }
                "CERTIFICATE" => return Self::from_certificate_pem(pem_text),
                _ => {}
            }
        }
        Err(CryptoError::Pem("no public key block found".into()))
    }

    /// Loads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        match oid::public_key_kind(der)? {
            oid::KeyKind::Rsa => Ok(Self::Rsa(rsa::RsaVerifyingKey::from_der(der)?)),
            oid::KeyKind::Sm2 => Ok(Self::Sm2(sm2::Sm2VerifyingKey::from_spki_der(der)?)),
        }
    }

    /// The public key of the first certificate in `pem_text`.
    pub fn from_certificate_pem(pem_text: &str) -> Result<Self, CryptoError> {
        Ok(cert::parse_certificate_pem(pem_text)?.public_key)
    }

    /// `BEGIN PUBLIC KEY` PEM (LF line endings).
    pub fn to_spki_pem(&self) -> String {
        pem_encode("PUBLIC KEY", self.spki_der())
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        match self {
            Self::Rsa(k) => k.spki_der(),
            Self::Sm2(k) => k.spki_der(),
        }
    }

    pub fn scheme(&self) -> SignatureScheme {
        match self {
            Self::Rsa(_) => SignatureScheme::Rsa2048Sha256,
            Self::Sm2(_) => SignatureScheme::Sm2WithSm3,
        }
    }

    /// Verifies raw signature bytes. SM2 accepts both DER and raw 64-byte `r || s`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        cost::verifying(|| match self {
            Self::Rsa(k) => k.verify(message, signature),
            Self::Sm2(k) => k.verify(message, signature),
        })
    }

    /// Verifies a standard-base64 signature.
    pub fn verify_base64(&self, message: &[u8], signature_b64: &str) -> Result<(), CryptoError> {
        let signature = BASE64
            .decode(signature_b64.as_bytes())
            .map_err(|_| CryptoError::BadBase64)?;
        self.verify(message, &signature)
    }
}

/// PEM with 64-column lines and LF endings (the `pem` crate defaults to CRLF).
pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    let block = pem::Pem::new(tag, der.to_vec());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Key-type detection by algorithm OID.
mod oid {
    use super::CryptoError;
    use ::sm2::pkcs8::der::Decode as _;
    use ::sm2::pkcs8::der::asn1::ObjectIdentifier;
    use ::sm2::pkcs8::{PrivateKeyInfoRef, spki::SubjectPublicKeyInfoRef};

    pub const RSA_ENCRYPTION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// The SM2 curve; some tools also use it as the algorithm OID itself.
    pub const SM2_CURVE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum KeyKind {
        Rsa,
        Sm2,
    }

    fn classify(
        algorithm: ObjectIdentifier,
        parameters: Option<ObjectIdentifier>,
    ) -> Result<KeyKind, CryptoError> {
        if algorithm == RSA_ENCRYPTION {
            Ok(KeyKind::Rsa)
        } else if algorithm == SM2_CURVE
            || (algorithm == EC_PUBLIC_KEY && parameters == Some(SM2_CURVE))
        {
            Ok(KeyKind::Sm2)
        } else {
            let curve = parameters
                .map(|p| format!(" (curve {p})"))
                .unwrap_or_default();
            Err(CryptoError::UnsupportedAlgorithm(format!(
                "{algorithm}{curve}"
            )))
        }
    }

    pub fn private_key_kind(der: &[u8]) -> Result<KeyKind, CryptoError> {
        let info = PrivateKeyInfoRef::from_der(der)
            .map_err(|e| CryptoError::BadKey(format!("not a PKCS#8 private key: {e}")))?;
        classify(info.algorithm.oid, info.algorithm.parameters_oid().ok())
    }

    pub fn public_key_kind(der: &[u8]) -> Result<KeyKind, CryptoError> {
        let info = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| CryptoError::BadKey(format!("not a SubjectPublicKeyInfo: {e}")))?;
        classify(info.algorithm.oid, info.algorithm.parameters_oid().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_names_round_trip() {
        for scheme in [SignatureScheme::Rsa2048Sha256, SignatureScheme::Sm2WithSm3] {
            assert_eq!(SignatureScheme::parse(scheme.as_str()), Some(scheme));
        }
        assert_eq!(SignatureScheme::parse("WECHATPAY2-SHA256-RSA"), None);
        assert_eq!(SignatureScheme::parse("wechatpay2-sha256-rsa2048"), None);
    }

    #[test]
    fn signing_key_debug_hides_the_key() {
        let key = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        assert_eq!(format!("{key:?}"), "***");
    }

    #[test]
    fn generated_keys_round_trip_through_pem_and_sign() {
        for scheme in [SignatureScheme::Rsa2048Sha256, SignatureScheme::Sm2WithSm3] {
            let key = SigningKey::generate(scheme).unwrap();
            assert_eq!(key.scheme(), scheme);
            let pem_text = key.to_pkcs8_pem();
            assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert!(!pem_text.contains('\r'));
            let reloaded = SigningKey::from_pkcs8_pem(&pem_text).unwrap();
            assert_eq!(reloaded.scheme(), scheme);
            assert_eq!(reloaded.to_pkcs8_pem(), pem_text);

            let verifying = key.verifying_key();
            assert_eq!(verifying, reloaded.verifying_key());
            let spki_pem = verifying.to_spki_pem();
            let from_spki = VerifyingKey::from_spki_pem(&spki_pem).unwrap();
            assert_eq!(from_spki, verifying);
            assert_eq!(from_spki.scheme(), scheme);

            let sig = reloaded.sign_base64(b"hello").unwrap();
            from_spki.verify_base64(b"hello", &sig).unwrap();
            assert!(matches!(
                from_spki.verify_base64(b"hellO", &sig),
                Err(CryptoError::BadSignature)
            ));
        }
    }

    #[test]
    fn a_key_of_one_scheme_rejects_a_signature_of_the_other() {
        let rsa = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let sm2 = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        let rsa_sig = rsa.sign_base64(b"m").unwrap();
        let sm2_sig = sm2.sign_base64(b"m").unwrap();
        assert!(sm2.verifying_key().verify_base64(b"m", &rsa_sig).is_err());
        assert!(rsa.verifying_key().verify_base64(b"m", &sm2_sig).is_err());
    }

    #[test]
    fn garbage_input_is_an_error_not_a_panic() {
        assert!(SigningKey::from_pkcs8_pem("").is_err());
        assert!(SigningKey::from_pkcs8_pem("not a pem").is_err());
        let junk = pem_encode("PRIVATE KEY", b"\x30\x03\x02\x01\x00");
        assert!(matches!(
            SigningKey::from_pkcs8_pem(&junk),
            Err(CryptoError::BadKey(_))
        ));
        assert!(VerifyingKey::from_spki_pem(&pem_encode("PUBLIC KEY", b"junk")).is_err());
        let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        assert!(matches!(
            key.verifying_key().verify_base64(b"m", "!!!"),
            Err(CryptoError::BadBase64)
        ));
        assert!(key.verifying_key().verify_base64(b"m", "").is_err());
    }

    #[test]
    fn encrypted_pkcs8_is_rejected_with_a_clear_error() {
        let block = pem_encode("ENCRYPTED PRIVATE KEY", b"\x30\x00");
        let err = SigningKey::from_pkcs8_pem(&block).unwrap_err();
        assert!(err.to_string().contains("encrypted"));
    }
}
