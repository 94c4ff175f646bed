//! [`LedgerState`]: accounts and transfers in memory, and the pure transition that validates a
//! batch and applies it, or changes nothing.
//!
//! **Atomicity.** [`LedgerState::apply`] is all or nothing *per batch*: one batch is one business
//! fact, written in one database transaction with the fact, so a refusal anywhere must leave
//! nothing behind (DESIGN rule 1). Linked chains are still checked (a batch may not end inside
//! a chain). [`LedgerState::apply_chains`] has TigerBeetle's semantics instead: each linked
//! chain (or lone transfer) stands or falls alone, for a worker that batches independent facts.
//!
//! **Snapshots.** The state need not hold the whole ledger: the store loads only the rows a
//! batch touches ([`required`]) into [`LedgerState::from_rows`], applies, and writes back the
//! [`Delta`]. [`LedgerState::check_invariants`] needs the whole ledger.
//!
//! **Time.** `now_ms` is given by the caller (no clock in here). It stamps created transfers and
//! decides expiry: a post or void at or after a pending's deadline fails as expired, and
//! [`LedgerState::expire`] writes the releases as journaled transfers.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::{AccountError, InvariantViolation, LedgerError, SnapshotError, TransferError};
use crate::ids::{AccountId, TransferId};
use crate::model::{
    AMOUNT_MAX, Account, BALANCE_MAX, BATCH_EVENTS_MAX, Balances, EXPIRY_TRANSFER_CODE,
    PendingStatus, Posting, Transfer, TransferKind, TransferRecord, USER_DATA_BYTES_MAX,
};

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now.
    Created,
    /// Already there with identical fields: not applied twice. Treat as success.
    Exists,
}

/// The rows a successful call changed: what the store writes, in the same transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// New transfer rows, in application order: also the journal appends, in this order.
    pub created: Vec<TransferRecord>,
    /// New account rows.
    pub accounts_created: Vec<Account>,
    /// The final state of every account whose balances moved (including new ones that moved).
    pub accounts_changed: Vec<Account>,
    /// The final status of every pending transfer created or resolved.
    pub pending_changes: Vec<(TransferId, PendingStatus)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.accounts_created.is_empty()
    }
}

/// The result of [`LedgerState::apply`] and [`LedgerState::apply_posting`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// One per transfer of the batch.
    pub outcomes: Vec<Outcome>,
    pub delta: Delta,
}

/// The result of [`LedgerState::apply_chains`]: one result per transfer, and what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainsApplied {
    pub results: Vec<Result<Outcome, TransferError>>,
    pub delta: Delta,
}

/// Summary of a passed [`LedgerState::check_invariants`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvariantReport {
    pub accounts: usize,
    pub transfers: usize,
    /// Individual assertions made (per account, per transfer, per sum).
    pub checks: u64,
}

/// The rows the store must load before applying a batch to a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Required {
    pub account_ids: BTreeSet<AccountId>,
    /// The batch's own ids (to answer `Exists`) and the pending transfers it resolves
    /// (load these with their [`PendingStatus`]).
    pub transfer_ids: BTreeSet<TransferId>,
}

/// What a batch needs loaded: see [`LedgerState::from_rows`].
pub fn required(accounts: &[Account], transfers: &[Transfer]) -> Required {
    let mut r = Required::default();
    for a in accounts {
        r.account_ids.insert(a.id);
    }
    for t in transfers {
        r.account_ids.insert(t.debit_account_id);
        r.account_ids.insert(t.credit_account_id);
        r.transfer_ids.insert(t.id);
        if let Some(p) = t.pending_id {
            r.transfer_ids.insert(p);
        }
    }
    r
}

/// The undo log of a call in progress: reverted in reverse order when the call fails.
#[derive(Debug)]
enum Undo {
    AccountInserted(AccountId),
    Balances(AccountId, Balances),
    TransferInserted(TransferId),
    Pending(TransferId, Option<PendingStatus>),
    ExpiryInserted(u64, TransferId),
    ExpiryRemoved(u64, TransferId),
}

/// Accounts, transfers, pending statuses and the expiry index.
#[derive(Debug, Clone, Default)]
pub struct LedgerState {
    accounts: HashMap<AccountId, Account>,
    transfers: HashMap<TransferId, TransferRecord>,
    pending: HashMap<TransferId, PendingStatus>,
    /// (deadline_ms, pending id) of every still-pending transfer with a timeout.
    expiries: BTreeSet<(u64, TransferId)>,
}

fn user_data_ok(s: &str) -> Result<(), bool> {
    if s.len() > USER_DATA_BYTES_MAX {
        return Err(true);
    }
    if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(false);
    }
    Ok(())
}

/// Checks that need no state. Order follows TigerBeetle's so the first error is the same.
fn validate_transfer(t: &Transfer) -> Result<(), TransferError> {
    use TransferError as E;
    if t.debit_account_id == t.credit_account_id {
        return Err(E::AccountsMustBeDifferent);
    }
    match (t.kind.resolves_pending(), t.pending_id) {
        (false, Some(_)) => return Err(E::PendingIdMustBeZero),
        (true, None) => return Err(E::PendingIdMustNotBeZero),
        (true, Some(p)) if p == t.id => return Err(E::PendingIdMustBeDifferent),
        _ => {}
    }
    if t.timeout_s != 0 && t.kind != TransferKind::Pending {
        return Err(E::TimeoutReservedForPendingTransfer);
    }
    if t.amount == 0 {
        return Err(E::AmountMustNotBeZero);
    }
    if t.amount > AMOUNT_MAX {
        return Err(E::AmountExceedsMax);
    }
    if t.code == 0 {
        return Err(E::CodeMustNotBeZero);
    }
    // Only the ledger writes expiries, so a caller cannot dress a transfer up as one.
    if (t.code == EXPIRY_TRANSFER_CODE) != (t.kind == TransferKind::ExpirePending) {
        return Err(E::CodeReservedForExpiry);
    }
    match user_data_ok(&t.user_data) {
        Err(true) => Err(E::UserDataTooLong),
        Err(false) => Err(E::UserDataNotPrintable),
        Ok(()) => Ok(()),
    }
}

/// The first field in which a repeated id differs, in TigerBeetle's order.
fn compare_existing(existing: &Transfer, t: &Transfer) -> Result<Outcome, TransferError> {
    use TransferError as E;
    if existing.kind != t.kind || existing.linked != t.linked {
        return Err(E::ExistsWithDifferentFlags);
    }
    if existing.pending_id != t.pending_id {
        return Err(E::ExistsWithDifferentPendingId);
    }
    if existing.timeout_s != t.timeout_s {
        return Err(E::ExistsWithDifferentTimeout);
    }
    if existing.debit_account_id != t.debit_account_id {
        return Err(E::ExistsWithDifferentDebitAccountId);
    }
    if existing.credit_account_id != t.credit_account_id {
        return Err(E::ExistsWithDifferentCreditAccountId);
    }
    if existing.amount != t.amount {
        return Err(E::ExistsWithDifferentAmount);
    }
    if existing.user_data != t.user_data {
        return Err(E::ExistsWithDifferentUserData);
    }
    if existing.ledger != t.ledger {
        return Err(E::ExistsWithDifferentLedger);
    }
    if existing.code != t.code {
        return Err(E::ExistsWithDifferentCode);
    }
    Ok(Outcome::Exists)
}

fn validate_account(a: &Account) -> Result<(), AccountError> {
    use AccountError as E;
    if a.flags.debits_must_not_exceed_credits && a.flags.credits_must_not_exceed_debits {
        return Err(E::FlagsAreMutuallyExclusive);
    }
    if a.code == 0 {
        return Err(E::CodeMustNotBeZero);
    }
    if a.balances != Balances::default() {
        return Err(E::BalancesMustBeZero);
    }
    match user_data_ok(&a.user_data) {
        Err(true) => Err(E::UserDataTooLong),
        Err(false) => Err(E::UserDataNotPrintable),
        Ok(()) => Ok(()),
    }
}

fn compare_existing_account(existing: &Account, a: &Account) -> Result<Outcome, AccountError> {
    use AccountError as E;
    if existing.flags != a.flags {
        return Err(E::ExistsWithDifferentFlags);
    }
    if existing.user_data != a.user_data {
        return Err(E::ExistsWithDifferentUserData);
    }
    if existing.ledger != a.ledger {
        return Err(E::ExistsWithDifferentLedger);
    }
    if existing.code != a.code {
        return Err(E::ExistsWithDifferentCode);
    }
    Ok(Outcome::Exists)
}

fn add(value: u64, amount: u64, overflow: TransferError) -> Result<u64, TransferError> {
    match value.checked_add(amount) {
        Some(v) if v <= BALANCE_MAX => Ok(v),
        _ => Err(overflow),
    }
}

/// The balance-limit flags, TigerBeetle's rule: pending debits count against the limit,
/// pending credits do not give room.
fn check_limits(debit: &Account, credit: &Account, amount: u64) -> Result<(), TransferError> {
    let d = &debit.balances;
    if debit.flags.debits_must_not_exceed_credits
        && u128::from(d.debits_pending) + u128::from(d.debits_posted) + u128::from(amount)
            > u128::from(d.credits_posted)
    {
        return Err(TransferError::ExceedsCredits);
    }
    let c = &credit.balances;
    if credit.flags.credits_must_not_exceed_debits
        && u128::from(c.credits_pending) + u128::from(c.credits_posted) + u128::from(amount)
            > u128::from(c.debits_posted)
    {
        return Err(TransferError::ExceedsDebits);
    }
    Ok(())
}

impl LedgerState {
    pub fn new() -> LedgerState {
        LedgerState::default()
    }

    /// A state from stored rows: whole (for audits) or only what a batch needs ([`required`]).
    /// Every loaded pending transfer needs its status row, and only those.
    pub fn from_rows(
        accounts: impl IntoIterator<Item = Account>,
        transfers: impl IntoIterator<Item = TransferRecord>,
        pending: impl IntoIterator<Item = (TransferId, PendingStatus)>,
    ) -> Result<LedgerState, SnapshotError> {
        let mut s = LedgerState::new();
        for a in accounts {
            let b = &a.balances;
            if [
                b.debits_pending,
                b.debits_posted,
                b.credits_pending,
                b.credits_posted,
            ]
            .iter()
            .any(|v| *v > BALANCE_MAX)
            {
                return Err(SnapshotError::BalanceTooLarge(a.id));
            }
            if s.accounts.insert(a.id, a.clone()).is_some() {
                return Err(SnapshotError::DuplicateAccount(a.id));
            }
        }
        for r in transfers {
            let id = r.transfer.id;
            if s.transfers.insert(id, r).is_some() {
                return Err(SnapshotError::DuplicateTransfer(id));
            }
        }
        for (id, status) in pending {
            let Some(r) = s
                .transfers
                .get(&id)
                .filter(|r| r.transfer.kind == TransferKind::Pending)
            else {
                return Err(SnapshotError::PendingStatusOrphan(id));
            };
            if status == PendingStatus::Pending {
                if let Some(deadline) = r.expires_at_ms() {
                    s.expiries.insert((deadline, id));
                }
            }
            s.pending.insert(id, status);
        }
        if let Some(r) = s.transfers.values().find(|r| {
            r.transfer.kind == TransferKind::Pending && !s.pending.contains_key(&r.transfer.id)
        }) {
            return Err(SnapshotError::PendingStatusMissing(r.transfer.id));
        }
        Ok(s)
    }

    /// Rebuilds the state from accounts (balances ignored) and the journal's records in order,
    /// each applied at its own timestamp. Equal to the state that produced the records: the
    /// auditor's "replaying the journal gives the same state".
    pub fn replay<'a>(
        accounts: impl IntoIterator<Item = &'a Account>,
        records: impl IntoIterator<Item = &'a TransferRecord>,
    ) -> Result<LedgerState, LedgerError> {
        let mut s = LedgerState::new();
        for (index, a) in accounts.into_iter().enumerate() {
            let fresh = Account {
                balances: Balances::default(),
                ..a.clone()
            };
            let mut undo = Vec::new();
            s.create_account(&fresh, &mut undo)
                .map_err(|error| LedgerError::Account {
                    index,
                    id: a.id,
                    error,
                })?;
        }
        for (index, r) in records.into_iter().enumerate() {
            let mut undo = Vec::new();
            // Each record succeeded in order inside its (atomic) chain, so one at a time gives
            // the same state; the chain structure itself is not re-checked.
            match s.apply_one(&r.transfer, r.timestamp_ms, &mut undo) {
                Ok(Outcome::Created) => {}
                Ok(Outcome::Exists) => {
                    return Err(LedgerError::ReplayDuplicate {
                        index,
                        id: r.transfer.id,
                    });
                }
                Err(error) => {
                    return Err(LedgerError::Transfer {
                        index,
                        id: r.transfer.id,
                        error,
                    });
                }
            }
        }
        Ok(s)
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    pub fn transfer(&self, id: TransferId) -> Option<&TransferRecord> {
        self.transfers.get(&id)
    }

    pub fn pending_status(&self, id: TransferId) -> Option<PendingStatus> {
        self.pending.get(&id).copied()
    }

    /// Every account, by id.
    pub fn accounts(&self) -> Vec<&Account> {
        let mut v: Vec<&Account> = self.accounts.values().collect();
        v.sort_by_key(|a| a.id);
        v
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn transfer_count(&self) -> usize {
        self.transfers.len()
    }

    /// Creates accounts, all or nothing; an identical existing account is `Exists`.
    pub fn create_accounts(&mut self, accounts: &[Account]) -> Result<Vec<Outcome>, LedgerError> {
        if accounts.len() > BATCH_EVENTS_MAX {
            return Err(LedgerError::BatchTooLarge {
                len: accounts.len(),
            });
        }
        let mut undo = Vec::new();
        let mut outcomes = Vec::with_capacity(accounts.len());
        for (index, a) in accounts.iter().enumerate() {
            match self.create_account(a, &mut undo) {
                Ok(o) => outcomes.push(o),
                Err(error) => {
                    self.rollback(undo);
                    return Err(LedgerError::Account {
                        index,
                        id: a.id,
                        error,
                    });
                }
            }
        }
        Ok(outcomes)
    }

    /// Applies a batch, all or nothing (see the module doc). The error names the first
    /// refused transfer; the state is then unchanged.
    pub fn apply(&mut self, batch: &[Transfer], now_ms: u64) -> Result<Applied, LedgerError> {
        let mut undo = Vec::new();
        match self.apply_batch(batch, now_ms, &mut undo) {
            Ok(outcomes) => Ok(Applied {
                outcomes,
                delta: self.delta(&undo),
            }),
            Err(e) => {
                self.rollback(undo);
                Err(e)
            }
        }
    }

    /// Creates a posting's accounts (idempotently) and applies its transfers, all or nothing.
    pub fn apply_posting(
        &mut self,
        posting: &Posting,
        now_ms: u64,
    ) -> Result<Applied, LedgerError> {
        if posting.accounts.len() > BATCH_EVENTS_MAX {
            return Err(LedgerError::BatchTooLarge {
                len: posting.accounts.len(),
            });
        }
        let mut undo = Vec::new();
        for (index, a) in posting.accounts.iter().enumerate() {
            if let Err(error) = self.create_account(a, &mut undo) {
                self.rollback(undo);
                return Err(LedgerError::Account {
                    index,
                    id: a.id,
                    error,
                });
            }
        }
        match self.apply_batch(&posting.transfers, now_ms, &mut undo) {
            Ok(outcomes) => Ok(Applied {
                outcomes,
                delta: self.delta(&undo),
            }),
            Err(e) => {
                self.rollback(undo);
                Err(e)
            }
        }
    }

    /// TigerBeetle's semantics: each linked chain (or lone transfer) succeeds or fails alone.
    /// In a failed chain the failing transfer gets its own error and the others
    /// [`TransferError::LinkedEventFailed`]; a chain left open at the end of the batch fails
    /// with [`TransferError::LinkedEventChainOpen`] on its last transfer.
    pub fn apply_chains(
        &mut self,
        batch: &[Transfer],
        now_ms: u64,
    ) -> Result<ChainsApplied, LedgerError> {
        if batch.len() > BATCH_EVENTS_MAX {
            return Err(LedgerError::BatchTooLarge { len: batch.len() });
        }
        let mut kept = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            let end = batch[start..]
                .iter()
                .position(|t| !t.linked)
                .map_or(batch.len(), |p| start + p + 1);
            let chain = &batch[start..end];
            let mut undo = Vec::new();
            let mut outcomes = Vec::with_capacity(chain.len());
            let mut failed = None;
            for (i, t) in chain.iter().enumerate() {
                match self.apply_one(t, now_ms, &mut undo) {
                    Ok(o) => outcomes.push(o),
                    Err(e) => {
                        failed = Some((i, e));
                        break;
                    }
                }
            }
            if failed.is_none() && chain.last().is_some_and(|t| t.linked) {
                failed = Some((chain.len() - 1, TransferError::LinkedEventChainOpen));
            }
            match failed {
                None => {
                    results.extend(outcomes.into_iter().map(Ok));
                    kept.extend(undo);
                }
                Some((at, e)) => {
                    self.rollback(undo);
                    results.extend((0..chain.len()).map(|i| {
                        Err(if i == at {
                            e
                        } else {
                            TransferError::LinkedEventFailed
                        })
                    }));
                }
            }
            start = end;
        }
        Ok(ChainsApplied {
            results,
            delta: self.delta(&kept),
        })
    }

    /// The expiry transfers due at `now_ms`, earliest deadline first, at most `limit`
    /// (capped at [`BATCH_EVENTS_MAX`]). Pure: apply them with [`LedgerState::apply`].
    /// Each id is derived from the pending id, so two workers expiring the same pending
    /// produce the same transfer and the second gets `Exists`.
    pub fn expiry_batch(&self, now_ms: u64, limit: usize) -> Vec<Transfer> {
        self.expiries
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(limit.min(BATCH_EVENTS_MAX))
            .filter_map(|(_, id)| self.transfers.get(id))
            .map(|p| expiry_transfer(&p.transfer))
            .collect()
    }

    /// Releases up to [`BATCH_EVENTS_MAX`] pending transfers whose timeout passed by `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Result<Applied, LedgerError> {
        let batch = self.expiry_batch(now_ms, BATCH_EVENTS_MAX);
        self.apply(&batch, now_ms)
    }

    fn apply_batch(
        &mut self,
        batch: &[Transfer],
        now_ms: u64,
        undo: &mut Vec<Undo>,
    ) -> Result<Vec<Outcome>, LedgerError> {
        if batch.len() > BATCH_EVENTS_MAX {
            return Err(LedgerError::BatchTooLarge { len: batch.len() });
        }
        if let Some(last) = batch.last().filter(|t| t.linked) {
            return Err(LedgerError::Transfer {
                index: batch.len() - 1,
                id: last.id,
                error: TransferError::LinkedEventChainOpen,
            });
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, t) in batch.iter().enumerate() {
            let o = self
                .apply_one(t, now_ms, undo)
                .map_err(|error| LedgerError::Transfer {
                    index,
                    id: t.id,
                    error,
                })?;
            outcomes.push(o);
        }
        Ok(outcomes)
    }

    fn create_account(
        &mut self,
        a: &Account,
        undo: &mut Vec<Undo>,
    ) -> Result<Outcome, AccountError> {
        validate_account(a)?;
        if let Some(existing) = self.accounts.get(&a.id) {
            return compare_existing_account(existing, a);
        }
        self.accounts.insert(a.id, a.clone());
        undo.push(Undo::AccountInserted(a.id));
        Ok(Outcome::Created)
    }

    /// One transfer: validate against the state, then apply. Nothing is written before every
    /// check passed, so an error leaves this transfer's effects out entirely.
    fn apply_one(
        &mut self,
        t: &Transfer,
        now_ms: u64,
        undo: &mut Vec<Undo>,
    ) -> Result<Outcome, TransferError> {
        validate_transfer(t)?;
        if let Some(existing) = self.transfers.get(&t.id) {
            return compare_existing(&existing.transfer, t);
        }
        let debit = self
            .accounts
            .get(&t.debit_account_id)
            .ok_or(TransferError::DebitAccountNotFound)?;
        let credit = self
            .accounts
            .get(&t.credit_account_id)
            .ok_or(TransferError::CreditAccountNotFound)?;
        if debit.ledger != credit.ledger {
            return Err(TransferError::AccountsMustHaveTheSameLedger);
        }
        if t.ledger != debit.ledger {
            return Err(TransferError::TransferMustHaveTheSameLedgerAsAccounts);
        }
        let (new_debit, new_credit, pending_change) = match t.kind {
            TransferKind::Single | TransferKind::Pending => {
                check_limits(debit, credit, t.amount)?;
                let (mut d, mut c) = (debit.balances, credit.balances);
                if t.kind == TransferKind::Single {
                    d.debits_posted = add(
                        d.debits_posted,
                        t.amount,
                        TransferError::OverflowsDebitsPosted,
                    )?;
                    c.credits_posted = add(
                        c.credits_posted,
                        t.amount,
                        TransferError::OverflowsCreditsPosted,
                    )?;
                    (d, c, None)
                } else {
                    d.debits_pending = add(
                        d.debits_pending,
                        t.amount,
                        TransferError::OverflowsDebitsPending,
                    )?;
                    c.credits_pending = add(
                        c.credits_pending,
                        t.amount,
                        TransferError::OverflowsCreditsPending,
                    )?;
                    let deadline = if t.timeout_s == 0 {
                        None
                    } else {
                        Some(
                            now_ms
                                .checked_add(u64::from(t.timeout_s) * 1000)
                                .filter(|v| *v <= i64::MAX as u64)
                                .ok_or(TransferError::OverflowsTimeout)?,
                        )
                    };
                    (d, c, Some((t.id, PendingStatus::Pending, deadline)))
                }
            }
            TransferKind::PostPending | TransferKind::VoidPending | TransferKind::ExpirePending => {
                let (status, deadline, pending_amount) = self.check_resolution(t, now_ms)?;
                let (mut d, mut c) = (debit.balances, credit.balances);
                // The pending amount was added to these counters when it was created; if they
                // hold less, the rows were edited: refuse rather than clamp.
                d.debits_pending = d
                    .debits_pending
                    .checked_sub(pending_amount)
                    .ok_or(TransferError::PendingBalanceMismatch)?;
                c.credits_pending = c
                    .credits_pending
                    .checked_sub(pending_amount)
                    .ok_or(TransferError::PendingBalanceMismatch)?;
                if status == PendingStatus::Posted {
                    d.debits_posted = add(
                        d.debits_posted,
                        t.amount,
                        TransferError::OverflowsDebitsPosted,
                    )?;
                    c.credits_posted = add(
                        c.credits_posted,
                        t.amount,
                        TransferError::OverflowsCreditsPosted,
                    )?;
                }
                (d, c, t.pending_id.map(|p| (p, status, deadline)))
            }
        };
        self.write_balances(t.debit_account_id, new_debit, undo);
        self.write_balances(t.credit_account_id, new_credit, undo);
        if let Some((pid, status, deadline)) = pending_change {
            let before = self.pending.insert(pid, status);
            undo.push(Undo::Pending(pid, before));
            if let Some(deadline) = deadline {
                if status == PendingStatus::Pending {
                    self.expiries.insert((deadline, pid));
                    undo.push(Undo::ExpiryInserted(deadline, pid));
                } else if self.expiries.remove(&(deadline, pid)) {
                    undo.push(Undo::ExpiryRemoved(deadline, pid));
                }
            }
        }
        self.transfers.insert(
            t.id,
            TransferRecord {
                transfer: t.clone(),
                timestamp_ms: now_ms,
            },
        );
        undo.push(Undo::TransferInserted(t.id));
        Ok(Outcome::Created)
    }

    /// Checks a post/void/expire against its pending transfer; returns the pending's new
    /// status, its deadline (to drop from the expiry index) and its amount (to release).
    fn check_resolution(
        &self,
        t: &Transfer,
        now_ms: u64,
    ) -> Result<(PendingStatus, Option<u64>, u64), TransferError> {
        use TransferError as E;
        let pid = t.pending_id.ok_or(E::PendingIdMustNotBeZero)?;
        let p = self.transfers.get(&pid).ok_or(E::PendingTransferNotFound)?;
        if p.transfer.kind != TransferKind::Pending {
            return Err(E::PendingTransferNotPending);
        }
        if p.transfer.debit_account_id != t.debit_account_id {
            return Err(E::PendingTransferHasDifferentDebitAccountId);
        }
        if p.transfer.credit_account_id != t.credit_account_id {
            return Err(E::PendingTransferHasDifferentCreditAccountId);
        }
        // Same accounts imply the same ledger (the transfer's was checked against them), so
        // TigerBeetle's pending_transfer_has_different_ledger cannot arise here.
        match self.pending.get(&pid) {
            Some(PendingStatus::Posted) => return Err(E::PendingTransferAlreadyPosted),
            Some(PendingStatus::Voided) => return Err(E::PendingTransferAlreadyVoided),
            Some(PendingStatus::Expired) => return Err(E::PendingTransferExpired),
            Some(PendingStatus::Pending) => {}
            // A loaded pending always has a status (from_rows enforces it).
            None => return Err(E::PendingTransferNotFound),
        }
        let deadline = p.expires_at_ms();
        let due = deadline.is_some_and(|d| now_ms >= d);
        let status = match t.kind {
            TransferKind::PostPending | TransferKind::VoidPending if due => {
                return Err(E::PendingTransferExpired);
            }
            TransferKind::PostPending if t.amount > p.transfer.amount => {
                return Err(E::ExceedsPendingTransferAmount);
            }
            TransferKind::PostPending => PendingStatus::Posted,
            _ if t.amount != p.transfer.amount => return Err(E::PendingTransferHasDifferentAmount),
            TransferKind::VoidPending => PendingStatus::Voided,
            _ if deadline.is_none() => return Err(E::PendingTransferHasNoTimeout),
            _ if !due => return Err(E::PendingTransferNotExpired),
            _ => PendingStatus::Expired,
        };
        Ok((status, deadline, p.transfer.amount))
    }

    fn write_balances(&mut self, id: AccountId, balances: Balances, undo: &mut Vec<Undo>) {
        if let Some(a) = self.accounts.get_mut(&id) {
            undo.push(Undo::Balances(id, a.balances));
            a.balances = balances;
        }
    }

    fn rollback(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::AccountInserted(id) => {
                    self.accounts.remove(&id);
                }
                Undo::Balances(id, b) => {
                    if let Some(a) = self.accounts.get_mut(&id) {
                        a.balances = b;
                    }
                }
                Undo::TransferInserted(id) => {
                    self.transfers.remove(&id);
                }
                Undo::Pending(id, before) => match before {
                    Some(s) => {
                        self.pending.insert(id, s);
                    }
                    None => {
                        self.pending.remove(&id);
                    }
                },
                Undo::ExpiryInserted(d, id) => {
                    self.expiries.remove(&(d, id));
                }
                Undo::ExpiryRemoved(d, id) => {
                    self.expiries.insert((d, id));
                }
            }
        }
    }

    /// The rows a successful call changed, read off its undo log.
    fn delta(&self, undo: &[Undo]) -> Delta {
        let mut delta = Delta::default();
        let mut seen_accounts = HashSet::new();
        let mut seen_pending = HashSet::new();
        for u in undo {
            match u {
                Undo::AccountInserted(id) => delta
                    .accounts_created
                    .extend(self.accounts.get(id).cloned()),
                Undo::Balances(id, _) if seen_accounts.insert(*id) => delta
                    .accounts_changed
                    .extend(self.accounts.get(id).cloned()),
                Undo::TransferInserted(id) => delta.created.extend(self.transfers.get(id).cloned()),
                Undo::Pending(id, _) if seen_pending.insert(*id) => {
                    delta
                        .pending_changes
                        .extend(self.pending.get(id).map(|s| (*id, *s)));
                }
                _ => {}
            }
        }
        // Created accounts are listed with their creation-time (zero) balances; any movement
        // shows in accounts_changed, which the store applies after inserting them.
        for a in &mut delta.accounts_created {
            a.balances = Balances::default();
        }
        delta
    }

    /// Checks every invariant money depends on, over the whole ledger:
    /// Σ debits = Σ credits (pending and posted), no balance-limit flag broken, every
    /// account's balances equal to the sum of its transfers, every pending resolved at most
    /// once and its status equal to what its transfers say, the expiry index exact.
    pub fn check_invariants(&self) -> Result<InvariantReport, InvariantViolation> {
        let mut checks = 0u64;
        let mut recomputed: HashMap<AccountId, Balances> = self
            .accounts
            .keys()
            .map(|id| (*id, Balances::default()))
            .collect();
        let mut resolution: HashMap<TransferId, PendingStatus> = HashMap::new();
        for r in self.transfers.values() {
            let t = &r.transfer;
            checks += 2;
            let (Some(d), Some(c)) = (
                self.accounts.get(&t.debit_account_id),
                self.accounts.get(&t.credit_account_id),
            ) else {
                return Err(InvariantViolation::DanglingAccount(t.id));
            };
            if d.ledger != t.ledger || c.ledger != t.ledger {
                return Err(InvariantViolation::LedgerMismatch(t.id));
            }
            if let Some(pid) = t.pending_id {
                checks += 2;
                let p = self
                    .transfers
                    .get(&pid)
                    .filter(|p| p.transfer.kind == TransferKind::Pending);
                let Some(p) = p else {
                    return Err(InvariantViolation::DanglingPending(t.id));
                };
                let status = match t.kind {
                    TransferKind::PostPending => PendingStatus::Posted,
                    TransferKind::VoidPending => PendingStatus::Voided,
                    _ => PendingStatus::Expired,
                };
                if resolution.insert(pid, status).is_some() {
                    return Err(InvariantViolation::ResolvedTwice(pid));
                }
                let ok = match t.kind {
                    TransferKind::PostPending => t.amount <= p.transfer.amount,
                    _ => t.amount == p.transfer.amount,
                };
                if !ok {
                    return Err(InvariantViolation::DanglingPending(t.id));
                }
            }
            let posted = matches!(t.kind, TransferKind::Single | TransferKind::PostPending);
            if posted {
                if let Some(b) = recomputed.get_mut(&t.debit_account_id) {
                    b.debits_posted += t.amount;
                }
                if let Some(b) = recomputed.get_mut(&t.credit_account_id) {
                    b.credits_posted += t.amount;
                }
            }
        }
        // Pending amounts count where nothing resolved them.
        for r in self
            .transfers
            .values()
            .filter(|r| r.transfer.kind == TransferKind::Pending)
        {
            let t = &r.transfer;
            checks += 2;
            let expected = resolution
                .get(&t.id)
                .copied()
                .unwrap_or(PendingStatus::Pending);
            if self.pending.get(&t.id) != Some(&expected) {
                return Err(InvariantViolation::StatusMismatch(t.id));
            }
            let in_index = r
                .expires_at_ms()
                .is_some_and(|d| self.expiries.contains(&(d, t.id)));
            if in_index != (expected == PendingStatus::Pending && t.timeout_s != 0) {
                return Err(InvariantViolation::ExpiryIndex(t.id));
            }
            if expected == PendingStatus::Pending {
                if let Some(b) = recomputed.get_mut(&t.debit_account_id) {
                    b.debits_pending += t.amount;
                }
                if let Some(b) = recomputed.get_mut(&t.credit_account_id) {
                    b.credits_pending += t.amount;
                }
            }
        }
        for id in self.pending.keys() {
            checks += 1;
            if self
                .transfers
                .get(id)
                .is_none_or(|r| r.transfer.kind != TransferKind::Pending)
            {
                return Err(InvariantViolation::StatusMismatch(*id));
            }
        }
        for (deadline, id) in &self.expiries {
            checks += 1;
            let due = self
                .transfers
                .get(id)
                .and_then(TransferRecord::expires_at_ms);
            if due != Some(*deadline) || self.pending.get(id) != Some(&PendingStatus::Pending) {
                return Err(InvariantViolation::ExpiryIndex(*id));
            }
        }
        let (mut dp, mut dpo, mut cp, mut cpo) = (0u128, 0u128, 0u128, 0u128);
        for a in self.accounts.values() {
            let b = &a.balances;
            checks += 3;
            if a.flags.debits_must_not_exceed_credits && a.flags.credits_must_not_exceed_debits {
                return Err(InvariantViolation::FlagsBoth(a.id));
            }
            let broken = (a.flags.debits_must_not_exceed_credits
                && b.debits_pending + b.debits_posted > b.credits_posted)
                || (a.flags.credits_must_not_exceed_debits
                    && b.credits_pending + b.credits_posted > b.debits_posted);
            if broken {
                return Err(InvariantViolation::LimitBroken(a.id));
            }
            if recomputed.get(&a.id) != Some(b) {
                return Err(InvariantViolation::BalancesNotRecomputed(a.id));
            }
            dp += u128::from(b.debits_pending);
            dpo += u128::from(b.debits_posted);
            cp += u128::from(b.credits_pending);
            cpo += u128::from(b.credits_posted);
        }
        checks += 2;
        if dp != cp {
            return Err(InvariantViolation::PendingNotBalanced {
                debits: dp,
                credits: cp,
            });
        }
        if dpo != cpo {
            return Err(InvariantViolation::PostedNotBalanced {
                debits: dpo,
                credits: cpo,
            });
        }
        Ok(InvariantReport {
            accounts: self.accounts.len(),
            transfers: self.transfers.len(),
            checks,
        })
    }

    /// Every transfer record, in no particular order (sort by the journal index to replay).
    pub fn transfers(&self) -> impl Iterator<Item = &TransferRecord> {
        self.transfers.values()
    }

    /// Every pending transfer's status.
    pub fn pending_statuses(&self) -> impl Iterator<Item = (TransferId, PendingStatus)> + '_ {
        self.pending.iter().map(|(id, s)| (*id, *s))
    }
}

/// The expiry transfer of a pending transfer: same accounts and amount, id derived from it.
pub fn expiry_transfer(pending: &Transfer) -> Transfer {
    Transfer {
        id: TransferId::derive("paygate-ledger/expire/v1", &[&pending.id.to_bytes()]),
        debit_account_id: pending.debit_account_id,
        credit_account_id: pending.credit_account_id,
        amount: pending.amount,
        pending_id: Some(pending.id),
        timeout_s: 0,
        ledger: pending.ledger,
        code: EXPIRY_TRANSFER_CODE,
        kind: TransferKind::ExpirePending,
        linked: false,
        user_data: pending.user_data.clone(),
    }
}
