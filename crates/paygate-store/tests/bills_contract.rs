//! The store's bill contract (issue 4 §6), on SQLite always and on PostgreSQL when
//! `PAYGATE_TEST_DATABASE_URL` is set: a day closes once; a bill is kept once and every racing
//! writer gets the first one's bytes; the row sources page a day exactly (bounds, order, no
//! row twice or lost); download tokens round-trip and expired ones are pruned.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use paygate_store::bills::{BillCursor, BillDayRecord, BillDownloadRecord, BillFileRecord};
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
    a_day_closes_once,
    a_bill_is_kept_once_and_racing_writers_get_the_first_ones_bytes,
    paid_orders_page_a_day_exactly_in_time_order,
    download_tokens_round_trip_and_expired_ones_are_pruned,
);

fn day(date: &str) -> BillDayRecord {
    BillDayRecord {
        bill_date: date.into(),
        closed_at: t(0),
        closed_by: "sandbox".into(),
    }
}

fn file(date: &str, bytes: &[u8]) -> BillFileRecord {
    BillFileRecord {
        mchid: "1900000109".into(),
        bill_date: date.into(),
        kind: "TRADE_ALL".into(),
        sha1: hash_of(bytes),
        bytes: bytes.to_vec(),
        row_count: 1,
        created_at: t(1),
    }
}

/// A well-formed hash for a fixture: the store checks the shape of `sha1` (its callers
/// compute it from the bytes), so the fixtures need not carry the real digest.
fn hash_of(bytes: &[u8]) -> String {
    format!("{:040x}", bytes.len())
}

async fn a_day_closes_once(db: Db) {
    let s = db.open().await;
    assert!(s.bill_day("2026-01-02").await.unwrap().is_none());
    assert!(s.close_bill_day(&day("2026-01-02")).await.unwrap());
    let mut again = day("2026-01-02");
    again.closed_by = "schedule".into();
    again.closed_at = t(99);
    assert!(!s.close_bill_day(&again).await.unwrap(), "closed already");
    assert_eq!(
        s.bill_day("2026-01-02").await.unwrap(),
        Some(day("2026-01-02"))
    );
    s.close().await;
}

async fn a_bill_is_kept_once_and_racing_writers_get_the_first_ones_bytes(db: Db) {
    let s = db.open().await;
    // A bill of a day that is not closed is refused (foreign key).
    assert!(s.keep_bill_file(&file("2026-01-03", b"abc")).await.is_err());
    s.close_bill_day(&day("2026-01-03")).await.unwrap();
    // A record whose hash is not a lowercase SHA1 is refused before any write.
    let mut bad = file("2026-01-03", b"abc");
    bad.sha1 = "A9993E364706816ABA3E25717850C26C9CD0D89D".into();
    assert!(s.keep_bill_file(&bad).await.is_err());
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let bytes = format!("bill from writer {i:02}").into_bytes();
                s.keep_bill_file(&file("2026-01-03", &bytes)).await.unwrap()
            })
        })
        .collect();
    let mut kept = Vec::new();
    for w in writers {
        kept.push(w.await.unwrap());
    }
    assert!(
        kept.windows(2).all(|w| w[0] == w[1]),
        "every writer got the same bill back"
    );
    let stored = s
        .bill_file("1900000109", "2026-01-03", "TRADE_ALL")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, kept[0]);
    assert!(
        String::from_utf8(stored.bytes)
            .unwrap()
            .starts_with("bill from writer ")
    );
    assert!(
        s.bill_file("1900000109", "2026-01-03", "TRADE_SUCCESS")
            .await
            .unwrap()
            .is_none()
    );
    s.close().await;
}

async fn paid_orders_page_a_day_exactly_in_time_order(db: Db) {
    let s = db.open().await;
    // Day = [t(1000), t(2000)); 7 paid orders inside (two at the same instant), one at each
    // bound's outside, one unpaid, one of another merchant.
    let mut inside = Vec::new();
    let paid = [1000, 1100, 1100, 1500, 1700, 1800, 1999];
    let seed = |tx: String, mchid: &str, success: Option<i64>| {
        let mut o = order(&tx, &format!("out-{tx}"));
        o.mchid = mchid.into();
        if let Some(ms) = success {
            o.state = OrderState::Success;
            o.success_time = Some(t(ms));
        }
        (o, attempt(&format!("{tx}-1"), &tx, 1))
    };
    let mut rows = Vec::new();
    for (i, ms) in paid.iter().enumerate() {
        let tx = format!("tx-in-{i}");
        inside.push(tx.clone());
        rows.push(seed(tx, "1900000109", Some(*ms)));
    }
    rows.push(seed("tx-before".into(), "1900000109", Some(999)));
    rows.push(seed("tx-after".into(), "1900000109", Some(2000)));
    rows.push(seed("tx-unpaid".into(), "1900000109", None));
    rows.push(seed("tx-other".into(), "1900000999", Some(1500)));
    for (o, a) in &rows {
        assert_eq!(s.create_order(o, a).await.unwrap(), CreateOrder::Created);
    }
    // Pages of 3: 3 + 3 + 1, in (success_time, transaction_id) order.
    let mut seen = Vec::new();
    let mut after: Option<BillCursor> = None;
    loop {
        let page = s
            .paid_orders_between("1900000109", t(1000), t(2000), after.as_ref(), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(BillCursor {
            at: last.success_time.unwrap(),
            id: last.transaction_id.clone(),
        });
        seen.extend(page.iter().map(|o| o.transaction_id.clone()));
    }
    assert_eq!(seen, inside, "all of the day, once each, in order");
    let totals = s.merchant_flow_before("1900000109", t(1000)).await.unwrap();
    assert_eq!(
        (totals.paid_count, totals.paid_fen),
        (1, 100),
        "only the order before the day"
    );
    let totals = s.merchant_flow_before("1900000109", t(2001)).await.unwrap();
    assert_eq!((totals.paid_count, totals.paid_fen), (9, 900));
    assert_eq!((totals.refund_count, totals.refund_fen), (0, 0));
    s.close().await;
}

async fn download_tokens_round_trip_and_expired_ones_are_pruned(db: Db) {
    let s = db.open().await;
    s.close_bill_day(&day("2026-01-04")).await.unwrap();
    s.keep_bill_file(&file("2026-01-04", b"abc")).await.unwrap();
    let token = |name: &str, expires_ms: i64| BillDownloadRecord {
        token: name.into(),
        mchid: "1900000109".into(),
        bill_date: "2026-01-04".into(),
        kind: "TRADE_ALL".into(),
        gzip: name.ends_with("gz"),
        expires_at: t(expires_ms),
    };
    s.insert_bill_download(&token("old", 10), t(0))
        .await
        .unwrap();
    s.insert_bill_download(&token("live-gz", 500), t(0))
        .await
        .unwrap();
    assert_eq!(
        s.bill_download("live-gz").await.unwrap(),
        Some(token("live-gz", 500))
    );
    assert_eq!(
        s.bill_download("old").await.unwrap(),
        Some(token("old", 10))
    );
    // The next insert at t(100) prunes the token that expired at t(10), not the live one.
    s.insert_bill_download(&token("new", 900), t(100))
        .await
        .unwrap();
    assert_eq!(s.bill_download("old").await.unwrap(), None);
    assert!(s.bill_download("live-gz").await.unwrap().unwrap().gzip);
    assert!(s.bill_download("new").await.unwrap().is_some());
    // A token must name a kept bill.
    let mut orphan = token("orphan", 900);
    orphan.kind = "FUNDFLOW_BASIC".into();
    assert!(s.insert_bill_download(&orphan, t(100)).await.is_err());
    s.close().await;
}
