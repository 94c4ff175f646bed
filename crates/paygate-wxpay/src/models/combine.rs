//! Combine payment (合单支付) models (reference §4.11): one payment covering up to 10 sub-orders
//! of possibly different merchants. Prepay, query answer (also the callback plaintext), close.

use paygate_core::error::ApiError;
use serde::{Deserialize, Serialize};

use super::common::{cny, ptr};
use super::payments::{
    APPID_CHARS_MAX, ATTACH_CHARS_MAX, DESCRIPTION_CHARS_MAX, GOODS_TAG_CHARS_MAX, MCHID_CHARS_MAX,
    OPENID_CHARS_MAX, PromotionDetail, TradeState, TradeType, TransactionSceneInfo,
};
use crate::rules::{
    Validate, check_amount, check_count, check_currency, check_id, check_ip, check_non_negative,
    check_notify_url, check_opt_text, check_out_trade_no, check_rfc3339, check_text, require,
};

/// At most 10 sub-orders per combine payment.
pub const SUB_ORDERS_COUNT_MAX: usize = 10;
/// `scene_info.device_id` is `string(16)` here (32 elsewhere).
pub const COMBINE_DEVICE_ID_CHARS_MAX: usize = 16;
/// `sub_orders[].detail` is free text up to 6000 characters.
pub const SUB_ORDER_DETAIL_CHARS_MAX: usize = 6000;

/// `scene_info` of a combine prepay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineSceneInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub payer_client_ip: String,
}

/// `sub_orders[].amount` of a combine prepay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineAmount {
    pub total_amount: i64,
    #[serde(default = "cny")]
    pub currency: String,
}

/// `sub_orders[].settle_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineSettleInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profit_sharing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsidy_amount: Option<i64>,
}

/// One sub-order of a combine prepay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineSubOrder {
    pub mchid: String,
    pub attach: String,
    pub amount: CombineAmount,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<CombineSettleInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
}

/// `combine_payer_info` (JSAPI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombinePayerInfo {
    pub openid: String,
}

/// `POST /v3/combine-transactions/{jsapi|app|h5|native}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombinePrepayRequest {
    pub combine_appid: String,
    pub combine_mchid: String,
    pub combine_out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<CombineSceneInfo>,
    pub sub_orders: Vec<CombineSubOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine_payer_info: Option<CombinePayerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    pub notify_url: String,
}

impl CombinePrepayRequest {
    /// [`Validate::validate`] plus: JSAPI needs `combine_payer_info.openid`, H5 needs
    /// `scene_info`.
    pub fn validate_for(&self, trade_type: TradeType) -> Result<(), ApiError> {
        self.validate()?;
        match trade_type {
            TradeType::Jsapi => {
                require(
                    "/combine_payer_info/openid",
                    self.combine_payer_info.as_ref(),
                )?;
            }
            TradeType::Mweb => {
                require("/scene_info", self.scene_info.as_ref())?;
            }
            TradeType::App | TradeType::Native => {}
            TradeType::Micropay | TradeType::Facepay => {
                let message = format!("{} is not a prepay product", trade_type.as_str());
                let code = paygate_core::error::ErrorCode::InvalidRequest;
                return Err(ApiError::new(code, message));
            }
        }
        Ok(())
    }
}

impl Validate for CombinePrepayRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("/combine_appid", &self.combine_appid, APPID_CHARS_MAX)?;
        check_id("/combine_mchid", &self.combine_mchid, MCHID_CHARS_MAX)?;
        check_out_trade_no("/combine_out_trade_no", &self.combine_out_trade_no)?;
        if let Some(s) = &self.scene_info {
            let device_id = s.device_id.as_deref();
            check_opt_text(
                "/scene_info/device_id",
                device_id,
                0,
                COMBINE_DEVICE_ID_CHARS_MAX,
            )?;
            check_ip("/scene_info/payer_client_ip", &s.payer_client_ip)?;
        }
        check_count(
            "/sub_orders",
            self.sub_orders.len(),
            1,
            SUB_ORDERS_COUNT_MAX,
        )?;
        for (i, o) in self.sub_orders.iter().enumerate() {
            validate_sub_order(&ptr("/sub_orders", i), o)?;
            let repeated = self.sub_orders[..i]
                .iter()
                .any(|e| e.out_trade_no == o.out_trade_no);
            if repeated {
                return Err(ApiError::param(
                    &ptr(&ptr("/sub_orders", i), "out_trade_no"),
                    "is repeated",
                ));
            }
        }
        if let Some(p) = &self.combine_payer_info {
            check_id("/combine_payer_info/openid", &p.openid, OPENID_CHARS_MAX)?;
        }
        if let Some(t) = &self.time_start {
            check_rfc3339("/time_start", t)?;
        }
        if let Some(t) = &self.time_expire {
            check_rfc3339("/time_expire", t)?;
        }
        check_notify_url("/notify_url", &self.notify_url)
    }
}

fn validate_sub_order(at: &str, o: &CombineSubOrder) -> Result<(), ApiError> {
    check_id(&ptr(at, "mchid"), &o.mchid, MCHID_CHARS_MAX)?;
    check_text(&ptr(at, "attach"), &o.attach, 1, ATTACH_CHARS_MAX)?;
    check_amount(&ptr(at, "amount/total_amount"), o.amount.total_amount)?;
    check_currency(&ptr(at, "amount/currency"), &o.amount.currency)?;
    check_out_trade_no(&ptr(at, "out_trade_no"), &o.out_trade_no)?;
    check_opt_text(
        &ptr(at, "goods_tag"),
        o.goods_tag.as_deref(),
        0,
        GOODS_TAG_CHARS_MAX,
    )?;
    check_text(
        &ptr(at, "description"),
        &o.description,
        1,
        DESCRIPTION_CHARS_MAX,
    )?;
    check_opt_text(
        &ptr(at, "detail"),
        o.detail.as_deref(),
        0,
        SUB_ORDER_DETAIL_CHARS_MAX,
    )?;
    if let Some(subsidy) = o.settle_info.as_ref().and_then(|s| s.subsidy_amount) {
        check_non_negative(&ptr(at, "settle_info/subsidy_amount"), subsidy)?;
    }
    if let Some(sub) = &o.sub_mchid {
        check_id(&ptr(at, "sub_mchid"), sub, MCHID_CHARS_MAX)?;
    }
    if let Some(sub) = &o.sub_appid {
        check_id(&ptr(at, "sub_appid"), sub, APPID_CHARS_MAX)?;
    }
    Ok(())
}

/// `sub_orders[].amount` of a combine query answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineAmountResult {
    pub total_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_amount: Option<i64>,
    #[serde(default = "cny")]
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_rate: Option<i64>,
}

/// One sub-order of a combine query answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineSubOrderResult {
    pub mchid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_openid: Option<String>,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<TradeType>,
    pub trade_state: TradeState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// Only once paid; never `""`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    pub amount: CombineAmountResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<PromotionDetail>>,
}

/// `GET /v3/combine-transactions/out-trade-no/{combine_out_trade_no}` answer and the combine
/// callback plaintext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineTransaction {
    pub combine_appid: String,
    pub combine_mchid: String,
    pub combine_out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine_payer_info: Option<CombinePayerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<TransactionSceneInfo>,
    pub sub_orders: Vec<CombineSubOrderResult>,
}

/// One sub-order to close.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineCloseSubOrder {
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
}

/// `POST /v3/combine-transactions/out-trade-no/{combine_out_trade_no}/close`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineCloseRequest {
    pub combine_appid: String,
    pub sub_orders: Vec<CombineCloseSubOrder>,
}

impl Validate for CombineCloseRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_id("/combine_appid", &self.combine_appid, APPID_CHARS_MAX)?;
        check_count(
            "/sub_orders",
            self.sub_orders.len(),
            1,
            SUB_ORDERS_COUNT_MAX,
        )?;
        for (i, o) in self.sub_orders.iter().enumerate() {
            let at = ptr("/sub_orders", i);
            check_id(&ptr(&at, "mchid"), &o.mchid, MCHID_CHARS_MAX)?;
            check_out_trade_no(&ptr(&at, "out_trade_no"), &o.out_trade_no)?;
            if let Some(sub) = &o.sub_mchid {
                check_id(&ptr(&at, "sub_mchid"), sub, MCHID_CHARS_MAX)?;
            }
            if let Some(sub) = &o.sub_appid {
                check_id(&ptr(&at, "sub_appid"), sub, APPID_CHARS_MAX)?;
            }
        }
        Ok(())
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

    fn sub(no: &str) -> serde_json::Value {
        json!({"mchid":"1900000109","attach":"深圳分店","amount":{"total_amount":10,"currency":"CNY"},
               "out_trade_no":no,"description":"腾讯充值中心-QQ会员充值","settle_info":{"profit_sharing":false}})
    }

    fn body() -> serde_json::Value {
        json!({"combine_appid":"wxd678efh567hg6787","combine_mchid":"1900000109",
               "combine_out_trade_no":"P20150806125346","scene_info":{"device_id":"POS1:1","payer_client_ip":"14.17.22.32"},
               "sub_orders":[sub("20150806125346"), sub("20150806125347")],
               "combine_payer_info":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
               "time_expire":"2018-06-08T10:34:56+08:00","notify_url":"https://yourapp.com/notify"})
    }

    #[test]
    fn combine_prepay_rules() {
        let req: CombinePrepayRequest = parse_json(body().to_string().as_bytes()).unwrap();
        assert!(req.validate_for(TradeType::Jsapi).is_ok());
        let mut v = body();
        v["sub_orders"][1]["out_trade_no"] = json!("20150806125346");
        let e = parse_json::<CombinePrepayRequest>(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(field(&e), "/sub_orders/1/out_trade_no");
        let mut v = body();
        v["sub_orders"][0]["amount"]["total_amount"] = json!(0);
        let e = parse_json::<CombinePrepayRequest>(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(field(&e), "/sub_orders/0/amount/total_amount");
        let mut v = body();
        v["sub_orders"] = json!(
            (0..11)
                .map(|i| sub(&format!("2015080612{i:04}")))
                .collect::<Vec<_>>()
        );
        let e = parse_json::<CombinePrepayRequest>(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(field(&e), "/sub_orders");
        let mut v = body();
        v.as_object_mut().unwrap().remove("combine_payer_info");
        let req: CombinePrepayRequest = parse_json(v.to_string().as_bytes()).unwrap();
        let e = req.validate_for(TradeType::Jsapi).unwrap_err();
        assert_eq!(field(&e), "/combine_payer_info/openid");
        assert!(req.validate_for(TradeType::Native).is_ok());
    }

    #[test]
    fn combine_query_answer_and_close_body() {
        let answer = json!({"combine_appid":"wxd678efh567hg6787","combine_mchid":"1900000109",
            "combine_out_trade_no":"P20150806125346","combine_payer_info":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "scene_info":{"device_id":"POS1:1"},
            "sub_orders":[{"mchid":"1900000109","out_trade_no":"20150806125346","transaction_id":"1009660380201506130728806387",
              "trade_type":"JSAPI","trade_state":"SUCCESS","bank_type":"CMC","attach":"深圳分店",
              "success_time":"2015-05-20T13:29:35+08:00","amount":{"total_amount":10,"payer_amount":10,"currency":"CNY","payer_currency":"CNY"}}]});
        let t: CombineTransaction = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!(t.sub_orders[0].trade_state, TradeState::Success);
        assert_eq!(serde_json::to_value(&t).unwrap(), answer);
        let close = br#"{"combine_appid":"wxd678efh567hg6787","sub_orders":[{"mchid":"1900000109","out_trade_no":"20150806125346"}]}"#;
        assert!(parse_json::<CombineCloseRequest>(close).is_ok());
        let e = parse_json::<CombineCloseRequest>(br#"{"combine_appid":"wx1","sub_orders":[]}"#)
            .unwrap_err();
        assert_eq!(field(&e), "/sub_orders");
    }
}
