//! The store's settlement contract (issue 4 §5), on SQLite always and on PostgreSQL when
//! `PAYGATE_TEST_DATABASE_URL` is set: a day settles once (row and `settle` posting together);
//! the amount is what the day earned net of what it refunded, whatever happened after the cut;
//! a held merchant's day is HELD and settles after the release; settlement runs racing
//! refunds on the same pending balance never over-settle and never fail on a stale amount.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use paygate_core::money::{Currency, Money};
use paygate_ledger::chart::{self, AccountKind};
use paygate_ledger::{Posting, recipes};
use paygate_store::settlement::{HELD, NOTHING, SETTLED, SettleDay, settlement_id};
use paygate_store::*;
use time::OffsetDateTime;

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
    a_day_settles_once_with_its_posting,
    the_amount_is_the_days_net_whatever_happens_after_the_cut,
    a_held_merchant_is_skipped_then_settled_after_release,
    concurrent_runs_and_refunds_never_over_settle,
);

const MCHID: &str = "1900000109";
const HOUR: i64 = 3_600_000;

/// Business day 2026-01-01 (Beijing) is [t(-8h), t(16h)); the next one follows.
fn day(offset_days: i64, at: OffsetDateTime) -> SettleDay {
    let from = t(-8 * HOUR + offset_days * 24 * HOUR);
    SettleDay {
        mchid: MCHID.into(),
        business_date: format!("2026-01-{:02}", 1 + offset_days),
        from,
        to: from + time::Duration::DAY,
        at,
    }
}

fn payment(tx: &str, total: i64, fee: i64) -> Posting {
    recipes::payment_success(&recipes::PaymentSuccess {
        transaction_id: tx,
        mchid: MCHID,
        channel_id: "wx-main",
        total: Money::cny_fen(total),
        fee: Money::cny_fen(fee),
        profit_sharing: false,
    })
    .unwrap()
}

fn refund(id: &str, amount: i64) -> recipes::Refund<'_> {
    recipes::Refund {
        refund_id: id,
        mchid: MCHID,
        channel_id: "wx-main",
        amount: Money::cny_fen(amount),
        fee_refund: Money::cny_fen(0),
        funds: recipes::RefundFunds::Pending,
        timeout_s: 0,
    }
}

/// (credits_posted − debits_posted, debits_pending) of the merchant's `kind` account.
async fn account(s: &dyn Store, kind: AccountKind) -> (i64, i64) {
    let id = chart::account_id(kind, MCHID, Currency::CNY);
    let a = s.ledger_account(id).await.unwrap();
    a.map_or((0, 0), |a| {
        let b = a.balances;
        (
            i64::try_from(b.credits_posted).unwrap() - i64::try_from(b.debits_posted).unwrap(),
            i64::try_from(b.debits_pending).unwrap(),
        )
    })
}

async fn a_day_settles_once_with_its_posting(db: Db) {
    let s = db.open().await;
    s.post_ledger(&payment("tx-1", 10_000, 60), t(HOUR))
        .await
        .unwrap();
    s.post_ledger(&payment("tx-2", 5_000, 30), t(2 * HOUR))
        .await
        .unwrap();
    let first = s.settle_day(&day(0, t(30 * HOUR))).await.unwrap();
    assert_eq!(first.status, SETTLED);
    assert_eq!(first.amount_fen, 9_940 + 4_970);
    assert_eq!((first.payments, first.refunds, first.fee_fen), (2, 0, 90));
    assert_eq!(first.settlement_id, settlement_id(MCHID, "2026-01-01"));
    // Running the day again (later, from another node) answers the same row, posts nothing.
    let again = s.settle_day(&day(0, t(31 * HOUR))).await.unwrap();
    assert_eq!(again, first);
    let transfers = s
        .ledger_transfers_by_reference(&first.settlement_id)
        .await
        .unwrap();
    assert_eq!(transfers.len(), 1);
    assert_eq!(
        Some(transfers[0].record.transfer.id.to_hex()),
        first.transfer_id
    );
    assert_eq!(account(&*s, AccountKind::MerchantPending).await, (0, 0));
    assert_eq!(
        account(&*s, AccountKind::MerchantAvailable).await,
        (14_910, 0)
    );
    // The next day earned nothing: a NOTHING row, no transfer.
    let next = s.settle_day(&day(1, t(54 * HOUR))).await.unwrap();
    assert_eq!((next.status.as_str(), next.amount_fen), (NOTHING, 0));
    assert!(next.transfer_id.is_none());
    let listed = s.settlements(Some(MCHID), None, 10).await.unwrap();
    assert_eq!(listed, vec![first.clone(), next]);
    assert_eq!(
        s.settlements(None, Some("2026-01-01"), 10).await.unwrap(),
        vec![first]
    );
    assert_eq!(s.settlement_merchants().await.unwrap(), vec![MCHID]);
}

async fn the_amount_is_the_days_net_whatever_happens_after_the_cut(db: Db) {
    let s = db.open().await;
    // Day 1: paid 10000, refunded 2000 (reserved in the day, posted the next day).
    s.post_ledger(&payment("tx-a", 10_000, 0), t(HOUR))
        .await
        .unwrap();
    s.post_ledger(
        &recipes::refund_requested(&refund("r-1", 2_000)).unwrap(),
        t(2 * HOUR),
    )
    .await
    .unwrap();
    s.post_ledger(
        &recipes::refund_succeeded(&refund("r-1", 2_000)).unwrap(),
        t(18 * HOUR),
    )
    .await
    .unwrap();
    // Day 2 (after the cut): paid 4000; refunds of 3000 (succeeded) and 1000 (voided).
    s.post_ledger(&payment("tx-b", 4_000, 0), t(20 * HOUR))
        .await
        .unwrap();
    s.post_ledger(
        &recipes::refund_requested(&refund("r-2", 3_000)).unwrap(),
        t(21 * HOUR),
    )
    .await
    .unwrap();
    s.post_ledger(
        &recipes::refund_succeeded(&refund("r-2", 3_000)).unwrap(),
        t(21 * HOUR + 1),
    )
    .await
    .unwrap();
    s.post_ledger(
        &recipes::refund_requested(&refund("r-3", 1_000)).unwrap(),
        t(22 * HOUR),
    )
    .await
    .unwrap();
    s.post_ledger(
        &recipes::refund_failed(&refund("r-3", 1_000)).unwrap(),
        t(23 * HOUR),
    )
    .await
    .unwrap();
    // Pending holds 14000 − 2000 − 3000 = 9000; day 1 earned 8000, day 2 4000 − 3000 = 1000.
    assert_eq!(account(&*s, AccountKind::MerchantPending).await, (9_000, 0));
    let d1 = s.settle_day(&day(0, t(40 * HOUR))).await.unwrap();
    assert_eq!((d1.status.as_str(), d1.amount_fen), (SETTLED, 8_000));
    assert_eq!((d1.payments, d1.refunds), (1, 1));
    let d2 = s.settle_day(&day(1, t(41 * HOUR))).await.unwrap();
    assert_eq!((d2.status.as_str(), d2.amount_fen), (SETTLED, 1_000));
    assert_eq!((d2.payments, d2.refunds), (1, 2));
    assert_eq!(account(&*s, AccountKind::MerchantPending).await, (0, 0));
    assert_eq!(
        account(&*s, AccountKind::MerchantAvailable).await,
        (9_000, 0)
    );
    // A later day refunding more than it earned leaves the earlier day capped at what is free.
    s.post_ledger(&payment("tx-c", 5_000, 0), t(44 * HOUR))
        .await
        .unwrap();
    s.post_ledger(
        &recipes::refund_requested(&refund("r-4", 4_500)).unwrap(),
        t(65 * HOUR),
    )
    .await
    .unwrap();
    let d3 = s.settle_day(&day(2, t(66 * HOUR))).await.unwrap();
    assert_eq!((d3.status.as_str(), d3.amount_fen), (SETTLED, 500));
    assert_eq!(
        account(&*s, AccountKind::MerchantPending).await,
        (4_500, 4_500)
    );
}

async fn a_held_merchant_is_skipped_then_settled_after_release(db: Db) {
    let s = db.open().await;
    s.post_ledger(&payment("tx-h", 10_000, 60), t(HOUR))
        .await
        .unwrap();
    assert!(
        s.hold_settlement(MCHID, "risk review", t(2 * HOUR))
            .await
            .unwrap()
    );
    assert!(
        !s.hold_settlement(MCHID, "again", t(3 * HOUR))
            .await
            .unwrap()
    );
    let holds = s.settlement_holds().await.unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].reason, "risk review");
    let held = s.settle_day(&day(0, t(30 * HOUR))).await.unwrap();
    assert_eq!((held.status.as_str(), held.amount_fen), (HELD, 0));
    assert_eq!(held.payments, 1);
    assert!(held.transfer_id.is_none());
    assert_eq!(account(&*s, AccountKind::MerchantPending).await, (9_940, 0));
    // Still held: running again changes nothing, and no released day is waiting.
    assert_eq!(
        s.settle_day(&day(0, t(31 * HOUR))).await.unwrap().status,
        HELD
    );
    assert!(s.released_held_settlements(10).await.unwrap().is_empty());
    assert!(s.release_settlement(MCHID).await.unwrap());
    assert!(!s.release_settlement(MCHID).await.unwrap());
    let waiting = s.released_held_settlements(10).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].business_date, "2026-01-01");
    let settled = s.settle_day(&day(0, t(50 * HOUR))).await.unwrap();
    assert_eq!(
        (settled.status.as_str(), settled.amount_fen),
        (SETTLED, 9_940)
    );
    assert_eq!(settled.created_at, held.created_at);
    assert_eq!(settled.updated_at, t(50 * HOUR));
    assert!(s.released_held_settlements(10).await.unwrap().is_empty());
    assert_eq!(
        account(&*s, AccountKind::MerchantAvailable).await,
        (9_940, 0)
    );
}

async fn concurrent_runs_and_refunds_never_over_settle(db: Db) {
    let s: Arc<dyn Store> = db.open().await;
    let now = OffsetDateTime::now_utc();
    let (mut settled_total, mut reserved_total) = (0, 0);
    // Five days, each paid 10000 then settled by 4 runs racing 20 refunds of 1000 from pending.
    for k in 0..5_i64 {
        s.post_ledger(
            &payment(&format!("tx-c{k}"), 10_000, 0),
            t(HOUR + k * 24 * HOUR),
        )
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..24 {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                if i % 6 == 0 {
                    // Several nodes settling the day at once.
                    let r = s.settle_day(&day(k, now)).await.unwrap();
                    (Some(r), 0)
                } else {
                    let id = format!("rc-{k}-{i}");
                    let posting = recipes::refund_requested(&refund(&id, 1_000)).unwrap();
                    match s.post_ledger(&posting, now).await {
                        Ok(_) => (None, 1_000),
                        Err(StoreError::Ledger(e)) if e.code() == "exceeds_credits" => (None, 0),
                        Err(e) => panic!("refund reserve failed: {e}"),
                    }
                }
            }));
        }
        let mut rows = Vec::new();
        let mut reserved = 0;
        for t in tasks {
            let (row, r) = t.await.unwrap();
            rows.extend(row);
            reserved += r;
        }
        // Every run answers the one row. The settlement took what was free when it ran, refunds
        // after it found nothing: together exactly what the day paid, never more.
        assert!(rows.windows(2).all(|w| w[0] == w[1]));
        let settled = rows[0].amount_fen;
        assert_eq!(
            settled + reserved,
            10_000,
            "day {k}: {settled} + {reserved}"
        );
        assert_eq!(
            s.ledger_transfers_by_reference(&rows[0].settlement_id)
                .await
                .unwrap()
                .len(),
            usize::from(settled > 0)
        );
        settled_total += settled;
        reserved_total += reserved;
        let (posted, pending) = account(&*s, AccountKind::MerchantPending).await;
        assert_eq!(posted, (k + 1) * 10_000 - settled_total);
        assert_eq!(pending, reserved_total);
        assert_eq!(posted - pending, 0);
        assert_eq!(
            account(&*s, AccountKind::MerchantAvailable).await,
            (settled_total, 0)
        );
    }
}
