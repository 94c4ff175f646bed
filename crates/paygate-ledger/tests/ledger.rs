//! The ledger's transitions: every error code reached by a real scenario, idempotency by id,
//! all-or-nothing batches, linked chains, two-phase transfers with timeouts, snapshots and
//! replay, and the invariant check catching an edited row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::BTreeSet;

use paygate_core::money::Currency;
use paygate_ledger::model::EXPIRY_TRANSFER_CODE;
use paygate_ledger::state::expiry_transfer;
use paygate_ledger::{
    AMOUNT_MAX, Account, AccountError, AccountFlags, AccountId, Balances, InvariantViolation,
    LedgerError, LedgerState, Outcome, PendingStatus, Transfer, TransferError, TransferId,
    TransferKind, required,
};

const NOW: u64 = 1_777_600_000_000;

fn aid(n: u128) -> AccountId {
    AccountId::new(n).unwrap()
}

fn tid(n: u128) -> TransferId {
    TransferId::new(n).unwrap()
}

/// 1: liability (debits ≤ credits), 2 and 5 and 6: unlimited, 3: asset (credits ≤ debits),
/// 4: unlimited in USD.
fn setup() -> LedgerState {
    let mut s = LedgerState::new();
    let accounts = [
        Account::new(
            aid(1),
            Currency::CNY,
            10,
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            "liability",
        ),
        Account::new(aid(2), Currency::CNY, 10, AccountFlags::NONE, "free"),
        Account::new(
            aid(3),
            Currency::CNY,
            10,
            AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            "asset",
        ),
        Account::new(aid(4), Currency::USD, 10, AccountFlags::NONE, "dollars"),
        Account::new(aid(5), Currency::CNY, 10, AccountFlags::NONE, "free2"),
        Account::new(aid(6), Currency::CNY, 10, AccountFlags::NONE, "free3"),
    ];
    assert!(
        s.create_accounts(&accounts)
            .unwrap()
            .iter()
            .all(|o| *o == Outcome::Created)
    );
    s
}

fn single(id: u128, debit: u128, credit: u128, amount: u64) -> Transfer {
    Transfer {
        id: tid(id),
        debit_account_id: aid(debit),
        credit_account_id: aid(credit),
        amount,
        pending_id: None,
        timeout_s: 0,
        ledger: Currency::CNY,
        code: 1,
        kind: TransferKind::Single,
        linked: false,
        user_data: format!("ref-{id}"),
    }
}

fn pending(id: u128, debit: u128, credit: u128, amount: u64, timeout_s: u32) -> Transfer {
    Transfer {
        kind: TransferKind::Pending,
        timeout_s,
        ..single(id, debit, credit, amount)
    }
}

fn resolve(id: u128, of: &Transfer, kind: TransferKind, amount: u64) -> Transfer {
    Transfer {
        id: tid(id),
        pending_id: Some(of.id),
        kind,
        timeout_s: 0,
        amount,
        ..of.clone()
    }
}

fn err(s: &mut LedgerState, t: Transfer, now: u64) -> TransferError {
    match s.apply(&[t], now) {
        Err(LedgerError::Transfer { error, .. }) => error,
        other => panic!("expected a transfer error, got {other:?}"),
    }
}

#[test]
fn every_transfer_error_code_is_reached_by_a_scenario() {
    use TransferError as E;
    let mut hit = BTreeSet::new();
    let mut s = setup();
    // Fund 2 → 1 so the liability has room, and 3 → 2 so the asset has debits.
    s.apply(&[single(100, 2, 1, 1_000), single(101, 3, 2, 1_000)], NOW)
        .unwrap();
    let mut expect = |s: &mut LedgerState, t: Transfer, now: u64, want: E| {
        assert_eq!(err(s, t, now), want);
        hit.insert(want.code());
    };
    expect(&mut s, single(1, 2, 2, 5), NOW, E::AccountsMustBeDifferent);
    expect(&mut s, single(1, 2, 5, 0), NOW, E::AmountMustNotBeZero);
    expect(
        &mut s,
        single(1, 2, 5, AMOUNT_MAX + 1),
        NOW,
        E::AmountExceedsMax,
    );
    expect(
        &mut s,
        Transfer {
            code: 0,
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::CodeMustNotBeZero,
    );
    expect(
        &mut s,
        Transfer {
            user_data: "x".repeat(129),
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::UserDataTooLong,
    );
    expect(
        &mut s,
        Transfer {
            user_data: "a\nb".into(),
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::UserDataNotPrintable,
    );
    expect(
        &mut s,
        Transfer {
            pending_id: Some(tid(100)),
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::PendingIdMustBeZero,
    );
    expect(
        &mut s,
        Transfer {
            kind: TransferKind::PostPending,
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::PendingIdMustNotBeZero,
    );
    expect(
        &mut s,
        Transfer {
            kind: TransferKind::VoidPending,
            pending_id: Some(tid(1)),
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::PendingIdMustBeDifferent,
    );
    expect(
        &mut s,
        Transfer {
            timeout_s: 5,
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::TimeoutReservedForPendingTransfer,
    );
    expect(
        &mut s,
        Transfer {
            code: EXPIRY_TRANSFER_CODE,
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::CodeReservedForExpiry,
    );
    expect(&mut s, single(1, 99, 5, 5), NOW, E::DebitAccountNotFound);
    expect(&mut s, single(1, 2, 99, 5), NOW, E::CreditAccountNotFound);
    expect(
        &mut s,
        single(1, 2, 4, 5),
        NOW,
        E::AccountsMustHaveTheSameLedger,
    );
    expect(
        &mut s,
        Transfer {
            ledger: Currency::USD,
            ..single(1, 2, 5, 5)
        },
        NOW,
        E::TransferMustHaveTheSameLedgerAsAccounts,
    );
    expect(&mut s, single(1, 1, 2, 1_001), NOW, E::ExceedsCredits);
    expect(&mut s, single(1, 2, 3, 1_001), NOW, E::ExceedsDebits);
    // Pending transfers and their resolutions.
    let p = pending(10, 2, 5, 300, 60);
    s.apply(std::slice::from_ref(&p), NOW).unwrap();
    expect(
        &mut s,
        Transfer {
            pending_id: Some(tid(999)),
            ..resolve(11, &p, TransferKind::PostPending, 300)
        },
        NOW,
        E::PendingTransferNotFound,
    );
    expect(
        &mut s,
        Transfer {
            pending_id: Some(tid(100)),
            ..resolve(11, &p, TransferKind::PostPending, 300)
        },
        NOW,
        E::PendingTransferNotPending,
    );
    expect(
        &mut s,
        Transfer {
            debit_account_id: aid(6),
            ..resolve(11, &p, TransferKind::PostPending, 300)
        },
        NOW,
        E::PendingTransferHasDifferentDebitAccountId,
    );
    expect(
        &mut s,
        Transfer {
            credit_account_id: aid(6),
            ..resolve(11, &p, TransferKind::PostPending, 300)
        },
        NOW,
        E::PendingTransferHasDifferentCreditAccountId,
    );
    expect(
        &mut s,
        resolve(11, &p, TransferKind::VoidPending, 299),
        NOW,
        E::PendingTransferHasDifferentAmount,
    );
    expect(
        &mut s,
        resolve(11, &p, TransferKind::PostPending, 301),
        NOW,
        E::ExceedsPendingTransferAmount,
    );
    expect(
        &mut s,
        expiry_transfer(&p),
        NOW + 59_999,
        E::PendingTransferNotExpired,
    );
    expect(
        &mut s,
        resolve(11, &p, TransferKind::PostPending, 300),
        NOW + 60_000,
        E::PendingTransferExpired,
    );
    s.apply(&[resolve(11, &p, TransferKind::PostPending, 100)], NOW + 1)
        .unwrap();
    expect(
        &mut s,
        resolve(12, &p, TransferKind::VoidPending, 300),
        NOW + 2,
        E::PendingTransferAlreadyPosted,
    );
    let q = pending(20, 2, 5, 50, 0);
    s.apply(
        &[q.clone(), resolve(21, &q, TransferKind::VoidPending, 50)],
        NOW,
    )
    .unwrap();
    expect(
        &mut s,
        resolve(22, &q, TransferKind::PostPending, 50),
        NOW,
        E::PendingTransferAlreadyVoided,
    );
    let r = pending(30, 2, 5, 70, 0);
    s.apply(std::slice::from_ref(&r), NOW).unwrap();
    expect(
        &mut s,
        expiry_transfer(&r),
        NOW + 1_000_000,
        E::PendingTransferHasNoTimeout,
    );
    let x = pending(40, 2, 5, 70, 1);
    s.apply(std::slice::from_ref(&x), NOW).unwrap();
    s.expire(NOW + 1_000).unwrap();
    expect(
        &mut s,
        resolve(41, &x, TransferKind::VoidPending, 70),
        NOW,
        E::PendingTransferExpired,
    );
    expect(
        &mut s,
        pending(50, 2, 5, 1, 1),
        i64::MAX as u64 - 5,
        E::OverflowsTimeout,
    );
    // Overflows: fill unlimited accounts 5 and 6 up to the largest balance.
    let mut o = LedgerState::new();
    o.create_accounts(&[
        Account::new(aid(5), Currency::CNY, 10, AccountFlags::NONE, "a"),
        Account::new(aid(6), Currency::CNY, 10, AccountFlags::NONE, "b"),
        Account::new(aid(7), Currency::CNY, 10, AccountFlags::NONE, "c"),
    ])
    .unwrap();
    o.apply(
        &[single(1, 5, 6, AMOUNT_MAX), pending(2, 5, 6, AMOUNT_MAX, 0)],
        NOW,
    )
    .unwrap();
    let mut expect_o = |t: Transfer, want: E| {
        assert_eq!(err(&mut o, t, NOW), want);
        hit.insert(want.code());
    };
    expect_o(single(3, 5, 7, 1), E::OverflowsDebitsPosted);
    expect_o(single(3, 7, 6, 1), E::OverflowsCreditsPosted);
    expect_o(pending(3, 5, 7, 1, 0), E::OverflowsDebitsPending);
    expect_o(pending(3, 7, 6, 1, 0), E::OverflowsCreditsPending);
    // Same id, other fields: the first differing field is named, in TigerBeetle's order.
    let mut s = setup();
    s.apply(&[single(100, 2, 1, 1_000)], NOW).unwrap();
    let base = pending(60, 2, 5, 10, 30);
    s.apply(std::slice::from_ref(&base), NOW).unwrap();
    let variants = [
        (
            Transfer {
                kind: TransferKind::PostPending,
                pending_id: Some(tid(100)),
                timeout_s: 0,
                ..base.clone()
            },
            E::ExistsWithDifferentFlags,
        ),
        (
            Transfer {
                timeout_s: 31,
                ..base.clone()
            },
            E::ExistsWithDifferentTimeout,
        ),
        (
            Transfer {
                debit_account_id: aid(6),
                ..base.clone()
            },
            E::ExistsWithDifferentDebitAccountId,
        ),
        (
            Transfer {
                credit_account_id: aid(6),
                ..base.clone()
            },
            E::ExistsWithDifferentCreditAccountId,
        ),
        (
            Transfer {
                amount: 11,
                ..base.clone()
            },
            E::ExistsWithDifferentAmount,
        ),
        (
            Transfer {
                user_data: "other".into(),
                ..base.clone()
            },
            E::ExistsWithDifferentUserData,
        ),
        (
            Transfer {
                ledger: Currency::USD,
                ..base.clone()
            },
            E::ExistsWithDifferentLedger,
        ),
        (
            Transfer {
                code: 2,
                ..base.clone()
            },
            E::ExistsWithDifferentCode,
        ),
        // Several fields differ: the first in order (timeout before amount) is named.
        (
            Transfer {
                amount: 12,
                timeout_s: 1,
                ..base.clone()
            },
            E::ExistsWithDifferentTimeout,
        ),
    ];
    for (t, want) in variants {
        assert_eq!(err(&mut s, t, NOW + 5), want);
        hit.insert(want.code());
    }
    // `linked` is a flag too (followed by a transfer so the chain is closed).
    let relinked = s.apply(
        &[
            Transfer {
                linked: true,
                ..base.clone()
            },
            single(63, 2, 5, 1),
        ],
        NOW,
    );
    assert!(matches!(
        relinked,
        Err(LedgerError::Transfer {
            index: 0,
            error: E::ExistsWithDifferentFlags,
            ..
        })
    ));
    let post = resolve(61, &base, TransferKind::PostPending, 10);
    s.apply(std::slice::from_ref(&post), NOW).unwrap();
    let other_pending = pending(62, 2, 5, 10, 0);
    s.apply(std::slice::from_ref(&other_pending), NOW).unwrap();
    assert_eq!(
        err(
            &mut s,
            Transfer {
                pending_id: Some(tid(62)),
                ..post.clone()
            },
            NOW
        ),
        E::ExistsWithDifferentPendingId
    );
    hit.insert(E::ExistsWithDifferentPendingId.code());
    // Linked chains.
    let chains = s
        .apply_chains(
            &[
                Transfer {
                    linked: true,
                    ..single(70, 2, 5, 1)
                },
                single(71, 1, 5, 1_000_000),
            ],
            NOW,
        )
        .unwrap();
    assert_eq!(
        chains.results,
        vec![Err(E::LinkedEventFailed), Err(E::ExceedsCredits)]
    );
    hit.insert(E::LinkedEventFailed.code());
    let open = s
        .apply_chains(
            &[Transfer {
                linked: true,
                ..single(72, 2, 5, 1)
            }],
            NOW,
        )
        .unwrap();
    assert_eq!(open.results, vec![Err(E::LinkedEventChainOpen)]);
    assert!(matches!(
        s.apply(
            &[Transfer {
                linked: true,
                ..single(72, 2, 5, 1)
            }],
            NOW
        ),
        Err(LedgerError::Transfer {
            error: E::LinkedEventChainOpen,
            ..
        })
    ));
    hit.insert(E::LinkedEventChainOpen.code());
    s.check_invariants().unwrap();
    // Edited rows: a pending counter below its pending transfer.
    let q = pending(80, 2, 5, 40, 0);
    s.apply(std::slice::from_ref(&q), NOW).unwrap();
    let mut drained = edited(&s, aid(5), |b| b.credits_pending = 39);
    assert_eq!(
        err(
            &mut drained,
            resolve(81, &q, TransferKind::PostPending, 40),
            NOW
        ),
        E::PendingBalanceMismatch
    );
    hit.insert(E::PendingBalanceMismatch.code());
    let all: BTreeSet<&str> = E::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(
        hit,
        all,
        "codes never reached: {:?}",
        all.difference(&hit).collect::<Vec<_>>()
    );
}

#[test]
fn every_account_error_code_is_reached_by_a_scenario() {
    use AccountError as E;
    let mut s = setup();
    let a = Account::new(aid(50), Currency::CNY, 10, AccountFlags::NONE, "new");
    let both = AccountFlags {
        debits_must_not_exceed_credits: true,
        credits_must_not_exceed_debits: true,
    };
    let cases = [
        (
            Account {
                flags: both,
                ..a.clone()
            },
            E::FlagsAreMutuallyExclusive,
        ),
        (
            Account {
                code: 0,
                ..a.clone()
            },
            E::CodeMustNotBeZero,
        ),
        (
            Account {
                balances: Balances {
                    credits_posted: 1,
                    ..Balances::default()
                },
                ..a.clone()
            },
            E::BalancesMustBeZero,
        ),
        (
            Account {
                user_data: "y".repeat(200),
                ..a.clone()
            },
            E::UserDataTooLong,
        ),
        (
            Account {
                user_data: "tab\there".into(),
                ..a.clone()
            },
            E::UserDataNotPrintable,
        ),
        (
            Account {
                id: aid(1),
                ..a.clone()
            },
            E::ExistsWithDifferentFlags,
        ),
        (
            Account {
                id: aid(2),
                user_data: "other".into(),
                ..a.clone()
            },
            E::ExistsWithDifferentUserData,
        ),
        (
            Account {
                id: aid(2),
                user_data: "free".into(),
                ledger: Currency::USD,
                ..a.clone()
            },
            E::ExistsWithDifferentLedger,
        ),
        (
            Account {
                id: aid(2),
                user_data: "free".into(),
                code: 11,
                ..a.clone()
            },
            E::ExistsWithDifferentCode,
        ),
    ];
    let mut hit = BTreeSet::new();
    for (acc, want) in cases {
        // The valid account first: the batch is all or nothing, so it must not stay behind.
        match s.create_accounts(&[a.clone(), acc]) {
            Err(LedgerError::Account {
                index: 1, error, ..
            }) => assert_eq!(error, want),
            other => panic!("{want:?}: {other:?}"),
        }
        assert!(s.account(aid(50)).is_none());
        hit.insert(want.code());
    }
    let all: BTreeSet<&str> = E::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(hit, all);
    assert_eq!(
        s.create_accounts(std::slice::from_ref(&a)).unwrap(),
        vec![Outcome::Created]
    );
    assert_eq!(s.create_accounts(&[a]).unwrap(), vec![Outcome::Exists]);
    let too_many = vec![Account::new(aid(60), Currency::CNY, 1, AccountFlags::NONE, ""); 8190];
    assert_eq!(
        s.create_accounts(&too_many).unwrap_err().code(),
        "batch_too_large"
    );
}

#[test]
fn a_replayed_batch_is_exists_and_changes_nothing() {
    let mut s = setup();
    let batch = [
        Transfer {
            linked: true,
            ..single(1, 2, 1, 500)
        },
        Transfer {
            linked: true,
            ..pending(2, 1, 5, 200, 0)
        },
        single(3, 3, 2, 40),
    ];
    let first = s.apply(&batch, NOW).unwrap();
    assert_eq!(first.outcomes, vec![Outcome::Created; 3]);
    assert_eq!(first.delta.created.len(), 3);
    let before: Vec<Account> = s.accounts().into_iter().cloned().collect();
    let again = s.apply(&batch, NOW + 10).unwrap();
    assert_eq!(again.outcomes, vec![Outcome::Exists; 3]);
    assert!(again.delta.is_empty());
    assert!(again.delta.accounts_changed.is_empty());
    let after: Vec<Account> = s.accounts().into_iter().cloned().collect();
    assert_eq!(before, after);
    // The stored timestamp is the first apply's.
    assert_eq!(s.transfer(tid(1)).unwrap().timestamp_ms, NOW);
    s.check_invariants().unwrap();
}

#[test]
fn a_failing_batch_leaves_nothing_behind() {
    let mut s = setup();
    s.apply(&[single(1, 2, 1, 500)], NOW).unwrap();
    let before: Vec<Account> = s.accounts().into_iter().cloned().collect();
    let p = pending(2, 1, 5, 100, 10);
    let result = s.apply(
        &[
            p.clone(),
            resolve(3, &p, TransferKind::PostPending, 60),
            single(4, 1, 5, 10_000),
        ],
        NOW,
    );
    assert!(matches!(
        result,
        Err(LedgerError::Transfer {
            index: 2,
            error: TransferError::ExceedsCredits,
            ..
        })
    ));
    let after: Vec<Account> = s.accounts().into_iter().cloned().collect();
    assert_eq!(before, after);
    assert!(s.transfer(tid(2)).is_none() && s.transfer(tid(3)).is_none());
    assert_eq!(s.pending_status(tid(2)), None);
    assert!(
        s.expiry_batch(u64::MAX, 10).is_empty(),
        "the expiry index was rolled back too"
    );
    s.check_invariants().unwrap();
}

#[test]
fn independent_chains_stand_or_fall_alone() {
    let mut s = setup();
    s.apply(&[single(1, 2, 1, 100)], NOW).unwrap();
    let batch = [
        Transfer {
            linked: true,
            ..single(10, 1, 5, 60)
        },
        single(11, 1, 5, 60), // the chain overdraws 1: both fail
        single(12, 1, 5, 70), // alone: fits
        Transfer {
            linked: true,
            ..single(13, 2, 5, 1)
        },
        single(14, 2, 6, 1),
    ];
    let r = s.apply_chains(&batch, NOW).unwrap();
    assert_eq!(
        r.results,
        vec![
            Err(TransferError::LinkedEventFailed),
            Err(TransferError::ExceedsCredits),
            Ok(Outcome::Created),
            Ok(Outcome::Created),
            Ok(Outcome::Created)
        ]
    );
    let ids: Vec<TransferId> = r.delta.created.iter().map(|t| t.transfer.id).collect();
    assert_eq!(ids, vec![tid(12), tid(13), tid(14)]);
    assert_eq!(s.account(aid(1)).unwrap().balances.debits_posted, 70);
    s.check_invariants().unwrap();
}

#[test]
fn two_phase_transfers_post_partially_void_and_expire() {
    let mut s = setup();
    s.apply(&[single(1, 2, 1, 1_000)], NOW).unwrap();
    let p = pending(2, 1, 5, 400, 60);
    let applied = s.apply(std::slice::from_ref(&p), NOW).unwrap();
    assert_eq!(
        applied.delta.pending_changes,
        vec![(tid(2), PendingStatus::Pending)]
    );
    let one = s.account(aid(1)).unwrap().balances;
    assert_eq!((one.debits_pending, one.debits_posted), (400, 0));
    // The reservation counts against the limit: 601 no longer fits.
    assert_eq!(
        err(&mut s, single(3, 1, 5, 601), NOW),
        TransferError::ExceedsCredits
    );
    // Partial post: 250 posted, 150 released.
    let post = s
        .apply(
            &[resolve(4, &p, TransferKind::PostPending, 250)],
            NOW + 1_000,
        )
        .unwrap();
    assert_eq!(
        post.delta.pending_changes,
        vec![(tid(2), PendingStatus::Posted)]
    );
    let one = s.account(aid(1)).unwrap().balances;
    assert_eq!((one.debits_pending, one.debits_posted), (0, 250));
    let five = s.account(aid(5)).unwrap().balances;
    assert_eq!((five.credits_pending, five.credits_posted), (0, 250));
    // Void.
    let v = pending(5, 1, 5, 100, 0);
    s.apply(
        &[v.clone(), resolve(6, &v, TransferKind::VoidPending, 100)],
        NOW,
    )
    .unwrap();
    assert_eq!(s.pending_status(tid(5)), Some(PendingStatus::Voided));
    // Expiry: nothing before the deadline, released at it, journaled as a transfer.
    let e = pending(7, 1, 5, 300, 30);
    s.apply(std::slice::from_ref(&e), NOW).unwrap();
    assert!(s.expire(NOW + 29_999).unwrap().delta.created.is_empty());
    let expired = s.expire(NOW + 30_000).unwrap();
    assert_eq!(expired.delta.created.len(), 1);
    let rec = &expired.delta.created[0];
    assert_eq!(rec.transfer.kind, TransferKind::ExpirePending);
    assert_eq!(rec.transfer.pending_id, Some(tid(7)));
    assert_eq!(s.pending_status(tid(7)), Some(PendingStatus::Expired));
    assert_eq!(s.account(aid(1)).unwrap().balances.debits_pending, 0);
    // A second worker expiring the same pending gets Exists.
    assert_eq!(
        s.apply(&[expiry_transfer(&e)], NOW + 40_000)
            .unwrap()
            .outcomes,
        vec![Outcome::Exists]
    );
    s.check_invariants().unwrap();
}

#[test]
fn a_snapshot_of_the_required_rows_applies_exactly_like_the_whole_state() {
    let mut whole = setup();
    whole
        .apply(&[single(1, 2, 1, 1_000), single(2, 3, 2, 10)], NOW)
        .unwrap();
    let p = pending(3, 1, 5, 300, 60);
    whole.apply(std::slice::from_ref(&p), NOW).unwrap();
    let batch = vec![
        Transfer {
            linked: true,
            ..resolve(4, &p, TransferKind::PostPending, 200)
        },
        Transfer {
            linked: true,
            ..single(5, 1, 6, 100)
        },
        single(2, 3, 2, 10), // already stored: Exists
    ];
    let req = required(&[], &batch);
    let accounts: Vec<Account> = req
        .account_ids
        .iter()
        .filter_map(|id| whole.account(*id).cloned())
        .collect();
    let transfers: Vec<_> = req
        .transfer_ids
        .iter()
        .filter_map(|id| whole.transfer(*id).cloned())
        .collect();
    let statuses: Vec<_> = req
        .transfer_ids
        .iter()
        .filter_map(|id| whole.pending_status(*id).map(|st| (*id, st)))
        .collect();
    assert_eq!(accounts.len(), 5);
    assert_eq!(transfers.len(), 2);
    let mut part = LedgerState::from_rows(accounts, transfers, statuses).unwrap();
    let a = part.apply(&batch, NOW + 5).unwrap();
    let b = whole.apply(&batch, NOW + 5).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a.outcomes,
        vec![Outcome::Created, Outcome::Created, Outcome::Exists]
    );
    whole.check_invariants().unwrap();
    // A pending row without its status, or a status without its row, is refused.
    let pr = whole.transfer(tid(3)).unwrap().clone();
    assert_eq!(
        LedgerState::from_rows(vec![], vec![pr], vec![])
            .unwrap_err()
            .code(),
        "pending_status_missing"
    );
    assert_eq!(
        LedgerState::from_rows(vec![], vec![], vec![(tid(3), PendingStatus::Pending)])
            .unwrap_err()
            .code(),
        "pending_status_orphan"
    );
}

#[test]
fn replaying_the_records_rebuilds_the_same_state() {
    let mut s = setup();
    let mut records = Vec::new();
    records.extend(
        s.apply(&[single(1, 2, 1, 1_000), single(2, 3, 2, 10)], NOW)
            .unwrap()
            .delta
            .created,
    );
    let p = pending(3, 1, 5, 300, 60);
    records.extend(
        s.apply(std::slice::from_ref(&p), NOW + 1)
            .unwrap()
            .delta
            .created,
    );
    let q = pending(4, 1, 5, 30, 10);
    records.extend(
        s.apply(std::slice::from_ref(&q), NOW + 2)
            .unwrap()
            .delta
            .created,
    );
    records.extend(
        s.apply(&[resolve(5, &p, TransferKind::PostPending, 123)], NOW + 3)
            .unwrap()
            .delta
            .created,
    );
    records.extend(s.expire(NOW + 20_000).unwrap().delta.created);
    let accounts: Vec<Account> = s.accounts().into_iter().cloned().collect();
    let replayed = LedgerState::replay(&accounts, &records).unwrap();
    let again: Vec<Account> = replayed.accounts().into_iter().cloned().collect();
    assert_eq!(accounts, again);
    replayed.check_invariants().unwrap();
    // A journal that holds a record twice is refused.
    let mut doubled = records.clone();
    doubled.push(records[0].clone());
    assert_eq!(
        LedgerState::replay(&accounts, &doubled).unwrap_err().code(),
        "replay_duplicate"
    );
}

/// The state rebuilt from its rows with one account's balances edited, as a store row could be.
fn edited(s: &LedgerState, id: AccountId, edit: impl Fn(&mut Balances)) -> LedgerState {
    let accounts = s.accounts().into_iter().cloned().map(|mut a| {
        if a.id == id {
            edit(&mut a.balances);
        }
        a
    });
    LedgerState::from_rows(accounts, s.transfers().cloned(), s.pending_statuses()).unwrap()
}

#[test]
fn check_invariants_catches_an_edited_balance() {
    let mut s = setup();
    s.apply(&[single(1, 2, 1, 1_000), pending(2, 1, 5, 10, 0)], NOW)
        .unwrap();
    let report = s.check_invariants().unwrap();
    assert!(report.checks > 10);
    // Reloading untouched rows passes.
    edited(&s, aid(5), |_| {}).check_invariants().unwrap();
    let bumped = edited(&s, aid(5), |b| b.credits_posted += 1);
    assert!(matches!(
        bumped.check_invariants(),
        Err(InvariantViolation::BalancesNotRecomputed(_)
            | InvariantViolation::PostedNotBalanced { .. })
    ));
    // An edit that keeps the sums balanced is still caught by the recomputation.
    let moved = edited(
        &edited(&s, aid(2), |b| b.debits_posted -= 100),
        aid(6),
        |b| b.debits_posted += 100,
    );
    assert!(matches!(
        moved.check_invariants(),
        Err(InvariantViolation::BalancesNotRecomputed(_))
    ));
    // A pending counter edited below a pending transfer: resolving it is refused, not clamped.
    let mut drained = edited(&s, aid(1), |b| b.debits_pending = 0);
    let p = pending(2, 1, 5, 10, 0);
    assert!(matches!(
        drained.apply(&[resolve(3, &p, TransferKind::VoidPending, 10)], NOW),
        Err(LedgerError::Transfer {
            error: TransferError::PendingBalanceMismatch,
            ..
        })
    ));
}

#[test]
fn batches_are_bounded() {
    let mut s = setup();
    let big = vec![single(1, 2, 5, 1); 8190];
    assert_eq!(s.apply(&big, NOW).unwrap_err().code(), "batch_too_large");
    assert_eq!(
        s.apply_chains(&big, NOW).unwrap_err().code(),
        "batch_too_large"
    );
    assert_eq!(s.transfer_count(), 0);
}
