//! The ledger's rows in the store, shared by both backends: the stored forms of accounts,
//! transfers and signed checkpoints, their decoding, and the refund rule the store applies
//! on its own (the reservation made at creation is posted on SUCCESS and voided on CLOSED in
//! the refund change's transaction, so no caller can forget it).
//!
//! How a business fact reaches the ledger: the backend's `apply_posting` (in
//! `sqlite/ledger.rs` and `postgres/ledger.rs`) loads only the rows the posting touches
//! ([`paygate_ledger::required`]), applies it to a [`paygate_ledger::LedgerState`] snapshot
//! and writes the [`paygate_ledger::Delta`] back, inside the caller's transaction. A refusal
//! (`exceeds_credits`, a conflicting replay) is [`crate::StoreError::Ledger`] and fails the
//! whole fact.
//!
//! The journal: a transfer row is written without a journal position; the integrator
//! ([`crate::Store::integrate_journal`]) takes the head row's lock, gives the unsequenced rows
//! leaf indices in `seq` order, advances the compact tree and stores a checkpoint signed with
//! a key the database never sees. One integrator at a time (the head row lock) keeps every
//! leaf index unique on PostgreSQL where many nodes commit at once; a transfer that depends
//! on another (a post on its pending, a debit on a credit) was inserted under the row locks
//! the other one held until it committed, so it always gets a later `seq` and a later leaf:
//! replaying the journal in leaf order is a valid order of application.

use paygate_core::money::{Currency, Money};
use paygate_ledger::chart::{self, AccountKind, TransferCode};
use paygate_ledger::recipes::{self, RefundFunds};
use paygate_ledger::{
    Account, AccountFlags, AccountId, Balances, Hash, PendingStatus, Posting, Transfer, TransferId,
    TransferKind, TransferRecord,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::StoreError;
use crate::codec::Cols;

/// Rows the journal integrator sequences in one transaction at most.
pub const INTEGRATE_BATCH_MAX: u32 = 4096;
/// Rows one journal page read returns at most.
pub const JOURNAL_PAGE_MAX: u32 = 10_000;

pub(crate) const ACCOUNT_COLS: &str = "id, currency, code, flags, owner, debits_pending, debits_posted, \
     credits_pending, credits_posted";
/// Transfer columns over `ledger_transfers t LEFT JOIN ledger_pending p` ([`TRANSFER_FROM`]).
pub(crate) const TRANSFER_COLS: &str = "t.seq, t.id, t.debit_account_id, t.credit_account_id, t.amount, \
     t.pending_id, t.timeout_s, t.currency, t.code, t.kind, t.linked, t.user_data, t.timestamp_ms, p.status, \
     t.leaf_index, t.leaf_hash";
pub(crate) const TRANSFER_FROM: &str =
    "ledger_transfers t LEFT JOIN ledger_pending p ON p.transfer_id = t.id";
pub(crate) const CHECKPOINT_COLS: &str = "size, root, note, created_at";

/// A stored transfer with what the store keeps beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerTransferRow {
    /// Insert order (a database sequence): the integrator's order.
    pub seq: i64,
    pub record: TransferRecord,
    /// Pending transfers only.
    pub pending_status: Option<PendingStatus>,
    /// Position in the Merkle log; `None` until the integrator sequenced it.
    pub leaf_index: Option<u64>,
    /// The leaf hash recorded when it was sequenced.
    pub leaf_hash: Option<Hash>,
}

impl LedgerTransferRow {
    /// The row as a journal entry, if it is sequenced.
    pub fn journal_entry(&self) -> Option<paygate_ledger::JournalEntry> {
        Some(paygate_ledger::JournalEntry {
            index: self.leaf_index?,
            record: self.record.clone(),
            leaf_hash: self.leaf_hash?,
        })
    }
}

/// A signed checkpoint of the journal (C2SP tlog-checkpoint note text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointRecord {
    pub size: u64,
    pub root: Hash,
    /// The signed note: body and signature lines.
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What [`crate::Store::integrate_journal`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integrated {
    /// Transfers given a leaf in this run.
    pub appended: u64,
    /// The checkpoint written for the new size (none when nothing was appended).
    pub checkpoint: Option<CheckpointRecord>,
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("ledger {what}: {detail}"))
}

fn unsigned(v: i64, what: &str, id: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(what, format!("{id}: negative value {v}")))
}

fn small<T: TryFrom<i64>>(v: i64, what: &str, id: &str) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| corrupt(what, format!("{id}: value {v} out of range")))
}

fn currency(s: &str, id: &str) -> Result<Currency, StoreError> {
    Currency::parse(s).map_err(|_| corrupt("currency", format!("{id}: {s:?}")))
}

pub(crate) fn kind_parse(s: &str) -> Option<TransferKind> {
    (0..=4u8)
        .filter_map(TransferKind::from_byte)
        .find(|k| k.as_str() == s)
}

pub(crate) fn pending_status_parse(s: &str) -> Option<PendingStatus> {
    [
        PendingStatus::Pending,
        PendingStatus::Posted,
        PendingStatus::Voided,
        PendingStatus::Expired,
    ]
    .into_iter()
    .find(|p| p.as_str() == s)
}

/// An account row in [`ACCOUNT_COLS`] order.
pub(crate) fn account(r: &impl Cols) -> Result<Account, StoreError> {
    let id_hex = r.text(0)?;
    let id = AccountId::from_hex(&id_hex).map_err(|e| corrupt("account id", e))?;
    let flags_bits: u16 = small(r.int(3)?, "account flags", &id_hex)?;
    Ok(Account {
        id,
        ledger: currency(&r.text(1)?, &id_hex)?,
        code: small(r.int(2)?, "account code", &id_hex)?,
        flags: AccountFlags::from_bits(flags_bits)
            .ok_or_else(|| corrupt("account flags", format!("{id_hex}: {flags_bits}")))?,
        user_data: r.text(4)?,
        balances: Balances {
            debits_pending: unsigned(r.int(5)?, "balance", &id_hex)?,
            debits_posted: unsigned(r.int(6)?, "balance", &id_hex)?,
            credits_pending: unsigned(r.int(7)?, "balance", &id_hex)?,
            credits_posted: unsigned(r.int(8)?, "balance", &id_hex)?,
        },
    })
}

/// A transfer row in [`TRANSFER_COLS`] order. A row that does not decode names its id: the
/// audit reports it as the bad entry.
pub(crate) fn transfer_row(r: &impl Cols) -> Result<LedgerTransferRow, StoreError> {
    let id_hex = r.text(1)?;
    let bad = |what: &str, e: &dyn std::fmt::Display| corrupt(what, format!("{id_hex}: {e}"));
    let account = |i: usize| -> Result<AccountId, StoreError> {
        AccountId::from_hex(&r.text(i)?).map_err(|e| bad("account id", &e))
    };
    let kind_text = r.text(9)?;
    let kind = kind_parse(&kind_text).ok_or_else(|| bad("transfer kind", &kind_text))?;
    let pending_status = match r.opt_text(13)? {
        None => None,
        Some(s) => Some(pending_status_parse(&s).ok_or_else(|| bad("pending status", &s))?),
    };
    let leaf_hash = match r.opt_text(15)? {
        None => None,
        Some(h) => Some(Hash::from_hex(&h).ok_or_else(|| bad("leaf hash", &h))?),
    };
    let pending_id = match r.opt_text(5)? {
        None => None,
        Some(p) => Some(TransferId::from_hex(&p).map_err(|e| bad("pending id", &e))?),
    };
    Ok(LedgerTransferRow {
        seq: r.int(0)?,
        record: TransferRecord {
            transfer: Transfer {
                id: TransferId::from_hex(&id_hex).map_err(|e| bad("transfer id", &e))?,
                debit_account_id: account(2)?,
                credit_account_id: account(3)?,
                amount: unsigned(r.int(4)?, "amount", &id_hex)?,
                pending_id,
                timeout_s: small(r.int(6)?, "timeout", &id_hex)?,
                ledger: currency(&r.text(7)?, &id_hex)?,
                code: small(r.int(8)?, "transfer code", &id_hex)?,
                kind,
                linked: r.int(10)? != 0,
                user_data: r.text(11)?,
            },
            timestamp_ms: unsigned(r.int(12)?, "timestamp", &id_hex)?,
        },
        pending_status,
        leaf_index: r
            .opt_int(14)?
            .map(|v| unsigned(v, "leaf index", &id_hex))
            .transpose()?,
        leaf_hash,
    })
}

/// A checkpoint row in [`CHECKPOINT_COLS`] order.
pub(crate) fn checkpoint(r: &impl Cols) -> Result<CheckpointRecord, StoreError> {
    let root = r.text(1)?;
    Ok(CheckpointRecord {
        size: unsigned(r.int(0)?, "checkpoint size", "checkpoint")?,
        root: Hash::from_hex(&root).ok_or_else(|| corrupt("checkpoint root", &root))?,
        note: r.text(2)?,
        created_at: r.time(3)?,
    })
}

/// An amount as the i64 a column holds (ledger amounts are bounded by i64::MAX).
pub(crate) fn col(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Peaks of the compact tree as stored in the head row: hex, comma-separated.
pub(crate) fn peaks_text(peaks: &[Hash]) -> String {
    peaks
        .iter()
        .map(|h| h.to_hex())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn compact_tree(
    size: i64,
    peaks: &str,
) -> Result<paygate_ledger::CompactTree, StoreError> {
    let peaks = peaks
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| Hash::from_hex(p).ok_or_else(|| corrupt("journal head", p)))
        .collect::<Result<Vec<_>, _>>()?;
    let size = unsigned(size, "journal head size", "head")?;
    paygate_ledger::CompactTree::from_parts(size, peaks).map_err(|e| corrupt("journal head", e))
}

/// The signed checkpoint of `tree`.
pub(crate) fn sign_checkpoint(
    tree: &paygate_ledger::CompactTree,
    signer: &paygate_ledger::NoteSigner,
    origin: &str,
    now: OffsetDateTime,
) -> Result<CheckpointRecord, StoreError> {
    let body = paygate_ledger::Checkpoint::new(origin, tree.size(), tree.root());
    let note = body
        .sign(signer)
        .map_err(|e| StoreError::Database(format!("signing the journal checkpoint: {e}")))?;
    Ok(CheckpointRecord {
        size: tree.size(),
        root: tree.root(),
        note,
        created_at: crate::codec::truncate_to_ms(now),
    })
}

/// Milliseconds for the ledger's clock (never negative for a real time).
pub(crate) fn now_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(crate::codec::unix_ms(t)).unwrap_or(0)
}

// ---- the refund rule ----

/// The part of the order's fee given back with a refund of `amount_fen`. The fee given back
/// by the order's live refunds (not CLOSED) follows their sum: `floor(fee × refunded / total)`,
/// so it never exceeds the fee, and once the whole order is refunded the whole fee is back
/// and the merchant has given back exactly its net. `refunded_after_fen` is the order's live
/// refunded sum with this refund, `fee_refunded_fen` the fee its other live refunds gave back.
pub fn refund_fee_share(
    fee_fen: i64,
    total_fen: i64,
    refunded_after_fen: i64,
    fee_refunded_fen: i64,
    amount_fen: i64,
) -> i64 {
    if total_fen <= 0 || fee_fen <= 0 || amount_fen <= 0 {
        return 0;
    }
    let target = i128::from(fee_fen) * i128::from(refunded_after_fen.clamp(0, total_fen))
        / i128::from(total_fen);
    let share = target - i128::from(fee_refunded_fen);
    i64::try_from(share.clamp(0, i128::from(amount_fen.min(fee_fen)))).unwrap_or(0)
}

/// An order's side of a new refund, read in the refund's transaction after its reservation
/// on the order (so `refunded_fen` includes it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OrderFees {
    pub fee_fen: i64,
    pub total_fen: i64,
    pub refunded_fen: i64,
    /// The fee given back by the order's other live refunds (reserved or posted).
    pub fee_refunded_fen: i64,
}

impl OrderFees {
    pub(crate) fn fee_share(&self, amount_fen: i64) -> i64 {
        refund_fee_share(
            self.fee_fen,
            self.total_fen,
            self.refunded_fen,
            self.fee_refunded_fen,
            amount_fen,
        )
    }
}

/// The transfer code of a refund's fee reservation.
pub(crate) const REFUND_RESERVE_FEE_CODE: u16 = TransferCode::RefundReserveFee.code();

/// What the store knows of a refund when it builds its postings.
#[derive(Clone, Debug)]
pub(crate) struct RefundFacts<'a> {
    pub refund_id: &'a str,
    pub mchid: &'a str,
    pub channel_id: &'a str,
    pub currency: Currency,
    pub amount_fen: i64,
    pub fee_refund_fen: i64,
    pub kind: crate::RefundKind,
}

impl<'a> RefundFacts<'a> {
    /// A stored refund's facts, giving back `fee_refund_fen` of the fee.
    pub(crate) fn of(r: &'a crate::RefundRecord, fee_refund_fen: i64) -> Result<Self, StoreError> {
        Ok(RefundFacts {
            refund_id: &r.refund_id,
            mchid: &r.mchid,
            channel_id: &r.channel_id,
            currency: Currency::parse(&r.currency)
                .map_err(|e| StoreError::Corrupt(format!("refund {}: {e}", r.refund_id)))?,
            amount_fen: r.amount_fen,
            fee_refund_fen,
            kind: r.kind,
        })
    }

    pub(crate) fn recipe(&self, funds: RefundFunds) -> recipes::Refund<'_> {
        recipes::Refund {
            refund_id: self.refund_id,
            mchid: self.mchid,
            channel_id: self.channel_id,
            amount: Money::new(self.amount_fen, self.currency),
            fee_refund: Money::new(self.fee_refund_fen, self.currency),
            funds,
            // Held until the channel answers: an ABNORMAL refund may take days.
            timeout_s: 0,
        }
    }

    fn duplicate(&self) -> recipes::DuplicatePayment<'_> {
        recipes::DuplicatePayment {
            mchid: self.mchid,
            channel_id: self.channel_id,
            refund_id: self.refund_id,
            amount: Money::new(self.amount_fen, self.currency),
        }
    }
}

/// The ledger side of a duplicate payment: what the channel took, owed to the payer until
/// `refund` gives it back.
pub(crate) fn duplicate_posting(refund: &crate::RefundRecord) -> Result<Posting, StoreError> {
    let f = RefundFacts::of(refund, 0)?;
    recipes::duplicate_payment(&f.duplicate())
        .map_err(|e| StoreError::Database(format!("refund {}: {e}", f.refund_id)))
}

/// The reservation candidates of a refund: the merchant's pending takings first, its
/// available balance when those are short.
pub(crate) fn refund_reservations(f: &RefundFacts<'_>) -> Result<[Posting; 2], StoreError> {
    let build = |funds| {
        recipes::refund_requested(&f.recipe(funds))
            .map_err(|e| StoreError::Database(format!("refund {}: {e}", f.refund_id)))
    };
    Ok([build(RefundFunds::Pending)?, build(RefundFunds::Available)?])
}

/// The reservation a refund made, read back from its transfers: where the merchant's part
/// came from and the fee part. `None` if the refund reserved nothing (made without a ledger).
pub(crate) fn reservation_of(
    rows: &[LedgerTransferRow],
    f: &RefundFacts<'_>,
) -> Result<Option<(RefundFunds, i64)>, StoreError> {
    let reserve_merchant = TransferCode::RefundReserveMerchant.code();
    let reserve_fee = TransferCode::RefundReserveFee.code();
    let fee_fen = rows
        .iter()
        .find(|r| r.record.transfer.code == reserve_fee)
        .map_or(0, |r| col(r.record.transfer.amount));
    let Some(merchant_leg) = rows
        .iter()
        .find(|r| r.record.transfer.code == reserve_merchant)
    else {
        // The whole refund came out of the fee (fee = total), or nothing was reserved.
        return Ok((fee_fen > 0).then_some((RefundFunds::Pending, fee_fen)));
    };
    let debit = merchant_leg.record.transfer.debit_account_id;
    let funds = if debit == chart::account_id(AccountKind::MerchantPending, f.mchid, f.currency) {
        RefundFunds::Pending
    } else if debit == chart::account_id(AccountKind::MerchantAvailable, f.mchid, f.currency) {
        RefundFunds::Available
    } else {
        return Err(corrupt(
            "refund reservation",
            format!(
                "{} debits an account that is not the merchant's",
                merchant_leg.record.transfer.id
            ),
        ));
    };
    Ok(Some((funds, fee_fen)))
}

/// The posting that settles a refund's reservation when it reaches a final state: post it on
/// SUCCESS (and pay the payer out of the channel's clearing), void it on CLOSED. `None` for
/// any other state, or when the refund reserved nothing.
pub(crate) fn refund_settlement(
    rows: &[LedgerTransferRow],
    facts: &RefundFacts<'_>,
    new_state: crate::RefundState,
) -> Result<Option<Posting>, StoreError> {
    use crate::RefundState as S;
    if !matches!(new_state, S::Success | S::Closed) {
        return Ok(None);
    }
    if facts.kind == crate::RefundKind::Duplicate {
        // Nothing was reserved: the money has been owed to the payer since it arrived. A
        // CLOSED refund leaves it owed, for an operator to give back another way.
        if new_state != S::Success {
            return Ok(None);
        }
        return recipes::duplicate_refunded(&facts.duplicate())
            .map(Some)
            .map_err(|e| StoreError::Database(format!("refund {}: {e}", facts.refund_id)));
    }
    let Some((funds, fee_fen)) = reservation_of(rows, facts)? else {
        return Ok(None);
    };
    let facts = RefundFacts {
        fee_refund_fen: fee_fen,
        ..facts.clone()
    };
    let recipe = facts.recipe(funds);
    let posting = if new_state == S::Success {
        recipes::refund_succeeded(&recipe)
    } else {
        recipes::refund_failed(&recipe)
    };
    posting
        .map(Some)
        .map_err(|e| StoreError::Database(format!("refund {}: {e}", facts.refund_id)))
}

/// Whether a ledger refusal means "the money is not there" (then a refund is refused with
/// NOT_ENOUGH) rather than a bug.
pub(crate) fn is_shortfall(e: &StoreError) -> bool {
    matches!(e, StoreError::Ledger(l) if l.code() == "exceeds_credits")
}

/// The transfer codes of a payment: an order whose payment is in the ledger has one of them.
pub(crate) const PAYMENT_CODES: [u16; 3] = [
    TransferCode::PaymentNet.code(),
    TransferCode::PaymentFee.code(),
    TransferCode::PaymentNetFrozen.code(),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_share_follows_the_refunded_sum_and_is_whole_on_a_full_refund() {
        assert_eq!(refund_fee_share(60, 10_000, 10_000, 0, 10_000), 60);
        assert_eq!(refund_fee_share(60, 10_000, 5_000, 0, 5_000), 30);
        // 1 fen of fee on 100: the 30 and the 70 give back 0 and then the whole 1.
        assert_eq!(refund_fee_share(1, 100, 30, 0, 30), 0);
        assert_eq!(refund_fee_share(1, 100, 100, 0, 70), 1);
        // Thirds of 5 on 3: 1, then 3 - 1 = 2, then 5 - 3 = 2; never more than the fee.
        assert_eq!(refund_fee_share(5, 3, 1, 0, 1), 1);
        assert_eq!(refund_fee_share(5, 3, 2, 1, 1), 1);
        assert_eq!(refund_fee_share(5, 3, 3, 2, 1), 1);
        assert_eq!(refund_fee_share(0, 100, 10, 0, 10), 0);
        assert_eq!(refund_fee_share(6, 1000, 1, 0, 1), 0);
        // After a closed refund the others' share may lag: never more than the refund itself.
        assert_eq!(refund_fee_share(100, 100, 100, 0, 10), 10);
    }

    #[test]
    fn kinds_and_statuses_parse_their_own_names() {
        for b in 0..=4u8 {
            let k = TransferKind::from_byte(b).unwrap();
            assert_eq!(kind_parse(k.as_str()), Some(k));
        }
        assert_eq!(kind_parse("posted"), None);
        for s in [
            PendingStatus::Pending,
            PendingStatus::Posted,
            PendingStatus::Voided,
            PendingStatus::Expired,
        ] {
            assert_eq!(pending_status_parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn journal_head_round_trips() {
        let mut tree = paygate_ledger::CompactTree::new();
        for i in 0..5u8 {
            tree.append(paygate_ledger::merkle::leaf_hash(&[i]));
        }
        let text = peaks_text(tree.peaks());
        let back = compact_tree(5, &text).unwrap();
        assert_eq!(back.root(), tree.root());
        assert!(compact_tree(5, "zz").is_err());
        assert_eq!(compact_tree(0, "").unwrap().size(), 0);
    }
}
