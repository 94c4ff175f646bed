//! The posting recipes against the ledger: each fact moves exactly the money of its row in the
//! recipe table, replays are `Exists`, limits stop over-refunds, over-splits and over-payouts,
//! and bad facts are refused with a stable code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use paygate_core::money::{Currency, Money};
use paygate_ledger::chart::{self, AccountKind, PLATFORM_OWNER, TransferCode};
use paygate_ledger::recipes::{self, PaymentSuccess, Refund, RefundFunds, ShareSplit};
use paygate_ledger::{LedgerError, LedgerState, Outcome, Posting, TransferError, TransferKind};

const MCH: &str = "1900000109";
const CH: &str = "wx-main";
const NOW: u64 = 1_777_600_000_000;

fn fen(v: i64) -> Money {
    Money::cny_fen(v)
}

/// (debits_posted, credits_posted, debits_pending, credits_pending) of an account.
fn bal(s: &LedgerState, kind: AccountKind, owner: &str) -> (u64, u64, u64, u64) {
    let a = s.account(chart::account_id(kind, owner, Currency::CNY));
    a.map_or((0, 0, 0, 0), |a| {
        let b = a.balances;
        (
            b.debits_posted,
            b.credits_posted,
            b.debits_pending,
            b.credits_pending,
        )
    })
}

fn pay(tx: &str, total: i64, fee: i64, profit_sharing: bool) -> Posting {
    recipes::payment_success(&PaymentSuccess {
        transaction_id: tx,
        mchid: MCH,
        channel_id: CH,
        total: fen(total),
        fee: fen(fee),
        profit_sharing,
    })
    .unwrap()
}

fn refund(id: &str, amount: i64, fee_refund: i64, funds: RefundFunds) -> Refund<'_> {
    Refund {
        refund_id: id,
        mchid: MCH,
        channel_id: CH,
        amount: fen(amount),
        fee_refund: fen(fee_refund),
        funds,
        timeout_s: 0,
    }
}

#[test]
fn payment_success_moves_gross_fee_and_net_and_replays_as_exists() {
    let p = pay("4200000000202605010000000001", 10_000, 60, false);
    assert_eq!(p.transfers.len(), 2);
    assert!(p.transfers[0].linked && !p.transfers[1].linked);
    assert_eq!(p.transfers[0].code, TransferCode::PaymentNet.code());
    // Pinned (computed outside Rust): ids must never drift, or replays would post twice.
    assert_eq!(
        p.transfers[0].id.to_hex(),
        "694b53249fd9bbfc1f339c216b1918de"
    );
    assert_eq!(p.accounts.len(), 3);
    let mut s = LedgerState::new();
    let applied = s.apply_posting(&p, NOW).unwrap();
    assert_eq!(applied.delta.accounts_created.len(), 3);
    assert_eq!(bal(&s, AccountKind::ChannelClearing, CH), (10_000, 0, 0, 0));
    assert_eq!(bal(&s, AccountKind::MerchantPending, MCH), (0, 9_940, 0, 0));
    assert_eq!(
        bal(&s, AccountKind::PlatformFeeIncome, PLATFORM_OWNER),
        (0, 60, 0, 0)
    );
    let again = s.apply_posting(&p, NOW + 1).unwrap();
    assert_eq!(again.outcomes, vec![Outcome::Exists; 2]);
    assert!(again.delta.is_empty());
    // The same transaction with another amount is a conflict, named by field.
    let other = pay("4200000000202605010000000001", 10_001, 60, false);
    assert!(matches!(
        s.apply_posting(&other, NOW),
        Err(LedgerError::Transfer {
            index: 0,
            error: TransferError::ExistsWithDifferentAmount,
            ..
        })
    ));
    s.check_invariants().unwrap();
    // No fee: one leg. All fee: one leg.
    assert_eq!(pay("t2", 100, 0, false).transfers.len(), 1);
    let all_fee = pay("t3", 100, 100, false);
    assert_eq!(all_fee.transfers.len(), 1);
    assert_eq!(all_fee.transfers[0].code, TransferCode::PaymentFee.code());
    assert!(!all_fee.transfers[0].linked);
}

#[test]
fn refunds_reserve_then_post_or_void_and_never_exceed_the_merchants_funds() {
    let mut s = LedgerState::new();
    s.apply_posting(&pay("tx1", 10_000, 60, false), NOW)
        .unwrap();
    let r1 = refund("r1", 3_000, 18, RefundFunds::Pending);
    s.apply_posting(&recipes::refund_requested(&r1).unwrap(), NOW)
        .unwrap();
    assert_eq!(
        bal(&s, AccountKind::MerchantPending, MCH),
        (0, 9_940, 2_982, 0)
    );
    assert_eq!(
        bal(&s, AccountKind::RefundsPayable, PLATFORM_OWNER),
        (0, 0, 0, 3_000)
    );
    // The reservation counts: 9,940 − 2,982 = 6,958 is left, a merchant part of 6,959 does not fit.
    let r2 = refund("r2", 7_000, 41, RefundFunds::Pending);
    assert!(matches!(
        s.apply_posting(&recipes::refund_requested(&r2).unwrap(), NOW),
        Err(LedgerError::Transfer {
            error: TransferError::ExceedsCredits,
            ..
        })
    ));
    s.apply_posting(&recipes::refund_succeeded(&r1).unwrap(), NOW + 1)
        .unwrap();
    assert_eq!(
        bal(&s, AccountKind::MerchantPending, MCH),
        (2_982, 9_940, 0, 0)
    );
    assert_eq!(
        bal(&s, AccountKind::PlatformFeeIncome, PLATFORM_OWNER),
        (18, 60, 0, 0)
    );
    assert_eq!(
        bal(&s, AccountKind::RefundsPayable, PLATFORM_OWNER),
        (3_000, 3_000, 0, 0)
    );
    assert_eq!(
        bal(&s, AccountKind::ChannelClearing, CH),
        (10_000, 3_000, 0, 0)
    );
    // A late failure of a refund that succeeded is refused: a pending resolves once.
    assert!(matches!(
        s.apply_posting(&recipes::refund_failed(&r1).unwrap(), NOW + 2),
        Err(LedgerError::Transfer {
            error: TransferError::PendingTransferAlreadyPosted,
            ..
        })
    ));
    // A failed refund gives everything back.
    let r3 = refund("r3", 1_000, 0, RefundFunds::Pending);
    s.apply_posting(&recipes::refund_requested(&r3).unwrap(), NOW)
        .unwrap();
    s.apply_posting(&recipes::refund_failed(&r3).unwrap(), NOW)
        .unwrap();
    assert_eq!(
        bal(&s, AccountKind::MerchantPending, MCH),
        (2_982, 9_940, 0, 0)
    );
    // From the available balance once settled.
    s.apply_posting(
        &recipes::settle(MCH, "1900000109/2026-05-01", fen(5_000)).unwrap(),
        NOW,
    )
    .unwrap();
    let r4 = refund("r4", 4_000, 0, RefundFunds::Available);
    s.apply_posting(&recipes::refund_requested(&r4).unwrap(), NOW)
        .unwrap();
    s.apply_posting(&recipes::refund_succeeded(&r4).unwrap(), NOW)
        .unwrap();
    assert_eq!(
        bal(&s, AccountKind::MerchantAvailable, MCH),
        (4_000, 5_000, 0, 0)
    );
    s.check_invariants().unwrap();
}

#[test]
fn profit_sharing_freezes_splits_unfreezes_and_returns() {
    let mut s = LedgerState::new();
    let p = pay("tx-ps", 10_000, 60, true);
    assert_eq!(p.transfers[0].code, TransferCode::PaymentNetFrozen.code());
    s.apply_posting(&p, NOW).unwrap();
    assert_eq!(
        bal(&s, AccountKind::MerchantShareFrozen, MCH),
        (0, 9_940, 0, 0)
    );
    assert_eq!(bal(&s, AccountKind::MerchantPending, MCH), (0, 0, 0, 0));
    let receivers = [
        ("MERCHANT_ID:1900000110", fen(2_000)),
        ("hmac:3f9a", fen(940)),
    ];
    let split = recipes::share_split(&ShareSplit {
        mchid: MCH,
        out_order_no: "P1",
        receivers: &receivers,
    })
    .unwrap();
    assert_eq!(split.transfers.len(), 2);
    assert_eq!(split.transfers[0].user_data, "1900000109/P1");
    s.apply_posting(&split, NOW).unwrap();
    assert_eq!(
        bal(&s, AccountKind::ShareReceiver, "MERCHANT_ID:1900000110"),
        (0, 2_000, 0, 0)
    );
    // More than is frozen cannot be split.
    let too_much = [("MERCHANT_ID:1900000111", fen(7_001))];
    let over = recipes::share_split(&ShareSplit {
        mchid: MCH,
        out_order_no: "P2",
        receivers: &too_much,
    })
    .unwrap();
    assert_eq!(
        s.apply_posting(&over, NOW).unwrap_err().code(),
        "exceeds_credits"
    );
    s.apply_posting(
        &recipes::share_unfreeze(MCH, "U1", fen(7_000)).unwrap(),
        NOW,
    )
    .unwrap();
    assert_eq!(
        bal(&s, AccountKind::MerchantShareFrozen, MCH),
        (9_940, 9_940, 0, 0)
    );
    assert_eq!(bal(&s, AccountKind::MerchantPending, MCH), (0, 7_000, 0, 0));
    s.apply_posting(
        &recipes::share_return(MCH, "R1", "MERCHANT_ID:1900000110", fen(500)).unwrap(),
        NOW,
    )
    .unwrap();
    assert_eq!(bal(&s, AccountKind::MerchantPending, MCH), (0, 7_500, 0, 0));
    let greedy = recipes::share_return(MCH, "R2", "MERCHANT_ID:1900000110", fen(1_501)).unwrap();
    assert_eq!(
        s.apply_posting(&greedy, NOW).unwrap_err().code(),
        "exceeds_credits"
    );
    s.check_invariants().unwrap();
}

#[test]
fn settlement_and_payout_close_the_loop_with_the_channel() {
    let mut s = LedgerState::new();
    s.apply_posting(&pay("tx1", 10_000, 60, false), NOW)
        .unwrap();
    s.apply_posting(&recipes::settle(MCH, "S1", fen(9_940)).unwrap(), NOW)
        .unwrap();
    assert_eq!(
        s.apply_posting(&recipes::settle(MCH, "S2", fen(1)).unwrap(), NOW)
            .unwrap_err()
            .code(),
        "exceeds_credits"
    );
    s.apply_posting(
        &recipes::payout_requested(MCH, "PO1", fen(9_940)).unwrap(),
        NOW,
    )
    .unwrap();
    s.apply_posting(
        &recipes::payout_completed(MCH, CH, "PO1", fen(9_940)).unwrap(),
        NOW,
    )
    .unwrap();
    assert_eq!(
        bal(&s, AccountKind::SettlementPayable, MCH),
        (9_940, 9_940, 0, 0)
    );
    // WeChat still owes us the fee only.
    let c = bal(&s, AccountKind::ChannelClearing, CH);
    assert_eq!(c.0 - c.1, 60);
    // The channel can never pay out more than it holds for us.
    let over = recipes::payout_completed(MCH, CH, "PO2", fen(61)).unwrap();
    let mut probe = s.clone();
    assert!(probe.apply_posting(&over, NOW).is_err());
    s.check_invariants().unwrap();
}

#[test]
fn a_duplicate_payment_is_owed_to_the_payer_and_leaves_with_its_refund() {
    let mut s = LedgerState::new();
    s.apply_posting(&pay("tx1", 10_000, 60, false), NOW)
        .unwrap();
    let dup = recipes::DuplicatePayment {
        mchid: MCH,
        channel_id: CH,
        refund_id: "R-dup",
        amount: fen(10_000),
    };
    let received = recipes::duplicate_payment(&dup).unwrap();
    assert_eq!(received.transfers.len(), 1);
    assert_eq!(
        received.transfers[0].code,
        TransferCode::DuplicatePayment.code()
    );
    assert_eq!(received.transfers[0].user_data, "R-dup");
    s.apply_posting(&received, NOW).unwrap();
    // Replayed (a duplicate callback): the same ids, nothing posted twice.
    let again = s.apply_posting(&received, NOW).unwrap();
    assert_eq!(again.outcomes, vec![Outcome::Exists]);
    // The merchant and the fee are untouched; the payer is owed the whole amount.
    assert_eq!(bal(&s, AccountKind::MerchantPending, MCH), (0, 9_940, 0, 0));
    assert_eq!(
        bal(&s, AccountKind::RefundsPayable, PLATFORM_OWNER),
        (0, 10_000, 0, 0)
    );
    s.apply_posting(&recipes::duplicate_refunded(&dup).unwrap(), NOW)
        .unwrap();
    assert_eq!(
        bal(&s, AccountKind::RefundsPayable, PLATFORM_OWNER),
        (10_000, 10_000, 0, 0)
    );
    // WeChat owes us the first payment only.
    let c = bal(&s, AccountKind::ChannelClearing, CH);
    assert_eq!(c.0 - c.1, 10_000);
    // A refund of it cannot be paid twice: nothing more is owed.
    let twice = recipes::duplicate_refunded(&recipes::DuplicatePayment {
        refund_id: "R-other",
        ..dup
    })
    .unwrap();
    assert_eq!(
        s.clone().apply_posting(&twice, NOW).unwrap_err().code(),
        "exceeds_credits"
    );
    s.check_invariants().unwrap();
}

#[test]
fn bad_facts_are_refused_with_stable_codes() {
    let ok = PaymentSuccess {
        transaction_id: "t",
        mchid: MCH,
        channel_id: CH,
        total: fen(100),
        fee: fen(1),
        profit_sharing: false,
    };
    let code = |r: Result<Posting, recipes::RecipeError>| r.unwrap_err().code();
    assert_eq!(
        code(recipes::payment_success(&PaymentSuccess {
            fee: Money::new(1, Currency::USD),
            ..ok
        })),
        "currency_mismatch"
    );
    assert_eq!(
        code(recipes::payment_success(&PaymentSuccess {
            total: fen(0),
            ..ok
        })),
        "amount_not_positive"
    );
    assert_eq!(
        code(recipes::payment_success(&PaymentSuccess {
            fee: fen(-1),
            ..ok
        })),
        "amount_negative"
    );
    assert_eq!(
        code(recipes::payment_success(&PaymentSuccess {
            fee: fen(101),
            ..ok
        })),
        "part_exceeds_whole"
    );
    assert_eq!(
        code(recipes::payment_success(&PaymentSuccess {
            transaction_id: "",
            ..ok
        })),
        "bad_reference"
    );
    let long = "x".repeat(129);
    assert_eq!(
        code(recipes::payment_success(&PaymentSuccess {
            mchid: &long,
            ..ok
        })),
        "bad_reference"
    );
    assert_eq!(
        code(recipes::payment_success(&PaymentSuccess {
            channel_id: "a\u{7f}",
            ..ok
        })),
        "bad_reference"
    );
    assert_eq!(
        code(recipes::refund_requested(&refund(
            "r",
            10,
            11,
            RefundFunds::Pending
        ))),
        "part_exceeds_whole"
    );
    assert_eq!(
        code(recipes::share_split(&ShareSplit {
            mchid: MCH,
            out_order_no: "P",
            receivers: &[]
        })),
        "receiver_count"
    );
    let many: Vec<(String, Money)> = (0..51).map(|i| (format!("r{i}"), fen(1))).collect();
    let many_refs: Vec<(&str, Money)> = many.iter().map(|(r, m)| (r.as_str(), *m)).collect();
    assert_eq!(
        code(recipes::share_split(&ShareSplit {
            mchid: MCH,
            out_order_no: "P",
            receivers: &many_refs
        })),
        "receiver_count"
    );
    let dup = [("r1", fen(1)), ("r1", fen(2))];
    assert_eq!(
        code(recipes::share_split(&ShareSplit {
            mchid: MCH,
            out_order_no: "P",
            receivers: &dup
        })),
        "duplicate_receiver"
    );
    assert_eq!(
        code(recipes::settle(MCH, "S", fen(-5))),
        "amount_not_positive"
    );
    // Every recipe's legs are a closed chain of valid transfers.
    let r = refund("r9", 100, 1, RefundFunds::Pending);
    for p in [
        pay("t9", 100, 1, true),
        recipes::refund_requested(&r).unwrap(),
        recipes::refund_succeeded(&r).unwrap(),
        recipes::refund_failed(&r).unwrap(),
        recipes::share_unfreeze(MCH, "U", fen(5)).unwrap(),
        recipes::share_return(MCH, "R", "rcv", fen(5)).unwrap(),
        recipes::payout_requested(MCH, "PO", fen(5)).unwrap(),
        recipes::payout_completed(MCH, CH, "PO", fen(5)).unwrap(),
    ] {
        let n = p.transfers.len();
        assert!(n >= 1);
        for (i, t) in p.transfers.iter().enumerate() {
            assert_eq!(t.linked, i + 1 < n);
            assert!(p.accounts.iter().any(|a| a.id == t.debit_account_id));
            assert!(p.accounts.iter().any(|a| a.id == t.credit_account_id));
        }
    }
    let post = recipes::refund_succeeded(&r).unwrap();
    assert_eq!(post.transfers[0].kind, TransferKind::PostPending);
    assert_eq!(
        post.transfers[0].pending_id,
        Some(recipes::refund_requested(&r).unwrap().transfers[0].id)
    );
}
