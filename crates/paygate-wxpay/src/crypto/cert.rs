//! X.509 certificates: reading merchant and platform certificates, and minting test ones.
//!
//! Serial numbers are written as WeChat Pay and its SDKs write them: the serial's integer value in
//! uppercase hex without leading zeros (Go `%X`, Java `toString(16).toUpperCase()`), e.g.
//! `D7CE59D1F522D701`. Minted certificates get a random 20-byte serial whose first byte is in
//! `0x10..=0x7F`, so the integer is positive and its hex is always exactly 40 characters.
//!
//! RSA-signed RSA certificates are built by `rcgen`, signed through our own aws-lc-rs key.
//! `rcgen` has no SM2 support, so a certificate whose subject or issuer key is SM2 is encoded
//! here directly (DER via `yasna`), signed with SM2-with-SM3 (OID 1.2.156.10197.1.501) in the
//! same shape as the SM2 certificates in wechatpay-java's `shangmi-testing` resources.

use rand::Rng as _;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use yasna::models::{GeneralizedTime, ObjectIdentifier, UTCTime};
use yasna::{DERWriter, Tag};

use super::rsa::RsaSigningKey;
use super::{CryptoError, SignatureScheme, SigningKey, VerifyingKey, hash};

/// What a certificate tells the protocol.
#[derive(Clone, Debug)]
pub struct CertificateInfo {
    /// Uppercase hex of the serial's integer value (no leading zeros), as WeChat Pay writes it.
    pub serial_no: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub public_key: VerifyingKey,
    /// RFC 4514-style subject, e.g. `O=..., CN=...` (x509-parser's rendering).
    pub subject: String,
}

impl CertificateInfo {
    /// True when `at` lies within `[not_before, not_after]`.
    pub fn is_valid_at(&self, at: OffsetDateTime) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// Reads the first `CERTIFICATE` block of `pem_text`.
pub fn parse_certificate_pem(pem_text: &str) -> Result<CertificateInfo, CryptoError> {
    parse_certificate_der(&first_certificate_der(pem_text)?)
}

/// Reads a DER certificate.
pub fn parse_certificate_der(der: &[u8]) -> Result<CertificateInfo, CryptoError> {
    let cert = parse_x509(der)?;
    let validity = cert.validity();
    Ok(CertificateInfo {
        serial_no: serial_hex(cert.raw_serial()),
        not_before: unix_time(validity.not_before.timestamp())?,
        not_after: unix_time(validity.not_after.timestamp())?,
        public_key: VerifyingKey::from_spki_der(cert.public_key().raw)?,
        subject: cert.subject().to_string(),
    })
}

/// Checks that `issuer` signed the first certificate of `cert_pem`.
pub fn verify_certificate_signature(
    cert_pem: &str,
    issuer: &VerifyingKey,
) -> Result<(), CryptoError> {
    let der = first_certificate_der(cert_pem)?;
    let cert = parse_x509(&der)?;
    let algorithm = cert.signature_algorithm.algorithm.to_id_string();
    let expected = match issuer.scheme() {
        SignatureScheme::Rsa2048Sha256 => OID_SHA256_WITH_RSA_STR,
        SignatureScheme::Sm2WithSm3 => OID_SM2_WITH_SM3_STR,
    };
    if algorithm != expected {
        return Err(CryptoError::Certificate(format!(
            "signed with {algorithm}, issuer key is {}",
            issuer.scheme()
        )));
    }
    issuer.verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
}

/// Uppercase hex of a DER INTEGER's magnitude, leading zero bytes and nibble dropped.
pub fn serial_hex(raw_serial: &[u8]) -> String {
    let hex = hex::encode_upper(raw_serial);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Subject and validity of a certificate to mint.
#[derive(Clone, Debug)]
pub struct CertificateParams {
    pub common_name: String,
    pub organization: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// A minted certificate.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub pem: String,
    /// 40 uppercase hex characters.
    pub serial_no: String,
}

/// A self-signed certificate for `key`, marked as a CA (basicConstraints CA:TRUE, like the Go
/// SDK's mock platform certificate) so that it can also issue merchant certificates.
pub fn self_signed_certificate(
    key: &SigningKey,
    params: &CertificateParams,
) -> Result<IssuedCertificate, CryptoError> {
    let params = normalise(params)?;
    let serial = random_serial();
    let der = match key {
        SigningKey::Rsa(rsa) => {
            let cert = rcgen_params(&params, &serial, true)
                .self_signed(&RcgenRsa(rsa))
                .map_err(|e| CryptoError::Certificate(e.to_string()))?;
            cert.der().to_vec()
        }
        SigningKey::Sm2(_) => {
            let subject = encode_name(&params);
            let ski = key_identifier(&key.verifying_key());
            let tbs = Tbs {
                serial: &serial,
                issuer_name: &subject,
                subject_name: &subject,
                params: &params,
                subject_key: &key.verifying_key(),
                issuer_scheme: key.scheme(),
                is_ca: true,
                subject_key_id: &ski,
                authority_key_id: Some(&ski),
            };
            sign_tbs(&tbs.encode()?, key)?
        }
    };
    Ok(issued(&der, &serial))
}

/// A certificate for `key` issued by the CA (`ca_key`, `ca_cert_pem`): an end-entity
/// certificate as merchant API certificates are in real life.
pub fn issue_certificate(
    key: &SigningKey,
    ca_key: &SigningKey,
    ca_cert_pem: &str,
    params: &CertificateParams,
) -> Result<IssuedCertificate, CryptoError> {
    let params = normalise(params)?;
    let ca_der = first_certificate_der(ca_cert_pem)?;
    let ca = parse_x509(&ca_der)?;
    let ca_public = VerifyingKey::from_spki_der(ca.public_key().raw)?;
    if ca_public != ca_key.verifying_key() {
        return Err(CryptoError::Certificate(
            "CA key does not match the CA certificate".into(),
        ));
    }
    let serial = random_serial();
    let der = match (key, ca_key) {
        (SigningKey::Rsa(subject), SigningKey::Rsa(ca_rsa)) => {
            let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der.clone().into(), RcgenRsa(ca_rsa))
                .map_err(|e| CryptoError::Certificate(e.to_string()))?;
            let cert = rcgen_params(&params, &serial, false)
                .signed_by(&RcgenRsa(subject), &issuer)
                .map_err(|e| CryptoError::Certificate(e.to_string()))?;
            cert.der().to_vec()
        }
        _ => {
            let authority_key_id =
                subject_key_identifier_of(&ca).unwrap_or_else(|| key_identifier(&ca_public));
            let tbs = Tbs {
                serial: &serial,
                issuer_name: ca.subject().as_raw(),
                subject_name: &encode_name(&params),
                params: &params,
                subject_key: &key.verifying_key(),
                issuer_scheme: ca_key.scheme(),
                is_ca: false,
                subject_key_id: &key_identifier(&key.verifying_key()),
                authority_key_id: Some(&authority_key_id),
            };
            sign_tbs(&tbs.encode()?, ca_key)?
        }
    };
    Ok(issued(&der, &serial))
}

const OID_SHA256_WITH_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
const OID_SHA256_WITH_RSA_STR: &str = "1.2.840.113549.1.1.11";
const OID_SM2_WITH_SM3: &[u64] = &[1, 2, 156, 10197, 1, 501];
const OID_SM2_WITH_SM3_STR: &str = "1.2.156.10197.1.501";
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_ORGANIZATION: &[u64] = &[2, 5, 4, 10];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const OID_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];

fn first_certificate_der(pem_text: &str) -> Result<Vec<u8>, CryptoError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| CryptoError::Pem(e.to_string()))?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .ok_or_else(|| CryptoError::Pem("no CERTIFICATE block found".into()))
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, CryptoError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CryptoError::Certificate(format!("cannot parse X.509: {e}")))?;
    Ok(cert)
}

fn unix_time(secs: i64) -> Result<OffsetDateTime, CryptoError> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| CryptoError::Certificate("validity time out of range".into()))
}

fn subject_key_identifier_of(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

/// RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits, computed here over the whole
/// SPKI (any stable 160-bit value is allowed; we only need it to be the same on both sides).
fn key_identifier(key: &VerifyingKey) -> Vec<u8> {
    hash::sha1(key.spki_der()).to_vec()
}

fn random_serial() -> [u8; 20] {
    let mut serial = [0u8; 20];
    rand::rng().fill(&mut serial[..]);
    // 0x10..=0x7F: positive (no DER padding byte) and no leading zero nibble, so 40 hex chars.
    serial[0] = 0x10 + serial[0] % 0x70;
    serial
}

fn issued(der: &[u8], serial: &[u8; 20]) -> IssuedCertificate {
    IssuedCertificate {
        pem: super::pem_encode("CERTIFICATE", der),
        serial_no: hex::encode_upper(serial),
    }
}

/// Drops sub-second precision (X.509 times are whole seconds; rcgen and yasna would refuse
/// them) and checks the range X.509 can express.
fn normalise(params: &CertificateParams) -> Result<CertificateParams, CryptoError> {
    let whole = |t: OffsetDateTime| {
        t.replace_nanosecond(0)
            .map_err(|_| CryptoError::Certificate("bad validity time".into()))
    };
    let not_before = whole(params.not_before)?;
    let not_after = whole(params.not_after)?;
    if not_before >= not_after {
        return Err(CryptoError::Certificate(
            "not_before must be earlier than not_after".into(),
        ));
    }
    for t in [not_before, not_after] {
        let year = t.to_offset(time::UtcOffset::UTC).year();
        if !(1950..=9999).contains(&year) {
            return Err(CryptoError::Certificate(format!(
                "validity year {year} outside 1950..=9999"
            )));
        }
    }
    Ok(CertificateParams {
        common_name: params.common_name.clone(),
        organization: params.organization.clone(),
        not_before,
        not_after,
    })
}

/// Our RSA key as an rcgen signer, so rcgen needs no crypto backend of its own.
struct RcgenRsa<'a>(&'a RsaSigningKey);

impl rcgen::PublicKeyData for RcgenRsa<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_pkcs1_der()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for RcgenRsa<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

fn rcgen_params(
    params: &CertificateParams,
    serial: &[u8],
    is_ca: bool,
) -> rcgen::CertificateParams {
    let mut out = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    if !params.organization.is_empty() {
        name.push(
            rcgen::DnType::OrganizationName,
            params.organization.as_str(),
        );
    }
    if !params.common_name.is_empty() {
        name.push(rcgen::DnType::CommonName, params.common_name.as_str());
    }
    out.distinguished_name = name;
    out.not_before = params.not_before;
    out.not_after = params.not_after;
    out.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    if is_ca {
        out.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        out.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
    } else {
        out.is_ca = rcgen::IsCa::ExplicitNoCa;
        out.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::ContentCommitment,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        out.use_authority_key_identifier_extension = true;
    }
    out
}

/// The parts of a TBSCertificate for the hand-written (SM2) encoder.
struct Tbs<'a> {
    serial: &'a [u8],
    issuer_name: &'a [u8],
    subject_name: &'a [u8],
    params: &'a CertificateParams,
    subject_key: &'a VerifyingKey,
    issuer_scheme: SignatureScheme,
    is_ca: bool,
    subject_key_id: &'a [u8],
    authority_key_id: Option<&'a [u8]>,
}

impl Tbs<'_> {
    fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        let not_before = X509Time::new(self.params.not_before)?;
        let not_after = X509Time::new(self.params.not_after)?;
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged(Tag::context(0), |w| w.write_u8(2));
                w.next().write_bigint_bytes(self.serial, true);
                write_signature_algorithm(w.next(), self.issuer_scheme);
                w.next().write_der(self.issuer_name);
                w.next().write_sequence(|w| {
                    not_before.write(w.next());
                    not_after.write(w.next());
                });
                w.next().write_der(self.subject_name);
                w.next().write_der(self.subject_key.spki_der());
                w.next()
                    .write_tagged(Tag::context(3), |w| self.write_extensions(w));
            })
        }))
    }

    fn write_extensions(&self, w: DERWriter<'_>) {
        w.write_sequence(|w| {
            write_extension(
                w.next(),
                OID_BASIC_CONSTRAINTS,
                true,
                &basic_constraints(self.is_ca),
            );
            write_extension(w.next(), OID_KEY_USAGE, true, &key_usage(self.is_ca));
            let ski = yasna::construct_der(|w| w.write_bytes(self.subject_key_id));
            write_extension(w.next(), OID_SUBJECT_KEY_ID, false, &ski);
            if let Some(id) = self.authority_key_id {
                let aki = yasna::construct_der(|w| {
                    w.write_sequence(|w| {
                        w.next()
                            .write_tagged_implicit(Tag::context(0), |w| w.write_bytes(id));
                    })
                });
                write_extension(w.next(), OID_AUTHORITY_KEY_ID, false, &aki);
            }
        });
    }
}

fn basic_constraints(is_ca: bool) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            if is_ca {
                w.next().write_bool(true);
            }
        })
    })
}

/// KeyUsage bits: CA = digitalSignature, keyCertSign, cRLSign; end entity = digitalSignature,
/// nonRepudiation, keyEncipherment (as WeChat Pay merchant certificates carry).
fn key_usage(is_ca: bool) -> Vec<u8> {
    let (bits, len) = if is_ca {
        ([0b1000_0110u8], 7)
    } else {
        ([0b1110_0000u8], 3)
    };
    yasna::construct_der(|w| w.write_bitvec_bytes(&bits, len))
}

fn write_extension(w: DERWriter<'_>, oid: &[u64], critical: bool, value: &[u8]) {
    w.write_sequence(|w| {
        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
        if critical {
            w.next().write_bool(true);
        }
        w.next().write_bytes(value);
    });
}

fn write_signature_algorithm(w: DERWriter<'_>, scheme: SignatureScheme) {
    let oid = match scheme {
        SignatureScheme::Rsa2048Sha256 => OID_SHA256_WITH_RSA,
        SignatureScheme::Sm2WithSm3 => OID_SM2_WITH_SM3,
    };
    // Both with explicit NULL parameters, as in the certificates WeChat Pay's test kits ship.
    w.write_sequence(|w| {
        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
        w.next().write_null();
    });
}

fn encode_name(params: &CertificateParams) -> Vec<u8> {
    let attributes = [
        (OID_ORGANIZATION, params.organization.as_str()),
        (OID_COMMON_NAME, params.common_name.as_str()),
    ];
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for (oid, value) in attributes.iter().filter(|(_, v)| !v.is_empty()) {
                w.next().write_set(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                        w.next().write_utf8_string(value);
                    });
                });
            }
        })
    })
}

fn sign_tbs(tbs: &[u8], issuer: &SigningKey) -> Result<Vec<u8>, CryptoError> {
    let signature = issuer.sign(tbs)?;
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(tbs);
            write_signature_algorithm(w.next(), issuer.scheme());
            w.next().write_bitvec_bytes(&signature, signature.len() * 8);
        })
    }))
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
enum X509Time {
    Utc(UTCTime),
    Generalized(GeneralizedTime),
}

impl X509Time {
    fn new(t: OffsetDateTime) -> Result<Self, CryptoError> {
        if let Some(utc) = UTCTime::from_datetime_opt(t) {
            return Ok(Self::Utc(utc));
        }
        GeneralizedTime::from_datetime_opt(t)
            .map(Self::Generalized)
            .ok_or_else(|| CryptoError::Certificate("validity time not expressible".into()))
    }

    fn write(&self, w: DERWriter<'_>) {
        match self {
            Self::Utc(t) => w.write_utctime(t),
            Self::Generalized(t) => w.write_generalized_time(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn params(cn: &str) -> CertificateParams {
        CertificateParams {
            common_name: cn.into(),
            organization: "paygate test".into(),
            not_before: datetime!(2024-01-01 00:00:00.5 UTC),
            not_after: datetime!(2060-01-01 00:00:00 UTC),
        }
    }

    #[test]
    fn serial_hex_drops_leading_zeros() {
        assert_eq!(serial_hex(&[0x00, 0xD7, 0xCE]), "D7CE");
        assert_eq!(serial_hex(&[0x0A, 0x01]), "A01");
        assert_eq!(serial_hex(&[0x00]), "0");
    }

    #[test]
    fn random_serials_are_forty_hex_chars() {
        for _ in 0..200 {
            let serial = random_serial();
            assert!((0x10..=0x7f).contains(&serial[0]));
            assert_eq!(serial_hex(&serial).len(), 40);
        }
    }

    #[test]
    fn validity_order_and_range_are_checked() {
        let key = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        let mut p = params("x");
        std::mem::swap(&mut p.not_before, &mut p.not_after);
        assert!(matches!(
            self_signed_certificate(&key, &p),
            Err(CryptoError::Certificate(_))
        ));
        let mut p = params("x");
        p.not_before = datetime!(1900-01-01 00:00:00 UTC);
        assert!(self_signed_certificate(&key, &p).is_err());
    }

    #[test]
    fn generalized_time_after_2049_parses_back() {
        for scheme in [SignatureScheme::Rsa2048Sha256, SignatureScheme::Sm2WithSm3] {
            let key = SigningKey::generate(scheme).unwrap();
            let cert = self_signed_certificate(&key, &params("late")).unwrap();
            let info = parse_certificate_pem(&cert.pem).unwrap();
            assert_eq!(info.not_before, datetime!(2024-01-01 00:00:00 UTC));
            assert_eq!(info.not_after, datetime!(2060-01-01 00:00:00 UTC));
        }
    }

    #[test]
    fn ca_key_must_match_ca_certificate() {
        let ca = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        let other = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        let ca_cert = self_signed_certificate(&ca, &params("ca")).unwrap();
        let leaf = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        let err = issue_certificate(&leaf, &other, &ca_cert.pem, &params("leaf")).unwrap_err();
        assert!(err.to_string().contains("does not match"));
    }
}
