//! Bill models (reference §4.10 and the split bill of §4.8): the query strings of the trade,
//! fund-flow and profit-sharing bill requests, their common answer, and [`parse_query`], which
//! decodes any URL query string into a model.

use paygate_core::error::{ApiError, LOCATION_QUERY, decode_value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::payments::MCHID_CHARS_MAX;
use crate::rules::{Validate, check_bill_date, check_id};

/// A query string longer than this is refused before decoding (ours are a few dozen bytes).
pub const QUERY_BYTES_MAX: usize = 4096;

/// `bill_type` of the trade bill. Omitted means ALL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeBillType {
    All,
    Success,
    Refund,
    RechargeRefund,
    AllSpecial,
    SucSpecial,
    RefSpecial,
}

/// `account_type` of the fund-flow bill. Omitted means BASIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AccountType {
    Basic,
    Operation,
    Fees,
}

/// `tar_type`: only GZIP; omitted means an uncompressed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TarType {
    Gzip,
}

/// `hash_type` of a bill answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HashType {
    Sha1,
}

/// `GET /v3/bill/tradebill?bill_date=…[&bill_type=…][&tar_type=GZIP][&sub_mchid=…]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeBillQuery {
    pub bill_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_type: Option<TradeBillType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_type: Option<TarType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
}

impl TradeBillQuery {
    /// The bill date (validated by `validate`).
    pub fn date(&self) -> Result<time::Date, ApiError> {
        check_bill_date("/bill_date", &self.bill_date)
    }

    /// `bill_type`, ALL when omitted.
    pub fn bill_type_or_default(&self) -> TradeBillType {
        self.bill_type.unwrap_or(TradeBillType::All)
    }
}

impl Validate for TradeBillQuery {
    fn validate(&self) -> Result<(), ApiError> {
        self.date().map_err(in_query)?;
        check_sub_mchid(self.sub_mchid.as_ref())
    }
}

/// `GET /v3/bill/fundflowbill?bill_date=…[&account_type=…][&tar_type=GZIP]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundFlowBillQuery {
    pub bill_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_type: Option<AccountType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_type: Option<TarType>,
}

impl FundFlowBillQuery {
    pub fn date(&self) -> Result<time::Date, ApiError> {
        check_bill_date("/bill_date", &self.bill_date)
    }

    /// `account_type`, BASIC when omitted.
    pub fn account_type_or_default(&self) -> AccountType {
        self.account_type.unwrap_or(AccountType::Basic)
    }
}

impl Validate for FundFlowBillQuery {
    fn validate(&self) -> Result<(), ApiError> {
        self.date().map_err(in_query).map(|_| ())
    }
}

/// `GET /v3/profitsharing/bills?bill_date=…[&sub_mchid=…][&tar_type=GZIP]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfitSharingBillQuery {
    pub bill_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_type: Option<TarType>,
}

impl ProfitSharingBillQuery {
    pub fn date(&self) -> Result<time::Date, ApiError> {
        check_bill_date("/bill_date", &self.bill_date)
    }
}

impl Validate for ProfitSharingBillQuery {
    fn validate(&self) -> Result<(), ApiError> {
        self.date().map_err(in_query)?;
        check_sub_mchid(self.sub_mchid.as_ref())
    }
}

/// Answer of every bill request: where to download the file and its SHA1 (hex, lowercase, of
/// the uncompressed file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillResponse {
    pub hash_type: HashType,
    pub hash_value: String,
    pub download_url: String,
}

fn check_sub_mchid(v: Option<&String>) -> Result<(), ApiError> {
    match v {
        Some(s) => check_id("/sub_mchid", s, MCHID_CHARS_MAX).map_err(in_query),
        None => Ok(()),
    }
}

/// Re-labels a field-rule error as coming from the query string.
fn in_query(mut e: ApiError) -> ApiError {
    if let Some(serde_json::Value::Object(detail)) = e.detail.as_mut() {
        detail.insert("location".into(), LOCATION_QUERY.into());
    }
    e
}

/// Decodes a URL query string (without the leading `?`) into `T`. Values are percent-decoded
/// (`+` is a space, as Go's `url.Values` writes it) and must be UTF-8; a repeated key is refused
/// as ambiguous. Fields of `T` must be strings or string enums, since query values are text.
/// Errors are 400 `PARAM_ERROR` with `location: "query"`.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if query.len() > QUERY_BYTES_MAX {
        let issue = format!("query string is longer than {QUERY_BYTES_MAX} bytes");
        return Err(ApiError::param_in(LOCATION_QUERY, "", issue));
    }
    let mut map = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key).ok_or_else(|| {
            ApiError::param_in(LOCATION_QUERY, "", "key is not valid percent-encoded UTF-8")
        })?;
        let field = format!("/{key}");
        let value = percent_decode(raw_value).ok_or_else(|| {
            ApiError::param_in(LOCATION_QUERY, &field, "is not valid percent-encoded UTF-8")
        })?;
        if map.insert(key, serde_json::Value::String(value)).is_some() {
            return Err(ApiError::param_in(LOCATION_QUERY, &field, "is repeated"));
        }
    }
    decode_value(LOCATION_QUERY, serde_json::Value::Object(map))
}

/// [`parse_query`] followed by the model's field rules.
pub fn parse_query_validated<T: DeserializeOwned + Validate>(query: &str) -> Result<T, ApiError> {
    let value: T = parse_query(query)?;
    value.validate().map_err(in_query)?;
    Ok(value)
}

/// `application/x-www-form-urlencoded` decoding; `None` on a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paygate_core::error::ErrorCode;

    fn detail(e: &ApiError) -> (String, String) {
        let d = e.detail.as_ref().unwrap();
        (
            d["field"].as_str().unwrap().to_owned(),
            d["location"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn trade_bill_query_parses_with_defaults() {
        let q: TradeBillQuery = parse_query_validated("bill_date=2019-06-11").unwrap();
        assert_eq!(q.bill_type_or_default(), TradeBillType::All);
        assert_eq!(q.tar_type, None);
        let q: TradeBillQuery = parse_query_validated(
            "bill_date=2019-06-11&bill_type=SUC_SPECIAL&tar_type=GZIP&sub_mchid=1900000109",
        )
        .unwrap();
        assert_eq!(q.bill_type, Some(TradeBillType::SucSpecial));
        assert_eq!(q.tar_type, Some(TarType::Gzip));
        assert_eq!(q.date().unwrap(), time::macros::date!(2019 - 06 - 11));
    }

    #[test]
    fn bad_dates_enums_and_missing_fields_are_query_param_errors() {
        let e = parse_query_validated::<TradeBillQuery>("bill_date=2019-6-11").unwrap_err();
        assert_eq!(detail(&e), ("/bill_date".into(), "query".into()));
        let e = parse_query_validated::<TradeBillQuery>("bill_date=2019-06-11&bill_type=SOME")
            .unwrap_err();
        assert_eq!(detail(&e), ("/bill_type".into(), "query".into()));
        let e = parse_query_validated::<FundFlowBillQuery>("account_type=BASIC").unwrap_err();
        assert_eq!(detail(&e), ("/bill_date".into(), "query".into()));
        assert_eq!(e.code, ErrorCode::ParamError);
        let e = parse_query_validated::<FundFlowBillQuery>("bill_date=2019-06-11&tar_type=ZIP")
            .unwrap_err();
        assert_eq!(detail(&e).0, "/tar_type");
        let e =
            parse_query::<TradeBillQuery>("bill_date=2019-06-11&bill_date=2019-06-12").unwrap_err();
        assert_eq!(detail(&e).0, "/bill_date");
        assert!(parse_query::<TradeBillQuery>(&"a".repeat(QUERY_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn values_are_percent_decoded() {
        assert_eq!(
            percent_decode("2019%2D06%2d11").as_deref(),
            Some("2019-06-11")
        );
        assert_eq!(percent_decode("a+b%20c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%E4%B8%AD").as_deref(), Some("中"));
        assert_eq!(percent_decode("%E4%B8"), None);
        assert_eq!(percent_decode("%G0"), None);
        assert_eq!(percent_decode("%4"), None);
        let q: FundFlowBillQuery =
            parse_query_validated("bill_date=2019%2D06%2D11&account_type=FEES").unwrap();
        assert_eq!(q.account_type_or_default(), AccountType::Fees);
        let q: ProfitSharingBillQuery =
            parse_query_validated("sub_mchid=19000&bill_date=2019-06-11").unwrap();
        assert_eq!(q.sub_mchid.as_deref(), Some("19000"));
    }

    #[test]
    fn order_query_strings_parse_too() {
        use crate::models::payments::{PartnerQueryOrderQuery, QueryOrderQuery};
        let q: QueryOrderQuery = parse_query_validated("mchid=1230000109").unwrap();
        assert_eq!(q.mchid, "1230000109");
        let q: PartnerQueryOrderQuery =
            parse_query_validated("sp_mchid=1230000109&sub_mchid=1900000109").unwrap();
        assert_eq!(q.sub_mchid, "1900000109");
        let e = parse_query_validated::<PartnerQueryOrderQuery>("sp_mchid=1230000109").unwrap_err();
        assert_eq!(detail(&e), ("/sub_mchid".into(), "query".into()));
    }

    #[test]
    fn bill_response_wire_shape() {
        let r = BillResponse {
            hash_type: HashType::Sha1,
            hash_value: "79bb0f45fc4c42234a918000b2668d689e2bde04".into(),
            download_url: "https://api.mch.weixin.qq.com/v3/billdownload/file?token=xxx".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"hash_type":"SHA1","hash_value":"79bb0f45fc4c42234a918000b2668d689e2bde04","download_url":"https://api.mch.weixin.qq.com/v3/billdownload/file?token=xxx"}"#
        );
    }
}
