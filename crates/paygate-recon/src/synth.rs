//! A generated business day: the channel's trade bill (WeChat's exact format) and the
//! platform's records, with faults injected at known keys. The ground truth for the tests
//! ("every injected fault found exactly once, nothing else") and the benchmark's data.
//!
//! Keys are 30-digit attempt ids and 29-digit refund ids like paygate's, scattered by a
//! multiplicative permutation so neither file is in key order. Both files also carry rows
//! that must NOT be discrepancies: unpaid orders absent from the bill, and refunds the bill
//! shows PROCESSING (its snapshot) that later succeeded.

use std::io::{self, Write};

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::key::{Key, Kind};
use crate::matcher::Class;
use crate::platform::{HEADER, PlatformLine};
use crate::record::{FEE_UNKNOWN, State};

/// What to inject, counts per fault.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Faults {
    /// The payment reached the channel, its notification never reached paygate.
    pub lost_notification: u64,
    /// The channel shows another amount.
    pub changed_amount: u64,
    /// The channel has no row for a paid order.
    pub missing_row: u64,
    /// The channel has a payment paygate never saw.
    pub channel_only: u64,
    /// A channel row repeated.
    pub duplicate_row: u64,
    /// The channel charged another fee.
    pub fee_mismatch: u64,
    /// The bill says the refund failed, paygate says it succeeded.
    pub refund_status: u64,
}

impl Faults {
    pub const fn none() -> Faults {
        Faults {
            lost_notification: 0,
            changed_amount: 0,
            missing_row: 0,
            channel_only: 0,
            duplicate_row: 0,
            fee_mismatch: 0,
            refund_status: 0,
        }
    }

    pub const fn each(n: u64) -> Faults {
        Faults {
            lost_notification: n,
            changed_amount: n,
            missing_row: n,
            channel_only: n,
            duplicate_row: n,
            fee_mismatch: n,
            refund_status: n,
        }
    }

    fn total(&self) -> u64 {
        self.lost_notification
            + self.changed_amount
            + self.missing_row
            + self.channel_only
            + self.duplicate_row
            + self.fee_mismatch
            + self.refund_status
    }
}

/// The day to generate.
#[derive(Clone, Debug)]
pub struct DaySpec {
    pub date: time::Date,
    /// Paid orders (payment rows of the bill).
    pub orders: u64,
    /// One refund per this many orders (0 = none).
    pub refund_every: u64,
    /// One unpaid order (platform only, rightly absent) per this many orders (0 = none).
    pub unpaid_every: u64,
    pub faults: Faults,
    pub fee_rate_bp: i64,
    pub seed: u64,
}

/// The ground truth: each injected fault's key and the class it must be found as.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    pub expected: Vec<(Class, Key)>,
    pub bill_rows: u64,
    pub platform_rows: u64,
}

const APPID: &str = "wxd678efh567hg6787";
const MCHID: &str = "1900000109";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

/// Round half up to the fen, as the bill shows fees (`0.01000`).
pub fn fee_fen(total_fen: i64, fee_rate_bp: i64) -> i64 {
    (total_fen * fee_rate_bp + 5_000) / 10_000
}

fn yuan(out: &mut Vec<u8>, fen: i64, scale: u32) {
    out.extend_from_slice(paygate_core::money::format_decimal_minor(fen, scale).as_bytes());
}

struct Ids {
    ymd: String,
    n: u64,
}

impl Ids {
    /// A bijection of 0..10^10 so ids are unique but scattered.
    fn scatter(&self, i: u64) -> u64 {
        const M: u64 = 10_000_000_000;
        // 7_777_777_777 is coprime with 10^10 (odd, not a multiple of 5).
        ((i as u128 * 7_777_777_777u128 + 12_345) % M as u128) as u64
    }
    fn attempt(&self, i: u64) -> String {
        format!("4200000000{}{:010}01", self.ymd, self.scatter(i))
    }
    fn transaction(&self, i: u64) -> String {
        format!("4200000000{}{:010}", self.ymd, self.scatter(i))
    }
    fn refund(&self, i: u64) -> String {
        format!("500000000{}{:010}01", self.ymd, self.scatter(i + self.n))
    }
}

struct BillRow<'a> {
    time: &'a str,
    txid: &'a str,
    out_trade_no: &'a str,
    refund: Option<(&'a str, &'a str)>,
    amount_fen: i64,
    fee_milli_fen: i64,
    status: &'a str,
}

fn bill_row(out: &mut Vec<u8>, r: &BillRow<'_>) {
    out.push(b'`');
    out.extend_from_slice(r.time.as_bytes());
    for v in [
        APPID,
        MCHID,
        "0",
        "",
        r.txid,
        r.out_trade_no,
        OPENID,
        "JSAPI",
    ] {
        out.extend_from_slice(b",`");
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(if r.refund.is_some() {
        b",`REFUND"
    } else {
        b",`SUCCESS"
    });
    out.extend_from_slice(b",`OTHERS,`CNY,`");
    match r.refund {
        None => {
            yuan(out, r.amount_fen, 2);
            out.extend_from_slice(b",`0.00,`0,`0,`0.00,`0.00,`,`,`");
        }
        Some((refund_id, out_refund_no)) => {
            out.extend_from_slice(b"0.00,`0.00,`");
            out.extend_from_slice(refund_id.as_bytes());
            out.extend_from_slice(b",`");
            out.extend_from_slice(out_refund_no.as_bytes());
            out.extend_from_slice(b",`");
            yuan(out, r.amount_fen, 2);
            out.extend_from_slice(b",`0.00,`ORIGINAL,`");
            out.extend_from_slice(r.status.as_bytes());
            out.extend_from_slice(b",`");
        }
    }
    out.extend_from_slice("测试商品".as_bytes());
    out.extend_from_slice(b",`,`");
    yuan(out, r.fee_milli_fen, 5);
    out.extend_from_slice(b",`0.60%,`");
    match r.refund {
        None => {
            yuan(out, r.amount_fen, 2);
            out.extend_from_slice(b",`0.00,`\r\n");
        }
        Some(_) => {
            out.extend_from_slice(b"0.00,`");
            yuan(out, r.amount_fen, 2);
            out.extend_from_slice(b",`\r\n");
        }
    }
}

const BILL_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";

#[derive(Default)]
struct Sums {
    rows: u64,
    settlement: i64,
    refund: i64,
    fee_milli: i64,
    order_total: i64,
    refund_request: i64,
}

/// Writes the day's bill to `bill` and the platform's records to `platform`.
pub fn generate(
    spec: &DaySpec,
    bill: &mut impl Write,
    platform: &mut impl Write,
) -> io::Result<Truth> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let ids = Ids {
        ymd: paygate_core::timefmt::format_date(spec.date).replace('-', ""),
        n: spec.orders + spec.faults.total() + 10,
    };
    let day = paygate_core::timefmt::format_date(spec.date);
    let mut truth = Truth::default();
    let mut sums = Sums::default();
    let mut out = Vec::with_capacity(1 << 20);
    out.extend_from_slice(b"\xEF\xBB\xBF");
    out.extend_from_slice(BILL_HEADER.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut plat = Vec::with_capacity(1 << 20);
    plat.extend_from_slice(HEADER.as_bytes());
    plat.push(b'\n');

    // Fault slots: the first orders carry the faults, in this order (keys are scattered anyway).
    let f = &spec.faults;
    let bounds = [
        f.lost_notification,
        f.changed_amount,
        f.missing_row,
        f.duplicate_row,
        f.fee_mismatch,
    ];
    let mut cuts = [0u64; 5];
    let mut acc = 0;
    for (i, b) in bounds.iter().enumerate() {
        acc += b;
        cuts[i] = acc;
    }
    let mut refund_faults_left = f.refund_status;
    let total_orders = spec.orders + f.channel_only;
    for i in 0..total_orders {
        let secs = rng.random_range(0..86_400u32);
        let time = format!(
            "{day} {:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        let amount = rng.random_range(1..200_000i64);
        let fee_milli = fee_fen(amount, spec.fee_rate_bp) * 1000;
        let (attempt, txid) = (ids.attempt(i), ids.transaction(i));
        let key = Key::new(Kind::Payment, attempt.as_bytes());
        let channel_only = i >= spec.orders;
        let slot = cuts.iter().position(|&c| i < c);
        let mut bill_amount = amount;
        let mut bill_fee = fee_milli;
        let mut bill_copies = 1;
        let mut plat_state = State::Paid;
        match (channel_only, slot) {
            (true, _) => truth.expected.push((Class::ChannelOnly, key)),
            (false, Some(0)) => {
                plat_state = State::Unpaid;
                truth.expected.push((Class::StatusMismatch, key));
            }
            (false, Some(1)) => {
                bill_amount = amount + 1;
                bill_fee = fee_fen(bill_amount, spec.fee_rate_bp) * 1000;
                truth.expected.push((Class::AmountMismatch, key));
            }
            (false, Some(2)) => {
                bill_copies = 0;
                truth.expected.push((Class::PlatformOnly, key));
            }
            (false, Some(3)) => {
                bill_copies = 2;
                truth.expected.push((Class::Duplicate, key));
            }
            (false, Some(4)) => {
                bill_fee = fee_milli + 1000;
                truth.expected.push((Class::FeeMismatch, key));
            }
            _ => {}
        }
        for _ in 0..bill_copies {
            bill_row(
                &mut out,
                &BillRow {
                    time: &time,
                    txid: &txid,
                    out_trade_no: &attempt,
                    refund: None,
                    amount_fen: bill_amount,
                    fee_milli_fen: bill_fee,
                    status: "",
                },
            );
            sums.rows += 1;
            sums.settlement += bill_amount;
            sums.order_total += bill_amount;
            sums.fee_milli += bill_fee;
            truth.bill_rows += 1;
        }
        if !channel_only {
            PlatformLine {
                kind: Kind::Payment,
                out_no: &attempt,
                transaction_id: &txid,
                mchid: MCHID,
                amount_fen: amount,
                fee_milli_fen: fee_milli,
                state: plat_state,
                time: &time,
            }
            .write_to(&mut plat)?;
            truth.platform_rows += 1;
        }
        if spec.unpaid_every > 0 && i % spec.unpaid_every == 0 && !channel_only {
            // An order that was never paid: on the platform only, rightly.
            let j = ids.n * 2 + i;
            let (a, t) = (ids.attempt(j), ids.transaction(j));
            PlatformLine {
                kind: Kind::Payment,
                out_no: &a,
                transaction_id: &t,
                mchid: MCHID,
                amount_fen: amount,
                fee_milli_fen: FEE_UNKNOWN,
                state: State::Unpaid,
                time: &time,
            }
            .write_to(&mut plat)?;
            truth.platform_rows += 1;
        }
        if spec.refund_every > 0 && i % spec.refund_every == 1 && !channel_only && slot.is_none() {
            let refund_no = ids.refund(i);
            let rkey = Key::new(Kind::Refund, refund_no.as_bytes());
            let refund_amount = rng.random_range(1..=amount);
            // Half the refunds are still PROCESSING in the bill's snapshot and SUCCESS now.
            let (bill_status, plat_state) = if refund_faults_left > 0 {
                refund_faults_left -= 1;
                truth.expected.push((Class::StatusMismatch, rkey));
                ("FAIL", State::RefundSuccess)
            } else if rng.random_bool(0.5) {
                ("PROCESSING", State::RefundSuccess)
            } else {
                ("SUCCESS", State::RefundSuccess)
            };
            let wx_refund_id = format!("5{refund_no}");
            bill_row(
                &mut out,
                &BillRow {
                    time: &time,
                    txid: &txid,
                    out_trade_no: &attempt,
                    refund: Some((&wx_refund_id, &refund_no)),
                    amount_fen: refund_amount,
                    fee_milli_fen: 0,
                    status: bill_status,
                },
            );
            sums.rows += 1;
            sums.refund += refund_amount;
            sums.refund_request += refund_amount;
            truth.bill_rows += 1;
            PlatformLine {
                kind: Kind::Refund,
                out_no: &refund_no,
                transaction_id: &txid,
                mchid: MCHID,
                amount_fen: refund_amount,
                fee_milli_fen: FEE_UNKNOWN,
                state: plat_state,
                time: &time,
            }
            .write_to(&mut plat)?;
            truth.platform_rows += 1;
        }
        if out.len() > (1 << 20) - 4096 {
            bill.write_all(&out)?;
            out.clear();
        }
        if plat.len() > (1 << 20) - 4096 {
            platform.write_all(&plat)?;
            plat.clear();
        }
    }
    out.extend_from_slice("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n".as_bytes());
    out.push(b'`');
    out.extend_from_slice(sums.rows.to_string().as_bytes());
    for (v, scale) in [
        (sums.settlement, 2),
        (sums.refund, 2),
        (0, 2),
        (sums.fee_milli, 5),
        (sums.order_total, 2),
        (sums.refund_request, 2),
    ] {
        out.extend_from_slice(b",`");
        yuan(&mut out, v, scale);
    }
    out.extend_from_slice(b"\r\n");
    bill.write_all(&out)?;
    platform.write_all(&plat)?;
    if refund_faults_left > 0 {
        return Err(io::Error::other(
            "too few refunds for the refund faults: lower refund_every",
        ));
    }
    Ok(truth)
}
