//! Profit sharing (分账, §4.8): receivers per merchant, share orders (splits and unfreezes)
//! and returns, and how both backends read them.
//!
//! The money rule lives on the order row, in one write path each way:
//! - `orders.shared_fen` is what is with receivers: the splits not CLOSED, less the returns
//!   that succeeded; `orders.share_released_fen` is what came back by returns (refundable, not
//!   splittable again); `orders.share_unfrozen` is set once the rest was unfrozen.
//! - [`crate::Store::create_share`] reserves a split: a compare-and-set in the insert's
//!   transaction that `refunded_fen + shared_fen + share_released_fen + fee + amount <=
//!   total_fen`, that `(shared_fen + amount) * 10000 <= total_fen * max_ratio_bp`, and that the
//!   order is not unfrozen. An unfreeze sets `share_unfrozen` by compare-and-set on the very
//!   amount it unfreezes. Refunds reserve against `refunded_fen + shared_fen` (a refund never
//!   takes what receivers hold), and a CHECK keeps `refunded_fen + shared_fen <= total_fen`.
//! - [`crate::Store::apply_share_change`] moves a share order by compare-and-set on its version;
//!   receivers the channel CLOSED give their amount back, a refused order gives all of it back
//!   (and is no longer unfreezing), the merchant's notifications go into the outbox, all in one
//!   transaction. [`crate::Store::apply_share_return_change`] likewise; a return that succeeded
//!   moves its amount from `shared_fen` to `share_released_fen`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::codec::Cols;
use crate::{NotificationRecord, StoreError};

/// Whole-order ratios are in 万分比 (basis points of ten thousand): 3000 = 30%.
pub const RATIO_BP_MAX: u32 = 10_000;
/// A direct merchant's maximum ratio unless configured otherwise (WeChat Pay's default, 30%).
pub const MAX_RATIO_BP_DEFAULT: u32 = 3000;

/// A receiver a merchant added (`receivers/add`). The name is never kept: it travels only
/// encrypted, to the channel, when the receiver is added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareReceiverRecord {
    pub mchid: String,
    /// `MERCHANT_ID`, `PERSONAL_OPENID`, `PERSONAL_SUB_OPENID`.
    pub r#type: String,
    pub account: String,
    /// The channel it was added at (a direct channel's receivers are shared by its merchants).
    pub channel_id: String,
    pub relation_type: String,
    pub custom_relation: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShareKind {
    /// `POST /v3/profitsharing/orders`.
    Split,
    /// `POST /v3/profitsharing/orders/unfreeze`: the rest back to the merchant.
    Unfreeze,
}

impl ShareKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ShareKind::Split => "SPLIT",
            ShareKind::Unfreeze => "UNFREEZE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SPLIT" => Some(ShareKind::Split),
            "UNFREEZE" => Some(ShareKind::Unfreeze),
            _ => None,
        }
    }
}

/// Where a share order is. `Created` is the gateway's own (persisted, the channel's answer not
/// known yet); `Closed` is the gateway's too: the channel refused it, it never existed there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShareState {
    Created,
    Processing,
    Finished,
    Closed,
}

impl ShareState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ShareState::Created => "CREATED",
            ShareState::Processing => "PROCESSING",
            ShareState::Finished => "FINISHED",
            ShareState::Closed => "CLOSED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CREATED" => ShareState::Created,
            "PROCESSING" => ShareState::Processing,
            "FINISHED" => ShareState::Finished,
            "CLOSED" => ShareState::Closed,
            _ => return None,
        })
    }

    pub fn is_final(&self) -> bool {
        matches!(self, ShareState::Finished | ShareState::Closed)
    }

    /// Forward only; a PROCESSING order may stay PROCESSING with news about its receivers;
    /// CLOSED only from CREATED (the channel refused what it never had).
    pub fn may_become(&self, next: ShareState) -> bool {
        use ShareState::*;
        matches!(
            (self, next),
            (Created, Processing | Finished | Closed) | (Processing, Processing | Finished)
        )
    }
}

/// One receiver line of a share order (`result` PENDING / SUCCESS / CLOSED).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareLine {
    pub r#type: String,
    pub account: String,
    /// The name sealed for the channel (RSA-OAEP ciphertext), kept so a re-send is identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub amount_fen: i64,
    pub description: String,
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    pub detail_id: String,
    /// Unix ms.
    pub create_time_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time_ms: Option<i64>,
    /// False for a line closed by the gateway itself (a receiver the merchant never added):
    /// it never goes to the channel and reserves nothing.
    pub sent: bool,
}

impl ShareLine {
    pub fn is_closed(&self) -> bool {
        self.result == "CLOSED"
    }
}

/// One share order of a merchant: a split round or an unfreeze, made at the channel on the
/// attempt that was paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareOrderRecord {
    /// The gateway's order id (WeChat's `order_id` shape); also the out_order_no AT THE CHANNEL.
    pub order_id: String,
    pub mchid: String,
    /// The merchant's idempotency key, unique per merchant.
    pub out_order_no: String,
    pub transaction_id: String,
    pub attempt_id: String,
    pub channel_id: String,
    pub kind: ShareKind,
    pub state: ShareState,
    /// Split: the sum of the lines sent (reserved on the order). Unfreeze: what it unfroze.
    pub amount_fen: i64,
    pub unfreeze_unsplit: bool,
    pub receivers: Vec<ShareLine>,
    /// An unfreeze's description.
    pub description: Option<String>,
    /// What makes a repeated request "the same".
    pub fingerprint: String,
    pub channel_order_id: Option<String>,
    /// The channel's refusal of an order it never accepted (then CLOSED).
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_polled_at: Option<OffsetDateTime>,
    pub version: i64,
}

impl ShareOrderRecord {
    /// Splits with `unfreeze_unsplit` and unfreezes end the order's sharing.
    pub fn unfreezes(&self) -> bool {
        self.kind == ShareKind::Unfreeze || self.unfreeze_unsplit
    }
}

/// The bounds of a split, from the order's terms: its fee (never split) and the merchant's
/// maximum ratio of the total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareLimits {
    pub fee_fen: i64,
    pub max_ratio_bp: u32,
}

/// What [`crate::Store::create_share`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateShare {
    /// Inserted; its amount reserved on the order (a split) or the order unfrozen.
    Created,
    /// `(mchid, out_order_no)` was taken: nothing written; the existing order.
    Exists(Box<ShareOrderRecord>),
    /// Less is left to split than the amount: nothing written.
    NotEnough { unsplit_fen: i64 },
    /// Over the merchant's maximum ratio: nothing written.
    RatioExceeded { max_ratio_bp: u32 },
    /// The order was unfrozen already: nothing written.
    Unfrozen,
    /// An unfreeze whose amount no longer matches what is left (something moved): re-read.
    Moved,
    /// The order is not there or not paid: nothing written.
    OrderNotPaid,
}

/// One fact about a share order, written in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareChange {
    pub order_id: String,
    /// Compare-and-set on the version: receivers change within PROCESSING too.
    pub expected_version: i64,
    pub expected_state: ShareState,
    pub new_state: ShareState,
    /// The lines as they now read (`None`: unchanged).
    pub receivers: Option<Vec<ShareLine>>,
    /// Given back to the order's `shared_fen` (lines the channel closed; all on CLOSED).
    pub released_fen: i64,
    /// On CLOSED of an unfreezing order: the order may be split again.
    pub refreeze: bool,
    pub channel_order_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub finished_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    pub notifications: Vec<NotificationRecord>,
    /// The fact's ledger posting (split, unfreeze), applied in the same transaction; a ledger
    /// refusal rolls the whole change back.
    pub ledger: Option<paygate_ledger::Posting>,
}

impl ShareChange {
    pub fn to(order: &ShareOrderRecord, new_state: ShareState, now: OffsetDateTime) -> Self {
        Self {
            order_id: order.order_id.clone(),
            expected_version: order.version,
            expected_state: order.state,
            new_state,
            receivers: None,
            released_fen: 0,
            refreeze: false,
            channel_order_id: None,
            error_code: None,
            error_message: None,
            finished_at: None,
            updated_at: now,
            notifications: Vec::new(),
            ledger: None,
        }
    }
}

/// The sharing side of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareAmounts {
    pub total_fen: i64,
    pub refunded_fen: i64,
    pub shared_fen: i64,
    pub released_fen: i64,
    pub unfrozen: bool,
}

impl ShareAmounts {
    /// What may still be split (0 once unfrozen).
    pub fn unsplit_fen(&self, fee_fen: i64) -> i64 {
        if self.unfrozen {
            return 0;
        }
        (self.total_fen - fee_fen - self.refunded_fen - self.shared_fen - self.released_fen).max(0)
    }
}

/// Where a return is: `Created` is the gateway's own; the rest the channel's `result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReturnState {
    Created,
    Processing,
    Success,
    Failed,
}

impl ReturnState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReturnState::Created => "CREATED",
            ReturnState::Processing => "PROCESSING",
            ReturnState::Success => "SUCCESS",
            ReturnState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CREATED" => ReturnState::Created,
            "PROCESSING" => ReturnState::Processing,
            "SUCCESS" => ReturnState::Success,
            "FAILED" => ReturnState::Failed,
            _ => return None,
        })
    }

    pub fn is_final(&self) -> bool {
        matches!(self, ReturnState::Success | ReturnState::Failed)
    }

    pub fn may_become(&self, next: ReturnState) -> bool {
        use ReturnState::*;
        matches!(
            (self, next),
            (Created, Processing | Success | Failed) | (Processing, Success | Failed)
        )
    }
}

/// A return (回退) of part of one receiver's split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareReturnRecord {
    /// The gateway's return id; also the out_return_no AT THE CHANNEL.
    pub return_id: String,
    pub mchid: String,
    pub out_return_no: String,
    /// The share order returned from (its gateway id) and the merchant's number for it.
    pub share_order_id: String,
    pub out_order_no: String,
    pub transaction_id: String,
    pub channel_id: String,
    pub return_mchid: String,
    pub amount_fen: i64,
    pub description: String,
    pub state: ReturnState,
    pub fail_reason: Option<String>,
    pub channel_return_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_polled_at: Option<OffsetDateTime>,
    pub version: i64,
}

/// What [`crate::Store::create_share_return`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateShareReturn {
    Created,
    Exists(Box<ShareReturnRecord>),
    /// The receiver's returns would exceed what it got: nothing written.
    NotEnough {
        returnable_fen: i64,
    },
    /// The share order has no SUCCESS merchant line for `return_mchid`: nothing written.
    NotReceiver,
}

/// One fact about a return, written in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareReturnChange {
    pub return_id: String,
    pub expected_state: ReturnState,
    pub new_state: ReturnState,
    pub fail_reason: Option<String>,
    pub channel_return_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub finished_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    pub notification: Option<NotificationRecord>,
    /// The return's ledger posting, applied in the same transaction.
    pub ledger: Option<paygate_ledger::Posting>,
}

impl ShareReturnChange {
    pub fn to(
        return_id: &str,
        expected_state: ReturnState,
        new_state: ReturnState,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            return_id: return_id.to_string(),
            expected_state,
            new_state,
            fail_reason: None,
            channel_return_id: None,
            error_code: None,
            error_message: None,
            finished_at: None,
            updated_at: now,
            notification: None,
            ledger: None,
        }
    }
}

pub(crate) const RECEIVER_COLS: &str =
    "mchid, type, account, channel_id, relation_type, custom_relation, created_at";

pub(crate) fn receiver(r: &impl Cols) -> Result<ShareReceiverRecord, StoreError> {
    Ok(ShareReceiverRecord {
        mchid: r.text(0)?,
        r#type: r.text(1)?,
        account: r.text(2)?,
        channel_id: r.text(3)?,
        relation_type: r.text(4)?,
        custom_relation: r.opt_text(5)?,
        created_at: r.time(6)?,
    })
}

pub(crate) const SHARE_COLS: &str = "order_id, mchid, out_order_no, transaction_id, attempt_id, channel_id, \
     kind, state, amount_fen, unfreeze_unsplit, receivers_json, description, fingerprint, channel_order_id, \
     error_code, error_message, created_at, updated_at, finished_at, last_polled_at, version";

pub(crate) fn share(r: &impl Cols) -> Result<ShareOrderRecord, StoreError> {
    let kind = r.text(6)?;
    let state = r.text(7)?;
    let lines = r.text(10)?;
    Ok(ShareOrderRecord {
        order_id: r.text(0)?,
        mchid: r.text(1)?,
        out_order_no: r.text(2)?,
        transaction_id: r.text(3)?,
        attempt_id: r.text(4)?,
        channel_id: r.text(5)?,
        kind: ShareKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown share kind {kind:?}")))?,
        state: ShareState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown share state {state:?}")))?,
        amount_fen: r.int(8)?,
        unfreeze_unsplit: r.int(9)? != 0,
        receivers: lines_from_json(&lines)?,
        description: r.opt_text(11)?,
        fingerprint: r.text(12)?,
        channel_order_id: r.opt_text(13)?,
        error_code: r.opt_text(14)?,
        error_message: r.opt_text(15)?,
        created_at: r.time(16)?,
        updated_at: r.time(17)?,
        finished_at: r.opt_time(18)?,
        last_polled_at: r.opt_time(19)?,
        version: r.int(20)?,
    })
}

pub(crate) fn lines_from_json(s: &str) -> Result<Vec<ShareLine>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("share receivers: {e}")))
}

pub(crate) fn lines_to_json(lines: &[ShareLine]) -> Result<String, StoreError> {
    serde_json::to_string(lines).map_err(|e| StoreError::Database(format!("share receivers: {e}")))
}

pub(crate) const RETURN_COLS: &str = "return_id, mchid, out_return_no, share_order_id, out_order_no, \
     transaction_id, channel_id, return_mchid, amount_fen, description, state, fail_reason, channel_return_id, \
     error_code, error_message, fingerprint, created_at, updated_at, finished_at, last_polled_at, version";

pub(crate) fn share_return(r: &impl Cols) -> Result<ShareReturnRecord, StoreError> {
    let state = r.text(10)?;
    Ok(ShareReturnRecord {
        return_id: r.text(0)?,
        mchid: r.text(1)?,
        out_return_no: r.text(2)?,
        share_order_id: r.text(3)?,
        out_order_no: r.text(4)?,
        transaction_id: r.text(5)?,
        channel_id: r.text(6)?,
        return_mchid: r.text(7)?,
        amount_fen: r.int(8)?,
        description: r.text(9)?,
        state: ReturnState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown return state {state:?}")))?,
        fail_reason: r.opt_text(11)?,
        channel_return_id: r.opt_text(12)?,
        error_code: r.opt_text(13)?,
        error_message: r.opt_text(14)?,
        fingerprint: r.text(15)?,
        created_at: r.time(16)?,
        updated_at: r.time(17)?,
        finished_at: r.opt_time(18)?,
        last_polled_at: r.opt_time(19)?,
        version: r.int(20)?,
    })
}

pub(crate) fn check_share_move(c: &ShareChange) -> Result<(), StoreError> {
    if c.expected_state.may_become(c.new_state) && c.released_fen >= 0 {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "share order {}: {} → {} (released {}) is not a legal change",
        c.order_id,
        c.expected_state.as_str(),
        c.new_state.as_str(),
        c.released_fen
    )))
}

pub(crate) fn check_return_move(c: &ShareReturnChange) -> Result<(), StoreError> {
    if c.expected_state.may_become(c.new_state) {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "return {}: {} → {} is not a legal return transition",
        c.return_id,
        c.expected_state.as_str(),
        c.new_state.as_str()
    )))
}

/// Why a split reservation found nothing to update, from the order's sharing side.
pub(crate) fn split_refusal(
    paid: bool,
    amounts: Option<ShareAmounts>,
    r: &ShareOrderRecord,
    limits: ShareLimits,
) -> CreateShare {
    let Some(a) = amounts.filter(|_| paid) else {
        return CreateShare::OrderNotPaid;
    };
    if a.unfrozen {
        return CreateShare::Unfrozen;
    }
    if r.kind == ShareKind::Unfreeze {
        return CreateShare::Moved;
    }
    let unsplit_fen = a.unsplit_fen(limits.fee_fen);
    if r.amount_fen > unsplit_fen {
        return CreateShare::NotEnough { unsplit_fen };
    }
    CreateShare::RatioExceeded {
        max_ratio_bp: limits.max_ratio_bp,
    }
}

/// What of one receiver's line may still be returned, and whether it is returnable at all.
pub(crate) fn returnable(order: &ShareOrderRecord, return_mchid: &str) -> Option<i64> {
    order
        .receivers
        .iter()
        .filter(|l| l.r#type == "MERCHANT_ID" && l.account == return_mchid && l.result == "SUCCESS")
        .map(|l| l.amount_fen)
        .reduce(|a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_final_states_never_move() {
        let all = [
            ShareState::Created,
            ShareState::Processing,
            ShareState::Finished,
            ShareState::Closed,
        ];
        for s in all {
            assert_eq!(ShareState::parse(s.as_str()), Some(s));
            if s.is_final() {
                assert!(all.iter().all(|n| !s.may_become(*n)), "{s:?} is final");
            }
            assert!(!s.may_become(ShareState::Created));
        }
        assert!(!ShareState::Processing.may_become(ShareState::Closed));
        let returns = [
            ReturnState::Created,
            ReturnState::Processing,
            ReturnState::Success,
            ReturnState::Failed,
        ];
        for s in returns {
            assert_eq!(ReturnState::parse(s.as_str()), Some(s));
            if s.is_final() {
                assert!(returns.iter().all(|n| !s.may_become(*n)));
            }
        }
        assert_eq!(SHARE_COLS.split(',').count(), 21);
        assert_eq!(RETURN_COLS.split(',').count(), 21);
        assert_eq!(RECEIVER_COLS.split(',').count(), 7);
    }

    #[test]
    fn the_unsplit_amount_leaves_the_fee_refunds_and_returns_out() {
        let a = ShareAmounts {
            total_fen: 1000,
            refunded_fen: 100,
            shared_fen: 200,
            released_fen: 50,
            unfrozen: false,
        };
        assert_eq!(a.unsplit_fen(6), 644);
        assert_eq!(a.unsplit_fen(10_000), 0);
        assert_eq!(
            ShareAmounts {
                unfrozen: true,
                ..a
            }
            .unsplit_fen(0),
            0
        );
    }
}
