//! Random sequences of order changes against a small in-memory model, on both backends.
//!
//! The caller behaves like the gateway: it takes an expected state (usually the current one,
//! sometimes a stale one, as a late or duplicated callback has), picks a transition the order
//! state machine allows from it, and submits the change with or without an attempt CAS, an
//! outbox row and a repair. The store must apply it exactly when the model says (the order is
//! in the expected state and the attempt CAS matches), and after every step the order, its
//! attempt, its notifications and its repairs must equal the model's. Final states never move.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use paygate_store::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The order state machine the gateway follows (rules 2 and "final states never move").
fn next_states(from: OrderState) -> &'static [OrderState] {
    use OrderState::*;
    match from {
        Notpay => &[Success, Closed, Payerror],
        // An open order still: a retry on another attempt can pay it, or it expires.
        Payerror => &[Success, Closed],
        Success => &[Refund],
        Closed | Refund => &[],
    }
}

fn is_final(s: OrderState) -> bool {
    next_states(s).is_empty()
}

#[derive(Clone, Debug)]
struct Op {
    /// Some: a stale view of the order (a late or duplicated event); None: the current state.
    stale: Option<OrderState>,
    pick: usize,
    success_time_ms: Option<i64>,
    notify: bool,
    repair: bool,
    attempt: Option<(Vec<AttemptState>, AttemptState)>,
}

fn order_state() -> impl Strategy<Value = OrderState> {
    prop_oneof![
        Just(OrderState::Notpay),
        Just(OrderState::Payerror),
        Just(OrderState::Success),
        Just(OrderState::Refund),
        Just(OrderState::Closed),
    ]
}

const ATTEMPT_STATES: [AttemptState; 6] = [
    AttemptState::Created,
    AttemptState::Prepaid,
    AttemptState::Failed,
    AttemptState::Unknown,
    AttemptState::Closed,
    AttemptState::Paid,
];

fn op() -> impl Strategy<Value = Op> {
    let attempt = proptest::option::of((
        proptest::sample::subsequence(ATTEMPT_STATES.to_vec(), 0..=3),
        proptest::sample::select(ATTEMPT_STATES.to_vec()),
    ));
    (
        proptest::option::weighted(0.3, order_state()),
        0usize..3,
        proptest::option::of(0i64..1_000_000),
        any::<bool>(),
        any::<bool>(),
        attempt,
    )
        .prop_map(
            |(stale, pick, success_time_ms, notify, repair, attempt)| Op {
                stale,
                pick,
                success_time_ms,
                notify,
                repair,
                attempt,
            },
        )
}

#[derive(Debug)]
struct Model {
    state: OrderState,
    version: i64,
    success_time: Option<time::OffsetDateTime>,
    attempt_state: AttemptState,
    notifications: Vec<String>,
    repairs: Vec<String>,
}

/// Each case gets orders of its own in the one store the test opened.
static CASE: AtomicU64 = AtomicU64::new(0);

async fn check_sequence(store: Arc<dyn Store>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let tx = format!("case{}", CASE.fetch_add(1, Ordering::Relaxed));
    let (order, attempt) = seed_order(&*store, &tx).await;
    let mut model = Model {
        state: order.state,
        version: order.version,
        success_time: None,
        attempt_state: attempt.state,
        notifications: Vec::new(),
        repairs: Vec::new(),
    };
    for (step, op) in ops.iter().enumerate() {
        let expected = op.stale.unwrap_or(model.state);
        let choices = next_states(expected);
        if choices.is_empty() {
            continue; // the gateway submits no change out of a final state
        }
        let new = choices[op.pick % choices.len()];
        let change = OrderChange {
            success_time: op.success_time_ms.map(t),
            attempt: op.attempt.as_ref().map(|(from, to)| {
                AttemptChange::to(&attempt.attempt_id, from, *to, t(step as i64))
            }),
            notification: op
                .notify
                .then(|| notification(&format!("{tx}-n{step}"), &tx, step as i64)),
            repair: op
                .repair
                .then(|| repair(&format!("{tx}-r{step}"), &tx, expected, new)),
            ..change(&tx, expected, new)
        };
        let applied = store
            .apply_order_change(&change)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;

        let attempt_ok = op
            .attempt
            .as_ref()
            .is_none_or(|(from, _)| from.contains(&model.attempt_state));
        let model_applies = model.state == expected && attempt_ok;
        prop_assert_eq!(applied, model_applies, "step {}: {:?}", step, op);
        let before = model.state;
        if model_applies {
            model.state = new;
            model.version += 1;
            model.success_time = change.success_time.or(model.success_time);
            if let Some((_, to)) = &op.attempt {
                model.attempt_state = *to;
            }
            if let Some(n) = &change.notification {
                model.notifications.push(n.id.clone());
            }
            if let Some(r) = &change.repair {
                model.repairs.push(r.id.clone());
            }
        }
        if is_final(before) {
            prop_assert_eq!(model.state, before, "a final state moved");
        }
        compare(&*store, &tx, &model, step).await?;
    }
    Ok(())
}

async fn compare(
    store: &dyn Store,
    tx: &str,
    model: &Model,
    step: usize,
) -> Result<(), TestCaseError> {
    let fail = |e: StoreError| TestCaseError::fail(e.to_string());
    let o = store
        .get_order_by_transaction_id(tx)
        .await
        .map_err(fail)?
        .unwrap();
    prop_assert_eq!(
        (o.state, o.version, o.success_time),
        (model.state, model.version, model.success_time),
        "step {}",
        step
    );
    let attempts = store.attempts(tx).await.map_err(fail)?;
    prop_assert_eq!(attempts.len(), 1);
    prop_assert_eq!(attempts[0].state, model.attempt_state, "step {}", step);
    let mut notes: Vec<String> = store
        .notifications_of(tx)
        .await
        .map_err(fail)?
        .into_iter()
        .map(|n| n.id)
        .collect();
    notes.sort();
    let mut want = model.notifications.clone();
    want.sort();
    prop_assert_eq!(notes, want, "step {}", step);
    let repairs: Vec<String> = store
        .repairs(tx)
        .await
        .map_err(fail)?
        .into_iter()
        .map(|r| r.id)
        .collect();
    prop_assert_eq!(repairs.len(), model.repairs.len(), "step {}", step);
    Ok(())
}

fn run_model(db: Db, cases: u32) {
    let _cleanup = Cleanup(db.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(db.open());
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..24))| {
        rt.block_on(check_sequence(Arc::clone(&store), ops))?;
    });
    drop(store);
}

#[test]
fn order_changes_match_the_model_on_sqlite() {
    run_model(Db::sqlite(), 128);
}

#[test]
fn order_changes_match_the_model_on_postgres() {
    match Db::postgres() {
        Some(db) => run_model(db, 64),
        None => skipped("order_changes_match_the_model_on_postgres"),
    }
}
