//! The protocol's published test vectors (reference §9, ledger-recon-risk §4, wechatpay-java's
//! `shangmi-testing`), reproduced byte for byte, plus the behaviour around them: header parsing
//! in every SDK's order, sign→verify round trips, tampering, AEAD and certificate round trips.

// Test helpers outside `#[test]` functions unwrap too; clippy's test exemption does not see them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paygate_wxpay::certificates::{CertificatesResponse, build_certificates_response};
use paygate_wxpay::crypto::aead::{self, AeadAlgorithm, AeadKey};
use paygate_wxpay::crypto::cert::{
    self, CertificateParams, issue_certificate, parse_certificate_pem, self_signed_certificate,
    verify_certificate_signature,
};
use paygate_wxpay::crypto::{CryptoError, SignatureScheme, SigningKey, VerifyingKey, hash};
use paygate_wxpay::notify::Notification;
use paygate_wxpay::paysign::{app_pay_params, jsapi_pay_params};
use paygate_wxpay::sign::{
    AuthError, Authorization, ResponseSignature, request_message, response_message, sign_request,
    sign_response,
};
use time::macros::datetime;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn official_key() -> SigningKey {
    SigningKey::from_pkcs8_pem(&fixture("official_test_key.pem")).unwrap()
}

const TS: i64 = 1_554_208_460;
const NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";

// ---------------------------------------------------------------------------------------------
// §9.1 the official fixed RSA key
// ---------------------------------------------------------------------------------------------

const JSAPI_BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
const JSAPI_REQUEST_SIGNATURE: &str = "jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A==";

#[test]
fn official_post_request_signature_matches_byte_for_byte() {
    let key = official_key();
    assert_eq!(key.scheme(), SignatureScheme::Rsa2048Sha256);
    let auth = sign_request(
        &key,
        "1900007291",
        "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB",
        "POST",
        "/v3/pay/transactions/jsapi",
        JSAPI_BODY.as_bytes(),
        TS,
        NONCE,
    )
    .unwrap();
    assert_eq!(auth.signature, JSAPI_REQUEST_SIGNATURE);
    assert_eq!(auth.timestamp, "1554208460");

    // And the header a server receives verifies against the public key.
    let parsed = Authorization::parse(&auth.to_header_value()).unwrap();
    assert_eq!(parsed, auth);
    parsed
        .verify(
            &key.verifying_key(),
            "POST",
            "/v3/pay/transactions/jsapi",
            JSAPI_BODY.as_bytes(),
        )
        .unwrap();
}

#[test]
fn official_jsapi_pay_sign_matches() {
    let p = jsapi_pay_params(
        &official_key(),
        "wx2421b1c4370ec43b",
        "wx201410272009395522657a690389285100",
        TS,
        NONCE,
    )
    .unwrap();
    assert_eq!(
        p.pay_sign,
        "mI35pfNEQV6777ke/1T+LJLQDNTm7yeoUJH+j/adPGhmCCi0PbgkvYQTRcXH0uibcLVtvFLdGLpmoYO9FV6lBBsTAjuhh5YOvQi0e2g3e0yytitiNET9FEuqM0pjnKfRW4K6LIZDdbWJv9KhZUx3DrJa5TL7OJ7VdADVivxVySIlPVKjGwuCXzuXSJes0UcILgWQUMyha5/3nYofuHtS7r+KYyMuxD+oJ9VM1Qdxk4UIG59CP5Y3wtYIFybyF3bdu1caHTRRX+DLyMXyYA/IrTmiW01c4RPjpHBX5Dk1sZyY1zVsWNsvMHr2e1NTWtBxKJ+qk5N61J7caYoepHFaxw=="
    );
    assert_eq!(p.sign_type, "RSA");
    assert_eq!(p.package, "prepay_id=wx201410272009395522657a690389285100");
    assert_eq!(p.time_stamp, "1554208460");
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["appId"], "wx2421b1c4370ec43b");
    assert_eq!(json["signType"], "RSA");
}

#[test]
fn official_app_sign_matches() {
    let p = app_pay_params(
        &official_key(),
        "wx2421b1c4370ec43b",
        "1900000109",
        "wx201410272009395522657a690389285100",
        TS,
        NONCE,
    )
    .unwrap();
    assert_eq!(
        p.sign,
        "gXx9KhTP6IooKV1SuG3OCGlBIgZbKtubCZvnau6khw1iffvNT28IzLbKmztq2xA/RCNbZa1XOsoiuVmAEeTZQicWfhv4P+O4oBRIrx0X9f3cnWFkMBU9alTWs0nyQ1N9fcILOTe0f4kxOhVh+/Xhn5hOiUK7Sz3XA1mcpa3R2NCWf/e+0ow/RDf15iTymOHgDrEkT/gedg/3E0iXfDX3mFicSZhrHESZDOTXcl9RzELREBUFznd/o2NQM99WcL86m23HY0cTy+QGWU4QDmNrbQ9ihmLW71qPb0Cx/d7EQvw/Kyx0A6s64ZQp3hHdcmiRcLnjVXrKCk7LShaCK+lS3Q=="
    );
    assert_eq!(p.package, "Sign=WXPay");
    assert_eq!(p.prepayid, "wx201410272009395522657a690389285100");
}

#[test]
fn official_get_signature_has_the_computed_prefix() {
    let auth = sign_request(
        &official_key(),
        "1900007291",
        "S",
        "GET",
        "/v3/certificates",
        b"",
        TS,
        NONCE,
    )
    .unwrap();
    assert!(
        auth.signature
            .starts_with("JNEITrKv8DWEtBJGZtxG9ARa+eIZDIn1Ht3MQM5j"),
        "{}",
        auth.signature
    );
    assert_eq!(
        request_message("GET", "/v3/certificates", "1554208460", NONCE, b""),
        format!("GET\n/v3/certificates\n1554208460\n{NONCE}\n\n").into_bytes()
    );
}

#[test]
fn pkcs1_form_of_the_official_key_is_the_same_key() {
    let pkcs1 = SigningKey::from_pkcs8_pem(&fixture("official_test_key_pkcs1.pem")).unwrap();
    let pkcs8 = official_key();
    assert_eq!(pkcs1.to_pkcs8_pem(), pkcs8.to_pkcs8_pem());
    let message = request_message(
        "POST",
        "/v3/pay/transactions/jsapi",
        "1554208460",
        NONCE,
        JSAPI_BODY.as_bytes(),
    );
    assert_eq!(
        pkcs1.sign_base64(&message).unwrap(),
        JSAPI_REQUEST_SIGNATURE
    );
}

// ---------------------------------------------------------------------------------------------
// §9.2 the Go SDK's mock key, certificate and callback
// ---------------------------------------------------------------------------------------------

#[test]
fn go_mock_testing_key_signs_source() {
    let key = SigningKey::from_pkcs8_pem(&fixture("go_mock_testing_key.pem")).unwrap();
    assert_eq!(
        key.sign_base64(b"source").unwrap(),
        "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoVz+pp4hAm6pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLli/K8V29QiOhuH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj1aJGH6/L+hdwfLpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg=="
    );
}

#[test]
fn go_mock_certificate_parses_with_its_serial_and_matches_the_mock_key() {
    let info = parse_certificate_pem(&fixture("go_mock_platform_cert.pem")).unwrap();
    assert_eq!(info.serial_no, "D7CE59D1F522D701");
    assert_eq!(info.not_before, datetime!(2021-04-27 08:55:23 UTC));
    assert_eq!(info.not_after, datetime!(2031-04-25 08:55:23 UTC));
    assert!(
        info.subject.contains("Default Company Ltd"),
        "{}",
        info.subject
    );
    let key = SigningKey::from_pkcs8_pem(&fixture("go_mock_testing_key.pem")).unwrap();
    assert_eq!(info.public_key, key.verifying_key());
    // Self-signed: it verifies under its own key.
    verify_certificate_signature(&fixture("go_mock_platform_cert.pem"), &info.public_key).unwrap();
}

const GO_CALLBACK_SIGNATURE: &str = "tJHIiIS9eB2hAYstmAmbbD3ZE5LiIm/Ug5tuL4fC0YOFRWIHV39UFIZXC0e9Wl6lBu6sKvkqDkzpqzBsVHyXFlbYZTOQrVdG4b6LfTnK4mikv9++ixJMd3vTf2yCqvBkh98zs3Ds5zsYQakzbcwhmw4fMJs4nPLws28H0UW9FjDR//rxELLwXvV1VEA1IBLX70xptjL8hrfUjEE8kkry6yNJTHZRU8CAc7qHli2Ng1V1qb9ARbK8A3ThmFmPQvRGrapI/jS2laKKgYUmfdEdkNO6B2Cke5e8VTxY406ArAmQ90GAihDwIcb16TQMnzCMBoutnwZKNiKRACrFmtxw2Q==";

fn go_callback_headers(name: &str) -> Option<String> {
    // Case-insensitive, as an HTTP header map is; no Signature-Type, as in the Go test.
    match name.to_ascii_lowercase().as_str() {
        "wechatpay-timestamp" => Some("1624523846".into()),
        "wechatpay-nonce" => Some("EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz".into()),
        "wechatpay-serial" => Some("D7CE59D1F522D701".into()),
        "wechatpay-signature" => Some(GO_CALLBACK_SIGNATURE.into()),
        _ => None,
    }
}

#[test]
fn go_callback_vector_verifies_and_decrypts_with_the_16_byte_key() {
    let body = fixture("go_notify_body.json");
    let cert = parse_certificate_pem(&fixture("go_mock_platform_cert.pem")).unwrap();

    let sig = ResponseSignature::from_headers(go_callback_headers).unwrap();
    assert_eq!(
        sig.scheme,
        SignatureScheme::Rsa2048Sha256,
        "absent type means RSA"
    );
    assert_eq!(sig.serial, cert.serial_no);
    sig.verify(&cert.public_key, body.as_bytes()).unwrap();
    sig.check_freshness(1_624_523_846 + 300, 300).unwrap();
    assert!(matches!(
        sig.check_freshness(1_624_523_846 + 301, 300),
        Err(AuthError::StaleTimestamp { .. })
    ));

    let notification: Notification = serde_json::from_str(&body).unwrap();
    assert_eq!(notification.id, "3119dfba-e649-5eec-ab1e-3412bc4d2e17");
    assert_eq!(notification.event_type, "PAYSCORE.USER_OPEN_SERVICE");
    assert_eq!(notification.summary, "签约成功");
    assert_eq!(notification.resource.associated_data, "payscore");
    let plaintext = notification.open(b"testMchAPIv3Key0").unwrap();
    assert_eq!(
        String::from_utf8(plaintext).unwrap(),
        r#"{"mchid":"1234567890","appid":"054aa7d7a2a54ab5898df65bd96f001c","create_time":"2020-06-30T12:12:00+08:00","out_contract_code":"21640bdbd08e473e828f3206a2741c6e"}"#
    );

    // Our serialisation of the envelope reproduces the Go test's body byte for byte.
    assert_eq!(serde_json::to_string(&notification).unwrap(), body);

    // One changed byte of the body breaks the signature.
    let tampered = body.replace("签约成功", "签约失败");
    assert!(sig.verify(&cert.public_key, tampered.as_bytes()).is_err());
}

// ---------------------------------------------------------------------------------------------
// §9.3 AEAD vectors
// ---------------------------------------------------------------------------------------------

const JAVA_APIV3_KEY: &[u8] = b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";

#[test]
fn java_aes_256_gcm_vector_both_directions() {
    let ct = aead::encrypt(
        AeadAlgorithm::Aes256Gcm,
        JAVA_APIV3_KEY,
        "uluk4a9R25RW",
        b"associatedData",
        b"message",
    )
    .unwrap();
    assert_eq!(ct, "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=");
    let pt = aead::decrypt(
        AeadAlgorithm::Aes256Gcm,
        JAVA_APIV3_KEY,
        "uluk4a9R25RW",
        b"associatedData",
        "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=",
    )
    .unwrap();
    assert_eq!(pt, b"message");
}

#[test]
fn java_certificate_download_vector_decrypts_to_the_named_certificate() {
    let response: CertificatesResponse =
        serde_json::from_str(&fixture("java_download_certificate_response.json")).unwrap();
    let certs = response.decrypt_all(JAVA_APIV3_KEY).unwrap();
    assert_eq!(certs.len(), 1);
    let (serial, pem_text) = &certs[0];
    assert_eq!(serial, "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC");
    let info = parse_certificate_pem(pem_text).unwrap();
    assert_eq!(&info.serial_no, serial);
    assert_eq!(info.public_key.scheme(), SignatureScheme::Rsa2048Sha256);
    // The entry's times are the certificate's validity at +08:00.
    let entry = &response.data[0];
    assert_eq!(
        paygate_core::timefmt::rfc3339_beijing(info.not_before),
        entry.effective_time
    );
    assert_eq!(
        paygate_core::timefmt::rfc3339_beijing(info.not_after),
        entry.expire_time
    );
    assert_eq!(entry.effective_time, "2023-09-19T23:15:58+08:00");
    assert_eq!(entry.expire_time, "2028-09-17T23:15:58+08:00");
    // With another key it does not open.
    assert!(
        response
            .decrypt_all(b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gc")
            .is_err()
    );
}

#[test]
fn go_aes_128_gcm_vector_with_a_16_byte_key() {
    let pt = aead::decrypt(
        AeadAlgorithm::Aes256Gcm,
        b"testAPIv3Key0000",
        "wCq51qZv4Yfg",
        b"Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
        "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
    )
    .unwrap();
    assert_eq!(pt, b"Hello World");
    // Go's failure cases: bad base64, wrong ciphertext, wrong key.
    for (key, ct) in [
        (&b"testAPIv3Key0000"[..], "invalid cipher"),
        (&b"testAPIv3Key0000"[..], "SGVsbG8gV29ybGQK"),
        (
            &b"testAPIv3Key1111"[..],
            "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        ),
        (
            &b"not a aes key"[..],
            "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        ),
    ] {
        assert!(
            aead::decrypt(
                AeadAlgorithm::Aes256Gcm,
                key,
                "wCq51qZv4Yfg",
                b"Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                ct
            )
            .is_err()
        );
    }
}

#[test]
fn java_sm4_gcm_vector_both_directions() {
    // wechatpay-java shangmi-testing BaseAeadSM4Test, key = first 16 bytes of SM3(APIv3 key).
    let ct = aead::encrypt(
        AeadAlgorithm::Sm4Gcm,
        JAVA_APIV3_KEY,
        "uluk4a9R25RW",
        b"associatedData",
        b"plaintext",
    )
    .unwrap();
    assert_eq!(ct, "+lcLNfkZQQx+iQm20Apa3x9Mb/5L7PgZ7w==");
    let pt = aead::decrypt(
        AeadAlgorithm::Sm4Gcm,
        JAVA_APIV3_KEY,
        "uluk4a9R25RW",
        b"associatedData",
        "+lcLNfkZQQx+iQm20Apa3x9Mb/5L7PgZ7w==",
    )
    .unwrap();
    assert_eq!(pt, b"plaintext");
    let tampered = aead::decrypt(
        AeadAlgorithm::Sm4Gcm,
        JAVA_APIV3_KEY,
        "uluk4a9R25RW",
        b"associatedData",
        "+lcLNfkZQQx+iQm20Apa3x9Mb/5L7PgZ8w==",
    );
    assert!(matches!(tampered, Err(CryptoError::Decrypt)));
}

// ---------------------------------------------------------------------------------------------
// §9.4 a real WeChat Pay response signature (public-key mode)
// ---------------------------------------------------------------------------------------------

#[test]
fn real_public_key_response_signature_verifies() {
    let key = VerifyingKey::from_spki_pem(&fixture("wechatpay_public_key_9_4.pem")).unwrap();
    assert_eq!(key.scheme(), SignatureScheme::Rsa2048Sha256);
    let body = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}"#;
    let sig = ResponseSignature {
        timestamp: "1722850421".into(),
        nonce: "d824f2e086d3c1df967785d13fcd22ef".into(),
        serial: "PUB_KEY_ID_0000000000000000000000000000".into(),
        signature: "mfI1CPqvBrgcXfgXMFjdNIhBf27ACE2YyeWsWV9ZI7T7RU0vHvbQpu9Z32ogzc+k8ZC5n3kz7h70eWKjgqNdKQF0eRp8mVKlmfzMLBVHbssB9jEZEDXThOX1XFqX7s7ymia1hoHQxQagPGzkdWxtlZPZ4ZPvr1RiqkgAu6Is8MZgXXrRoBKqjmSdrP1N7uxzJ/cjfSiis9FiLjuADoqmQ1P7p2N876YPAol7Rn0+GswwAwxldbdLrmVSjfytfSBJFqTMHn4itojgxSWWN1byuckQt8hSTEv/Lg97QoeGniYP17T80pJeQyL3b+295FPHSO2AtvCgyIbKMZ0BALilAA==".into(),
        scheme: SignatureScheme::Rsa2048Sha256,
    };
    sig.verify(&key, body).unwrap();
    // A trailing newline (as Go's encoder would add) is a different body.
    assert!(
        sig.verify(
            &key,
            b"{\"code_url\":\"weixin://wxpay/bizpayurl?pr=JyC91EIz1\"}\n"
        )
        .is_err()
    );
    // PEM round trip keeps the key.
    assert_eq!(
        VerifyingKey::from_spki_pem(&key.to_spki_pem()).unwrap(),
        key
    );
}

// ---------------------------------------------------------------------------------------------
// ShangMi: wechatpay-java shangmi-testing SM2 key/certificate, SM3 and SM4 standard vectors
// ---------------------------------------------------------------------------------------------

const JAVA_SM2_SIGN: &str = "MEYCIQD35Rp3CKt7pLme/a0GaCVmwSeOl7X/12+ppRivcJuf6QIhAO5Vpy4tSk9SJUrgH5I5Qy0aYhFG9lN0aof1f5wJOI05";

#[test]
fn java_sm2_der_signature_verifies_against_the_merchant_certificate() {
    let info = parse_certificate_pem(&fixture("java_sm2_merchant_cert.pem")).unwrap();
    assert_eq!(info.serial_no, "54E7F59ED8DF4570CFB14780EA8152D45A675EE6");
    assert_eq!(info.public_key.scheme(), SignatureScheme::Sm2WithSm3);
    info.public_key
        .verify_base64(b"message", JAVA_SM2_SIGN)
        .unwrap();
    assert!(matches!(
        info.public_key
            .verify_base64(b"false-message", JAVA_SM2_SIGN),
        Err(CryptoError::BadSignature)
    ));
}

#[test]
fn java_sm2_private_key_matches_its_certificate_and_signs_der() {
    let key = SigningKey::from_pkcs8_pem(&fixture("java_sm2_merchant_key.pem")).unwrap();
    assert_eq!(key.scheme(), SignatureScheme::Sm2WithSm3);
    let cert_key =
        VerifyingKey::from_certificate_pem(&fixture("java_sm2_merchant_cert.pem")).unwrap();
    assert_eq!(key.verifying_key(), cert_key);
    let der = b64_decode(&key.sign_base64(b"message").unwrap());
    assert_eq!(der[0], 0x30, "SM2 signatures are DER, like the Java SDK's");
    cert_key.verify(b"message", &der).unwrap();
}

fn b64_decode(b64: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[test]
fn sm3_standard_vectors() {
    assert_eq!(
        hex::encode(hash::sm3(b"abc")),
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    );
    assert_eq!(
        hex::encode(hash::sm3("abcd".repeat(16).as_bytes())),
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    );
}

#[test]
fn sm4_standard_vectors_once_and_a_million_times() {
    use sm4::cipher::{BlockCipherEncrypt, KeyInit};
    let key: [u8; 16] = hex::decode("0123456789abcdeffedcba9876543210")
        .unwrap()
        .try_into()
        .unwrap();
    let cipher = sm4::Sm4::new(&key.into());
    let mut block = sm4::cipher::Block::<sm4::Sm4>::from(key);
    cipher.encrypt_block(&mut block);
    assert_eq!(hex::encode(block), "681edf34d206965e86b3e94f536e4246");
    let mut block = sm4::cipher::Block::<sm4::Sm4>::from(key);
    for _ in 0..1_000_000 {
        cipher.encrypt_block(&mut block);
    }
    assert_eq!(hex::encode(block), "595298c7c6fd271f0402f804c33d3f66");
}

// ---------------------------------------------------------------------------------------------
// Authorization header parsing
// ---------------------------------------------------------------------------------------------

const SIG: &str = "c2lnbmF0dXJl+/==";

fn expect_fields(auth: &Authorization) {
    assert_eq!(auth.scheme, SignatureScheme::Rsa2048Sha256);
    assert_eq!(auth.mchid, "1900009191");
    assert_eq!(auth.nonce_str, "593BEC0C930BF1AFEB40B4A08C8FB242");
    assert_eq!(auth.timestamp, "1554208460");
    assert_eq!(auth.serial_no, "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB");
    assert_eq!(auth.signature, SIG);
}

fn header(order: &[&str], sep: &str) -> String {
    let value = |k: &str| match k {
        "mchid" => "1900009191",
        "nonce_str" => "593BEC0C930BF1AFEB40B4A08C8FB242",
        "timestamp" => "1554208460",
        "serial_no" => "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB",
        "signature" => SIG,
        other => panic!("{other}"),
    };
    let params: Vec<String> = order
        .iter()
        .map(|k| format!("{k}=\"{}\"", value(k)))
        .collect();
    format!("WECHATPAY2-SHA256-RSA2048 {}", params.join(sep))
}

#[test]
fn authorization_parses_in_every_sdk_order() {
    let orders: [(&str, [&str; 5]); 4] = [
        (
            "go/java",
            ["mchid", "nonce_str", "timestamp", "serial_no", "signature"],
        ),
        (
            "python",
            ["mchid", "nonce_str", "signature", "timestamp", "serial_no"],
        ),
        (
            "php/axios",
            ["mchid", "serial_no", "timestamp", "nonce_str", "signature"],
        ),
        (
            "postman",
            ["mchid", "serial_no", "nonce_str", "timestamp", "signature"],
        ),
    ];
    for (sdk, order) in orders {
        for sep in [",", ", ", " , "] {
            let auth = Authorization::parse(&header(&order, sep))
                .unwrap_or_else(|e| panic!("{sdk} {sep:?}: {e}"));
            expect_fields(&auth);
        }
    }
    // Our own rendering is the Go order exactly.
    let go = header(&orders[0].1, ",");
    assert_eq!(Authorization::parse(&go).unwrap().to_header_value(), go);
}

#[test]
fn authorization_accepts_a_postman_guid_nonce_and_ignores_unknown_params() {
    let h = r#"WECHATPAY2-SHA256-RSA2048 mchid="1",serial_no="S",nonce_str="0f8fad5b-d9cb-469f-a165-70867728950e",timestamp="1554208460",signature="x",extra="y""#;
    let auth = Authorization::parse(h).unwrap();
    assert_eq!(auth.nonce_str, "0f8fad5b-d9cb-469f-a165-70867728950e");
    let sm2 = h.replace("WECHATPAY2-SHA256-RSA2048", "WECHATPAY2-SM2-WITH-SM3");
    assert_eq!(
        Authorization::parse(&sm2).unwrap().scheme,
        SignatureScheme::Sm2WithSm3
    );
}

#[test]
fn authorization_rejects_what_it_must() {
    let full = ["mchid", "nonce_str", "timestamp", "serial_no", "signature"];
    for missing in full {
        let order: Vec<&str> = full.iter().copied().filter(|k| *k != missing).collect();
        assert!(
            matches!(Authorization::parse(&header(&order, ",")), Err(AuthError::MissingParam(p)) if p == missing),
            "{missing}"
        );
    }
    let empty_value = header(&full, ",").replace("mchid=\"1900009191\"", "mchid=\"\"");
    assert!(matches!(
        Authorization::parse(&empty_value),
        Err(AuthError::MissingParam("mchid"))
    ));

    let duplicate = format!("{},mchid=\"other\"", header(&full, ","));
    assert!(
        matches!(Authorization::parse(&duplicate), Err(AuthError::DuplicateParam(p)) if p == "mchid")
    );

    let bad_scheme =
        header(&full, ",").replace("WECHATPAY2-SHA256-RSA2048", "WECHATPAY2-SHA256-RSA");
    assert!(
        matches!(Authorization::parse(&bad_scheme), Err(AuthError::UnknownScheme(s)) if s == "WECHATPAY2-SHA256-RSA")
    );
    let bearer = "Bearer abc";
    assert!(matches!(
        Authorization::parse(bearer),
        Err(AuthError::UnknownScheme(_))
    ));

    assert!(matches!(Authorization::parse(""), Err(AuthError::Missing)));
    assert!(matches!(
        Authorization::parse("   "),
        Err(AuthError::Missing)
    ));
    assert!(matches!(
        Authorization::parse("WECHATPAY2-SHA256-RSA2048"),
        Err(AuthError::Malformed(_))
    ));
    let unquoted = header(&full, ",").replace("\"1900009191\"", "1900009191");
    assert!(matches!(
        Authorization::parse(&unquoted),
        Err(AuthError::Malformed(_))
    ));
    let no_comma = header(&full, " ");
    assert!(matches!(
        Authorization::parse(&no_comma),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn millisecond_timestamps_parse_but_fail_the_freshness_window() {
    let mut auth = Authorization::parse(&header(
        &["mchid", "nonce_str", "timestamp", "serial_no", "signature"],
        ",",
    ))
    .unwrap();
    assert_eq!(auth.timestamp_secs().unwrap(), 1_554_208_460);
    auth.check_freshness(1_554_208_460 + 299, 300).unwrap();

    auth.timestamp = "1554208460000".into();
    assert_eq!(auth.timestamp_secs().unwrap(), 1_554_208_460_000);
    assert!(matches!(
        auth.check_freshness(1_554_208_460, 300),
        Err(AuthError::StaleTimestamp { .. })
    ));
    for bad in ["1554208460.5", "-1554208460", "abc", " 1554208460"] {
        auth.timestamp = bad.into();
        assert!(
            matches!(auth.timestamp_secs(), Err(AuthError::BadTimestamp)),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips and tampering
// ---------------------------------------------------------------------------------------------

fn both_keys() -> [SigningKey; 2] {
    [
        SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap(),
        SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap(),
    ]
}

#[test]
fn request_sign_verify_round_trip_and_every_tamper_breaks_it() {
    let target = "/v3/pay/transactions/out-trade-no/A%7C1?mchid=1900000001";
    let body = br#"{"mchid":"1900000001"}"#;
    for key in both_keys() {
        let vk = key.verifying_key();
        let auth = sign_request(
            &key,
            "1900000001",
            "SERIAL",
            "POST",
            target,
            body,
            TS,
            NONCE,
        )
        .unwrap();
        assert_eq!(auth.scheme, key.scheme());
        let received = Authorization::parse(&auth.to_header_value()).unwrap();
        received.verify(&vk, "POST", target, body).unwrap();

        let fails = |r: Result<(), AuthError>| assert!(matches!(r, Err(AuthError::Signature(_))));
        fails(received.verify(&vk, "GET", target, body));
        fails(received.verify(
            &vk,
            "POST",
            "/v3/pay/transactions/out-trade-no/A|1?mchid=1900000001",
            body,
        ));
        fails(received.verify(&vk, "POST", target, br#"{"mchid": "1900000001"}"#));
        fails(received.verify(&vk, "POST", target, b""));
        let mut other_ts = received.clone();
        other_ts.timestamp = "1554208461".into();
        fails(other_ts.verify(&vk, "POST", target, body));
        let mut other_nonce = received.clone();
        other_nonce.nonce_str = "593BEC0C930BF1AFEB40B4A08C8FB243".into();
        fails(other_nonce.verify(&vk, "POST", target, body));
        // A millisecond rendering of the same instant is a different signed string.
        let mut ms = received.clone();
        ms.timestamp = "1554208460000".into();
        fails(ms.verify(&vk, "POST", target, body));
    }
}

#[test]
fn scheme_must_match_the_key() {
    let [rsa, sm2] = both_keys();
    let auth = sign_request(&rsa, "1", "S", "GET", "/v3/x", b"", TS, NONCE).unwrap();
    assert!(matches!(
        auth.verify(&sm2.verifying_key(), "GET", "/v3/x", b""),
        Err(AuthError::SchemeMismatch { .. })
    ));
    let mut relabelled = auth.clone();
    relabelled.scheme = SignatureScheme::Sm2WithSm3;
    assert!(matches!(
        relabelled.verify(&rsa.verifying_key(), "GET", "/v3/x", b""),
        Err(AuthError::SchemeMismatch { .. })
    ));
}

#[test]
fn response_sign_verify_round_trip_including_204() {
    for key in both_keys() {
        let vk = key.verifying_key();
        for body in [&b"{\"prepay_id\":\"wx1\"}"[..], &b""[..]] {
            let sig = sign_response(&key, "PLATFORM_SERIAL", body, TS, "nonce12").unwrap();
            assert_eq!(
                response_message(&sig.timestamp, &sig.nonce, body),
                [b"1554208460\nnonce12\n".as_slice(), body, b"\n"].concat()
            );
            let headers = sig.headers();
            let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
            assert_eq!(
                names,
                [
                    "Wechatpay-Timestamp",
                    "Wechatpay-Nonce",
                    "Wechatpay-Signature",
                    "Wechatpay-Serial",
                    "Wechatpay-Signature-Type"
                ]
            );
            // A client reading them back through a case-insensitive header map.
            let received = ResponseSignature::from_headers(|name| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            })
            .unwrap();
            assert_eq!(received, sig);
            assert_eq!(received.scheme, key.scheme());
            received.verify(&vk, body).unwrap();
            assert!(received.verify(&vk, b"x").is_err());
            let mut other_ts = received.clone();
            other_ts.timestamp = "1554208461".into();
            assert!(other_ts.verify(&vk, body).is_err());
        }
    }
}

#[test]
fn response_headers_are_required_and_the_type_must_be_known() {
    let all = |name: &str| -> Option<String> {
        match name {
            "Wechatpay-Timestamp" => Some("1".into()),
            "Wechatpay-Nonce" => Some("n".into()),
            "Wechatpay-Signature" => Some("s".into()),
            "Wechatpay-Serial" => Some("S".into()),
            "Wechatpay-Signature-Type" => Some("WECHATPAY2-SM2-WITH-SM3".into()),
            _ => None,
        }
    };
    assert_eq!(
        ResponseSignature::from_headers(all).unwrap().scheme,
        SignatureScheme::Sm2WithSm3
    );
    for missing in [
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
    ] {
        let r = ResponseSignature::from_headers(|n| if n == missing { None } else { all(n) });
        assert!(matches!(r, Err(AuthError::MissingHeader(h)) if h == missing));
        let blank = ResponseSignature::from_headers(|n| {
            if n == missing {
                Some("  ".into())
            } else {
                all(n)
            }
        });
        assert!(matches!(blank, Err(AuthError::MissingHeader(_))));
    }
    let unknown = ResponseSignature::from_headers(|n| {
        if n == "Wechatpay-Signature-Type" {
            Some("WECHATPAY2-SHA256-RSA".into())
        } else {
            all(n)
        }
    });
    assert!(matches!(unknown, Err(AuthError::UnknownScheme(_))));
    // WeChat's deliberate probe signatures are rejected like any other bad signature.
    let key = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
    let probe = ResponseSignature {
        timestamp: "1".into(),
        nonce: "n".into(),
        serial: "S".into(),
        signature: "WECHATPAY/SIGNTEST/abc".into(),
        scheme: SignatureScheme::Rsa2048Sha256,
    };
    assert!(probe.verify(&key.verifying_key(), b"{}").is_err());
}

// ---------------------------------------------------------------------------------------------
// AEAD round trips and nonces
// ---------------------------------------------------------------------------------------------

#[test]
fn aead_round_trips_with_16_and_32_byte_keys() {
    for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Sm4Gcm] {
        for key in [
            &b"0123456789abcdef"[..],
            &b"0123456789abcdef0123456789abcdef"[..],
        ] {
            let nonce = aead::new_nonce();
            let plaintext = "{\"openid\":\"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o\",\"金额\":100}".as_bytes();
            let ct = aead::encrypt(alg, key, &nonce, b"transaction", plaintext).unwrap();
            assert_eq!(
                aead::decrypt(alg, key, &nonce, b"transaction", &ct).unwrap(),
                plaintext
            );
            // A pre-keyed AeadKey reads the same wire form.
            let keyed = AeadKey::new(alg, key).unwrap();
            assert_eq!(
                keyed.decrypt(&nonce, b"transaction", &ct).unwrap(),
                plaintext
            );
            assert!(matches!(
                aead::decrypt(alg, key, &nonce, b"refund", &ct),
                Err(CryptoError::Decrypt)
            ));
        }
    }
    // The algorithms really differ.
    let a = aead::encrypt(
        AeadAlgorithm::Aes256Gcm,
        JAVA_APIV3_KEY,
        "uluk4a9R25RW",
        b"",
        b"x",
    )
    .unwrap();
    let s = aead::encrypt(
        AeadAlgorithm::Sm4Gcm,
        JAVA_APIV3_KEY,
        "uluk4a9R25RW",
        b"",
        b"x",
    )
    .unwrap();
    assert_ne!(a, s);
}

#[test]
fn aead_rejects_nonces_that_are_not_12_bytes() {
    for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Sm4Gcm] {
        let good = aead::encrypt(alg, JAVA_APIV3_KEY, "uluk4a9R25RW", b"", b"x").unwrap();
        for nonce in ["", "uluk4a9R25R", "uluk4a9R25RWX", "3a584b49ed9b3a58"] {
            assert!(matches!(
                aead::encrypt(alg, JAVA_APIV3_KEY, nonce, b"", b"x"),
                Err(CryptoError::BadNonce(n)) if n == nonce.len()
            ));
            assert!(matches!(
                aead::decrypt(alg, JAVA_APIV3_KEY, nonce, b"", &good),
                Err(CryptoError::BadNonce(_))
            ));
        }
        // 12 bytes but not 12 characters: a 4-byte UTF-8 char counts as 4.
        assert!(aead::encrypt(alg, JAVA_APIV3_KEY, "中文中文", b"", b"x").is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Notifications and the certificates response
// ---------------------------------------------------------------------------------------------

#[test]
fn notification_seal_serialise_parse_open() {
    for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Sm4Gcm] {
        let plaintext =
            br#"{"out_trade_no":"1217752501201407033233368018","trade_state":"SUCCESS"}"#;
        let sealed = Notification::seal(
            alg,
            JAVA_APIV3_KEY,
            "TRANSACTION.SUCCESS",
            "支付成功",
            "transaction",
            "transaction",
            plaintext,
            "EV-2018022511223320873".into(),
            "2018-06-08T10:34:56+08:00".into(),
        )
        .unwrap();
        let wire = serde_json::to_vec(&sealed).unwrap();
        let received: Notification = serde_json::from_slice(&wire).unwrap();
        assert_eq!(received, sealed);
        assert_eq!(received.open(JAVA_APIV3_KEY).unwrap(), plaintext);

        // Signed and verified as a callback, like the simulator will send it.
        let platform = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let sig = sign_response(&platform, "SERIAL", &wire, TS, "nonce").unwrap();
        sig.verify(&platform.verifying_key(), &wire).unwrap();
    }
}

fn cert_params(cn: &str) -> CertificateParams {
    CertificateParams {
        common_name: cn.into(),
        organization: "paygate simulator".into(),
        not_before: datetime!(2025-01-01 00:00:00 +08:00),
        not_after: datetime!(2030-01-01 00:00:00 +08:00),
    }
}

#[test]
fn certificates_response_build_decrypt_parse_keeps_serials() {
    let rsa = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
    let sm2 = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
    let rsa_cert = self_signed_certificate(&rsa, &cert_params("Tenpay.com sign")).unwrap();
    let sm2_cert = self_signed_certificate(&sm2, &cert_params("Tenpay.com sign SM2")).unwrap();
    for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Sm4Gcm] {
        let response =
            build_certificates_response(&[&rsa_cert.pem, &sm2_cert.pem], alg, JAVA_APIV3_KEY)
                .unwrap();
        assert_eq!(response.data.len(), 2);
        let entry = &response.data[0];
        assert_eq!(entry.serial_no, rsa_cert.serial_no);
        assert_eq!(entry.effective_time, "2025-01-01T00:00:00+08:00");
        assert_eq!(entry.expire_time, "2030-01-01T00:00:00+08:00");
        assert_eq!(entry.encrypt_certificate.associated_data, "certificate");
        assert_eq!(entry.encrypt_certificate.algorithm, alg.as_str());
        assert_eq!(entry.encrypt_certificate.nonce.len(), 12);

        let wire = serde_json::to_string(&response).unwrap();
        let received: CertificatesResponse = serde_json::from_str(&wire).unwrap();
        let certs = received.decrypt_all(JAVA_APIV3_KEY).unwrap();
        assert_eq!(certs[0], (rsa_cert.serial_no.clone(), rsa_cert.pem.clone()));
        assert_eq!(certs[1], (sm2_cert.serial_no.clone(), sm2_cert.pem.clone()));
        for (serial, pem_text) in &certs {
            assert_eq!(&parse_certificate_pem(pem_text).unwrap().serial_no, serial);
        }
    }
    // An entry whose serial_no disagrees with its certificate is refused.
    let mut response =
        build_certificates_response(&[&rsa_cert.pem], AeadAlgorithm::Aes256Gcm, JAVA_APIV3_KEY)
            .unwrap();
    response.data[0].serial_no = sm2_cert.serial_no.clone();
    assert!(matches!(
        response.decrypt_all(JAVA_APIV3_KEY),
        Err(CryptoError::Certificate(_))
    ));
}

#[test]
fn self_signed_certificates_parse_with_serial_validity_and_key() {
    for key in both_keys() {
        let issued = self_signed_certificate(&key, &cert_params("1900000001")).unwrap();
        assert_eq!(issued.serial_no.len(), 40);
        assert!(
            issued
                .serial_no
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
        assert!(issued.pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let info = parse_certificate_pem(&issued.pem).unwrap();
        assert_eq!(info.serial_no, issued.serial_no);
        assert_eq!(info.not_before, datetime!(2024-12-31 16:00:00 UTC));
        assert_eq!(info.not_after, datetime!(2029-12-31 16:00:00 UTC));
        assert!(info.is_valid_at(datetime!(2026-06-01 00:00:00 UTC)));
        assert!(!info.is_valid_at(datetime!(2031-06-01 00:00:00 UTC)));
        assert_eq!(info.public_key, key.verifying_key());
        assert!(info.subject.contains("CN=1900000001"), "{}", info.subject);
        assert!(
            info.subject.contains("O=paygate simulator"),
            "{}",
            info.subject
        );
        verify_certificate_signature(&issued.pem, &key.verifying_key()).unwrap();
        // Two certificates never share a serial.
        let again = self_signed_certificate(&key, &cert_params("1900000001")).unwrap();
        assert_ne!(again.serial_no, issued.serial_no);
    }
}

#[test]
fn ca_issued_certificates_in_every_key_combination() {
    let [rsa_ca, sm2_ca] = both_keys();
    for ca in [&rsa_ca, &sm2_ca] {
        let ca_cert = self_signed_certificate(ca, &cert_params("paygate test CA")).unwrap();
        for leaf in both_keys() {
            let issued =
                issue_certificate(&leaf, ca, &ca_cert.pem, &cert_params("1900000001")).unwrap();
            let info = parse_certificate_pem(&issued.pem).unwrap();
            assert_eq!(info.serial_no, issued.serial_no);
            assert_eq!(info.serial_no.len(), 40);
            assert_eq!(info.public_key, leaf.verifying_key());
            assert_eq!(info.not_after, datetime!(2029-12-31 16:00:00 UTC));
            verify_certificate_signature(&issued.pem, &ca.verifying_key()).unwrap();
            // Not signed by the leaf itself.
            assert!(verify_certificate_signature(&issued.pem, &leaf.verifying_key()).is_err());
        }
    }
}

#[test]
fn serial_formatting_matches_the_sdks() {
    // Go %X / Java toString(16): the integer's hex, no DER sign byte.
    assert_eq!(
        cert::serial_hex(&[0x00, 0xD7, 0xCE, 0x59, 0xD1, 0xF5, 0x22, 0xD7, 0x01]),
        "D7CE59D1F522D701"
    );
}

#[test]
fn openssl_sm2_signature_with_the_default_distid_verifies() {
    // `openssl dgst -sm3 -sign key.pem -sigopt distid:1234567812345678` over "message":
    // an independent SM2 implementation agreeing on the user id and the DER encoding.
    let key = VerifyingKey::from_spki_pem(&fixture("openssl_sm2_public_key.pem")).unwrap();
    let sig = "MEUCIQC3rJ4GXPiKjdGIkrRJIHoWPSxpFy9+tGavp44XXvf65QIgUVnlcqQ0ReTGsh8g8skEqoIjH6g+VjMHJU/JX8BsGRU=";
    key.verify_base64(b"message", sig).unwrap();
    assert!(key.verify_base64(b"Message", sig).is_err());
}
