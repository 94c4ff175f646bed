//! The notification (callback) envelope of reference §3.2/§3.3: a JSON object whose `resource`
//! is the business object encrypted with the merchant's APIv3 key.
//!
//! Field order on the wire follows real captured callbacks: `id, create_time, resource_type,
//! event_type, summary, resource{original_type, algorithm, ciphertext, associated_data, nonce}`.

use serde::{Deserialize, Serialize};

use crate::crypto::CryptoError;
use crate::crypto::aead::{self, AeadAlgorithm};

/// The only `resource_type` WeChat Pay sends; Python's SDK ignores any other.
pub const RESOURCE_TYPE_ENCRYPTED: &str = "encrypt-resource";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    pub resource_type: String,
    pub event_type: String,
    pub summary: String,
    pub resource: EncryptedResource,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EncryptedResource {
    pub original_type: String,
    pub algorithm: String,
    pub ciphertext: String,
    /// Always present (Java calls `getBytes()` on it without a null check); may be empty.
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
}

impl Notification {
    /// Encrypts `plaintext` (the business JSON) under a fresh 12-character nonce.
    #[allow(clippy::too_many_arguments)] // one argument per envelope field
    pub fn seal(
        alg: AeadAlgorithm,
        apiv3_key: &[u8],
        event_type: &str,
        summary: &str,
        original_type: &str,
        associated_data: &str,
        plaintext: &[u8],
        id: String,
        create_time: String,
    ) -> Result<Self, CryptoError> {
        let nonce = aead::new_nonce();
        let ciphertext = aead::encrypt(
            alg,
            apiv3_key,
            &nonce,
            associated_data.as_bytes(),
            plaintext,
        )?;
        Ok(Self {
            id,
            create_time,
            resource_type: RESOURCE_TYPE_ENCRYPTED.to_string(),
            event_type: event_type.to_string(),
            summary: summary.to_string(),
            resource: EncryptedResource {
                original_type: original_type.to_string(),
                algorithm: alg.as_str().to_string(),
                ciphertext,
                associated_data: associated_data.to_string(),
                nonce,
            },
        })
    }

    /// Decrypts the resource with the algorithm it names.
    pub fn open(&self, apiv3_key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.resource.open(apiv3_key)
    }
}

impl EncryptedResource {
    pub fn open(&self, apiv3_key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let alg = AeadAlgorithm::parse(&self.algorithm)
            .ok_or_else(|| CryptoError::UnknownAeadAlgorithm(self.algorithm.clone()))?;
        aead::decrypt(
            alg,
            apiv3_key,
            &self.nonce,
            self.associated_data.as_bytes(),
            &self.ciphertext,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";

    fn sealed(alg: AeadAlgorithm) -> Notification {
        Notification::seal(
            alg,
            KEY,
            "TRANSACTION.SUCCESS",
            "支付成功",
            "transaction",
            "transaction",
            br#"{"trade_state":"SUCCESS"}"#,
            "f6d3e392-7a32-5e7a-97d7-12a343048b1c".into(),
            "2015-05-20T13:29:35+08:00".into(),
        )
        .unwrap()
    }

    #[test]
    fn seal_then_open_for_both_algorithms() {
        for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Sm4Gcm] {
            let n = sealed(alg);
            assert_eq!(n.resource_type, "encrypt-resource");
            assert_eq!(n.resource.algorithm, alg.as_str());
            assert_eq!(n.resource.nonce.len(), 12);
            assert_eq!(n.open(KEY).unwrap(), br#"{"trade_state":"SUCCESS"}"#);
            assert!(matches!(
                n.open(b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gc"),
                Err(CryptoError::Decrypt)
            ));
        }
    }

    #[test]
    fn json_field_order_matches_real_callbacks() {
        let json = serde_json::to_string(&sealed(AeadAlgorithm::Aes256Gcm)).unwrap();
        let order = [
            "\"id\"",
            "\"create_time\"",
            "\"resource_type\"",
            "\"event_type\"",
            "\"summary\"",
            "\"resource\"",
            "\"original_type\"",
            "\"algorithm\"",
            "\"ciphertext\"",
            "\"associated_data\"",
            "\"nonce\"",
        ];
        let positions: Vec<usize> = order.iter().map(|k| json.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json}");
    }

    #[test]
    fn tampered_associated_data_or_unknown_algorithm_fail() {
        let mut n = sealed(AeadAlgorithm::Sm4Gcm);
        n.resource.associated_data = "refund".into();
        assert!(matches!(n.open(KEY), Err(CryptoError::Decrypt)));
        n.resource.algorithm = "AEAD_CHACHA".into();
        assert!(matches!(
            n.open(KEY),
            Err(CryptoError::UnknownAeadAlgorithm(_))
        ));
    }
}
