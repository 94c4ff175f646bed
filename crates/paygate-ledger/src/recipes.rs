//! Posting recipes: the transfers of each business fact, as pure functions of the fact.
//!
//! Every transfer id is derived from the fact's reference (and the leg), so the same fact
//! replayed (a duplicate callback, a retry after a crash) yields the same ids and the ledger
//! answers `Exists` instead of posting twice. A recipe's legs are one linked chain, and its
//! [`Posting`] names the accounts it needs so the store can create them idempotently in the
//! same transaction. Zero-amount legs (no fee, nothing to refund from the fee) are left out.
//!
//! | fact | transfer (code) | debit | credit | amount | kind |
//! |---|---|---|---|---|---|
//! | payment success | `PaymentNet` (101) | channel clearing | merchant pending | total − fee | single |
//! | | `PaymentNetFrozen` (103), instead of 101 when `profit_sharing` | channel clearing | merchant share frozen | total − fee | single |
//! | | `PaymentFee` (102) | channel clearing | platform fee income | fee | single |
//! | refund requested | `RefundReserveMerchant` (201) | merchant pending *or* available | refunds payable | amount − fee_refund | pending |
//! | | `RefundReserveFee` (202) | platform fee income | refunds payable | fee_refund | pending |
//! | refund succeeded | `RefundPostMerchant` (203), `RefundPostFee` (204) | as reserved | as reserved | as reserved | post |
//! | | `RefundPaid` (207) | refunds payable | channel clearing | amount | single |
//! | refund failed / closed | `RefundVoidMerchant` (205), `RefundVoidFee` (206) | as reserved | as reserved | as reserved | void |
//! | profit-share split | `ShareSplit` (301), one per receiver | merchant share frozen | receiver | receiver's amount | single |
//! | profit-share unfreeze | `ShareUnfreeze` (302) | merchant share frozen | merchant pending | what is left frozen | single |
//! | profit-share return | `ShareReturn` (303) | receiver | merchant pending | amount | single |
//! | daily settlement | `Settle` (401) | merchant pending | merchant available | amount | single |
//! | payout requested | `PayoutRequested` (402) | merchant available | settlement payable | amount | single |
//! | payout completed | `PayoutCompleted` (403) | settlement payable | channel clearing | amount | single |
//! | duplicate payment (a second attempt paid) | `DuplicatePayment` (104) | channel clearing | refunds payable | amount | single |
//! | its refund succeeded | `DuplicateRefunded` (208) | refunds payable | channel clearing | amount | single |
//!
//! Reading the table: a payment leaves WeChat owing us the total (clearing, an asset) and
//! us owing the merchant the net and ourselves the fee. A refund first reserves the money
//! (pending, so concurrent refunds cannot spend it twice) and, when the channel has paid the
//! payer, posts it and reduces what WeChat owes us. Settlement is T+N: pending → available,
//! then a payout makes it payable, and the channel paying the merchant settles both sides.
//! The limit flags of [`crate::chart`] make an over-refund, an over-split or an over-payout
//! fail with `exceeds_credits` rather than drive a balance negative.

use paygate_core::money::{Currency, Money};

use crate::chart::{self, AccountKind, TransferCode};
use crate::ids::TransferId;
use crate::model::{Account, Posting, Transfer, TransferKind, USER_DATA_BYTES_MAX};

/// Most receivers in one profit-sharing split (WeChat Pay's limit per order).
pub const SHARE_RECEIVERS_MAX: usize = 50;

/// Why a fact could not be turned into transfers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    #[error("{field} is {currency}, the fact is in {expected}")]
    CurrencyMismatch {
        field: &'static str,
        currency: Currency,
        expected: Currency,
    },
    #[error("{field} must be positive")]
    AmountNotPositive { field: &'static str },
    #[error("{field} must not be negative")]
    AmountNegative { field: &'static str },
    #[error("{part} exceeds {whole}")]
    PartExceedsWhole {
        part: &'static str,
        whole: &'static str,
    },
    #[error("{field} must be 1..={USER_DATA_BYTES_MAX} printable ASCII characters")]
    BadReference { field: &'static str },
    #[error("a split needs 1..={SHARE_RECEIVERS_MAX} receivers, got {0}")]
    ReceiverCount(usize),
    #[error("receiver {0:?} appears twice in one split")]
    DuplicateReceiver(String),
}

impl RecipeError {
    pub const fn code(&self) -> &'static str {
        match self {
            RecipeError::CurrencyMismatch { .. } => "currency_mismatch",
            RecipeError::AmountNotPositive { .. } => "amount_not_positive",
            RecipeError::AmountNegative { .. } => "amount_negative",
            RecipeError::PartExceedsWhole { .. } => "part_exceeds_whole",
            RecipeError::BadReference { .. } => "bad_reference",
            RecipeError::ReceiverCount(_) => "receiver_count",
            RecipeError::DuplicateReceiver(_) => "duplicate_receiver",
        }
    }
}

fn reference(field: &'static str, value: &str) -> Result<(), RecipeError> {
    let ok = !value.is_empty()
        && value.len() <= USER_DATA_BYTES_MAX
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RecipeError::BadReference { field })
    }
}

/// The amount in minor units, checked positive and in the fact's currency.
fn positive(field: &'static str, m: Money, currency: Currency) -> Result<u64, RecipeError> {
    if m.currency() != currency {
        return Err(RecipeError::CurrencyMismatch {
            field,
            currency: m.currency(),
            expected: currency,
        });
    }
    u64::try_from(m.amount_minor())
        .ok()
        .filter(|v| *v > 0)
        .ok_or(RecipeError::AmountNotPositive { field })
}

fn non_negative(field: &'static str, m: Money, currency: Currency) -> Result<u64, RecipeError> {
    if m.currency() != currency {
        return Err(RecipeError::CurrencyMismatch {
            field,
            currency: m.currency(),
            expected: currency,
        });
    }
    u64::try_from(m.amount_minor()).map_err(|_| RecipeError::AmountNegative { field })
}

fn transfer_id(fact: &str, reference: &[&str], leg: &str) -> TransferId {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(reference.len() + 2);
    parts.push(fact.as_bytes());
    parts.extend(reference.iter().map(|r| r.as_bytes()));
    parts.push(leg.as_bytes());
    TransferId::derive("paygate-ledger/transfer/v1", &parts)
}

/// Collects legs and the accounts they touch; links the legs into one chain.
struct Builder {
    posting: Posting,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            posting: Posting::default(),
        }
    }

    fn need(&mut self, a: &Account) {
        if !self.posting.accounts.iter().any(|x| x.id == a.id) {
            self.posting.accounts.push(a.clone());
        }
    }

    #[allow(clippy::too_many_arguments)] // one row of the recipe table
    fn leg(
        &mut self,
        id: TransferId,
        debit: &Account,
        credit: &Account,
        amount: u64,
        kind: TransferKind,
        pending_id: Option<TransferId>,
        timeout_s: u32,
        code: TransferCode,
        user_data: &str,
    ) {
        if amount == 0 {
            return;
        }
        self.need(debit);
        self.need(credit);
        self.posting.transfers.push(Transfer {
            id,
            debit_account_id: debit.id,
            credit_account_id: credit.id,
            amount,
            pending_id,
            timeout_s,
            ledger: debit.ledger,
            code: code.code(),
            kind,
            linked: true,
            user_data: user_data.to_owned(),
        });
    }

    fn finish(mut self) -> Posting {
        if let Some(last) = self.posting.transfers.last_mut() {
            last.linked = false;
        }
        self.posting
    }
}

/// A payment the channel confirmed (`trade_state = SUCCESS`).
#[derive(Debug, Clone, Copy)]
pub struct PaymentSuccess<'a> {
    pub transaction_id: &'a str,
    pub mchid: &'a str,
    pub channel_id: &'a str,
    /// What the payer paid.
    pub total: Money,
    /// paygate's fee, snapshotted on the order (0..=total).
    pub fee: Money,
    /// `settle_info.profit_sharing`: the net is frozen until split or unfrozen.
    pub profit_sharing: bool,
}

pub fn payment_success(p: &PaymentSuccess<'_>) -> Result<Posting, RecipeError> {
    let cur = p.total.currency();
    reference("transaction_id", p.transaction_id)?;
    reference("mchid", p.mchid)?;
    reference("channel_id", p.channel_id)?;
    let total = positive("total", p.total, cur)?;
    let fee = non_negative("fee", p.fee, cur)?;
    let net = total
        .checked_sub(fee)
        .ok_or(RecipeError::PartExceedsWhole {
            part: "fee",
            whole: "total",
        })?;
    let clearing = chart::channel_clearing(p.channel_id, cur);
    let (to, code) = if p.profit_sharing {
        (
            chart::account(AccountKind::MerchantShareFrozen, p.mchid, cur),
            TransferCode::PaymentNetFrozen,
        )
    } else {
        (
            chart::account(AccountKind::MerchantPending, p.mchid, cur),
            TransferCode::PaymentNet,
        )
    };
    let fee_income = chart::account(AccountKind::PlatformFeeIncome, chart::PLATFORM_OWNER, cur);
    let r = [p.transaction_id];
    let mut b = Builder::new();
    b.leg(
        transfer_id("payment", &r, "net"),
        &clearing,
        &to,
        net,
        TransferKind::Single,
        None,
        0,
        code,
        p.transaction_id,
    );
    b.leg(
        transfer_id("payment", &r, "fee"),
        &clearing,
        &fee_income,
        fee,
        TransferKind::Single,
        None,
        0,
        TransferCode::PaymentFee,
        p.transaction_id,
    );
    Ok(b.finish())
}

/// Which merchant balance a refund is taken from: the order's takings if not settled yet,
/// the available balance once they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundFunds {
    Pending,
    Available,
}

/// A refund, as accepted. The same value drives all three of its recipes.
#[derive(Debug, Clone, Copy)]
pub struct Refund<'a> {
    /// paygate's refund id (globally unique).
    pub refund_id: &'a str,
    pub mchid: &'a str,
    /// The channel of the refunded payment.
    pub channel_id: &'a str,
    /// What goes back to the payer.
    pub amount: Money,
    /// The part of the fee paygate gives back (0..=amount); the merchant bears the rest.
    pub fee_refund: Money,
    pub funds: RefundFunds,
    /// How long the reservation holds if no outcome arrives; 0 = until resolved (advised:
    /// an ABNORMAL refund may take days, and a post after expiry is refused).
    pub timeout_s: u32,
}

struct RefundLegs {
    merchant: Account,
    fee_income: Account,
    payable: Account,
    clearing: Account,
    merchant_amount: u64,
    fee_amount: u64,
    amount: u64,
}

fn refund_legs(r: &Refund<'_>) -> Result<RefundLegs, RecipeError> {
    let cur = r.amount.currency();
    reference("refund_id", r.refund_id)?;
    reference("mchid", r.mchid)?;
    reference("channel_id", r.channel_id)?;
    let amount = positive("amount", r.amount, cur)?;
    let fee_amount = non_negative("fee_refund", r.fee_refund, cur)?;
    let merchant_amount = amount
        .checked_sub(fee_amount)
        .ok_or(RecipeError::PartExceedsWhole {
            part: "fee_refund",
            whole: "amount",
        })?;
    let kind = match r.funds {
        RefundFunds::Pending => AccountKind::MerchantPending,
        RefundFunds::Available => AccountKind::MerchantAvailable,
    };
    Ok(RefundLegs {
        merchant: chart::account(kind, r.mchid, cur),
        fee_income: chart::account(AccountKind::PlatformFeeIncome, chart::PLATFORM_OWNER, cur),
        payable: chart::account(AccountKind::RefundsPayable, chart::PLATFORM_OWNER, cur),
        clearing: chart::channel_clearing(r.channel_id, cur),
        merchant_amount,
        fee_amount,
        amount,
    })
}

/// The refund was accepted (`PROCESSING`): reserve its money.
pub fn refund_requested(r: &Refund<'_>) -> Result<Posting, RecipeError> {
    let l = refund_legs(r)?;
    let id = [r.refund_id];
    let mut b = Builder::new();
    let timeout = r.timeout_s;
    b.leg(
        transfer_id("refund", &id, "reserve-merchant"),
        &l.merchant,
        &l.payable,
        l.merchant_amount,
        TransferKind::Pending,
        None,
        timeout,
        TransferCode::RefundReserveMerchant,
        r.refund_id,
    );
    b.leg(
        transfer_id("refund", &id, "reserve-fee"),
        &l.fee_income,
        &l.payable,
        l.fee_amount,
        TransferKind::Pending,
        None,
        timeout,
        TransferCode::RefundReserveFee,
        r.refund_id,
    );
    Ok(b.finish())
}

/// The channel refunded the payer (`SUCCESS`): post the reservation and settle with the channel.
pub fn refund_succeeded(r: &Refund<'_>) -> Result<Posting, RecipeError> {
    let l = refund_legs(r)?;
    let id = [r.refund_id];
    let merchant_pending = transfer_id("refund", &id, "reserve-merchant");
    let fee_pending = transfer_id("refund", &id, "reserve-fee");
    let mut b = Builder::new();
    b.leg(
        transfer_id("refund", &id, "post-merchant"),
        &l.merchant,
        &l.payable,
        l.merchant_amount,
        TransferKind::PostPending,
        Some(merchant_pending),
        0,
        TransferCode::RefundPostMerchant,
        r.refund_id,
    );
    b.leg(
        transfer_id("refund", &id, "post-fee"),
        &l.fee_income,
        &l.payable,
        l.fee_amount,
        TransferKind::PostPending,
        Some(fee_pending),
        0,
        TransferCode::RefundPostFee,
        r.refund_id,
    );
    b.leg(
        transfer_id("refund", &id, "paid"),
        &l.payable,
        &l.clearing,
        l.amount,
        TransferKind::Single,
        None,
        0,
        TransferCode::RefundPaid,
        r.refund_id,
    );
    Ok(b.finish())
}

/// The refund failed or was closed: release the reservation.
pub fn refund_failed(r: &Refund<'_>) -> Result<Posting, RecipeError> {
    let l = refund_legs(r)?;
    let id = [r.refund_id];
    let merchant_pending = transfer_id("refund", &id, "reserve-merchant");
    let fee_pending = transfer_id("refund", &id, "reserve-fee");
    let mut b = Builder::new();
    b.leg(
        transfer_id("refund", &id, "void-merchant"),
        &l.merchant,
        &l.payable,
        l.merchant_amount,
        TransferKind::VoidPending,
        Some(merchant_pending),
        0,
        TransferCode::RefundVoidMerchant,
        r.refund_id,
    );
    b.leg(
        transfer_id("refund", &id, "void-fee"),
        &l.fee_income,
        &l.payable,
        l.fee_amount,
        TransferKind::VoidPending,
        Some(fee_pending),
        0,
        TransferCode::RefundVoidFee,
        r.refund_id,
    );
    Ok(b.finish())
}

/// One profit-sharing order (`out_order_no`): frozen funds to each receiver.
#[derive(Debug, Clone, Copy)]
pub struct ShareSplit<'a> {
    pub mchid: &'a str,
    pub out_order_no: &'a str,
    /// (receiver key, amount): see [`crate::chart`] on receiver keys.
    pub receivers: &'a [(&'a str, Money)],
}

fn merchant_ref(mchid: &str, no: &str, field: &'static str) -> Result<String, RecipeError> {
    reference("mchid", mchid)?;
    reference(field, no)?;
    let r = format!("{mchid}/{no}");
    reference(field, &r)?;
    Ok(r)
}

pub fn share_split(s: &ShareSplit<'_>) -> Result<Posting, RecipeError> {
    let user_data = merchant_ref(s.mchid, s.out_order_no, "out_order_no")?;
    if s.receivers.is_empty() || s.receivers.len() > SHARE_RECEIVERS_MAX {
        return Err(RecipeError::ReceiverCount(s.receivers.len()));
    }
    let cur = s.receivers[0].1.currency();
    let frozen = chart::account(AccountKind::MerchantShareFrozen, s.mchid, cur);
    let mut b = Builder::new();
    for (i, (receiver, amount)) in s.receivers.iter().enumerate() {
        reference("receiver", receiver)?;
        if s.receivers[..i].iter().any(|(r, _)| r == receiver) {
            return Err(RecipeError::DuplicateReceiver((*receiver).to_owned()));
        }
        let amount = positive("receiver amount", *amount, cur)?;
        let to = chart::share_receiver(receiver, cur);
        let id = transfer_id("share-split", &[s.mchid, s.out_order_no, receiver], "split");
        b.leg(
            id,
            &frozen,
            &to,
            amount,
            TransferKind::Single,
            None,
            0,
            TransferCode::ShareSplit,
            &user_data,
        );
    }
    Ok(b.finish())
}

/// Unfreeze what is left frozen of an order (WeChat's `unfreeze`, or `unfreeze_unsplit`).
/// `out_order_no` is the unfreeze request's own number.
pub fn share_unfreeze(
    mchid: &str,
    out_order_no: &str,
    amount: Money,
) -> Result<Posting, RecipeError> {
    let user_data = merchant_ref(mchid, out_order_no, "out_order_no")?;
    let cur = amount.currency();
    let amount = positive("amount", amount, cur)?;
    let mut b = Builder::new();
    let id = transfer_id("share-unfreeze", &[mchid, out_order_no], "unfreeze");
    let frozen = chart::account(AccountKind::MerchantShareFrozen, mchid, cur);
    let pending = chart::account(AccountKind::MerchantPending, mchid, cur);
    b.leg(
        id,
        &frozen,
        &pending,
        amount,
        TransferKind::Single,
        None,
        0,
        TransferCode::ShareUnfreeze,
        &user_data,
    );
    Ok(b.finish())
}

/// A receiver gives back part of a split (`out_return_no`).
pub fn share_return(
    mchid: &str,
    out_return_no: &str,
    receiver: &str,
    amount: Money,
) -> Result<Posting, RecipeError> {
    let user_data = merchant_ref(mchid, out_return_no, "out_return_no")?;
    reference("receiver", receiver)?;
    let cur = amount.currency();
    let amount = positive("amount", amount, cur)?;
    let mut b = Builder::new();
    let id = transfer_id("share-return", &[mchid, out_return_no], "return");
    let from = chart::share_receiver(receiver, cur);
    let pending = chart::account(AccountKind::MerchantPending, mchid, cur);
    b.leg(
        id,
        &from,
        &pending,
        amount,
        TransferKind::Single,
        None,
        0,
        TransferCode::ShareReturn,
        &user_data,
    );
    Ok(b.finish())
}

/// The daily settlement of one merchant: `amount` of pending becomes available.
/// `settlement_id` names the settlement record (e.g. `mchid/2026-05-01`).
pub fn settle(mchid: &str, settlement_id: &str, amount: Money) -> Result<Posting, RecipeError> {
    one_leg(
        "settle",
        mchid,
        settlement_id,
        "settlement_id",
        (AccountKind::MerchantPending, mchid),
        (AccountKind::MerchantAvailable, mchid),
        amount,
        TransferCode::Settle,
    )
}

/// A payout of the available balance was requested.
pub fn payout_requested(
    mchid: &str,
    payout_id: &str,
    amount: Money,
) -> Result<Posting, RecipeError> {
    one_leg(
        "payout",
        mchid,
        payout_id,
        "payout_id",
        (AccountKind::MerchantAvailable, mchid),
        (AccountKind::SettlementPayable, mchid),
        amount,
        TransferCode::PayoutRequested,
    )
}

/// The channel paid the merchant: what we owed them and what WeChat owed us both shrink.
pub fn payout_completed(
    mchid: &str,
    channel_id: &str,
    payout_id: &str,
    amount: Money,
) -> Result<Posting, RecipeError> {
    one_leg(
        "payout-completed",
        mchid,
        payout_id,
        "payout_id",
        (AccountKind::SettlementPayable, mchid),
        (AccountKind::ChannelClearing, channel_id),
        amount,
        TransferCode::PayoutCompleted,
    )
}

/// A payment the channel took for an order another attempt had already paid (重复支付).
/// The money is the payer's: no merchant and no fee touch it; it is owed back until the
/// channel has refunded it. `refund_id` names the refund that gives it back.
#[derive(Debug, Clone, Copy)]
pub struct DuplicatePayment<'a> {
    /// The order's merchant (it scopes the ids; its balances are not touched).
    pub mchid: &'a str,
    pub channel_id: &'a str,
    pub refund_id: &'a str,
    pub amount: Money,
}

/// The channel took a duplicate payment: WeChat holds it for us, we owe it to the payer.
pub fn duplicate_payment(d: &DuplicatePayment<'_>) -> Result<Posting, RecipeError> {
    one_leg(
        "duplicate-payment",
        d.mchid,
        d.refund_id,
        "refund_id",
        (AccountKind::ChannelClearing, d.channel_id),
        (AccountKind::RefundsPayable, chart::PLATFORM_OWNER),
        d.amount,
        TransferCode::DuplicatePayment,
    )
}

/// The channel refunded a duplicate payment to the payer: both sides shrink.
pub fn duplicate_refunded(d: &DuplicatePayment<'_>) -> Result<Posting, RecipeError> {
    one_leg(
        "duplicate-refunded",
        d.mchid,
        d.refund_id,
        "refund_id",
        (AccountKind::RefundsPayable, chart::PLATFORM_OWNER),
        (AccountKind::ChannelClearing, d.channel_id),
        d.amount,
        TransferCode::DuplicateRefunded,
    )
}

#[allow(clippy::too_many_arguments)] // one row of the recipe table
fn one_leg(
    fact: &str,
    mchid: &str,
    reference_value: &str,
    field: &'static str,
    debit: (AccountKind, &str),
    credit: (AccountKind, &str),
    amount: Money,
    code: TransferCode,
) -> Result<Posting, RecipeError> {
    reference("mchid", mchid)?;
    reference(field, reference_value)?;
    reference("owner", debit.1)?;
    reference("owner", credit.1)?;
    let cur = amount.currency();
    let amount = positive("amount", amount, cur)?;
    let d = chart::account(debit.0, debit.1, cur);
    let c = chart::account(credit.0, credit.1, cur);
    let mut b = Builder::new();
    // The mchid scopes the id: a settlement or payout id is only unique per merchant.
    b.leg(
        transfer_id(fact, &[mchid, reference_value], "leg"),
        &d,
        &c,
        amount,
        TransferKind::Single,
        None,
        0,
        code,
        reference_value,
    );
    Ok(b.finish())
}
