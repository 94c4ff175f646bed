//! Why the ledger refused something. Each variant has a stable snake_case code
//! ([`TransferError::code`]): it is what the store logs and what tests match on, and it is
//! named after TigerBeetle's result codes where one exists.

use crate::ids::{AccountId, TransferId};
use crate::model::{BATCH_EVENTS_MAX, USER_DATA_BYTES_MAX};

macro_rules! coded_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $code:literal, )+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order (tests walk it to prove each code is reachable).
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The stable code.
            pub const fn code(self) -> &'static str {
                match self {
                    $( $name::$variant => $code, )+
                }
            }
        }
    };
}

coded_enum! {
    /// Why one transfer was refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
    pub enum TransferError {
        #[error("the debit and credit accounts are the same")]
        AccountsMustBeDifferent => "accounts_must_be_different",
        #[error("amount must not be zero")]
        AmountMustNotBeZero => "amount_must_not_be_zero",
        #[error("amount exceeds the largest amount (i64::MAX)")]
        AmountExceedsMax => "amount_exceeds_max",
        #[error("code must not be zero")]
        CodeMustNotBeZero => "code_must_not_be_zero",
        #[error("user_data is longer than {USER_DATA_BYTES_MAX} bytes")]
        UserDataTooLong => "user_data_too_long",
        #[error("user_data must be printable ASCII")]
        UserDataNotPrintable => "user_data_not_printable",
        #[error("pending_id must be empty unless the transfer posts, voids or expires a pending transfer")]
        PendingIdMustBeZero => "pending_id_must_be_zero",
        #[error("pending_id is required to post, void or expire a pending transfer")]
        PendingIdMustNotBeZero => "pending_id_must_not_be_zero",
        #[error("pending_id must differ from the transfer's own id")]
        PendingIdMustBeDifferent => "pending_id_must_be_different",
        #[error("timeout is only for pending transfers")]
        TimeoutReservedForPendingTransfer => "timeout_reserved_for_pending_transfer",
        #[error("code {} is reserved for, and required by, the ledger's expiry transfers", crate::model::EXPIRY_TRANSFER_CODE)]
        CodeReservedForExpiry => "code_reserved_for_expiry",
        #[error("the debit account does not exist")]
        DebitAccountNotFound => "debit_account_not_found",
        #[error("the credit account does not exist")]
        CreditAccountNotFound => "credit_account_not_found",
        #[error("the two accounts are on different ledgers")]
        AccountsMustHaveTheSameLedger => "accounts_must_have_the_same_ledger",
        #[error("the transfer's ledger differs from its accounts'")]
        TransferMustHaveTheSameLedgerAsAccounts => "transfer_must_have_the_same_ledger_as_accounts",
        #[error("the pending transfer does not exist")]
        PendingTransferNotFound => "pending_transfer_not_found",
        #[error("the referenced transfer is not a pending transfer")]
        PendingTransferNotPending => "pending_transfer_not_pending",
        #[error("the pending transfer has a different debit account")]
        PendingTransferHasDifferentDebitAccountId => "pending_transfer_has_different_debit_account_id",
        #[error("the pending transfer has a different credit account")]
        PendingTransferHasDifferentCreditAccountId => "pending_transfer_has_different_credit_account_id",
        #[error("a void or expiry must name the full pending amount")]
        PendingTransferHasDifferentAmount => "pending_transfer_has_different_amount",
        #[error("the post exceeds the pending amount")]
        ExceedsPendingTransferAmount => "exceeds_pending_transfer_amount",
        #[error("the pending transfer was already posted")]
        PendingTransferAlreadyPosted => "pending_transfer_already_posted",
        #[error("the pending transfer was already voided")]
        PendingTransferAlreadyVoided => "pending_transfer_already_voided",
        #[error("the pending transfer has expired")]
        PendingTransferExpired => "pending_transfer_expired",
        #[error("the pending transfer has no timeout, so it never expires")]
        PendingTransferHasNoTimeout => "pending_transfer_has_no_timeout",
        #[error("the pending transfer's timeout has not passed yet")]
        PendingTransferNotExpired => "pending_transfer_not_expired",
        #[error("the accounts' pending counters are below the pending amount: edited rows")]
        PendingBalanceMismatch => "pending_balance_mismatch",
        #[error("the debit account's debits would exceed its credits")]
        ExceedsCredits => "exceeds_credits",
        #[error("the credit account's credits would exceed its debits")]
        ExceedsDebits => "exceeds_debits",
        #[error("debits_pending would exceed the largest balance")]
        OverflowsDebitsPending => "overflows_debits_pending",
        #[error("debits_posted would exceed the largest balance")]
        OverflowsDebitsPosted => "overflows_debits_posted",
        #[error("credits_pending would exceed the largest balance")]
        OverflowsCreditsPending => "overflows_credits_pending",
        #[error("credits_posted would exceed the largest balance")]
        OverflowsCreditsPosted => "overflows_credits_posted",
        #[error("the timeout runs past the largest timestamp")]
        OverflowsTimeout => "overflows_timeout",
        #[error("a transfer with this id exists with other flags (kind or linked)")]
        ExistsWithDifferentFlags => "exists_with_different_flags",
        #[error("a transfer with this id exists with another pending_id")]
        ExistsWithDifferentPendingId => "exists_with_different_pending_id",
        #[error("a transfer with this id exists with another timeout")]
        ExistsWithDifferentTimeout => "exists_with_different_timeout",
        #[error("a transfer with this id exists with another debit account")]
        ExistsWithDifferentDebitAccountId => "exists_with_different_debit_account_id",
        #[error("a transfer with this id exists with another credit account")]
        ExistsWithDifferentCreditAccountId => "exists_with_different_credit_account_id",
        #[error("a transfer with this id exists with another amount")]
        ExistsWithDifferentAmount => "exists_with_different_amount",
        #[error("a transfer with this id exists with other user_data")]
        ExistsWithDifferentUserData => "exists_with_different_user_data",
        #[error("a transfer with this id exists on another ledger")]
        ExistsWithDifferentLedger => "exists_with_different_ledger",
        #[error("a transfer with this id exists with another code")]
        ExistsWithDifferentCode => "exists_with_different_code",
        #[error("another transfer of its linked chain failed")]
        LinkedEventFailed => "linked_event_failed",
        #[error("the batch ends inside a linked chain")]
        LinkedEventChainOpen => "linked_event_chain_open",
    }
}

coded_enum! {
    /// Why one account was refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
    pub enum AccountError {
        #[error("both balance-limit flags are set")]
        FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
        #[error("code must not be zero")]
        CodeMustNotBeZero => "code_must_not_be_zero",
        #[error("a new account must have zero balances")]
        BalancesMustBeZero => "balances_must_be_zero",
        #[error("user_data is longer than {USER_DATA_BYTES_MAX} bytes")]
        UserDataTooLong => "user_data_too_long",
        #[error("user_data must be printable ASCII")]
        UserDataNotPrintable => "user_data_not_printable",
        #[error("an account with this id exists with other flags")]
        ExistsWithDifferentFlags => "exists_with_different_flags",
        #[error("an account with this id exists with other user_data")]
        ExistsWithDifferentUserData => "exists_with_different_user_data",
        #[error("an account with this id exists on another ledger")]
        ExistsWithDifferentLedger => "exists_with_different_ledger",
        #[error("an account with this id exists with another code")]
        ExistsWithDifferentCode => "exists_with_different_code",
    }
}

/// Why a call on the ledger changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("transfer #{index} ({id}): {error} [{}]", error.code())]
    Transfer {
        index: usize,
        id: TransferId,
        error: TransferError,
    },
    #[error("account #{index} ({id}): {error} [{}]", error.code())]
    Account {
        index: usize,
        id: AccountId,
        error: AccountError,
    },
    #[error("a batch of {len} events exceeds {BATCH_EVENTS_MAX}")]
    BatchTooLarge { len: usize },
    #[error("replayed record #{index} ({id}) already exists: the journal holds it twice")]
    ReplayDuplicate { index: usize, id: TransferId },
}

impl LedgerError {
    pub const fn code(&self) -> &'static str {
        match self {
            LedgerError::Transfer { error, .. } => error.code(),
            LedgerError::Account { error, .. } => error.code(),
            LedgerError::BatchTooLarge { .. } => "batch_too_large",
            LedgerError::ReplayDuplicate { .. } => "replay_duplicate",
        }
    }
}

/// Rows given to [`crate::LedgerState::from_rows`] that cannot form a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("account {0} appears twice")]
    DuplicateAccount(AccountId),
    #[error("transfer {0} appears twice")]
    DuplicateTransfer(TransferId),
    #[error("account {0} has a balance above the largest balance")]
    BalanceTooLarge(AccountId),
    #[error("pending transfer {0} has no status row")]
    PendingStatusMissing(TransferId),
    #[error("status row for {0}, which is not a loaded pending transfer")]
    PendingStatusOrphan(TransferId),
}

impl SnapshotError {
    pub const fn code(&self) -> &'static str {
        match self {
            SnapshotError::DuplicateAccount(_) => "duplicate_account",
            SnapshotError::DuplicateTransfer(_) => "duplicate_transfer",
            SnapshotError::BalanceTooLarge(_) => "balance_too_large",
            SnapshotError::PendingStatusMissing(_) => "pending_status_missing",
            SnapshotError::PendingStatusOrphan(_) => "pending_status_orphan",
        }
    }
}

/// A broken invariant: always a bug or an edited store, never a user error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("Σ debits_pending {debits} ≠ Σ credits_pending {credits}")]
    PendingNotBalanced { debits: u128, credits: u128 },
    #[error("Σ debits_posted {debits} ≠ Σ credits_posted {credits}")]
    PostedNotBalanced { debits: u128, credits: u128 },
    #[error("account {0} breaks its balance-limit flag")]
    LimitBroken(AccountId),
    #[error("account {0} has both balance-limit flags")]
    FlagsBoth(AccountId),
    #[error("account {0}'s balances differ from the sum of its transfers")]
    BalancesNotRecomputed(AccountId),
    #[error("transfer {0} names an account that does not exist")]
    DanglingAccount(TransferId),
    #[error("transfer {0} is on another ledger than its accounts")]
    LedgerMismatch(TransferId),
    #[error("transfer {0} resolves a pending transfer that is missing or not pending")]
    DanglingPending(TransferId),
    #[error("pending transfer {0} is resolved more than once")]
    ResolvedTwice(TransferId),
    #[error("pending transfer {0}'s status disagrees with the transfers that resolve it")]
    StatusMismatch(TransferId),
    #[error("pending transfer {0} is in the expiry index wrongly, or missing from it")]
    ExpiryIndex(TransferId),
}

impl InvariantViolation {
    pub const fn code(&self) -> &'static str {
        match self {
            InvariantViolation::PendingNotBalanced { .. } => "pending_not_balanced",
            InvariantViolation::PostedNotBalanced { .. } => "posted_not_balanced",
            InvariantViolation::LimitBroken(_) => "limit_broken",
            InvariantViolation::FlagsBoth(_) => "flags_both",
            InvariantViolation::BalancesNotRecomputed(_) => "balances_not_recomputed",
            InvariantViolation::DanglingAccount(_) => "dangling_account",
            InvariantViolation::LedgerMismatch(_) => "ledger_mismatch",
            InvariantViolation::DanglingPending(_) => "dangling_pending",
            InvariantViolation::ResolvedTwice(_) => "resolved_twice",
            InvariantViolation::StatusMismatch(_) => "status_mismatch",
            InvariantViolation::ExpiryIndex(_) => "expiry_index",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for e in TransferError::ALL {
            assert!(seen.insert(e.code()), "duplicate {}", e.code());
            assert!(
                e.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
        let mut seen = HashSet::new();
        for e in AccountError::ALL {
            assert!(seen.insert(e.code()), "duplicate {}", e.code());
        }
    }
}
