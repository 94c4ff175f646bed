//! Field rules of the V3 API (reference §8) as pure functions, and [`parse_json`], the one entry
//! point that turns a request body into a validated model.
//!
//! Every check returns `Err(ApiError::param(field, issue))`: a 400 `PARAM_ERROR` whose detail
//! carries the JSON pointer of the field, so a merchant sees which field broke which rule.

use paygate_core::error::{ApiError, decode_json};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

/// `out_trade_no` and `combine_out_trade_no` length, in characters.
pub const OUT_TRADE_NO_CHARS_MIN: usize = 6;
/// See [`OUT_TRADE_NO_CHARS_MIN`].
pub const OUT_TRADE_NO_CHARS_MAX: usize = 32;
/// `out_refund_no`, `out_order_no`, `out_return_no`.
pub const OUT_REQUEST_NO_CHARS_MAX: usize = 64;
/// `notify_url` on prepay (`string(255)` in the current docs).
pub const NOTIFY_URL_CHARS_MAX: usize = 255;
/// `notify_url` on refunds (`string(256)`).
pub const REFUND_NOTIFY_URL_CHARS_MAX: usize = 256;
/// `time_expire` is `string(64)`.
pub const TIME_CHARS_MAX: usize = 64;

/// A request model that knows its own field rules.
pub trait Validate {
    fn validate(&self) -> Result<(), ApiError>;
}

impl<T: Validate + ?Sized> Validate for &T {
    fn validate(&self) -> Result<(), ApiError> {
        (**self).validate()
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self) -> Result<(), ApiError> {
        match self {
            Some(v) => v.validate(),
            None => Ok(()),
        }
    }
}

/// Decodes a JSON body into `T` and applies its field rules. Syntax and type errors become
/// 400 `PARAM_ERROR` naming the field's JSON pointer (never a panic); unknown fields are
/// ignored and `null` counts as absent for optional fields.
pub fn parse_json<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, ApiError> {
    let value: T = decode_json(body)?;
    value.validate()?;
    Ok(value)
}

/// Length in characters (Unicode scalar values), inclusive bounds.
pub fn check_len(
    field: &str,
    value: &str,
    min_chars: usize,
    max_chars: usize,
) -> Result<(), ApiError> {
    // Counting stops early so a huge string costs no more than max_chars + 1 steps.
    let count = value.chars().take(max_chars.saturating_add(1)).count();
    if count < min_chars {
        if min_chars == 1 {
            return Err(ApiError::param(field, "must not be empty"));
        }
        let issue = format!("must be at least {min_chars} characters, got {count}");
        return Err(ApiError::param(field, issue));
    }
    if count > max_chars {
        return Err(ApiError::param(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(())
}

/// The V3 charset: UTF-8 with 1–3 byte characters only, so no emoji or other characters
/// outside the Basic Multilingual Plane.
pub fn check_no_4byte(field: &str, value: &str) -> Result<(), ApiError> {
    match value.chars().position(|c| c.len_utf8() == 4) {
        Some(at) => Err(ApiError::param(
            field,
            format!("contains a 4-byte UTF-8 character (e.g. emoji) at character {at}"),
        )),
        None => Ok(()),
    }
}

/// A free-text field: no 4-byte characters and a length within bounds.
pub fn check_text(
    field: &str,
    value: &str,
    min_chars: usize,
    max_chars: usize,
) -> Result<(), ApiError> {
    check_no_4byte(field, value)?;
    check_len(field, value, min_chars, max_chars)
}

/// The same as [`check_text`] when the field is optional.
pub fn check_opt_text(
    field: &str,
    value: Option<&str>,
    min_chars: usize,
    max_chars: usize,
) -> Result<(), ApiError> {
    match value {
        Some(v) => check_text(field, v, min_chars, max_chars),
        None => Ok(()),
    }
}

fn check_charset(field: &str, value: &str, extra: &[char], allowed: &str) -> Result<(), ApiError> {
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(c)))
    {
        Some(bad) => Err(ApiError::param(
            field,
            format!("contains {bad:?}; only digits, letters and {allowed} are allowed"),
        )),
        None => Ok(()),
    }
}

/// `out_trade_no` (and `combine_out_trade_no`): 6–32 characters of `[0-9A-Za-z_\-|*]`.
pub fn check_out_trade_no(field: &str, v: &str) -> Result<(), ApiError> {
    check_len(field, v, OUT_TRADE_NO_CHARS_MIN, OUT_TRADE_NO_CHARS_MAX)?;
    check_charset(field, v, &['_', '-', '|', '*'], "_-|*")
}

/// `out_refund_no`, `out_order_no`, `out_return_no`: 1–64 characters of `[0-9A-Za-z_\-|*@]`.
pub fn check_out_request_no(field: &str, v: &str) -> Result<(), ApiError> {
    check_len(field, v, 1, OUT_REQUEST_NO_CHARS_MAX)?;
    check_charset(field, v, &['_', '-', '|', '*', '@'], "_-|*@")
}

/// An id the merchant does not choose (appid, mchid, transaction_id, openid…): printable ASCII
/// without spaces, 1..=max characters. WeChat ids are ASCII; this keeps control characters and
/// path separators out of keys and URLs.
pub fn check_id(field: &str, v: &str, max_chars: usize) -> Result<(), ApiError> {
    check_len(field, v, 1, max_chars)?;
    match v
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | '?' | '#' | '%'))
    {
        Some(bad) => Err(ApiError::param(
            field,
            format!("contains {bad:?}, not allowed in an id"),
        )),
        None => Ok(()),
    }
}

/// `notify_url`: `http://` or `https://` with a host, at most 255 characters, no query string.
/// Reachability (no localhost or internal address) is a deployment policy, see
/// [`check_notify_url_public`].
pub fn check_notify_url(field: &str, v: &str) -> Result<(), ApiError> {
    check_url(field, v, NOTIFY_URL_CHARS_MAX)
}

/// [`check_notify_url`] with a caller-chosen maximum (refunds allow 256).
pub fn check_url(field: &str, v: &str, max_chars: usize) -> Result<(), ApiError> {
    check_len(field, v, 1, max_chars)?;
    let lower = v.get(..8).unwrap_or(v).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &v[8..]
    } else if lower.starts_with("http://") {
        &v[7..]
    } else {
        return Err(ApiError::param(
            field,
            "must start with https:// or http://",
        ));
    };
    if v.contains('?') {
        return Err(ApiError::param(
            field,
            "must not carry a query string (不允许携带查询串)",
        ));
    }
    if let Some(bad) = v.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::param(field, format!("contains {bad:?}")));
    }
    if host_of(rest).is_empty() {
        return Err(ApiError::param(field, "has no host"));
    }
    Ok(())
}

/// The host part of the URL after the scheme (without port or userinfo).
fn host_of(after_scheme: &str) -> &str {
    let authority = after_scheme.split(['/', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host_port.split(':').next().unwrap_or("")
}

/// [`check_notify_url`] plus WeChat's reachability rule: no localhost and no loopback,
/// private, link-local or unspecified IP literal. A gateway in production applies this; the
/// simulator and tests, which call back to 127.0.0.1, use [`check_notify_url`] alone.
pub fn check_notify_url_public(field: &str, v: &str) -> Result<(), ApiError> {
    check_notify_url(field, v)?;
    let after_scheme = v.split_once("://").map(|(_, r)| r).unwrap_or("");
    let host = host_of(after_scheme).to_ascii_lowercase();
    let internal = host == "localhost"
        || host.ends_with(".localhost")
        || match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => {
                ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
            }
            Ok(std::net::IpAddr::V6(ip)) => {
                // fc00::/7 unique-local and fe80::/10 link-local.
                let first = ip.segments()[0];
                ip.is_loopback()
                    || ip.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
            Err(_) => false,
        };
    if internal {
        return Err(ApiError::param(
            field,
            "must be reachable from the internet",
        ));
    }
    Ok(())
}

/// RFC 3339 time (`2018-06-08T10:34:56+08:00`, `…Z`, any offset, optional fraction),
/// at most 64 characters.
pub fn check_rfc3339(field: &str, v: &str) -> Result<OffsetDateTime, ApiError> {
    check_len(field, v, 1, TIME_CHARS_MAX)?;
    paygate_core::timefmt::parse_rfc3339(v).ok_or_else(|| {
        ApiError::param(
            field,
            "must be an RFC 3339 time like 2018-06-08T10:34:56+08:00",
        )
    })
}

/// A money amount in fen: at least 1.
pub fn check_amount(field: &str, fen: i64) -> Result<(), ApiError> {
    if fen < 1 {
        return Err(ApiError::param(
            field,
            format!("must be at least 1 (fen), got {fen}"),
        ));
    }
    Ok(())
}

/// A count or price that may be zero but not negative.
pub fn check_non_negative(field: &str, n: i64) -> Result<(), ApiError> {
    if n < 0 {
        return Err(ApiError::param(
            field,
            format!("must not be negative, got {n}"),
        ));
    }
    Ok(())
}

/// Currency: only `CNY` for domestic merchants.
pub fn check_currency(field: &str, v: &str) -> Result<(), ApiError> {
    if v != "CNY" {
        return Err(ApiError::param(field, format!("must be CNY, got {v:?}")));
    }
    Ok(())
}

/// `payer_client_ip`: an IPv4 or IPv6 address, at most 45 characters.
pub fn check_ip(field: &str, v: &str) -> Result<(), ApiError> {
    check_len(field, v, 1, 45)?;
    v.parse::<std::net::IpAddr>()
        .map(|_| ())
        .map_err(|_| ApiError::param(field, "must be an IPv4 or IPv6 address"))
}

/// `bill_date`: `YYYY-MM-DD`, a real calendar date.
pub fn check_bill_date(field: &str, v: &str) -> Result<time::Date, ApiError> {
    paygate_core::timefmt::parse_date(v)
        .ok_or_else(|| ApiError::param(field, "must be a date formatted YYYY-MM-DD"))
}

/// A list length within inclusive bounds.
pub fn check_count(field: &str, n: usize, min: usize, max: usize) -> Result<(), ApiError> {
    if n < min || n > max {
        return Err(ApiError::param(
            field,
            format!("must have {min} to {max} entries, got {n}"),
        ));
    }
    Ok(())
}

/// A field required in this context but absent (or `null`).
pub fn require<'a, T>(field: &str, v: Option<&'a T>) -> Result<&'a T, ApiError>
where
    T: ?Sized,
{
    v.ok_or_else(|| ApiError::param(field, "is required (此字段为必填项)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use paygate_core::error::ErrorCode;

    fn pointer(e: &ApiError) -> &str {
        e.detail
            .as_ref()
            .and_then(|d| d["field"].as_str())
            .unwrap_or("")
    }

    #[test]
    fn len_counts_characters_not_bytes() {
        let chinese = "测".repeat(127);
        assert!(check_len("/description", &chinese, 1, 127).is_ok());
        let e = check_len("/description", &format!("{chinese}x"), 1, 127).unwrap_err();
        assert_eq!(e.code, ErrorCode::ParamError);
        assert_eq!(pointer(&e), "/description");
        assert!(check_len("/description", "", 1, 127).is_err());
    }

    #[test]
    fn four_byte_characters_are_rejected_three_byte_accepted() {
        assert!(check_no_4byte("/d", "Image形象店-深圳腾大-QQ公仔").is_ok());
        assert!(check_no_4byte("/d", "€ ½ 😀").is_err());
        assert!(check_no_4byte("/d", "𠀀").is_err()); // CJK extension B is 4 bytes too
        assert_eq!(
            pointer(&check_text("/attach", "a😀", 0, 128).unwrap_err()),
            "/attach"
        );
    }

    #[test]
    fn out_trade_no_is_6_to_32_of_the_allowed_charset() {
        assert!(check_out_trade_no("/o", "1217752501201407033233368018").is_ok());
        assert!(check_out_trade_no("/o", "aZ_-|*").is_ok());
        assert!(check_out_trade_no("/o", "12345").is_err());
        assert!(check_out_trade_no("/o", &"1".repeat(32)).is_ok());
        assert!(check_out_trade_no("/o", &"1".repeat(33)).is_err());
        assert!(check_out_trade_no("/o", "abc@def").is_err());
        assert!(check_out_trade_no("/o", "abc def").is_err());
        assert!(check_out_trade_no("/o", "订单号订单号").is_err());
    }

    #[test]
    fn out_request_no_allows_at_and_up_to_64() {
        assert!(check_out_request_no("/out_refund_no", "r@1").is_ok());
        assert!(check_out_request_no("/out_refund_no", "").is_err());
        assert!(check_out_request_no("/out_refund_no", &"r".repeat(64)).is_ok());
        assert!(check_out_request_no("/out_refund_no", &"r".repeat(65)).is_err());
        assert!(check_out_request_no("/out_refund_no", "r/1").is_err());
    }

    #[test]
    fn notify_url_needs_http_scheme_host_and_no_query() {
        assert!(check_notify_url("/n", "https://www.weixin.qq.com/wxpay/pay.php").is_ok());
        assert!(check_notify_url("/n", "http://127.0.0.1:8080/notify").is_ok());
        assert!(check_notify_url("/n", "HTTPS://example.com/n").is_ok());
        assert!(check_notify_url("/n", "https://example.com/n?a=1").is_err());
        assert!(check_notify_url("/n", "ftp://example.com/n").is_err());
        assert!(check_notify_url("/n", "https:///n").is_err());
        assert!(check_notify_url("/n", "https://exa mple.com/").is_err());
        let long = format!("https://example.com/{}", "a".repeat(236));
        assert_eq!(long.len(), 256);
        assert!(check_notify_url("/n", &long).is_err());
        assert!(check_url("/n", &long, REFUND_NOTIFY_URL_CHARS_MAX).is_ok());
    }

    #[test]
    fn public_notify_url_rejects_internal_hosts() {
        assert!(check_notify_url_public("/n", "https://pay.example.com/n").is_ok());
        for internal in [
            "http://localhost/n",
            "http://127.0.0.1:9000/n",
            "http://10.1.2.3/n",
            "http://192.168.0.1/n",
            "http://user@172.16.0.1/n",
            "http://[::1]:80/n",
            "http://[fd00::1]/n",
        ] {
            assert!(
                check_notify_url_public("/n", internal).is_err(),
                "{internal}"
            );
        }
    }

    #[test]
    fn rfc3339_accepts_offsets_z_and_fractions() {
        let a = check_rfc3339("/t", "2018-06-08T10:34:56+08:00").unwrap();
        let b = check_rfc3339("/t", "2018-06-08T02:34:56Z").unwrap();
        let c = check_rfc3339("/t", "2018-06-08T02:34:56.123456789Z").unwrap();
        assert_eq!(a, b);
        assert!(c > b);
        assert!(check_rfc3339("/t", "2018-06-08T10:34:56.123-05:30").is_ok());
        for bad in [
            "2018-06-08 10:34:56",
            "2018-06-08",
            "",
            "2018-13-08T10:34:56+08:00",
        ] {
            assert_eq!(
                pointer(&check_rfc3339("/time_expire", bad).unwrap_err()),
                "/time_expire"
            );
        }
    }

    #[test]
    fn amounts_currency_ip_date_and_counts() {
        assert!(check_amount("/amount/total", 1).is_ok());
        assert!(check_amount("/amount/total", 0).is_err());
        assert!(check_amount("/amount/total", -5).is_err());
        assert!(check_non_negative("/x", 0).is_ok());
        assert!(check_non_negative("/x", -1).is_err());
        assert!(check_currency("/amount/currency", "CNY").is_ok());
        assert!(check_currency("/amount/currency", "cny").is_err());
        assert!(check_currency("/amount/currency", "USD").is_err());
        assert!(check_ip("/ip", "14.23.150.211").is_ok());
        assert!(check_ip("/ip", "2001:db8::1").is_ok());
        assert!(check_ip("/ip", "not-an-ip").is_err());
        assert!(check_bill_date("/bill_date", "2019-06-11").is_ok());
        assert!(check_bill_date("/bill_date", "2019-02-30").is_err());
        assert!(check_bill_date("/bill_date", "20190611").is_err());
        assert!(check_count("/receivers", 0, 1, 50).is_err());
        assert!(check_count("/receivers", 51, 1, 50).is_err());
        assert!(check_count("/receivers", 50, 1, 50).is_ok());
    }

    #[test]
    fn ids_are_printable_ascii_without_separators() {
        assert!(check_id("/appid", "wxd678efh567hg6787", 32).is_ok());
        assert!(check_id("/appid", "", 32).is_err());
        assert!(check_id("/appid", "wx/../x", 32).is_err());
        assert!(check_id("/appid", "wx 1", 32).is_err());
        assert!(check_id("/appid", &"w".repeat(33), 32).is_err());
    }
}
