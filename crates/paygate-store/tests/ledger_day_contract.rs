//! The store's day view of a channel clearing account (reconciliation's ledger balance, issue
//! 9 §4), on SQLite always and on PostgreSQL when `PAYGATE_TEST_DATABASE_URL` is set: only the
//! channel's movements inside `[from, to)` count, summed per code and merchant, with the fee
//! leg and the refund-paid leg attributed to the merchant of their business reference.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use paygate_core::money::{Currency, Money};
use paygate_ledger::chart::TransferCode;
use paygate_ledger::recipes::{self, PaymentSuccess, Refund, RefundFunds};
use paygate_store::ledger_day::LedgerDayRow;
use paygate_store::{AttemptChange, AttemptState, OrderState, RefundChange, RefundState, Store};

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
    a_days_clearing_movements_are_summed_per_code_and_merchant,
    a_duplicate_payment_and_its_refund_count_for_the_orders_merchant,
);

const DAY_MS: i64 = 86_400_000;

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::CNY)
}

/// Posts a payment's legs at `at` ms; `p` = (transaction_id, mchid, channel, total, fee, frozen).
async fn pay(s: &dyn Store, p: (&str, &str, &str, i64, i64, bool), at: i64) {
    let (transaction_id, mchid, channel_id, total, fee, profit_sharing) = p;
    let posting = recipes::payment_success(&PaymentSuccess {
        transaction_id,
        mchid,
        channel_id,
        total: cny(total),
        fee: cny(fee),
        profit_sharing,
    })
    .unwrap();
    s.post_ledger(&posting, t(at)).await.unwrap();
}

fn refund<'a>(id: &'a str, mchid: &'a str, amount: i64, fee: i64) -> Refund<'a> {
    Refund {
        refund_id: id,
        mchid,
        channel_id: "ch1",
        amount: cny(amount),
        fee_refund: cny(fee),
        funds: RefundFunds::Pending,
        timeout_s: 0,
    }
}

fn row(code: TransferCode, mchid: &str, count: i64, amount_fen: i64) -> LedgerDayRow {
    LedgerDayRow {
        code: code.code(),
        mchid: mchid.into(),
        count,
        amount_fen,
    }
}

async fn a_days_clearing_movements_are_summed_per_code_and_merchant(db: Db) {
    let s = db.open().await;
    let s = &*s;
    // Inside the day on ch1: two payments of m1 (one at the very start), one frozen of m2
    // without fee; outside it: one just before, one exactly at the end; one on ch2.
    let tx = |n: u32| format!("42000000000000000000000001{n:02}");
    for (n, mchid, channel, total, fee, frozen, at) in [
        (1, "m1", "ch1", 1_000, 6, false, 0),
        (2, "m1", "ch1", 2_000, 12, false, 5),
        (3, "m2", "ch1", 500, 0, true, 6),
        (4, "m1", "ch1", 700, 4, false, -1),
        (5, "m1", "ch1", 800, 5, false, DAY_MS),
        (6, "m1", "ch2", 900, 5, false, 7),
    ] {
        pay(s, (&tx(n), mchid, channel, total, fee, frozen), at).await;
    }
    // A refund paid out (counts), one only reserved, one voided (neither leaves clearing).
    let paid = refund("50300000000000000000000000101", "m1", 300, 2);
    s.post_ledger(&recipes::refund_requested(&paid).unwrap(), t(10))
        .await
        .unwrap();
    s.post_ledger(&recipes::refund_succeeded(&paid).unwrap(), t(11))
        .await
        .unwrap();
    let open = refund("50300000000000000000000000102", "m1", 100, 0);
    s.post_ledger(&recipes::refund_requested(&open).unwrap(), t(12))
        .await
        .unwrap();
    let void = refund("50300000000000000000000000103", "m1", 50, 0);
    s.post_ledger(&recipes::refund_requested(&void).unwrap(), t(13))
        .await
        .unwrap();
    s.post_ledger(&recipes::refund_failed(&void).unwrap(), t(14))
        .await
        .unwrap();

    let got = s.ledger_clearing_day("ch1", t(0), t(DAY_MS)).await.unwrap();
    assert_eq!(
        got,
        vec![
            row(TransferCode::PaymentNet, "m1", 2, 994 + 1_988),
            row(TransferCode::PaymentFee, "m1", 2, 18),
            row(TransferCode::PaymentNetFrozen, "m2", 1, 500),
            row(TransferCode::RefundPaid, "m1", 1, 300),
        ]
    );
    // The next day holds only the payment booked at its first millisecond.
    let next = s
        .ledger_clearing_day("ch1", t(DAY_MS), t(2 * DAY_MS))
        .await
        .unwrap();
    assert_eq!(
        next,
        vec![
            row(TransferCode::PaymentNet, "m1", 1, 795),
            row(TransferCode::PaymentFee, "m1", 1, 5),
        ]
    );
    let other = s.ledger_clearing_day("ch2", t(0), t(DAY_MS)).await.unwrap();
    assert_eq!(other.iter().map(|r| r.amount_fen).sum::<i64>(), 900);
    assert!(
        s.ledger_clearing_day("nope", t(0), t(DAY_MS))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_duplicate_payment_and_its_refund_count_for_the_orders_merchant(db: Db) {
    let s = db.open().await;
    let s = &*s;
    // Order tx1 of 1900000109 (common::order), paid by attempt tx1-1, paid again by tx1-2 on ch1.
    let (o, a) = seed_order(s, "tx1").await;
    let mut paid = change("tx1", OrderState::Notpay, OrderState::Success);
    paid.attempt = Some(AttemptChange::to(
        &a.attempt_id,
        &[AttemptState::Created],
        AttemptState::Paid,
        t(5),
    ));
    assert!(s.apply_order_change(&paid).await.unwrap());
    let second = attempt("tx1-2", "tx1", 2);
    s.insert_attempt(&second).await.unwrap();
    let refund_id = "50300000000000000000000000201";
    let d = duplicate_payment(refund_id, "tx1", "tx1-2", "ch1", o.total_fen, 20);
    assert!(s.record_duplicate_payment(&d).await.unwrap());
    let success = RefundChange::to(refund_id, RefundState::Created, RefundState::Success, t(30));
    assert!(s.apply_refund_change(&success).await.unwrap());

    let got = s.ledger_clearing_day("ch1", t(0), t(DAY_MS)).await.unwrap();
    assert_eq!(
        got,
        vec![
            row(TransferCode::DuplicatePayment, &o.mchid, 1, o.total_fen),
            row(TransferCode::DuplicateRefunded, &o.mchid, 1, o.total_fen),
        ]
    );
}
