//! Bill files against real and hand-written bytes: the public axios-plugin fixture, a
//! byte-exact expected file, hashing and gzip, tolerant parsing, and property tests.

// Test helpers outside #[test] fns unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::BufReader;

use paygate_core::money::{fen_to_yuan, yuan_to_fen};
use paygate_wxpay::bill::{
    BillError, FundFlowBill, FundFlowRow, ProfitSharingBill, ProfitSharingBillRow, Sha1Reader,
    SummaryStyle, TradeBill, TradeBillReader, TradeBillRow, TradeBillSummary, TradeBillType,
    TradeBillWriter, gunzip, gzip, sha1_hex,
};
use proptest::prelude::*;

const FIXTURE_ALL: &[u8] = include_bytes!("fixtures/bills/bill.ALL.csv");
const SMALL_ALL: &[u8] = include_bytes!("fixtures/bills/small.ALL.csv");

/// Splits the fixture by hand (no crate code) so the test's recomputation is independent.
fn fixture_cells() -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::str::from_utf8(&FIXTURE_ALL[3..]).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let header = lines[0].split(',').map(str::to_owned).collect();
    let rows = lines[1..lines.len() - 3]
        .iter()
        .map(|l| l[1..].split(",`").map(str::to_owned).collect())
        .collect();
    (header, rows)
}

#[test]
fn fixture_has_45_rows_and_its_summary_matches_a_recomputation() {
    let bill = TradeBill::parse(FIXTURE_ALL).unwrap();
    assert_eq!(bill.bill_type, TradeBillType::All);
    assert_eq!(bill.rows.len(), 45);

    let (header, cells) = fixture_cells();
    assert_eq!(header.len(), 27);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let sum = |name: &str, scale: u32| -> i64 {
        let i = col(name);
        cells
            .iter()
            .map(|r| paygate_core::money::parse_decimal_minor(&r[i], scale).unwrap())
            .sum()
    };
    let recomputed = TradeBillSummary {
        trade_count: cells.len() as u64,
        settlement_total_fen: sum("应结订单金额", 2),
        refund_fen: sum("退款金额", 2),
        coupon_refund_fen: sum("充值券退款金额", 2),
        fee_milli_fen: sum("手续费", 5),
        order_total_fen: sum("订单金额", 2),
        refund_request_fen: sum("申请退款金额", 2),
    };
    // The file's own summary line: `45.0,`0.47,`0.14,`0.0,`0.08,`0.47,`0.14
    let stated = TradeBillSummary {
        trade_count: 45,
        settlement_total_fen: 47,
        refund_fen: 14,
        coupon_refund_fen: 0,
        fee_milli_fen: 8_000,
        order_total_fen: 47,
        refund_request_fen: 14,
    };
    assert_eq!(bill.summary, stated);
    assert_eq!(recomputed, stated);
    bill.verify_summary().unwrap();
    assert_eq!(TradeBillSummary::of_rows(&bill.rows).unwrap(), stated);

    let payments = bill
        .rows
        .iter()
        .filter(|r| r.trade_state == "SUCCESS")
        .count();
    let refunds = bill
        .rows
        .iter()
        .filter(|r| r.trade_state == "REFUND")
        .count();
    assert_eq!((payments, refunds), (31, 14));
    let coupons: i64 = bill.rows.iter().map(|r| r.coupon_fen).sum();
    assert_eq!(coupons, sum("代金券金额", 2));
}

#[test]
fn fixture_rows_carry_every_column_exactly() {
    let bill = TradeBill::parse(FIXTURE_ALL).unwrap();
    let refund = &bill.rows[0];
    assert_eq!(refund.trade_time, "2019-02-19 05:01:46");
    assert_eq!(refund.appid, "wxab8acd895ab1638a");
    assert_eq!(refund.mchid, "1921000401");
    assert_eq!(refund.sub_mchid, "0");
    assert_eq!(refund.device_id, "harryma007");
    assert_eq!(refund.transaction_id, "4200000263201902167700134212");
    assert_eq!(refund.out_trade_no, "autotest_20190216081946_82335");
    assert_eq!(refund.trade_type, "JSAPI");
    assert_eq!(refund.trade_state, "REFUND");
    assert_eq!(refund.refund_id, "50000709672019011908420787722");
    assert_eq!(refund.out_refund_no, "REF4200000263201902167700963919");
    assert_eq!(refund.refund_fen, 1);
    assert_eq!(refund.refund_type, "ORIGINAL");
    assert_eq!(refund.refund_status, "SUCCESS");
    assert_eq!(refund.goods_name, "系统拨测-cheeryin-test_micropay_succ");
    assert_eq!(refund.fee_rate, "39.00%");
    assert_eq!(refund.refund_request_fen, 1);
    assert_eq!(refund.settlement_total_fen, 0);

    let payment = &bill.rows[2];
    assert_eq!(payment.trade_type, "NATIVE");
    assert_eq!(payment.device_id, "");
    assert_eq!(payment.refund_id, "0");
    assert_eq!(payment.settlement_total_fen, 3);
    assert_eq!(payment.fee_milli_fen, 1_000);
    assert_eq!(payment.attach, "");
    assert_eq!(payment.fee_rate_remark, "");
}

#[test]
fn fixture_reemitted_in_sample_style_is_byte_identical() {
    let bill = TradeBill::parse(FIXTURE_ALL).unwrap();
    assert_eq!(bill.to_csv_with(SummaryStyle::Sample), FIXTURE_ALL);
    // The default style differs only in the summary line.
    let fixed = bill.to_csv();
    let fixed_text = String::from_utf8(fixed.clone()).unwrap();
    assert!(fixed_text.ends_with("\r\n`45,`0.47,`0.14,`0.00,`0.08000,`0.47,`0.14\r\n"));
    assert_eq!(TradeBill::parse(&fixed).unwrap(), bill);
}

#[test]
fn sha1_of_the_fixture_bytes_including_the_bom() {
    assert_eq!(
        sha1_hex(FIXTURE_ALL),
        "9bb6cd819be348f17a9cbcedddc8eb62fefbd790"
    );
    assert_eq!(
        sha1_hex(SMALL_ALL),
        "b16153691925b014e738edf6ba8f6e063dc142ff"
    );
    assert_ne!(sha1_hex(&FIXTURE_ALL[3..]), sha1_hex(FIXTURE_ALL));
}

fn small_bill() -> TradeBill {
    let base = TradeBillRow {
        appid: "wx0000000000000001".into(),
        mchid: "1900000001".into(),
        sub_mchid: "0".into(),
        transaction_id: "4200000001202403010000000001".into(),
        out_trade_no: "ORDER-1".into(),
        openid: "oUser1".into(),
        trade_type: "JSAPI".into(),
        bank_type: "CMB_DEBIT".into(),
        currency: "CNY".into(),
        goods_name: "咖啡,大杯".into(),
        fee_rate: "0.60%".into(),
        ..TradeBillRow::default()
    };
    let payment = TradeBillRow {
        trade_time: "2024-03-01 10:00:00".into(),
        trade_state: "SUCCESS".into(),
        settlement_total_fen: 12_345,
        refund_id: "0".into(),
        out_refund_no: "0".into(),
        attach: "a`b".into(),
        fee_milli_fen: 74_070,
        order_total_fen: 12_345,
        ..base.clone()
    };
    let refund = TradeBillRow {
        trade_time: "2024-03-01 12:30:00".into(),
        device_id: "POS-7".into(),
        trade_state: "REFUND".into(),
        refund_id: "50300000012024030100000001".into(),
        out_refund_no: "R-1".into(),
        refund_fen: 2_345,
        refund_type: "ORIGINAL".into(),
        refund_status: "SUCCESS".into(),
        fee_milli_fen: -14_070,
        refund_request_fen: 2_345,
        ..base
    };
    TradeBill::summarize(TradeBillType::All, vec![payment, refund])
}

#[test]
fn to_csv_is_byte_exact_against_a_hand_written_file() {
    let bill = small_bill();
    let csv = bill.to_csv();
    assert_eq!(
        String::from_utf8_lossy(&csv),
        String::from_utf8_lossy(SMALL_ALL)
    );
    assert_eq!(csv, SMALL_ALL);
    assert!(csv.starts_with(b"\xEF\xBB\xBF"));
    assert!(csv.ends_with(b"\r\n"));
    assert_eq!(
        csv.windows(2).filter(|w| w == b"\r\n").count(),
        csv.iter().filter(|&&b| b == b'\n').count(),
        "every line ends in CRLF"
    );
    assert_eq!(TradeBill::parse(SMALL_ALL).unwrap(), bill);
}

#[test]
fn streaming_writer_and_reader_match_the_in_memory_forms() {
    let bill = small_bill();
    let mut writer =
        TradeBillWriter::new(Vec::new(), TradeBillType::All, SummaryStyle::Fixed).unwrap();
    for row in &bill.rows {
        writer.write_row(row).unwrap();
    }
    let (bytes, summary) = writer.finish().unwrap();
    assert_eq!(bytes, SMALL_ALL);
    assert_eq!(summary, bill.summary);

    // Parse the fixture from a stream while hashing it: one pass gives rows and hash.
    let mut reader =
        TradeBillReader::new(BufReader::with_capacity(64, Sha1Reader::new(FIXTURE_ALL))).unwrap();
    let rows = reader.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(rows.len(), 45);
    assert_eq!(reader.summary().unwrap().trade_count, 45);
    let hasher = reader.into_inner().into_inner();
    assert_eq!(hasher.bytes_read(), FIXTURE_ALL.len() as u64);
    assert_eq!(
        hasher.hex_digest(),
        "9bb6cd819be348f17a9cbcedddc8eb62fefbd790"
    );
}

#[test]
fn gzip_round_trip_and_hash_is_of_the_uncompressed_bytes() {
    let hash_value = sha1_hex(FIXTURE_ALL);
    let body = gzip(FIXTURE_ALL);
    assert_eq!(&body[..2], &[0x1f, 0x8b]);
    assert!(
        body.len() < FIXTURE_ALL.len() / 4,
        "the bill compresses well"
    );
    assert_ne!(sha1_hex(&body), hash_value);
    let unpacked = gunzip(&body, 1 << 20).unwrap();
    assert_eq!(unpacked, FIXTURE_ALL);
    assert_eq!(sha1_hex(&unpacked), hash_value);
    assert!(matches!(
        gunzip(&body, FIXTURE_ALL.len() - 1),
        Err(BillError::TooLarge { .. })
    ));
    assert_eq!(gunzip(&body, FIXTURE_ALL.len()).unwrap(), FIXTURE_ALL);
}

#[test]
fn parser_tolerates_missing_bom_lf_endings_and_no_final_newline() {
    let expected = TradeBill::parse(FIXTURE_ALL).unwrap();
    let text = std::str::from_utf8(&FIXTURE_ALL[3..]).unwrap();
    assert_eq!(TradeBill::parse(text.as_bytes()).unwrap(), expected);
    let lf = text.replace("\r\n", "\n");
    assert_eq!(TradeBill::parse(lf.as_bytes()).unwrap(), expected);
    assert_eq!(
        TradeBill::parse(lf.trim_end().as_bytes()).unwrap(),
        expected
    );
    let extra_blank = format!("{text}\r\n\r\n");
    assert_eq!(TradeBill::parse(extra_blank.as_bytes()).unwrap(), expected);
}

#[test]
fn columns_are_found_by_name_in_any_order() {
    let expected = TradeBill::parse(FIXTURE_ALL).unwrap();
    let (header, cells) = fixture_cells();
    // Reverse the column order, and add a column we do not know.
    let mut out = String::from("\u{feff}新列,");
    out.push_str(&header.iter().rev().cloned().collect::<Vec<_>>().join(","));
    out.push_str("\r\n");
    for row in &cells {
        out.push_str("`x");
        for v in row.iter().rev() {
            out.push_str(",`");
            out.push_str(v);
        }
        out.push_str("\r\n");
    }
    let text = std::str::from_utf8(&FIXTURE_ALL[3..]).unwrap();
    let summary_lines: Vec<&str> = text.trim_end().rsplitn(3, "\r\n").collect();
    out.push_str(summary_lines[1]);
    out.push_str("\r\n");
    out.push_str(summary_lines[0]);
    out.push_str("\r\n");
    assert_eq!(TradeBill::parse(out.as_bytes()).unwrap(), expected);
}

#[test]
fn success_and_refund_layouts_follow_sdk_data() {
    let success = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注\r\n\
        `2024-05-01 08:00:00,`wx01,`1900000001,`0,`,`4200000002,`S-1,`oA,`NATIVE,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`测试,`att,`0.00000,`1.00%,`0.01,`\r\n\
        总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
        `1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00\r\n";
    let bill = TradeBill::parse(success.as_bytes()).unwrap();
    assert_eq!(bill.bill_type, TradeBillType::Success);
    assert_eq!(bill.rows[0].goods_name, "测试");
    assert_eq!(bill.rows[0].fee_rate, "1.00%");
    assert_eq!(bill.rows[0].refund_id, "");
    bill.verify_summary().unwrap();
    assert_eq!(
        bill.to_csv(),
        [b"\xEF\xBB\xBF".as_slice(), success.as_bytes()].concat()
    );

    let refund = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n\
        `2024-04-30 16:16:25,`wx01,`1900000001,`0,`,`4200000003,`S-2,`oA,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`2024-05-01 14:33:21,`2024-05-01 14:33:24,`50300000004,`R-2,`0.02,`0.00,`ORIGINAL,`SUCCESS,`测试,`,`-0.00012,`0.60%,`0.00,`0.02,`\r\n\
        总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
        `1,`0.00,`0.02,`0.00,`-0.00012,`0.00,`0.02\r\n";
    let bill = TradeBill::parse(refund.as_bytes()).unwrap();
    assert_eq!(bill.bill_type, TradeBillType::Refund);
    let row = &bill.rows[0];
    assert_eq!(row.refund_apply_time, "2024-05-01 14:33:21");
    assert_eq!(row.refund_success_time, "2024-05-01 14:33:24");
    assert_eq!(row.fee_milli_fen, -12);
    assert_eq!(row.refund_fen, 2);
    bill.verify_summary().unwrap();
    assert_eq!(
        bill.to_csv(),
        [b"\xEF\xBB\xBF".as_slice(), refund.as_bytes()].concat()
    );
}

#[test]
fn yuan_edge_cases_at_the_bill_boundary() {
    assert_eq!(yuan_to_fen("0.03"), Ok(3));
    assert_eq!(yuan_to_fen("45.0"), Ok(4500));
    assert_eq!(yuan_to_fen("-0.02"), Ok(-2));
    assert_eq!(fen_to_yuan(-2), "-0.02");
    for bad in ["", "1e3", "NaN", "1,000", "¥1.00", "0.001", " 1.00"] {
        assert!(yuan_to_fen(bad).is_err(), "{bad:?}");
    }
    // A bill amount with a sub-fen digit is refused, never rounded.
    let text = String::from_utf8(SMALL_ALL.to_vec()).unwrap();
    let bad = text.replacen("`123.45,", "`123.455,", 1);
    assert!(matches!(
        TradeBill::parse(bad.as_bytes()),
        Err(BillError::Amount { line: 2, .. })
    ));
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_,`\\\\ \r\n]{0,12}",
        "[咖啡大杯商品，、,`]{0,8}",
    ]
}

prop_compose! {
    fn trade_row()(
        texts in proptest::collection::vec(text(), 19),
        amounts in proptest::collection::vec(any::<i64>(), 7),
    ) -> TradeBillRow {
        let t = |i: usize| texts[i].clone();
        TradeBillRow {
            trade_time: t(0), appid: t(1), mchid: t(2), sub_mchid: t(3), device_id: t(4),
            transaction_id: t(5), out_trade_no: t(6), openid: t(7), trade_type: t(8),
            trade_state: t(9), bank_type: t(10), currency: t(11),
            settlement_total_fen: amounts[0], coupon_fen: amounts[1],
            refund_apply_time: t(12), refund_success_time: t(13),
            refund_id: t(14), out_refund_no: t(15), refund_fen: amounts[2],
            coupon_refund_fen: amounts[3], refund_type: t(16), refund_status: t(17),
            goods_name: t(18), attach: texts[18].chars().rev().collect(),
            fee_milli_fen: amounts[4], fee_rate: t(3), order_total_fen: amounts[5],
            refund_request_fen: amounts[6], fee_rate_remark: t(1),
        }
    }
}

/// Clears the columns a bill type does not carry, so a round trip can be exact.
fn fit_to_type(mut row: TradeBillRow, bill_type: TradeBillType) -> TradeBillRow {
    if bill_type != TradeBillType::Refund {
        row.refund_apply_time.clear();
        row.refund_success_time.clear();
    }
    if bill_type == TradeBillType::Success {
        row.refund_id.clear();
        row.out_refund_no.clear();
        row.refund_fen = 0;
        row.coupon_refund_fen = 0;
        row.refund_type.clear();
        row.refund_status.clear();
        row.refund_request_fen = 0;
    }
    row
}

fn bill_type() -> impl Strategy<Value = TradeBillType> {
    prop_oneof![
        Just(TradeBillType::All),
        Just(TradeBillType::Success),
        Just(TradeBillType::Refund)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn trade_bill_write_then_parse_is_identity(
        t in bill_type(),
        rows in proptest::collection::vec(trade_row(), 0..6),
        sample in any::<bool>(),
    ) {
        let rows: Vec<_> = rows.into_iter().map(|r| fit_to_type(r, t)).collect();
        let bill = TradeBill::summarize(t, rows);
        let style = if sample { SummaryStyle::Sample } else { SummaryStyle::Fixed };
        let parsed = TradeBill::parse(&bill.to_csv_with(style)).unwrap();
        prop_assert_eq!(parsed, bill);
    }

    #[test]
    fn summarize_totals_are_the_sums_of_the_rows(
        rows in proptest::collection::vec(
            (-10_000_000_000i64..10_000_000_000, -10_000_000_000i64..10_000_000_000, 0i64..1_000_000),
            0..50,
        ),
    ) {
        let rows: Vec<TradeBillRow> = rows.iter().map(|&(a, b, c)| TradeBillRow {
            settlement_total_fen: a,
            refund_fen: b,
            coupon_refund_fen: c,
            fee_milli_fen: a / 3,
            order_total_fen: a + c,
            refund_request_fen: b - c,
            ..TradeBillRow::default()
        }).collect();
        let bill = TradeBill::try_summarize(TradeBillType::All, rows.clone()).unwrap();
        let s = bill.summary;
        prop_assert_eq!(s.trade_count, rows.len() as u64);
        prop_assert_eq!(s.settlement_total_fen, rows.iter().map(|r| r.settlement_total_fen).sum::<i64>());
        prop_assert_eq!(s.refund_fen, rows.iter().map(|r| r.refund_fen).sum::<i64>());
        prop_assert_eq!(s.coupon_refund_fen, rows.iter().map(|r| r.coupon_refund_fen).sum::<i64>());
        prop_assert_eq!(s.fee_milli_fen, rows.iter().map(|r| r.fee_milli_fen).sum::<i64>());
        prop_assert_eq!(s.order_total_fen, rows.iter().map(|r| r.order_total_fen).sum::<i64>());
        prop_assert_eq!(s.refund_request_fen, rows.iter().map(|r| r.refund_request_fen).sum::<i64>());
        prop_assert!(bill.verify_summary().is_ok());
        prop_assert_eq!(TradeBill::summarize(TradeBillType::All, rows).summary, s);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = TradeBill::parse(&bytes);
        let _ = FundFlowBill::parse(&bytes);
        let _ = ProfitSharingBill::parse(&bytes);
        let _ = gunzip(&bytes, 4096);
    }

    #[test]
    fn parsers_never_panic_on_mangled_fixture_lines(cut in 0usize..14_686, junk in "[`,\r\n0-9.a-z]{0,8}") {
        let mut bytes = FIXTURE_ALL[..cut.min(FIXTURE_ALL.len())].to_vec();
        bytes.extend_from_slice(junk.as_bytes());
        bytes.extend_from_slice(&FIXTURE_ALL[cut.min(FIXTURE_ALL.len())..]);
        if let Ok(bill) = TradeBill::parse(&bytes) {
            // Whatever parses must write back into something that parses the same.
            prop_assert_eq!(TradeBill::parse(&bill.to_csv()).unwrap(), bill);
        }
    }

    #[test]
    fn fund_flow_write_then_parse_is_identity(
        rows in proptest::collection::vec(
            (proptest::collection::vec(text(), 9), any::<i64>(), any::<i64>(), any::<bool>()),
            0..6,
        ),
    ) {
        let rows: Vec<FundFlowRow> = rows.into_iter().map(|(t, amount, balance, income)| FundFlowRow {
            time: t[0].clone(), transaction_id: t[1].clone(), flow_id: t[2].clone(),
            biz_name: t[3].clone(), biz_type: t[4].clone(),
            direction: if income { "收入".into() } else { "支出".into() },
            amount_fen: amount, balance_fen: balance,
            applicant: t[5].clone(), remark: t[6].clone(), voucher_no: t[7].clone(),
        }).collect();
        let bill = FundFlowBill::summarize(rows);
        prop_assert_eq!(FundFlowBill::parse(&bill.to_csv()).unwrap(), bill.clone());
        prop_assert_eq!(FundFlowBill::parse(&bill.to_csv_with(SummaryStyle::Sample)).unwrap(), bill);
    }

    #[test]
    fn profit_sharing_write_then_parse_is_identity(
        rows in proptest::collection::vec(
            (proptest::collection::vec(text(), 11), any::<i64>(), any::<i64>()),
            0..6,
        ),
    ) {
        let rows: Vec<ProfitSharingBillRow> = rows.into_iter().map(|(t, order, amount)| ProfitSharingBillRow {
            time: t[0].clone(), initiator_mchid: t[1].clone(), mchid: t[2].clone(),
            transaction_id: t[3].clone(), order_id: t[4].clone(), detail_id: t[5].clone(),
            out_order_no: t[6].clone(), order_amount_fen: order, receiver: t[7].clone(),
            amount_fen: amount, biz_type: t[8].clone(), status: t[9].clone(), remark: t[10].clone(),
        }).collect();
        let bill = ProfitSharingBill::new(rows);
        prop_assert_eq!(ProfitSharingBill::parse(&bill.to_csv()).unwrap(), bill);
    }

    #[test]
    fn gzip_then_gunzip_is_identity(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let packed = gzip(&bytes);
        prop_assert_eq!(gunzip(&packed, bytes.len()).unwrap(), bytes);
    }
}
