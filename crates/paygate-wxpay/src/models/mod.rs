//! Typed request and response bodies of every V3 endpoint paygate speaks (reference §4), with
//! their field rules ([`crate::rules::Validate`]).
//!
//! Conventions shared by all models: Rust field names are the wire names; optional fields are
//! `Option` and are omitted when `None` (never `""`, which Go clients cannot parse as a time);
//! unknown fields are ignored; `null` is read as absent; money is `i64` fen.
//!
//! ```
//! use paygate_wxpay::models::payments::{PrepayRequest, TradeType};
//! use paygate_wxpay::rules::parse_json;
//! let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"QQ公仔",
//!   "out_trade_no":"1217752501201407033233368018","notify_url":"https://example.com/notify",
//!   "amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
//! let req: PrepayRequest = parse_json(body.as_bytes()).unwrap();
//! req.validate_for(TradeType::Jsapi).unwrap();
//! assert_eq!(req.amount.total, 100);
//! ```

pub mod bills;
pub mod certificates;
pub mod combine;
pub mod common;
pub mod payments;
pub mod profitsharing;
pub mod refunds;
