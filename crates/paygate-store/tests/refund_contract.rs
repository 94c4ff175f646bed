//! The store's refund contract (issue 4 §1), one behaviour per function, on SQLite always and
//! on PostgreSQL when `PAYGATE_TEST_DATABASE_URL` is set. Kept apart from `contract.rs` so the
//! refund rules read in one place: an order never gives back more than was paid, whatever the
//! interleaving; a refund's state moves forward only, each move one transaction with its
//! order-side effect and its notification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
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
    create_refund_reserves_the_amount_and_round_trips_every_field,
    create_refund_is_idempotent_on_mchid_out_refund_no,
    create_refund_refuses_more_than_is_left_and_unpaid_orders,
    concurrent_refunds_of_one_order_never_exceed_what_was_paid,
    accepting_a_refund_moves_the_order_to_refund_with_the_notification,
    closing_a_refund_gives_its_amount_back,
    refund_changes_are_compare_and_set_and_final_states_never_move,
    a_failing_notification_rolls_the_whole_refund_change_back,
    concurrent_refund_changes_apply_exactly_once,
    refunds_to_poll_takes_unsettled_refunds_old_enough_never_polled_first,
    a_duplicate_payment_is_recorded_whole_and_once,
    a_duplicate_payments_refund_leaves_the_order_alone_and_pays_the_payer_back,
    a_duplicate_payment_that_cannot_be_recorded_whole_leaves_nothing,
    duplicate_and_merchant_refunds_keep_to_their_own_write_paths,
    concurrent_reports_of_one_duplicate_payment_record_it_once,
);

/// A paid order `tx` (total 100 fen, attempt `tx-1` PAID).
async fn paid_order(s: &dyn Store, tx: &str) -> OrderRecord {
    let (o, a) = seed_order(s, tx).await;
    let mut c = change(tx, OrderState::Notpay, OrderState::Success);
    c.success_time = Some(t(5));
    c.attempt = Some(AttemptChange::to(
        &a.attempt_id,
        &[AttemptState::Created],
        AttemptState::Paid,
        t(5),
    ));
    assert!(s.apply_order_change(&c).await.unwrap());
    s.get_order_by_transaction_id(&o.transaction_id)
        .await
        .unwrap()
        .unwrap()
}

fn refund(id: &str, tx: &str, out_refund_no: &str, amount_fen: i64) -> RefundRecord {
    RefundRecord {
        refund_id: id.into(),
        mchid: "1900000109".into(),
        out_refund_no: out_refund_no.into(),
        transaction_id: tx.into(),
        out_trade_no: format!("out-{tx}"),
        attempt_id: format!("{tx}-1"),
        channel_id: "wx-main".into(),
        state: RefundState::Created,
        amount_fen,
        total_fen: 100,
        currency: "CNY".into(),
        reason: Some("商品已售完".into()),
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

fn refund_notification(id: &str, tx: &str, event: &str) -> NotificationRecord {
    NotificationRecord {
        event_type: event.into(),
        url: "https://merchant.example/refund-notify".into(),
        ..notification(id, tx, 30)
    }
}

async fn create_refund_reserves_the_amount_and_round_trips_every_field(db: Db) {
    let s = db.open().await;
    let before = paid_order(&*s, "tx1").await;
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(0));
    assert_eq!(s.refunded_fen("nope").await.unwrap(), None);
    let r = refund("50000001", "tx1", "rf-1", 30);
    assert_eq!(s.create_refund(&r).await.unwrap(), CreateRefund::Created);
    assert_eq!(
        s.get_refund("1900000109", "rf-1").await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        s.get_refund_by_id("50000001").await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(s.get_refund("1900000110", "rf-1").await.unwrap(), None);
    assert_eq!(s.refunds_of("tx1").await.unwrap(), vec![r.clone()]);
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(30));
    // Reserving is a change of the order, not of its state.
    let after = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(after.state, OrderState::Success);
    assert_eq!(after.version, before.version + 1);

    let mut second = refund("50000002", "tx1", "rf-2", 70);
    second.reason = None;
    second.created_at = t(21);
    assert_eq!(
        s.create_refund(&second).await.unwrap(),
        CreateRefund::Created
    );
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(100));
    assert_eq!(s.refunds_of("tx1").await.unwrap(), vec![r, second]);
}

async fn create_refund_is_idempotent_on_mchid_out_refund_no(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    paid_order(&*s, "tx2").await;
    let r = refund("50000001", "tx1", "rf-1", 100);
    assert_eq!(s.create_refund(&r).await.unwrap(), CreateRefund::Created);
    // The same key again, even with another id, amount and order, and with nothing left on
    // tx1: the existing refund, and nothing written.
    let again = refund("50000002", "tx1", "rf-1", 100);
    assert_eq!(
        s.create_refund(&again).await.unwrap(),
        CreateRefund::Exists(Box::new(r.clone()))
    );
    let elsewhere = refund("50000003", "tx2", "rf-1", 10);
    assert_eq!(
        s.create_refund(&elsewhere).await.unwrap(),
        CreateRefund::Exists(Box::new(r.clone()))
    );
    assert_eq!(
        s.refunded_fen("tx2").await.unwrap(),
        Some(0),
        "tx2 untouched"
    );
    assert_eq!(s.get_refund_by_id("50000003").await.unwrap(), None);
    // The key is per merchant.
    let mut other_mch = refund("50000004", "tx2", "rf-1", 10);
    other_mch.mchid = "1900000110".into();
    assert_eq!(
        s.create_refund(&other_mch).await.unwrap(),
        CreateRefund::Created
    );
    // A clash on refund_id is a real conflict, and takes its reservation down with it.
    let clash = refund("50000001", "tx2", "rf-9", 10);
    assert!(matches!(
        s.create_refund(&clash).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.refunded_fen("tx2").await.unwrap(), Some(10));
}

async fn create_refund_refuses_more_than_is_left_and_unpaid_orders(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    assert_eq!(
        s.create_refund(&refund("50000001", "tx1", "rf-1", 60))
            .await
            .unwrap(),
        CreateRefund::Created
    );
    assert_eq!(
        s.create_refund(&refund("50000002", "tx1", "rf-2", 41))
            .await
            .unwrap(),
        CreateRefund::NotEnough { refundable_fen: 40 }
    );
    assert_eq!(s.get_refund("1900000109", "rf-2").await.unwrap(), None);
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(60));
    // An unpaid order, and one that is not there.
    seed_order(&*s, "tx2").await;
    assert_eq!(
        s.create_refund(&refund("50000003", "tx2", "rf-3", 1))
            .await
            .unwrap(),
        CreateRefund::OrderNotPaid
    );
    assert_eq!(
        s.create_refund(&refund("50000004", "tx9", "rf-4", 1))
            .await
            .unwrap(),
        CreateRefund::OrderNotPaid
    );
    assert_eq!(s.refunded_fen("tx2").await.unwrap(), Some(0));
}

async fn concurrent_refunds_of_one_order_never_exceed_what_was_paid(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    // 100 refunds of 1 to 60 fen on an order of 100 fen, all at once (also two nodes' worth:
    // the store alone must hold the line, there is no lock above it here).
    let tasks: Vec<_> = (0..100i64)
        .map(|i| {
            let s = Arc::clone(&s);
            let amount = 1 + (i * 37) % 60;
            tokio::spawn(async move {
                let r = refund(&format!("5000{i:04}"), "tx1", &format!("rf-{i}"), amount);
                (amount, s.create_refund(&r).await.unwrap())
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            (amount, CreateRefund::Created) => accepted += amount,
            (amount, CreateRefund::NotEnough { refundable_fen }) => {
                assert!(
                    refundable_fen < amount,
                    "refused {amount} with {refundable_fen} left"
                )
            }
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(accepted <= 100, "refunded {accepted} of 100");
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(accepted));
    let stored: i64 = s
        .refunds_of("tx1")
        .await
        .unwrap()
        .iter()
        .map(|r| r.amount_fen)
        .sum();
    assert_eq!(stored, accepted, "every reservation is one stored refund");
}

async fn accepting_a_refund_moves_the_order_to_refund_with_the_notification(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let r = refund("50000001", "tx1", "rf-1", 30);
    s.create_refund(&r).await.unwrap();
    let version = s
        .get_order_by_transaction_id("tx1")
        .await
        .unwrap()
        .unwrap()
        .version;
    let mut accepted = RefundChange::to(
        "50000001",
        RefundState::Created,
        RefundState::Processing,
        t(40),
    );
    accepted.channel_refund_id = Some("50300000001".into());
    accepted.user_received_account = Some("支付用户零钱".into());
    accepted.funds_account = Some("UNSETTLED".into());
    assert!(s.apply_refund_change(&accepted).await.unwrap());
    let order = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(order.state, OrderState::Refund);
    assert_eq!(order.version, version + 1);
    assert_eq!(order.updated_at, t(40));

    let mut success = RefundChange::to(
        "50000001",
        RefundState::Processing,
        RefundState::Success,
        t(50),
    );
    success.success_time = Some(t(49));
    let n = refund_notification("n-refund-1", "tx1", "REFUND.SUCCESS");
    success.notification = Some(n.clone());
    assert!(s.apply_refund_change(&success).await.unwrap());
    let got = s.get_refund_by_id("50000001").await.unwrap().unwrap();
    let expected = RefundRecord {
        state: RefundState::Success,
        channel_refund_id: Some("50300000001".into()),
        user_received_account: Some("支付用户零钱".into()),
        funds_account: Some("UNSETTLED".into()),
        success_time: Some(t(49)),
        updated_at: t(50),
        version: 2,
        kind: paygate_store::RefundKind::Merchant,
        ..r
    };
    assert_eq!(got, expected, "None fields keep what an earlier change set");
    assert_eq!(s.get_notification("n-refund-1").await.unwrap(), Some(n));
    let order = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(
        (order.state, order.version),
        (OrderState::Refund, version + 1),
        "already in refund: the order row is not touched again"
    );
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(30));
}

async fn closing_a_refund_gives_its_amount_back(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    s.create_refund(&refund("50000001", "tx1", "rf-1", 100))
        .await
        .unwrap();
    assert!(matches!(
        s.create_refund(&refund("50000002", "tx1", "rf-2", 1))
            .await
            .unwrap(),
        CreateRefund::NotEnough { refundable_fen: 0 }
    ));
    // Refused by the channel before it accepted anything: CLOSED with the refusal, the amount
    // back, the order still SUCCESS.
    let mut refused =
        RefundChange::to("50000001", RefundState::Created, RefundState::Closed, t(40));
    refused.error_code = Some("USER_ACCOUNT_ABNORMAL".into());
    refused.error_message = Some("退款请求失败".into());
    assert!(s.apply_refund_change(&refused).await.unwrap());
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(0));
    let order = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(order.state, OrderState::Success);
    let closed = s.get_refund_by_id("50000001").await.unwrap().unwrap();
    assert_eq!(closed.error_code.as_deref(), Some("USER_ACCOUNT_ABNORMAL"));
    // The amount is there again.
    assert_eq!(
        s.create_refund(&refund("50000002", "tx1", "rf-2", 100))
            .await
            .unwrap(),
        CreateRefund::Created
    );
    // Closed after acceptance: the order stays in REFUND, the amount comes back.
    assert!(
        s.apply_refund_change(&RefundChange::to(
            "50000002",
            RefundState::Created,
            RefundState::Processing,
            t(41),
        ))
        .await
        .unwrap()
    );
    let mut closed = RefundChange::to(
        "50000002",
        RefundState::Processing,
        RefundState::Closed,
        t(42),
    );
    closed.notification = Some(refund_notification("n-closed", "tx1", "REFUND.CLOSED"));
    assert!(s.apply_refund_change(&closed).await.unwrap());
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(0));
    let order = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(order.state, OrderState::Refund);
}

async fn refund_changes_are_compare_and_set_and_final_states_never_move(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    s.create_refund(&refund("50000001", "tx1", "rf-1", 30))
        .await
        .unwrap();
    // From a state the refund is not in: nothing written, not even the notification.
    let mut stale = RefundChange::to(
        "50000001",
        RefundState::Processing,
        RefundState::Success,
        t(40),
    );
    stale.notification = Some(refund_notification("n1", "tx1", "REFUND.SUCCESS"));
    assert!(!s.apply_refund_change(&stale).await.unwrap());
    assert_eq!(s.get_notification("n1").await.unwrap(), None);
    assert!(
        !s.apply_refund_change(&RefundChange::to(
            "50000009",
            RefundState::Created,
            RefundState::Processing,
            t(40),
        ))
        .await
        .unwrap(),
        "no such refund"
    );
    assert!(
        s.apply_refund_change(&RefundChange::to(
            "50000001",
            RefundState::Created,
            RefundState::Success,
            t(40),
        ))
        .await
        .unwrap()
    );
    // Out of a final state, or backwards: refused loudly, nothing written.
    for (from, to) in [
        (RefundState::Success, RefundState::Closed),
        (RefundState::Success, RefundState::Processing),
        (RefundState::Abnormal, RefundState::Processing),
        (RefundState::Processing, RefundState::Created),
    ] {
        let bad = RefundChange::to("50000001", from, to, t(50));
        assert!(
            s.apply_refund_change(&bad).await.is_err(),
            "{from:?} → {to:?}"
        );
    }
    let r = s.get_refund_by_id("50000001").await.unwrap().unwrap();
    assert_eq!((r.state, r.version), (RefundState::Success, 1));
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(30));
}

async fn a_failing_notification_rolls_the_whole_refund_change_back(db: Db) {
    let s = db.open().await;
    let n = notification("n-dup", "tx0", 0);
    seed_notification(&*s, &n).await;
    paid_order(&*s, "tx1").await;
    s.create_refund(&refund("50000001", "tx1", "rf-1", 100))
        .await
        .unwrap();
    s.apply_refund_change(&RefundChange::to(
        "50000001",
        RefundState::Created,
        RefundState::Processing,
        t(40),
    ))
    .await
    .unwrap();
    // The outbox row cannot be written (its id is taken): the close, the amount given back
    // and the order's side all roll back with it.
    let mut closed = RefundChange::to(
        "50000001",
        RefundState::Processing,
        RefundState::Closed,
        t(41),
    );
    closed.notification = Some(refund_notification("n-dup", "tx1", "REFUND.CLOSED"));
    assert!(s.apply_refund_change(&closed).await.is_err());
    let r = s.get_refund_by_id("50000001").await.unwrap().unwrap();
    assert_eq!(r.state, RefundState::Processing);
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(100));
    assert!(s.notifications_of("tx1").await.unwrap().is_empty());
}

async fn concurrent_refund_changes_apply_exactly_once(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    s.create_refund(&refund("50000001", "tx1", "rf-1", 40))
        .await
        .unwrap();
    s.apply_refund_change(&RefundChange::to(
        "50000001",
        RefundState::Created,
        RefundState::Processing,
        t(40),
    ))
    .await
    .unwrap();
    // A callback and a poller (and more) racing to close it: one wins, one amount back.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let mut c = RefundChange::to(
                    "50000001",
                    RefundState::Processing,
                    RefundState::Closed,
                    t(50),
                );
                c.notification = Some(refund_notification(
                    &format!("n-{i}"),
                    "tx1",
                    "REFUND.CLOSED",
                ));
                s.apply_refund_change(&c).await.unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(0));
    assert_eq!(s.notifications_of("tx1").await.unwrap().len(), 1);
}

async fn refunds_to_poll_takes_unsettled_refunds_old_enough_never_polled_first(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let at = |id: &str, ms: i64| {
        let mut r = refund(id, "tx1", &format!("rf-{id}"), 10);
        r.created_at = t(ms);
        r.updated_at = t(ms);
        r
    };
    for (id, ms) in [
        ("r-a", 100),
        ("r-b", 200),
        ("r-c", 300),
        ("r-d", 400),
        ("r-new", 5_000),
    ] {
        s.create_refund(&at(id, ms)).await.unwrap();
    }
    // r-c is PROCESSING, r-d SUCCESS (settled: never polled again).
    s.apply_refund_change(&RefundChange::to(
        "r-c",
        RefundState::Created,
        RefundState::Processing,
        t(310),
    ))
    .await
    .unwrap();
    s.apply_refund_change(&RefundChange::to(
        "r-d",
        RefundState::Created,
        RefundState::Success,
        t(410),
    ))
    .await
    .unwrap();
    assert!(s.mark_refund_polled("r-a", t(900)).await.unwrap());
    assert!(!s.mark_refund_polled("r-nope", t(900)).await.unwrap());
    let ids = |v: Vec<RefundRecord>| v.into_iter().map(|r| r.refund_id).collect::<Vec<_>>();
    // Before 1000: r-new is too young; r-a was polled at 900, after never-polled b and c.
    assert_eq!(
        ids(s.refunds_to_poll(t(1_000), 10).await.unwrap()),
        vec!["r-b", "r-c", "r-a"]
    );
    assert_eq!(
        ids(s.refunds_to_poll(t(850), 10).await.unwrap()),
        vec!["r-b", "r-c"],
        "polled since the bound"
    );
    assert_eq!(
        ids(s.refunds_to_poll(t(10_000), 2).await.unwrap()),
        vec!["r-b", "r-c"]
    );
    assert_eq!(
        s.get_refund_by_id("r-a")
            .await
            .unwrap()
            .unwrap()
            .last_polled_at,
        Some(t(900))
    );
}

// ---- duplicate payments (a second attempt paid at the channel) ----

/// A second attempt `tx-2` of paid order `tx`, open at the channel.
async fn second_attempt(s: &dyn Store, tx: &str) -> AttemptRecord {
    let a = attempt(&format!("{tx}-2"), tx, 2);
    s.insert_attempt(&a).await.unwrap();
    a
}

fn duplicate(refund_id: &str, tx: &str, attempt_id: &str) -> DuplicatePayment {
    duplicate_payment(refund_id, tx, attempt_id, "wx-main", 100, 40)
}

/// (debits_posted, credits_posted) of a ledger account.
async fn posted(
    s: &dyn Store,
    kind: paygate_ledger::chart::AccountKind,
    owner: &str,
) -> (u64, u64) {
    let id = paygate_ledger::chart::account_id(kind, owner, paygate_core::money::Currency::CNY);
    s.ledger_account(id).await.unwrap().map_or((0, 0), |a| {
        (a.balances.debits_posted, a.balances.credits_posted)
    })
}

async fn a_duplicate_payment_is_recorded_whole_and_once(db: Db) {
    use paygate_ledger::chart::{AccountKind, PLATFORM_OWNER, TransferCode};
    let s = db.open().await;
    let before = paid_order(&*s, "tx1").await;
    second_attempt(&*s, "tx1").await;
    let d = duplicate("50000009", "tx1", "tx1-2");
    assert!(s.record_duplicate_payment(&d).await.unwrap());

    let attempts = s.attempts("tx1").await.unwrap();
    assert_eq!(attempts[1].state, AttemptState::Paid);
    assert_eq!(
        attempts[1].channel_transaction_id.as_deref(),
        Some("4200tx1-2")
    );
    assert_eq!(
        s.get_refund_by_id("50000009").await.unwrap(),
        Some(d.refund.clone())
    );
    assert_eq!(s.refunds_of("tx1").await.unwrap(), vec![d.refund.clone()]);
    assert_eq!(s.repairs("tx1").await.unwrap(), vec![d.repair.clone()]);
    // Not the order's refund: nothing of the order moved.
    let after = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(after, before);
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(0));
    // The ledger: the channel holds it, the payer is owed it.
    let legs = s.ledger_transfers_by_reference("50000009").await.unwrap();
    assert_eq!(legs.len(), 1);
    assert_eq!(
        legs[0].record.transfer.code,
        TransferCode::DuplicatePayment.code()
    );
    assert_eq!(
        posted(&*s, AccountKind::ChannelClearing, "wx-main").await,
        (100, 0)
    );
    assert_eq!(
        posted(&*s, AccountKind::RefundsPayable, PLATFORM_OWNER).await,
        (0, 100)
    );

    // Again (a duplicate callback, a second node): the attempt moved, nothing is written.
    let mut again = duplicate("50000010", "tx1", "tx1-2");
    again.refund.out_refund_no = "duplicate:other".into();
    assert!(!s.record_duplicate_payment(&again).await.unwrap());
    assert_eq!(s.refunds_of("tx1").await.unwrap().len(), 1);
    assert_eq!(s.repairs("tx1").await.unwrap().len(), 1);
    assert!(
        s.ledger_transfers_by_reference("50000010")
            .await
            .unwrap()
            .is_empty()
    );

    // The merchant's own refunds still have the whole order to give back.
    assert_eq!(
        s.create_refund(&refund("50000011", "tx1", "rf-1", 100))
            .await
            .unwrap(),
        CreateRefund::Created
    );
}

async fn a_duplicate_payments_refund_leaves_the_order_alone_and_pays_the_payer_back(db: Db) {
    use paygate_ledger::chart::{AccountKind, PLATFORM_OWNER, TransferCode};
    let s = db.open().await;
    for tx in ["tx1", "tx2"] {
        paid_order(&*s, tx).await;
        second_attempt(&*s, tx).await;
    }
    assert!(
        s.record_duplicate_payment(&duplicate("50000001", "tx1", "tx1-2"))
            .await
            .unwrap()
    );
    assert!(
        s.record_duplicate_payment(&duplicate("50000002", "tx2", "tx2-2"))
            .await
            .unwrap()
    );
    let before = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();

    // Accepted by the channel: a merchant refund would move the order to REFUND; this one not.
    let mut accepted = RefundChange::to(
        "50000001",
        RefundState::Created,
        RefundState::Processing,
        t(41),
    );
    accepted.channel_refund_id = Some("50300000001".into());
    assert!(s.apply_refund_change(&accepted).await.unwrap());
    let done = RefundChange::to(
        "50000001",
        RefundState::Processing,
        RefundState::Success,
        t(42),
    );
    assert!(s.apply_refund_change(&done).await.unwrap());
    assert_eq!(
        s.get_order_by_transaction_id("tx1").await.unwrap().unwrap(),
        before
    );
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(0));
    assert!(s.notifications_of("tx1").await.unwrap().is_empty());
    let legs = s.ledger_transfers_by_reference("50000001").await.unwrap();
    let codes: Vec<u16> = legs.iter().map(|l| l.record.transfer.code).collect();
    assert_eq!(
        codes,
        vec![
            TransferCode::DuplicatePayment.code(),
            TransferCode::DuplicateRefunded.code()
        ]
    );

    // Refused by the channel: CLOSED, the order untouched, the money still owed to the payer.
    let refused = RefundChange::to("50000002", RefundState::Created, RefundState::Closed, t(43));
    assert!(s.apply_refund_change(&refused).await.unwrap());
    assert_eq!(s.refunded_fen("tx2").await.unwrap(), Some(0));
    assert_eq!(
        s.ledger_transfers_by_reference("50000002")
            .await
            .unwrap()
            .len(),
        1
    );
    // tx1's 100 came and went; tx2's 100 is still the payer's.
    assert_eq!(
        posted(&*s, AccountKind::ChannelClearing, "wx-main").await,
        (200, 100)
    );
    assert_eq!(
        posted(&*s, AccountKind::RefundsPayable, PLATFORM_OWNER).await,
        (100, 200)
    );
}

async fn a_duplicate_payment_that_cannot_be_recorded_whole_leaves_nothing(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    second_attempt(&*s, "tx1").await;
    s.insert_attempt(&attempt("tx1-3", "tx1", 3)).await.unwrap();
    assert!(
        s.record_duplicate_payment(&duplicate("50000001", "tx1", "tx1-2"))
            .await
            .unwrap()
    );
    // Its refund's key is taken: an error, and the attempt's move, the repair and the
    // ledger's posting are rolled back with it.
    let mut clash = duplicate("50000002", "tx1", "tx1-3");
    clash.refund.out_refund_no = duplicate_out_refund_no("tx1-2");
    clash.repair.id = "rp-clash".into();
    assert!(s.record_duplicate_payment(&clash).await.is_err());
    let attempts = s.attempts("tx1").await.unwrap();
    assert_eq!(attempts[2].state, AttemptState::Created);
    assert_eq!(s.repairs("tx1").await.unwrap().len(), 1);
    assert!(
        s.ledger_transfers_by_reference("50000002")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.get_refund_by_id("50000002").await.unwrap(), None);
    // The attempt is still there to record.
    let mut retry = duplicate("50000003", "tx1", "tx1-3");
    retry.repair.id = "rp-retry".into();
    assert!(s.record_duplicate_payment(&retry).await.unwrap());
}

async fn duplicate_and_merchant_refunds_keep_to_their_own_write_paths(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    second_attempt(&*s, "tx1").await;
    // create_refund makes merchant refunds only.
    let mut r = refund("50000001", "tx1", "rf-1", 30);
    r.kind = RefundKind::Duplicate;
    assert!(s.create_refund(&r).await.is_err());
    assert_eq!(s.refunded_fen("tx1").await.unwrap(), Some(0));
    // record_duplicate_payment takes a whole-attempt DUPLICATE refund, CREATED.
    let mut partial = duplicate("50000002", "tx1", "tx1-2");
    partial.refund.amount_fen = 50;
    let mut merchant_kind = duplicate("50000003", "tx1", "tx1-2");
    merchant_kind.refund.kind = RefundKind::Merchant;
    let mut other_attempt = duplicate("50000004", "tx1", "tx1-2");
    other_attempt.refund.attempt_id = "tx1-1".into();
    for bad in [partial, merchant_kind, other_attempt] {
        assert!(s.record_duplicate_payment(&bad).await.is_err());
    }
    assert_eq!(
        s.attempts("tx1").await.unwrap()[1].state,
        AttemptState::Created
    );
    assert!(s.refunds_of("tx1").await.unwrap().is_empty());
}

async fn concurrent_reports_of_one_duplicate_payment_record_it_once(db: Db) {
    use paygate_ledger::chart::{AccountKind, PLATFORM_OWNER};
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    second_attempt(&*s, "tx1").await;
    // A callback, a poller and a reconciliation repair on several nodes, each with a refund
    // id of its own: one records the payment, the others find the attempt PAID.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let mut d = duplicate(&format!("5000010{i:02}"), "tx1", "tx1-2");
                d.repair.id = format!("rp-race-{i}");
                s.record_duplicate_payment(&d).await.unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(s.refunds_of("tx1").await.unwrap().len(), 1);
    assert_eq!(s.repairs("tx1").await.unwrap().len(), 1);
    assert_eq!(
        posted(&*s, AccountKind::RefundsPayable, PLATFORM_OWNER).await,
        (0, 100)
    );
}
