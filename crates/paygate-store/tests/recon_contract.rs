//! The store's reconciliation contract (issue 9 §1-4), on SQLite always and on PostgreSQL
//! when `PAYGATE_TEST_DATABASE_URL` is set: the day's paged read of payments and refunds, a
//! run saved in one piece (a re-run replaces open findings, keeps resolved ones), resolution
//! as compare-and-set with its audit row, the cross-day pool, and the balances.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use paygate_store::recon::*;
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
    the_days_payments_are_read_in_pages_by_time_then_id,
    the_days_refunds_are_read_by_creation,
    a_saved_run_round_trips_and_a_rerun_keeps_resolved_findings,
    resolving_is_compare_and_set_with_an_audit_row,
    the_pool_holds_until_settled_and_balances_are_upserted,
);

/// Order `tx` paid at `paid_ms` on attempt `<tx>-1` (channel wx-main).
async fn paid(s: &dyn Store, tx: &str, paid_ms: i64) {
    let (_, a) = seed_order(s, tx).await;
    let mut c = change(tx, OrderState::Notpay, OrderState::Success);
    c.success_time = Some(t(paid_ms));
    c.attempt = Some(AttemptChange::to(
        &a.attempt_id,
        &[AttemptState::Created],
        AttemptState::Paid,
        t(paid_ms),
    ));
    assert!(s.apply_order_change(&c).await.unwrap());
}

async fn the_days_payments_are_read_in_pages_by_time_then_id(db: Db) {
    let s = db.open().await;
    for (tx, at) in [
        ("tx-a", 1_000),
        ("tx-b", 1_000),
        ("tx-c", 2_000),
        ("tx-d", 3_000),
        ("late", 9_000),
    ] {
        paid(s.as_ref(), tx, at).await;
    }
    seed_order(s.as_ref(), "unpaid").await;
    let mut got = Vec::new();
    let mut after: Option<ReconCursor> = None;
    loop {
        let page = s
            .recon_platform_page("P", "wx-main", t(0), t(9_000), after.as_ref(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        got.extend(page);
    }
    let ids: Vec<&str> = got.iter().map(|r| r.out_no.as_str()).collect();
    assert_eq!(
        ids,
        ["tx-a-1", "tx-b-1", "tx-c-1", "tx-d-1"],
        "[from, to), by time then id, unpaid and late left out"
    );
    let a = &got[0];
    assert_eq!(
        (
            a.kind.as_str(),
            a.transaction_id.as_str(),
            a.mchid.as_str(),
            a.amount_fen,
            a.state.as_str()
        ),
        ("P", "tx-a", "1900000109", 100, "SUCCESS")
    );
    assert_eq!(a.at, t(1_000));
    let other = s
        .recon_platform_page("P", "wx-other", t(0), t(9_000), None, 10)
        .await
        .unwrap();
    assert!(other.is_empty(), "another channel's day is its own");
    assert!(
        s.recon_platform_page("X", "wx-main", t(0), t(9_000), None, 10)
            .await
            .is_err()
    );
}

async fn the_days_refunds_are_read_by_creation(db: Db) {
    let s = db.open().await;
    paid(s.as_ref(), "tx-r", 5).await;
    let refund = RefundRecord {
        refund_id: "50000000001".into(),
        mchid: "1900000109".into(),
        out_refund_no: "m-r-1".into(),
        transaction_id: "tx-r".into(),
        out_trade_no: "out-tx-r".into(),
        attempt_id: "tx-r-1".into(),
        channel_id: "wx-main".into(),
        state: RefundState::Created,
        amount_fen: 40,
        total_fen: 100,
        currency: "CNY".into(),
        reason: None,
        notify_url: "https://merchant.example/refund-notify".into(),
        fingerprint: "fp".into(),
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
    {
        let page = s
            .recon_platform_page("R", "wx-main", t(0), t(1_000), None, 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(
            (
                page[0].out_no.as_str(),
                page[0].amount_fen,
                page[0].state.as_str()
            ),
            ("50000000001", 40, "CREATED")
        );
        assert_eq!(page[0].at, t(20));
    }
    let none = s
        .recon_platform_page("R", "wx-main", t(1_000), t(2_000), None, 10)
        .await
        .unwrap();
    assert!(none.is_empty());
}

fn run_record(run_id: &str, date: &str) -> ReconRunRecord {
    ReconRunRecord {
        run_id: run_id.into(),
        bill_date: date.into(),
        channel_id: "wx-main".into(),
        status: "DONE".into(),
        started_at: t(100),
        finished_at: t(200),
        bill_rows: 10,
        platform_rows: 11,
        matched: 9,
        discrepancies: 2,
        trade_bill_sha1: Some("79bb0f45fc4c42234a918000b2668d689e2bde04".into()),
        fundflow_bill_sha1: None,
        summary_json: "{\"counts\":{}}".into(),
        error: None,
    }
}

fn finding(id: &str, run_id: &str, class: &str, out_no: &str) -> DiscrepancyRecord {
    DiscrepancyRecord {
        id: id.into(),
        run_id: run_id.into(),
        bill_date: "2026-11-28".into(),
        channel_id: "wx-main".into(),
        class: class.into(),
        kind: "P".into(),
        out_no: out_no.into(),
        seq: 0,
        mchid: Some("1900000109".into()),
        transaction_id: Some("tx".into()),
        channel_json: Some("{\"amount_fen\":101}".into()),
        platform_json: Some("{\"amount_fen\":100}".into()),
        state: DISCREPANCY_OPEN.into(),
        resolution: None,
        resolved_by: None,
        reason: None,
        created_at: t(150),
        resolved_at: None,
    }
}

fn save(run: ReconRunRecord, discrepancies: Vec<DiscrepancyRecord>) -> ReconSave {
    ReconSave {
        run,
        discrepancies,
        hold: vec![],
        settled: vec![],
        balances: vec![],
    }
}

async fn a_saved_run_round_trips_and_a_rerun_keeps_resolved_findings(db: Db) {
    let s = db.open().await;
    let first = vec![
        finding("d1", "r1", "AMOUNT_MISMATCH", "a1"),
        finding("d2", "r1", "CHANNEL_ONLY", "a2"),
    ];
    s.save_recon_run(&save(run_record("r1", "2026-11-28"), first.clone()))
        .await
        .unwrap();
    assert_eq!(
        s.recon_runs("2026-11-28").await.unwrap(),
        vec![run_record("r1", "2026-11-28")]
    );
    let mut listed = s
        .recon_discrepancies(Some("2026-11-28"), None, 10)
        .await
        .unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, first);
    assert_eq!(
        s.get_recon_discrepancy("d1").await.unwrap(),
        Some(first[0].clone())
    );

    // d1 is resolved; a re-run finds d1's finding again and a new one, not d2's.
    let resolve = ResolveDiscrepancy {
        id: "d1".into(),
        expected_state: DISCREPANCY_OPEN.into(),
        new_state: DISCREPANCY_RESOLVED.into(),
        resolution: "OPERATOR".into(),
        actor: "ops@example".into(),
        reason: "coupon on the channel side".into(),
        at: t(300),
    };
    assert!(s.resolve_recon_discrepancy(&resolve).await.unwrap());
    let second = vec![
        finding("d1b", "r2", "AMOUNT_MISMATCH", "a1"),
        finding("d3", "r2", "FEE_MISMATCH", "a3"),
    ];
    s.save_recon_run(&save(run_record("r2", "2026-11-28"), second))
        .await
        .unwrap();
    let runs = s.recon_runs("2026-11-28").await.unwrap();
    assert_eq!(runs.len(), 1, "a re-run replaces the day's run");
    assert_eq!(runs[0].run_id, "r2");
    let mut ids: Vec<String> = s
        .recon_discrepancies(Some("2026-11-28"), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["d1", "d3"],
        "resolved d1 kept (d1b skipped), open d2 replaced"
    );
    let open = s
        .recon_discrepancies(None, Some(DISCREPANCY_OPEN), 10)
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert!(
        s.recon_discrepancies(Some("2026-11-27"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn resolving_is_compare_and_set_with_an_audit_row(db: Db) {
    let s = db.open().await;
    s.save_recon_run(&save(
        run_record("r1", "2026-11-28"),
        vec![finding("d1", "r1", "STATUS_MISMATCH", "a1")],
    ))
    .await
    .unwrap();
    let resolve = |state: &str, by: &str| ResolveDiscrepancy {
        id: "d1".into(),
        expected_state: DISCREPANCY_OPEN.into(),
        new_state: state.into(),
        resolution: "QUERY_AND_APPLY".into(),
        actor: by.into(),
        reason: "lost notification".into(),
        at: t(400),
    };
    // Two resolvers race: exactly one wins.
    let (auto, ops) = (
        resolve(DISCREPANCY_AUTO_RESOLVED, "gateway"),
        resolve(DISCREPANCY_RESOLVED, "ops"),
    );
    let (a, b) = tokio::join!(
        s.resolve_recon_discrepancy(&auto),
        s.resolve_recon_discrepancy(&ops)
    );
    assert!(a.unwrap() ^ b.unwrap());
    let d = s.get_recon_discrepancy("d1").await.unwrap().unwrap();
    assert_ne!(d.state, DISCREPANCY_OPEN);
    assert_eq!(d.resolved_at, Some(t(400)));
    assert_eq!(d.reason.as_deref(), Some("lost notification"));
    let audit = s.recon_audit("d1").await.unwrap();
    assert_eq!(audit.len(), 1, "the loser wrote nothing");
    assert_eq!(
        (
            audit[0].before_state.as_str(),
            audit[0].after_state.as_str()
        ),
        ("OPEN", d.state.as_str())
    );
    assert_eq!(audit[0].actor, d.resolved_by.clone().unwrap());
    assert!(
        !s.resolve_recon_discrepancy(&resolve(DISCREPANCY_RESOLVED, "ops"))
            .await
            .unwrap()
    );
    assert!(
        !s.resolve_recon_discrepancy(&ResolveDiscrepancy {
            id: "nope".into(),
            ..resolve("RESOLVED", "ops")
        })
        .await
        .unwrap()
    );
}

async fn the_pool_holds_until_settled_and_balances_are_upserted(db: Db) {
    let s = db.open().await;
    let item = |id: &str, out_no: &str| ReconPoolRecord {
        id: id.into(),
        channel_id: "wx-main".into(),
        bill_date: "2026-11-28".into(),
        class: "PLATFORM_ONLY".into(),
        kind: "P".into(),
        out_no: out_no.into(),
        record_json: "{\"amount_fen\":100}".into(),
        state: POOL_HELD.into(),
        settled_date: None,
        created_at: t(10),
    };
    let balance = |balanced: bool| ReconBalanceRecord {
        bill_date: "2026-11-28".into(),
        channel_id: "wx-main".into(),
        scope: "CHANNEL".into(),
        platform_json: "{\"payment_fen\":100}".into(),
        channel_json: "{\"payment_fen\":100}".into(),
        balanced,
        detail: "ok".into(),
        at: t(20),
    };
    let mut first = save(run_record("r1", "2026-11-28"), vec![]);
    first.hold = vec![item("p1", "a1"), item("p2", "a2")];
    first.balances = vec![balance(false)];
    s.save_recon_run(&first).await.unwrap();
    let held = s.recon_pool_held("wx-main").await.unwrap();
    assert_eq!(held, vec![item("p1", "a1"), item("p2", "a2")]);
    assert!(s.recon_pool_held("wx-other").await.unwrap().is_empty());

    let mut next = save(run_record("r2", "2026-11-29"), vec![]);
    next.settled = vec![("p1".into(), "MATCHED".into())];
    next.balances = vec![ReconBalanceRecord {
        bill_date: "2026-11-29".into(),
        ..balance(true)
    }];
    s.save_recon_run(&next).await.unwrap();
    assert_eq!(
        s.recon_pool_held("wx-main").await.unwrap(),
        vec![item("p2", "a2")]
    );
    // What the 29th's run settled, for a re-run of that day; not what it left held.
    assert_eq!(
        s.recon_pool_settled_on("wx-main", "2026-11-29")
            .await
            .unwrap(),
        vec![ReconPoolRecord {
            state: "MATCHED".into(),
            settled_date: Some("2026-11-29".into()),
            ..item("p1", "a1")
        }]
    );
    assert!(
        s.recon_pool_settled_on("wx-main", "2026-11-28")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.recon_pool_settled_on("wx-other", "2026-11-29")
            .await
            .unwrap()
            .is_empty()
    );

    // Re-running the first day upserts its balance and does not hold p1 twice.
    let mut again = first.clone();
    again.balances = vec![balance(true)];
    s.save_recon_run(&again).await.unwrap();
    assert_eq!(
        s.recon_pool_held("wx-main").await.unwrap(),
        vec![item("p2", "a2")]
    );
    assert_eq!(
        s.recon_balances("2026-11-28").await.unwrap(),
        vec![balance(true)]
    );
    assert_eq!(s.recon_balances("2026-11-29").await.unwrap().len(), 1);
}
