//! The body of `GET /v3/certificates` (reference §4.9): platform certificates encrypted with the
//! merchant's APIv3 key (associated data `certificate`, 12-character nonce), with validity times
//! in RFC 3339 at +08:00 as WeChat Pay writes them.

use paygate_core::timefmt::rfc3339_beijing;
use serde::{Deserialize, Serialize};

use crate::crypto::CryptoError;
use crate::crypto::aead::{self, AeadAlgorithm, AeadKey};
use crate::crypto::cert;

/// The associated data every SDK decrypts certificates with.
pub const CERTIFICATE_AAD: &str = "certificate";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CertificatesResponse {
    pub data: Vec<CertificateEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CertificateEntry {
    pub serial_no: String,
    pub effective_time: String,
    pub expire_time: String,
    pub encrypt_certificate: EncryptCertificate,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EncryptCertificate {
    pub algorithm: String,
    pub nonce: String,
    pub associated_data: String,
    pub ciphertext: String,
}

/// Encrypts each certificate PEM; serial and times come from the certificate itself.
pub fn build_certificates_response(
    cert_pems: &[&str],
    alg: AeadAlgorithm,
    apiv3_key: &[u8],
) -> Result<CertificatesResponse, CryptoError> {
    let key = AeadKey::new(alg, apiv3_key)?;
    let data = cert_pems
        .iter()
        .map(|pem_text| {
            let info = cert::parse_certificate_pem(pem_text)?;
            let nonce = aead::new_nonce();
            let ciphertext =
                key.encrypt(&nonce, CERTIFICATE_AAD.as_bytes(), pem_text.as_bytes())?;
            Ok(CertificateEntry {
                serial_no: info.serial_no,
                effective_time: rfc3339_beijing(info.not_before),
                expire_time: rfc3339_beijing(info.not_after),
                encrypt_certificate: EncryptCertificate {
                    algorithm: alg.as_str().to_string(),
                    nonce,
                    associated_data: CERTIFICATE_AAD.to_string(),
                    ciphertext,
                },
            })
        })
        .collect::<Result<Vec<_>, CryptoError>>()?;
    Ok(CertificatesResponse { data })
}

impl CertificatesResponse {
    /// Decrypts every certificate and returns `(serial_no, pem)` pairs. Each decrypted
    /// certificate must carry the serial its entry claims, so a mix-up cannot go unnoticed.
    pub fn decrypt_all(&self, apiv3_key: &[u8]) -> Result<Vec<(String, String)>, CryptoError> {
        self.data
            .iter()
            .map(|entry| {
                let enc = &entry.encrypt_certificate;
                let alg = AeadAlgorithm::parse(&enc.algorithm)
                    .ok_or_else(|| CryptoError::UnknownAeadAlgorithm(enc.algorithm.clone()))?;
                let plaintext = aead::decrypt(
                    alg,
                    apiv3_key,
                    &enc.nonce,
                    enc.associated_data.as_bytes(),
                    &enc.ciphertext,
                )?;
                let pem_text = String::from_utf8(plaintext).map_err(|_| {
                    CryptoError::Certificate("decrypted certificate is not UTF-8".into())
                })?;
                let info = cert::parse_certificate_pem(&pem_text)?;
                if !same_serial(&info.serial_no, &entry.serial_no) {
                    return Err(CryptoError::Certificate(format!(
                        "entry serial {} but certificate serial {}",
                        entry.serial_no, info.serial_no
                    )));
                }
                Ok((entry.serial_no.clone(), pem_text))
            })
            .collect()
    }
}

/// Serials compare as integers (Python's SDK does `int(serial, 16)`): case and leading zeros
/// do not matter.
fn same_serial(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim_start_matches('0').to_ascii_uppercase();
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_are_beijing_rfc3339() {
        assert_eq!(
            rfc3339_beijing(datetime!(2023-09-19 15:15:58.25 UTC)),
            "2023-09-19T23:15:58+08:00"
        );
    }

    #[test]
    fn serials_compare_as_integers() {
        assert!(same_serial("00D7CE59D1F522D701", "d7ce59d1f522d701"));
        assert!(!same_serial("D7CE59D1F522D701", "D7CE59D1F522D702"));
    }
}
