#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The engine against generated days: a clean day has no discrepancy, every injected fault
//! is found exactly once as its class, the generated bill is a bill `paygate_wxpay` reads,
//! and the pool pairs the halves of a day-cut item.

use paygate_recon::pool::{PoolItem, settle};
use paygate_recon::synth::{DaySpec, Faults, generate};
use paygate_recon::{Class, Discrepancy, Key, Kind, Record, State, reconcile};
use proptest::prelude::*;
use time::macros::date;

fn day(orders: u64, faults: Faults, seed: u64) -> DaySpec {
    DaySpec {
        date: date!(2026 - 11 - 28),
        orders,
        refund_every: 7,
        unpaid_every: 13,
        faults,
        fee_rate_bp: 60,
        seed,
    }
}

fn run(spec: &DaySpec, threads: usize) -> (paygate_recon::Outcome, paygate_recon::synth::Truth) {
    let (mut bill, mut platform) = (Vec::new(), Vec::new());
    let truth = generate(spec, &mut bill, &mut platform).unwrap();
    (reconcile(&bill, &platform, threads).unwrap(), truth)
}

fn found(outcome: &paygate_recon::Outcome) -> Vec<(Class, Key)> {
    let mut v: Vec<_> = outcome
        .discrepancies
        .iter()
        .map(|d| (d.class, d.key))
        .collect();
    v.sort();
    v
}

#[test]
fn a_clean_day_has_no_discrepancy() {
    let (outcome, truth) = run(&day(20_000, Faults::none(), 1), 2);
    assert!(
        outcome.discrepancies.is_empty(),
        "{:?}",
        &outcome.discrepancies[..outcome.discrepancies.len().min(3)]
    );
    assert_eq!(outcome.channel.rows, truth.bill_rows);
    assert_eq!(outcome.platform.rows, truth.platform_rows);
    assert!(
        outcome.absent_as_expected > 1000,
        "unpaid orders are rightly absent"
    );
    assert_eq!(
        outcome.matched + outcome.absent_as_expected,
        truth.platform_rows
    );
}

#[test]
fn every_injected_fault_is_found_exactly_once() {
    let (outcome, truth) = run(&day(30_000, Faults::each(25), 2), 2);
    let mut expected = truth.expected.clone();
    expected.sort();
    assert_eq!(found(&outcome), expected);
    for class in Class::ALL {
        let n = if class == Class::StatusMismatch {
            50
        } else {
            25
        };
        assert_eq!(outcome.count(class), n, "{class:?}");
    }
    // Evidence from both sides where both have it.
    for d in &outcome.discrepancies {
        match d.class {
            Class::ChannelOnly => assert!(d.channel.is_some() && d.platform.is_none()),
            Class::PlatformOnly => assert!(d.channel.is_none() && d.platform.is_some()),
            _ => assert!(d.channel.is_some() && d.platform.is_some(), "{d:?}"),
        }
    }
}

#[test]
fn the_generated_bill_is_a_wechat_bill_with_a_true_summary() {
    let (mut bill, mut platform) = (Vec::new(), Vec::new());
    generate(&day(500, Faults::each(3), 3), &mut bill, &mut platform).unwrap();
    let parsed = paygate_wxpay::bill::TradeBill::parse(&bill).unwrap();
    parsed.verify_summary().unwrap();
    let (layout, scanned) = paygate_recon::scan_bill(&bill, 1).unwrap();
    assert_eq!(layout.summary, parsed.summary);
    assert_eq!(scanned.records() as u64, parsed.summary.trade_count);
    // The evidence reader gives back the exact row behind a record.
    let header = paygate_recon::bill::header_line(&bill).unwrap();
    for r in scanned.runs.iter().flatten().take(50) {
        let row = paygate_recon::bill::evidence_row(&bill, &header, r.source).unwrap();
        let no = if r.key.kind() == Kind::Refund {
            &row.out_refund_no
        } else {
            &row.out_trade_no
        };
        assert_eq!(Some(no.clone()), r.key.text());
    }
}

#[test]
fn an_edited_bill_fails_its_summary_check() {
    let (mut bill, mut platform) = (Vec::new(), Vec::new());
    generate(&day(200, Faults::none(), 4), &mut bill, &mut platform).unwrap();
    let text = String::from_utf8(bill).unwrap();
    // Drop one detail line: the summary no longer adds up.
    let mut lines: Vec<&str> = text.split_inclusive("\r\n").collect();
    lines.remove(5);
    let edited = lines.concat();
    let err = reconcile(&paygate_recon::Mem(edited.as_bytes()), &platform, 1).unwrap_err();
    assert!(err.to_string().contains("总交易单数"), "{err}");
    let truncated = &text.as_bytes()[..text.len() / 2];
    assert!(reconcile(&paygate_recon::Mem(truncated), &platform, 1).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn any_day_any_faults_any_threads(orders in 200u64..3000, n in 0u64..6, seed in any::<u64>(), threads in 1usize..4) {
        let spec = day(orders, Faults::each(n), seed);
        let (outcome, truth) = run(&spec, threads);
        let mut expected = truth.expected.clone();
        expected.sort();
        prop_assert_eq!(found(&outcome), expected);
    }
}

fn rec(key: &str, kind: Kind, amount_fen: i64, state: State) -> Record {
    Record {
        key: Key::new(kind, key.as_bytes()),
        amount_fen,
        fee_milli_fen: paygate_recon::FEE_UNKNOWN,
        source: 0,
        time_s: 0,
        state,
    }
}

#[test]
fn the_pool_pairs_day_cut_halves_and_expires_the_rest() {
    let d1 = date!(2026 - 11 - 28);
    let late = rec(
        "420000000020261128000000000101",
        Kind::Payment,
        100,
        State::Paid,
    );
    let gone = rec(
        "420000000020261128000000000201",
        Kind::Payment,
        100,
        State::Paid,
    );
    let pool = vec![
        PoolItem {
            item: Discrepancy {
                class: Class::PlatformOnly,
                key: late.key,
                channel: None,
                platform: Some(late),
            },
            day: d1,
        },
        PoolItem {
            item: Discrepancy {
                class: Class::PlatformOnly,
                key: gone.key,
                channel: None,
                platform: Some(gone),
            },
            day: d1,
        },
    ];
    let today_channel = Discrepancy {
        class: Class::ChannelOnly,
        key: late.key,
        channel: Some(late),
        platform: None,
    };
    let other = rec(
        "420000000020261129000000000301",
        Kind::Payment,
        5,
        State::Paid,
    );
    let new_one = Discrepancy {
        class: Class::ChannelOnly,
        key: other.key,
        channel: Some(other),
        platform: None,
    };
    let amount = Discrepancy {
        class: Class::AmountMismatch,
        key: other.key,
        channel: Some(other),
        platform: Some(other),
    };

    let s = settle(
        &pool,
        vec![today_channel, new_one, amount],
        date!(2026 - 11 - 29),
        2,
    );
    assert_eq!(s.matched_across_days.len(), 1);
    assert_eq!(s.matched_across_days[0].0, 0);
    assert_eq!(s.hold, vec![new_one]);
    assert_eq!(s.report, vec![amount]);
    assert!(s.expired.is_empty(), "one day of two waited");

    let s = settle(&pool[1..], vec![], date!(2026 - 11 - 30), 2);
    assert_eq!(s.expired, vec![0]);

    // Halves that disagree become one two-sided discrepancy.
    let mut paid_more = late;
    paid_more.amount_fen = 101;
    let half = Discrepancy {
        class: Class::ChannelOnly,
        key: late.key,
        channel: Some(paid_more),
        platform: None,
    };
    let s = settle(&pool, vec![half], date!(2026 - 11 - 29), 2);
    assert_eq!(s.mismatched_across_days.len(), 1);
    assert_eq!(s.mismatched_across_days[0].1.class, Class::AmountMismatch);

    // hold_days 0: nothing waits.
    let s = settle(&[], vec![new_one], date!(2026 - 11 - 29), 0);
    assert_eq!(s.report, vec![new_one]);
}

#[test]
fn duplicates_on_the_platform_side_are_found_too() {
    let a = rec("1001", Kind::Payment, 100, State::Paid);
    let mut a2 = a;
    a2.source = 1;
    let channel = paygate_recon::scanned_from(vec![a], Default::default());
    let platform = paygate_recon::scanned_from(vec![a2, a], Default::default());
    let out = paygate_recon::match_sides(&channel, &platform);
    assert_eq!(out.matched, 1);
    assert_eq!(out.discrepancies.len(), 1);
    assert_eq!(out.discrepancies[0].class, Class::Duplicate);
}
