//! Client-side payment parameters (reference §5): what a merchant back end hands to the JSAPI /
//! mini-program `requestPayment` call and to the APP SDK, signed with the merchant key over
//! `appid\ntimestamp\nnonce\npackage\n`.

use serde::Serialize;

use crate::crypto::{CryptoError, SignatureScheme, SigningKey};

/// Parameters of `wx.requestPayment` / `WeixinJSBridge.invoke('getBrandWCPayRequest')`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JsapiPayParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: String,
    pub pay_sign: String,
}

/// The signed message: four lines, each ending in `\n`.
pub fn pay_message(appid: &str, timestamp: &str, nonce: &str, package: &str) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(appid.len() + timestamp.len() + nonce.len() + package.len() + 4);
    for line in [appid, timestamp, nonce, package] {
        message.extend_from_slice(line.as_bytes());
        message.push(b'\n');
    }
    message
}

/// JSAPI / mini-program parameters; `package` is `prepay_id=…`, `signType` `RSA` (or `SM2`).
pub fn jsapi_pay_params(
    key: &SigningKey,
    appid: &str,
    prepay_id: &str,
    timestamp: i64,
    nonce: &str,
) -> Result<JsapiPayParams, CryptoError> {
    let time_stamp = timestamp.to_string();
    let package = format!("prepay_id={prepay_id}");
    let pay_sign = key.sign_base64(&pay_message(appid, &time_stamp, nonce, &package))?;
    Ok(JsapiPayParams {
        app_id: appid.to_string(),
        time_stamp,
        nonce_str: nonce.to_string(),
        package,
        sign_type: sign_type(key).to_string(),
        pay_sign,
    })
}

/// Parameters of the APP SDK's `PayReq`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct AppPayParams {
    pub appid: String,
    pub partnerid: String,
    pub prepayid: String,
    pub package: String,
    pub noncestr: String,
    pub timestamp: String,
    pub sign: String,
}

/// APP parameters: the signed 4th line is the bare prepay_id; `package` is `Sign=WXPay`.
pub fn app_pay_params(
    key: &SigningKey,
    appid: &str,
    partnerid: &str,
    prepay_id: &str,
    timestamp: i64,
    nonce: &str,
) -> Result<AppPayParams, CryptoError> {
    let timestamp = timestamp.to_string();
    let sign = key.sign_base64(&pay_message(appid, &timestamp, nonce, prepay_id))?;
    Ok(AppPayParams {
        appid: appid.to_string(),
        partnerid: partnerid.to_string(),
        prepayid: prepay_id.to_string(),
        package: "Sign=WXPay".to_string(),
        noncestr: nonce.to_string(),
        timestamp,
        sign,
    })
}

fn sign_type(key: &SigningKey) -> &'static str {
    match key.scheme() {
        SignatureScheme::Rsa2048Sha256 => "RSA",
        SignatureScheme::Sm2WithSm3 => "SM2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsapi_params_serialise_in_camel_case_and_verify() {
        let key = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        let p = jsapi_pay_params(&key, "wx1", "wx2014", 1_554_208_460, "abc").unwrap();
        assert_eq!(p.sign_type, "SM2");
        let json = serde_json::to_value(&p).unwrap();
        for k in [
            "appId",
            "timeStamp",
            "nonceStr",
            "package",
            "signType",
            "paySign",
        ] {
            assert!(json.get(k).is_some(), "{k}");
        }
        assert_eq!(json["package"], "prepay_id=wx2014");
        let message = pay_message("wx1", "1554208460", "abc", "prepay_id=wx2014");
        key.verifying_key()
            .verify_base64(&message, &p.pay_sign)
            .unwrap();
    }

    #[test]
    fn app_params_sign_the_bare_prepay_id() {
        let key = SigningKey::generate(SignatureScheme::Sm2WithSm3).unwrap();
        let p = app_pay_params(&key, "wx1", "1900000109", "wx2014", 1_554_208_460, "abc").unwrap();
        assert_eq!(p.package, "Sign=WXPay");
        let message = pay_message("wx1", "1554208460", "abc", "wx2014");
        key.verifying_key()
            .verify_base64(&message, &p.sign)
            .unwrap();
    }
}
