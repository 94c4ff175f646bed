//! The channel side: a WeChat Pay trade bill (reference §7) read as compact records.
//!
//! [`open_bill`] reads only the header line and the two summary lines at the end; the detail
//! lines between are parsed by [`BillParser`] inside [`crate::scan`], many units at once.
//! Columns are found by header name, as the bill reader in `paygate_wxpay` does; a line is
//! split on `` ,` `` only, so an unescaped comma inside a text value cannot shift columns.
//! The detail totals are checked against the summary row: a truncated or edited bill is an
//! error, not a day of false discrepancies.

use paygate_wxpay::bill::{TradeBill, TradeBillSummary};

use crate::key::{Key, Kind};
use crate::record::{Record, State};
use crate::scan::{self, LineParser, ScanError, Source, Totals, parse_amount, parse_bill_time};

const BOM: &[u8] = b"\xEF\xBB\xBF";
const SUMMARY_HEADER_START: &str = "总交易单数";

/// Where a bill's detail lines are, how to read them, and what its summary says.
pub struct BillLayout {
    pub data_start: u64,
    pub data_end: u64,
    pub parser: BillParser,
    pub summary: TradeBillSummary,
}

/// Column positions of the fields matching needs.
pub struct BillParser {
    time: usize,
    out_trade_no: usize,
    trade_state: usize,
    settlement: usize,
    order_total: Option<usize>,
    out_refund_no: Option<usize>,
    refund: Option<usize>,
    refund_request: Option<usize>,
    coupon_refund: Option<usize>,
    refund_status: Option<usize>,
    fee: Option<usize>,
    last_needed: usize,
}

fn bad(offset: u64, issue: impl Into<String>) -> ScanError {
    ScanError::Line {
        offset,
        issue: issue.into(),
    }
}

/// Reads the header and the summary of a bill in `src`.
pub fn open_bill(src: &dyn Source) -> Result<BillLayout, ScanError> {
    let len = src.len();
    let mut head = vec![0u8; (scan::LINE_BYTES_MAX + 8).min(len as usize)];
    let n = scan::read_full_at(src, &mut head, 0)?;
    head.truncate(n);
    let skip = if head.starts_with(BOM) { BOM.len() } else { 0 };
    let nl = memchr::memchr(b'\n', &head).ok_or(paygate_wxpay::bill::BillError::Empty)?;
    let header_line = trim_cr(&head[skip..nl]);
    let data_start = (nl + 1) as u64;

    // The summary: the last two non-empty lines (header, values).
    let tail_len = (2 * scan::LINE_BYTES_MAX as u64).min(len - data_start);
    let mut tail = vec![0u8; tail_len as usize];
    let tail_at = len - tail_len;
    let got = scan::read_full_at(src, &mut tail, tail_at)?;
    tail.truncate(got);
    let text_end = tail
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |p| p + 1);
    let value_start = memchr::memrchr(b'\n', &tail[..text_end]).map_or(0, |p| p + 1);
    let header_start = if value_start == 0 {
        0
    } else {
        memchr::memrchr(b'\n', &tail[..value_start - 1]).map_or(0, |p| p + 1)
    };
    let summary_header = trim_cr(&tail[header_start..value_start.saturating_sub(1)]);
    if !summary_header.starts_with(SUMMARY_HEADER_START.as_bytes()) {
        return Err(paygate_wxpay::bill::BillError::MissingSummary.into());
    }
    let data_end = tail_at + header_start as u64;
    let mut mini = Vec::with_capacity(header_line.len() + text_end - header_start + 8);
    mini.extend_from_slice(header_line);
    mini.extend_from_slice(b"\r\n");
    mini.extend_from_slice(&tail[header_start..text_end]);
    mini.extend_from_slice(b"\r\n");
    let summary = TradeBill::parse(&mini)?.summary;
    let header = std::str::from_utf8(header_line)
        .map_err(|_| paygate_wxpay::bill::BillError::Utf8 { line: 1 })?;
    Ok(BillLayout {
        data_start,
        data_end: data_end.max(data_start),
        parser: BillParser::new(header)?,
        summary,
    })
}

fn trim_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

impl BillParser {
    /// Finds the columns in a header line (without BOM).
    pub fn new(header: &str) -> Result<BillParser, ScanError> {
        let names: Vec<&str> = header.split(',').collect();
        let find = |n: &str| names.iter().position(|h| *h == n);
        let need = |n: &'static str| {
            find(n).ok_or(paygate_wxpay::bill::BillError::MissingColumn { line: 1, column: n })
        };
        let mut p = BillParser {
            time: need("交易时间")?,
            out_trade_no: need("商户订单号")?,
            trade_state: need("交易状态")?,
            settlement: need("应结订单金额")?,
            order_total: find("订单金额"),
            out_refund_no: find("商户退款单号"),
            refund: find("退款金额"),
            refund_request: find("申请退款金额"),
            coupon_refund: find("充值券退款金额"),
            refund_status: find("退款状态"),
            fee: find("手续费"),
            last_needed: 0,
        };
        p.last_needed = [
            Some(p.time),
            Some(p.out_trade_no),
            Some(p.trade_state),
            Some(p.settlement),
            p.order_total,
            p.out_refund_no,
            p.refund,
            p.refund_request,
            p.coupon_refund,
            p.refund_status,
            p.fee,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        Ok(p)
    }
}

/// Splits a data line into its values (without the backticks), up to `last` inclusive.
/// One pass over the line's commas (a single vectorised search, not one call per value);
/// a comma not followed by a backtick is text, not a separator.
fn split_values<'a>(line: &'a [u8], last: usize, values: &mut [&'a [u8]; 32]) -> Option<()> {
    let rest = line.strip_prefix(b"`")?;
    let mut start = 0;
    let mut n = 0;
    for comma in memchr::memchr_iter(b',', rest) {
        if rest.get(comma + 1) != Some(&b'`') {
            continue;
        }
        values[n] = &rest[start..comma];
        n += 1;
        start = comma + 2;
        if n > last {
            return Some(());
        }
    }
    values[n] = &rest[start.min(rest.len())..];
    Some(())
}

fn amount(v: &[u8], scale: u32, offset: u64, column: &str) -> Result<i64, ScanError> {
    parse_amount(v, scale).ok_or_else(|| {
        bad(
            offset,
            format!("{column}: bad amount {:?}", String::from_utf8_lossy(v)),
        )
    })
}

impl LineParser for BillParser {
    fn parse_line(
        &self,
        line: &[u8],
        offset: u64,
        out: &mut Vec<Record>,
        t: &mut Totals,
    ) -> Result<(), ScanError> {
        if self.last_needed >= 32 {
            return Err(bad(offset, "too many columns"));
        }
        let mut v: [&[u8]; 32] = [&[]; 32];
        split_values(line, self.last_needed, &mut v)
            .ok_or_else(|| bad(offset, "values must start with a backtick"))?;
        let opt = |i: Option<usize>| i.map_or(&b""[..], |i| v[i]);
        let time_s =
            parse_bill_time(v[self.time]).ok_or_else(|| bad(offset, "交易时间: bad time"))?;
        let settlement = amount(v[self.settlement], 2, offset, "应结订单金额")?;
        let zero_or = |b: &[u8], scale| {
            if b.is_empty() {
                Ok(0)
            } else {
                amount(b, scale, offset, "amount")
            }
        };
        let fee = zero_or(opt(self.fee), 5)?;
        let refund_paid = zero_or(opt(self.refund), 2)?;
        let coupon_refund = zero_or(opt(self.coupon_refund), 2)?;
        let refund_request = zero_or(opt(self.refund_request), 2)?;
        let order_total = zero_or(opt(self.order_total), 2)?;
        t.rows += 1;
        t.settlement_fen += i128::from(settlement);
        t.refund_paid_fen += i128::from(refund_paid);
        t.coupon_refund_fen += i128::from(coupon_refund);
        t.fee_milli_fen += i128::from(fee);
        t.order_total_fen += i128::from(order_total);
        t.refund_request_fen += i128::from(refund_request);
        let record = match v[self.trade_state] {
            b"REFUND" => {
                let no = opt(self.out_refund_no);
                if no.is_empty() {
                    return Err(bad(offset, "refund row without 商户退款单号"));
                }
                let state = match opt(self.refund_status) {
                    b"SUCCESS" => State::RefundSuccess,
                    b"PROCESSING" | b"" => State::RefundProcessing,
                    b"FAIL" => State::RefundFailed,
                    b"CHANGE" => State::RefundAbnormal,
                    other => {
                        return Err(bad(
                            offset,
                            format!("退款状态 {:?}", String::from_utf8_lossy(other)),
                        ));
                    }
                };
                // 申请退款金额 is what was asked; 退款金额 what reached the payer (less coupons).
                let amount_fen = if self.refund_request.is_some() {
                    refund_request
                } else {
                    refund_paid
                };
                t.refunds += 1;
                t.refund_fen += i128::from(amount_fen);
                Record {
                    key: Key::new(Kind::Refund, no),
                    amount_fen,
                    fee_milli_fen: fee,
                    source: offset,
                    time_s,
                    state,
                }
            }
            s @ (b"SUCCESS" | b"REVOKED") => {
                let amount_fen = if self.order_total.is_some() {
                    order_total
                } else {
                    settlement
                };
                t.payments += 1;
                t.payment_fen += i128::from(amount_fen);
                let state = if s == b"SUCCESS" {
                    State::Paid
                } else {
                    State::Revoked
                };
                Record {
                    key: Key::new(Kind::Payment, v[self.out_trade_no]),
                    amount_fen,
                    fee_milli_fen: fee,
                    source: offset,
                    time_s,
                    state,
                }
            }
            other => {
                return Err(bad(
                    offset,
                    format!("交易状态 {:?}", String::from_utf8_lossy(other)),
                ));
            }
        };
        out.push(record);
        Ok(())
    }
}

/// Checks the scanned detail totals against the bill's own summary row.
pub fn check_summary(summary: &TradeBillSummary, t: &Totals) -> Result<(), ScanError> {
    let checks: [(&str, i128, i128); 7] = [
        (
            "总交易单数",
            i128::from(summary.trade_count),
            i128::from(t.rows),
        ),
        (
            "应结订单总金额",
            i128::from(summary.settlement_total_fen),
            t.settlement_fen,
        ),
        (
            "退款总金额",
            i128::from(summary.refund_fen),
            t.refund_paid_fen,
        ),
        (
            "充值券退款总金额",
            i128::from(summary.coupon_refund_fen),
            t.coupon_refund_fen,
        ),
        (
            "手续费总金额",
            i128::from(summary.fee_milli_fen),
            t.fee_milli_fen,
        ),
        (
            "订单总金额",
            i128::from(summary.order_total_fen),
            t.order_total_fen,
        ),
        (
            "申请退款总金额",
            i128::from(summary.refund_request_fen),
            t.refund_request_fen,
        ),
    ];
    for (field, stated, computed) in checks {
        if stated != computed {
            return Err(ScanError::Summary(format!(
                "bill summary {field}: file says {stated}, rows add up to {computed}"
            )));
        }
    }
    Ok(())
}

/// The full row behind a channel record, for a discrepancy's evidence: the bill line at
/// `offset` re-read with the exact parser of `paygate_wxpay`.
pub fn evidence_row(
    src: &dyn Source,
    header: &[u8],
    offset: u64,
) -> Result<paygate_wxpay::bill::TradeBillRow, ScanError> {
    let mut buf = vec![0u8; scan::LINE_BYTES_MAX];
    let n = scan::read_full_at(src, &mut buf, offset)?;
    let end = memchr::memchr(b'\n', &buf[..n]).unwrap_or(n);
    let mut mini = Vec::with_capacity(header.len() + end + 64);
    mini.extend_from_slice(header);
    mini.extend_from_slice(b"\r\n");
    mini.extend_from_slice(trim_cr(&buf[..end]));
    mini.extend_from_slice(b"\r\n");
    let mut reader = paygate_wxpay::bill::TradeBillReader::new(&mini[..])?;
    match reader.next() {
        Some(Ok(row)) => Ok(row),
        Some(Err(e)) => Err(e.into()),
        None => Err(bad(offset, "no row at this offset")),
    }
}

/// The header line of a bill (without BOM and line break), for [`evidence_row`].
pub fn header_line(src: &dyn Source) -> Result<Vec<u8>, ScanError> {
    let mut head = vec![0u8; (scan::LINE_BYTES_MAX + 8).min(src.len() as usize)];
    let n = scan::read_full_at(src, &mut head, 0)?;
    head.truncate(n);
    let skip = if head.starts_with(BOM) { BOM.len() } else { 0 };
    let nl = memchr::memchr(b'\n', &head).ok_or(paygate_wxpay::bill::BillError::Empty)?;
    Ok(trim_cr(&head[skip..nl]).to_vec())
}
