//! The store's contract, one behaviour per function, run against SQLite always and against
//! PostgreSQL when `PAYGATE_TEST_DATABASE_URL` is set (else those tests print that they were
//! skipped). Both backends must give the same answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
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
    merchants_round_trip_and_status_toggles,
    insert_merchant_is_all_or_nothing,
    platform_keys_round_trip_and_duplicates_conflict,
    create_order_round_trips_every_field,
    create_order_refuses_a_non_positive_amount,
    create_order_is_idempotent_on_mchid_out_trade_no,
    create_order_keeps_its_risk_decision_in_the_same_transaction,
    create_order_conflicts_on_a_taken_transaction_id_or_attempt_id,
    concurrent_create_order_of_one_key_creates_exactly_once,
    insert_attempt_orders_by_seq_and_conflicts,
    update_attempt_is_a_compare_and_set_leaving_none_fields,
    an_unsynced_attempt_update_is_the_same_compare_and_set,
    apply_order_change_writes_order_attempt_outbox_and_repair_together,
    apply_order_change_from_a_stale_state_writes_nothing,
    apply_order_change_rolls_back_when_the_attempt_cas_fails,
    apply_order_change_rolls_back_on_a_duplicate_notification,
    concurrent_apply_order_change_applies_exactly_once,
    attempts_to_poll_filters_open_orders_and_orders_earliest_due_first,
    claim_notifications_leases_rows_and_rehands_them_after_expiry,
    concurrent_claimers_never_share_a_leased_row,
    finish_delivery_records_each_outcome,
    finish_deliveries_records_a_batch_and_skips_what_it_cannot,
    resend_notification_makes_it_due_again,
    a_resend_while_a_delivery_is_in_flight_stays_due,
    data_survives_close_and_reopen,
    concurrent_opens_of_a_new_database_migrate_once,
    one_failing_command_does_not_undo_the_others,
    corrupt_enum_string_is_reported_not_panicked,
    channel_volumes_sum_prepaid_and_paid_attempts_since_an_instant,
    risk_decisions_are_kept_and_queried_by_reference_and_action,
    risk_rule_sets_take_exactly_the_next_version_with_their_audit_row,
    concurrent_saves_of_one_risk_rule_set_version_let_exactly_one_win,
);

/// An attempt's outcome as the outbox hands it over, for a claim that was due at `claimed_due`.
fn finished(
    delivery: &DeliveryRecord,
    outcome: DeliveryOutcome,
    claimed_due: OffsetDateTime,
) -> FinishedDelivery {
    FinishedDelivery {
        delivery: delivery.clone(),
        outcome,
        claimed_due,
    }
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

async fn merchants_round_trip_and_status_toggles(db: Db) {
    let s = db.open().await;
    assert!(s.backend() == "sqlite" || s.backend() == "postgres");
    let m1 = merchant("1900000109");
    let c1 = cert("1900000109", "5157F09EFDC096DE15EBE81A47057A72", 0);
    s.insert_merchant(&m1, &c1).await.unwrap();
    assert_eq!(
        s.get_merchant("1900000109").await.unwrap(),
        Some(m1.clone())
    );
    assert_eq!(s.get_merchant("1900009999").await.unwrap(), None);

    let mut m2 = merchant("1900000002");
    m2.channel_sub_mchid = None;
    m2.channel_sub_appid = Some("wx-sub-app".into());
    s.insert_merchant(&m2, &cert("1900000002", "AA01", 0))
        .await
        .unwrap();
    assert_eq!(
        s.list_merchants().await.unwrap(),
        vec![m2.clone(), m1.clone()],
        "ordered by mchid"
    );

    assert!(
        s.set_merchant_status("1900000109", MerchantStatus::Disabled)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_merchant("1900000109").await.unwrap().unwrap().status,
        MerchantStatus::Disabled
    );
    assert!(
        s.set_merchant_status("1900000109", MerchantStatus::Active)
            .await
            .unwrap()
    );
    assert_eq!(s.get_merchant("1900000109").await.unwrap(), Some(m1));
    assert!(
        !s.set_merchant_status("1900009999", MerchantStatus::Disabled)
            .await
            .unwrap()
    );

    let c2 = cert("1900000109", "7132D72A03E93CDDF8C03BBD1F37EEDF", 1_000);
    s.add_merchant_cert(&c2).await.unwrap();
    assert!(is_conflict(s.add_merchant_cert(&c2).await));
    assert_eq!(s.merchant_certs("1900000109").await.unwrap(), vec![c1, c2]);
    assert_eq!(s.merchant_certs("1900000002").await.unwrap().len(), 1);
    assert!(s.merchant_certs("1900009999").await.unwrap().is_empty());
}

async fn insert_merchant_is_all_or_nothing(db: Db) {
    let s = db.open().await;
    s.insert_merchant(&merchant("1900000109"), &cert("1900000109", "AA01", 0))
        .await
        .unwrap();
    // Same mchid again with a new certificate: the conflict takes the certificate down with it.
    let again = s
        .insert_merchant(&merchant("1900000109"), &cert("1900000109", "BB02", 0))
        .await;
    assert!(is_conflict(again));
    assert_eq!(s.merchant_certs("1900000109").await.unwrap().len(), 1);
    // A certificate for a merchant that does not exist is refused.
    assert!(
        s.add_merchant_cert(&cert("1900009999", "CC03", 0))
            .await
            .is_err()
    );
}

async fn platform_keys_round_trip_and_duplicates_conflict(db: Db) {
    let s = db.open().await;
    assert!(s.platform_keys().await.unwrap().is_empty());
    let k1 = PlatformKeyRecord {
        key_id: "3775B6A45ACD588826D15E583A95F5DD".into(),
        kind: PlatformKeyKind::Certificate,
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nk1\n-----END PRIVATE KEY-----\n".into(),
        certificate_pem: Some(
            "-----BEGIN CERTIFICATE-----\nc1\n-----END CERTIFICATE-----\n".into(),
        ),
        created_at: t(0),
    };
    let k2 = PlatformKeyRecord {
        key_id: "PUB_KEY_ID_0114232134912410000000000000".into(),
        kind: PlatformKeyKind::PublicKey,
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nk2\n-----END PRIVATE KEY-----\n".into(),
        certificate_pem: None,
        created_at: t(5),
    };
    s.insert_platform_key(&k2).await.unwrap();
    s.insert_platform_key(&k1).await.unwrap();
    assert!(is_conflict(s.insert_platform_key(&k1).await));
    assert_eq!(
        s.platform_keys().await.unwrap(),
        vec![k1, k2],
        "oldest first"
    );
}

async fn create_order_round_trips_every_field(db: Db) {
    let s = db.open().await;
    let mut o = order("4200000001202601010000000001", "out-1");
    o.attach = Some("自定义数据".into());
    o.payer_openid = Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into());
    o.success_time = Some(t(123));
    o.bank_type = Some("CMC".into());
    o.version = 3;
    // Above 2^53: a float anywhere on the way would change it.
    o.total_fen = 9_007_199_254_740_993;
    let mut a = attempt("ATT0001", &o.transaction_id, 1);
    a.state = AttemptState::Prepaid;
    a.prepay_id = Some("wx201410272009395522657a690389285100".into());
    a.code_url = Some("weixin://wxpay/bizpayurl?pr=abc".into());
    a.h5_url = Some("https://wx.tenpay.com/h5".into());
    a.prepay_expires_at = Some(t(7_200_000));
    a.channel_transaction_id = Some("4200000001".into());
    a.error_code = Some("SYSTEMERROR".into());
    a.error_message = Some("系统错误".into());
    a.last_polled_at = Some(t(77));
    assert_eq!(s.create_order(&o, &a).await.unwrap(), CreateOrder::Created);

    assert_eq!(
        s.get_order("1900000109", "out-1").await.unwrap(),
        Some(o.clone())
    );
    assert_eq!(
        s.get_order_by_transaction_id(&o.transaction_id)
            .await
            .unwrap(),
        Some(o.clone())
    );
    assert_eq!(
        s.attempts(&o.transaction_id).await.unwrap(),
        vec![a.clone()]
    );
    assert_eq!(
        s.find_attempt("ATT0001").await.unwrap(),
        Some((o.clone(), a))
    );
    assert_eq!(s.find_attempt("nope").await.unwrap(), None);
    assert_eq!(s.get_order("1900000109", "out-2").await.unwrap(), None);
    assert_eq!(s.get_order("1900000110", "out-1").await.unwrap(), None);
    assert_eq!(s.get_order_by_transaction_id("nope").await.unwrap(), None);
    assert!(s.attempts("nope").await.unwrap().is_empty());
    assert!(s.repairs(&o.transaction_id).await.unwrap().is_empty());
    assert!(
        s.notifications_of(&o.transaction_id)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn create_order_refuses_a_non_positive_amount(db: Db) {
    let s = db.open().await;
    for (i, total_fen) in [0, -1].into_iter().enumerate() {
        let mut o = order(&format!("tx{i}"), &format!("out{i}"));
        o.total_fen = total_fen;
        let refused = s
            .create_order(&o, &attempt(&format!("a{i}"), &o.transaction_id, 1))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Database(_))),
            "{total_fen}: {refused:?}"
        );
        assert_eq!(
            s.get_order_by_transaction_id(&o.transaction_id)
                .await
                .unwrap(),
            None
        );
    }
}

async fn create_order_is_idempotent_on_mchid_out_trade_no(db: Db) {
    let s = db.open().await;
    let (first, _) = seed_order(&*s, "tx1").await;
    // Same key, other transaction id and parameters: the stored order comes back, nothing is written.
    let mut second = order("tx2", &first.out_trade_no);
    second.total_fen = 999;
    second.fingerprint = "other".into();
    let answer = s
        .create_order(&second, &attempt("tx2-1", "tx2", 1))
        .await
        .unwrap();
    assert_eq!(answer, CreateOrder::Exists(first.clone()));
    assert_eq!(s.get_order_by_transaction_id("tx2").await.unwrap(), None);
    assert_eq!(s.find_attempt("tx2-1").await.unwrap(), None);
    assert_eq!(s.attempts("tx1").await.unwrap().len(), 1);
    // The same key at another merchant is another order.
    let mut other_merchant = order("tx3", &first.out_trade_no);
    other_merchant.mchid = "1900000110".into();
    assert_eq!(
        s.create_order(&other_merchant, &attempt("tx3-1", "tx3", 1))
            .await
            .unwrap(),
        CreateOrder::Created
    );
}

async fn create_order_keeps_its_risk_decision_in_the_same_transaction(db: Db) {
    let s = db.open().await;
    let o = order("tx1", "out-risk");
    let decision = paygate_store::RiskDecisionRecord {
        id: "d1".into(),
        mchid: o.mchid.clone(),
        kind: "PREPAY".into(),
        reference: o.out_trade_no.clone(),
        transaction_id: Some("tx1".into()),
        action: "REVIEW".into(),
        score: 60,
        fired_json: r#"[{"rule_id":"velocity.payer.1m","score":60}]"#.into(),
        rules_version: 3,
        at: o.created_at,
    };
    let created = s
        .create_order_with_risk(&o, &attempt("tx1-1", "tx1", 1), Some(&decision))
        .await
        .unwrap();
    assert_eq!(created, CreateOrder::Created);
    assert_eq!(
        s.risk_decisions(&o.mchid, &o.out_trade_no).await.unwrap(),
        vec![decision.clone()]
    );
    // A re-submission of the same key writes neither an order nor a second decision.
    let again = paygate_store::RiskDecisionRecord {
        id: "d2".into(),
        ..decision.clone()
    };
    let answer = s
        .create_order_with_risk(
            &order("tx2", "out-risk"),
            &attempt("tx2-1", "tx2", 1),
            Some(&again),
        )
        .await
        .unwrap();
    assert!(matches!(answer, CreateOrder::Exists(_)));
    assert_eq!(
        s.risk_decisions(&o.mchid, &o.out_trade_no).await.unwrap(),
        vec![decision.clone()]
    );
    // A decision that cannot be stored (its id is taken) takes the order down with it.
    let clash = order("tx3", "out-risk-3");
    assert!(is_conflict(
        s.create_order_with_risk(&clash, &attempt("tx3-1", "tx3", 1), Some(&decision))
            .await
    ));
    assert_eq!(s.get_order_by_transaction_id("tx3").await.unwrap(), None);
    assert_eq!(s.find_attempt("tx3-1").await.unwrap(), None);
}

async fn create_order_conflicts_on_a_taken_transaction_id_or_attempt_id(db: Db) {
    let s = db.open().await;
    seed_order(&*s, "tx1").await;
    let clash = order("tx1", "out-other");
    assert!(is_conflict(
        s.create_order(&clash, &attempt("a-other", "tx1", 2)).await
    ));
    assert_eq!(s.get_order("1900000109", "out-other").await.unwrap(), None);
    // The first attempt's id is taken: the new order is not written either.
    let o2 = order("tx2", "out-2");
    assert!(is_conflict(
        s.create_order(&o2, &attempt("tx1-1", "tx2", 1)).await
    ));
    assert_eq!(s.get_order_by_transaction_id("tx2").await.unwrap(), None);
}

async fn concurrent_create_order_of_one_key_creates_exactly_once(db: Db) {
    let s = db.open().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let o = order(&format!("tx{i:02}"), "out-race");
                let answer = s
                    .create_order(&o, &attempt(&format!("a{i:02}"), &o.transaction_id, 1))
                    .await
                    .unwrap();
                (o.transaction_id, answer)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (tx, CreateOrder::Created) => winners.push(tx),
            (_, CreateOrder::Exists(existing)) => seen.push(existing.transaction_id),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one Created");
    assert_eq!(seen.len(), 49);
    assert!(
        seen.iter().all(|tx| *tx == winners[0]),
        "every Exists carries the winner"
    );
    assert_eq!(s.attempts(&winners[0]).await.unwrap().len(), 1);
}

async fn insert_attempt_orders_by_seq_and_conflicts(db: Db) {
    let s = db.open().await;
    let (_, a1) = seed_order(&*s, "tx1").await;
    let mut a3 = attempt("tx1-3", "tx1", 3);
    a3.channel_id = "wx-backup".into();
    let a2 = attempt("tx1-2", "tx1", 2);
    s.insert_attempt(&a3).await.unwrap();
    s.insert_attempt(&a2).await.unwrap();
    assert_eq!(s.attempts("tx1").await.unwrap(), vec![a1, a2.clone(), a3]);
    assert!(is_conflict(s.insert_attempt(&a2).await), "attempt_id taken");
    assert!(
        is_conflict(s.insert_attempt(&attempt("tx1-x", "tx1", 2)).await),
        "seq taken"
    );
    assert!(
        s.insert_attempt(&attempt("ty-1", "no-such-order", 1))
            .await
            .is_err(),
        "order must exist"
    );
    assert_eq!(s.attempts("tx1").await.unwrap().len(), 3);
}

async fn update_attempt_is_a_compare_and_set_leaving_none_fields(db: Db) {
    let s = db.open().await;
    let (_, a1) = seed_order(&*s, "tx1").await;
    let mut prepaid = AttemptChange::to(
        "tx1-1",
        &[AttemptState::Created],
        AttemptState::Prepaid,
        t(20),
    );
    prepaid.prepay_id = Some("wx-prepay-1".into());
    prepaid.prepay_expires_at = Some(t(7_000_000));
    assert!(s.update_attempt(&prepaid).await.unwrap());
    let after = s.attempts("tx1").await.unwrap().remove(0);
    let expected = AttemptRecord {
        state: AttemptState::Prepaid,
        prepay_id: Some("wx-prepay-1".into()),
        prepay_expires_at: Some(t(7_000_000)),
        updated_at: t(20),
        ..a1.clone()
    };
    assert_eq!(after, expected);

    // The same change again: the attempt is no longer CREATED, nothing moves.
    prepaid.updated_at = t(30);
    assert!(!s.update_attempt(&prepaid).await.unwrap());
    assert_eq!(s.attempts("tx1").await.unwrap()[0], expected);

    // None fields stay as they are; given fields are set.
    let mut unknown = AttemptChange::to(
        "tx1-1",
        &[AttemptState::Prepaid, AttemptState::Unknown],
        AttemptState::Unknown,
        t(40),
    );
    unknown.error_code = Some("SYSTEMERROR".into());
    unknown.last_polled_at = Some(t(40));
    assert!(s.update_attempt(&unknown).await.unwrap());
    let after = s.attempts("tx1").await.unwrap().remove(0);
    assert_eq!(after.prepay_id.as_deref(), Some("wx-prepay-1"));
    assert_eq!(after.decision, a1.decision);
    assert_eq!(after.error_code.as_deref(), Some("SYSTEMERROR"));
    assert_eq!(after.last_polled_at, Some(t(40)));
    assert_eq!(after.state, AttemptState::Unknown);

    assert!(
        !s.update_attempt(&AttemptChange::to(
            "nope",
            &[AttemptState::Unknown],
            AttemptState::Paid,
            t(50)
        ))
        .await
        .unwrap()
    );
    assert!(
        !s.update_attempt(&AttemptChange::to("tx1-1", &[], AttemptState::Paid, t(50)))
            .await
            .unwrap()
    );
    assert_eq!(
        s.attempts("tx1").await.unwrap()[0].state,
        AttemptState::Unknown
    );
}

/// `update_attempt_unsynced` only answers sooner (before the disk): what it writes, and when
/// it refuses, is `update_attempt`'s, and a synced write after it keeps both.
async fn an_unsynced_attempt_update_is_the_same_compare_and_set(db: Db) {
    let s = db.open().await;
    let (_, a1) = seed_order(&*s, "tx1").await;
    let mut prepaid = AttemptChange::to(
        "tx1-1",
        &[AttemptState::Created],
        AttemptState::Prepaid,
        t(20),
    );
    prepaid.code_url = Some("weixin://wxpay/bizpayurl?pr=abc".into());
    prepaid.prepay_expires_at = Some(t(7_000_000));
    assert!(s.update_attempt_unsynced(&prepaid).await.unwrap());
    let expected = AttemptRecord {
        state: AttemptState::Prepaid,
        code_url: prepaid.code_url.clone(),
        prepay_expires_at: Some(t(7_000_000)),
        updated_at: t(20),
        ..a1.clone()
    };
    assert_eq!(
        s.attempts("tx1").await.unwrap(),
        std::slice::from_ref(&expected)
    );
    // No longer CREATED: refused, nothing moves.
    prepaid.updated_at = t(30);
    assert!(!s.update_attempt_unsynced(&prepaid).await.unwrap());
    assert!(
        !s.update_attempt_unsynced(&AttemptChange::to(
            "nope",
            &[AttemptState::Created],
            AttemptState::Prepaid,
            t(30)
        ))
        .await
        .unwrap()
    );
    assert_eq!(
        s.attempts("tx1").await.unwrap(),
        std::slice::from_ref(&expected)
    );

    // Unsynced and synced writes interleave, concurrently too, and all stay.
    let (_, a2) = seed_order(&*s, "tx2").await;
    let paid = AttemptChange::to("tx1-1", &[AttemptState::Prepaid], AttemptState::Paid, t(40));
    let mut prepaid2 = AttemptChange::to(
        &a2.attempt_id,
        &[AttemptState::Created],
        AttemptState::Prepaid,
        t(40),
    );
    prepaid2.prepay_id = Some("wx-prepay-2".into());
    let (synced, unsynced) = tokio::join!(
        s.update_attempt(&paid),
        s.update_attempt_unsynced(&prepaid2)
    );
    assert!(synced.unwrap() && unsynced.unwrap());
    s.close().await;
    drop(s);
    let reopened = db.open().await;
    assert_eq!(
        reopened.attempts("tx1").await.unwrap()[0].state,
        AttemptState::Paid
    );
    let after = reopened.attempts("tx2").await.unwrap().remove(0);
    assert_eq!(after.state, AttemptState::Prepaid);
    assert_eq!(after.prepay_id.as_deref(), Some("wx-prepay-2"));
}

async fn apply_order_change_writes_order_attempt_outbox_and_repair_together(db: Db) {
    let s = db.open().await;
    let (o, a) = seed_order(&*s, "tx1").await;
    let mut attempt_change = AttemptChange::to(
        &a.attempt_id,
        &[AttemptState::Created, AttemptState::Prepaid],
        AttemptState::Paid,
        t(10),
    );
    attempt_change.channel_transaction_id = Some("4200000001".into());
    let n = notification("n1", "tx1", 10);
    let r = repair("r1", "tx1", OrderState::Notpay, OrderState::Success);
    let c = OrderChange {
        success_time: Some(t(9)),
        bank_type: Some("OTHERS".into()),
        payer_openid: Some("openid-1".into()),
        attempt: Some(attempt_change),
        notification: Some(n.clone()),
        repair: Some(r.clone()),
        ..change("tx1", OrderState::Notpay, OrderState::Success)
    };
    assert!(s.apply_order_change(&c).await.unwrap());

    let after = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    let expected = OrderRecord {
        state: OrderState::Success,
        version: o.version + 1,
        pricing: Default::default(),
        profit_sharing: false,
        success_time: Some(t(9)),
        bank_type: Some("OTHERS".into()),
        payer_openid: Some("openid-1".into()),
        updated_at: t(10),
        ..o
    };
    assert_eq!(after, expected);
    let a_after = s.attempts("tx1").await.unwrap().remove(0);
    assert_eq!(a_after.state, AttemptState::Paid);
    assert_eq!(
        a_after.channel_transaction_id.as_deref(),
        Some("4200000001")
    );
    assert_eq!(s.notifications_of("tx1").await.unwrap(), vec![n.clone()]);
    assert_eq!(s.get_notification("n1").await.unwrap(), Some(n));
    assert_eq!(s.get_notification("n2").await.unwrap(), None);
    assert_eq!(s.repairs("tx1").await.unwrap(), vec![r]);

    // A later change with None fields keeps what the first one set (COALESCE).
    assert!(
        s.apply_order_change(&change("tx1", OrderState::Success, OrderState::Refund))
            .await
            .unwrap()
    );
    let refunded = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(
        (refunded.state, refunded.version),
        (OrderState::Refund, expected.version + 1)
    );
    assert_eq!(refunded.success_time, Some(t(9)));
    assert_eq!(refunded.bank_type.as_deref(), Some("OTHERS"));
}

async fn apply_order_change_from_a_stale_state_writes_nothing(db: Db) {
    let s = db.open().await;
    seed_order(&*s, "tx1").await;
    let with_effects = |id: &str| OrderChange {
        notification: Some(notification(&format!("n-{id}"), "tx1", 10)),
        repair: Some(repair(
            &format!("r-{id}"),
            "tx1",
            OrderState::Notpay,
            OrderState::Success,
        )),
        ..change("tx1", OrderState::Notpay, OrderState::Success)
    };
    assert!(s.apply_order_change(&with_effects("first")).await.unwrap());
    let before = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    // A duplicated callback: same expected state, new ids for its rows.
    assert!(!s.apply_order_change(&with_effects("second")).await.unwrap());
    assert_eq!(
        s.get_order_by_transaction_id("tx1").await.unwrap(),
        Some(before)
    );
    assert_eq!(
        s.notifications_of("tx1").await.unwrap().len(),
        1,
        "no second notification"
    );
    assert_eq!(s.repairs("tx1").await.unwrap().len(), 1, "no second repair");
    assert_eq!(s.get_notification("n-second").await.unwrap(), None);
    // A final state is not downgraded by a late event.
    assert!(
        s.apply_order_change(&change("tx1", OrderState::Success, OrderState::Refund))
            .await
            .unwrap()
    );
    assert!(
        !s.apply_order_change(&change("tx1", OrderState::Success, OrderState::Closed))
            .await
            .unwrap()
    );
    assert!(
        !s.apply_order_change(&change(
            "no-such-order",
            OrderState::Notpay,
            OrderState::Closed
        ))
        .await
        .unwrap()
    );
    assert_eq!(
        s.get_order_by_transaction_id("tx1")
            .await
            .unwrap()
            .unwrap()
            .state,
        OrderState::Refund
    );
}

async fn apply_order_change_rolls_back_when_the_attempt_cas_fails(db: Db) {
    let s = db.open().await;
    let (o, a) = seed_order(&*s, "tx1").await;
    let (_, other_attempt) = seed_order(&*s, "tx2").await;
    let effects = |attempt: AttemptChange, id: &str| OrderChange {
        success_time: Some(t(9)),
        attempt: Some(attempt),
        notification: Some(notification(&format!("n-{id}"), "tx1", 10)),
        repair: Some(repair(
            &format!("r-{id}"),
            "tx1",
            OrderState::Notpay,
            OrderState::Success,
        )),
        ..change("tx1", OrderState::Notpay, OrderState::Success)
    };
    // The attempt is CREATED, the change expects PREPAID.
    let wrong_state = AttemptChange::to(
        &a.attempt_id,
        &[AttemptState::Prepaid],
        AttemptState::Paid,
        t(10),
    );
    assert!(
        !s.apply_order_change(&effects(wrong_state, "1"))
            .await
            .unwrap()
    );
    // An attempt of another order never moves with this one.
    let foreign = AttemptChange::to(
        &other_attempt.attempt_id,
        &[AttemptState::Created],
        AttemptState::Paid,
        t(10),
    );
    assert!(!s.apply_order_change(&effects(foreign, "2")).await.unwrap());

    assert_eq!(s.get_order_by_transaction_id("tx1").await.unwrap(), Some(o));
    assert_eq!(s.attempts("tx1").await.unwrap(), vec![a]);
    assert_eq!(s.attempts("tx2").await.unwrap(), vec![other_attempt]);
    assert!(s.notifications_of("tx1").await.unwrap().is_empty());
    assert!(s.repairs("tx1").await.unwrap().is_empty());
}

async fn apply_order_change_rolls_back_on_a_duplicate_notification(db: Db) {
    let s = db.open().await;
    seed_notification(&*s, &notification("n1", "tx1", 0)).await;
    let (o2, a2) = seed_order(&*s, "tx2").await;
    let c = OrderChange {
        attempt: Some(AttemptChange::to(
            &a2.attempt_id,
            &[AttemptState::Created],
            AttemptState::Paid,
            t(10),
        )),
        notification: Some(notification("n1", "tx2", 0)),
        ..change("tx2", OrderState::Notpay, OrderState::Success)
    };
    assert!(is_conflict(s.apply_order_change(&c).await));
    assert_eq!(
        s.get_order_by_transaction_id("tx2").await.unwrap(),
        Some(o2)
    );
    assert_eq!(s.attempts("tx2").await.unwrap(), vec![a2]);
    assert!(s.notifications_of("tx2").await.unwrap().is_empty());
    // A repair id clash rolls back the same way.
    let mut c2 = change("tx2", OrderState::Notpay, OrderState::Closed);
    c2.repair = Some(repair("r1", "tx2", OrderState::Notpay, OrderState::Closed));
    assert!(s.apply_order_change(&c2).await.unwrap());
    let mut c3 = change("tx1", OrderState::Success, OrderState::Refund);
    c3.repair = Some(repair("r1", "tx1", OrderState::Success, OrderState::Refund));
    assert!(is_conflict(s.apply_order_change(&c3).await));
    assert_eq!(
        s.get_order_by_transaction_id("tx1")
            .await
            .unwrap()
            .unwrap()
            .state,
        OrderState::Success
    );
}

async fn concurrent_apply_order_change_applies_exactly_once(db: Db) {
    let s = db.open().await;
    let (_, a) = seed_order(&*s, "tx1").await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = Arc::clone(&s);
            let attempt_id = a.attempt_id.clone();
            tokio::spawn(async move {
                let c = OrderChange {
                    success_time: Some(t(i)),
                    attempt: Some(AttemptChange::to(
                        &attempt_id,
                        &[AttemptState::Created],
                        AttemptState::Paid,
                        t(i),
                    )),
                    notification: Some(notification(&format!("n{i:03}"), "tx1", i)),
                    repair: Some(repair(
                        &format!("r{i:03}"),
                        "tx1",
                        OrderState::Notpay,
                        OrderState::Success,
                    )),
                    ..change("tx1", OrderState::Notpay, OrderState::Success)
                };
                (i, s.apply_order_change(&c).await.unwrap())
            })
        })
        .collect();
    let mut applied = Vec::new();
    for task in tasks {
        if let (i, true) = task.await.unwrap() {
            applied.push(i);
        }
    }
    assert_eq!(applied.len(), 1, "exactly one change applies");
    let winner = applied[0];
    let o = s.get_order_by_transaction_id("tx1").await.unwrap().unwrap();
    assert_eq!(
        (o.state, o.version, o.success_time),
        (OrderState::Success, 1, Some(t(winner)))
    );
    let notes = s.notifications_of("tx1").await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].id, format!("n{winner:03}"));
    assert_eq!(s.repairs("tx1").await.unwrap().len(), 1);
    assert_eq!(
        s.attempts("tx1").await.unwrap()[0].state,
        AttemptState::Paid
    );
}

async fn attempts_to_poll_filters_open_orders_and_orders_earliest_due_first(db: Db) {
    let s = db.open().await;
    let mk =
        |tx: &str, id: &str, seq: i32, state: AttemptState, next: Option<i64>, created: i64| {
            AttemptRecord {
                state,
                // None: the store makes it due from its creation.
                next_poll_at: next.map(t),
                created_at: t(created),
                ..attempt(id, tx, seq)
            }
        };
    let create = |tx: &str, state: OrderState, first: AttemptRecord| {
        let s = Arc::clone(&s);
        let o = OrderRecord {
            state,
            ..order(tx, &format!("out-{tx}"))
        };
        async move {
            assert_eq!(
                s.create_order(&o, &first).await.unwrap(),
                CreateOrder::Created
            );
        }
    };
    create(
        "A",
        OrderState::Notpay,
        mk("A", "a1", 1, AttemptState::Created, None, 1),
    )
    .await;
    s.insert_attempt(&mk("A", "a2", 2, AttemptState::Prepaid, Some(100), 2))
        .await
        .unwrap();
    s.insert_attempt(&mk("A", "a3", 3, AttemptState::Failed, None, 3))
        .await
        .unwrap();
    create(
        "B",
        OrderState::Payerror,
        mk("B", "b1", 1, AttemptState::Unknown, Some(50), 4),
    )
    .await;
    create(
        "C",
        OrderState::Success,
        mk("C", "c1", 1, AttemptState::Prepaid, None, 5),
    )
    .await;
    create(
        "D",
        OrderState::Notpay,
        mk("D", "d1", 1, AttemptState::Prepaid, Some(500), 6),
    )
    .await;
    create(
        "E",
        OrderState::Notpay,
        mk("E", "e1", 1, AttemptState::Created, None, 7),
    )
    .await;
    create(
        "F",
        OrderState::Closed,
        mk("F", "f1", 1, AttemptState::Unknown, Some(10), 8),
    )
    .await;
    create(
        "G",
        OrderState::Notpay,
        mk("G", "g1", 1, AttemptState::Paid, None, 9),
    )
    .await;
    create(
        "H",
        OrderState::Notpay,
        mk("H", "h1", 1, AttemptState::Closed, None, 10),
    )
    .await;
    create(
        "I",
        OrderState::Notpay,
        mk("I", "i1", 1, AttemptState::Prepaid, Some(300), 11),
    )
    .await;

    let due = s.attempts_to_poll(t(300), 10).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|(_, a)| a.attempt_id.as_str()).collect();
    // Earliest due first (a1 and e1 from their creation); d1 is not due until 500.
    assert_eq!(ids, ["a1", "e1", "b1", "a2", "i1"]);
    for (o, a) in &due {
        assert_eq!(o.transaction_id, a.transaction_id);
        assert_eq!(
            s.get_order_by_transaction_id(&o.transaction_id)
                .await
                .unwrap()
                .as_ref(),
            Some(o)
        );
    }
    assert_eq!(due[0].1.next_poll_at, Some(t(1)));
    let ids_at = |due_by: i64, limit: u32| {
        let s = Arc::clone(&s);
        async move {
            s.attempts_to_poll(t(due_by), limit)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, a)| a.attempt_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids_at(300, 2).await, ["a1", "e1"]);

    // Asking about an attempt moves it to its next poll point; the visit is recorded too.
    let mut polled = AttemptChange::to(
        "a1",
        &[AttemptState::Created],
        AttemptState::Created,
        t(250),
    );
    polled.last_polled_at = Some(t(250));
    polled.next_poll_at = Some(t(400));
    assert!(s.update_attempt(&polled).await.unwrap());
    assert_eq!(ids_at(300, 10).await, ["e1", "b1", "a2", "i1"]);
    assert_eq!(ids_at(400, 10).await, ["e1", "b1", "a2", "i1", "a1"]);
    let a1 = s.attempts("A").await.unwrap().remove(0);
    assert_eq!(
        (a1.last_polled_at, a1.next_poll_at),
        (Some(t(250)), Some(t(400)))
    );
    // Nothing is due before the earliest point, and the cut is inclusive.
    assert!(ids_at(6, 10).await.is_empty());
    assert_eq!(ids_at(7, 10).await, ["e1"]);

    // Final attempts carry no schedule (they are not in the poll index): inserted final,
    // whatever was given, or moved there later. A pending move keeps the schedule.
    let a3 = s.attempts("A").await.unwrap().remove(2);
    assert_eq!((a3.attempt_id.as_str(), a3.next_poll_at), ("a3", None));
    let mut prepaid = AttemptChange::to(
        "e1",
        &[AttemptState::Created],
        AttemptState::Prepaid,
        t(260),
    );
    prepaid.code_url = Some("weixin://e1".into());
    assert!(s.update_attempt(&prepaid).await.unwrap());
    assert_eq!(s.attempts("E").await.unwrap()[0].next_poll_at, Some(t(7)));
    let mut failed =
        AttemptChange::to("e1", &[AttemptState::Prepaid], AttemptState::Closed, t(270));
    failed.next_poll_at = Some(t(900));
    assert!(s.update_attempt(&failed).await.unwrap());
    assert_eq!(s.attempts("E").await.unwrap()[0].next_poll_at, None);
    assert_eq!(ids_at(10_000, 10).await, ["b1", "a2", "i1", "a1", "d1"]);
}

async fn claim_notifications_leases_rows_and_rehands_them_after_expiry(db: Db) {
    let s = db.open().await;
    seed_notification(&*s, &notification("n2", "tx2", 10)).await;
    seed_notification(&*s, &notification("n1", "tx1", 0)).await;
    seed_notification(&*s, &notification("n3", "tx3", 1_000)).await;
    let delivered = NotificationRecord {
        state: NotificationState::Delivered,
        ..notification("n4", "tx4", 0)
    };
    seed_notification(&*s, &delivered).await;
    let gave_up = NotificationRecord {
        state: NotificationState::Failed,
        ..notification("n5", "tx5", 0)
    };
    seed_notification(&*s, &gave_up).await;

    let claimed = s.claim_notifications(t(100), t(200), 10).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2"], "due PENDING rows, by due time");
    assert!(claimed.iter().all(|n| n.lease_until == Some(t(200))));
    assert_eq!(
        s.get_notification("n1").await.unwrap().unwrap().lease_until,
        Some(t(200))
    );

    assert!(
        s.claim_notifications(t(150), t(250), 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    assert!(
        s.claim_notifications(t(200), t(300), 10)
            .await
            .unwrap()
            .is_empty(),
        "lease ends after its instant"
    );
    let again = s.claim_notifications(t(201), t(400), 1).await.unwrap();
    assert_eq!(again.len(), 1, "limit");
    assert_eq!(
        (again[0].id.as_str(), again[0].lease_until),
        ("n1", Some(t(400)))
    );
    let ids =
        |claimed: Vec<NotificationRecord>| claimed.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.claim_notifications(t(300), t(2_000), 10).await.unwrap()),
        ["n2"]
    );
    assert_eq!(
        ids(s.claim_notifications(t(1_000), t(3_000), 10).await.unwrap()),
        ["n1", "n3"]
    );
}

async fn concurrent_claimers_never_share_a_leased_row(db: Db) {
    let s = db.open().await;
    let total = 40;
    for i in 0..total {
        seed_notification(
            &*s,
            &notification(&format!("n{i:02}"), &format!("tx{i:02}"), i),
        )
        .await;
    }
    let mut claimed_once = HashSet::new();
    for _round in 0..20 {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = Arc::clone(&s);
                tokio::spawn(
                    async move { s.claim_notifications(t(1_000), t(60_000), 7).await.unwrap() },
                )
            })
            .collect();
        for task in tasks {
            for n in task.await.unwrap() {
                assert!(
                    claimed_once.insert(n.id.clone()),
                    "{} handed out twice",
                    n.id
                );
            }
        }
        if claimed_once.len() == total as usize {
            break;
        }
    }
    assert_eq!(
        claimed_once.len(),
        total as usize,
        "every due row is claimed in the end"
    );
}

async fn finish_delivery_records_each_outcome(db: Db) {
    let s = db.open().await;
    seed_notification(&*s, &notification("n1", "tx1", 0)).await;
    seed_notification(&*s, &notification("n2", "tx2", 0)).await;
    assert_eq!(
        s.claim_notifications(t(10), t(100), 10)
            .await
            .unwrap()
            .len(),
        2
    );

    let d1 = DeliveryRecord {
        notification_id: "n1".into(),
        attempt: 1,
        at: t(20),
        http_status: Some(500),
        error: Some("FAIL".into()),
        duration_ms: 12,
    };
    s.finish_delivery(&finished(
        &d1,
        DeliveryOutcome::Retry {
            next_attempt_at: t(15_000),
        },
        t(0),
    ))
    .await
    .unwrap();
    let n1 = s.get_notification("n1").await.unwrap().unwrap();
    assert_eq!(
        (
            n1.state,
            n1.attempts,
            n1.next_attempt_at,
            n1.lease_until,
            n1.delivered_at
        ),
        (NotificationState::Pending, 1, t(15_000), None, None)
    );
    // Not due yet: only n2, whose lease ran out, comes back.
    let ids: Vec<String> = s
        .claim_notifications(t(14_999), t(20_000), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, ["n2"]);

    let d2 = DeliveryRecord {
        attempt: 2,
        at: t(15_100),
        http_status: Some(200),
        error: None,
        duration_ms: 3,
        ..d1.clone()
    };
    assert_eq!(
        s.claim_notifications(t(15_000), t(20_000), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    s.finish_delivery(&finished(&d2, DeliveryOutcome::Delivered, t(15_000)))
        .await
        .unwrap();
    let n1 = s.get_notification("n1").await.unwrap().unwrap();
    assert_eq!(
        (
            n1.state,
            n1.attempts,
            n1.next_attempt_at,
            n1.lease_until,
            n1.delivered_at
        ),
        (
            NotificationState::Delivered,
            2,
            t(15_000),
            None,
            Some(t(15_100))
        )
    );
    assert_eq!(
        s.deliveries("n1").await.unwrap(),
        vec![d1.clone(), d2.clone()]
    );

    let timeout = DeliveryRecord {
        notification_id: "n2".into(),
        attempt: 1,
        at: t(30),
        http_status: None,
        error: Some("timeout".into()),
        duration_ms: 5_000,
    };
    s.finish_delivery(&finished(&timeout, DeliveryOutcome::GaveUp, t(0)))
        .await
        .unwrap();
    let n2 = s.get_notification("n2").await.unwrap().unwrap();
    assert_eq!(
        (n2.state, n2.attempts, n2.lease_until),
        (NotificationState::Failed, 1, None)
    );
    assert_eq!(s.deliveries("n2").await.unwrap(), vec![timeout]);
    assert!(
        s.claim_notifications(t(1_000_000), t(2_000_000), 10)
            .await
            .unwrap()
            .is_empty(),
        "finished rows are never claimed"
    );

    // The same attempt number twice: refused, and the counter does not move.
    assert!(is_conflict(
        s.finish_delivery(&finished(&d2, DeliveryOutcome::Delivered, t(15_000)))
            .await
    ));
    assert_eq!(s.get_notification("n1").await.unwrap().unwrap().attempts, 2);
    let ghost = DeliveryRecord {
        notification_id: "nope".into(),
        ..d1
    };
    assert!(
        s.finish_delivery(&finished(&ghost, DeliveryOutcome::GaveUp, t(0)))
            .await
            .is_err()
    );
    assert!(s.deliveries("nope").await.unwrap().is_empty());
}

async fn finish_deliveries_records_a_batch_and_skips_what_it_cannot(db: Db) {
    let s = db.open().await;
    for (id, tx) in [("b1", "tx1"), ("b2", "tx2"), ("b3", "tx3")] {
        seed_notification(&*s, &notification(id, tx, 0)).await;
    }
    assert_eq!(
        s.claim_notifications(t(10), t(100), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let rec = |id: &str, status: Option<i32>| DeliveryRecord {
        notification_id: id.into(),
        attempt: 1,
        at: t(20),
        http_status: status,
        error: None,
        duration_ms: 4,
    };
    // Another node already recorded b3's first attempt.
    s.finish_delivery(&finished(
        &rec("b3", Some(200)),
        DeliveryOutcome::Delivered,
        t(0),
    ))
    .await
    .unwrap();
    let retry = DeliveryOutcome::Retry {
        next_attempt_at: t(15_000),
    };
    let batch = vec![
        finished(&rec("b1", Some(200)), DeliveryOutcome::Delivered, t(0)),
        finished(&rec("b2", Some(500)), retry, t(0)),
        // Skipped: the attempt number is recorded, the notification does not exist, and the
        // same attempt twice in one batch.
        finished(&rec("b3", Some(200)), DeliveryOutcome::Delivered, t(0)),
        finished(&rec("ghost", None), DeliveryOutcome::GaveUp, t(0)),
        finished(&rec("b1", Some(200)), DeliveryOutcome::Delivered, t(0)),
    ];
    assert_eq!(s.finish_deliveries(&batch).await.unwrap(), 2);
    let state = |n: NotificationRecord| {
        (
            n.state,
            n.attempts,
            n.lease_until,
            n.delivered_at,
            n.next_attempt_at,
        )
    };
    let b1 = s.get_notification("b1").await.unwrap().unwrap();
    let b1_due = b1.next_attempt_at;
    assert_eq!(
        state(b1),
        (NotificationState::Delivered, 1, None, Some(t(20)), b1_due)
    );
    assert_eq!(
        state(s.get_notification("b2").await.unwrap().unwrap()),
        (NotificationState::Pending, 1, None, None, t(15_000))
    );
    assert_eq!(s.get_notification("b3").await.unwrap().unwrap().attempts, 1);
    assert_eq!(
        s.deliveries("b1").await.unwrap(),
        vec![rec("b1", Some(200))]
    );
    assert_eq!(
        s.deliveries("b2").await.unwrap(),
        vec![rec("b2", Some(500))]
    );
    assert_eq!(s.deliveries("b3").await.unwrap().len(), 1);
    assert!(s.deliveries("ghost").await.unwrap().is_empty());
    assert_eq!(s.finish_deliveries(&[]).await.unwrap(), 0);
}

async fn resend_notification_makes_it_due_again(db: Db) {
    let s = db.open().await;
    seed_notification(&*s, &notification("n1", "tx1", 0)).await;
    s.claim_notifications(t(0), t(100), 1).await.unwrap();
    let gave_up = DeliveryRecord {
        notification_id: "n1".into(),
        attempt: 1,
        at: t(10),
        http_status: Some(404),
        error: None,
        duration_ms: 1,
    };
    s.finish_delivery(&finished(&gave_up, DeliveryOutcome::GaveUp, t(0)))
        .await
        .unwrap();
    assert!(s.resend_notification("n1", t(9_000)).await.unwrap());
    let n1 = s.get_notification("n1").await.unwrap().unwrap();
    assert_eq!(
        (n1.state, n1.next_attempt_at, n1.attempts),
        (NotificationState::Pending, t(9_000), 1)
    );
    assert!(
        s.claim_notifications(t(8_999), t(9_999), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = s.claim_notifications(t(9_000), t(9_999), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(!s.resend_notification("nope", t(9_000)).await.unwrap());
}

/// An operator re-sends while a delivery is in flight: that delivery's outcome (whatever it
/// is) is recorded as an attempt, but the notification stays due for the re-send.
async fn a_resend_while_a_delivery_is_in_flight_stays_due(db: Db) {
    let s = db.open().await;
    let outcomes = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Retry {
            next_attempt_at: t(60_000),
        },
        DeliveryOutcome::GaveUp,
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let id = format!("r{i}");
        seed_notification(&*s, &notification(&id, &format!("tx{i}"), 100)).await;
        let claimed = s.claim_notifications(t(100), t(5_000), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].next_attempt_at, t(100));
        // The re-send lands at the very instant the claim was due: it still moves the due
        // time, so the claim is seen to be stale.
        assert!(s.resend_notification(&id, t(100)).await.unwrap());
        let attempt = DeliveryRecord {
            notification_id: id.clone(),
            attempt: 1,
            at: t(200),
            http_status: Some(200),
            error: None,
            duration_ms: 100,
        };
        s.finish_delivery(&finished(&attempt, outcome.clone(), t(100)))
            .await
            .unwrap();
        let n = s.get_notification(&id).await.unwrap().unwrap();
        assert_eq!(
            (n.state, n.attempts, n.lease_until, n.next_attempt_at),
            (NotificationState::Pending, 1, None, t(101)),
            "{outcome:?}: the re-send stands"
        );
        assert_eq!(s.deliveries(&id).await.unwrap(), vec![attempt.clone()]);
        // The re-send is delivered next, and its own outcome counts.
        let again = s.claim_notifications(t(300), t(5_000), 10).await.unwrap();
        assert_eq!(
            again.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            [id.as_str()]
        );
        let second = DeliveryRecord {
            attempt: 2,
            at: t(400),
            ..attempt
        };
        s.finish_delivery(&finished(&second, DeliveryOutcome::Delivered, t(101)))
            .await
            .unwrap();
        let n = s.get_notification(&id).await.unwrap().unwrap();
        assert_eq!(
            (n.state, n.attempts, n.delivered_at),
            (NotificationState::Delivered, 2, Some(t(400)))
        );
    }
}

async fn data_survives_close_and_reopen(db: Db) {
    let first = db.open().await;
    first
        .insert_merchant(&merchant("1900000109"), &cert("1900000109", "AA01", 0))
        .await
        .unwrap();
    seed_notification(&*first, &notification("n1", "tx1", 0)).await;
    let order = first
        .get_order_by_transaction_id("tx1")
        .await
        .unwrap()
        .unwrap();
    // A second store on the same database at the same time (two nodes, or a restart racing
    // the old process): migrations are a no-op, both see the same data.
    let second = db.open().await;
    assert_eq!(
        second
            .get_order_by_transaction_id("tx1")
            .await
            .unwrap()
            .as_ref(),
        Some(&order)
    );
    first.close().await;
    assert_eq!(
        second
            .get_order_by_transaction_id("tx1")
            .await
            .unwrap()
            .as_ref(),
        Some(&order)
    );
    drop(first);
    second.close().await;
    drop(second);

    let reopened = db.open().await;
    assert_eq!(
        reopened.get_order_by_transaction_id("tx1").await.unwrap(),
        Some(order)
    );
    assert_eq!(
        reopened.get_merchant("1900000109").await.unwrap(),
        Some(merchant("1900000109"))
    );
    assert_eq!(reopened.notifications_of("tx1").await.unwrap().len(), 1);
    assert_eq!(reopened.attempts("tx1").await.unwrap().len(), 1);
    // And it still writes.
    seed_order(&*reopened, "tx2").await;
}

async fn one_failing_command_does_not_undo_the_others(db: Db) {
    let s = db.open().await;
    seed_order(&*s, "taken").await;
    // Good and failing commands at once: on SQLite they share group-commit batches.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let tx = if i % 2 == 0 {
                    format!("tx{i:02}")
                } else {
                    "taken".to_string()
                };
                let o = order(&tx, &format!("out-{i:02}"));
                (
                    i,
                    s.create_order(&o, &attempt(&format!("a{i:02}"), &tx, 1))
                        .await,
                )
            })
        })
        .collect();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(result.unwrap(), CreateOrder::Created);
            assert!(
                s.get_order_by_transaction_id(&format!("tx{i:02}"))
                    .await
                    .unwrap()
                    .is_some()
            );
        } else {
            assert!(is_conflict(result), "{i}");
            assert!(
                s.get_order("1900000109", &format!("out-{i:02}"))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }
}

async fn corrupt_enum_string_is_reported_not_panicked(db: Db) {
    let s = db.open().await;
    seed_order(&*s, "tx1").await;
    seed_order(&*s, "tx2").await;
    db.corrupt_order_state("tx1").await;
    assert!(matches!(
        s.get_order_by_transaction_id("tx1").await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        s.find_attempt("tx1-1").await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(
        s.get_order_by_transaction_id("tx2")
            .await
            .unwrap()
            .is_some(),
        "other rows still read"
    );
}

async fn concurrent_opens_of_a_new_database_migrate_once(db: Db) {
    // Several nodes starting at once against an empty database.
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url();
            tokio::spawn(async move { open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().unwrap());
    }
    seed_order(&*stores[0], "tx1").await;
    for s in &stores {
        assert!(
            s.get_order_by_transaction_id("tx1")
                .await
                .unwrap()
                .is_some()
        );
    }
}

async fn channel_volumes_sum_prepaid_and_paid_attempts_since_an_instant(db: Db) {
    let s = db.open().await;
    let to = |id: &str, from: AttemptState, state: AttemptState| {
        AttemptChange::to(id, &[from], state, t(30))
    };
    // tx1: 100 fen, PREPAID on wx-main.
    seed_order(&*s, "tx1").await;
    assert!(
        s.update_attempt(&to("tx1-1", AttemptState::Created, AttemptState::Prepaid))
            .await
            .unwrap()
    );
    // tx2: 250 fen, FAILED on wx-main, then PAID on wx-backup (created at t(2)).
    let mut o2 = order("tx2", "out-tx2");
    o2.total_fen = 250;
    s.create_order(&o2, &attempt("tx2-1", "tx2", 1))
        .await
        .unwrap();
    assert!(
        s.update_attempt(&to("tx2-1", AttemptState::Created, AttemptState::Failed))
            .await
            .unwrap()
    );
    let mut a = attempt("tx2-2", "tx2", 2);
    a.channel_id = "wx-backup".into();
    s.insert_attempt(&a).await.unwrap();
    assert!(
        s.update_attempt(&to("tx2-2", AttemptState::Created, AttemptState::Paid))
            .await
            .unwrap()
    );
    // tx3: still CREATED (nothing handed out); tx4: prepaid, but before the instant asked about.
    seed_order(&*s, "tx3").await;
    let mut a4 = attempt("tx4-1", "tx4", 1);
    a4.created_at = t(-86_400_000);
    s.create_order(&order("tx4", "out-tx4"), &a4).await.unwrap();
    assert!(
        s.update_attempt(&to("tx4-1", AttemptState::Created, AttemptState::Prepaid))
            .await
            .unwrap()
    );

    let volume = |channel_id: &str, amount_fen: i64| ChannelVolume {
        channel_id: channel_id.into(),
        amount_fen,
    };
    assert_eq!(
        s.channel_volumes(t(0)).await.unwrap(),
        vec![volume("wx-backup", 250), volume("wx-main", 100)]
    );
    assert_eq!(
        s.channel_volumes(t(-86_400_000)).await.unwrap(),
        vec![volume("wx-backup", 250), volume("wx-main", 200)]
    );
    assert_eq!(
        s.channel_volumes(t(2)).await.unwrap(),
        vec![volume("wx-backup", 250)]
    );
    assert!(s.channel_volumes(t(5)).await.unwrap().is_empty());
}

async fn risk_decisions_are_kept_and_queried_by_reference_and_action(db: Db) {
    let s = db.open().await;
    let decision =
        |id: &str, reference: &str, action: &str, at: i64| paygate_store::RiskDecisionRecord {
            id: id.into(),
            mchid: "1900000109".into(),
            kind: "PREPAY".into(),
            reference: reference.into(),
            transaction_id: (action != "DENY").then(|| format!("tx-{id}")),
            action: action.into(),
            score: 120,
            fired_json: r#"[{"rule_id":"velocity.payer.1m","score":120,"tags":["velocity"]}]"#
                .into(),
            rules_version: 7,
            at: t(at),
        };
    s.insert_risk_decision(&decision("d1", "OTN1", "REVIEW", 10))
        .await
        .unwrap();
    s.insert_risk_decision(&decision("d2", "OTN2", "DENY", 20))
        .await
        .unwrap();
    s.insert_risk_decision(&decision("d3", "OTN1", "DENY", 30))
        .await
        .unwrap();
    assert!(is_conflict(
        s.insert_risk_decision(&decision("d1", "OTN9", "ALLOW", 40))
            .await
    ));
    let of_otn1 = s.risk_decisions("1900000109", "OTN1").await.unwrap();
    assert_eq!(
        of_otn1,
        vec![
            decision("d1", "OTN1", "REVIEW", 10),
            decision("d3", "OTN1", "DENY", 30)
        ]
    );
    assert!(
        s.risk_decisions("1900000002", "OTN1")
            .await
            .unwrap()
            .is_empty(),
        "scoped by merchant"
    );
    let denied: Vec<String> = s
        .risk_decisions_by_action("DENY", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(denied, vec!["d3", "d2"], "newest first");
    assert_eq!(
        s.risk_decisions_by_action("DENY", 1).await.unwrap().len(),
        1
    );
    let mut bad = decision("d4", "OTN4", "MAYBE", 50);
    bad.kind = "PREPAY".into();
    assert!(
        s.insert_risk_decision(&bad).await.is_err(),
        "the action is checked by the schema"
    );
}

fn rule_set(version: i64, by: &str, at: i64) -> RiskRuleSetRecord {
    RiskRuleSetRecord {
        version,
        rules_json: format!(r#"[{{"id":"R-{version}","expression":"amount_fen == 4242"}}]"#),
        lists_json: r#"[{"kind":"block","entity":"payer","value":"p1"}]"#.into(),
        created_by: by.into(),
        created_at: t(at),
        comment: format!("version {version} by {by}"),
    }
}

async fn risk_rule_sets_take_exactly_the_next_version_with_their_audit_row(db: Db) {
    let s = db.open().await;
    assert_eq!(s.risk_rule_set_version().await.unwrap(), 0, "none yet");
    assert_eq!(s.risk_rule_set(1).await.unwrap(), None);
    assert!(s.risk_rule_audit(10).await.unwrap().is_empty());
    for not_first in [0, 2, -1] {
        assert!(
            is_conflict(
                s.insert_risk_rule_set(&rule_set(not_first, "ann", 1), "{}")
                    .await
            ),
            "version {not_first} on an empty store"
        );
    }
    let v1 = rule_set(1, "ann", 10);
    s.insert_risk_rule_set(&v1, r#"{"rules_added":["R-1"]}"#)
        .await
        .unwrap();
    assert!(
        is_conflict(s.insert_risk_rule_set(&rule_set(1, "bob", 20), "{}").await),
        "version 1 is taken"
    );
    assert!(
        is_conflict(s.insert_risk_rule_set(&rule_set(3, "bob", 20), "{}").await),
        "no gaps"
    );
    let v2 = rule_set(2, "bob", 20);
    s.insert_risk_rule_set(&v2, r#"{"rules_changed":["R-1"]}"#)
        .await
        .unwrap();
    assert_eq!(s.risk_rule_set_version().await.unwrap(), 2);
    assert_eq!(s.risk_rule_set(1).await.unwrap(), Some(v1));
    assert_eq!(s.risk_rule_set(2).await.unwrap(), Some(v2));
    assert_eq!(
        s.risk_rule_set(3).await.unwrap(),
        None,
        "refused saves wrote nothing"
    );
    let audit = s.risk_rule_audit(10).await.unwrap();
    assert_eq!(
        audit,
        vec![
            RiskRuleAuditRecord {
                version: 2,
                author: "bob".into(),
                at: t(20),
                comment: "version 2 by bob".into(),
                changes_json: r#"{"rules_changed":["R-1"]}"#.into(),
            },
            RiskRuleAuditRecord {
                version: 1,
                author: "ann".into(),
                at: t(10),
                comment: "version 1 by ann".into(),
                changes_json: r#"{"rules_added":["R-1"]}"#.into(),
            },
        ],
        "newest first, one row per saved version"
    );
    assert_eq!(s.risk_rule_audit(1).await.unwrap(), audit[..1].to_vec());
}

async fn concurrent_saves_of_one_risk_rule_set_version_let_exactly_one_win(db: Db) {
    let s = db.open().await;
    s.insert_risk_rule_set(&rule_set(1, "seed", 1), "{}")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let by = format!("operator-{i}");
                (
                    by.clone(),
                    s.insert_risk_rule_set(&rule_set(2, &by, 100 + i), &by)
                        .await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (by, Ok(())) => winners.push(by),
            (_, Err(StoreError::Conflict(_))) => {}
            (by, Err(e)) => panic!("{by}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one save of version 2 wins");
    assert_eq!(s.risk_rule_set_version().await.unwrap(), 2);
    let stored = s.risk_rule_set(2).await.unwrap().unwrap();
    assert_eq!(stored.created_by, winners[0]);
    let audit = s.risk_rule_audit(100).await.unwrap();
    assert_eq!(
        audit.len(),
        2,
        "one audit row per version, the losers left none"
    );
    assert_eq!(
        audit[0].changes_json, winners[0],
        "the winner's own audit row"
    );
}
