//! Refund records (§4.7) and how both backends read them.
//!
//! The money rule lives in the schema and in one write path each way:
//! - [`crate::Store::create_refund`] reserves the amount: the order's `refunded_fen` (the sum of
//!   its refunds that are not CLOSED) grows by a compare-and-set `refunded_fen + amount <=
//!   total_fen` in the transaction that inserts the refund;
//! - [`crate::Store::apply_refund_change`] moves a refund through [`RefundState`]; a move to
//!   CLOSED gives the amount back, a move to a state the channel accepted moves a SUCCESS order
//!   to REFUND, and the merchant's notification goes into the outbox, all in one transaction.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::codec::Cols;
use crate::{NotificationRecord, StoreError};

/// Where a refund is. `Created` is the gateway's own: persisted, the channel's answer not known
/// yet (not sent, or the answer was lost); the others are the channel's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundState {
    Created,
    Processing,
    Success,
    Closed,
    Abnormal,
}

impl RefundState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundState::Created => "CREATED",
            RefundState::Processing => "PROCESSING",
            RefundState::Success => "SUCCESS",
            RefundState::Closed => "CLOSED",
            RefundState::Abnormal => "ABNORMAL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CREATED" => RefundState::Created,
            "PROCESSING" => RefundState::Processing,
            "SUCCESS" => RefundState::Success,
            "CLOSED" => RefundState::Closed,
            "ABNORMAL" => RefundState::Abnormal,
            _ => return None,
        })
    }

    /// SUCCESS and CLOSED never change again.
    pub fn is_final(&self) -> bool {
        matches!(self, RefundState::Success | RefundState::Closed)
    }

    /// The channel has the refund: its order is in refund (`trade_state` REFUND).
    pub fn is_accepted(&self) -> bool {
        matches!(
            self,
            RefundState::Processing | RefundState::Success | RefundState::Abnormal
        )
    }

    /// The legal moves: forward only, never out of a final state, and never back to
    /// PROCESSING from ABNORMAL (a re-applied abnormal refund ends SUCCESS or CLOSED).
    pub fn may_become(&self, next: RefundState) -> bool {
        use RefundState::*;
        matches!(
            (self, next),
            (Created, Processing | Success | Closed | Abnormal)
                | (Processing, Success | Closed | Abnormal)
                | (Abnormal, Success | Closed)
        )
    }
}

/// Who a refund is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundKind {
    /// A merchant's refund (`POST /v3/refund/domestic/refunds`): reserved on the order and
    /// on the merchant's balance, announced to the merchant.
    #[default]
    Merchant,
    /// paygate's own refund of a duplicate payment (a second attempt of an order paid at the
    /// channel): the whole attempt back to the payer. It is not the merchant's: it neither
    /// touches the order's refundable amount nor the merchant's balances, and the merchant
    /// neither sees nor hears of it. Its out_refund_no is `duplicate:<attempt_id>`, outside
    /// the merchant's charset, so it can never collide with one of theirs.
    Duplicate,
}

impl RefundKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundKind::Merchant => "MERCHANT",
            RefundKind::Duplicate => "DUPLICATE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "MERCHANT" => Some(RefundKind::Merchant),
            "DUPLICATE" => Some(RefundKind::Duplicate),
            _ => None,
        }
    }
}

/// The out_refund_no of the refund that gives a duplicate payment on `attempt_id` back.
pub fn duplicate_out_refund_no(attempt_id: &str) -> String {
    format!("duplicate:{attempt_id}")
}

/// One refund against one paid order, made at the channel on the attempt that was paid: a
/// merchant's, or paygate's own of a duplicate payment ([`RefundKind`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    /// The gateway's refund id (WeChat's 29-digit shape); also the out_refund_no AT THE
    /// CHANNEL, so each gateway refund is one channel refund.
    pub refund_id: String,
    pub mchid: String,
    /// The merchant's idempotency key, unique per merchant.
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    /// The paid attempt: its channel, its out_trade_no at the channel.
    pub attempt_id: String,
    pub channel_id: String,
    pub state: RefundState,
    pub amount_fen: i64,
    /// The order's total, as the request stated it (checked equal to the order's).
    pub total_fen: i64,
    pub currency: String,
    pub reason: Option<String>,
    /// Where the merchant's REFUND.* notifications go: the request's, else the order's.
    pub notify_url: String,
    /// What makes a repeated request "the same" (order and amount).
    pub fingerprint: String,
    /// The merchant's request body as parsed.
    pub request_json: String,
    /// The channel's own refund id, once it answered.
    pub channel_refund_id: Option<String>,
    pub user_received_account: Option<String>,
    /// `funds_account` as the channel answered it (`UNSETTLED`, `AVAILABLE`, …).
    pub funds_account: Option<String>,
    /// The channel's refusal of a refund it never accepted (then CLOSED).
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub success_time: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_polled_at: Option<OffsetDateTime>,
    /// Bumped by every change.
    pub version: i64,
    #[serde(default)]
    pub kind: RefundKind,
}

/// A duplicate payment (重复支付) and the refund that gives it back, written in one
/// transaction by [`crate::Store::record_duplicate_payment`]: the attempt's compare-and-set
/// to PAID, the refund (CREATED, [`RefundKind::Duplicate`]), the order's repair record and
/// the ledger's `DuplicatePayment` (what the channel took, owed to the payer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicatePayment {
    /// To PAID, from the states the attempt may be in; if it moved, nothing is written.
    pub attempt: crate::AttemptChange,
    pub refund: RefundRecord,
    pub repair: crate::RepairRecord,
}

/// One fact about a refund, written in one transaction: the compare-and-set of its state,
/// what the channel said (`None` fields are left as they are), the order's side (amount given
/// back on CLOSED, REFUND on acceptance) and the merchant's notification (outbox).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundChange {
    pub refund_id: String,
    pub expected_state: RefundState,
    pub new_state: RefundState,
    pub channel_refund_id: Option<String>,
    pub user_received_account: Option<String>,
    pub funds_account: Option<String>,
    pub success_time: Option<OffsetDateTime>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub updated_at: OffsetDateTime,
    pub notification: Option<NotificationRecord>,
}

impl RefundChange {
    /// A move from `expected_state` to `new_state`, touching nothing else.
    pub fn to(
        refund_id: &str,
        expected_state: RefundState,
        new_state: RefundState,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            refund_id: refund_id.to_string(),
            expected_state,
            new_state,
            channel_refund_id: None,
            user_received_account: None,
            funds_account: None,
            success_time: None,
            error_code: None,
            error_message: None,
            updated_at: now,
            notification: None,
        }
    }
}

/// What [`crate::Store::create_refund`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateRefund {
    /// Inserted, its amount reserved on the order.
    Created,
    /// `(mchid, out_refund_no)` was taken: nothing written; the existing refund.
    Exists(Box<RefundRecord>),
    /// The order's other refunds leave less than the amount: nothing written.
    NotEnough { refundable_fen: i64 },
    /// The order is not there or not paid: nothing written.
    OrderNotPaid,
    /// The ledger refused the reservation: neither the merchant's pending takings nor its
    /// available balance cover the refund (WeChat's NOT_ENOUGH). Nothing written.
    BalanceShort,
}

pub(crate) const REFUND_COLS: &str = "refund_id, mchid, out_refund_no, transaction_id, out_trade_no, attempt_id, \
     channel_id, state, amount_fen, total_fen, currency, reason, notify_url, fingerprint, request_json, \
     channel_refund_id, user_received_account, funds_account, error_code, error_message, created_at, \
     updated_at, success_time, last_polled_at, version, kind";

/// [`crate::Store::duplicate_refunds_open`]'s filter, spelled as `refunds_duplicate_open_idx`'s
/// WHERE so both backends use the partial index; `?1` is the limit.
pub(crate) const DUPLICATES_OPEN_SQL: &str = "WHERE kind = 'DUPLICATE' AND state <> 'SUCCESS'
     ORDER BY created_at, refund_id LIMIT ?1";

/// A refund row in [`REFUND_COLS`] order.
pub(crate) fn refund(r: &impl Cols) -> Result<RefundRecord, StoreError> {
    let state = r.text(7)?;
    Ok(RefundRecord {
        refund_id: r.text(0)?,
        mchid: r.text(1)?,
        out_refund_no: r.text(2)?,
        transaction_id: r.text(3)?,
        out_trade_no: r.text(4)?,
        attempt_id: r.text(5)?,
        channel_id: r.text(6)?,
        state: RefundState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown refund state {state:?}")))?,
        amount_fen: r.int(8)?,
        total_fen: r.int(9)?,
        currency: r.text(10)?,
        reason: r.opt_text(11)?,
        notify_url: r.text(12)?,
        fingerprint: r.text(13)?,
        request_json: r.text(14)?,
        channel_refund_id: r.opt_text(15)?,
        user_received_account: r.opt_text(16)?,
        funds_account: r.opt_text(17)?,
        error_code: r.opt_text(18)?,
        error_message: r.opt_text(19)?,
        created_at: r.time(20)?,
        updated_at: r.time(21)?,
        success_time: r.opt_time(22)?,
        last_polled_at: r.opt_time(23)?,
        version: r.int(24)?,
        kind: {
            let kind = r.text(25)?;
            RefundKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown refund kind {kind:?}")))?
        },
    })
}

/// Refuses a move [`RefundState::may_become`] forbids: a caller that asks for one has a bug,
/// and the store says so rather than write it.
pub(crate) fn check_move(c: &RefundChange) -> Result<(), StoreError> {
    if c.expected_state.may_become(c.new_state) {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "refund {}: {} → {} is not a legal refund transition",
        c.refund_id,
        c.expected_state.as_str(),
        c.new_state.as_str()
    )))
}

/// `create_refund` makes merchant refunds only.
pub(crate) fn check_merchant_kind(r: &RefundRecord) -> Result<(), StoreError> {
    if r.kind == RefundKind::Merchant {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "refund {}: a {} refund is not made by create_refund",
        r.refund_id,
        r.kind.as_str()
    )))
}

/// What `record_duplicate_payment` requires: a new duplicate refund of the whole attempt,
/// on the attempt that moves to PAID.
pub(crate) fn check_duplicate(d: &DuplicatePayment) -> Result<(), StoreError> {
    let r = &d.refund;
    if r.kind != RefundKind::Duplicate
        || r.state != RefundState::Created
        || r.attempt_id != d.attempt.attempt_id
        || d.attempt.new_state != crate::AttemptState::Paid
        || r.amount_fen != r.total_fen
    {
        return Err(StoreError::Database(format!(
            "duplicate payment on {}: not a new DUPLICATE refund of the whole attempt moving to PAID",
            d.attempt.attempt_id
        )));
    }
    Ok(())
}

/// Why a reservation found nothing to update, from the order's `(state, total, refunded)`.
pub(crate) fn refusal(order: Option<(String, i64, i64)>) -> CreateRefund {
    match order {
        Some((state, total_fen, refunded_fen)) if state == "SUCCESS" || state == "REFUND" => {
            CreateRefund::NotEnough {
                refundable_fen: total_fen - refunded_fen,
            }
        }
        _ => CreateRefund::OrderNotPaid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RefundState; 5] = [
        RefundState::Created,
        RefundState::Processing,
        RefundState::Success,
        RefundState::Closed,
        RefundState::Abnormal,
    ];

    #[test]
    fn states_round_trip_and_final_states_never_move() {
        for s in ALL {
            assert_eq!(RefundState::parse(s.as_str()), Some(s));
            assert!(!s.may_become(s), "{s:?} → itself is no move");
            if s.is_final() {
                assert!(ALL.iter().all(|n| !s.may_become(*n)), "{s:?} is final");
            }
            assert!(
                !s.may_become(RefundState::Created),
                "nothing goes back to CREATED"
            );
        }
        assert_eq!(RefundState::parse("REFUND"), None);
        assert_eq!(REFUND_COLS.split(',').count(), 26);
        for k in [RefundKind::Merchant, RefundKind::Duplicate] {
            assert_eq!(RefundKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(RefundKind::default(), RefundKind::Merchant);
        assert!(
            !duplicate_out_refund_no("4200000001202612010000000101")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-|*@".contains(c)),
            "outside the merchant's out_refund_no charset"
        );
        assert!(!RefundState::Abnormal.may_become(RefundState::Processing));
        assert!(RefundState::Abnormal.may_become(RefundState::Success));
        assert!(!RefundState::Created.is_accepted() && !RefundState::Closed.is_accepted());
    }

    #[test]
    fn a_refusal_tells_not_enough_from_not_paid() {
        assert_eq!(
            refusal(Some(("REFUND".into(), 100, 70))),
            CreateRefund::NotEnough { refundable_fen: 30 }
        );
        assert_eq!(
            refusal(Some(("NOTPAY".into(), 100, 0))),
            CreateRefund::OrderNotPaid
        );
        assert_eq!(refusal(None), CreateRefund::OrderNotPaid);
    }
}
