//! paygate's chart of accounts: what kinds of account exist, who owns each, which way its
//! balance runs and the limit that keeps it from going the wrong way.
//!
//! | kind (code) | one per | normal side | limit flag | holds |
//! |---|---|---|---|---|
//! | `ChannelClearing` (1) | channel × currency | debit (asset) | credits ≤ debits | what WeChat Pay collected for us and has not paid out yet |
//! | `MerchantPending` (2) | merchant × currency | credit (liability) | debits ≤ credits | a merchant's net takings not yet settled (T+N) |
//! | `MerchantAvailable` (3) | merchant × currency | credit | debits ≤ credits | settled, ready to pay out |
//! | `MerchantShareFrozen` (4) | merchant × currency | credit | debits ≤ credits | takings frozen for profit sharing (`settle_info.profit_sharing`) |
//! | `SettlementPayable` (5) | merchant × currency | credit | debits ≤ credits | payouts requested, not yet paid by the channel |
//! | `ShareReceiver` (6) | receiver × currency | credit | debits ≤ credits | what profit sharing gave a receiver |
//! | `PlatformFeeIncome` (7) | platform × currency | credit (income) | debits ≤ credits | paygate's fees |
//! | `RefundsPayable` (8) | platform × currency | credit | debits ≤ credits | refunds accepted, owed to payers until the channel pays them |
//!
//! Account ids are derived from (kind, owner, currency), so every node computes the same id
//! with no lookup and creating an account twice is `Exists`. An owner is printable ASCII:
//! an mchid, a channel id, [`PLATFORM_OWNER`], or a receiver key, which for a personal
//! receiver must be the keyed hash of the openid, never the openid itself (DESIGN rule 7).

use paygate_core::money::Currency;

use crate::ids::AccountId;
use crate::model::{Account, AccountFlags};

/// The owner string of the platform's own accounts.
pub const PLATFORM_OWNER: &str = "platform";

/// The kinds of account. The code is stored and hashed into ids: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountKind {
    ChannelClearing,
    MerchantPending,
    MerchantAvailable,
    MerchantShareFrozen,
    SettlementPayable,
    ShareReceiver,
    PlatformFeeIncome,
    RefundsPayable,
}

impl AccountKind {
    pub const ALL: [AccountKind; 8] = [
        AccountKind::ChannelClearing,
        AccountKind::MerchantPending,
        AccountKind::MerchantAvailable,
        AccountKind::MerchantShareFrozen,
        AccountKind::SettlementPayable,
        AccountKind::ShareReceiver,
        AccountKind::PlatformFeeIncome,
        AccountKind::RefundsPayable,
    ];

    pub const fn code(self) -> u16 {
        match self {
            AccountKind::ChannelClearing => 1,
            AccountKind::MerchantPending => 2,
            AccountKind::MerchantAvailable => 3,
            AccountKind::MerchantShareFrozen => 4,
            AccountKind::SettlementPayable => 5,
            AccountKind::ShareReceiver => 6,
            AccountKind::PlatformFeeIncome => 7,
            AccountKind::RefundsPayable => 8,
        }
    }

    pub fn from_code(code: u16) -> Option<AccountKind> {
        AccountKind::ALL.into_iter().find(|k| k.code() == code)
    }

    pub const fn name(self) -> &'static str {
        match self {
            AccountKind::ChannelClearing => "channel_clearing",
            AccountKind::MerchantPending => "merchant_pending",
            AccountKind::MerchantAvailable => "merchant_available",
            AccountKind::MerchantShareFrozen => "merchant_share_frozen",
            AccountKind::SettlementPayable => "settlement_payable",
            AccountKind::ShareReceiver => "share_receiver",
            AccountKind::PlatformFeeIncome => "platform_fee_income",
            AccountKind::RefundsPayable => "refunds_payable",
        }
    }

    /// The clearing account is an asset (WeChat owes us); every other kind is money we owe
    /// or earned, which must never be debited below zero.
    pub const fn flags(self) -> AccountFlags {
        match self {
            AccountKind::ChannelClearing => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            _ => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        }
    }
}

/// The id of `kind`'s account for `owner` in `currency`.
pub fn account_id(kind: AccountKind, owner: &str, currency: Currency) -> AccountId {
    AccountId::derive(
        "paygate-ledger/account/v1",
        &[
            &kind.code().to_be_bytes(),
            currency.as_str().as_bytes(),
            owner.as_bytes(),
        ],
    )
}

/// `kind`'s account for `owner` in `currency`, with the kind's limit flag.
pub fn account(kind: AccountKind, owner: &str, currency: Currency) -> Account {
    Account::new(
        account_id(kind, owner, currency),
        currency,
        kind.code(),
        kind.flags(),
        owner,
    )
}

/// A channel's clearing account (receivable from WeChat Pay through that channel).
pub fn channel_clearing(channel_id: &str, currency: Currency) -> Account {
    account(AccountKind::ChannelClearing, channel_id, currency)
}

/// A merchant's accounts: pending settlement, available, profit-share frozen, settlement payable.
pub fn merchant_accounts(mchid: &str, currency: Currency) -> [Account; 4] {
    [
        account(AccountKind::MerchantPending, mchid, currency),
        account(AccountKind::MerchantAvailable, mchid, currency),
        account(AccountKind::MerchantShareFrozen, mchid, currency),
        account(AccountKind::SettlementPayable, mchid, currency),
    ]
}

/// The platform's accounts: fee income and refunds payable.
pub fn platform_accounts(currency: Currency) -> [Account; 2] {
    [
        account(AccountKind::PlatformFeeIncome, PLATFORM_OWNER, currency),
        account(AccountKind::RefundsPayable, PLATFORM_OWNER, currency),
    ]
}

/// A profit-sharing receiver's account (`receiver` is a key, see the module doc).
pub fn share_receiver(receiver: &str, currency: Currency) -> Account {
    account(AccountKind::ShareReceiver, receiver, currency)
}

/// What a transfer is for. Stored and journaled: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferCode {
    PaymentNet,
    PaymentFee,
    PaymentNetFrozen,
    RefundReserveMerchant,
    RefundReserveFee,
    RefundPostMerchant,
    RefundPostFee,
    RefundVoidMerchant,
    RefundVoidFee,
    RefundPaid,
    ShareSplit,
    ShareUnfreeze,
    ShareReturn,
    Settle,
    PayoutRequested,
    PayoutCompleted,
    DuplicatePayment,
    DuplicateRefunded,
}

impl TransferCode {
    pub const ALL: [TransferCode; 18] = [
        TransferCode::PaymentNet,
        TransferCode::PaymentFee,
        TransferCode::PaymentNetFrozen,
        TransferCode::RefundReserveMerchant,
        TransferCode::RefundReserveFee,
        TransferCode::RefundPostMerchant,
        TransferCode::RefundPostFee,
        TransferCode::RefundVoidMerchant,
        TransferCode::RefundVoidFee,
        TransferCode::RefundPaid,
        TransferCode::ShareSplit,
        TransferCode::ShareUnfreeze,
        TransferCode::ShareReturn,
        TransferCode::Settle,
        TransferCode::PayoutRequested,
        TransferCode::PayoutCompleted,
        TransferCode::DuplicatePayment,
        TransferCode::DuplicateRefunded,
    ];

    /// Hundreds group the business fact: 1xx payment, 2xx refund, 3xx profit sharing,
    /// 4xx settlement. (`u16::MAX` is the ledger's own expiry code.)
    pub const fn code(self) -> u16 {
        match self {
            TransferCode::PaymentNet => 101,
            TransferCode::PaymentFee => 102,
            TransferCode::PaymentNetFrozen => 103,
            TransferCode::DuplicatePayment => 104,
            TransferCode::RefundReserveMerchant => 201,
            TransferCode::RefundReserveFee => 202,
            TransferCode::RefundPostMerchant => 203,
            TransferCode::RefundPostFee => 204,
            TransferCode::RefundVoidMerchant => 205,
            TransferCode::RefundVoidFee => 206,
            TransferCode::RefundPaid => 207,
            TransferCode::DuplicateRefunded => 208,
            TransferCode::ShareSplit => 301,
            TransferCode::ShareUnfreeze => 302,
            TransferCode::ShareReturn => 303,
            TransferCode::Settle => 401,
            TransferCode::PayoutRequested => 402,
            TransferCode::PayoutCompleted => 403,
        }
    }

    pub fn from_code(code: u16) -> Option<TransferCode> {
        TransferCode::ALL.into_iter().find(|k| k.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn account_ids_differ_by_kind_owner_and_currency_and_are_stable() {
        let mut seen = HashSet::new();
        for kind in AccountKind::ALL {
            assert_eq!(AccountKind::from_code(kind.code()), Some(kind));
            for owner in ["1900000109", "1900000110", PLATFORM_OWNER] {
                for cur in [Currency::CNY, Currency::USD] {
                    assert!(seen.insert(account_id(kind, owner, cur)));
                }
            }
        }
        // Pinned (computed outside Rust): a changed derivation would orphan every stored account.
        assert_eq!(
            account_id(AccountKind::MerchantPending, "1900000109", Currency::CNY).to_hex(),
            "84847a0b7faafb52d4536ded1ff8a62e"
        );
        let codes: HashSet<u16> = TransferCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), TransferCode::ALL.len());
        for c in TransferCode::ALL {
            assert_eq!(TransferCode::from_code(c.code()), Some(c));
        }
    }

    #[test]
    fn only_clearing_is_an_asset() {
        for kind in AccountKind::ALL {
            let f = kind.flags();
            assert_eq!(
                f.credits_must_not_exceed_debits,
                kind == AccountKind::ChannelClearing
            );
            assert_eq!(
                f.debits_must_not_exceed_credits,
                kind != AccountKind::ChannelClearing
            );
        }
    }
}
