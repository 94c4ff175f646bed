//! What a channel call can end in besides success, and the one table of WeChat Pay error codes
//! that decides what the gateway does next (retry, try another channel, or stop).

use paygate_core::error::ApiError;
use paygate_wxpay::client::ClientError;

use crate::config::ConfigError;

/// `code` of a [`ChannelError::Rejected`] produced by paygate before anything was sent because
/// the channel's own configuration or keys are unusable.
pub const CODE_CHANNEL_CONFIG: &str = "CHANNEL_CONFIG";

/// A channel call that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A definite answer: the channel did not create or do it (HTTP 4xx, 429 included). Requests
    /// refused locally before sending (bad parameters, unusable configuration) land here too,
    /// with the code WeChat Pay would have used (`PARAM_ERROR`) or [`CODE_CHANNEL_CONFIG`].
    #[error("channel rejected the request: HTTP {status} {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// Timeout, connection error, 5xx, or a 2xx that could not be verified or read: the outcome
    /// is NOT known. Query the channel (or repeat the identical request) before deciding.
    #[error("channel outcome unknown: {reason}")]
    Unknown { reason: String },
}

/// What to do after a failed call, from [`ERROR_TABLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorAction {
    /// Transient: the same request (same out_trade_no, same parameters) may succeed later.
    Retry,
    /// This channel account cannot do it (permissions, binding, keys): do not retry here; another
    /// channel may succeed.
    SwitchChannel,
    /// The request or the order's state forbids it; another try or channel would fail the same way.
    Stop,
}

/// The WeChat Pay error codes paygate knows, old (un-underscored) spellings included. A code not
/// listed is [`ErrorAction::Retry`] when answered with 429 and [`ErrorAction::Stop`] otherwise.
pub const ERROR_TABLE: &[(&str, ErrorAction)] = &[
    // Transient on WeChat's side or ours.
    ("SYSTEM_ERROR", ErrorAction::Retry),
    ("SYSTEMERROR", ErrorAction::Retry),
    ("FREQUENCY_LIMITED", ErrorAction::Retry),
    ("RATE_LIMITED", ErrorAction::Retry),
    ("BANK_ERROR", ErrorAction::Retry),
    ("BANKERROR", ErrorAction::Retry),
    ("USERPAYING", ErrorAction::Retry),
    ("USER_PAYING", ErrorAction::Retry),
    ("STATEMENT_CREATING", ErrorAction::Retry),
    // The channel account itself: keys, permissions, appid binding.
    ("SIGN_ERROR", ErrorAction::SwitchChannel),
    ("NO_AUTH", ErrorAction::SwitchChannel),
    ("NOAUTH", ErrorAction::SwitchChannel),
    ("MCH_NOT_EXISTS", ErrorAction::SwitchChannel),
    ("APPID_MCHID_NOT_MATCH", ErrorAction::SwitchChannel),
    ("ACCOUNT_ERROR", ErrorAction::SwitchChannel),
    ("ACCOUNTERROR", ErrorAction::SwitchChannel),
    ("REQUEST_BLOCKED", ErrorAction::SwitchChannel),
    (CODE_CHANNEL_CONFIG, ErrorAction::SwitchChannel),
    // The request, or the order's state at the channel: the answer will not change.
    ("PARAM_ERROR", ErrorAction::Stop),
    ("INVALID_REQUEST", ErrorAction::Stop),
    ("OUT_TRADE_NO_USED", ErrorAction::Stop),
    ("ORDER_PAID", ErrorAction::Stop),
    ("ORDERPAID", ErrorAction::Stop),
    ("ORDER_CLOSED", ErrorAction::Stop),
    ("ORDER_NOT_EXIST", ErrorAction::Stop),
    ("ORDERNOTEXIST", ErrorAction::Stop),
    ("RESOURCE_NOT_EXISTS", ErrorAction::Stop),
    ("NOT_FOUND", ErrorAction::Stop),
    ("OPENID_MISMATCH", ErrorAction::Stop),
    ("INVALID_TRANSACTIONID", ErrorAction::Stop),
    ("TRADE_ERROR", ErrorAction::Stop),
    ("RULE_LIMIT", ErrorAction::Stop),
    ("RULELIMIT", ErrorAction::Stop),
    // The payer's or the merchant's balance: nothing an automatic retry fixes.
    ("NOT_ENOUGH", ErrorAction::Stop),
    ("NOTENOUGH", ErrorAction::Stop),
    ("USER_ACCOUNT_ABNORMAL", ErrorAction::Stop),
    ("NO_STATEMENT_EXIST", ErrorAction::Stop),
];

/// The table's action for `code`, if the code is listed.
pub fn action_for_code(code: &str) -> Option<ErrorAction> {
    ERROR_TABLE
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, action)| *action)
}

impl ChannelError {
    /// What to do next. An unknown outcome is [`ErrorAction::Retry`]: re-sending the identical
    /// request is safe (WeChat Pay treats it as the same order) once the state is queried.
    pub fn action(&self) -> ErrorAction {
        match self {
            ChannelError::Unknown { .. } => ErrorAction::Retry,
            ChannelError::Rejected { status, code, .. } => {
                action_for_code(code).unwrap_or(if *status == 429 {
                    ErrorAction::Retry
                } else {
                    ErrorAction::Stop
                })
            }
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.action() == ErrorAction::Retry
    }

    /// The V3 code of a rejection; `None` for an unknown outcome.
    pub fn code(&self) -> Option<&str> {
        match self {
            ChannelError::Rejected { code, .. } => Some(code),
            ChannelError::Unknown { .. } => None,
        }
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, ChannelError::Unknown { .. })
    }

    pub(crate) fn unknown(reason: impl Into<String>) -> Self {
        ChannelError::Unknown {
            reason: reason.into(),
        }
    }

    /// A refusal made locally, before sending, in WeChat Pay's own terms.
    pub(crate) fn local(e: ApiError) -> Self {
        ChannelError::Rejected {
            status: e.status(),
            code: e.code.as_str().to_string(),
            message: e.message,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        // Status 0: the request never left paygate.
        ChannelError::Rejected {
            status: 0,
            code: CODE_CHANNEL_CONFIG.to_string(),
            message: message.into(),
        }
    }
}

impl From<ConfigError> for ChannelError {
    fn from(e: ConfigError) -> Self {
        ChannelError::config(e.to_string())
    }
}

impl From<ClientError> for ChannelError {
    /// 4xx is a definite answer; everything else after the request may have left is unknown.
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api {
                status,
                code,
                message,
                body,
            } if (400..500).contains(&status) => {
                let code = if code.is_empty() {
                    // A 4xx without a V3 body still is a refusal; keep its status visible.
                    format!("HTTP_{status}")
                } else {
                    code
                };
                let message = if message.is_empty() { body } else { message };
                ChannelError::Rejected {
                    status,
                    code,
                    message,
                }
            }
            ClientError::Api {
                status,
                code,
                message,
                ..
            } => ChannelError::unknown(format!("HTTP {status} {code}: {message}")),
            ClientError::Timeout => ChannelError::unknown("request timed out"),
            ClientError::Transport(m) => ChannelError::unknown(format!("transport: {m}")),
            ClientError::BadSignature(m) => {
                ChannelError::unknown(format!("answer signature rejected: {m}"))
            }
            ClientError::Decode(m) => ChannelError::unknown(format!("answer unreadable: {m}")),
            // Signing or URL building failed before anything was sent.
            ClientError::Config(m) => ChannelError::config(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> ChannelError {
        ChannelError::from(ClientError::Api {
            status,
            code: code.into(),
            message: "m".into(),
            body: String::new(),
        })
    }

    #[test]
    fn classification_follows_the_table() {
        let cases: [(u16, &str, bool, bool); 14] = [
            // status, code, is Unknown, retryable
            (500, "SYSTEM_ERROR", true, true),
            (503, "", true, true),
            (429, "FREQUENCY_LIMITED", false, true),
            (429, "SOMETHING_NEW", false, true),
            (400, "PARAM_ERROR", false, false),
            (400, "INVALID_REQUEST", false, false),
            (403, "NO_AUTH", false, false),
            (403, "OUT_TRADE_NO_USED", false, false),
            (400, "ORDER_PAID", false, false),
            (400, "ORDERPAID", false, false),
            (400, "ORDER_CLOSED", false, false),
            (400, "APPID_MCHID_NOT_MATCH", false, false),
            (400, "MCH_NOT_EXISTS", false, false),
            (401, "SIGN_ERROR", false, false),
        ];
        for (status, code, unknown, retryable) in cases {
            let e = api(status, code);
            assert_eq!(e.is_unknown(), unknown, "{status} {code}");
            assert_eq!(e.is_retryable(), retryable, "{status} {code}");
            if !unknown {
                assert_eq!(e.code(), Some(code));
            }
        }
        let bank = ChannelError::Rejected {
            status: 400,
            code: "BANKERROR".into(),
            message: String::new(),
        };
        assert!(bank.is_retryable());
    }

    #[test]
    fn account_problems_switch_channel_and_request_problems_stop() {
        assert_eq!(api(403, "NO_AUTH").action(), ErrorAction::SwitchChannel);
        assert_eq!(api(401, "SIGN_ERROR").action(), ErrorAction::SwitchChannel);
        assert_eq!(api(400, "PARAM_ERROR").action(), ErrorAction::Stop);
        assert_eq!(api(418, "WHATEVER").action(), ErrorAction::Stop);
        assert_eq!(
            ChannelError::config("bad key").action(),
            ErrorAction::SwitchChannel
        );
    }

    #[test]
    fn transport_failures_are_unknown_and_retryable() {
        for e in [
            ClientError::Timeout,
            ClientError::Transport("reset".into()),
            ClientError::BadSignature("bad".into()),
            ClientError::Decode("eof".into()),
        ] {
            let e = ChannelError::from(e);
            assert!(e.is_unknown() && e.is_retryable() && e.code().is_none());
        }
        let e = ChannelError::from(ClientError::Config("signing failed".into()));
        assert_eq!(e.code(), Some(CODE_CHANNEL_CONFIG));
    }

    #[test]
    fn a_4xx_without_a_v3_body_keeps_its_status() {
        let e = ChannelError::from(ClientError::Api {
            status: 404,
            code: String::new(),
            message: String::new(),
            body: "not found".into(),
        });
        assert_eq!(e.code(), Some("HTTP_404"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn the_table_lists_each_code_once() {
        let mut codes: Vec<&str> = ERROR_TABLE.iter().map(|(c, _)| *c).collect();
        codes.sort_unstable();
        let before = codes.len();
        codes.dedup();
        assert_eq!(before, codes.len());
        for code in paygate_core::error::ALL_ERROR_CODES {
            assert!(
                action_for_code(code.as_str()).is_some(),
                "{} missing from the table",
                code.as_str()
            );
        }
    }
}
