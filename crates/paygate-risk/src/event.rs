//! What the gateway tells the engine about one prepay or refund.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The operation being decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Prepay,
    Refund,
}

impl EventKind {
    pub const ALL: [EventKind; 2] = [EventKind::Prepay, EventKind::Refund];

    /// The value rules see in `kind`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Prepay => "PREPAY",
            EventKind::Refund => "REFUND",
        }
    }

    pub(crate) fn index(&self) -> usize {
        match self {
            EventKind::Prepay => 0,
            EventKind::Refund => 1,
        }
    }
}

/// One prepay or refund as the gateway sees it, before anything is created at the channel.
///
/// Identifiers stay as the merchant sent them except the payer, which the caller passes as
/// [`crate::RiskEngine::payer_key`] of the openid (a keyed hash): the engine never sees an openid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskEvent {
    pub kind: EventKind,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub mchid: String,
    /// The merchant's industry from its profile (`retail`, `digital_goods`, `games`, …).
    #[serde(default)]
    pub merchant_industry: Option<String>,
    /// When the merchant was onboarded; young merchants carry more collusion risk.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub merchant_created_at: Option<OffsetDateTime>,
    /// `JSAPI`, `APP`, `H5`, `NATIVE`; for a refund, the original order's trade type.
    pub trade_type: String,
    pub amount_fen: i64,
    pub currency: String,
    #[serde(default)]
    pub payer_key: Option<String>,
    /// `scene_info.payer_client_ip`, else the connecting address the merchant reported.
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    /// `scene_info.device_id`.
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub accept_language: Option<String>,
    /// `scene_info.h5_info.type` (`Wap`, `iOS`, `Android`).
    #[serde(default)]
    pub h5_type: Option<String>,
    /// `scene_info.h5_info.app_name` or the APP's bundle.
    #[serde(default)]
    pub app_name: Option<String>,
    /// `scene_info.store_info.id`.
    #[serde(default)]
    pub store_id: Option<String>,
    /// Refund only: the original order's total.
    #[serde(default)]
    pub original_amount_fen: Option<i64>,
    /// Refund only: when the original order was paid.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub original_paid_at: Option<OffsetDateTime>,
}

impl RiskEvent {
    /// A prepay with only the fields every request has; set the optional ones directly.
    pub fn prepay(
        mchid: impl Into<String>,
        trade_type: impl Into<String>,
        amount_fen: i64,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            kind: EventKind::Prepay,
            at,
            mchid: mchid.into(),
            merchant_industry: None,
            merchant_created_at: None,
            trade_type: trade_type.into(),
            amount_fen,
            currency: "CNY".to_owned(),
            payer_key: None,
            client_ip: None,
            device_id: None,
            user_agent: None,
            accept_language: None,
            h5_type: None,
            app_name: None,
            store_id: None,
            original_amount_fen: None,
            original_paid_at: None,
        }
    }

    /// A refund of `amount_fen` against an order of `original_amount_fen` paid at `paid_at`.
    pub fn refund(
        mchid: impl Into<String>,
        trade_type: impl Into<String>,
        amount_fen: i64,
        original_amount_fen: i64,
        paid_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Self {
        let mut e = Self::prepay(mchid, trade_type, amount_fen, at);
        e.kind = EventKind::Refund;
        e.original_amount_fen = Some(original_amount_fen);
        e.original_paid_at = Some(paid_at);
        e
    }
}
