//! The ledger's model test (issue 4 §2): seeded random interleavings of payments (with and
//! without profit sharing), refunds that succeed, fail or time out, profit-sharing splits,
//! unfreezes and returns, settlements and payouts, time passing with pending expiry, duplicate
//! deliveries, conflicting replays and crashes (a fact planned, its batch abandoned before
//! apply, the same fact replayed later) — run against a reference model of plain integers.
//!
//! Two systems run in lockstep: the whole ledger in memory with its Merkle journal, and the
//! store path (rows in maps; each fact loads only its `required` rows into a snapshot, applies
//! there and writes the delta back; the journal kept as a compact tree). After every step:
//! both systems gave the same answer, the model predicted it (success, or the error code), the
//! balances equal the model's integers, the store's rows equal the memory state,
//! `check_invariants` passes, both journals have the same root, the newest entry's inclusion
//! proof and the consistency proof from the previous size verify. Every 64 steps and at the end
//! of a run: a replay of the journal rebuilds the same state, and `verify_log` passes a signed
//! checkpoint over the store's journal rows.
//!
//! `PAYGATE_LEDGER_SIM_SEEDS` and `PAYGATE_LEDGER_SIM_STEPS` scale it (defaults 48 × 400).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, HashMap};

use paygate_core::money::{Currency, Money};
use paygate_ledger::chart::{self, AccountKind, PLATFORM_OWNER};
use paygate_ledger::merkle::{verify_consistency, verify_inclusion};
use paygate_ledger::recipes::{self, RefundFunds};
use paygate_ledger::{
    Account, AccountId, Applied, CheckpointVerifier, CompactTree, Journal, JournalEntry,
    LedgerError, LedgerState, NoteSigner, Outcome, PendingStatus, Posting, TransferId,
    TransferKind, TransferRecord, append_entries, required, verify_log,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MERCHANTS: [&str; 4] = ["1900000101", "1900000102", "1900000103", "1900000104"];
const CHANNELS: [&str; 2] = ["wx-a", "wx-b"];
const RECEIVERS: [&str; 4] = [
    "MERCHANT_ID:1900000201",
    "MERCHANT_ID:1900000202",
    "hmac:0a1b2c",
    "hmac:3d4e5f",
];
const START_MS: u64 = 1_777_600_000_000;
const ORIGIN: &str = "paygate.test/ledger-sim";

// ---------------------------------------------------------------- the reference model

/// The chart's limit rule, restated: clearing is an asset, everything else must not go below 0.
fn is_asset(kind: AccountKind) -> bool {
    kind == AccountKind::ChannelClearing
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Bal {
    dp: u64,
    dpo: u64,
    cp: u64,
    cpo: u64,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Single,
    Reserve,
    Post,
    Release,
}

#[derive(Clone, Copy, Debug)]
struct Leg {
    debit: (AccountKind, &'static str),
    credit: (AccountKind, &'static str),
    amount: u64,
    mode: Mode,
}

fn leg(
    debit: (AccountKind, &'static str),
    credit: (AccountKind, &'static str),
    amount: u64,
    mode: Mode,
) -> Leg {
    Leg {
        debit,
        credit,
        amount,
        mode,
    }
}

#[derive(Default, Clone)]
struct Model {
    bal: BTreeMap<(AccountKind, &'static str), Bal>,
}

impl Model {
    /// Applies legs all or nothing with TigerBeetle's limit rule; the error code otherwise.
    fn apply(&mut self, legs: &[Leg]) -> Result<(), &'static str> {
        let mut next = self.bal.clone();
        for l in legs.iter().filter(|l| l.amount > 0) {
            let d = *next.entry(l.debit).or_default();
            let c = *next.entry(l.credit).or_default();
            let (mut d2, mut c2) = (d, c);
            match l.mode {
                Mode::Single | Mode::Reserve => {
                    if !is_asset(l.debit.0) && d.dp + d.dpo + l.amount > d.cpo {
                        return Err("exceeds_credits");
                    }
                    if is_asset(l.credit.0) && c.cp + c.cpo + l.amount > c.dpo {
                        return Err("exceeds_debits");
                    }
                    if matches!(l.mode, Mode::Single) {
                        d2.dpo += l.amount;
                        c2.cpo += l.amount;
                    } else {
                        d2.dp += l.amount;
                        c2.cp += l.amount;
                    }
                }
                Mode::Post | Mode::Release => {
                    d2.dp -= l.amount;
                    c2.cp -= l.amount;
                    if matches!(l.mode, Mode::Post) {
                        d2.dpo += l.amount;
                        c2.cpo += l.amount;
                    }
                }
            }
            next.insert(l.debit, d2);
            next.insert(l.credit, c2);
        }
        self.bal = next;
        Ok(())
    }

    fn headroom(&self, kind: AccountKind, owner: &'static str) -> i64 {
        let b = self.bal.get(&(kind, owner)).copied().unwrap_or_default();
        b.cpo as i64 - b.dpo as i64 - b.dp as i64
    }
}

// ---------------------------------------------------------------- the business side

struct Payment {
    tx: String,
    mchid: &'static str,
    channel: &'static str,
    total: u64,
    fee: u64,
    profit_sharing: bool,
    refundable: u64,
    frozen_left: u64,
    unfreeze_claimed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RefundStatus {
    Planned,
    Open { deadline_ms: Option<u64> },
    Claimed { deadline_ms: Option<u64> },
    Expired,
    Done,
    Rejected,
}

struct RefundCase {
    id: String,
    payment: usize,
    amount: u64,
    fee_refund: u64,
    funds: RefundFunds,
    timeout_s: u32,
    status: RefundStatus,
}

struct SplitLeg {
    mchid: &'static str,
    receiver: &'static str,
    returnable: u64,
}

struct Payout {
    mchid: &'static str,
    id: String,
    amount: u64,
    claimed: bool,
}

#[derive(Clone, Debug)]
enum Fact {
    Pay(usize),
    RefundRequest(usize),
    RefundSucceed(usize),
    RefundFail(usize),
    Split {
        payment: usize,
        out_order_no: String,
        parts: Vec<(&'static str, u64)>,
    },
    Unfreeze {
        payment: usize,
        out_order_no: String,
        amount: u64,
    },
    Return {
        split: usize,
        out_return_no: String,
        amount: u64,
    },
    Settle {
        mchid: &'static str,
        id: String,
        amount: u64,
    },
    PayoutRequest {
        mchid: &'static str,
        id: String,
        amount: u64,
    },
    PayoutComplete {
        payout: usize,
        channel: &'static str,
    },
}

// ---------------------------------------------------------------- the two systems

/// The store path: rows in maps, one snapshot per fact, a compact journal head.
#[derive(Default)]
struct Rows {
    accounts: HashMap<AccountId, Account>,
    transfers: HashMap<TransferId, TransferRecord>,
    pending: HashMap<TransferId, PendingStatus>,
    head: CompactTree,
    journal: Vec<JournalEntry>,
}

impl Rows {
    fn snapshot(
        &self,
        accounts: impl IntoIterator<Item = AccountId>,
        transfers: impl IntoIterator<Item = TransferId>,
    ) -> LedgerState {
        // The store's `WHERE id IN (...)` returns each row once.
        let accounts: std::collections::BTreeSet<AccountId> = accounts.into_iter().collect();
        let accounts: Vec<Account> = accounts
            .into_iter()
            .filter_map(|id| self.accounts.get(&id).cloned())
            .collect();
        let transfers: Vec<TransferRecord> = transfers
            .into_iter()
            .filter_map(|id| self.transfers.get(&id).cloned())
            .collect();
        let statuses: Vec<_> = transfers
            .iter()
            .filter_map(|t| {
                self.pending
                    .get(&t.transfer.id)
                    .map(|s| (t.transfer.id, *s))
            })
            .collect();
        LedgerState::from_rows(accounts, transfers, statuses).unwrap()
    }

    fn write(&mut self, applied: &Applied) {
        for a in applied
            .delta
            .accounts_created
            .iter()
            .chain(&applied.delta.accounts_changed)
        {
            self.accounts.insert(a.id, a.clone());
        }
        for r in &applied.delta.created {
            assert!(
                self.transfers.insert(r.transfer.id, r.clone()).is_none(),
                "a row written twice"
            );
        }
        for (id, s) in &applied.delta.pending_changes {
            self.pending.insert(*id, *s);
        }
        self.journal
            .extend(append_entries(&mut self.head, &applied.delta.created));
    }

    fn apply_posting(&mut self, posting: &Posting, now: u64) -> Result<Applied, LedgerError> {
        let req = required(&posting.accounts, &posting.transfers);
        let mut snap = self.snapshot(req.account_ids, req.transfer_ids);
        let applied = snap.apply_posting(posting, now)?;
        self.write(&applied);
        Ok(applied)
    }

    /// The expiry worker's query: pending rows due by `now`, their accounts, then expire.
    fn expire(&mut self, now: u64) -> Result<Applied, LedgerError> {
        let due: Vec<TransferId> = self
            .transfers
            .values()
            .filter(|r| self.pending.get(&r.transfer.id) == Some(&PendingStatus::Pending))
            .filter(|r| r.expires_at_ms().is_some_and(|d| d <= now))
            .map(|r| r.transfer.id)
            .collect();
        let accounts: Vec<AccountId> = due
            .iter()
            .flat_map(|id| {
                let t = &self.transfers[id].transfer;
                [t.debit_account_id, t.credit_account_id]
            })
            .collect();
        let mut snap = self.snapshot(accounts, due);
        let applied = snap.expire(now)?;
        self.write(&applied);
        Ok(applied)
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Figures {
    operations: u64,
    rejected_as_predicted: u64,
    duplicates: u64,
    crashes_replayed: u64,
    expired: u64,
    invariants: u64,
    journal_entries: u64,
}

struct Sim {
    rng: StdRng,
    seed: u64,
    now: u64,
    model: Model,
    memory: LedgerState,
    journal: Journal,
    rows: Rows,
    payments: Vec<Payment>,
    refunds: Vec<RefundCase>,
    splits: Vec<SplitLeg>,
    payouts: Vec<Payout>,
    limbo: Vec<Fact>,
    applied: Vec<Posting>,
    counter: u64,
    figures: Figures,
}

fn cny(v: u64) -> Money {
    Money::cny_fen(v as i64)
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            rng: StdRng::seed_from_u64(seed),
            seed,
            now: START_MS,
            model: Model::default(),
            memory: LedgerState::new(),
            journal: Journal::new(),
            rows: Rows::default(),
            payments: Vec::new(),
            refunds: Vec::new(),
            splits: Vec::new(),
            payouts: Vec::new(),
            limbo: Vec::new(),
            applied: Vec::new(),
            counter: 0,
            figures: Figures::default(),
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}-{}", self.seed, self.counter)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    // ---- planning: choose a fact and claim the business resources it uses

    fn plan(&mut self) -> Option<Fact> {
        match self.rng.random_range(0..100) {
            0..=24 => Some(self.plan_pay()),
            25..=39 => self.plan_refund_request(),
            40..=49 => self.plan_refund_outcome(true),
            50..=54 => self.plan_refund_outcome(false),
            55..=62 => self.plan_split(),
            63..=67 => self.plan_unfreeze(),
            68..=72 => self.plan_return(),
            73..=82 => Some(self.plan_settle(AccountKind::MerchantPending)),
            83..=90 => Some(self.plan_settle(AccountKind::MerchantAvailable)),
            _ => self.plan_payout_complete(),
        }
    }

    fn plan_pay(&mut self) -> Fact {
        let total = self.rng.random_range(1..=50_000u64);
        let fee = total * self.rng.random_range(0..=100u64) / 10_000;
        let payment = Payment {
            tx: self.next_id("tx"),
            mchid: self.pick(&MERCHANTS),
            channel: self.pick(&CHANNELS),
            total,
            fee,
            profit_sharing: self.rng.random_bool(0.3),
            refundable: total,
            frozen_left: 0,
            unfreeze_claimed: false,
        };
        self.payments.push(payment);
        Fact::Pay(self.payments.len() - 1)
    }

    fn plan_refund_request(&mut self) -> Option<Fact> {
        let candidates: Vec<usize> = (0..self.payments.len())
            .filter(|i| self.payments[*i].refundable > 0)
            .collect();
        let p = *candidates.get(self.rng.random_range(0..candidates.len().max(1)))?;
        let amount = self.rng.random_range(1..=self.payments[p].refundable);
        self.payments[p].refundable -= amount;
        let pay = &self.payments[p];
        let fee_refund = pay.fee * amount / pay.total;
        let funds = if self.rng.random_bool(0.7) {
            RefundFunds::Pending
        } else {
            RefundFunds::Available
        };
        let timeout_s = if self.rng.random_bool(0.5) {
            0
        } else {
            self.rng.random_range(1..=900)
        };
        let id = self.next_id("rf");
        self.refunds.push(RefundCase {
            id,
            payment: p,
            amount,
            fee_refund,
            funds,
            timeout_s,
            status: RefundStatus::Planned,
        });
        Some(Fact::RefundRequest(self.refunds.len() - 1))
    }

    fn plan_refund_outcome(&mut self, success: bool) -> Option<Fact> {
        let open: Vec<usize> = (0..self.refunds.len())
            .filter(|i| {
                matches!(
                    self.refunds[*i].status,
                    RefundStatus::Open { .. } | RefundStatus::Expired
                )
            })
            .collect();
        let r = *open.get(self.rng.random_range(0..open.len().max(1)))?;
        if let RefundStatus::Open { deadline_ms } = self.refunds[r].status {
            self.refunds[r].status = RefundStatus::Claimed { deadline_ms };
        }
        Some(if success {
            Fact::RefundSucceed(r)
        } else {
            Fact::RefundFail(r)
        })
    }

    fn plan_split(&mut self) -> Option<Fact> {
        let frozen: Vec<usize> = (0..self.payments.len())
            .filter(|i| self.payments[*i].frozen_left > 0 && !self.payments[*i].unfreeze_claimed)
            .collect();
        let p = *frozen.get(self.rng.random_range(0..frozen.len().max(1)))?;
        let mut left = self.payments[p].frozen_left;
        let mut parts = Vec::new();
        for r in RECEIVERS {
            if left == 0 || parts.len() == 3 || self.rng.random_bool(0.4) {
                continue;
            }
            let a = self.rng.random_range(1..=left.div_ceil(2));
            parts.push((r, a));
            left -= a;
        }
        if parts.is_empty() {
            parts.push((RECEIVERS[0], 1));
            left -= 1;
        }
        self.payments[p].frozen_left = left;
        Some(Fact::Split {
            payment: p,
            out_order_no: self.next_id("ps"),
            parts,
        })
    }

    fn plan_unfreeze(&mut self) -> Option<Fact> {
        let frozen: Vec<usize> = (0..self.payments.len())
            .filter(|i| self.payments[*i].frozen_left > 0 && !self.payments[*i].unfreeze_claimed)
            .collect();
        let p = *frozen.get(self.rng.random_range(0..frozen.len().max(1)))?;
        let amount = self.payments[p].frozen_left;
        self.payments[p].frozen_left = 0;
        self.payments[p].unfreeze_claimed = true;
        Some(Fact::Unfreeze {
            payment: p,
            out_order_no: self.next_id("uf"),
            amount,
        })
    }

    fn plan_return(&mut self) -> Option<Fact> {
        let legs: Vec<usize> = (0..self.splits.len())
            .filter(|i| self.splits[*i].returnable > 0)
            .collect();
        let s = *legs.get(self.rng.random_range(0..legs.len().max(1)))?;
        let amount = self.rng.random_range(1..=self.splits[s].returnable);
        self.splits[s].returnable -= amount;
        Some(Fact::Return {
            split: s,
            out_return_no: self.next_id("rt"),
            amount,
        })
    }

    /// A settlement (from pending) or a payout request (from available): mostly within the
    /// balance, sometimes one fen over it to prove the limit holds.
    fn plan_settle(&mut self, from: AccountKind) -> Fact {
        let mchid = self.pick(&MERCHANTS);
        let room = self.model.headroom(from, mchid).max(0) as u64;
        let amount = if room == 0 || self.rng.random_bool(0.1) {
            room + 1
        } else {
            self.rng.random_range(1..=room)
        };
        if from == AccountKind::MerchantPending {
            Fact::Settle {
                mchid,
                id: self.next_id("st"),
                amount,
            }
        } else {
            Fact::PayoutRequest {
                mchid,
                id: self.next_id("po"),
                amount,
            }
        }
    }

    fn plan_payout_complete(&mut self) -> Option<Fact> {
        let open: Vec<usize> = (0..self.payouts.len())
            .filter(|i| !self.payouts[*i].claimed)
            .collect();
        let p = *open.get(self.rng.random_range(0..open.len().max(1)))?;
        self.payouts[p].claimed = true;
        let channel = self.pick(&CHANNELS);
        Some(Fact::PayoutComplete { payout: p, channel })
    }

    // ---- executing a fact: the recipe, the model's prediction, both systems, the comparison

    fn refund_of(&self, r: usize) -> recipes::Refund<'_> {
        let c = &self.refunds[r];
        let p = &self.payments[c.payment];
        recipes::Refund {
            refund_id: &c.id,
            mchid: p.mchid,
            channel_id: p.channel,
            amount: cny(c.amount),
            fee_refund: cny(c.fee_refund),
            funds: c.funds,
            timeout_s: c.timeout_s,
        }
    }

    fn posting(&self, fact: &Fact) -> Posting {
        match fact {
            Fact::Pay(i) => {
                let p = &self.payments[*i];
                recipes::payment_success(&recipes::PaymentSuccess {
                    transaction_id: &p.tx,
                    mchid: p.mchid,
                    channel_id: p.channel,
                    total: cny(p.total),
                    fee: cny(p.fee),
                    profit_sharing: p.profit_sharing,
                })
            }
            Fact::RefundRequest(r) => recipes::refund_requested(&self.refund_of(*r)),
            Fact::RefundSucceed(r) => recipes::refund_succeeded(&self.refund_of(*r)),
            Fact::RefundFail(r) => recipes::refund_failed(&self.refund_of(*r)),
            Fact::Split {
                payment,
                out_order_no,
                parts,
            } => {
                let receivers: Vec<(&str, Money)> =
                    parts.iter().map(|(r, a)| (*r, cny(*a))).collect();
                recipes::share_split(&recipes::ShareSplit {
                    mchid: self.payments[*payment].mchid,
                    out_order_no,
                    receivers: &receivers,
                })
            }
            Fact::Unfreeze {
                payment,
                out_order_no,
                amount,
            } => recipes::share_unfreeze(self.payments[*payment].mchid, out_order_no, cny(*amount)),
            Fact::Return {
                split,
                out_return_no,
                amount,
            } => {
                let s = &self.splits[*split];
                recipes::share_return(s.mchid, out_return_no, s.receiver, cny(*amount))
            }
            Fact::Settle { mchid, id, amount } => recipes::settle(mchid, id, cny(*amount)),
            Fact::PayoutRequest { mchid, id, amount } => {
                recipes::payout_requested(mchid, id, cny(*amount))
            }
            Fact::PayoutComplete { payout, channel } => {
                let p = &self.payouts[*payout];
                recipes::payout_completed(p.mchid, channel, &p.id, cny(p.amount))
            }
        }
        .unwrap()
    }

    /// A refund's legs: its two reservations (merchant part, fee part) reserved, posted or
    /// released; a posted refund is also paid out of the channel's clearing.
    fn refund_legs(&self, r: usize, mode: Mode) -> Vec<Leg> {
        use AccountKind as K;
        let c = &self.refunds[r];
        let p = &self.payments[c.payment];
        let src = match c.funds {
            RefundFunds::Pending => K::MerchantPending,
            RefundFunds::Available => K::MerchantAvailable,
        };
        let payable = (K::RefundsPayable, PLATFORM_OWNER);
        let mut legs = vec![
            leg((src, p.mchid), payable, c.amount - c.fee_refund, mode),
            leg(
                (K::PlatformFeeIncome, PLATFORM_OWNER),
                payable,
                c.fee_refund,
                mode,
            ),
        ];
        if matches!(mode, Mode::Post) {
            legs.push(leg(
                payable,
                (K::ChannelClearing, p.channel),
                c.amount,
                Mode::Single,
            ));
        }
        legs
    }

    /// The model's own account of the fact: its legs, or an error it predicts up front.
    fn model_legs(&self, fact: &Fact) -> Result<Vec<Leg>, &'static str> {
        use AccountKind as K;
        Ok(match fact {
            Fact::Pay(i) => {
                let p = &self.payments[*i];
                let to = if p.profit_sharing {
                    K::MerchantShareFrozen
                } else {
                    K::MerchantPending
                };
                vec![
                    leg(
                        (K::ChannelClearing, p.channel),
                        (to, p.mchid),
                        p.total - p.fee,
                        Mode::Single,
                    ),
                    leg(
                        (K::ChannelClearing, p.channel),
                        (K::PlatformFeeIncome, PLATFORM_OWNER),
                        p.fee,
                        Mode::Single,
                    ),
                ]
            }
            Fact::RefundRequest(r) | Fact::RefundSucceed(r) | Fact::RefundFail(r) => {
                let mode = match fact {
                    Fact::RefundRequest(_) => Mode::Reserve,
                    Fact::RefundSucceed(_) => Mode::Post,
                    _ => Mode::Release,
                };
                if !matches!(mode, Mode::Reserve) {
                    let expired = match self.refunds[*r].status {
                        RefundStatus::Expired => true,
                        RefundStatus::Claimed {
                            deadline_ms: Some(d),
                        } => self.now >= d,
                        _ => false,
                    };
                    if expired {
                        return Err("pending_transfer_expired");
                    }
                }
                self.refund_legs(*r, mode)
            }
            Fact::Split { payment, parts, .. } => {
                let m = self.payments[*payment].mchid;
                parts
                    .iter()
                    .map(|(r, a)| {
                        leg(
                            (K::MerchantShareFrozen, m),
                            (K::ShareReceiver, r),
                            *a,
                            Mode::Single,
                        )
                    })
                    .collect()
            }
            Fact::Unfreeze {
                payment, amount, ..
            } => {
                let m = self.payments[*payment].mchid;
                vec![leg(
                    (K::MerchantShareFrozen, m),
                    (K::MerchantPending, m),
                    *amount,
                    Mode::Single,
                )]
            }
            Fact::Return { split, amount, .. } => {
                let s = &self.splits[*split];
                vec![leg(
                    (K::ShareReceiver, s.receiver),
                    (K::MerchantPending, s.mchid),
                    *amount,
                    Mode::Single,
                )]
            }
            Fact::Settle { mchid, amount, .. } => vec![leg(
                (K::MerchantPending, mchid),
                (K::MerchantAvailable, mchid),
                *amount,
                Mode::Single,
            )],
            Fact::PayoutRequest { mchid, amount, .. } => vec![leg(
                (K::MerchantAvailable, mchid),
                (K::SettlementPayable, mchid),
                *amount,
                Mode::Single,
            )],
            Fact::PayoutComplete { payout, channel } => {
                let p = &self.payouts[*payout];
                vec![leg(
                    (K::SettlementPayable, p.mchid),
                    (K::ChannelClearing, channel),
                    p.amount,
                    Mode::Single,
                )]
            }
        })
    }

    fn execute(&mut self, fact: &Fact) {
        self.figures.operations += 1;
        let posting = self.posting(fact);
        let mut next = self.model.clone();
        let predicted = self.model_legs(fact).and_then(|legs| next.apply(&legs));
        let a = self.memory.apply_posting(&posting, self.now);
        let b = self.rows.apply_posting(&posting, self.now);
        assert_eq!(
            a, b,
            "seed {}: memory and store paths disagree on {fact:?}",
            self.seed
        );
        match (&predicted, &a) {
            (Ok(()), Ok(applied)) => {
                assert!(
                    applied.outcomes.iter().all(|o| *o == Outcome::Created),
                    "{fact:?}"
                );
                self.model = next;
                self.journal_append(applied);
                self.applied.push(posting);
                self.settle_business(fact, true);
            }
            (Err(code), Err(e)) => {
                assert_eq!(*code, e.code(), "seed {}: {fact:?}: {e}", self.seed);
                self.figures.rejected_as_predicted += 1;
                self.settle_business(fact, false);
            }
            _ => panic!(
                "seed {} step at {}: {fact:?}: model {predicted:?}, ledger {a:?}",
                self.seed, self.now
            ),
        }
    }

    /// Updates the business side after a fact: claims become outcomes, or are released.
    fn settle_business(&mut self, fact: &Fact, ok: bool) {
        match fact {
            Fact::Pay(i) => {
                let p = &mut self.payments[*i];
                if p.profit_sharing {
                    p.frozen_left = p.total - p.fee;
                }
            }
            Fact::RefundRequest(r) => {
                let c = &mut self.refunds[*r];
                if ok {
                    let deadline_ms =
                        (c.timeout_s > 0).then(|| self.now + u64::from(c.timeout_s) * 1000);
                    c.status = RefundStatus::Open { deadline_ms };
                } else {
                    c.status = RefundStatus::Rejected;
                    self.payments[c.payment].refundable += c.amount;
                }
            }
            Fact::RefundSucceed(r) | Fact::RefundFail(r) => {
                let c = &mut self.refunds[*r];
                c.status = match (ok, c.status) {
                    (true, _) => RefundStatus::Done,
                    (false, RefundStatus::Claimed { deadline_ms }) => {
                        RefundStatus::Open { deadline_ms }
                    }
                    (false, s) => s,
                };
                if ok && matches!(fact, Fact::RefundFail(_)) {
                    self.payments[c.payment].refundable += c.amount;
                }
            }
            Fact::Split { payment, parts, .. } => {
                if ok {
                    let m = self.payments[*payment].mchid;
                    self.splits.extend(parts.iter().map(|(r, a)| SplitLeg {
                        mchid: m,
                        receiver: r,
                        returnable: *a,
                    }));
                } else {
                    self.payments[*payment].frozen_left += parts.iter().map(|p| p.1).sum::<u64>();
                }
            }
            Fact::Unfreeze {
                payment, amount, ..
            } => {
                if !ok {
                    self.payments[*payment].frozen_left += amount;
                    self.payments[*payment].unfreeze_claimed = false;
                }
            }
            Fact::Return { split, amount, .. } => {
                if !ok {
                    self.splits[*split].returnable += amount;
                }
            }
            Fact::Settle { .. } => {}
            Fact::PayoutRequest { mchid, id, amount } => {
                if ok {
                    self.payouts.push(Payout {
                        mchid,
                        id: id.clone(),
                        amount: *amount,
                        claimed: false,
                    });
                }
            }
            Fact::PayoutComplete { payout, .. } => {
                if !ok {
                    self.payouts[*payout].claimed = false;
                }
            }
        }
    }

    fn journal_append(&mut self, applied: &Applied) {
        let before = self.journal.size();
        let before_root = self.journal.root();
        self.journal.append_all(&applied.delta.created);
        self.figures.journal_entries += applied.delta.created.len() as u64;
        let size = self.journal.size();
        let root = self.journal.root();
        assert_eq!(
            root,
            self.rows.head.root(),
            "seed {}: journals differ",
            self.seed
        );
        if size > before {
            let last = size - 1;
            let proof = self.journal.inclusion_proof(last, size).unwrap();
            verify_inclusion(
                &self.journal.leaf_hash(last).unwrap(),
                last,
                size,
                &proof,
                &root,
            )
            .unwrap();
            self.figures.invariants += 2;
            if before > 0 {
                let c = self.journal.consistency_proof(before, size).unwrap();
                verify_consistency(before, size, &c, &before_root, &root).unwrap();
                self.figures.invariants += 1;
            }
        }
    }

    fn expire(&mut self) {
        self.figures.operations += 1;
        let a = self.memory.expire(self.now).unwrap();
        let b = self.rows.expire(self.now).unwrap();
        assert_eq!(
            a.delta.created, b.delta.created,
            "seed {}: expiry differs",
            self.seed
        );
        // The model: every open reservation past its deadline is released.
        let mut released = 0;
        for r in 0..self.refunds.len() {
            let due = match self.refunds[r].status {
                RefundStatus::Open {
                    deadline_ms: Some(d),
                }
                | RefundStatus::Claimed {
                    deadline_ms: Some(d),
                } => d <= self.now,
                _ => false,
            };
            if !due {
                continue;
            }
            let legs = self.refund_legs(r, Mode::Release);
            released += legs.iter().filter(|l| l.amount > 0).count();
            self.model.apply(&legs).unwrap();
            self.refunds[r].status = RefundStatus::Expired;
        }
        assert_eq!(
            a.delta.created.len(),
            released,
            "seed {}: expired legs",
            self.seed
        );
        assert!(
            a.delta
                .created
                .iter()
                .all(|t| t.transfer.kind == TransferKind::ExpirePending)
        );
        self.figures.expired += released as u64;
        self.journal_append(&a);
    }

    fn duplicate(&mut self) {
        if self.applied.is_empty() {
            return;
        }
        self.figures.operations += 1;
        self.figures.duplicates += 1;
        let posting = self.applied[self.rng.random_range(0..self.applied.len())].clone();
        let a = self.memory.apply_posting(&posting, self.now).unwrap();
        let b = self.rows.apply_posting(&posting, self.now).unwrap();
        assert_eq!(a, b);
        assert!(
            a.outcomes.iter().all(|o| *o == Outcome::Exists),
            "seed {}: a replay applied again",
            self.seed
        );
        assert!(a.delta.is_empty() && a.delta.accounts_changed.is_empty());
    }

    /// The same transaction again with another amount: refused, naming the amount.
    fn conflict(&mut self) {
        let paid: Vec<usize> = (0..self.payments.len())
            .filter(|i| {
                self.memory
                    .transfer(self.posting(&Fact::Pay(*i)).transfers[0].id)
                    .is_some()
            })
            .collect();
        let Some(&i) = paid.get(self.rng.random_range(0..paid.len().max(1))) else {
            return;
        };
        self.figures.operations += 1;
        let mut posting = self.posting(&Fact::Pay(i));
        posting.transfers[0].amount += 1;
        let a = self.memory.apply_posting(&posting, self.now);
        let b = self.rows.apply_posting(&posting, self.now);
        assert_eq!(a, b);
        assert_eq!(a.unwrap_err().code(), "exists_with_different_amount");
        self.figures.rejected_as_predicted += 1;
    }

    fn check(&mut self) {
        let report = self
            .memory
            .check_invariants()
            .unwrap_or_else(|e| panic!("seed {}: {e}", self.seed));
        self.figures.invariants += report.checks;
        // Balances = the model's integers, account for account; no account the model lacks.
        assert_eq!(
            self.memory.account_count(),
            self.model.bal.len(),
            "seed {}",
            self.seed
        );
        for ((kind, owner), want) in &self.model.bal {
            let id = chart::account_id(*kind, owner, Currency::CNY);
            let b = self.memory.account(id).unwrap().balances;
            let got = Bal {
                dp: b.debits_pending,
                dpo: b.debits_posted,
                cp: b.credits_pending,
                cpo: b.credits_posted,
            };
            assert_eq!(got, *want, "seed {}: {kind:?} {owner}", self.seed);
            assert_eq!(
                self.rows.accounts.get(&id),
                self.memory.account(id),
                "seed {}: store row",
                self.seed
            );
            self.figures.invariants += 5;
        }
        assert_eq!(self.rows.transfers.len(), self.memory.transfer_count());
        self.figures.invariants += 1;
    }

    fn audit(&mut self) {
        let accounts: Vec<Account> = self.memory.accounts().into_iter().cloned().collect();
        let records: Vec<TransferRecord> =
            self.rows.journal.iter().map(|e| e.record.clone()).collect();
        let replayed = LedgerState::replay(&accounts, &records).unwrap();
        let again: Vec<Account> = replayed.accounts().into_iter().cloned().collect();
        assert_eq!(accounts, again, "seed {}: replay differs", self.seed);
        let signer = NoteSigner::from_seed(ORIGIN, [self.seed as u8; 32]).unwrap();
        let signed = self.journal.signed_checkpoint(ORIGIN, &signer).unwrap();
        let verifier = CheckpointVerifier::new(ORIGIN, signer.verifier());
        let report = verify_log(&self.rows.journal, &signed, &verifier).unwrap();
        assert_eq!(report.entries, self.journal.size());
        self.figures.invariants += 2 + accounts.len() as u64;
    }

    fn step(&mut self, step: usize) {
        match self.rng.random_range(0..100) {
            0..=69 => {
                if let Some(f) = self.plan() {
                    self.execute(&f);
                }
            }
            70..=77 => {
                // A crash: the fact was decided, its batch abandoned before apply.
                if let Some(f) = self.plan() {
                    self.limbo.push(f);
                }
            }
            78..=84 => {
                if !self.limbo.is_empty() {
                    let f = self
                        .limbo
                        .swap_remove(self.rng.random_range(0..self.limbo.len()));
                    self.figures.crashes_replayed += 1;
                    self.execute(&f);
                }
            }
            85..=90 => self.duplicate(),
            91..=92 => self.conflict(),
            _ => {
                self.now += self.rng.random_range(0..=600_000);
                self.expire();
            }
        }
        self.now += self.rng.random_range(0..2_000);
        self.check();
        if step % 64 == 63 {
            self.audit();
        }
    }

    fn finish(&mut self) {
        while let Some(f) = self.limbo.pop() {
            self.figures.crashes_replayed += 1;
            self.execute(&f);
            self.check();
        }
        self.now += 1_000_000;
        self.expire();
        self.check();
        self.audit();
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_interleavings_match_the_reference_model_and_keep_every_invariant() {
    let seeds = env_or("PAYGATE_LEDGER_SIM_SEEDS", 48);
    let steps = env_or("PAYGATE_LEDGER_SIM_STEPS", 400) as usize;
    let mut total = Figures::default();
    for seed in 0..seeds {
        let mut sim = Sim::new(0x5eed_0000 + seed);
        for step in 0..steps {
            sim.step(step);
        }
        sim.finish();
        let f = sim.figures;
        total.operations += f.operations;
        total.rejected_as_predicted += f.rejected_as_predicted;
        total.duplicates += f.duplicates;
        total.crashes_replayed += f.crashes_replayed;
        total.expired += f.expired;
        total.invariants += f.invariants;
        total.journal_entries += f.journal_entries;
    }
    println!(
        "ledger model test: {seeds} seeds × {steps} steps: {} operations ({} rejected as the model predicted, \
         {} duplicate deliveries, {} crashed facts replayed, {} pending legs expired), {} journal entries, \
         {} invariants checked",
        total.operations,
        total.rejected_as_predicted,
        total.duplicates,
        total.crashes_replayed,
        total.expired,
        total.journal_entries,
        total.invariants
    );
    // The run must have exercised what it claims to.
    assert!(total.operations >= seeds * steps as u64 / 2);
    assert!(total.rejected_as_predicted > 0 && total.duplicates > 0 && total.crashes_replayed > 0);
    assert!(total.expired > 0);
}
