//! Reading a callback (WeChat Pay → the channel's notify_url): the signature over the raw body
//! is checked with a platform key named by `Wechatpay-Serial`, within ±5 minutes, then the
//! resource is decrypted with the APIv3 key. An unverified callback is never trusted, but its
//! out_trade_no is still offered as a hint so the caller can query the channel about it.

use std::collections::HashMap;

use paygate_core::error::JSON_BODY_BYTES_MAX;
use paygate_wxpay::crypto::VerifyingKey;
use paygate_wxpay::crypto::aead::{AeadAlgorithm, AeadKey};
use paygate_wxpay::models::payments::Transaction;
use paygate_wxpay::models::refunds::RefundNotifyPayload;
use paygate_wxpay::notify::{Notification, RESOURCE_TYPE_ENCRYPTED};
use paygate_wxpay::sign::ResponseSignature;

use crate::config::ChannelKind;

/// The freshness window of a callback's `Wechatpay-Timestamp`, as every SDK applies it.
pub const CALLBACK_WINDOW_S: i64 = 300;
/// Callbacks larger than this are not read at all.
pub const CALLBACK_BODY_BYTES_MAX: usize = JSON_BODY_BYTES_MAX;
/// §3.1: WeChat Pay's deliberate bad-signature probes start with this.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// A verified, decrypted callback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // built once per callback and moved, never stored in bulk
pub enum CallbackEvent {
    /// `TRANSACTION.*`: the same object a query returns.
    Transaction(Transaction),
    /// `REFUND.SUCCESS` / `REFUND.ABNORMAL` / `REFUND.CLOSED`.
    Refund(RefundNotifyPayload),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// Signature missing/bad/stale/unknown serial (incl. `WECHATPAY/SIGNTEST/` probes). `hint` =
    /// the out_trade_no found by decrypting the body anyway (AEAD under the APIv3 key
    /// authenticates the content to whoever holds the key), so the caller can QUERY the channel
    /// instead of trusting it.
    #[error("callback not verified: {reason}")]
    Unverified {
        reason: String,
        hint: Option<String>,
    },
    /// Not a notification we can read (bad JSON, bad resource, decryption failure).
    #[error("callback malformed: {0}")]
    Malformed(String),
}

/// What a channel needs to read its callbacks; built once per channel.
pub(crate) struct CallbackReader {
    pub kind: ChannelKind,
    pub mchid: String,
    pub platform_keys: HashMap<String, VerifyingKey>,
    pub aes: AeadKey,
    pub sm4: AeadKey,
}

impl CallbackReader {
    pub fn parse(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<CallbackEvent, CallbackError> {
        if body.len() > CALLBACK_BODY_BYTES_MAX {
            return Err(CallbackError::Malformed(format!(
                "body of {} bytes exceeds {CALLBACK_BODY_BYTES_MAX}",
                body.len()
            )));
        }
        let verified = self.verify(header, body, now_unix);
        let opened = self.open(body);
        if let Err(reason) = verified {
            let hint = opened
                .ok()
                .and_then(|(_, plaintext)| out_trade_no_of(&plaintext));
            return Err(CallbackError::Unverified { reason, hint });
        }
        let (notification, plaintext) = opened?;
        self.event(&notification, &plaintext)
    }

    fn verify(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), String> {
        let sig = ResponseSignature::from_headers(header).map_err(|e| e.to_string())?;
        if sig.signature.starts_with(SIGNTEST_PREFIX) {
            return Err("WECHATPAY/SIGNTEST/ signature probe".into());
        }
        let key = self
            .platform_keys
            .get(&sig.serial)
            .ok_or_else(|| format!("unknown Wechatpay-Serial {}", sig.serial))?;
        sig.check_freshness(now_unix, CALLBACK_WINDOW_S)
            .map_err(|e| e.to_string())?;
        sig.verify(key, body).map_err(|e| e.to_string())
    }

    fn open(&self, body: &[u8]) -> Result<(Notification, Vec<u8>), CallbackError> {
        let n: Notification = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Malformed(format!("not a notification envelope: {e}")))?;
        if n.resource_type != RESOURCE_TYPE_ENCRYPTED {
            return Err(CallbackError::Malformed(format!(
                "resource_type {:?} is not {RESOURCE_TYPE_ENCRYPTED}",
                n.resource_type
            )));
        }
        let r = &n.resource;
        let key = match AeadAlgorithm::parse(&r.algorithm) {
            Some(AeadAlgorithm::Aes256Gcm) => &self.aes,
            Some(AeadAlgorithm::Sm4Gcm) => &self.sm4,
            None => {
                return Err(CallbackError::Malformed(format!(
                    "unknown resource algorithm {:?}",
                    r.algorithm
                )));
            }
        };
        let plaintext = key
            .decrypt(&r.nonce, r.associated_data.as_bytes(), &r.ciphertext)
            .map_err(|e| CallbackError::Malformed(format!("resource: {e}")))?;
        Ok((n, plaintext))
    }

    fn event(&self, n: &Notification, plaintext: &[u8]) -> Result<CallbackEvent, CallbackError> {
        let original = n.resource.original_type.as_str();
        let is = |kind: &str, prefix: &str| original == kind || n.event_type.starts_with(prefix);
        let malformed =
            |e: serde_json::Error| CallbackError::Malformed(format!("{}: {e}", n.event_type));
        let (event, mchid, sp_mchid) = if is("transaction", "TRANSACTION.") {
            let t: Transaction = serde_json::from_slice(plaintext).map_err(malformed)?;
            let ids = (t.mchid.clone(), t.sp_mchid.clone());
            (CallbackEvent::Transaction(t), ids.0, ids.1)
        } else if is("refund", "REFUND.") {
            let r: RefundNotifyPayload = serde_json::from_slice(plaintext).map_err(malformed)?;
            let ids = (r.mchid.clone(), r.sp_mchid.clone());
            (CallbackEvent::Refund(r), ids.0, ids.1)
        } else {
            return Err(CallbackError::Malformed(format!(
                "unsupported event {} ({original})",
                n.event_type
            )));
        };
        // Decrypted with our key, yet about another account: a configuration mix-up to surface,
        // not a payment to book.
        let owner = match self.kind {
            ChannelKind::WxDirect => mchid,
            ChannelKind::WxPartner => sp_mchid,
        };
        if owner.as_deref().is_some_and(|m| m != self.mchid) {
            return Err(CallbackError::Malformed(format!(
                "callback for merchant {}, this channel is {}",
                owner.unwrap_or_default(),
                self.mchid
            )));
        }
        Ok(event)
    }
}

fn out_trade_no_of(plaintext: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(plaintext).ok()?;
    v.get("out_trade_no")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paygate_wxpay::crypto::{SignatureScheme, SigningKey};
    use paygate_wxpay::sign::sign_response;

    const APIV3_KEY: &[u8] = b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
    const SERIAL: &str = "PUB_KEY_ID_0112345678";
    const NOW: i64 = 1_722_850_421;

    struct Fixture {
        reader: CallbackReader,
        platform: SigningKey,
    }

    fn fixture(kind: ChannelKind) -> Fixture {
        let platform = SigningKey::generate(SignatureScheme::Rsa2048Sha256).unwrap();
        let reader = CallbackReader {
            kind,
            mchid: "1230000109".into(),
            platform_keys: [(SERIAL.to_string(), platform.verifying_key())].into(),
            aes: AeadKey::new(AeadAlgorithm::Aes256Gcm, APIV3_KEY).unwrap(),
            sm4: AeadKey::new(AeadAlgorithm::Sm4Gcm, APIV3_KEY).unwrap(),
        };
        Fixture { reader, platform }
    }

    fn envelope(alg: AeadAlgorithm, event: &str, original: &str, plaintext: &str) -> Vec<u8> {
        let n = Notification::seal(
            alg,
            APIV3_KEY,
            event,
            "支付成功",
            original,
            original,
            plaintext.as_bytes(),
            "f6d3e392-7a32-5e7a-97d7-12a343048b1c".into(),
            "2024-08-05T17:33:41+08:00".into(),
        )
        .unwrap();
        serde_json::to_vec(&n).unwrap()
    }

    const TRANSACTION: &str = r#"{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"att_0001","transaction_id":"4200000001","trade_type":"NATIVE","trade_state":"SUCCESS","trade_state_desc":"支付成功","success_time":"2024-08-05T17:33:40+08:00","amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;

    fn headers(f: &Fixture, body: &[u8], ts: i64) -> Vec<(String, String)> {
        sign_response(
            &f.platform,
            SERIAL,
            body,
            ts,
            "d824f2e086d3c1df967785d13fcd22ef",
        )
        .unwrap()
        .headers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn parse(
        f: &Fixture,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<CallbackEvent, CallbackError> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        f.reader.parse(&get, body, NOW)
    }

    fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k == name {
                        value.to_string()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_signed_transaction_callback_decrypts_with_either_cipher() {
        let f = fixture(ChannelKind::WxDirect);
        for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Sm4Gcm] {
            let body = envelope(alg, "TRANSACTION.SUCCESS", "transaction", TRANSACTION);
            let event = parse(&f, &headers(&f, &body, NOW), &body).unwrap();
            let CallbackEvent::Transaction(t) = event else {
                panic!("not a transaction: {event:?}")
            };
            assert_eq!(t.out_trade_no, "att_0001");
            assert_eq!(t.amount.unwrap().total, 100);
        }
    }

    #[test]
    fn unverified_callbacks_carry_the_decrypted_out_trade_no() {
        let f = fixture(ChannelKind::WxDirect);
        let body = envelope(
            AeadAlgorithm::Aes256Gcm,
            "TRANSACTION.SUCCESS",
            "transaction",
            TRANSACTION,
        );
        let good = headers(&f, &body, NOW);
        let hinted = |r: Result<CallbackEvent, CallbackError>| match r {
            Err(CallbackError::Unverified { hint, .. }) => hint,
            other => panic!("expected Unverified, got {other:?}"),
        };
        // A signature probe, a stale timestamp, an unknown serial, a missing header.
        let sig = good
            .iter()
            .find(|(k, _)| k == "Wechatpay-Signature")
            .unwrap()
            .1
            .clone();
        let probe = with(
            &good,
            "Wechatpay-Signature",
            &format!("{SIGNTEST_PREFIX}{sig}"),
        );
        assert_eq!(
            hinted(parse(&f, &probe, &body)).as_deref(),
            Some("att_0001")
        );
        let stale = headers(&f, &body, NOW - CALLBACK_WINDOW_S - 1);
        assert_eq!(
            hinted(parse(&f, &stale, &body)).as_deref(),
            Some("att_0001")
        );
        let unknown = with(&good, "Wechatpay-Serial", "PUB_KEY_ID_999");
        assert_eq!(
            hinted(parse(&f, &unknown, &body)).as_deref(),
            Some("att_0001")
        );
        let missing: Vec<_> = good
            .iter()
            .filter(|(k, _)| k != "Wechatpay-Nonce")
            .cloned()
            .collect();
        assert_eq!(
            hinted(parse(&f, &missing, &body)).as_deref(),
            Some("att_0001")
        );
        // The envelope changed after signing: still decryptable, so still hinted.
        let mut tampered: serde_json::Value = serde_json::from_slice(&body).unwrap();
        tampered["summary"] = "支付失败".into();
        let tampered = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(
            hinted(parse(&f, &good, &tampered)).as_deref(),
            Some("att_0001")
        );
        // Garbage gives no hint.
        assert_eq!(hinted(parse(&f, &good, b"{}")), None);
    }

    #[test]
    fn verified_but_unreadable_callbacks_are_malformed() {
        let f = fixture(ChannelKind::WxDirect);
        let bad_json = b"not json".to_vec();
        assert!(matches!(
            parse(&f, &headers(&f, &bad_json, NOW), &bad_json),
            Err(CallbackError::Malformed(_))
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&envelope(
            AeadAlgorithm::Aes256Gcm,
            "TRANSACTION.SUCCESS",
            "transaction",
            TRANSACTION,
        ))
        .unwrap();
        v["resource"]["associated_data"] = "refund".into();
        let body = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            parse(&f, &headers(&f, &body, NOW), &body),
            Err(CallbackError::Malformed(_))
        ));
        let body = envelope(
            AeadAlgorithm::Aes256Gcm,
            "PROFITSHARING.SUCCESS",
            "profitsharing",
            "{}",
        );
        assert!(matches!(
            parse(&f, &headers(&f, &body, NOW), &body),
            Err(CallbackError::Malformed(_))
        ));
    }

    #[test]
    fn refunds_and_owner_checks() {
        let refund = r#"{"sp_mchid":"1230000109","sub_mchid":"1900000109","transaction_id":"4200000001","out_trade_no":"att_0001","refund_id":"5000","out_refund_no":"rf_1","refund_status":"SUCCESS","amount":{"total":100,"refund":40,"payer_total":100,"payer_refund":40}}"#;
        let partner = fixture(ChannelKind::WxPartner);
        let body = envelope(AeadAlgorithm::Aes256Gcm, "REFUND.SUCCESS", "refund", refund);
        let event = parse(&partner, &headers(&partner, &body, NOW), &body).unwrap();
        assert!(matches!(event, CallbackEvent::Refund(r) if r.amount.refund == 40));
        // A direct transaction for another mchid is not this channel's.
        let direct = fixture(ChannelKind::WxDirect);
        let other = TRANSACTION.replace("1230000109", "1999999999");
        let body = envelope(
            AeadAlgorithm::Aes256Gcm,
            "TRANSACTION.SUCCESS",
            "transaction",
            &other,
        );
        assert!(matches!(
            parse(&direct, &headers(&direct, &body, NOW), &body),
            Err(CallbackError::Malformed(m)) if m.contains("1999999999")
        ));
    }

    #[test]
    fn oversized_bodies_are_not_read() {
        let f = fixture(ChannelKind::WxDirect);
        let body = vec![b' '; CALLBACK_BODY_BYTES_MAX + 1];
        assert!(matches!(
            parse(&f, &[], &body),
            Err(CallbackError::Malformed(_))
        ));
    }
}
