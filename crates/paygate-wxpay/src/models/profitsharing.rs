//! Profit-sharing (分账) models (reference §4.8): split orders, unfreeze, returns, the unsplit
//! amount, the partner's max ratio and receiver management.

use paygate_core::error::ApiError;
use serde::{Deserialize, Serialize};

use super::common::{null_as_default, ptr};
use super::payments::{APPID_CHARS_MAX, MCHID_CHARS_MAX, TRANSACTION_ID_CHARS_MAX};
use crate::rules::{
    Validate, check_amount, check_count, check_id, check_opt_text, check_out_request_no,
    check_text, require,
};

/// At most 50 receivers per split order.
pub const RECEIVERS_COUNT_MAX: usize = 50;
/// `description` of a receiver, unfreeze or return: `string(80)`.
pub const DESCRIPTION_CHARS_MAX: usize = 80;
/// A receiver `account`: a mchid or an openid.
pub const ACCOUNT_CHARS_MAX: usize = 64;
/// `custom_relation` when `relation_type` is CUSTOM.
pub const CUSTOM_RELATION_CHARS_MAX: usize = 10;
/// Encrypted `name` (RSA-OAEP or SM2 ciphertext, base64).
pub const ENCRYPTED_NAME_CHARS_MAX: usize = 1024;

/// Receiver `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReceiverType {
    MerchantId,
    PersonalOpenid,
    PersonalSubOpenid,
}

/// `relation_type` of a receiver to the merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RelationType {
    ServiceProvider,
    Store,
    Staff,
    StoreOwner,
    Partner,
    Headquarter,
    Brand,
    Distributor,
    User,
    Supplier,
    Custom,
}

/// `state` of a split order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderState {
    Processing,
    Finished,
}

/// `result` of one receiver of a split order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DetailResult {
    Pending,
    Success,
    Closed,
}

/// `fail_reason` of one receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DetailFailReason {
    AccountAbnormal,
    NoRelation,
    ReceiverHighRisk,
    ReceiverRealNameNotVerified,
    NoAuth,
}

/// `result` of a return order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReturnResult {
    Processing,
    Success,
    Failed,
}

/// `fail_reason` of a return order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReturnFailReason {
    AccountAbnormal,
    BalanceNotEnough,
    TimeOutClosed,
}

fn check_sub_mchid(v: Option<&String>) -> Result<(), ApiError> {
    match v {
        Some(s) => check_id("/sub_mchid", s, MCHID_CHARS_MAX),
        None => Ok(()),
    }
}

fn check_sub_appid(v: Option<&String>) -> Result<(), ApiError> {
    match v {
        Some(s) => check_id("/sub_appid", s, APPID_CHARS_MAX),
        None => Ok(()),
    }
}

/// A receiver's identity rules shared by orders and receiver management: the account is an id,
/// the encrypted name is bounded, and a sub-openid receiver needs the sub appid it belongs to.
fn check_receiver(
    at: &str,
    r#type: ReceiverType,
    account: &str,
    name: Option<&str>,
    sub_appid: Option<&String>,
) -> Result<(), ApiError> {
    check_id(&ptr(at, "account"), account, ACCOUNT_CHARS_MAX)?;
    check_opt_text(&ptr(at, "name"), name, 1, ENCRYPTED_NAME_CHARS_MAX)?;
    if r#type == ReceiverType::PersonalSubOpenid {
        require("/sub_appid", sub_appid)?;
    }
    Ok(())
}

/// One receiver of a split order request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderReceiverRequest {
    pub r#type: ReceiverType,
    pub account: String,
    /// Encrypted with the platform key (requires the `Wechatpay-Serial` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub amount: i64,
    pub description: String,
}

/// `POST /v3/profitsharing/orders`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfitSharingOrderRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub appid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    pub transaction_id: String,
    pub out_order_no: String,
    pub receivers: Vec<OrderReceiverRequest>,
    pub unfreeze_unsplit: bool,
}

impl ProfitSharingOrderRequest {
    /// The sum of all receivers' amounts (saturating: validation already bounded each).
    pub fn total_amount(&self) -> i64 {
        self.receivers
            .iter()
            .fold(0i64, |sum, r| sum.saturating_add(r.amount))
    }
}

impl Validate for ProfitSharingOrderRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_sub_mchid(self.sub_mchid.as_ref())?;
        check_id("/appid", &self.appid, APPID_CHARS_MAX)?;
        check_sub_appid(self.sub_appid.as_ref())?;
        check_id(
            "/transaction_id",
            &self.transaction_id,
            TRANSACTION_ID_CHARS_MAX,
        )?;
        check_out_request_no("/out_order_no", &self.out_order_no)?;
        check_count("/receivers", self.receivers.len(), 1, RECEIVERS_COUNT_MAX)?;
        for (i, r) in self.receivers.iter().enumerate() {
            let at = ptr("/receivers", i);
            let sub_appid = self.sub_appid.as_ref();
            check_receiver(&at, r.r#type, &r.account, r.name.as_deref(), sub_appid)?;
            check_amount(&ptr(&at, "amount"), r.amount)?;
            check_text(
                &ptr(&at, "description"),
                &r.description,
                1,
                DESCRIPTION_CHARS_MAX,
            )?;
        }
        Ok(())
    }
}

/// One receiver line of a split order answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderReceiverDetail {
    pub amount: i64,
    pub description: String,
    pub r#type: ReceiverType,
    pub account: String,
    pub result: DetailResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<DetailFailReason>,
    pub detail_id: String,
    /// RFC 3339; Go parses it as a time, so it must be a real one.
    pub create_time: String,
    /// RFC 3339 once the line is finished; omitted (never `""`) while PENDING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
}

/// Split order answer (create, query, unfreeze).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrdersEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub transaction_id: String,
    pub out_order_no: String,
    pub order_id: String,
    pub state: OrderState,
    #[serde(default, deserialize_with = "null_as_default")]
    pub receivers: Vec<OrderReceiverDetail>,
}

/// `POST /v3/profitsharing/orders/unfreeze`: return the unsplit rest to the merchant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfreezeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub transaction_id: String,
    pub out_order_no: String,
    pub description: String,
}

impl Validate for UnfreezeRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_sub_mchid(self.sub_mchid.as_ref())?;
        check_id(
            "/transaction_id",
            &self.transaction_id,
            TRANSACTION_ID_CHARS_MAX,
        )?;
        check_out_request_no("/out_order_no", &self.out_order_no)?;
        check_text("/description", &self.description, 1, DESCRIPTION_CHARS_MAX)
    }
}

/// `POST /v3/profitsharing/return-orders`: one of `order_id` / `out_order_no` is required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnOrderRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_order_no: Option<String>,
    pub out_return_no: String,
    pub return_mchid: String,
    pub amount: i64,
    pub description: String,
}

impl Validate for ReturnOrderRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_sub_mchid(self.sub_mchid.as_ref())?;
        if self.order_id.is_none() && self.out_order_no.is_none() {
            return Err(ApiError::param(
                "/order_id",
                "order_id or out_order_no is required (二选一)",
            ));
        }
        if let Some(id) = &self.order_id {
            check_id("/order_id", id, 64)?;
        }
        if let Some(no) = &self.out_order_no {
            check_out_request_no("/out_order_no", no)?;
        }
        check_out_request_no("/out_return_no", &self.out_return_no)?;
        check_id("/return_mchid", &self.return_mchid, MCHID_CHARS_MAX)?;
        check_amount("/amount", self.amount)?;
        check_text("/description", &self.description, 1, DESCRIPTION_CHARS_MAX)
    }
}

/// Return order answer (create and query).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnOrdersEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub order_id: String,
    pub out_order_no: String,
    pub out_return_no: String,
    pub return_id: String,
    pub return_mchid: String,
    pub amount: i64,
    pub description: String,
    pub result: ReturnResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<ReturnFailReason>,
    pub create_time: String,
    /// Omitted (never `""`) while PROCESSING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
}

/// `GET /v3/profitsharing/transactions/{transaction_id}/amounts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsplitAmountResponse {
    pub transaction_id: String,
    pub unsplit_amount: i64,
}

/// `GET /v3/profitsharing/merchant-configs/{sub_mchid}`: `max_ratio` in 万分比 (2000 = 20%).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantConfigResponse {
    pub sub_mchid: String,
    pub max_ratio: i64,
}

/// `POST /v3/profitsharing/receivers/add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddReceiverRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub appid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    pub r#type: ReceiverType,
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub relation_type: RelationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_relation: Option<String>,
}

impl Validate for AddReceiverRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_sub_mchid(self.sub_mchid.as_ref())?;
        check_id("/appid", &self.appid, APPID_CHARS_MAX)?;
        check_sub_appid(self.sub_appid.as_ref())?;
        let sub_appid = self.sub_appid.as_ref();
        check_receiver(
            "",
            self.r#type,
            &self.account,
            self.name.as_deref(),
            sub_appid,
        )?;
        // A merchant receiver is added under its full registered name (必传 for MERCHANT_ID).
        if self.r#type == ReceiverType::MerchantId {
            require("/name", self.name.as_ref())?;
        }
        let custom = self.custom_relation.as_deref();
        check_opt_text("/custom_relation", custom, 1, CUSTOM_RELATION_CHARS_MAX)?;
        if self.relation_type == RelationType::Custom {
            require("/custom_relation", self.custom_relation.as_ref())?;
        }
        Ok(())
    }
}

/// Answer of receivers/add.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddReceiverResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub r#type: ReceiverType,
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub relation_type: RelationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_relation: Option<String>,
}

/// `POST /v3/profitsharing/receivers/delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReceiverRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub appid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    pub r#type: ReceiverType,
    pub account: String,
}

impl Validate for DeleteReceiverRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_sub_mchid(self.sub_mchid.as_ref())?;
        check_id("/appid", &self.appid, APPID_CHARS_MAX)?;
        check_sub_appid(self.sub_appid.as_ref())?;
        check_receiver(
            "",
            self.r#type,
            &self.account,
            None,
            self.sub_appid.as_ref(),
        )
    }
}

/// Answer of receivers/delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReceiverResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub r#type: ReceiverType,
    pub account: String,
}

/// Query string of `GET /v3/profitsharing/orders/{out_order_no}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderQuery {
    pub transaction_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
}

impl Validate for OrderQuery {
    fn validate(&self) -> Result<(), ApiError> {
        check_id(
            "/transaction_id",
            &self.transaction_id,
            TRANSACTION_ID_CHARS_MAX,
        )?;
        check_sub_mchid(self.sub_mchid.as_ref())
    }
}

/// Query string of `GET /v3/profitsharing/return-orders/{out_return_no}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnOrderQuery {
    pub out_order_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
}

impl Validate for ReturnOrderQuery {
    fn validate(&self) -> Result<(), ApiError> {
        check_out_request_no("/out_order_no", &self.out_order_no)?;
        check_sub_mchid(self.sub_mchid.as_ref())
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

    fn receiver(i: usize) -> serde_json::Value {
        json!({"type":"MERCHANT_ID","account":format!("19000001{i:02}"),"amount":10,"description":"分给商户"})
    }

    fn order(n: usize) -> serde_json::Value {
        json!({"sub_mchid":"1900000109","appid":"wx8888888888888888","transaction_id":"4208450740201411110007820472",
            "out_order_no":"P20150806125346","receivers":(0..n).map(receiver).collect::<Vec<_>>(),
            "unfreeze_unsplit":true})
    }

    fn reject<T: serde::de::DeserializeOwned + Validate + std::fmt::Debug>(
        v: serde_json::Value,
    ) -> String {
        field(&parse_json::<T>(v.to_string().as_bytes()).unwrap_err())
    }

    #[test]
    fn split_order_has_1_to_50_receivers() {
        let ok: ProfitSharingOrderRequest = parse_json(order(50).to_string().as_bytes()).unwrap();
        assert_eq!(ok.total_amount(), 500);
        assert_eq!(reject::<ProfitSharingOrderRequest>(order(0)), "/receivers");
        assert_eq!(reject::<ProfitSharingOrderRequest>(order(51)), "/receivers");
    }

    #[test]
    fn split_order_field_rules() {
        let mut v = order(2);
        v["receivers"][1]["amount"] = json!(0);
        assert_eq!(
            reject::<ProfitSharingOrderRequest>(v),
            "/receivers/1/amount"
        );
        let mut v = order(2);
        v["receivers"][0]["description"] = json!("");
        assert_eq!(
            reject::<ProfitSharingOrderRequest>(v),
            "/receivers/0/description"
        );
        let mut v = order(1);
        v["receivers"][0]["type"] = json!("PERSONAL_SUB_OPENID");
        assert_eq!(reject::<ProfitSharingOrderRequest>(v.clone()), "/sub_appid");
        v["sub_appid"] = json!("wxd678efh567hg6999");
        assert!(parse_json::<ProfitSharingOrderRequest>(v.to_string().as_bytes()).is_ok());
        let mut v = order(1);
        v["out_order_no"] = json!("P 1");
        assert_eq!(reject::<ProfitSharingOrderRequest>(v), "/out_order_no");
        let mut v = order(1);
        v.as_object_mut().unwrap().remove("unfreeze_unsplit");
        assert_eq!(reject::<ProfitSharingOrderRequest>(v), "/unfreeze_unsplit");
    }

    #[test]
    fn receivers_custom_relation_and_merchant_name() {
        let base = json!({"appid":"wx8888888888888888","type":"MERCHANT_ID","account":"190001001",
            "name":"<encrypted>","relation_type":"CUSTOM","custom_relation":"代理商"});
        assert!(parse_json::<AddReceiverRequest>(base.to_string().as_bytes()).is_ok());
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("custom_relation");
        assert_eq!(reject::<AddReceiverRequest>(v), "/custom_relation");
        let mut v = base.clone();
        v["custom_relation"] = json!("十一个字十一个字十一个");
        assert_eq!(reject::<AddReceiverRequest>(v), "/custom_relation");
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("name");
        assert_eq!(reject::<AddReceiverRequest>(v), "/name");
        let mut v = base;
        v["relation_type"] = json!("FRIEND");
        assert_eq!(reject::<AddReceiverRequest>(v), "/relation_type");
        let del = json!({"appid":"wx8888888888888888","type":"PERSONAL_OPENID","account":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
        assert!(parse_json::<DeleteReceiverRequest>(del.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn return_and_unfreeze_rules() {
        let ret = json!({"out_order_no":"P20150806125346","out_return_no":"R20190516001",
            "return_mchid":"86693852","amount":10,"description":"用户退款"});
        assert!(parse_json::<ReturnOrderRequest>(ret.to_string().as_bytes()).is_ok());
        let mut v = ret.clone();
        v.as_object_mut().unwrap().remove("out_order_no");
        assert_eq!(reject::<ReturnOrderRequest>(v), "/order_id");
        let mut v = ret;
        v["amount"] = json!(-1);
        assert_eq!(reject::<ReturnOrderRequest>(v), "/amount");
        let unfreeze = json!({"transaction_id":"4208450740201411110007820472","out_order_no":"P2","description":""});
        assert_eq!(reject::<UnfreezeRequest>(unfreeze), "/description");
    }

    #[test]
    fn entities_round_trip_and_omit_unfinished_times() {
        let entity = json!({"transaction_id":"4208450740201411110007820472","out_order_no":"P20150806125346",
            "order_id":"3008450740201411110007820472","state":"PROCESSING",
            "receivers":[{"amount":100,"description":"分给商户A","type":"MERCHANT_ID","account":"1900000109",
              "result":"PENDING","detail_id":"36011111111111111111111","create_time":"2015-05-20T13:29:35+08:00"}]});
        let e: OrdersEntity = serde_json::from_value(entity.clone()).unwrap();
        assert_eq!(e.receivers[0].result, DetailResult::Pending);
        assert_eq!(serde_json::to_value(&e).unwrap(), entity);
        let no_receivers: OrdersEntity =
            serde_json::from_value(json!({"transaction_id":"1","out_order_no":"P",
            "order_id":"3","state":"FINISHED","receivers":null}))
            .unwrap();
        assert!(no_receivers.receivers.is_empty());
        let ret = json!({"order_id":"3008450740201411110007820472","out_order_no":"P20150806125346",
            "out_return_no":"R20190516001","return_id":"3008450740201411110007820472","return_mchid":"86693852",
            "amount":10,"description":"用户退款","result":"FAILED","fail_reason":"TIME_OUT_CLOSED",
            "create_time":"2015-05-20T13:29:35+08:00","finish_time":"2015-05-20T13:29:35+08:00"});
        let r: ReturnOrdersEntity = serde_json::from_value(ret.clone()).unwrap();
        assert_eq!(r.fail_reason, Some(ReturnFailReason::TimeOutClosed));
        assert_eq!(serde_json::to_value(&r).unwrap(), ret);
    }
}
