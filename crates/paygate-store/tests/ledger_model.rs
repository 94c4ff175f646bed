//! A model test of the ledger in the store: seeded random interleavings of payments (through
//! the order change), refunds (reserved by the store, then SUCCESS or CLOSED), profit-sharing
//! splits, unfreezes and returns, settlements, duplicate deliveries of every kind, journal
//! integrations and "crashes" (the store dropped and reopened), checked after EVERY step
//! against a reference model of plain integer counters: every account's four counters,
//! Σ debits = Σ credits (pending and posted), and each operation's outcome (applied, refused
//! for want of money, or a no-op replay). At the end the journal is audited against its
//! signed checkpoint and the whole ledger replayed. The figures are printed for the record.
//!
//! SQLite always; PostgreSQL too with `PAYGATE_TEST_DATABASE_URL`. More seeds:
//! `PAYGATE_LEDGER_MODEL_SEEDS=20`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use paygate_core::money::{Currency, Money};
use paygate_ledger::chart::{self, AccountKind, PLATFORM_OWNER};
use paygate_ledger::{
    AccountId, Balances, CheckpointVerifier, LedgerState, NoteSigner, Posting, recipes, verify_log,
};
use paygate_store::*;

const MCHID: &str = "1900000109";
const CHANNEL: &str = "wx-main";
const ORIGIN: &str = "paygate.test/model";
const RECEIVERS: [&str; 3] = ["rcv-a", "rcv-b", "rcv-c"];

/// xorshift64*: a reproducible stream from a seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

fn id(kind: AccountKind, owner: &str) -> AccountId {
    chart::account_id(kind, owner, Currency::CNY)
}

#[derive(Clone)]
struct OrderM {
    tx: String,
    total: i64,
    fee: i64,
    refunded: i64,
    fee_refunded: i64,
    change: OrderChange,
}

#[derive(Clone)]
struct RefundM {
    record: RefundRecord,
    order: usize,
    merchant: i64,
    fee: i64,
    from: AccountKind,
    open: bool,
    /// paygate's refund of a duplicate payment (nothing reserved, the order untouched).
    duplicate: bool,
}

/// The reference: TigerBeetle's counters kept by hand.
#[derive(Default)]
struct Model {
    accounts: HashMap<AccountId, Balances>,
    orders: Vec<OrderM>,
    refunds: Vec<RefundM>,
    splits: Vec<(String, i64)>,
    transfers: usize,
}

impl Model {
    fn b(&mut self, a: AccountId) -> &mut Balances {
        self.accounts.entry(a).or_default()
    }
    fn post(&mut self, d: AccountId, c: AccountId, amount: i64) {
        if amount == 0 {
            return;
        }
        self.b(d).debits_posted += amount as u64;
        self.b(c).credits_posted += amount as u64;
        self.transfers += 1;
    }
    fn reserve(&mut self, d: AccountId, c: AccountId, amount: i64) {
        if amount == 0 {
            return;
        }
        self.b(d).debits_pending += amount as u64;
        self.b(c).credits_pending += amount as u64;
        self.transfers += 1;
    }
    fn resolve(&mut self, d: AccountId, c: AccountId, amount: i64, post: bool) {
        if amount == 0 {
            return;
        }
        self.b(d).debits_pending -= amount as u64;
        self.b(c).credits_pending -= amount as u64;
        if post {
            self.b(d).debits_posted += amount as u64;
            self.b(c).credits_posted += amount as u64;
        }
        self.transfers += 1;
    }
    /// What a debits-must-not-exceed-credits account can still be debited by.
    fn headroom(&self, a: AccountId) -> i64 {
        self.accounts.get(&a).map_or(0, |b| {
            b.credits_posted as i64 - b.debits_posted as i64 - b.debits_pending as i64
        })
    }
}

#[derive(Default)]
struct Figures {
    operations: u64,
    applied: u64,
    refused: u64,
    replays: u64,
    crashes: u64,
    integrations: u64,
    checks: u64,
}

async fn check(s: &dyn Store, m: &Model, f: &mut Figures, step: usize, what: &str) {
    let stored = s.ledger_accounts(None).await.unwrap();
    let mut sums = [0u128; 4];
    for a in &stored {
        let expected = m.accounts.get(&a.id).copied().unwrap_or_default();
        assert_eq!(
            a.balances,
            expected,
            "step {step} ({what}): account {} {:?}",
            a.user_data,
            AccountKind::from_code(a.code)
        );
        let b = &a.balances;
        sums[0] += u128::from(b.debits_posted);
        sums[1] += u128::from(b.credits_posted);
        sums[2] += u128::from(b.debits_pending);
        sums[3] += u128::from(b.credits_pending);
        f.checks += 4;
    }
    let touched = m
        .accounts
        .values()
        .filter(|b| **b != Balances::default())
        .count();
    assert!(
        stored.len() >= touched,
        "step {step}: an account is missing"
    );
    assert_eq!(
        sums[0], sums[1],
        "step {step}: Σ debits_posted = Σ credits_posted"
    );
    assert_eq!(
        sums[2], sums[3],
        "step {step}: Σ debits_pending = Σ credits_pending"
    );
    f.checks += 3;
}

fn payment(o: &OrderM, profit_sharing: bool) -> Posting {
    recipes::payment_success(&recipes::PaymentSuccess {
        transaction_id: &o.tx,
        mchid: MCHID,
        channel_id: CHANNEL,
        total: Money::cny_fen(o.total),
        fee: Money::cny_fen(o.fee),
        profit_sharing,
    })
    .unwrap()
}

async fn pay(s: &dyn Store, m: &mut Model, rng: &mut Rng, n: usize) {
    let tx = format!("42000000000000000000{n:08}");
    let total = rng.range(1, 20_000);
    let fee = OrderPricing::fee_of(total, 6_000).unwrap();
    let profit_sharing = rng.below(3) == 0;
    let mut o = order(&tx, &format!("out-{tx}"));
    o.total_fen = total;
    o.pricing = OrderPricing::at(total, 6_000, 2_000).unwrap();
    o.profit_sharing = profit_sharing;
    let a = attempt(&format!("{tx}-1"), &tx, 1);
    assert_eq!(s.create_order(&o, &a).await.unwrap(), CreateOrder::Created);
    let mut c = change(&tx, OrderState::Notpay, OrderState::Success);
    c.attempt = Some(AttemptChange::to(
        &a.attempt_id,
        &[AttemptState::Created],
        AttemptState::Paid,
        t(5),
    ));
    let mut om = OrderM {
        tx: tx.clone(),
        total,
        fee,
        refunded: 0,
        fee_refunded: 0,
        change: c,
    };
    om.change.ledger = Some(payment(&om, profit_sharing));
    assert!(s.apply_order_change(&om.change).await.unwrap());
    let to = if profit_sharing {
        AccountKind::MerchantShareFrozen
    } else {
        AccountKind::MerchantPending
    };
    let clearing = id(AccountKind::ChannelClearing, CHANNEL);
    m.post(clearing, id(to, MCHID), total - fee);
    m.post(
        clearing,
        id(AccountKind::PlatformFeeIncome, PLATFORM_OWNER),
        fee,
    );
    m.orders.push(om);
}

async fn refund(s: &dyn Store, m: &mut Model, rng: &mut Rng, n: usize, f: &mut Figures) {
    let i = rng.below(m.orders.len() as u64) as usize;
    let o = m.orders[i].clone();
    let amount = rng.range(1, (o.total / 2).max(1));
    let mut r = RefundRecord {
        refund_id: format!("503000000000000000000{n:08}"),
        out_refund_no: format!("out-r{n}"),
        transaction_id: o.tx.clone(),
        out_trade_no: format!("out-{}", o.tx),
        attempt_id: format!("{}-1", o.tx),
        channel_id: CHANNEL.into(),
        state: RefundState::Created,
        amount_fen: amount,
        total_fen: o.total,
        currency: "CNY".into(),
        reason: None,
        notify_url: "https://e.com/r".into(),
        fingerprint: format!("{}:{amount}", o.tx),
        request_json: "{}".into(),
        channel_refund_id: None,
        user_received_account: None,
        funds_account: None,
        error_code: None,
        error_message: None,
        created_at: t(20),
        updated_at: t(20),
        success_time: None,
        last_polled_at: None,
        version: 0,
        kind: paygate_store::RefundKind::Merchant,
        mchid: MCHID.into(),
    };
    let got = s.create_refund(&r).await.unwrap();
    if o.refunded + amount > o.total {
        assert!(matches!(got, CreateRefund::NotEnough { .. }), "{got:?}");
        f.refused += 1;
        return;
    }
    let fee = ledger::refund_fee_share(o.fee, o.total, o.refunded + amount, o.fee_refunded, amount);
    let merchant = amount - fee;
    let fee_income = id(AccountKind::PlatformFeeIncome, PLATFORM_OWNER);
    let fee_ok = fee == 0 || m.headroom(fee_income) >= fee;
    let fits = |k| merchant == 0 || m.headroom(id(k, MCHID)) >= merchant;
    let from = if fee_ok && fits(AccountKind::MerchantPending) {
        AccountKind::MerchantPending
    } else if fee_ok && fits(AccountKind::MerchantAvailable) {
        AccountKind::MerchantAvailable
    } else {
        assert_eq!(
            got,
            CreateRefund::BalanceShort,
            "refund {amount} of {}",
            o.tx
        );
        f.refused += 1;
        return;
    };
    assert_eq!(got, CreateRefund::Created, "refund {amount} of {}", o.tx);
    let payable = id(AccountKind::RefundsPayable, PLATFORM_OWNER);
    m.reserve(id(from, MCHID), payable, merchant);
    m.reserve(fee_income, payable, fee);
    m.orders[i].refunded += amount;
    m.orders[i].fee_refunded += fee;
    r.state = RefundState::Created;
    m.refunds.push(RefundM {
        record: r,
        order: i,
        merchant,
        fee,
        from,
        open: true,
        duplicate: false,
    });
    f.applied += 1;
}

/// A second attempt of a paid order paid at the channel: recorded with its DUPLICATE refund
/// (clearing → refunds payable), once; a replay writes nothing.
async fn second_payment(s: &dyn Store, m: &mut Model, rng: &mut Rng, n: usize, f: &mut Figures) {
    let i = rng.below(m.orders.len() as u64) as usize;
    let o = m.orders[i].clone();
    let attempt_id = format!("{}-d{n}", o.tx);
    let mut a = attempt(&attempt_id, &o.tx, 100 + n as i32);
    a.created_at = t(15);
    s.insert_attempt(&a).await.unwrap();
    let d = duplicate_payment(
        &format!("503000000000000000000{n:08}"),
        &o.tx,
        &attempt_id,
        CHANNEL,
        o.total,
        16,
    );
    let record = d.refund.clone();
    assert!(s.record_duplicate_payment(&d).await.unwrap());
    assert!(!s.record_duplicate_payment(&d).await.unwrap());
    f.replays += 1;
    m.post(
        id(AccountKind::ChannelClearing, CHANNEL),
        id(AccountKind::RefundsPayable, PLATFORM_OWNER),
        o.total,
    );
    m.refunds.push(RefundM {
        record,
        order: i,
        merchant: 0,
        fee: 0,
        from: AccountKind::RefundsPayable,
        open: true,
        duplicate: true,
    });
    f.applied += 1;
}

async fn resolve(s: &dyn Store, m: &mut Model, rng: &mut Rng, f: &mut Figures) {
    let open: Vec<usize> = (0..m.refunds.len())
        .filter(|i| m.refunds[*i].open)
        .collect();
    if open.is_empty() {
        return;
    }
    let k = open[rng.below(open.len() as u64) as usize];
    let success = rng.below(3) != 0;
    let next = if success {
        RefundState::Success
    } else {
        RefundState::Closed
    };
    let r = m.refunds[k].clone();
    let c = RefundChange::to(&r.record.refund_id, RefundState::Created, next, t(30));
    assert!(s.apply_refund_change(&c).await.unwrap());
    // A duplicate delivery of the same outcome changes nothing.
    assert!(!s.apply_refund_change(&c).await.unwrap());
    f.replays += 1;
    let payable = id(AccountKind::RefundsPayable, PLATFORM_OWNER);
    let fee_income = id(AccountKind::PlatformFeeIncome, PLATFORM_OWNER);
    if r.duplicate {
        // Paid back to the payer on SUCCESS; still owed to them on CLOSED.
        if success {
            m.post(
                payable,
                id(AccountKind::ChannelClearing, CHANNEL),
                r.record.amount_fen,
            );
        }
        m.refunds[k].open = false;
        f.applied += 1;
        return;
    }
    m.resolve(id(r.from, MCHID), payable, r.merchant, success);
    m.resolve(fee_income, payable, r.fee, success);
    if success {
        m.post(
            payable,
            id(AccountKind::ChannelClearing, CHANNEL),
            r.record.amount_fen,
        );
    } else {
        let o = &mut m.orders[r.order];
        o.refunded -= r.record.amount_fen;
        o.fee_refunded -= r.fee;
    }
    m.refunds[k].open = false;
    f.applied += 1;
}

/// A posting standing alone (split, unfreeze, return, settlement): applied if the money is
/// there, else refused whole; replayed, it is a no-op.
async fn standalone(
    s: &dyn Store,
    m: &mut Model,
    f: &mut Figures,
    posting: Posting,
    debit: AccountId,
    credit: AccountId,
    amount: i64,
) {
    let fits = m.headroom(debit) >= amount;
    match s.post_ledger(&posting, t(40)).await {
        Ok(applied) => {
            assert!(fits, "applied without the money");
            assert_eq!(applied.delta.created.len(), 1);
            m.post(debit, credit, amount);
            f.applied += 1;
            let again = s.post_ledger(&posting, t(41)).await.unwrap();
            assert!(again.delta.created.is_empty());
            f.replays += 1;
        }
        Err(StoreError::Ledger(e)) => {
            assert!(!fits, "refused with the money there: {e}");
            assert_eq!(e.code(), "exceeds_credits");
            f.refused += 1;
        }
        Err(e) => panic!("{e}"),
    }
}

async fn run_model(db: Db, seed: u64, steps: usize) -> Figures {
    let mut s = db.open().await;
    let signer = Arc::new(NoteSigner::generate(ORIGIN).unwrap());
    let mut m = Model::default();
    let mut f = Figures::default();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for step in 0..steps {
        f.operations += 1;
        let roll = if m.orders.is_empty() {
            0
        } else {
            rng.below(100)
        };
        let what = match roll {
            0..=24 => {
                pay(s.as_ref(), &mut m, &mut rng, step).await;
                f.applied += 1;
                "pay"
            }
            25..=27 => {
                // A duplicate callback: the order CAS refuses, the posting replays as Exists.
                let o = m.orders[rng.below(m.orders.len() as u64) as usize].clone();
                assert!(!s.apply_order_change(&o.change).await.unwrap());
                let again = s
                    .post_ledger(o.change.ledger.as_ref().unwrap(), t(9))
                    .await
                    .unwrap();
                assert!(again.delta.created.is_empty());
                f.replays += 2;
                "duplicate callback"
            }
            28..=29 => {
                second_payment(s.as_ref(), &mut m, &mut rng, step, &mut f).await;
                "duplicate payment"
            }
            30..=49 => {
                refund(s.as_ref(), &mut m, &mut rng, step, &mut f).await;
                "refund"
            }
            50..=64 => {
                resolve(s.as_ref(), &mut m, &mut rng, &mut f).await;
                "refund outcome"
            }
            65..=72 => {
                let frozen = id(AccountKind::MerchantShareFrozen, MCHID);
                let receiver = RECEIVERS[rng.below(3) as usize];
                let amount = rng.range(1, (m.headroom(frozen) + m.headroom(frozen) / 4).max(1));
                let no = format!("so-{step}");
                let p = recipes::share_split(&recipes::ShareSplit {
                    mchid: MCHID,
                    out_order_no: &no,
                    receivers: &[(receiver, Money::cny_fen(amount))],
                })
                .unwrap();
                let to = id(AccountKind::ShareReceiver, receiver);
                let before = f.applied;
                standalone(s.as_ref(), &mut m, &mut f, p, frozen, to, amount).await;
                if f.applied > before {
                    m.splits.push((receiver.to_string(), amount));
                }
                "split"
            }
            73..=77 => {
                let frozen = id(AccountKind::MerchantShareFrozen, MCHID);
                let amount = rng.range(1, m.headroom(frozen).max(1) + 10);
                let p =
                    recipes::share_unfreeze(MCHID, &format!("uf-{step}"), Money::cny_fen(amount))
                        .unwrap();
                let pending = id(AccountKind::MerchantPending, MCHID);
                standalone(s.as_ref(), &mut m, &mut f, p, frozen, pending, amount).await;
                "unfreeze"
            }
            78..=82 => {
                let receiver = RECEIVERS[rng.below(3) as usize];
                let from = id(AccountKind::ShareReceiver, receiver);
                let amount = rng.range(1, m.headroom(from).max(1) + 5);
                let p = recipes::share_return(
                    MCHID,
                    &format!("rt-{step}"),
                    receiver,
                    Money::cny_fen(amount),
                )
                .unwrap();
                let pending = id(AccountKind::MerchantPending, MCHID);
                standalone(s.as_ref(), &mut m, &mut f, p, from, pending, amount).await;
                "return"
            }
            83..=89 => {
                let pending = id(AccountKind::MerchantPending, MCHID);
                let amount = rng.range(1, (m.headroom(pending) + 50).max(1));
                let p = recipes::settle(MCHID, &format!("{MCHID}/d{step}"), Money::cny_fen(amount))
                    .unwrap();
                let available = id(AccountKind::MerchantAvailable, MCHID);
                standalone(s.as_ref(), &mut m, &mut f, p, pending, available, amount).await;
                "settle"
            }
            90..=94 => {
                let done = s
                    .integrate_journal(signer.clone(), ORIGIN, 1 + rng.below(64) as u32, t(50))
                    .await
                    .unwrap();
                f.integrations += u64::from(done.appended > 0);
                "integrate"
            }
            _ => {
                // A crash: the process goes away between two facts; every committed fact
                // must be there after the reopen, and nothing else.
                s.close().await;
                drop(s);
                s = db.open().await;
                f.crashes += 1;
                "crash"
            }
        };
        check(s.as_ref(), &m, &mut f, step, what).await;
    }
    // The end: everything sequenced, audited against the signed checkpoint, replayed.
    while s
        .integrate_journal(signer.clone(), ORIGIN, 4096, t(60))
        .await
        .unwrap()
        .appended
        > 0
    {}
    let checkpoint = s.ledger_checkpoints(1).await.unwrap().remove(0);
    let rows = s.journal_entries(0, 10_000).await.unwrap();
    assert_eq!(rows.len(), m.transfers, "every transfer journaled once");
    let entries: Vec<_> = rows.iter().map(|r| r.journal_entry().unwrap()).collect();
    let verifier = CheckpointVerifier::new(ORIGIN, signer.verifier());
    verify_log(&entries, &checkpoint.note, &verifier).unwrap();
    let accounts = s.ledger_accounts(None).await.unwrap();
    let records: Vec<_> = rows.iter().map(|r| r.record.clone()).collect();
    let replayed = LedgerState::replay(&accounts, &records).unwrap();
    let report = replayed.check_invariants().unwrap();
    f.checks += report.checks;
    for a in &accounts {
        assert_eq!(replayed.account(a.id).unwrap().balances, a.balances);
        f.checks += 1;
    }
    s.close().await;
    f
}

async fn model_on(db_for: impl Fn() -> Db, seeds: u64, steps: usize, backend: &str) {
    let mut total = Figures::default();
    for seed in 1..=seeds {
        let db = db_for();
        let _cleanup = Cleanup(db.clone());
        let f = run_model(db, seed, steps).await;
        total.operations += f.operations;
        total.applied += f.applied;
        total.refused += f.refused;
        total.replays += f.replays;
        total.crashes += f.crashes;
        total.integrations += f.integrations;
        total.checks += f.checks;
    }
    println!(
        "ledger model on {backend}: {seeds} seeds x {steps} steps = {} operations ({} applied, {} refused for want of money, {} duplicate deliveries, {} crashes/reopens, {} journal integrations); {} invariants checked",
        total.operations,
        total.applied,
        total.refused,
        total.replays,
        total.crashes,
        total.integrations,
        total.checks
    );
}

fn seeds(default: u64) -> u64 {
    std::env::var("PAYGATE_LEDGER_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_matches_the_model_through_random_interleavings_and_crashes_on_sqlite() {
    model_on(Db::sqlite, seeds(6), 250, "SQLite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_matches_the_model_through_random_interleavings_and_crashes_on_postgres() {
    if Db::postgres().is_none() {
        skipped("ledger model");
        return;
    }
    model_on(|| Db::postgres().unwrap(), seeds(2), 250, "PostgreSQL").await;
}
