//! The store's ledger contract (issue 4 §2–3), one behaviour per function, on SQLite always and
//! on PostgreSQL when `PAYGATE_TEST_DATABASE_URL` is set: postings land in the transaction of
//! their business fact or not at all; refunds reserve, post and void inside the store; the
//! journal integrator sequences every transfer once and signs checkpoints that verify;
//! concurrent postings on the same accounts lose no update.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use paygate_core::money::{Currency, Money};
use paygate_ledger::chart::{self, AccountKind, PLATFORM_OWNER};
use paygate_ledger::{
    CheckpointVerifier, Journal, LedgerState, NoteSigner, PendingStatus, recipes, verify_inclusion,
    verify_log,
};
use paygate_store::ledger::LedgerTransferRow;
use paygate_store::*;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::run(super::Db::sqlite(), super::$name).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    match super::Db::postgres() {
                        Some(db) => super::run(db, super::$name).await,
                        None => super::skipped(stringify!($name)),
                    }
                }
            )*
        }
    };
}

contract!(
    a_payment_posts_with_its_order_change_and_only_once,
    a_refused_posting_fails_the_whole_order_change,
    refunds_reserve_then_post_or_void_inside_the_store,
    a_refund_takes_available_funds_when_pending_is_short_and_is_refused_when_both_are,
    the_integrator_sequences_every_transfer_once_under_signed_checkpoints,
    concurrent_postings_on_the_same_accounts_lose_no_update,
    concurrent_integrators_give_every_transfer_one_leaf,
);

const MCHID: &str = "1900000109";
const ORIGIN: &str = "paygate.test/ledger";

fn cny(fen: i64) -> Money {
    Money::cny_fen(fen)
}

fn balance(accounts: &[paygate_ledger::Account], kind: AccountKind, owner: &str) -> (i128, u64) {
    let id = chart::account_id(kind, owner, Currency::CNY);
    let a = accounts.iter().find(|a| a.id == id);
    a.map_or((0, 0), |a| {
        let posted = if kind == AccountKind::ChannelClearing {
            a.debit_balance_posted()
        } else {
            a.credit_balance_posted()
        };
        let pending = a.balances.debits_pending.max(a.balances.credits_pending);
        (posted, pending)
    })
}

async fn all_transfers(s: &dyn Store) -> Vec<LedgerTransferRow> {
    let mut rows = Vec::new();
    let mut from = 0;
    loop {
        let page = s.journal_entries(from, 500).await.unwrap();
        if page.is_empty() {
            break;
        }
        from = page.last().unwrap().leaf_index.unwrap() + 1;
        rows.extend(page);
    }
    let mut after = 0;
    loop {
        let page = s.unsequenced_transfers(after, 500).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().seq;
        rows.extend(page);
    }
    rows
}

/// Replays every stored transfer and compares with the stored accounts: Σ debits = Σ credits
/// and every balance equal to the sum of its transfers.
async fn assert_ledger_consistent(s: &dyn Store) -> usize {
    let accounts = s.ledger_accounts(None).await.unwrap();
    let rows = all_transfers(s).await;
    let records: Vec<_> = rows.iter().map(|r| r.record.clone()).collect();
    let replayed = LedgerState::replay(&accounts, &records).unwrap();
    replayed.check_invariants().unwrap();
    for a in &accounts {
        assert_eq!(
            replayed.account(a.id).unwrap().balances,
            a.balances,
            "account {} ({})",
            a.id,
            a.user_data
        );
    }
    for r in rows
        .iter()
        .filter(|r| r.record.transfer.kind == paygate_ledger::TransferKind::Pending)
    {
        assert_eq!(
            r.pending_status,
            replayed.pending_status(r.record.transfer.id),
            "pending status of {}",
            r.record.transfer.id
        );
    }
    records.len()
}

fn payment(tx: &str, total: i64, fee: i64, profit_sharing: bool) -> paygate_ledger::Posting {
    recipes::payment_success(&recipes::PaymentSuccess {
        transaction_id: tx,
        mchid: MCHID,
        channel_id: "wx-main",
        total: cny(total),
        fee: cny(fee),
        profit_sharing,
    })
    .unwrap()
}

/// A paid order `tx` of `total` fen with `fee` fen of fee, its payment in the ledger.
async fn paid_in_ledger(s: &dyn Store, tx: &str, total: i64, fee: i64) {
    let o = OrderRecord {
        total_fen: total,
        pricing: OrderPricing {
            fee_rate_ppm: 6000,
            fee_fen: fee,
            channel_cost_ppm: 2000,
            channel_cost_fen: 0,
        },
        ..order(tx, &format!("out-{tx}"))
    };
    let a = attempt(&format!("{tx}-1"), tx, 1);
    assert_eq!(s.create_order(&o, &a).await.unwrap(), CreateOrder::Created);
    let mut c = change(tx, OrderState::Notpay, OrderState::Success);
    c.success_time = Some(t(5));
    c.attempt = Some(AttemptChange::to(
        &a.attempt_id,
        &[AttemptState::Created],
        AttemptState::Paid,
        t(5),
    ));
    c.ledger = Some(payment(tx, total, fee, false));
    assert!(s.apply_order_change(&c).await.unwrap());
}

fn refund(id: &str, tx: &str, amount_fen: i64, total_fen: i64) -> RefundRecord {
    RefundRecord {
        refund_id: id.into(),
        mchid: MCHID.into(),
        out_refund_no: format!("out-{id}"),
        transaction_id: tx.into(),
        out_trade_no: format!("out-{tx}"),
        attempt_id: format!("{tx}-1"),
        channel_id: "wx-main".into(),
        state: RefundState::Created,
        amount_fen,
        total_fen,
        currency: "CNY".into(),
        reason: None,
        notify_url: "https://merchant.example/refund-notify".into(),
        fingerprint: format!("{tx}:{amount_fen}"),
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
    }
}

async fn a_payment_posts_with_its_order_change_and_only_once(db: Db) {
    let s = db.open().await;
    paid_in_ledger(&*s, "4200000000000000000000000001", 10_000, 60).await;
    let accounts = s.ledger_accounts(None).await.unwrap();
    assert_eq!(
        balance(&accounts, AccountKind::ChannelClearing, "wx-main").0,
        10_000
    );
    assert_eq!(
        balance(&accounts, AccountKind::MerchantPending, MCHID).0,
        9_940
    );
    assert_eq!(
        balance(&accounts, AccountKind::PlatformFeeIncome, PLATFORM_OWNER).0,
        60
    );
    let mine = s.ledger_accounts(Some(MCHID)).await.unwrap();
    assert_eq!(mine.len(), 1, "only the account the payment touched exists");
    let rows = s
        .ledger_transfers_by_reference("4200000000000000000000000001")
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.leaf_index.is_none()));
    // The transfers are stored (and so journaled) in the order the posting applied them.
    let posted: Vec<_> = payment("4200000000000000000000000001", 10_000, 60, false)
        .transfers
        .iter()
        .map(|t| t.id)
        .collect();
    let stored: Vec<_> = rows.iter().map(|r| r.record.transfer.id).collect();
    assert_eq!(stored, posted);
    // A replayed callback posts nothing twice, and the same id with other fields is refused.
    let again = s
        .post_ledger(
            &payment("4200000000000000000000000001", 10_000, 60, false),
            t(9),
        )
        .await
        .unwrap();
    assert!(again.delta.created.is_empty());
    let other = s
        .post_ledger(
            &payment("4200000000000000000000000001", 10_000, 70, false),
            t(9),
        )
        .await;
    assert!(
        matches!(&other, Err(StoreError::Ledger(e)) if e.code() == "exists_with_different_amount"),
        "{other:?}"
    );
    assert_eq!(
        s.ledger_accounts(None).await.unwrap(),
        accounts,
        "a refused posting changes nothing"
    );
    let order = s
        .get_order_by_transaction_id("4200000000000000000000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.pricing.fee_fen, 60);
    assert_eq!(order.pricing.fee_rate_ppm, 6000);
    assert!(!order.profit_sharing);
    assert_eq!(assert_ledger_consistent(&*s).await, 2);
}

async fn a_refused_posting_fails_the_whole_order_change(db: Db) {
    let s = db.open().await;
    let tx = "4200000000000000000000000002";
    seed_order(&*s, tx).await;
    // Settling money the merchant does not have: exceeds_credits on merchant pending.
    let mut c = change(tx, OrderState::Notpay, OrderState::Success);
    c.notification = Some(notification("n-2", tx, 10));
    c.ledger = Some(recipes::settle(MCHID, "1900000109/2026-01-01", cny(500)).unwrap());
    let refused = s.apply_order_change(&c).await;
    assert!(
        matches!(&refused, Err(StoreError::Ledger(e)) if e.code() == "exceeds_credits"),
        "{refused:?}"
    );
    let o = s.get_order_by_transaction_id(tx).await.unwrap().unwrap();
    assert_eq!(
        o.state,
        OrderState::Notpay,
        "the state change was rolled back"
    );
    assert!(s.get_notification("n-2").await.unwrap().is_none());
    assert!(s.ledger_accounts(None).await.unwrap().is_empty());
    assert!(all_transfers(&*s).await.is_empty());
}

async fn refunds_reserve_then_post_or_void_inside_the_store(db: Db) {
    let s = db.open().await;
    let tx = "4200000000000000000000000003";
    paid_in_ledger(&*s, tx, 10_000, 60).await;
    // 3000 of 10000: fee share floor(60 * 3000 / 10000) = 18.
    let r1 = refund("50300000000000000000000000001", tx, 3_000, 10_000);
    assert_eq!(s.create_refund(&r1).await.unwrap(), CreateRefund::Created);
    let accounts = s.ledger_accounts(None).await.unwrap();
    assert_eq!(
        balance(&accounts, AccountKind::MerchantPending, MCHID),
        (9_940, 2_982)
    );
    assert_eq!(
        balance(&accounts, AccountKind::PlatformFeeIncome, PLATFORM_OWNER),
        (60, 18)
    );
    let reserved = s
        .ledger_transfers_by_reference(&r1.refund_id)
        .await
        .unwrap();
    assert_eq!(reserved.len(), 2);
    assert!(
        reserved
            .iter()
            .all(|r| r.pending_status == Some(PendingStatus::Pending))
    );
    // SUCCESS posts it and pays the payer out of clearing.
    let mut ok = RefundChange::to(
        &r1.refund_id,
        RefundState::Created,
        RefundState::Success,
        t(30),
    );
    ok.success_time = Some(t(30));
    assert!(s.apply_refund_change(&ok).await.unwrap());
    let accounts = s.ledger_accounts(None).await.unwrap();
    assert_eq!(
        balance(&accounts, AccountKind::MerchantPending, MCHID),
        (6_958, 0)
    );
    assert_eq!(
        balance(&accounts, AccountKind::PlatformFeeIncome, PLATFORM_OWNER),
        (42, 0)
    );
    assert_eq!(
        balance(&accounts, AccountKind::ChannelClearing, "wx-main").0,
        7_000
    );
    assert_eq!(
        balance(&accounts, AccountKind::RefundsPayable, PLATFORM_OWNER),
        (0, 0)
    );
    // A second refund, CLOSED after ABNORMAL: the reservation holds through ABNORMAL, then
    // is voided.
    let r2 = refund("50300000000000000000000000002", tx, 2_000, 10_000);
    assert_eq!(s.create_refund(&r2).await.unwrap(), CreateRefund::Created);
    let abnormal = RefundChange::to(
        &r2.refund_id,
        RefundState::Created,
        RefundState::Abnormal,
        t(31),
    );
    assert!(s.apply_refund_change(&abnormal).await.unwrap());
    let accounts = s.ledger_accounts(None).await.unwrap();
    assert_eq!(
        balance(&accounts, AccountKind::MerchantPending, MCHID),
        (6_958, 1_988)
    );
    let closed = RefundChange::to(
        &r2.refund_id,
        RefundState::Abnormal,
        RefundState::Closed,
        t(32),
    );
    assert!(s.apply_refund_change(&closed).await.unwrap());
    let accounts = s.ledger_accounts(None).await.unwrap();
    assert_eq!(
        balance(&accounts, AccountKind::MerchantPending, MCHID),
        (6_958, 0)
    );
    assert_eq!(
        balance(&accounts, AccountKind::PlatformFeeIncome, PLATFORM_OWNER),
        (42, 0)
    );
    let voided = s
        .ledger_transfers_by_reference(&r2.refund_id)
        .await
        .unwrap();
    assert_eq!(voided.len(), 4, "2 reservations + 2 voids");
    assert!(
        voided
            .iter()
            .filter(|r| r.pending_status.is_some())
            .all(|r| r.pending_status == Some(PendingStatus::Voided))
    );
    assert_ledger_consistent(&*s).await;
}

async fn a_refund_takes_available_funds_when_pending_is_short_and_is_refused_when_both_are(db: Db) {
    let s = db.open().await;
    let tx = "4200000000000000000000000004";
    paid_in_ledger(&*s, tx, 10_000, 0).await;
    // Settle 9000 of the 10000: pending 1000, available 9000.
    s.post_ledger(
        &recipes::settle(MCHID, "1900000109/2026-01-01", cny(9_000)).unwrap(),
        t(6),
    )
    .await
    .unwrap();
    let r1 = refund("50300000000000000000000000011", tx, 5_000, 10_000);
    assert_eq!(s.create_refund(&r1).await.unwrap(), CreateRefund::Created);
    let accounts = s.ledger_accounts(None).await.unwrap();
    assert_eq!(
        balance(&accounts, AccountKind::MerchantPending, MCHID),
        (1_000, 0)
    );
    assert_eq!(
        balance(&accounts, AccountKind::MerchantAvailable, MCHID),
        (9_000, 5_000)
    );
    // Pay the rest out: available 4000 left, reserved 5000 → 0 headroom after payout of 4000.
    s.post_ledger(
        &recipes::payout_requested(MCHID, "p-1", cny(4_000)).unwrap(),
        t(7),
    )
    .await
    .unwrap();
    let r2 = refund("50300000000000000000000000012", tx, 2_000, 10_000);
    assert_eq!(
        s.create_refund(&r2).await.unwrap(),
        CreateRefund::BalanceShort
    );
    assert!(s.get_refund_by_id(&r2.refund_id).await.unwrap().is_none());
    assert_eq!(
        s.refunded_fen(tx).await.unwrap(),
        Some(5_000),
        "the order's reservation was rolled back with the refund"
    );
    // The first refund succeeding posts from where it was reserved.
    let ok = RefundChange::to(
        &r1.refund_id,
        RefundState::Created,
        RefundState::Success,
        t(30),
    );
    assert!(s.apply_refund_change(&ok).await.unwrap());
    let accounts = s.ledger_accounts(None).await.unwrap();
    assert_eq!(
        balance(&accounts, AccountKind::MerchantAvailable, MCHID),
        (0, 0)
    );
    assert_eq!(
        balance(&accounts, AccountKind::ChannelClearing, "wx-main").0,
        5_000
    );
    assert_ledger_consistent(&*s).await;
}

async fn the_integrator_sequences_every_transfer_once_under_signed_checkpoints(db: Db) {
    let s = db.open().await;
    let signer = Arc::new(NoteSigner::generate(ORIGIN).unwrap());
    let verifier = CheckpointVerifier::new(ORIGIN, signer.verifier());
    let nothing = s
        .integrate_journal(signer.clone(), ORIGIN, 100, t(1))
        .await
        .unwrap();
    assert_eq!(nothing.appended, 0);
    assert!(nothing.checkpoint.is_none());
    for i in 0..5 {
        paid_in_ledger(&*s, &format!("42000000000000000000000001{i:02}"), 1_000, 6).await;
    }
    // Small batches: three runs, each a checkpoint.
    let mut sizes = Vec::new();
    loop {
        let done = s
            .integrate_journal(signer.clone(), ORIGIN, 4, t(2))
            .await
            .unwrap();
        match done.checkpoint {
            Some(cp) => sizes.push(cp.size),
            None => break,
        }
    }
    assert_eq!(sizes, vec![4, 8, 10]);
    let checkpoints = s.ledger_checkpoints(10).await.unwrap();
    assert_eq!(
        checkpoints.iter().map(|c| c.size).collect::<Vec<_>>(),
        vec![10, 8, 4]
    );
    let entries: Vec<_> = s
        .journal_entries(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.journal_entry().unwrap())
        .collect();
    assert_eq!(entries.len(), 10);
    let report = verify_log(&entries, &checkpoints[0].note, &verifier).unwrap();
    assert_eq!(report.entries, 10);
    // An inclusion proof of one transfer against the older checkpoint.
    let journal = Journal::from_leaf_hashes(entries.iter().map(|e| e.leaf_hash));
    let cp = &checkpoints[1];
    let opened = verifier.open(&cp.note).unwrap();
    let proof = journal.inclusion_proof(5, cp.size).unwrap();
    verify_inclusion(&entries[5].leaf_hash, 5, cp.size, &proof, &opened.root).unwrap();
    let one = s
        .ledger_transfer(entries[5].record.transfer.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.leaf_index, Some(5));
    // More postings, then a run: the log only grows, consistent with the old checkpoint.
    paid_in_ledger(&*s, "4200000000000000000000000199", 1_000, 6).await;
    let grown = s
        .integrate_journal(signer.clone(), ORIGIN, 100, t(3))
        .await
        .unwrap();
    assert_eq!(grown.appended, 2);
    let newest = grown.checkpoint.unwrap();
    let all: Vec<_> = s
        .journal_entries(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.journal_entry().unwrap())
        .collect();
    let journal = Journal::from_leaf_hashes(all.iter().map(|e| e.leaf_hash));
    let consistency = journal.consistency_proof(10, 12).unwrap();
    paygate_ledger::verify_consistency(10, 12, &consistency, &checkpoints[0].root, &newest.root)
        .unwrap();
    assert!(s.unsequenced_transfers(0, 10).await.unwrap().is_empty());
    assert_ledger_consistent(&*s).await;
}

async fn concurrent_postings_on_the_same_accounts_lose_no_update(db: Db) {
    let s = db.open().await;
    const ORDERS: usize = 40;
    let mut tasks = Vec::new();
    for i in 0..ORDERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let tx = format!("4200000000000000000000002{i:03}");
            paid_in_ledger(&*s, &tx, 1_000, 6).await;
            // Two refunds per order racing with the other orders' payments.
            for (k, amount) in [(0, 300), (1, 200)] {
                let r = refund(
                    &format!("5030000000000000000000002{i:03}{k}"),
                    &tx,
                    amount,
                    1_000,
                );
                assert_eq!(s.create_refund(&r).await.unwrap(), CreateRefund::Created);
                let next = if k == 0 {
                    RefundState::Success
                } else {
                    RefundState::Closed
                };
                let c = RefundChange::to(&r.refund_id, RefundState::Created, next, t(40));
                assert!(s.apply_refund_change(&c).await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let accounts = s.ledger_accounts(None).await.unwrap();
    let n = ORDERS as i128;
    // Per order: 1000 paid, 300 refunded (fee share 1), 200 refunded then closed.
    assert_eq!(
        balance(&accounts, AccountKind::ChannelClearing, "wx-main"),
        (700 * n, 0)
    );
    assert_eq!(
        balance(&accounts, AccountKind::MerchantPending, MCHID),
        ((994 - 299) * n, 0)
    );
    assert_eq!(
        balance(&accounts, AccountKind::PlatformFeeIncome, PLATFORM_OWNER),
        (5 * n, 0)
    );
    let transfers = assert_ledger_consistent(&*s).await;
    // 2 payment legs + 2 reserves, 2 posts, 1 paid + 2 reserves, 2 voids per order.
    assert_eq!(transfers, 11 * ORDERS);
}

async fn concurrent_integrators_give_every_transfer_one_leaf(db: Db) {
    let s = db.open().await;
    let signer = Arc::new(NoteSigner::generate(ORIGIN).unwrap());
    let mut tasks = Vec::new();
    // Ten writers and four integrators (as on four nodes) at once.
    for w in 0..10 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                paid_in_ledger(&*s, &format!("42000000000000000000000030{w}{i}"), 1_000, 6).await;
            }
        }));
    }
    for _ in 0..4 {
        let (s, signer) = (s.clone(), signer.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.integrate_journal(signer.clone(), ORIGIN, 7, t(2))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    while s
        .integrate_journal(signer.clone(), ORIGIN, 100, t(3))
        .await
        .unwrap()
        .appended
        > 0
    {}
    let rows = s.journal_entries(0, 1_000).await.unwrap();
    assert_eq!(rows.len(), 100, "50 payments x 2 legs, each sequenced once");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(
            r.leaf_index,
            Some(i as u64),
            "leaf indices are 0..n without gaps"
        );
    }
    let checkpoints = s.ledger_checkpoints(1_000).await.unwrap();
    let verifier = CheckpointVerifier::new(ORIGIN, signer.verifier());
    let entries: Vec<_> = rows.iter().map(|r| r.journal_entry().unwrap()).collect();
    // Every checkpoint ever written is a prefix of the one log.
    for cp in &checkpoints {
        verify_log(&entries, &cp.note, &verifier).unwrap();
    }
    assert_eq!(checkpoints[0].size, 100);
    assert_ledger_consistent(&*s).await;
}

/// PostgreSQL writes a posting's balances, transfers and pending statuses in one statement and
/// checks how many rows each part wrote. A row that silently does not go in (a trigger that
/// swallows transfer rows stands for a vanished account or a lost row) fails the whole order
/// change: no state change, no notification, no account, no transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_posting_that_loses_a_row_commits_nothing() {
    let Some(db) = Db::postgres() else {
        return skipped("a_posting_that_loses_a_row_commits_nothing");
    };
    run(db, |db| async move {
        let Db::Postgres { base_url, schema } = &db else {
            unreachable!("a PostgreSQL database")
        };
        let s = db.open().await;
        let tx = "4200000000000000000000000003";
        seed_order(&*s, tx).await;
        let mut raw = pg_connection(base_url, schema).await;
        for sql in [
            "CREATE FUNCTION swallow_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
            "CREATE TRIGGER swallow BEFORE INSERT ON ledger_transfers FOR EACH ROW EXECUTE FUNCTION swallow_row()",
        ] {
            sqlx::query(sql).execute(&mut raw).await.unwrap();
        }
        let mut c = change(tx, OrderState::Notpay, OrderState::Success);
        c.notification = Some(notification("n-3", tx, 10));
        c.ledger = Some(payment(tx, 10_000, 60, false));
        let lost = s.apply_order_change(&c).await;
        assert!(
            matches!(&lost, Err(StoreError::Corrupt(m)) if m.contains("ledger delta wrote")),
            "{lost:?}"
        );
        let o = s.get_order_by_transaction_id(tx).await.unwrap().unwrap();
        assert_eq!(o.state, OrderState::Notpay);
        assert!(s.get_notification("n-3").await.unwrap().is_none());
        assert!(s.ledger_accounts(None).await.unwrap().is_empty());
        assert!(all_transfers(&*s).await.is_empty());
        // With the rows going in again, the same change applies whole.
        sqlx::query("DROP TRIGGER swallow ON ledger_transfers")
            .execute(&mut raw)
            .await
            .unwrap();
        assert!(s.apply_order_change(&c).await.unwrap());
        assert_eq!(assert_ledger_consistent(&*s).await, 2);
        s.close().await;
    })
    .await;
}
