//! Platform-certificate download models (reference §4.9): the `GET /v3/certificates` query
//! string here; the answer body lives with its builder in [`crate::certificates`] and is
//! re-exported so every endpoint's models are found under `models`.

use paygate_core::error::ApiError;
use serde::{Deserialize, Serialize};

pub use crate::certificates::{CertificateEntry, CertificatesResponse, EncryptCertificate};
use crate::rules::Validate;

/// `algorithm_type` query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AlgorithmType {
    Rsa,
    Sm2,
}

/// Query string of `GET /v3/certificates[?algorithm_type=RSA|SM2]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatesQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_type: Option<AlgorithmType>,
}

impl Validate for CertificatesQuery {
    fn validate(&self) -> Result<(), ApiError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_answer_round_trips_and_missing_fields_fail() {
        let body = r#"{"data":[{"serial_no":"5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC","effective_time":"2023-09-19T23:15:58+08:00","expire_time":"2028-09-17T23:15:58+08:00","encrypt_certificate":{"algorithm":"AEAD_AES_256_GCM","nonce":"14b16c03dc1b","associated_data":"certificate","ciphertext":"abc="}}]}"#;
        let r: CertificatesResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.data[0].encrypt_certificate.associated_data, "certificate");
        assert_eq!(serde_json::to_string(&r).unwrap(), body);
        assert!(
            serde_json::from_str::<CertificatesResponse>(r#"{"data":[{"serial_no":"1"}]}"#)
                .is_err()
        );
        let q: CertificatesQuery = crate::models::bills::parse_query("algorithm_type=SM2").unwrap();
        assert_eq!(q.algorithm_type, Some(AlgorithmType::Sm2));
        assert!(q.validate().is_ok());
    }
}
