//! Sensitive request fields (a receiver's `name`, a bank account): RSA-OAEP with SHA-1 and
//! MGF1-SHA-1 under the platform's public key, base64 (the SDKs' `RSA/ECB/OAEPWithSHA-1AndMGF1Padding`),
//! sent with a `Wechatpay-Serial` header naming that key. The gateway is the platform to its
//! merchants, so it decrypts with its own platform key and encrypts again for its channel.

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{CryptoError, SigningKey, VerifyingKey};

/// Longest plaintext accepted (a name or an account, far below what RSA-2048 OAEP carries).
pub const PLAINTEXT_BYTES_MAX: usize = 214;

/// Encrypts `plaintext` for the holder of `key` (an RSA platform public key).
pub fn encrypt(key: &VerifyingKey, plaintext: &str) -> Result<String, CryptoError> {
    let VerifyingKey::Rsa(_) = key else {
        return Err(CryptoError::UnsupportedAlgorithm(
            "sensitive fields are RSA-OAEP encrypted; SM2 encryption is not supported".into(),
        ));
    };
    if plaintext.len() > PLAINTEXT_BYTES_MAX {
        return Err(CryptoError::Encrypt);
    }
    let public = PublicEncryptingKey::from_der(key.spki_der())
        .map_err(|e| CryptoError::BadKey(format!("RSA public key: {e}")))?;
    let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| CryptoError::Encrypt)?;
    let mut out = vec![0u8; oaep.ciphertext_size()];
    let written = oaep
        .encrypt(&OAEP_SHA1_MGF1SHA1, plaintext.as_bytes(), &mut out, None)
        .map_err(|_| CryptoError::Encrypt)?;
    Ok(BASE64.encode(written))
}

/// Decrypts a base64 RSA-OAEP ciphertext made for `key`'s public half.
pub fn decrypt(key: &SigningKey, ciphertext_b64: &str) -> Result<String, CryptoError> {
    let SigningKey::Rsa(rsa) = key else {
        return Err(CryptoError::UnsupportedAlgorithm(
            "sensitive fields are RSA-OAEP encrypted; SM2 decryption is not supported".into(),
        ));
    };
    let ciphertext = BASE64
        .decode(ciphertext_b64.trim())
        .map_err(|_| CryptoError::BadBase64)?;
    let private = PrivateDecryptingKey::from_pkcs8(rsa.pkcs8_der())
        .map_err(|e| CryptoError::BadKey(format!("RSA private key: {e}")))?;
    let oaep = OaepPrivateDecryptingKey::new(private).map_err(|_| CryptoError::Decrypt)?;
    let mut out = vec![0u8; oaep.min_output_size()];
    let plain = oaep
        .decrypt(&OAEP_SHA1_MGF1SHA1, &ciphertext, &mut out, None)
        .map_err(|_| CryptoError::Decrypt)?;
    String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crypto::SignatureScheme;

    #[test]
    fn a_name_round_trips_and_only_its_key_opens_it() {
        let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let other = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let c1 = encrypt(&key.verifying_key(), "张三").unwrap();
        let c2 = encrypt(&key.verifying_key(), "张三").unwrap();
        assert_ne!(c1, c2, "OAEP is randomized");
        assert_eq!(c1.len(), 344, "RSA-2048 ciphertext, base64");
        assert_eq!(decrypt(&key, &c1).unwrap(), "张三");
        assert!(matches!(decrypt(&other, &c1), Err(CryptoError::Decrypt)));
        assert!(matches!(
            decrypt(&key, "not base64!"),
            Err(CryptoError::BadBase64)
        ));
        let sm2 = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        assert!(encrypt(&sm2.verifying_key(), "x").is_err());
        assert!(encrypt(&key.verifying_key(), &"x".repeat(215)).is_err());
    }
}
