//! The WeChat Pay APIv3 error catalogue: every error code paygate can answer with, its HTTP status
//! and its default (Chinese, as WeChat) message, plus [`ApiError`], the `{"code","message","detail"}`
//! body that travels on the wire in both directions.
//!
//! Codes and statuses follow reference §6 (and §4.6/§4.7 for the endpoint tables). Where the
//! sources disagree the choice is documented on the variant so it can be changed in one place.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A V3 error code. The wire form is SCREAMING_SNAKE_CASE (`PARAM_ERROR`); [`ErrorCode::parse`]
/// and deserialization also accept the un-underscored spellings of the old V3 tables
/// (`SYSTEMERROR`, `NOAUTH`, `ORDERPAID`, …) so a client understands either generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: a parameter is missing, of the wrong type or breaks a field rule.
    ParamError,
    /// 400: well-formed, but against the protocol or a business rule.
    InvalidRequest,
    /// 401: the request signature did not verify.
    SignError,
    /// 500: retry later with the same parameters.
    #[serde(alias = "SYSTEMERROR")]
    SystemError,
    /// 400: the appid is not bound to the mchid.
    AppidMchidNotMatch,
    /// 400 on prepay; the refund table says 404, use [`ApiError::with_status`] there.
    MchNotExists,
    /// 403: the merchant has no permission for this product.
    #[serde(alias = "NOAUTH")]
    NoAuth,
    /// 403: the out_trade_no was used with other parameters (reference §4.6 recommendation).
    OutTradeNoUsed,
    /// 429: rate limited. The basic-rules page example spells it `RATE_LIMITED`; accepted too.
    #[serde(alias = "RATE_LIMITED")]
    FrequencyLimited,
    /// 404: no such order.
    #[serde(alias = "ORDERNOTEXIST")]
    OrderNotExist,
    /// 400: the order is closed or expired (old V3 table).
    OrderClosed,
    /// 400: the order is already paid (close or re-prepay of a paid order).
    ///
    /// Wire `ORDER_PAID`: the only cited V3 source (排障手册 §五, reference §4.4) spells it so, and
    /// V3 codes are underscored; the V2-era `ORDERPAID` is accepted when parsing. The status is
    /// UNCONFIRMED (400 or 403); 400 follows §4.6 "likely … 400".
    #[serde(alias = "ORDERPAID")]
    OrderPaid,
    /// 403: trade error (query/close, old table).
    TradeError,
    /// 403: blocked by a business rule (old table `RULELIMIT`).
    #[serde(alias = "RULELIMIT")]
    RuleLimit,
    /// 403: insufficient balance (refund, profit sharing).
    #[serde(alias = "NOTENOUGH")]
    NotEnough,
    /// 403: the user's account is abnormal (refund).
    UserAccountAbnormal,
    /// 404: the referenced order/refund does not exist (refund table).
    ResourceNotExists,
    /// 400: no bill for that day (no trades); do not retry.
    NoStatementExist,
    /// 400: the bill is not generated yet (after about 09:00–10:00 the next day).
    StatementCreating,
    /// 404: e.g. `/v3/certificates` in public-key mode (status UNCONFIRMED).
    NotFound,
    /// 403: the request was blocked (third-party list only; status UNCONFIRMED).
    RequestBlocked,
    /// 202: payment-code order waiting for the user's password (wire `USERPAYING`, as in §6.3).
    #[serde(rename = "USERPAYING", alias = "USER_PAYING")]
    UserPaying,
    /// 500: bank system error (old table `BANKERROR`).
    #[serde(alias = "BANKERROR")]
    BankError,
    /// 403: account error (old table `ACCOUNTERROR`).
    #[serde(alias = "ACCOUNTERROR")]
    AccountError,
    /// 500: openid does not belong to the appid (old table, status as listed there).
    OpenidMismatch,
}

/// Every code, for tables and exhaustive tests.
pub const ALL_ERROR_CODES: [ErrorCode; 25] = [
    ErrorCode::ParamError,
    ErrorCode::InvalidRequest,
    ErrorCode::SignError,
    ErrorCode::SystemError,
    ErrorCode::AppidMchidNotMatch,
    ErrorCode::MchNotExists,
    ErrorCode::NoAuth,
    ErrorCode::OutTradeNoUsed,
    ErrorCode::FrequencyLimited,
    ErrorCode::OrderNotExist,
    ErrorCode::OrderClosed,
    ErrorCode::OrderPaid,
    ErrorCode::TradeError,
    ErrorCode::RuleLimit,
    ErrorCode::NotEnough,
    ErrorCode::UserAccountAbnormal,
    ErrorCode::ResourceNotExists,
    ErrorCode::NoStatementExist,
    ErrorCode::StatementCreating,
    ErrorCode::NotFound,
    ErrorCode::RequestBlocked,
    ErrorCode::UserPaying,
    ErrorCode::BankError,
    ErrorCode::AccountError,
    ErrorCode::OpenidMismatch,
];

impl ErrorCode {
    /// The HTTP status WeChat answers with for this code (reference §6.2/§6.3).
    pub fn http_status(&self) -> u16 {
        use ErrorCode::*;
        match self {
            ParamError | InvalidRequest | AppidMchidNotMatch | MchNotExists | OrderClosed
            | OrderPaid | NoStatementExist | StatementCreating => 400,
            SignError => 401,
            NoAuth | OutTradeNoUsed | TradeError | RuleLimit | NotEnough | UserAccountAbnormal
            | RequestBlocked | AccountError => 403,
            OrderNotExist | ResourceNotExists | NotFound => 404,
            FrequencyLimited => 429,
            SystemError | BankError | OpenidMismatch => 500,
            UserPaying => 202,
        }
    }

    /// The wire code, e.g. `"PARAM_ERROR"`.
    pub fn as_str(&self) -> &'static str {
        use ErrorCode::*;
        match self {
            ParamError => "PARAM_ERROR",
            InvalidRequest => "INVALID_REQUEST",
            SignError => "SIGN_ERROR",
            SystemError => "SYSTEM_ERROR",
            AppidMchidNotMatch => "APPID_MCHID_NOT_MATCH",
            MchNotExists => "MCH_NOT_EXISTS",
            NoAuth => "NO_AUTH",
            OutTradeNoUsed => "OUT_TRADE_NO_USED",
            FrequencyLimited => "FREQUENCY_LIMITED",
            OrderNotExist => "ORDER_NOT_EXIST",
            OrderClosed => "ORDER_CLOSED",
            OrderPaid => "ORDER_PAID",
            TradeError => "TRADE_ERROR",
            RuleLimit => "RULE_LIMIT",
            NotEnough => "NOT_ENOUGH",
            UserAccountAbnormal => "USER_ACCOUNT_ABNORMAL",
            ResourceNotExists => "RESOURCE_NOT_EXISTS",
            NoStatementExist => "NO_STATEMENT_EXIST",
            StatementCreating => "STATEMENT_CREATING",
            NotFound => "NOT_FOUND",
            RequestBlocked => "REQUEST_BLOCKED",
            UserPaying => "USERPAYING",
            BankError => "BANK_ERROR",
            AccountError => "ACCOUNT_ERROR",
            OpenidMismatch => "OPENID_MISMATCH",
        }
    }

    /// The default message, in Chinese as WeChat sends it. Callers may pass a more precise one.
    pub fn default_message(&self) -> &'static str {
        use ErrorCode::*;
        match self {
            ParamError => "参数错误",
            InvalidRequest => "HTTP 请求不符合微信支付 APIv3 接口规则",
            SignError => "签名错误",
            SystemError => "系统错误",
            AppidMchidNotMatch => "AppID和mch_id不匹配",
            MchNotExists => "商户号不存在",
            NoAuth => "商户无权限",
            // §4.6: the message merchants actually see for a re-used out_trade_no.
            OutTradeNoUsed => "201 商户订单号重复",
            FrequencyLimited => "频率超限",
            OrderNotExist => "订单不存在",
            OrderClosed => "订单已关闭",
            OrderPaid => "订单已支付",
            TradeError => "交易错误",
            RuleLimit => "业务规则限制",
            NotEnough => "余额不足",
            UserAccountAbnormal => "用户账户异常",
            ResourceNotExists => "资源不存在",
            NoStatementExist => "账单不存在",
            StatementCreating => "账单生成中",
            NotFound => "资源不存在",
            RequestBlocked => "请求受阻",
            UserPaying => "用户支付中，需要输入密码",
            BankError => "银行系统异常",
            AccountError => "账号异常",
            OpenidMismatch => "openid和appid不匹配",
        }
    }

    /// Parses a wire code, accepting the old un-underscored spellings too; `None` if unknown.
    pub fn parse(s: &str) -> Option<Self> {
        use ErrorCode::*;
        let code = match s {
            "SYSTEMERROR" => SystemError,
            "NOAUTH" => NoAuth,
            "RATE_LIMITED" => FrequencyLimited,
            "ORDERNOTEXIST" => OrderNotExist,
            "ORDERPAID" => OrderPaid,
            "RULELIMIT" => RuleLimit,
            "NOTENOUGH" => NotEnough,
            "USER_PAYING" => UserPaying,
            "BANKERROR" => BankError,
            "ACCOUNTERROR" => AccountError,
            other => {
                return ALL_ERROR_CODES
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == other);
            }
        };
        Some(code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error answer: code, message and the optional free-form `detail`.
///
/// `status_override` exists because one code can carry two statuses: `MCH_NOT_EXISTS` is 400 on
/// prepay but 404 in the refund table. `None` means the code's own [`ErrorCode::http_status`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub status_override: Option<u16>,
}

/// Where a rejected parameter came from, as in `detail.location`.
pub const LOCATION_BODY: &str = "body";
/// See [`LOCATION_BODY`].
pub const LOCATION_QUERY: &str = "query";
/// See [`LOCATION_BODY`].
pub const LOCATION_PATH: &str = "path";

/// Largest JSON body accepted by [`decode_json`]: 50 receivers with encrypted names stay far
/// below this, and it bounds the work an unauthenticated peer can make us do.
pub const JSON_BODY_BYTES_MAX: usize = 1024 * 1024;

#[derive(Serialize)]
struct WireOut<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

#[derive(Deserialize)]
struct WireIn {
    code: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            detail: None,
            status_override: None,
        }
    }

    /// The code with its default message.
    pub fn of(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Answers with `status` instead of the code's default (see the type's doc).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status_override = Some(status);
        self
    }

    /// 400 `PARAM_ERROR` for a body field: `field` is a JSON pointer such as `/amount/total`.
    pub fn param(field: &str, issue: impl Into<String>) -> Self {
        Self::param_in(LOCATION_BODY, field, issue)
    }

    /// 400 `PARAM_ERROR` for a parameter at `location` (`body`, `query` or `path`).
    pub fn param_in(location: &str, field: &str, issue: impl Into<String>) -> Self {
        let issue = issue.into();
        let message = if field.is_empty() {
            format!("参数错误：{issue}")
        } else {
            format!("参数错误：{field} {issue}")
        };
        let detail = serde_json::json!({"field": field, "issue": issue, "location": location});
        Self::new(ErrorCode::ParamError, message).with_detail(detail)
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.status_override
            .unwrap_or_else(|| self.code.http_status())
    }

    /// The wire body: compact `{"code":..,"message":..,"detail"?:..}` in that key order.
    pub fn to_body(&self) -> Vec<u8> {
        let wire = WireOut {
            code: self.code.as_str(),
            message: &self.message,
            detail: self.detail.as_ref(),
        };
        // Serializing strings and a Value cannot fail; keep a fixed fallback rather than panic.
        serde_json::to_vec(&wire).unwrap_or_else(|_| {
            format!(
                r#"{{"code":"{}","message":"{}"}}"#,
                self.code.as_str(),
                self.code.default_message()
            )
            .into_bytes()
        })
    }

    /// Client side: reads an error answer. `None` if the body is not a V3 error body or its code
    /// is not in the catalogue (the caller keeps the raw status and body then). A status other
    /// than the code's default is kept in `status_override`, so [`ApiError::status`] is what was
    /// received.
    pub fn from_body(status: u16, body: &[u8]) -> Option<Self> {
        let wire: WireIn = serde_json::from_slice(body).ok()?;
        let code = ErrorCode::parse(&wire.code)?;
        let message = wire
            .message
            .unwrap_or_else(|| code.default_message().to_owned());
        let status_override = (status != code.http_status()).then_some(status);
        Some(ApiError {
            code,
            message,
            detail: wire.detail,
            status_override,
        })
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        ApiError::of(code)
    }
}

/// Decodes a JSON object body into `T`; any failure becomes a 400 `PARAM_ERROR` whose detail names the
/// JSON pointer of the offending field (from `serde_path_to_error`) and whose issue says what
/// was wrong, never a panic.
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > JSON_BODY_BYTES_MAX {
        let issue = format!(
            "body is {} bytes, more than {JSON_BODY_BYTES_MAX}",
            body.len()
        );
        return Err(ApiError::new(ErrorCode::InvalidRequest, issue));
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::param(
                "",
                "request body is empty, a JSON object is required",
            ));
        }
        // Every V3 body is an object; serde would otherwise read a struct from an array.
        Some(b'{') => {}
        Some(_) => return Err(ApiError::param("", "request body must be a JSON object")),
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| path_error_to_api(LOCATION_BODY, e))?;
    // Trailing garbage after the object ("{}x") is a syntax error too.
    de.end()
        .map_err(|e| json_error_to_api(LOCATION_BODY, String::new(), &e))?;
    Ok(value)
}

/// Decodes an already-built JSON value (e.g. a decoded query string) into `T`, with the same
/// error mapping as [`decode_json`] and `location` in the detail.
pub fn decode_value<T: DeserializeOwned>(
    location: &str,
    value: serde_json::Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| path_error_to_api(location, e))
}

fn path_error_to_api(location: &str, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let mut pointer = String::new();
    for segment in e.path().iter() {
        use serde_path_to_error::Segment;
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                pointer.push('/');
                // RFC 6901 escaping: "~" then "/".
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    json_error_to_api(location, pointer, e.inner())
}

fn json_error_to_api(location: &str, pointer: String, e: &serde_json::Error) -> ApiError {
    let full = e.to_string();
    // serde_json appends " at line L column C"; keep the bare reason for the issue text.
    let reason = match full.rfind(" at line ") {
        Some(at) if e.line() != 0 => &full[..at],
        _ => full.as_str(),
    };
    match e.classify() {
        serde_json::error::Category::Data => {
            if let Some(missing) = missing_field_name(reason) {
                let field = format!("{pointer}/{missing}");
                return ApiError::param_in(location, &field, "is required (此字段为必填项)");
            }
            ApiError::param_in(location, &pointer, reason.to_owned())
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            let issue = format!(
                "invalid JSON ({reason}) at line {} column {}",
                e.line(),
                e.column()
            );
            ApiError::param_in(location, &pointer, issue)
        }
        serde_json::error::Category::Io => {
            ApiError::param_in(location, &pointer, reason.to_owned())
        }
    }
}

/// `missing field `total`` → `total`.
fn missing_field_name(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("missing field `")?;
    rest.strip_suffix('`')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_code_round_trips_through_its_wire_name() {
        for code in ALL_ERROR_CODES {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!(!code.default_message().is_empty());
        }
    }

    #[test]
    fn statuses_follow_the_reference_tables() {
        assert_eq!(ErrorCode::ParamError.http_status(), 400);
        assert_eq!(ErrorCode::SignError.http_status(), 401);
        assert_eq!(ErrorCode::OutTradeNoUsed.http_status(), 403);
        assert_eq!(ErrorCode::OrderNotExist.http_status(), 404);
        assert_eq!(ErrorCode::ResourceNotExists.http_status(), 404);
        assert_eq!(ErrorCode::FrequencyLimited.http_status(), 429);
        assert_eq!(ErrorCode::SystemError.http_status(), 500);
        assert_eq!(ErrorCode::MchNotExists.http_status(), 400);
        assert_eq!(ErrorCode::NoStatementExist.http_status(), 400);
    }

    #[test]
    fn old_spellings_parse_to_the_modern_code() {
        assert_eq!(ErrorCode::parse("ORDERPAID"), Some(ErrorCode::OrderPaid));
        assert_eq!(ErrorCode::parse("ORDER_PAID"), Some(ErrorCode::OrderPaid));
        assert_eq!(
            ErrorCode::parse("SYSTEMERROR"),
            Some(ErrorCode::SystemError)
        );
        assert_eq!(
            ErrorCode::parse("RATE_LIMITED"),
            Some(ErrorCode::FrequencyLimited)
        );
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"NOAUTH\"").unwrap(),
            ErrorCode::NoAuth
        );
        assert_eq!(ErrorCode::parse("NO_SUCH_CODE"), None);
        assert_eq!(ErrorCode::parse(""), None);
    }

    #[test]
    fn body_is_compact_with_code_message_detail_in_order() {
        let e = ApiError::of(ErrorCode::OrderNotExist);
        assert_eq!(
            e.to_body(),
            r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#.as_bytes()
        );
        let e = ApiError::param("/amount/total", "must be at least 1");
        let body = String::from_utf8(e.to_body()).unwrap();
        assert!(
            body.starts_with(r#"{"code":"PARAM_ERROR","message":"参数错误：/amount/total must"#)
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["detail"],
            json!({"field": "/amount/total", "issue": "must be at least 1", "location": "body"})
        );
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn mch_not_exists_is_404_on_refunds_via_status_override() {
        let e = ApiError::of(ErrorCode::MchNotExists).with_status(404);
        assert_eq!(e.status(), 404);
        assert_eq!(ApiError::of(ErrorCode::MchNotExists).status(), 400);
    }

    #[test]
    fn from_body_reads_what_to_body_wrote_and_keeps_the_received_status() {
        let e = ApiError::param("/out_trade_no", "too long").with_detail(json!({"x": 1}));
        assert_eq!(ApiError::from_body(400, &e.to_body()), Some(e.clone()));
        let moved = ApiError::from_body(404, &ApiError::of(ErrorCode::MchNotExists).to_body());
        assert_eq!(moved.map(|m| m.status()), Some(404));
        // A message-less body falls back to the default message.
        let bare = ApiError::from_body(401, br#"{"code":"SIGN_ERROR"}"#).unwrap();
        assert_eq!(bare.message, "签名错误");
        assert_eq!(bare.status_override, None);
        assert_eq!(ApiError::from_body(500, b"<html>oops</html>"), None);
        assert_eq!(
            ApiError::from_body(400, br#"{"code":"WHATEVER","message":"m"}"#),
            None
        );
        assert_eq!(ApiError::from_body(400, br#"{"code":1}"#), None);
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        total: i64,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        amount: Inner,
        list: Option<Vec<Inner>>,
    }

    fn field_of(e: &ApiError) -> String {
        e.detail.as_ref().unwrap()["field"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn decode_names_the_json_pointer_of_a_missing_or_mistyped_field() {
        let e = decode_json::<Outer>(br#"{"amount":{}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::ParamError);
        assert_eq!(field_of(&e), "/amount/total");
        let e = decode_json::<Outer>(br#"{"amount":{"total":"100"}}"#).unwrap_err();
        assert_eq!(field_of(&e), "/amount/total");
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e =
            decode_json::<Outer>(br#"{"amount":{"total":1},"list":[{"total":1},{"total":1.5}]}"#)
                .unwrap_err();
        assert_eq!(field_of(&e), "/list/1/total");
    }

    #[test]
    fn decode_rejects_syntax_errors_empty_and_trailing_garbage_as_param_error() {
        for body in [
            &b""[..],
            b"  \n",
            b"{",
            b"{\"amount\":",
            b"nul",
            b"[{\"total\":1},null]",
            b"{\"amount\":{\"total\":1}}x",
        ] {
            let e = decode_json::<Outer>(body).unwrap_err();
            assert_eq!(e.code, ErrorCode::ParamError, "{body:?}");
            assert_eq!(e.status(), 400);
        }
        let e = decode_json::<Outer>(b"{\n  \"amount\": x}").unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
        let big = vec![b' '; JSON_BODY_BYTES_MAX + 1];
        assert_eq!(
            decode_json::<Outer>(&big).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn decode_value_reports_its_location() {
        let e = decode_value::<Inner>(LOCATION_QUERY, json!({})).unwrap_err();
        assert_eq!(e.detail.unwrap()["location"], "query");
    }
}
