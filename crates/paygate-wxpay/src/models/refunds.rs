//! Domestic refund models (reference §4.7): the create request, the refund object returned by
//! create and query, the refund-callback plaintext and the abnormal-refund request.

use paygate_core::error::ApiError;
use serde::{Deserialize, Serialize};

use super::common::{cny, ptr};
use super::payments::{MCHID_CHARS_MAX, TRANSACTION_ID_CHARS_MAX};
use crate::rules::{
    REFUND_NOTIFY_URL_CHARS_MAX, Validate, check_amount, check_currency, check_id,
    check_non_negative, check_opt_text, check_out_request_no, check_out_trade_no, check_text,
    check_url, require,
};

/// `reason` is `string(80)`.
pub const REASON_CHARS_MAX: usize = 80;
/// `amount.from` has two possible accounts, each at most once.
pub const FUNDS_FROM_COUNT_MAX: usize = 2;
/// Encrypted `bank_account` / `real_name` (RSA-2048 OAEP → 344 base64 chars; SM2 is longer).
pub const ENCRYPTED_CHARS_MAX: usize = 1024;

/// `status` of a refund (`refund_status` in callbacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RefundStatus {
    Success,
    Closed,
    Processing,
    Abnormal,
}

impl RefundStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Abnormal => "ABNORMAL",
        }
    }

    /// SUCCESS and CLOSED never change again; ABNORMAL can still be re-applied.
    pub fn is_final(&self) -> bool {
        matches!(self, RefundStatus::Success | RefundStatus::Closed)
    }

    /// The callback `event_type` announcing this status (none for PROCESSING).
    pub fn event_type(&self) -> Option<&'static str> {
        match self {
            RefundStatus::Success => Some("REFUND.SUCCESS"),
            RefundStatus::Closed => Some("REFUND.CLOSED"),
            RefundStatus::Abnormal => Some("REFUND.ABNORMAL"),
            RefundStatus::Processing => None,
        }
    }
}

/// Where the refunded money goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundChannel {
    Original,
    Balance,
    OtherBalance,
    OtherBankcard,
}

/// Which merchant account funds the refund (`funds_account`). Requests may only send
/// `AVAILABLE`; answers use all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FundsAccount {
    Unsettled,
    Available,
    Unavailable,
    Operation,
    Basic,
    EcnyBasic,
}

/// `amount.from[].account`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FromAccount {
    Available,
    Unavailable,
}

/// One `amount.from[]` entry: part of the refund paid from one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsFrom {
    pub account: FromAccount,
    pub amount: i64,
}

/// `amount` of a refund request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmountRequest {
    pub refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<FundsFrom>>,
    pub total: i64,
    pub currency: String,
}

/// One `goods_detail[]` entry of a refund.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundGoodsDetail {
    pub merchant_goods_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_goods_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_name: Option<String>,
    pub unit_price: i64,
    pub refund_amount: i64,
    pub refund_quantity: i64,
}

/// `POST /v3/refund/domestic/refunds`. One of `transaction_id` / `out_trade_no` is required
/// (if both come, `transaction_id` identifies the order, as WeChat does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<FundsAccount>,
    pub amount: RefundAmountRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<RefundGoodsDetail>>,
}

impl Validate for RefundRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(sub) = &self.sub_mchid {
            check_id("/sub_mchid", sub, MCHID_CHARS_MAX)?;
        }
        match (&self.transaction_id, &self.out_trade_no) {
            (None, None) => {
                return Err(ApiError::param(
                    "/transaction_id",
                    "transaction_id or out_trade_no is required (二选一)",
                ));
            }
            (tid, otn) => {
                if let Some(t) = tid {
                    check_id("/transaction_id", t, TRANSACTION_ID_CHARS_MAX)?;
                }
                if let Some(o) = otn {
                    check_out_trade_no("/out_trade_no", o)?;
                }
            }
        }
        check_out_request_no("/out_refund_no", &self.out_refund_no)?;
        check_opt_text("/reason", self.reason.as_deref(), 0, REASON_CHARS_MAX)?;
        if let Some(url) = &self.notify_url {
            check_url("/notify_url", url, REFUND_NOTIFY_URL_CHARS_MAX)?;
        }
        if let Some(fa) = self.funds_account {
            if fa != FundsAccount::Available {
                return Err(ApiError::param(
                    "/funds_account",
                    "only AVAILABLE may be requested",
                ));
            }
        }
        validate_refund_amount(&self.amount)?;
        for (i, g) in self.goods_detail.iter().flatten().enumerate() {
            let at = ptr("/goods_detail", i);
            check_text(&ptr(&at, "merchant_goods_id"), &g.merchant_goods_id, 1, 32)?;
            check_opt_text(
                &ptr(&at, "wechatpay_goods_id"),
                g.wechatpay_goods_id.as_deref(),
                0,
                32,
            )?;
            check_opt_text(&ptr(&at, "goods_name"), g.goods_name.as_deref(), 0, 256)?;
            check_non_negative(&ptr(&at, "unit_price"), g.unit_price)?;
            check_amount(&ptr(&at, "refund_amount"), g.refund_amount)?;
            check_amount(&ptr(&at, "refund_quantity"), g.refund_quantity)?;
        }
        Ok(())
    }
}

/// Amount rules that need no order: both ≥ 1, refund ≤ total, CNY, and `from` (when given)
/// names each account once and adds up to exactly the refund.
fn validate_refund_amount(a: &RefundAmountRequest) -> Result<(), ApiError> {
    check_amount("/amount/refund", a.refund)?;
    check_amount("/amount/total", a.total)?;
    if a.refund > a.total {
        let issue = format!(
            "refund {} is more than the order total {}",
            a.refund, a.total
        );
        return Err(ApiError::param("/amount/refund", issue));
    }
    check_currency("/amount/currency", &a.currency)?;
    let Some(from) = &a.from else { return Ok(()) };
    crate::rules::check_count("/amount/from", from.len(), 1, FUNDS_FROM_COUNT_MAX)?;
    let mut sum: i64 = 0;
    for (i, f) in from.iter().enumerate() {
        check_amount(&format!("/amount/from/{i}/amount"), f.amount)?;
        if from[..i].iter().any(|earlier| earlier.account == f.account) {
            return Err(ApiError::param(
                &format!("/amount/from/{i}/account"),
                "is repeated",
            ));
        }
        sum = sum.saturating_add(f.amount);
    }
    if sum != a.refund {
        let issue = format!("adds up to {sum}, not the refund {}", a.refund);
        return Err(ApiError::param("/amount/from", issue));
    }
    Ok(())
}

/// `amount` of the refund object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<FundsFrom>>,
    pub payer_total: i64,
    pub payer_refund: i64,
    pub settlement_refund: i64,
    pub settlement_total: i64,
    pub discount_refund: i64,
    #[serde(default = "cny")]
    pub currency: String,
    /// Handling fee refunded (newer docs); absent in older answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_fee: Option<i64>,
}

/// `promotion_detail[]` of a refund; `scope`/`type` stay strings (see payments' note).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPromotion {
    pub promotion_id: String,
    pub scope: String,
    pub r#type: String,
    pub amount: i64,
    pub refund_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<RefundGoodsDetail>>,
}

/// The refund object (create and query answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub channel: RefundChannel,
    pub user_received_account: String,
    /// Only when SUCCESS; never `""`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    pub create_time: String,
    pub status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<FundsAccount>,
    pub amount: RefundAmount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<RefundPromotion>>,
}

/// `amount` in the refund callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotifyAmount {
    pub total: i64,
    pub refund: i64,
    pub payer_total: i64,
    pub payer_refund: i64,
}

/// Refund callback plaintext: `refund_status`, not `status`; `mchid` for direct merchants,
/// `sp_mchid`/`sub_mchid` for partners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotifyPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub refund_id: String,
    pub out_refund_no: String,
    pub refund_status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundNotifyAmount,
}

/// `type` of an abnormal-refund request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AbnormalRefundType {
    UserBankCard,
    MerchantBankCard,
}

/// `POST /v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund`. For `USER_BANK_CARD`
/// the bank type, the encrypted account and the encrypted name are required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbnormalRefundRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub out_refund_no: String,
    pub r#type: AbnormalRefundType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_name: Option<String>,
}

impl Validate for AbnormalRefundRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(sub) = &self.sub_mchid {
            check_id("/sub_mchid", sub, MCHID_CHARS_MAX)?;
        }
        check_out_request_no("/out_refund_no", &self.out_refund_no)?;
        check_opt_text("/bank_type", self.bank_type.as_deref(), 1, 32)?;
        check_opt_text(
            "/bank_account",
            self.bank_account.as_deref(),
            1,
            ENCRYPTED_CHARS_MAX,
        )?;
        check_opt_text(
            "/real_name",
            self.real_name.as_deref(),
            1,
            ENCRYPTED_CHARS_MAX,
        )?;
        if self.r#type == AbnormalRefundType::UserBankCard {
            require("/bank_type", self.bank_type.as_ref())?;
            require("/bank_account", self.bank_account.as_ref())?;
            require("/real_name", self.real_name.as_ref())?;
        }
        Ok(())
    }
}

/// Query string of `GET /v3/refund/domestic/refunds/{out_refund_no}` (partner: `sub_mchid`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
}

impl Validate for RefundQuery {
    fn validate(&self) -> Result<(), ApiError> {
        match &self.sub_mchid {
            Some(sub) => check_id("/sub_mchid", sub, MCHID_CHARS_MAX),
            None => Ok(()),
        }
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

    fn body() -> serde_json::Value {
        json!({"transaction_id":"1217752501201407033233368018","out_refund_no":"1217752501201407033233368018",
            "reason":"商品已售完","notify_url":"https://weixin.qq.com","funds_account":"AVAILABLE",
            "amount":{"refund":888,"from":[{"account":"AVAILABLE","amount":444},{"account":"UNAVAILABLE","amount":444}],
                      "total":888,"currency":"CNY"},
            "goods_detail":[{"merchant_goods_id":"1217752501201407033233368018","wechatpay_goods_id":"1001",
                             "goods_name":"iPhone6s 16G","unit_price":528800,"refund_amount":528800,"refund_quantity":1}]})
    }

    fn reject(v: serde_json::Value) -> String {
        field(&parse_json::<RefundRequest>(v.to_string().as_bytes()).unwrap_err())
    }

    #[test]
    fn the_go_sdk_example_body_is_accepted() {
        let r: RefundRequest = parse_json(body().to_string().as_bytes()).unwrap();
        assert_eq!(r.amount.refund, 888);
        assert_eq!(r.funds_account, Some(FundsAccount::Available));
    }

    #[test]
    fn refund_request_rules() {
        let mut v = body();
        v.as_object_mut().unwrap().remove("transaction_id");
        assert_eq!(reject(v.clone()), "/transaction_id");
        v["out_trade_no"] = json!("1217752501201407033233368018");
        assert!(parse_json::<RefundRequest>(v.to_string().as_bytes()).is_ok());

        let mut v = body();
        v["amount"]["refund"] = json!(889);
        assert_eq!(reject(v), "/amount/refund");
        let mut v = body();
        v["amount"]["from"][1]["amount"] = json!(400);
        assert_eq!(reject(v), "/amount/from");
        let mut v = body();
        v["amount"]["from"][1]["account"] = json!("AVAILABLE");
        assert_eq!(reject(v), "/amount/from/1/account");
        let mut v = body();
        v["amount"]["currency"] = json!("USD");
        assert_eq!(reject(v), "/amount/currency");
        let mut v = body();
        v.as_object_mut().unwrap()["amount"]
            .as_object_mut()
            .unwrap()
            .remove("currency");
        assert_eq!(reject(v), "/amount/currency");
        let mut v = body();
        v["funds_account"] = json!("BASIC");
        assert_eq!(reject(v), "/funds_account");
        let mut v = body();
        v["out_refund_no"] = json!("r".repeat(65));
        assert_eq!(reject(v), "/out_refund_no");
        let mut v = body();
        v["reason"] = json!("因".repeat(81));
        assert_eq!(reject(v), "/reason");
        let mut v = body();
        v["notify_url"] = json!("https://weixin.qq.com/n?x=1");
        assert_eq!(reject(v), "/notify_url");
        let mut v = body();
        v["goods_detail"][0]["refund_quantity"] = json!(0);
        assert_eq!(reject(v), "/goods_detail/0/refund_quantity");
    }

    #[test]
    fn refund_object_and_callback_round_trip() {
        let refund = json!({"refund_id":"50000000382019052709732678859","out_refund_no":"1217752501201407033233368018",
            "transaction_id":"1217752501201407033233368018","out_trade_no":"1217752501201407033233368018",
            "channel":"ORIGINAL","user_received_account":"招商银行信用卡0403",
            "create_time":"2020-12-01T16:18:12+08:00","status":"PROCESSING","funds_account":"UNSETTLED",
            "amount":{"total":100,"refund":100,"payer_total":90,"payer_refund":90,"settlement_refund":100,
                      "settlement_total":100,"discount_refund":10,"currency":"CNY"},
            "promotion_detail":[{"promotion_id":"109519","scope":"SINGLE","type":"DISCOUNT","amount":5,"refund_amount":100}]});
        let r: Refund = serde_json::from_value(refund.clone()).unwrap();
        assert_eq!(r.status, RefundStatus::Processing);
        assert_eq!(r.success_time, None);
        assert_eq!(serde_json::to_value(&r).unwrap(), refund);

        let notify = r#"{"mchid":"1900000100","transaction_id":"1008450740201411110005820873","out_trade_no":"20150806125346",
 "refund_id":"50200207182018070300011301001","out_refund_no":"7752501201407033233368018",
 "refund_status":"SUCCESS","success_time":"2018-06-08T10:34:56+08:00",
 "user_received_account":"招商银行信用卡0403",
 "amount":{"total":999,"refund":999,"payer_total":999,"payer_refund":999}}"#;
        let n: RefundNotifyPayload = serde_json::from_str(notify).unwrap();
        assert_eq!(n.refund_status, RefundStatus::Success);
        assert_eq!(n.refund_status.event_type(), Some("REFUND.SUCCESS"));
        assert!(n.sp_mchid.is_none());
        let again: RefundNotifyPayload =
            serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(again, n);
        assert!(RefundStatus::Closed.is_final() && !RefundStatus::Abnormal.is_final());
    }

    #[test]
    fn abnormal_refund_to_user_card_needs_account_details() {
        let ok = br#"{"out_refund_no":"1217752501201407033233368018","type":"MERCHANT_BANK_CARD"}"#;
        assert!(parse_json::<AbnormalRefundRequest>(ok).is_ok());
        let bad = br#"{"out_refund_no":"1217752501201407033233368018","type":"USER_BANK_CARD","bank_type":"ICBC_DEBIT"}"#;
        assert_eq!(
            field(&parse_json::<AbnormalRefundRequest>(bad).unwrap_err()),
            "/bank_account"
        );
        let bad = br#"{"out_refund_no":"x","type":"OTHER"}"#;
        assert_eq!(
            field(&parse_json::<AbnormalRefundRequest>(bad).unwrap_err()),
            "/type"
        );
    }
}
