//! The store's profit-sharing contract (issue 4 §4), one behaviour per function, on SQLite
//! always and on PostgreSQL when `PAYGATE_TEST_DATABASE_URL` is set: splits of all rounds plus
//! refunds never exceed what was paid less the fee, nor the merchant's ratio, whatever the
//! interleaving; an unfreeze ends the splitting; returns never exceed a receiver's line; share
//! orders and returns move forward only, each move one transaction with its order-side effect
//! and its notifications.

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
    create_share_reserves_the_amount_and_round_trips_every_field,
    create_share_is_idempotent_on_mchid_out_order_no,
    splits_are_bounded_by_fee_refunds_ratio_and_payment,
    concurrent_splits_of_one_order_never_exceed_the_limits,
    share_changes_are_compare_and_set_and_give_closed_lines_back,
    a_refused_share_gives_everything_back_and_refreezes,
    unfreeze_is_a_compare_and_set_on_what_is_left,
    returns_are_bounded_by_the_receivers_line_and_success_releases,
    receivers_and_ratio_configuration,
    polls_take_unsettled_shares_and_returns,
    a_share_change_and_its_ledger_posting_land_together_or_not_at_all,
);

const MCHID: &str = "1900000109";
const LIMITS: ShareLimits = ShareLimits {
    fee_fen: 0,
    max_ratio_bp: 3000,
};

/// A paid order `tx` (total 100 fen, attempt `tx-1` PAID).
async fn paid_order(s: &dyn Store, tx: &str) {
    let (_, a) = seed_order(s, tx).await;
    let mut c = change(tx, OrderState::Notpay, OrderState::Success);
    c.success_time = Some(t(5));
    c.attempt = Some(AttemptChange::to(
        &a.attempt_id,
        &[AttemptState::Created],
        AttemptState::Paid,
        t(5),
    ));
    assert!(s.apply_order_change(&c).await.unwrap());
}

fn line(account: &str, amount_fen: i64) -> ShareLine {
    ShareLine {
        r#type: "MERCHANT_ID".into(),
        account: account.into(),
        name: Some("c2VhbGVk".into()),
        amount_fen,
        description: "分给商户".into(),
        result: "PENDING".into(),
        fail_reason: None,
        detail_id: format!("3601{account}"),
        create_time_ms: 20,
        finish_time_ms: None,
        sent: true,
    }
}

fn split(id: &str, tx: &str, out_order_no: &str, lines: Vec<ShareLine>) -> ShareOrderRecord {
    ShareOrderRecord {
        order_id: id.into(),
        mchid: MCHID.into(),
        out_order_no: out_order_no.into(),
        transaction_id: tx.into(),
        attempt_id: format!("{tx}-1"),
        channel_id: "wx-main".into(),
        kind: ShareKind::Split,
        state: ShareState::Created,
        amount_fen: lines.iter().filter(|l| l.sent).map(|l| l.amount_fen).sum(),
        unfreeze_unsplit: false,
        receivers: lines,
        description: None,
        fingerprint: format!("{tx}:{out_order_no}"),
        channel_order_id: None,
        error_code: None,
        error_message: None,
        created_at: t(20),
        updated_at: t(20),
        finished_at: None,
        last_polled_at: None,
        version: 0,
    }
}

fn unfreeze(id: &str, tx: &str, out_order_no: &str, amount_fen: i64) -> ShareOrderRecord {
    ShareOrderRecord {
        kind: ShareKind::Unfreeze,
        amount_fen,
        unfreeze_unsplit: true,
        receivers: vec![line(MCHID, amount_fen)],
        description: Some("解冻全部剩余资金".into()),
        ..split(id, tx, out_order_no, Vec::new())
    }
}

fn ret(
    id: &str,
    share: &ShareOrderRecord,
    out_return_no: &str,
    amount_fen: i64,
) -> ShareReturnRecord {
    ShareReturnRecord {
        return_id: id.into(),
        mchid: MCHID.into(),
        out_return_no: out_return_no.into(),
        share_order_id: share.order_id.clone(),
        out_order_no: share.out_order_no.clone(),
        transaction_id: share.transaction_id.clone(),
        channel_id: "wx-main".into(),
        return_mchid: "1900000201".into(),
        amount_fen,
        description: "用户退款".into(),
        state: ReturnState::Created,
        fail_reason: None,
        channel_return_id: None,
        error_code: None,
        error_message: None,
        fingerprint: format!("{out_return_no}:{amount_fen}"),
        created_at: t(40),
        updated_at: t(40),
        finished_at: None,
        last_polled_at: None,
        version: 0,
    }
}

async fn amounts(s: &dyn Store, tx: &str) -> ShareAmounts {
    s.share_amounts(tx).await.unwrap().unwrap()
}

/// Finishes `share` with every sent line SUCCESS.
async fn finish(s: &dyn Store, share: &ShareOrderRecord) -> ShareOrderRecord {
    let current = s.get_share_by_id(&share.order_id).await.unwrap().unwrap();
    let mut c = ShareChange::to(&current, ShareState::Finished, t(30));
    let mut lines = current.receivers.clone();
    for l in lines.iter_mut().filter(|l| l.sent) {
        l.result = "SUCCESS".into();
        l.finish_time_ms = Some(30);
    }
    c.receivers = Some(lines);
    c.finished_at = Some(t(30));
    assert!(s.apply_share_change(&c).await.unwrap());
    s.get_share_by_id(&share.order_id).await.unwrap().unwrap()
}

async fn create_share_reserves_the_amount_and_round_trips_every_field(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    assert_eq!(
        amounts(&*s, "tx1").await,
        ShareAmounts {
            total_fen: 100,
            refunded_fen: 0,
            shared_fen: 0,
            released_fen: 0,
            unfrozen: false
        }
    );
    assert_eq!(s.share_amounts("nope").await.unwrap(), None);
    let mut stranger = line("1900000999", 5);
    stranger.sent = false;
    stranger.result = "CLOSED".into();
    stranger.fail_reason = Some("NO_RELATION".into());
    let r = split(
        "30080001",
        "tx1",
        "P1",
        vec![line("1900000201", 10), stranger],
    );
    assert_eq!(r.amount_fen, 10, "a line closed locally reserves nothing");
    assert_eq!(
        s.create_share(&r, LIMITS).await.unwrap(),
        CreateShare::Created
    );
    assert_eq!(s.get_share(MCHID, "P1").await.unwrap(), Some(r.clone()));
    assert_eq!(
        s.get_share_by_id("30080001").await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(s.get_share("1900000110", "P1").await.unwrap(), None);
    assert_eq!(s.shares_of("tx1").await.unwrap(), vec![r.clone()]);
    let a = amounts(&*s, "tx1").await;
    assert_eq!((a.shared_fen, a.unsplit_fen(0)), (10, 90));
    // A refund can no longer take what receivers hold.
    let order = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(order.state, OrderState::Success);
}

async fn create_share_is_idempotent_on_mchid_out_order_no(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let r = split("30080001", "tx1", "P1", vec![line("1900000201", 10)]);
    assert_eq!(
        s.create_share(&r, LIMITS).await.unwrap(),
        CreateShare::Created
    );
    // Same key, another id and amount: the first order comes back, nothing reserved twice.
    let again = split("30080002", "tx1", "P1", vec![line("1900000201", 20)]);
    assert_eq!(
        s.create_share(&again, LIMITS).await.unwrap(),
        CreateShare::Exists(Box::new(r.clone()))
    );
    assert_eq!(amounts(&*s, "tx1").await.shared_fen, 10);
    // Even with nothing left to split, the key answers first.
    let full = split("30080003", "tx1", "P2", vec![line("1900000201", 20)]);
    assert_eq!(
        s.create_share(&full, LIMITS).await.unwrap(),
        CreateShare::Created
    );
    assert_eq!(
        s.create_share(&full, LIMITS).await.unwrap(),
        CreateShare::Exists(Box::new(full))
    );
}

async fn splits_are_bounded_by_fee_refunds_ratio_and_payment(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    // Over 30% of 100.
    let big = split("30080001", "tx1", "P1", vec![line("1900000201", 31)]);
    assert_eq!(
        s.create_share(&big, LIMITS).await.unwrap(),
        CreateShare::RatioExceeded { max_ratio_bp: 3000 }
    );
    // With a 100% ratio, the fee and refunds bound it.
    let all = ShareLimits {
        fee_fen: 6,
        max_ratio_bp: 10_000,
    };
    let refund = RefundRecord {
        refund_id: "50000001".into(),
        mchid: MCHID.into(),
        out_refund_no: "rf-1".into(),
        transaction_id: "tx1".into(),
        out_trade_no: "out-tx1".into(),
        attempt_id: "tx1-1".into(),
        channel_id: "wx-main".into(),
        state: RefundState::Created,
        amount_fen: 40,
        total_fen: 100,
        currency: "CNY".into(),
        reason: None,
        notify_url: "https://merchant.example/n".into(),
        fingerprint: "x".into(),
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
    };
    assert_eq!(
        s.create_refund(&refund).await.unwrap(),
        CreateRefund::Created
    );
    let over = split("30080002", "tx1", "P2", vec![line("1900000201", 55)]);
    assert_eq!(
        s.create_share(&over, all).await.unwrap(),
        CreateShare::NotEnough { unsplit_fen: 54 }
    );
    let exact = split("30080003", "tx1", "P3", vec![line("1900000201", 54)]);
    assert_eq!(
        s.create_share(&exact, all).await.unwrap(),
        CreateShare::Created
    );
    // Refunds can take only what receivers do not hold: 100 - 40 - 54 = 6.
    let more = RefundRecord {
        refund_id: "50000002".into(),
        out_refund_no: "rf-2".into(),
        amount_fen: 7,
        ..refund.clone()
    };
    assert_eq!(
        s.create_refund(&more).await.unwrap(),
        CreateRefund::NotEnough { refundable_fen: 6 }
    );
    // An order that is not paid, or not there.
    seed_order(&*s, "tx2").await;
    let unpaid = split("30080004", "tx2", "P4", vec![line("1900000201", 1)]);
    assert_eq!(
        s.create_share(&unpaid, LIMITS).await.unwrap(),
        CreateShare::OrderNotPaid
    );
    let ghost = split("30080005", "tx9", "P5", vec![line("1900000201", 1)]);
    assert!(matches!(
        s.create_share(&ghost, LIMITS).await,
        Ok(CreateShare::OrderNotPaid) | Err(_)
    ));
    assert_eq!(s.get_share(MCHID, "P5").await.unwrap(), None);
}

async fn concurrent_splits_of_one_order_never_exceed_the_limits(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    // 100 splits of 1 to 7 fen at once, some replaying one key: the store alone holds the
    // line (30% of 100 = 30 fen), no lock above it here.
    let tasks: Vec<_> = (0..100i64)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let no = format!("P{}", i % 80);
                let r = split(
                    &format!("3008{i:04}"),
                    "tx1",
                    &no,
                    vec![line("1900000201", 1 + i % 7)],
                );
                (r.amount_fen, s.create_share(&r, LIMITS).await.unwrap())
            })
        })
        .collect();
    let mut created_fen = 0;
    for task in tasks {
        let (amount_fen, outcome) = task.await.unwrap();
        match outcome {
            CreateShare::Created => created_fen += amount_fen,
            CreateShare::Exists(_)
            | CreateShare::NotEnough { .. }
            | CreateShare::RatioExceeded { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let stored: i64 = s
        .shares_of("tx1")
        .await
        .unwrap()
        .iter()
        .map(|r| r.amount_fen)
        .sum();
    assert_eq!(stored, created_fen);
    assert_eq!(amounts(&*s, "tx1").await.shared_fen, created_fen);
    assert!(created_fen <= 30, "{created_fen} fen split of a 30 fen cap");
    assert!(
        created_fen >= 24,
        "the cap was nearly reached: {created_fen}"
    );
}

async fn share_changes_are_compare_and_set_and_give_closed_lines_back(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let r = split(
        "30080001",
        "tx1",
        "P1",
        vec![line("1900000201", 10), line("1900000202", 15)],
    );
    s.create_share(&r, LIMITS).await.unwrap();
    let mut processing = ShareChange::to(&r, ShareState::Processing, t(25));
    processing.channel_order_id = Some("3008000000".into());
    assert!(s.apply_share_change(&processing).await.unwrap());
    // The same change again finds another version: nothing written.
    assert!(!s.apply_share_change(&processing).await.unwrap());
    let current = s.get_share_by_id("30080001").await.unwrap().unwrap();
    assert_eq!(current.version, 1);
    assert_eq!(current.channel_order_id.as_deref(), Some("3008000000"));
    // The channel closed the second line: its 15 fen come back, with two notifications.
    let mut lines = current.receivers.clone();
    lines[0].result = "SUCCESS".into();
    lines[1].result = "CLOSED".into();
    lines[1].fail_reason = Some("ACCOUNT_ABNORMAL".into());
    let mut done = ShareChange::to(&current, ShareState::Finished, t(30));
    done.receivers = Some(lines.clone());
    done.released_fen = 15;
    done.finished_at = Some(t(30));
    done.notifications = vec![
        NotificationRecord {
            event_type: "PROFITSHARING.SUCCESS".into(),
            ..notification("n1", "tx1", 30)
        },
        NotificationRecord {
            event_type: "PROFITSHARING.CLOSED".into(),
            ..notification("n2", "tx1", 30)
        },
    ];
    assert!(s.apply_share_change(&done).await.unwrap());
    let finished = s.get_share_by_id("30080001").await.unwrap().unwrap();
    assert_eq!(finished.state, ShareState::Finished);
    assert_eq!(finished.receivers, lines);
    assert_eq!(finished.finished_at, Some(t(30)));
    assert_eq!(amounts(&*s, "tx1").await.shared_fen, 10);
    let events: Vec<String> = s
        .notifications_of("tx1")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.event_type)
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    // FINISHED is final; an illegal move is refused loudly, a stale one quietly.
    let back = ShareChange::to(&finished, ShareState::Processing, t(40));
    assert!(s.apply_share_change(&back).await.is_err());
    // Giving back more than is held is refused, and rolls the change back whole.
    let r2 = split("30080002", "tx1", "P2", vec![line("1900000201", 5)]);
    s.create_share(&r2, LIMITS).await.unwrap();
    let mut greedy = ShareChange::to(&r2, ShareState::Finished, t(31));
    greedy.released_fen = 1000;
    greedy.notifications = vec![notification("n3", "tx1", 31)];
    assert!(s.apply_share_change(&greedy).await.is_err());
    let untouched = s.get_share_by_id("30080002").await.unwrap().unwrap();
    assert_eq!(untouched.state, ShareState::Created);
    assert_eq!(s.notifications_of("tx1").await.unwrap().len(), 2);
}

async fn a_refused_share_gives_everything_back_and_refreezes(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let mut r = split("30080001", "tx1", "P1", vec![line("1900000201", 20)]);
    r.unfreeze_unsplit = true;
    s.create_share(&r, LIMITS).await.unwrap();
    assert!(amounts(&*s, "tx1").await.unfrozen);
    let next = split("30080002", "tx1", "P2", vec![line("1900000201", 1)]);
    assert_eq!(
        s.create_share(&next, LIMITS).await.unwrap(),
        CreateShare::Unfrozen
    );
    let mut closed = ShareChange::to(&r, ShareState::Closed, t(25));
    closed.released_fen = 20;
    closed.refreeze = true;
    closed.error_code = Some("INVALID_REQUEST".into());
    closed.error_message = Some("分账接收方不存在".into());
    assert!(s.apply_share_change(&closed).await.unwrap());
    let a = amounts(&*s, "tx1").await;
    assert_eq!((a.shared_fen, a.unfrozen), (0, false));
    let stored = s.get_share_by_id("30080001").await.unwrap().unwrap();
    assert_eq!(stored.error_code.as_deref(), Some("INVALID_REQUEST"));
    assert_eq!(
        s.create_share(&next, LIMITS).await.unwrap(),
        CreateShare::Created
    );
}

async fn unfreeze_is_a_compare_and_set_on_what_is_left(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let limits = ShareLimits {
        fee_fen: 6,
        max_ratio_bp: 3000,
    };
    let r = split("30080001", "tx1", "P1", vec![line("1900000201", 30)]);
    s.create_share(&r, limits).await.unwrap();
    // 100 - 6 - 30 = 64 is left; an unfreeze computed on a stale view misses.
    let stale = unfreeze("30080002", "tx1", "U1", 94);
    assert_eq!(
        s.create_share(&stale, limits).await.unwrap(),
        CreateShare::Moved
    );
    let u = unfreeze("30080003", "tx1", "U2", 64);
    assert_eq!(
        s.create_share(&u, limits).await.unwrap(),
        CreateShare::Created
    );
    let a = amounts(&*s, "tx1").await;
    assert!(a.unfrozen);
    assert_eq!(a.unsplit_fen(6), 0);
    let late = unfreeze("30080004", "tx1", "U3", 0);
    assert_eq!(
        s.create_share(&late, limits).await.unwrap(),
        CreateShare::Unfrozen
    );
    let after = split("30080005", "tx1", "P2", vec![line("1900000201", 1)]);
    assert_eq!(
        s.create_share(&after, limits).await.unwrap(),
        CreateShare::Unfrozen
    );
}

async fn returns_are_bounded_by_the_receivers_line_and_success_releases(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let r = split("30080001", "tx1", "P1", vec![line("1900000201", 30)]);
    s.create_share(&r, LIMITS).await.unwrap();
    // Not returnable before the line succeeded.
    let early = ret("30090001", &r, "RE", 5);
    assert_eq!(
        s.create_share_return(&early).await.unwrap(),
        CreateShareReturn::NotReceiver
    );
    let r = finish(&*s, &r).await;
    // 50 concurrent returns of 1 fen each from a 30 fen line: exactly 30 land.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = Arc::clone(&s);
            let rec = ret(&format!("3009{i:04}"), &r, &format!("R{i}"), 1);
            tokio::spawn(async move { s.create_share_return(&rec).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            CreateShareReturn::Created => created += 1,
            CreateShareReturn::NotEnough { returnable_fen } => assert_eq!(returnable_fen, 0),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 30);
    let first = s.get_share_return(MCHID, "RE").await.unwrap();
    assert_eq!(first, None);
    // Which 30 land is up to the scheduler: look among all 50.
    let all: Vec<String> = (0..50).map(|i| format!("R{i}")).collect();
    let landed_all = s.get_share_returns_any(&all).await;
    assert_eq!(landed_all.len(), 30);
    let landed = landed_all[0].clone();
    assert_eq!(
        s.create_share_return(&landed).await.unwrap(),
        CreateShareReturn::Exists(Box::new(landed.clone()))
    );
    // Another receiver is no receiver of this order.
    let mut other = ret("30099999", &r, "RX", 1);
    other.return_mchid = "1900000777".into();
    assert_eq!(
        s.create_share_return(&other).await.unwrap(),
        CreateShareReturn::NotReceiver
    );
    // SUCCESS moves the amount from receivers to what came back; FAILED gives the line room.
    let mut ok = ShareReturnChange::to(
        &landed.return_id,
        ReturnState::Created,
        ReturnState::Success,
        t(50),
    );
    ok.channel_return_id = Some("3008r".into());
    ok.finished_at = Some(t(50));
    ok.notification = Some(NotificationRecord {
        event_type: "PROFITSHARING.RETURN".into(),
        ..notification("nr", "tx1", 50)
    });
    assert!(s.apply_share_return_change(&ok).await.unwrap());
    assert!(
        !s.apply_share_return_change(&ok).await.unwrap(),
        "compare-and-set"
    );
    let a = amounts(&*s, "tx1").await;
    assert_eq!((a.shared_fen, a.released_fen), (29, 1));
    assert_eq!(
        a.unsplit_fen(0),
        70,
        "what came back is not splittable again"
    );
    let stored = s
        .get_share_return_by_id(&landed.return_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, ReturnState::Success);
    assert_eq!(stored.channel_return_id.as_deref(), Some("3008r"));
    let back = ShareReturnChange::to(
        &landed.return_id,
        ReturnState::Success,
        ReturnState::Failed,
        t(60),
    );
    assert!(s.apply_share_return_change(&back).await.is_err());
    let pending = s
        .get_share_returns_any(&(0..50).map(|i| format!("R{i}")).collect::<Vec<_>>())
        .await
        .into_iter()
        .find(|x| x.state == ReturnState::Created)
        .unwrap();
    let failed = ShareReturnChange::to(
        &pending.return_id,
        ReturnState::Created,
        ReturnState::Failed,
        t(60),
    );
    assert!(s.apply_share_return_change(&failed).await.unwrap());
    let again = ret("30098888", &r, "RY", 1);
    assert_eq!(
        s.create_share_return(&again).await.unwrap(),
        CreateShareReturn::Created
    );
}

/// Test helper: the returns among `nos` that exist.
trait ReturnsAny {
    async fn get_share_returns_any<S: AsRef<str>>(&self, nos: &[S]) -> Vec<ShareReturnRecord>;
}

impl ReturnsAny for Arc<dyn Store> {
    async fn get_share_returns_any<S: AsRef<str>>(&self, nos: &[S]) -> Vec<ShareReturnRecord> {
        let mut found = Vec::new();
        for no in nos {
            if let Some(r) = self.get_share_return(MCHID, no.as_ref()).await.unwrap() {
                found.push(r);
            }
        }
        found
    }
}

async fn receivers_and_ratio_configuration(db: Db) {
    let s = db.open().await;
    let rec = |mchid: &str, account: &str| ShareReceiverRecord {
        mchid: mchid.into(),
        r#type: "MERCHANT_ID".into(),
        account: account.into(),
        channel_id: "wx-main".into(),
        relation_type: "PARTNER".into(),
        custom_relation: None,
        created_at: t(10),
    };
    s.upsert_share_receiver(&rec(MCHID, "1900000201"))
        .await
        .unwrap();
    let mut changed = rec(MCHID, "1900000201");
    changed.relation_type = "CUSTOM".into();
    changed.custom_relation = Some("代理商".into());
    s.upsert_share_receiver(&changed).await.unwrap();
    s.upsert_share_receiver(&rec("1900000110", "1900000201"))
        .await
        .unwrap();
    assert_eq!(s.share_receivers(MCHID).await.unwrap(), vec![changed]);
    assert_eq!(
        s.share_receiver_users("wx-main", "MERCHANT_ID", "1900000201")
            .await
            .unwrap(),
        2
    );
    assert!(
        s.delete_share_receiver(MCHID, "MERCHANT_ID", "1900000201")
            .await
            .unwrap()
    );
    assert!(
        !s.delete_share_receiver(MCHID, "MERCHANT_ID", "1900000201")
            .await
            .unwrap()
    );
    assert!(s.share_receivers(MCHID).await.unwrap().is_empty());
    assert_eq!(
        s.share_receiver_users("wx-main", "MERCHANT_ID", "1900000201")
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.share_max_ratio(MCHID).await.unwrap(), None);
    s.set_share_max_ratio(MCHID, 2000, t(1)).await.unwrap();
    s.set_share_max_ratio(MCHID, 4000, t(2)).await.unwrap();
    assert_eq!(s.share_max_ratio(MCHID).await.unwrap(), Some(4000));
    assert!(s.set_share_max_ratio(MCHID, 10_001, t(3)).await.is_err());
}

async fn polls_take_unsettled_shares_and_returns(db: Db) {
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let a = split("30080001", "tx1", "P1", vec![line("1900000201", 10)]);
    s.create_share(&a, LIMITS).await.unwrap();
    let mut b = split("30080002", "tx1", "P2", vec![line("1900000201", 10)]);
    b.created_at = t(21);
    s.create_share(&b, LIMITS).await.unwrap();
    let a = finish(&*s, &a).await;
    let due = s.shares_to_poll(t(100), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.order_id.as_str()).collect::<Vec<_>>(),
        vec!["30080002"]
    );
    assert!(
        s.shares_to_poll(t(21), 10).await.unwrap().is_empty(),
        "too young"
    );
    assert!(s.mark_share_polled("30080002", t(50)).await.unwrap());
    assert!(s.shares_to_poll(t(50), 10).await.unwrap().is_empty());
    assert_eq!(s.shares_to_poll(t(51), 10).await.unwrap().len(), 1);
    assert!(!s.mark_share_polled("nope", t(50)).await.unwrap());
    let r = ret("30090001", &a, "R1", 3);
    s.create_share_return(&r).await.unwrap();
    assert_eq!(s.share_returns_to_poll(t(100), 10).await.unwrap(), vec![r]);
    assert!(s.mark_share_return_polled("30090001", t(60)).await.unwrap());
    assert!(s.share_returns_to_poll(t(60), 10).await.unwrap().is_empty());
}

async fn a_share_change_and_its_ledger_posting_land_together_or_not_at_all(db: Db) {
    use paygate_core::money::Money;
    use paygate_ledger::recipes;
    let s = db.open().await;
    paid_order(&*s, "tx1").await;
    let r = split("30080001", "tx1", "P1", vec![line("1900000201", 10)]);
    s.create_share(&r, LIMITS).await.unwrap();
    // Nothing is frozen for this merchant in the ledger: the split's posting is refused, and
    // with it the whole change (state, lines, notification).
    let receivers = [("mch:1900000201", Money::cny_fen(10))];
    let split_posting = recipes::share_split(&recipes::ShareSplit {
        mchid: MCHID,
        out_order_no: "P1",
        receivers: &receivers,
    })
    .unwrap();
    let mut c = ShareChange::to(&r, ShareState::Finished, t(30));
    c.finished_at = Some(t(30));
    c.notifications = vec![notification("n1", "tx1", 30)];
    c.ledger = Some(split_posting.clone());
    assert!(matches!(
        s.apply_share_change(&c).await,
        Err(StoreError::Ledger(_))
    ));
    let untouched = s.get_share_by_id("30080001").await.unwrap().unwrap();
    assert_eq!(
        (untouched.state, untouched.version),
        (ShareState::Created, 0)
    );
    assert!(s.notifications_of("tx1").await.unwrap().is_empty());
    assert!(
        s.ledger_transfers_by_reference(&format!("{MCHID}/P1"))
            .await
            .unwrap()
            .is_empty()
    );
    // Once the merchant's frozen funds are there (a profit-sharing payment), both land.
    let payment = recipes::payment_success(&recipes::PaymentSuccess {
        transaction_id: "tx1",
        mchid: MCHID,
        channel_id: "wx-main",
        total: Money::cny_fen(100),
        fee: Money::cny_fen(0),
        profit_sharing: true,
    })
    .unwrap();
    s.post_ledger(&payment, t(6)).await.unwrap();
    assert!(s.apply_share_change(&c).await.unwrap());
    assert_eq!(
        s.ledger_transfers_by_reference(&format!("{MCHID}/P1"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.notifications_of("tx1").await.unwrap().len(), 1);
}
