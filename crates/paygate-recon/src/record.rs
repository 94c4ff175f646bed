//! [`Record`]: one payment or refund of either side, normalised at parse time to 48 bytes of
//! integers, so ten million of them fit in under half a GiB and sort in cache-sized runs.

use crate::key::{Key, Kind};

/// A state on either side, in one vocabulary. The bill's refund states are its own enum
/// (SUCCESS / PROCESSING / FAIL / CHANGE); the platform's are mapped onto the same words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum State {
    /// Payment: paid (bill `SUCCESS`; platform SUCCESS or REFUND).
    Paid,
    /// Payment: revoked at the channel (bill `REVOKED`).
    Revoked,
    /// Payment: known to the platform, not paid there (NOTPAY, PAYERROR).
    Unpaid,
    /// Payment: closed on the platform.
    Closed,
    /// Refund: created on the platform, no channel answer yet.
    RefundCreated,
    /// Refund: accepted, money not yet back (bill `PROCESSING`).
    RefundProcessing,
    /// Refund: done (bill `SUCCESS`).
    RefundSuccess,
    /// Refund: refused or closed (bill `FAIL`; platform CLOSED).
    RefundFailed,
    /// Refund: abnormal, needs the merchant (bill `CHANGE`; platform ABNORMAL).
    RefundAbnormal,
}

impl State {
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Paid => "PAID",
            State::Revoked => "REVOKED",
            State::Unpaid => "UNPAID",
            State::Closed => "CLOSED",
            State::RefundCreated => "REFUND_CREATED",
            State::RefundProcessing => "REFUND_PROCESSING",
            State::RefundSuccess => "REFUND_SUCCESS",
            State::RefundFailed => "REFUND_FAILED",
            State::RefundAbnormal => "REFUND_ABNORMAL",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "PAID" => State::Paid,
            "REVOKED" => State::Revoked,
            "UNPAID" => State::Unpaid,
            "CLOSED" => State::Closed,
            "REFUND_CREATED" => State::RefundCreated,
            "REFUND_PROCESSING" => State::RefundProcessing,
            "REFUND_SUCCESS" => State::RefundSuccess,
            "REFUND_FAILED" => State::RefundFailed,
            "REFUND_ABNORMAL" => State::RefundAbnormal,
            _ => return None,
        })
    }

    /// A paygate order state (`SUCCESS`, `REFUND`, `NOTPAY`, `PAYERROR`, `CLOSED`).
    pub fn of_order_state(s: &str) -> Option<State> {
        Some(match s {
            "SUCCESS" | "REFUND" => State::Paid,
            "NOTPAY" | "PAYERROR" => State::Unpaid,
            "CLOSED" => State::Closed,
            _ => return None,
        })
    }

    /// A paygate refund state (`CREATED`, `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`).
    pub fn of_refund_state(s: &str) -> Option<State> {
        Some(match s {
            "CREATED" => State::RefundCreated,
            "PROCESSING" => State::RefundProcessing,
            "SUCCESS" => State::RefundSuccess,
            "CLOSED" => State::RefundFailed,
            "ABNORMAL" => State::RefundAbnormal,
            _ => return None,
        })
    }

    /// A platform record in this state has no reason to be in the channel's bill: an order
    /// never paid, a refund the channel refused at once. Absent from the bill, it agrees.
    pub const fn absent_from_bill_is_normal(self) -> bool {
        matches!(self, State::Unpaid | State::Closed | State::RefundFailed)
    }
}

/// Whether the bill's state (`channel`) and the platform's agree. A refund row is a snapshot
/// taken when the channel accepted it and never updated (reference §2.3), so a bill
/// `PROCESSING` agrees with any later platform outcome; the platform saying CREATED (it
/// never heard back) or PROCESSING while the bill already says SUCCESS does not.
pub const fn states_agree(channel: State, platform: State) -> bool {
    use State::*;
    matches!(
        (channel, platform),
        (Paid, Paid)
            | (Revoked, Closed)
            | (
                RefundProcessing,
                RefundProcessing | RefundSuccess | RefundFailed | RefundAbnormal
            )
            | (RefundSuccess, RefundSuccess)
            | (RefundFailed, RefundFailed)
            | (RefundAbnormal, RefundAbnormal)
    )
}

/// One side's view of one payment or refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    /// Payment: the order amount; refund: the amount asked to be refunded.
    pub amount_fen: i64,
    /// The channel fee in 1/1000 fen (the bill's 5 decimals of yuan); for a platform record
    /// the fee expected from the channel's rate, or [`FEE_UNKNOWN`].
    pub fee_milli_fen: i64,
    /// Where the record came from: the byte offset of its bill line, or the platform's row
    /// number; used to fetch the full evidence of the few records that disagree.
    pub source: u64,
    /// Seconds since the Unix epoch (the bill's Beijing wall time converted).
    pub time_s: u32,
    pub state: State,
}

/// A platform record whose expected fee is not known: fees are not compared.
pub const FEE_UNKNOWN: i64 = i64::MIN;

impl Record {
    pub fn kind(&self) -> Kind {
        self.key.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 48);
    }

    #[test]
    fn refund_snapshot_rules() {
        assert!(states_agree(State::RefundProcessing, State::RefundSuccess));
        assert!(!states_agree(State::RefundProcessing, State::RefundCreated));
        assert!(!states_agree(State::RefundSuccess, State::RefundProcessing));
        assert!(!states_agree(State::Paid, State::Unpaid));
        for s in [
            State::Paid,
            State::Unpaid,
            State::RefundAbnormal,
            State::Revoked,
        ] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }
}
