//! Request and answer transforms, apart from transport: pure functions from paygate's view of a
//! call (a [`ChannelPrepay`], an out_trade_no and a sub-merchant) to the exact method, target and
//! body bytes WeChat Pay gets, and from its answers back. Same input, same bytes: WeChat Pay
//! refreshes a prepay only when the parameters are identical (reference §4.6).

use paygate_core::error::ApiError;
use paygate_wxpay::client::escape_path_segment;
use paygate_wxpay::models::payments::{
    Amount, CloseRequest, CodeUrlResponse, Detail, H5UrlResponse, PartnerCloseRequest,
    PartnerPayer, PartnerPrepayRequest, Payer, PrepayIdResponse, PrepayRequest, SceneInfo,
    SettleInfo, TradeType, Transaction,
};
use paygate_wxpay::models::refunds::{FundsAccount, Refund, RefundAmountRequest, RefundRequest};
use paygate_wxpay::rules::Validate;
use serde::{Deserialize, Serialize};

use crate::config::{ChannelConfig, ChannelKind};
use crate::error::ChannelError;

/// The sub-merchant a partner-mode call is for. Direct channels take none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubMerchant {
    pub sub_mchid: Option<String>,
    pub sub_appid: Option<String>,
}

/// One prepay at the channel: one attempt of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelPrepay {
    pub trade_type: TradeType,
    /// The attempt id: unique per attempt, the same on every re-send of that attempt.
    pub out_trade_no: String,
    pub description: String,
    pub attach: Option<String>,
    pub total_fen: i64,
    pub currency: String,
    /// RFC 3339.
    pub time_expire: Option<String>,
    /// The payer's openid: under `appid` (direct), under `sub_appid` when the sub-merchant has one
    /// (partner, sent as `sub_openid`), else under the `sp_appid` (sent as `sp_openid`).
    pub payer_openid: Option<String>,
    pub scene_info: Option<SceneInfo>,
    pub goods_tag: Option<String>,
    pub detail: Option<Detail>,
    pub profit_sharing: bool,
    pub sub: SubMerchant,
}

/// What the payer needs to pay: by product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepayCredential {
    /// JSAPI / mini-program / APP: sign it into pay parameters.
    PrepayId(String),
    /// Native: render as a QR code.
    CodeUrl(String),
    /// H5: redirect the browser to it.
    H5Url(String),
}

/// One request, ready for the signing client: everything WeChat Pay will see except the
/// `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireRequest {
    pub method: &'static str,
    /// Raw request target (`/v3/...?...`), already percent-encoded: signed as is.
    pub target: String,
    pub body: Vec<u8>,
}

fn serialize<T: Serialize>(value: &T) -> Result<Vec<u8>, ChannelError> {
    serde_json::to_vec(value).map_err(|e| ChannelError::config(format!("serializing: {e}")))
}

/// Direct channels must not be handed a sub-merchant: it would silently be dropped and the
/// money would land on the direct merchant whatever the caller meant.
fn check_direct_sub(sub: &SubMerchant) -> Result<(), ChannelError> {
    if sub.sub_mchid.is_some() || sub.sub_appid.is_some() {
        return Err(ChannelError::local(ApiError::param(
            "/sub_mchid",
            "a direct channel takes no sub-merchant",
        )));
    }
    Ok(())
}

/// The sub_mchid a partner call needs.
fn partner_sub_mchid(sub: &SubMerchant) -> Result<&str, ChannelError> {
    sub.sub_mchid.as_deref().ok_or_else(|| {
        ChannelError::local(ApiError::param(
            "/sub_mchid",
            "is required for a partner channel",
        ))
    })
}

fn product(trade_type: TradeType) -> Result<&'static str, ChannelError> {
    trade_type.product().ok_or_else(|| {
        ChannelError::local(ApiError::param(
            "/trade_type",
            format!("{} is not a prepay product", trade_type.as_str()),
        ))
    })
}

fn settle_info(p: &ChannelPrepay) -> Option<SettleInfo> {
    // Omitted when false, so the body stays minimal (and identical across re-sends).
    p.profit_sharing.then_some(SettleInfo {
        profit_sharing: Some(true),
    })
}

/// The direct prepay body model.
pub fn direct_prepay_body(config: &ChannelConfig, p: &ChannelPrepay) -> PrepayRequest {
    PrepayRequest {
        appid: config.appid.clone(),
        mchid: config.mchid.clone(),
        description: p.description.clone(),
        out_trade_no: p.out_trade_no.clone(),
        time_expire: p.time_expire.clone(),
        attach: p.attach.clone(),
        notify_url: config.notify_url.clone(),
        goods_tag: p.goods_tag.clone(),
        limit_pay: None,
        support_fapiao: None,
        amount: Amount {
            total: p.total_fen,
            currency: Some(p.currency.clone()),
        },
        payer: p.payer_openid.clone().map(|openid| Payer { openid }),
        detail: p.detail.clone(),
        scene_info: p.scene_info.clone(),
        settle_info: settle_info(p),
    }
}

/// The partner prepay body model; `sub_mchid` comes from `p.sub`.
pub fn partner_prepay_body(
    config: &ChannelConfig,
    p: &ChannelPrepay,
    sub_mchid: &str,
) -> PartnerPrepayRequest {
    let payer = p.payer_openid.clone().map(|openid| {
        // An openid is per appid: under the sub-merchant's own appid it is a sub_openid.
        if p.sub.sub_appid.is_some() {
            PartnerPayer {
                sp_openid: None,
                sub_openid: Some(openid),
            }
        } else {
            PartnerPayer {
                sp_openid: Some(openid),
                sub_openid: None,
            }
        }
    });
    PartnerPrepayRequest {
        sp_appid: config.appid.clone(),
        sp_mchid: config.mchid.clone(),
        sub_appid: p.sub.sub_appid.clone(),
        sub_mchid: sub_mchid.to_string(),
        description: p.description.clone(),
        out_trade_no: p.out_trade_no.clone(),
        time_expire: p.time_expire.clone(),
        attach: p.attach.clone(),
        notify_url: config.notify_url.clone(),
        goods_tag: p.goods_tag.clone(),
        limit_pay: None,
        support_fapiao: None,
        amount: Amount {
            total: p.total_fen,
            currency: Some(p.currency.clone()),
        },
        payer,
        detail: p.detail.clone(),
        scene_info: p.scene_info.clone(),
        settle_info: settle_info(p),
    }
}

/// `POST /v3/pay[/partner]/transactions/{product}` with the body checked against the same field
/// rules WeChat Pay applies, so a request that cannot succeed is refused without a round trip.
pub fn prepay_request(
    config: &ChannelConfig,
    p: &ChannelPrepay,
) -> Result<WireRequest, ChannelError> {
    let product = product(p.trade_type)?;
    match config.kind {
        ChannelKind::WxDirect => {
            check_direct_sub(&p.sub)?;
            let body = direct_prepay_body(config, p);
            body.validate_for(p.trade_type)
                .map_err(ChannelError::local)?;
            Ok(WireRequest {
                method: "POST",
                target: format!("/v3/pay/transactions/{product}"),
                body: serialize(&body)?,
            })
        }
        ChannelKind::WxPartner => {
            let body = partner_prepay_body(config, p, partner_sub_mchid(&p.sub)?);
            body.validate_for(p.trade_type)
                .map_err(ChannelError::local)?;
            Ok(WireRequest {
                method: "POST",
                target: format!("/v3/pay/partner/transactions/{product}"),
                body: serialize(&body)?,
            })
        }
    }
}

fn check_out_trade_no(out_trade_no: &str) -> Result<(), ChannelError> {
    paygate_wxpay::rules::check_out_trade_no("/out_trade_no", out_trade_no)
        .map_err(ChannelError::local)
}

/// `GET …/out-trade-no/{no}?mchid=…` (direct) or `?sp_mchid=…&sub_mchid=…` (partner).
pub fn query_request(
    config: &ChannelConfig,
    out_trade_no: &str,
    sub: &SubMerchant,
) -> Result<WireRequest, ChannelError> {
    check_out_trade_no(out_trade_no)?;
    let no = escape_path_segment(out_trade_no);
    let target = match config.kind {
        ChannelKind::WxDirect => {
            check_direct_sub(sub)?;
            format!(
                "/v3/pay/transactions/out-trade-no/{no}?mchid={}",
                escape_path_segment(&config.mchid)
            )
        }
        ChannelKind::WxPartner => format!(
            "/v3/pay/partner/transactions/out-trade-no/{no}?sp_mchid={}&sub_mchid={}",
            escape_path_segment(&config.mchid),
            escape_path_segment(partner_sub_mchid(sub)?)
        ),
    };
    Ok(WireRequest {
        method: "GET",
        target,
        body: Vec::new(),
    })
}

/// `POST …/out-trade-no/{no}/close` with `{"mchid"}` or `{"sp_mchid","sub_mchid"}`.
pub fn close_request(
    config: &ChannelConfig,
    out_trade_no: &str,
    sub: &SubMerchant,
) -> Result<WireRequest, ChannelError> {
    check_out_trade_no(out_trade_no)?;
    let no = escape_path_segment(out_trade_no);
    match config.kind {
        ChannelKind::WxDirect => {
            check_direct_sub(sub)?;
            Ok(WireRequest {
                method: "POST",
                target: format!("/v3/pay/transactions/out-trade-no/{no}/close"),
                body: serialize(&CloseRequest {
                    mchid: config.mchid.clone(),
                })?,
            })
        }
        ChannelKind::WxPartner => Ok(WireRequest {
            method: "POST",
            target: format!("/v3/pay/partner/transactions/out-trade-no/{no}/close"),
            body: serialize(&PartnerCloseRequest {
                sp_mchid: config.mchid.clone(),
                sub_mchid: partner_sub_mchid(sub)?.to_string(),
            })?,
        }),
    }
}

/// Reads a verified 200 prepay answer. Unreadable means unknown: the order may well exist.
pub fn prepay_credential(
    trade_type: TradeType,
    body: &[u8],
) -> Result<PrepayCredential, ChannelError> {
    let unreadable =
        |e: serde_json::Error| ChannelError::unknown(format!("prepay answer unreadable: {e}"));
    match trade_type {
        TradeType::Native => serde_json::from_slice::<CodeUrlResponse>(body)
            .map(|r| PrepayCredential::CodeUrl(r.code_url))
            .map_err(unreadable),
        TradeType::Mweb => serde_json::from_slice::<H5UrlResponse>(body)
            .map(|r| PrepayCredential::H5Url(r.h5_url))
            .map_err(unreadable),
        _ => serde_json::from_slice::<PrepayIdResponse>(body)
            .map(|r| PrepayCredential::PrepayId(r.prepay_id))
            .map_err(unreadable),
    }
}

/// Reads a verified query answer and checks it is about the order asked for: a mix-up here
/// would book someone else's payment.
pub fn query_answer(
    config: &ChannelConfig,
    out_trade_no: &str,
    sub: &SubMerchant,
    body: &[u8],
) -> Result<Transaction, ChannelError> {
    let t: Transaction = serde_json::from_slice(body)
        .map_err(|e| ChannelError::unknown(format!("query answer unreadable: {e}")))?;
    let owner_ok = match config.kind {
        ChannelKind::WxDirect => t.mchid.as_deref().is_none_or(|m| m == config.mchid),
        ChannelKind::WxPartner => {
            t.sp_mchid.as_deref().is_none_or(|m| m == config.mchid)
                && t.sub_mchid
                    .as_deref()
                    .is_none_or(|m| Some(m) == sub.sub_mchid.as_deref())
        }
    };
    if t.out_trade_no != out_trade_no || !owner_ok {
        return Err(ChannelError::unknown(format!(
            "query for {out_trade_no} answered about {} of another merchant or order",
            t.out_trade_no
        )));
    }
    Ok(t)
}

/// One refund at the channel: one gateway refund, made on the attempt that was paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRefund {
    /// The gateway's refund id, sent as out_refund_no: unique per gateway refund, the same on
    /// every re-send of it, so the channel refunds it once (§4.7 "同一退款单号多次请求只退一笔").
    pub out_refund_no: String,
    /// The paid attempt's id: its out_trade_no at the channel.
    pub out_trade_no: String,
    /// The channel's transaction id of that payment, when known (it then names the order).
    pub transaction_id: Option<String>,
    pub reason: Option<String>,
    pub amount_fen: i64,
    /// The order's total.
    pub total_fen: i64,
    pub currency: String,
    pub funds_account: Option<FundsAccount>,
    pub sub: SubMerchant,
}

/// The refund body model: one path for both modes, `sub_mchid` only at a partner channel.
pub fn refund_body(
    config: &ChannelConfig,
    r: &ChannelRefund,
    sub_mchid: Option<&str>,
) -> RefundRequest {
    RefundRequest {
        sub_mchid: sub_mchid.map(str::to_string),
        transaction_id: r.transaction_id.clone(),
        out_trade_no: Some(r.out_trade_no.clone()),
        out_refund_no: r.out_refund_no.clone(),
        reason: r.reason.clone(),
        // The channel's callbacks come to the gateway, which notifies its merchant itself.
        notify_url: Some(config.notify_url.clone()),
        funds_account: r.funds_account,
        amount: RefundAmountRequest {
            refund: r.amount_fen,
            from: None,
            total: r.total_fen,
            currency: r.currency.clone(),
        },
        goods_detail: None,
    }
}

/// `POST /v3/refund/domestic/refunds`, checked against WeChat Pay's own field rules first.
pub fn refund_request(
    config: &ChannelConfig,
    r: &ChannelRefund,
) -> Result<WireRequest, ChannelError> {
    let sub_mchid = match config.kind {
        ChannelKind::WxDirect => {
            check_direct_sub(&r.sub)?;
            None
        }
        ChannelKind::WxPartner => Some(partner_sub_mchid(&r.sub)?),
    };
    let body = refund_body(config, r, sub_mchid);
    body.validate().map_err(ChannelError::local)?;
    Ok(WireRequest {
        method: "POST",
        target: "/v3/refund/domestic/refunds".into(),
        body: serialize(&body)?,
    })
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}` (partner: `?sub_mchid=`).
pub fn refund_query_request(
    config: &ChannelConfig,
    out_refund_no: &str,
    sub: &SubMerchant,
) -> Result<WireRequest, ChannelError> {
    paygate_wxpay::rules::check_out_request_no("/out_refund_no", out_refund_no)
        .map_err(ChannelError::local)?;
    let no = escape_path_segment(out_refund_no);
    let target = match config.kind {
        ChannelKind::WxDirect => {
            check_direct_sub(sub)?;
            format!("/v3/refund/domestic/refunds/{no}")
        }
        ChannelKind::WxPartner => format!(
            "/v3/refund/domestic/refunds/{no}?sub_mchid={}",
            escape_path_segment(partner_sub_mchid(sub)?)
        ),
    };
    Ok(WireRequest {
        method: "GET",
        target,
        body: Vec::new(),
    })
}

/// Reads a verified refund answer (create or query) and checks it is about the refund asked
/// for: an answer about another one would settle the wrong refund. Unreadable means unknown.
pub fn refund_answer(out_refund_no: &str, body: &[u8]) -> Result<Refund, ChannelError> {
    let r: Refund = serde_json::from_slice(body)
        .map_err(|e| ChannelError::unknown(format!("refund answer unreadable: {e}")))?;
    if r.out_refund_no != out_refund_no {
        return Err(ChannelError::unknown(format!(
            "refund {out_refund_no} answered about {}",
            r.out_refund_no
        )));
    }
    Ok(r)
}

/// The sandbox payer's request body (`POST sandbox/v1/pay`).
pub fn sandbox_pay_body(
    config: &ChannelConfig,
    out_trade_no: &str,
    sub: &SubMerchant,
    success: bool,
    openid: Option<&str>,
) -> Result<Vec<u8>, ChannelError> {
    let mut body = serde_json::Map::new();
    match config.kind {
        ChannelKind::WxDirect => {
            check_direct_sub(sub)?;
            body.insert("mchid".into(), config.mchid.clone().into());
        }
        ChannelKind::WxPartner => {
            body.insert("sp_mchid".into(), config.mchid.clone().into());
            body.insert("sub_mchid".into(), partner_sub_mchid(sub)?.into());
        }
    }
    body.insert("out_trade_no".into(), out_trade_no.into());
    let result = if success { "SUCCESS" } else { "PAYERROR" };
    body.insert("result".into(), result.into());
    if let Some(openid) = openid {
        body.insert("openid".into(), openid.into());
    }
    serialize(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paygate_wxpay::models::payments::{H5Info, H5Type};
    use serde_json::{Value, json};

    fn config(kind: ChannelKind) -> ChannelConfig {
        ChannelConfig {
            id: "wx".into(),
            kind,
            base_url: "http://127.0.0.1:1/".into(),
            mchid: "1230000109".into(),
            appid: "wxd678efh567hg6787".into(),
            serial_no: "ABC".into(),
            private_key_pem: String::new(),
            apiv3_key: "k".repeat(32),
            platform_public_key_id: "PUB_KEY_ID_01".into(),
            platform_public_key_pem: String::new(),
            platform_cert_pem: None,
            timeout_ms: 10_000,
            notify_url: "https://gw.example.com/callbacks/wxpay/wx".into(),
            sandbox: false,
        }
    }

    fn prepay(trade_type: TradeType) -> ChannelPrepay {
        ChannelPrepay {
            trade_type,
            out_trade_no: "att_0001|x*y".into(),
            description: "Image形象店-深圳腾大-QQ公仔".into(),
            attach: Some("order=42".into()),
            total_fen: 100,
            currency: "CNY".into(),
            time_expire: Some("2030-06-08T10:34:56+08:00".into()),
            payer_openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
            scene_info: None,
            goods_tag: None,
            detail: None,
            profit_sharing: false,
            sub: SubMerchant::default(),
        }
    }

    fn body(r: &WireRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn partner_sub(sub_appid: Option<&str>) -> SubMerchant {
        SubMerchant {
            sub_mchid: Some("1900000109".into()),
            sub_appid: sub_appid.map(str::to_string),
        }
    }

    #[test]
    fn direct_jsapi_body_is_the_documented_shape() {
        let r = prepay_request(&config(ChannelKind::WxDirect), &prepay(TradeType::Jsapi)).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/v3/pay/transactions/jsapi");
        assert_eq!(
            body(&r),
            json!({"appid":"wxd678efh567hg6787","mchid":"1230000109",
                "description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"att_0001|x*y",
                "time_expire":"2030-06-08T10:34:56+08:00","attach":"order=42",
                "notify_url":"https://gw.example.com/callbacks/wxpay/wx",
                "amount":{"total":100,"currency":"CNY"},
                "payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}})
        );
    }

    #[test]
    fn partner_payer_is_sub_openid_only_under_a_sub_appid() {
        let c = config(ChannelKind::WxPartner);
        let mut p = prepay(TradeType::Jsapi);
        p.sub = partner_sub(None);
        let r = prepay_request(&c, &p).unwrap();
        assert_eq!(r.target, "/v3/pay/partner/transactions/jsapi");
        let v = body(&r);
        assert_eq!(v["sp_appid"], "wxd678efh567hg6787");
        assert_eq!(v["sp_mchid"], "1230000109");
        assert_eq!(v["sub_mchid"], "1900000109");
        assert!(
            v.get("sub_appid").is_none() && v.get("appid").is_none() && v.get("mchid").is_none()
        );
        assert_eq!(
            v["payer"],
            json!({"sp_openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"})
        );

        p.sub = partner_sub(Some("wx8888888888888888"));
        let v = body(&prepay_request(&c, &p).unwrap());
        assert_eq!(v["sub_appid"], "wx8888888888888888");
        assert_eq!(
            v["payer"],
            json!({"sub_openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"})
        );
    }

    #[test]
    fn the_same_prepay_gives_the_same_bytes() {
        for kind in [ChannelKind::WxDirect, ChannelKind::WxPartner] {
            let c = config(kind);
            let mut p = prepay(TradeType::Mweb);
            p.profit_sharing = true;
            p.scene_info = Some(SceneInfo {
                payer_client_ip: "14.23.150.211".into(),
                device_id: None,
                store_info: None,
                h5_info: Some(H5Info {
                    r#type: H5Type::Ios,
                    app_name: None,
                    app_url: None,
                    bundle_id: None,
                    package_name: None,
                }),
            });
            if kind == ChannelKind::WxPartner {
                p.sub = partner_sub(Some("wx8888888888888888"));
            }
            let first = prepay_request(&c, &p).unwrap();
            for _ in 0..20 {
                assert_eq!(prepay_request(&c, &p.clone()).unwrap(), first);
            }
            assert_eq!(body(&first)["settle_info"], json!({"profit_sharing": true}));
        }
    }

    #[test]
    fn products_map_to_paths_and_payment_code_types_are_refused() {
        let c = config(ChannelKind::WxDirect);
        for (t, path) in [
            (TradeType::Jsapi, "jsapi"),
            (TradeType::App, "app"),
            (TradeType::Native, "native"),
        ] {
            let r = prepay_request(&c, &prepay(t)).unwrap();
            assert_eq!(r.target, format!("/v3/pay/transactions/{path}"));
        }
        let e = prepay_request(&c, &prepay(TradeType::Micropay)).unwrap_err();
        assert_eq!(e.code(), Some("PARAM_ERROR"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn bad_requests_are_refused_before_sending() {
        let c = config(ChannelKind::WxDirect);
        let mut p = prepay(TradeType::Jsapi);
        p.payer_openid = None;
        assert_eq!(
            prepay_request(&c, &p).unwrap_err().code(),
            Some("PARAM_ERROR")
        );
        let mut p = prepay(TradeType::Native);
        p.total_fen = 0;
        assert_eq!(
            prepay_request(&c, &p).unwrap_err().code(),
            Some("PARAM_ERROR")
        );
        // H5 without scene_info.h5_info.
        assert_eq!(
            prepay_request(&c, &prepay(TradeType::Mweb))
                .unwrap_err()
                .code(),
            Some("PARAM_ERROR")
        );
        let mut p = prepay(TradeType::Native);
        p.sub = partner_sub(None);
        assert_eq!(
            prepay_request(&c, &p).unwrap_err().code(),
            Some("PARAM_ERROR")
        );
        let partner = config(ChannelKind::WxPartner);
        assert_eq!(
            prepay_request(&partner, &prepay(TradeType::Native))
                .unwrap_err()
                .code(),
            Some("PARAM_ERROR")
        );
    }

    #[test]
    fn query_and_close_targets_escape_the_order_number() {
        let direct = config(ChannelKind::WxDirect);
        let q = query_request(&direct, "att_0001|x*y", &SubMerchant::default()).unwrap();
        assert_eq!(q.method, "GET");
        assert_eq!(
            q.target,
            "/v3/pay/transactions/out-trade-no/att_0001%7Cx%2Ay?mchid=1230000109"
        );
        assert!(q.body.is_empty());
        let c = close_request(&direct, "att_0001", &SubMerchant::default()).unwrap();
        assert_eq!(c.target, "/v3/pay/transactions/out-trade-no/att_0001/close");
        assert_eq!(c.body, br#"{"mchid":"1230000109"}"#);

        let partner = config(ChannelKind::WxPartner);
        let sub = partner_sub(None);
        let q = query_request(&partner, "att_0001", &sub).unwrap();
        assert_eq!(
            q.target,
            "/v3/pay/partner/transactions/out-trade-no/att_0001?sp_mchid=1230000109&sub_mchid=1900000109"
        );
        let c = close_request(&partner, "att_0001", &sub).unwrap();
        assert_eq!(
            c.target,
            "/v3/pay/partner/transactions/out-trade-no/att_0001/close"
        );
        assert_eq!(
            c.body,
            br#"{"sp_mchid":"1230000109","sub_mchid":"1900000109"}"#
        );
        assert!(query_request(&partner, "att_0001", &SubMerchant::default()).is_err());
        assert!(query_request(&direct, "bad/no", &SubMerchant::default()).is_err());
    }

    #[test]
    fn credentials_by_product_and_unreadable_answers_are_unknown() {
        assert_eq!(
            prepay_credential(TradeType::App, br#"{"prepay_id":"wx1"}"#).unwrap(),
            PrepayCredential::PrepayId("wx1".into())
        );
        assert_eq!(
            prepay_credential(TradeType::Native, br#"{"code_url":"weixin://x"}"#).unwrap(),
            PrepayCredential::CodeUrl("weixin://x".into())
        );
        assert_eq!(
            prepay_credential(TradeType::Mweb, br#"{"h5_url":"https://h5"}"#).unwrap(),
            PrepayCredential::H5Url("https://h5".into())
        );
        assert!(
            prepay_credential(TradeType::Jsapi, b"{}")
                .unwrap_err()
                .is_unknown()
        );
    }

    #[test]
    fn a_query_answer_about_another_order_is_not_trusted() {
        let c = config(ChannelKind::WxDirect);
        let answer = br#"{"mchid":"1230000109","out_trade_no":"att_0001","trade_state":"NOTPAY"}"#;
        let none = SubMerchant::default();
        assert!(query_answer(&c, "att_0001", &none, answer).is_ok());
        assert!(
            query_answer(&c, "att_0002", &none, answer)
                .unwrap_err()
                .is_unknown()
        );
        let other = br#"{"mchid":"999","out_trade_no":"att_0001","trade_state":"NOTPAY"}"#;
        assert!(query_answer(&c, "att_0001", &none, other).is_err());
        let p = config(ChannelKind::WxPartner);
        let answer = br#"{"sp_mchid":"1230000109","sub_mchid":"1900000109","out_trade_no":"att_0001","trade_state":"NOTPAY"}"#;
        assert!(query_answer(&p, "att_0001", &partner_sub(None), answer).is_ok());
        let sub2 = SubMerchant {
            sub_mchid: Some("1900000110".into()),
            sub_appid: None,
        };
        assert!(query_answer(&p, "att_0001", &sub2, answer).is_err());
    }

    #[test]
    fn sandbox_pay_bodies() {
        let d = sandbox_pay_body(
            &config(ChannelKind::WxDirect),
            "att_0001",
            &SubMerchant::default(),
            true,
            None,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&d).unwrap(),
            json!({"mchid":"1230000109","out_trade_no":"att_0001","result":"SUCCESS"})
        );
        let p = sandbox_pay_body(
            &config(ChannelKind::WxPartner),
            "att_0001",
            &partner_sub(None),
            false,
            Some("o1"),
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&p).unwrap(),
            json!({"sp_mchid":"1230000109","sub_mchid":"1900000109","out_trade_no":"att_0001","result":"PAYERROR","openid":"o1"})
        );
    }

    fn channel_refund(sub: SubMerchant) -> ChannelRefund {
        ChannelRefund {
            out_refund_no: "50000020261130000000000000001".into(),
            out_trade_no: "att_0001".into(),
            transaction_id: Some("4200000001".into()),
            reason: Some("商品已售完".into()),
            amount_fen: 40,
            total_fen: 100,
            currency: "CNY".into(),
            funds_account: None,
            sub,
        }
    }

    #[test]
    fn refund_bodies_name_the_paid_attempt_and_the_gateways_callback() {
        let direct = config(ChannelKind::WxDirect);
        let r = refund_request(&direct, &channel_refund(SubMerchant::default())).unwrap();
        assert_eq!(
            (r.method, r.target.as_str()),
            ("POST", "/v3/refund/domestic/refunds")
        );
        assert_eq!(
            body(&r),
            json!({"transaction_id":"4200000001","out_trade_no":"att_0001",
                "out_refund_no":"50000020261130000000000000001","reason":"商品已售完",
                "notify_url":"https://gw.example.com/callbacks/wxpay/wx",
                "amount":{"refund":40,"total":100,"currency":"CNY"}})
        );
        // The same refund gives the same bytes (a re-send is the same refund).
        assert_eq!(
            refund_request(&direct, &channel_refund(SubMerchant::default())).unwrap(),
            r
        );
        let partner = config(ChannelKind::WxPartner);
        let p = refund_request(&partner, &channel_refund(partner_sub(None))).unwrap();
        assert_eq!(body(&p)["sub_mchid"], "1900000109");
        // Sub-merchant mistakes and bad amounts never leave the gateway.
        assert!(refund_request(&partner, &channel_refund(SubMerchant::default())).is_err());
        assert!(refund_request(&direct, &channel_refund(partner_sub(None))).is_err());
        let mut too_much = channel_refund(SubMerchant::default());
        too_much.amount_fen = 101;
        let e = refund_request(&direct, &too_much).unwrap_err();
        assert_eq!(e.code(), Some("PARAM_ERROR"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn refund_queries_escape_and_answers_must_be_about_the_refund_asked() {
        let direct = config(ChannelKind::WxDirect);
        let q = refund_query_request(&direct, "rf|1", &SubMerchant::default()).unwrap();
        assert_eq!(
            (q.method, q.target.as_str()),
            ("GET", "/v3/refund/domestic/refunds/rf%7C1")
        );
        let partner = config(ChannelKind::WxPartner);
        let q = refund_query_request(&partner, "rf1", &partner_sub(None)).unwrap();
        assert_eq!(
            q.target,
            "/v3/refund/domestic/refunds/rf1?sub_mchid=1900000109"
        );
        assert!(refund_query_request(&direct, "rf/1", &SubMerchant::default()).is_err());
        let answer = r#"{"refund_id":"50300","out_refund_no":"rf1","transaction_id":"4200000001",
            "out_trade_no":"att_0001","channel":"ORIGINAL","user_received_account":"支付用户零钱",
            "create_time":"2026-11-30T10:00:00+08:00","status":"PROCESSING","funds_account":"UNSETTLED",
            "amount":{"total":100,"refund":40,"payer_total":100,"payer_refund":40,"settlement_refund":40,
                      "settlement_total":100,"discount_refund":0,"currency":"CNY"}}"#
            .as_bytes();
        let r = refund_answer("rf1", answer).unwrap();
        assert_eq!(r.amount.refund, 40);
        assert!(refund_answer("rf2", answer).unwrap_err().is_unknown());
        assert!(refund_answer("rf1", b"{}").unwrap_err().is_unknown());
    }

    proptest::proptest! {
        #[test]
        fn prepay_bodies_are_deterministic_and_carry_exactly_the_input(
            description in "[a-zA-Z0-9 公仔]{1,40}",
            attach in proptest::option::of("[a-z0-9=&]{0,40}"),
            total_fen in 1i64..=10_000_000_000,
            openid in proptest::option::of("o[a-zA-Z0-9_-]{10,40}"),
            profit_sharing: bool,
            partner: bool,
            sub_appid: bool,
        ) {
            let kind = if partner { ChannelKind::WxPartner } else { ChannelKind::WxDirect };
            let c = config(kind);
            let mut p = prepay(TradeType::Native);
            p.description = description;
            p.attach = attach;
            p.total_fen = total_fen;
            p.payer_openid = openid.clone();
            p.profit_sharing = profit_sharing;
            if partner {
                p.sub = partner_sub(sub_appid.then_some("wx8888888888888888"));
            }
            let r = prepay_request(&c, &p).unwrap();
            proptest::prop_assert_eq!(&prepay_request(&c, &p.clone()).unwrap(), &r);
            if partner {
                let back: PartnerPrepayRequest = serde_json::from_slice(&r.body).unwrap();
                proptest::prop_assert_eq!(back, partner_prepay_body(&c, &p, "1900000109"));
            } else {
                let back: PrepayRequest = serde_json::from_slice(&r.body).unwrap();
                proptest::prop_assert_eq!(&back.amount.total, &total_fen);
                proptest::prop_assert_eq!(back.payer.map(|x| x.openid), openid);
                proptest::prop_assert_eq!(back.settle_info.is_some(), profit_sharing);
            }
        }
    }
}
