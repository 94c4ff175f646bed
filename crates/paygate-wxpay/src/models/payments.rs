//! Basic payment models (reference §4.1–§4.5): direct and partner prepay requests, the prepay
//! responses, the Transaction object returned by query and sent in payment callbacks, close
//! requests and the query-string parameters of order queries.

use paygate_core::error::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::common::{cny, ptr};
use crate::rules::{
    Validate, check_amount, check_currency, check_id, check_ip, check_non_negative,
    check_notify_url, check_opt_text, check_out_trade_no, check_rfc3339, check_text, require,
};

/// Bounds of §4.1/§8, in characters.
pub const APPID_CHARS_MAX: usize = 32;
pub const MCHID_CHARS_MAX: usize = 32;
pub const DESCRIPTION_CHARS_MAX: usize = 127;
pub const ATTACH_CHARS_MAX: usize = 128;
pub const GOODS_TAG_CHARS_MAX: usize = 32;
pub const OPENID_CHARS_MAX: usize = 128;
pub const TRANSACTION_ID_CHARS_MAX: usize = 32;
pub const DEVICE_ID_CHARS_MAX: usize = 32;
/// `limit_pay` has four documented values, so more entries can only be repeats.
pub const LIMIT_PAY_COUNT_MAX: usize = 4;
/// The documented `limit_pay` values.
pub const LIMIT_PAY_VALUES: [&str; 4] = ["no_balance", "no_credit", "no_debit", "balance_only"];

/// How the user pays (`trade_type`). H5 is `MWEB` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TradeType {
    Jsapi,
    Native,
    App,
    Mweb,
    Micropay,
    Facepay,
}

impl TradeType {
    pub fn as_str(&self) -> &'static str {
        match self {
            TradeType::Jsapi => "JSAPI",
            TradeType::Native => "NATIVE",
            TradeType::App => "APP",
            TradeType::Mweb => "MWEB",
            TradeType::Micropay => "MICROPAY",
            TradeType::Facepay => "FACEPAY",
        }
    }

    /// The prepay path segment (`/v3/pay/transactions/{product}`) → trade type.
    pub fn from_product(segment: &str) -> Option<Self> {
        match segment {
            "jsapi" => Some(TradeType::Jsapi),
            "app" => Some(TradeType::App),
            "h5" => Some(TradeType::Mweb),
            "native" => Some(TradeType::Native),
            _ => None,
        }
    }

    /// The prepay path segment of this trade type; `None` for payment-code products.
    pub fn product(&self) -> Option<&'static str> {
        match self {
            TradeType::Jsapi => Some("jsapi"),
            TradeType::App => Some("app"),
            TradeType::Mweb => Some("h5"),
            TradeType::Native => Some("native"),
            TradeType::Micropay | TradeType::Facepay => None,
        }
    }
}

/// `trade_state` of a Transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TradeState {
    Success,
    Refund,
    Notpay,
    Closed,
    Revoked,
    Userpaying,
    Payerror,
    Accept,
}

impl TradeState {
    pub fn as_str(&self) -> &'static str {
        match self {
            TradeState::Success => "SUCCESS",
            TradeState::Refund => "REFUND",
            TradeState::Notpay => "NOTPAY",
            TradeState::Closed => "CLOSED",
            TradeState::Revoked => "REVOKED",
            TradeState::Userpaying => "USERPAYING",
            TradeState::Payerror => "PAYERROR",
            TradeState::Accept => "ACCEPT",
        }
    }

    /// No payment can happen any more. Per the docs' state table SUCCESS, REFUND and CLOSED are
    /// final, and so are the payment-code endings REVOKED and PAYERROR. SUCCESS may still move
    /// to REFUND: that is a refund, not a payment change.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TradeState::Success
                | TradeState::Refund
                | TradeState::Closed
                | TradeState::Revoked
                | TradeState::Payerror
        )
    }

    /// The money was taken (refunds may have followed).
    pub fn is_paid(&self) -> bool {
        matches!(self, TradeState::Success | TradeState::Refund)
    }

    /// A `trade_state_desc` in WeChat's words (exact texts per state are UNCONFIRMED).
    pub fn default_desc(&self) -> &'static str {
        match self {
            TradeState::Success => "支付成功",
            TradeState::Refund => "转入退款",
            TradeState::Notpay => "未支付",
            TradeState::Closed => "已关闭",
            TradeState::Revoked => "已撤销（付款码支付）",
            TradeState::Userpaying => "用户支付中（付款码支付）",
            TradeState::Payerror => "支付失败，请重新下单支付",
            TradeState::Accept => "已接收，等待扣款",
        }
    }
}

/// Prepay `amount`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// Direct-merchant `payer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

/// Partner `payer`: the user's openid under the sp appid or under the sub appid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerPayer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_openid: Option<String>,
}

/// `detail`: goods information for discounts and risk control.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_price: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<GoodsDetail>>,
}

/// One `detail.goods_detail[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodsDetail {
    pub merchant_goods_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_goods_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_name: Option<String>,
    pub quantity: i64,
    pub unit_price: i64,
}

/// `scene_info`; `payer_client_ip` is required inside it, `h5_info` only for H5.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    pub payer_client_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_info: Option<StoreInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5_info: Option<H5Info>,
}

/// `scene_info.store_info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// `scene_info.h5_info.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum H5Type {
    #[serde(rename = "iOS")]
    Ios,
    Android,
    Wap,
}

/// `scene_info.h5_info` (H5 only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5Info {
    pub r#type: H5Type,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_name: Option<String>,
}

/// `settle_info`: `profit_sharing` must be true for the order to be split later.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profit_sharing: Option<bool>,
}

/// Direct-merchant prepay body (`POST /v3/pay/transactions/{jsapi|app|h5|native}`).
/// Field order is the docs' order, so the §9.1 body re-serializes byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayRequest {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_pay: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_fapiao: Option<bool>,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<SettleInfo>,
}

/// Partner prepay body (`POST /v3/pay/partner/transactions/{…}`): §4.1 with the sp/sub ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerPrepayRequest {
    pub sp_appid: String,
    pub sp_mchid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    pub sub_mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_pay: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_fapiao: Option<bool>,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<PartnerPayer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<SettleInfo>,
}

/// The order fields direct and partner prepay share, borrowed for one validation routine.
struct OrderFields<'a> {
    description: &'a str,
    out_trade_no: &'a str,
    time_expire: Option<&'a str>,
    attach: Option<&'a str>,
    notify_url: &'a str,
    goods_tag: Option<&'a str>,
    limit_pay: Option<&'a [String]>,
    amount: &'a Amount,
    detail: Option<&'a Detail>,
    scene_info: Option<&'a SceneInfo>,
}

impl OrderFields<'_> {
    fn validate(&self) -> Result<(), ApiError> {
        check_text("/description", self.description, 1, DESCRIPTION_CHARS_MAX)?;
        check_out_trade_no("/out_trade_no", self.out_trade_no)?;
        if let Some(t) = self.time_expire {
            check_rfc3339("/time_expire", t)?;
        }
        check_opt_text("/attach", self.attach, 0, ATTACH_CHARS_MAX)?;
        check_notify_url("/notify_url", self.notify_url)?;
        check_opt_text("/goods_tag", self.goods_tag, 0, GOODS_TAG_CHARS_MAX)?;
        if let Some(limit_pay) = self.limit_pay {
            validate_limit_pay(limit_pay)?;
        }
        self.amount.validate()?;
        self.detail.validate()?;
        self.scene_info.validate()
    }
}

fn validate_limit_pay(values: &[String]) -> Result<(), ApiError> {
    crate::rules::check_count("/limit_pay", values.len(), 0, LIMIT_PAY_COUNT_MAX)?;
    for (i, v) in values.iter().enumerate() {
        if !LIMIT_PAY_VALUES.contains(&v.as_str()) {
            let issue = format!("must be one of {}", LIMIT_PAY_VALUES.join(", "));
            return Err(ApiError::param(&ptr("/limit_pay", i), issue));
        }
    }
    Ok(())
}

impl Validate for Amount {
    fn validate(&self) -> Result<(), ApiError> {
        check_amount("/amount/total", self.total)?;
        match &self.currency {
            Some(c) => check_currency("/amount/currency", c),
            None => Ok(()),
        }
    }
}

impl Amount {
    /// The currency, `CNY` when the request left it out.
    pub fn currency_or_cny(&self) -> &str {
        self.currency.as_deref().unwrap_or(super::common::CNY)
    }
}

impl Validate for Detail {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(cost) = self.cost_price {
            check_non_negative("/detail/cost_price", cost)?;
        }
        check_opt_text("/detail/invoice_id", self.invoice_id.as_deref(), 0, 32)?;
        for (i, g) in self.goods_detail.iter().flatten().enumerate() {
            let at = ptr("/detail/goods_detail", i);
            check_text(&ptr(&at, "merchant_goods_id"), &g.merchant_goods_id, 1, 32)?;
            check_opt_text(
                &ptr(&at, "wechatpay_goods_id"),
                g.wechatpay_goods_id.as_deref(),
                0,
                32,
            )?;
            check_opt_text(&ptr(&at, "goods_name"), g.goods_name.as_deref(), 0, 256)?;
            check_amount(&ptr(&at, "quantity"), g.quantity)?;
            check_non_negative(&ptr(&at, "unit_price"), g.unit_price)?;
        }
        Ok(())
    }
}

impl Validate for SceneInfo {
    fn validate(&self) -> Result<(), ApiError> {
        check_ip("/scene_info/payer_client_ip", &self.payer_client_ip)?;
        let device_id = self.device_id.as_deref();
        check_opt_text("/scene_info/device_id", device_id, 0, DEVICE_ID_CHARS_MAX)?;
        if let Some(s) = &self.store_info {
            check_text("/scene_info/store_info/id", &s.id, 1, 32)?;
            check_opt_text("/scene_info/store_info/name", s.name.as_deref(), 0, 256)?;
            check_opt_text(
                "/scene_info/store_info/area_code",
                s.area_code.as_deref(),
                0,
                32,
            )?;
            check_opt_text(
                "/scene_info/store_info/address",
                s.address.as_deref(),
                0,
                512,
            )?;
        }
        if let Some(h) = &self.h5_info {
            check_opt_text("/scene_info/h5_info/app_name", h.app_name.as_deref(), 0, 64)?;
            check_opt_text("/scene_info/h5_info/app_url", h.app_url.as_deref(), 0, 128)?;
            check_opt_text(
                "/scene_info/h5_info/bundle_id",
                h.bundle_id.as_deref(),
                0,
                128,
            )?;
            let package = h.package_name.as_deref();
            check_opt_text("/scene_info/h5_info/package_name", package, 0, 128)?;
        }
        Ok(())
    }
}

/// The rules that depend on the product rather than on single fields.
fn validate_product(trade_type: TradeType, scene_info: Option<&SceneInfo>) -> Result<(), ApiError> {
    match trade_type {
        TradeType::Mweb => {
            let scene = require("/scene_info", scene_info)?;
            require("/scene_info/h5_info", scene.h5_info.as_ref())?;
            Ok(())
        }
        TradeType::Jsapi | TradeType::App | TradeType::Native => Ok(()),
        TradeType::Micropay | TradeType::Facepay => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{} is not a prepay product", trade_type.as_str()),
        )),
    }
}

impl PrepayRequest {
    fn order_fields(&self) -> OrderFields<'_> {
        OrderFields {
            description: &self.description,
            out_trade_no: &self.out_trade_no,
            time_expire: self.time_expire.as_deref(),
            attach: self.attach.as_deref(),
            notify_url: &self.notify_url,
            goods_tag: self.goods_tag.as_deref(),
            limit_pay: self.limit_pay.as_deref(),
            amount: &self.amount,
            detail: self.detail.as_ref(),
            scene_info: self.scene_info.as_ref(),
        }
    }

    /// [`Validate::validate`] plus the product's own rules: JSAPI needs `payer.openid`, H5
    /// needs `scene_info` with `h5_info`; payment-code types are not prepay products.
    pub fn validate_for(&self, trade_type: TradeType) -> Result<(), ApiError> {
        self.validate()?;
        if trade_type == TradeType::Jsapi && self.payer.is_none() {
            return Err(ApiError::param(
                "/payer/openid",
                "is required for JSAPI (JSAPI支付必须传openid)",
            ));
        }
        validate_product(trade_type, self.scene_info.as_ref())
    }

    /// `time_expire` parsed, if given (already checked by `validate`).
    pub fn time_expire_at(&self) -> Result<Option<time::OffsetDateTime>, ApiError> {
        self.time_expire
            .as_deref()
            .map(|t| check_rfc3339("/time_expire", t))
            .transpose()
    }
}

impl Validate for PrepayRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("/appid", &self.appid, APPID_CHARS_MAX)?;
        check_id("/mchid", &self.mchid, MCHID_CHARS_MAX)?;
        self.order_fields().validate()?;
        if let Some(p) = &self.payer {
            check_id("/payer/openid", &p.openid, OPENID_CHARS_MAX)?;
        }
        Ok(())
    }
}

impl PartnerPrepayRequest {
    fn order_fields(&self) -> OrderFields<'_> {
        OrderFields {
            description: &self.description,
            out_trade_no: &self.out_trade_no,
            time_expire: self.time_expire.as_deref(),
            attach: self.attach.as_deref(),
            notify_url: &self.notify_url,
            goods_tag: self.goods_tag.as_deref(),
            limit_pay: self.limit_pay.as_deref(),
            amount: &self.amount,
            detail: self.detail.as_ref(),
            scene_info: self.scene_info.as_ref(),
        }
    }

    /// [`Validate::validate`] plus the product rules: JSAPI needs `payer.sp_openid` or
    /// `payer.sub_openid`; H5 needs `scene_info.h5_info`.
    pub fn validate_for(&self, trade_type: TradeType) -> Result<(), ApiError> {
        self.validate()?;
        if trade_type == TradeType::Jsapi {
            let payer = self.payer.as_ref();
            if payer.is_none_or(|p| p.sp_openid.is_none() && p.sub_openid.is_none()) {
                return Err(ApiError::param(
                    "/payer/sp_openid",
                    "sp_openid or sub_openid is required for JSAPI (JSAPI支付必须传openid)",
                ));
            }
        }
        validate_product(trade_type, self.scene_info.as_ref())
    }

    /// `time_expire` parsed, if given (already checked by `validate`).
    pub fn time_expire_at(&self) -> Result<Option<time::OffsetDateTime>, ApiError> {
        self.time_expire
            .as_deref()
            .map(|t| check_rfc3339("/time_expire", t))
            .transpose()
    }
}

impl Validate for PartnerPrepayRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("/sp_appid", &self.sp_appid, APPID_CHARS_MAX)?;
        check_id("/sp_mchid", &self.sp_mchid, MCHID_CHARS_MAX)?;
        if let Some(sub_appid) = &self.sub_appid {
            check_id("/sub_appid", sub_appid, APPID_CHARS_MAX)?;
        }
        check_id("/sub_mchid", &self.sub_mchid, MCHID_CHARS_MAX)?;
        self.order_fields().validate()?;
        if let Some(p) = &self.payer {
            if let Some(o) = &p.sp_openid {
                check_id("/payer/sp_openid", o, OPENID_CHARS_MAX)?;
            }
            if let Some(o) = &p.sub_openid {
                check_id("/payer/sub_openid", o, OPENID_CHARS_MAX)?;
                // A sub_openid only means something under the sub-merchant's own appid.
                require("/sub_appid", self.sub_appid.as_ref())?;
            }
        }
        Ok(())
    }
}

/// JSAPI / APP prepay answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayIdResponse {
    pub prepay_id: String,
}

/// Native prepay answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeUrlResponse {
    pub code_url: String,
}

/// H5 prepay answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5UrlResponse {
    pub h5_url: String,
}

/// `amount` of a Transaction. `currency` reads as CNY when a peer leaves it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default = "cny")]
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// `payer` of a Transaction: `openid` (direct) or `sp_openid`/`sub_openid` (partner).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionPayer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_openid: Option<String>,
}

/// `scene_info` of a Transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionSceneInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// One `promotion_detail[]` entry. Its enum-like fields (`scope` GLOBAL/SINGLE, `type`
/// CASH/NOCASH) stay strings: a new coupon kind must never make a payment unreadable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionDetail {
    pub coupon_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_contribute: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_contribute: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_contribute: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<PromotionGoodsDetail>>,
}

/// `promotion_detail[].goods_detail[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionGoodsDetail {
    pub goods_id: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub discount_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_remark: Option<String>,
}

/// The Transaction object (§4.5): query answer and payment-callback plaintext, direct and
/// partner alike. Fields are in alphabetical order, as WeChat's own answers are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<TransactionPayer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<PromotionDetail>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<TransactionSceneInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    /// RFC 3339; only once paid. Never `""` (Go clients parse times strictly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    pub trade_state: TradeState,
    #[serde(default)]
    pub trade_state_desc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<TradeType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

impl Transaction {
    /// Partner transactions carry `sp_mchid`, direct ones `mchid`.
    pub fn is_partner(&self) -> bool {
        self.sp_mchid.is_some()
    }
}

/// Direct close body (`POST /v3/pay/transactions/out-trade-no/{no}/close`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    pub mchid: String,
}

impl Validate for CloseRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("/mchid", &self.mchid, MCHID_CHARS_MAX)
    }
}

/// Partner close body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerCloseRequest {
    pub sp_mchid: String,
    pub sub_mchid: String,
}

impl Validate for PartnerCloseRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("/sp_mchid", &self.sp_mchid, MCHID_CHARS_MAX)?;
        check_id("/sub_mchid", &self.sub_mchid, MCHID_CHARS_MAX)
    }
}

/// Query string of a direct order query (`?mchid=…`), for [`super::bills::parse_query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryOrderQuery {
    pub mchid: String,
}

impl Validate for QueryOrderQuery {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("/mchid", &self.mchid, MCHID_CHARS_MAX)
    }
}

/// Query string of a partner order query (`?sp_mchid=…&sub_mchid=…`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerQueryOrderQuery {
    pub sp_mchid: String,
    pub sub_mchid: String,
}

impl Validate for PartnerQueryOrderQuery {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("/sp_mchid", &self.sp_mchid, MCHID_CHARS_MAX)?;
        check_id("/sub_mchid", &self.sub_mchid, MCHID_CHARS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse_json;
    use serde_json::json;

    fn field(e: &ApiError) -> String {
        e.detail.as_ref().unwrap()["field"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn jsapi() -> serde_json::Value {
        json!({"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔",
            "out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php",
            "amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}})
    }

    fn reject(v: serde_json::Value) -> ApiError {
        parse_json::<PrepayRequest>(v.to_string().as_bytes()).unwrap_err()
    }

    fn with(mut v: serde_json::Value, pointer: &str, new: serde_json::Value) -> serde_json::Value {
        *v.pointer_mut(pointer).unwrap() = new;
        v
    }

    #[test]
    fn each_field_rule_names_its_pointer() {
        let cases = [
            ("/appid", json!("")),
            ("/mchid", json!("1".repeat(33))),
            ("/description", json!("")),
            ("/description", json!("d".repeat(128))),
            ("/description", json!("好😀")),
            ("/out_trade_no", json!("12345")),
            ("/notify_url", json!("https://a.com/n?x=1")),
            ("/amount/total", json!(0)),
            ("/amount/currency", json!("USD")),
            ("/payer/openid", json!("o".repeat(129))),
        ];
        for (pointer, bad) in cases {
            assert_eq!(
                field(&reject(with(jsapi(), pointer, bad.clone()))),
                pointer,
                "{bad}"
            );
        }
        let mut v = jsapi();
        v["time_expire"] = json!("2018-06-08 10:34:56");
        assert_eq!(field(&reject(v)), "/time_expire");
        let mut v = jsapi();
        v["attach"] = json!("a".repeat(129));
        assert_eq!(field(&reject(v)), "/attach");
        let mut v = jsapi();
        v["goods_tag"] = json!("g".repeat(33));
        assert_eq!(field(&reject(v)), "/goods_tag");
        let mut v = jsapi();
        v["limit_pay"] = json!(["no_credit", "no_cash"]);
        assert_eq!(field(&reject(v)), "/limit_pay/1");
    }

    #[test]
    fn nested_detail_and_scene_rules() {
        let mut v = jsapi();
        v["detail"] = json!({"goods_detail":[{"merchant_goods_id":"1","quantity":1,"unit_price":1},
                                            {"merchant_goods_id":"2","quantity":0,"unit_price":1}]});
        assert_eq!(field(&reject(v)), "/detail/goods_detail/1/quantity");
        let mut v = jsapi();
        v["scene_info"] = json!({"payer_client_ip":"1.2.3.400"});
        assert_eq!(field(&reject(v)), "/scene_info/payer_client_ip");
        let mut v = jsapi();
        v["scene_info"] = json!({"payer_client_ip":"1.2.3.4","store_info":{"id":""}});
        assert_eq!(field(&reject(v)), "/scene_info/store_info/id");
        let mut v = jsapi();
        v["scene_info"] = json!({"payer_client_ip":"1.2.3.4","h5_info":{"type":"Mac"}});
        assert_eq!(field(&reject(v)), "/scene_info/h5_info/type");
    }

    #[test]
    fn jsapi_needs_openid_and_h5_needs_h5_info() {
        let mut v = jsapi();
        v.as_object_mut().unwrap().remove("payer");
        let req: PrepayRequest = parse_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(
            field(&req.validate_for(TradeType::Jsapi).unwrap_err()),
            "/payer/openid"
        );
        assert!(req.validate_for(TradeType::Native).is_ok());
        assert!(req.validate_for(TradeType::App).is_ok());
        let e = req.validate_for(TradeType::Mweb).unwrap_err();
        assert_eq!(field(&e), "/scene_info");
        v["scene_info"] = json!({"payer_client_ip":"14.23.150.211"});
        let req: PrepayRequest = parse_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(
            field(&req.validate_for(TradeType::Mweb).unwrap_err()),
            "/scene_info/h5_info"
        );
        v["scene_info"]["h5_info"] = json!({"type":"iOS"});
        let req: PrepayRequest = parse_json(v.to_string().as_bytes()).unwrap();
        assert!(req.validate_for(TradeType::Mweb).is_ok());
        let e = req.validate_for(TradeType::Micropay).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    fn partner() -> serde_json::Value {
        json!({"sp_appid":"wx8888888888888888","sp_mchid":"1230000109","sub_mchid":"1900000109",
            "description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018",
            "notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":1},
            "payer":{"sp_openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}})
    }

    #[test]
    fn partner_payer_rules() {
        let req: PartnerPrepayRequest = parse_json(partner().to_string().as_bytes()).unwrap();
        assert!(req.validate_for(TradeType::Jsapi).is_ok());
        assert_eq!(req.amount.currency_or_cny(), "CNY");
        let v = with(partner(), "/payer", json!({"sub_openid":"oXyz"}));
        let e = parse_json::<PartnerPrepayRequest>(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(field(&e), "/sub_appid");
        let mut v = v;
        v["sub_appid"] = json!("wxd678efh567hg6999");
        let req: PartnerPrepayRequest = parse_json(v.to_string().as_bytes()).unwrap();
        assert!(req.validate_for(TradeType::Jsapi).is_ok());
        let v = with(partner(), "/payer", json!({}));
        let req: PartnerPrepayRequest = parse_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(
            field(&req.validate_for(TradeType::Jsapi).unwrap_err()),
            "/payer/sp_openid"
        );
        assert!(req.validate_for(TradeType::Native).is_ok());
    }

    #[test]
    fn trade_type_and_state_wire_names() {
        assert_eq!(serde_json::to_string(&TradeType::Mweb).unwrap(), "\"MWEB\"");
        assert_eq!(TradeType::from_product("h5"), Some(TradeType::Mweb));
        assert_eq!(TradeType::from_product("micropay"), None);
        for t in [
            TradeType::Jsapi,
            TradeType::App,
            TradeType::Mweb,
            TradeType::Native,
        ] {
            assert_eq!(TradeType::from_product(t.product().unwrap()), Some(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        assert_eq!(
            serde_json::to_string(&TradeState::Userpaying).unwrap(),
            "\"USERPAYING\""
        );
        assert_eq!(
            serde_json::from_str::<TradeState>("\"PAYERROR\"").unwrap(),
            TradeState::Payerror
        );
        assert!(TradeState::Success.is_final() && TradeState::Closed.is_final());
        assert!(!TradeState::Notpay.is_final() && !TradeState::Userpaying.is_final());
        assert!(TradeState::Refund.is_paid() && !TradeState::Closed.is_paid());
        assert_eq!(serde_json::to_string(&H5Type::Ios).unwrap(), "\"iOS\"");
    }

    #[test]
    fn transaction_omits_absent_fields_and_never_emits_empty_times() {
        let t = Transaction {
            amount: Some(TransactionAmount {
                total: 100,
                payer_total: None,
                currency: "CNY".into(),
                payer_currency: None,
            }),
            appid: Some("wxd678efh567hg6787".into()),
            attach: None,
            bank_type: None,
            mchid: Some("1900007291".into()),
            out_trade_no: "1217752501201407033233368018".into(),
            payer: None,
            promotion_detail: None,
            scene_info: None,
            sp_appid: None,
            sp_mchid: None,
            sub_appid: None,
            sub_mchid: None,
            success_time: None,
            trade_state: TradeState::Notpay,
            trade_state_desc: TradeState::Notpay.default_desc().into(),
            trade_type: None,
            transaction_id: None,
        };
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(
            s,
            r#"{"amount":{"total":100,"currency":"CNY"},"appid":"wxd678efh567hg6787","mchid":"1900007291","out_trade_no":"1217752501201407033233368018","trade_state":"NOTPAY","trade_state_desc":"未支付"}"#
        );
        assert!(!t.is_partner());
        assert_eq!(serde_json::from_str::<Transaction>(&s).unwrap(), t);
    }

    #[test]
    fn transaction_reads_a_real_partner_callback_plaintext() {
        let plain = r#"{"sp_mchid":"1230000109","sub_mchid":"1900000109","sp_appid":"wxd678efh567hg6787",
          "sub_appid":"wxd678efh567hg6999","out_trade_no":"1217752501201407033233368018",
          "transaction_id":"1217752501201407033233368018","trade_type":"MICROPAY","trade_state":"SUCCESS",
          "trade_state_desc":"支付成功","bank_type":"CMC","attach":"自定义数据","success_time":"2018-06-08T10:34:56+08:00",
          "payer":{"sp_openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","sub_openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
          "amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"},
          "scene_info":{"device_id":"013467007045764"},
          "promotion_detail":[{"coupon_id":"109519","name":"单品惠-6","scope":"SINGLE","type":"DISCOUNT",
            "stock_id":"931386","amount":100,"wechatpay_contribute":0,"merchant_contribute":0,
            "other_contribute":0,"currency":"CNY","goods_detail":[{"goods_id":"M1006","quantity":1,
            "unit_price":100,"discount_amount":1,"goods_remark":"商品备注信息"}]}]}"#;
        let t: Transaction = serde_json::from_str(plain).unwrap();
        assert!(t.is_partner());
        assert_eq!(t.trade_type, Some(TradeType::Micropay));
        assert_eq!(t.amount.as_ref().unwrap().payer_total, Some(100));
        assert_eq!(
            t.promotion_detail.as_ref().unwrap()[0]
                .goods_detail
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn close_and_query_models_validate_ids() {
        assert!(parse_json::<CloseRequest>(br#"{"mchid":"1230000109"}"#).is_ok());
        assert_eq!(
            field(&parse_json::<CloseRequest>(br#"{}"#).unwrap_err()),
            "/mchid"
        );
        let e =
            parse_json::<PartnerCloseRequest>(br#"{"sp_mchid":"1","sub_mchid":""}"#).unwrap_err();
        assert_eq!(field(&e), "/sub_mchid");
    }
}
