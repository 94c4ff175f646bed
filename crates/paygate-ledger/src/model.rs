//! The ledger's records: accounts with four balance counters, immutable transfers, the stored
//! form of a transfer, and the limits every value lives within.
//!
//! The model is TigerBeetle's (reference ledger-recon-risk.md §1.1) with three departures:
//! - the *ledger* is a [`Currency`]: two accounts can only exchange money of one currency;
//! - a transfer's mode is a [`TransferKind`] enum rather than mutually exclusive flag bits, so
//!   "pending and post at once" cannot be written down; only `linked` stays a flag;
//! - `user_data` is a short printable string (the business reference: a transaction_id, a
//!   refund_id, `mchid/out_order_no`) rather than integers, so an auditor reads it directly.
//!
//! Amounts and balances are `u64` bounded by `i64::MAX` ([`AMOUNT_MAX`], [`BALANCE_MAX`]): a
//! value always fits the store's signed 64-bit integer columns and converts to
//! [`paygate_core::money::Money`] without loss. Sums across accounts are taken in `u128`.

use paygate_core::money::Currency;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, TransferId};

/// Largest amount of one transfer (fits an `i64` minor-unit `Money`).
pub const AMOUNT_MAX: u64 = i64::MAX as u64;
/// Largest value of any balance counter (fits a signed 64-bit SQL column).
pub const BALANCE_MAX: u64 = i64::MAX as u64;
/// Longest `user_data` in bytes: `mchid/out_order_no` is at most 32 + 1 + 64.
pub const USER_DATA_BYTES_MAX: usize = 128;
/// Most events (accounts or transfers) in one call, as in TigerBeetle's request size.
pub const BATCH_EVENTS_MAX: usize = 8189;
/// The transfer code the ledger itself uses for expiry transfers (see [`TransferKind::ExpirePending`]).
pub const EXPIRY_TRANSFER_CODE: u16 = u16::MAX;

/// Balance limits of an account. At most one may be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountFlags {
    /// Refuse a transfer if `debits_pending + debits_posted + amount > credits_posted`:
    /// a liability (money owed to someone) that must never go negative.
    pub debits_must_not_exceed_credits: bool,
    /// The mirror image: an asset (money owed to us) that must never go negative.
    pub credits_must_not_exceed_debits: bool,
}

impl AccountFlags {
    pub const NONE: AccountFlags = AccountFlags {
        debits_must_not_exceed_credits: false,
        credits_must_not_exceed_debits: false,
    };
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: AccountFlags = AccountFlags {
        debits_must_not_exceed_credits: true,
        credits_must_not_exceed_debits: false,
    };
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: AccountFlags = AccountFlags {
        debits_must_not_exceed_credits: false,
        credits_must_not_exceed_debits: true,
    };

    /// Bit 0: debits_must_not_exceed_credits; bit 1: credits_must_not_exceed_debits
    /// (TigerBeetle's bit positions 1 and 2 shifted down: `linked` does not apply to our accounts).
    pub const fn bits(self) -> u16 {
        (self.debits_must_not_exceed_credits as u16)
            | ((self.credits_must_not_exceed_debits as u16) << 1)
    }

    /// Reads [`AccountFlags::bits`]; `None` for unknown bits.
    pub const fn from_bits(bits: u16) -> Option<AccountFlags> {
        if bits & !0b11 != 0 {
            return None;
        }
        Some(AccountFlags {
            debits_must_not_exceed_credits: bits & 1 != 0,
            credits_must_not_exceed_debits: bits & 2 != 0,
        })
    }
}

/// The four counters of an account. Only transfers change them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balances {
    pub debits_pending: u64,
    pub debits_posted: u64,
    pub credits_pending: u64,
    pub credits_posted: u64,
}

/// An account. Nothing but its balances ever changes after creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    /// Only accounts of one ledger (currency) exchange money.
    pub ledger: Currency,
    /// The chart-of-accounts kind ([`crate::chart::AccountKind`] for paygate); never 0.
    pub code: u16,
    pub flags: AccountFlags,
    /// Who or what the account belongs to (an mchid, a channel id, a receiver), for audits.
    pub user_data: String,
    #[serde(flatten)]
    pub balances: Balances,
}

impl Account {
    /// A new account with zero balances (the only kind `create_accounts` accepts).
    pub fn new(
        id: AccountId,
        ledger: Currency,
        code: u16,
        flags: AccountFlags,
        user_data: impl Into<String>,
    ) -> Account {
        Account {
            id,
            ledger,
            code,
            flags,
            user_data: user_data.into(),
            balances: Balances::default(),
        }
    }

    /// Credits minus debits, posted only (what a credit-normal account holds for its owner).
    pub fn credit_balance_posted(&self) -> i128 {
        i128::from(self.balances.credits_posted) - i128::from(self.balances.debits_posted)
    }

    /// Debits minus credits, posted only (what a debit-normal account is owed).
    pub fn debit_balance_posted(&self) -> i128 {
        i128::from(self.balances.debits_posted) - i128::from(self.balances.credits_posted)
    }

    /// What a `debits_must_not_exceed_credits` account can still be debited by.
    pub fn debit_headroom(&self) -> i128 {
        i128::from(self.balances.credits_posted)
            - i128::from(self.balances.debits_posted)
            - i128::from(self.balances.debits_pending)
    }
}

/// How a transfer moves money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Posted at once.
    Single,
    /// Reserves `amount` in the pending counters until posted, voided or expired.
    Pending,
    /// Posts `amount` (at most the pending amount) of `pending_id`; the rest is released.
    PostPending,
    /// Releases `pending_id`; `amount` must equal the pending amount.
    VoidPending,
    /// Releases `pending_id` once its timeout has passed. Made by the ledger
    /// ([`crate::LedgerState::expiry_batch`]) so the release is a journaled transfer like any
    /// other and balances stay equal to the sum of the journal.
    ExpirePending,
}

impl TransferKind {
    /// The byte in the canonical encoding; stable.
    pub const fn to_byte(self) -> u8 {
        match self {
            TransferKind::Single => 0,
            TransferKind::Pending => 1,
            TransferKind::PostPending => 2,
            TransferKind::VoidPending => 3,
            TransferKind::ExpirePending => 4,
        }
    }

    pub const fn from_byte(b: u8) -> Option<TransferKind> {
        match b {
            0 => Some(TransferKind::Single),
            1 => Some(TransferKind::Pending),
            2 => Some(TransferKind::PostPending),
            3 => Some(TransferKind::VoidPending),
            4 => Some(TransferKind::ExpirePending),
            _ => None,
        }
    }

    /// Post, void and expire resolve a pending transfer.
    pub const fn resolves_pending(self) -> bool {
        matches!(
            self,
            TransferKind::PostPending | TransferKind::VoidPending | TransferKind::ExpirePending
        )
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            TransferKind::Single => "single",
            TransferKind::Pending => "pending",
            TransferKind::PostPending => "post_pending",
            TransferKind::VoidPending => "void_pending",
            TransferKind::ExpirePending => "expire_pending",
        }
    }
}

/// A transfer as requested: immutable once applied, identified (and deduplicated) by `id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    /// Minor units, `1..=AMOUNT_MAX`.
    pub amount: u64,
    /// The pending transfer a post/void/expire resolves; `None` for the other kinds.
    pub pending_id: Option<TransferId>,
    /// Pending transfers only: seconds until it may be expired; 0 = never.
    pub timeout_s: u32,
    pub ledger: Currency,
    /// What the transfer is for ([`crate::chart::TransferCode`] for paygate); never 0.
    pub code: u16,
    pub kind: TransferKind,
    /// Chains this transfer to the next one in the batch: the chain succeeds or fails whole.
    pub linked: bool,
    /// The business reference, printable ASCII, at most [`USER_DATA_BYTES_MAX`] bytes.
    pub user_data: String,
}

/// A transfer as stored: the request plus the time the ledger applied it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferRecord {
    #[serde(flatten)]
    pub transfer: Transfer,
    /// Unix milliseconds of the `apply` that created it; a pending's timeout runs from here.
    pub timestamp_ms: u64,
}

impl TransferRecord {
    /// When a pending transfer may be expired, if it has a timeout.
    pub fn expires_at_ms(&self) -> Option<u64> {
        if self.transfer.kind != TransferKind::Pending || self.transfer.timeout_s == 0 {
            return None;
        }
        // Saturates only for absurd timestamps, which `apply` already refused.
        Some(
            self.timestamp_ms
                .saturating_add(u64::from(self.transfer.timeout_s) * 1000),
        )
    }
}

/// The state of a pending transfer. Changes at most once, from `Pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl PendingStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            PendingStatus::Pending => "pending",
            PendingStatus::Posted => "posted",
            PendingStatus::Voided => "voided",
            PendingStatus::Expired => "expired",
        }
    }
}

/// What one business fact writes into the ledger: the accounts it needs (created if missing,
/// idempotently) and its transfers, applied all or nothing by [`crate::LedgerState::apply_posting`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub accounts: Vec<Account>,
    pub transfers: Vec<Transfer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_bits_round_trip_and_refuse_unknown_bits() {
        for f in [
            AccountFlags::NONE,
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        ] {
            assert_eq!(AccountFlags::from_bits(f.bits()), Some(f));
        }
        assert_eq!(AccountFlags::from_bits(4), None);
    }

    #[test]
    fn kind_bytes_round_trip() {
        for b in 0..=255u8 {
            if let Some(k) = TransferKind::from_byte(b) {
                assert_eq!(k.to_byte(), b);
            } else {
                assert!(b > 4);
            }
        }
    }
}
