//! The trade bill (交易账单) of `GET /v3/bill/tradebill`, types ALL, SUCCESS and REFUND:
//! rows, summary, a byte-exact writer (in memory or streaming) and a streaming parser.
//!
//! Column sets (reference §7; SUCCESS and REFUND orders from SDK test data, wechatpay
//! WxJava `WxPayBillResultTest` and gunsluo/wechatpay-go `tradebill_test.go`):
//! - ALL, 27 columns: the fixture's header.
//! - SUCCESS, 20: ALL without the six refund columns and 申请退款金额.
//! - REFUND, 29: ALL plus 退款申请时间 and 退款成功时间 after 代金券金额.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::BillError;
use super::csv::{
    BOM, ColumnIndex, RawItem, RawReader, SummaryStyle, SummaryValues, bill_columns, fill_row,
    require_columns, write_header, write_row,
};

/// The `bill_type` query value of a trade bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TradeBillType {
    /// Payments and refunds of the day (the default).
    All,
    /// Payments only.
    Success,
    /// Refunds only.
    Refund,
}

impl TradeBillType {
    pub const fn as_str(self) -> &'static str {
        match self {
            TradeBillType::All => "ALL",
            TradeBillType::Success => "SUCCESS",
            TradeBillType::Refund => "REFUND",
        }
    }

    /// Parses the query value exactly (`ALL`, `SUCCESS`, `REFUND`).
    pub fn parse(s: &str) -> Result<TradeBillType, BillError> {
        match s {
            "ALL" => Ok(TradeBillType::All),
            "SUCCESS" => Ok(TradeBillType::Success),
            "REFUND" => Ok(TradeBillType::Refund),
            other => Err(BillError::UnknownBillType(other.to_owned())),
        }
    }

    fn columns(self) -> &'static [Col] {
        match self {
            TradeBillType::All => ALL_COLUMNS,
            TradeBillType::Success => SUCCESS_COLUMNS,
            TradeBillType::Refund => REFUND_COLUMNS,
        }
    }

    /// The type a header describes, told apart by the columns only one type has.
    fn of_header(header: &[String]) -> TradeBillType {
        let has = |c: Col| header.iter().any(|h| h == c.name());
        if has(Col::RefundApplyTime) {
            TradeBillType::Refund
        } else if has(Col::RefundId) {
            TradeBillType::All
        } else {
            TradeBillType::Success
        }
    }
}

impl std::fmt::Display for TradeBillType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TradeBillType {
    type Err = BillError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TradeBillType::parse(s)
    }
}

/// One detail row. Text is kept exactly as the bill shows it (so a payment row's refund
/// numbers are `"0"` and its refund type is empty, as WeChat writes them); amounts are
/// integers: fen for yuan columns, and 1/1000 fen for the 5-decimal fee.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TradeBillRow {
    /// 交易时间, `YYYY-MM-DD HH:MM:SS` Beijing time. In ALL bills a refund row carries the
    /// refund's time; in REFUND bills (SDK data) it is the original payment's time.
    pub trade_time: String,
    /// 公众账号ID.
    pub appid: String,
    /// 商户号.
    pub mchid: String,
    /// 特约商户号: `"0"` for a direct merchant.
    pub sub_mchid: String,
    /// 设备号.
    pub device_id: String,
    /// 微信订单号.
    pub transaction_id: String,
    /// 商户订单号.
    pub out_trade_no: String,
    /// 用户标识 (openid).
    pub openid: String,
    /// 交易类型: JSAPI, NATIVE, APP, MWEB, MICROPAY...
    pub trade_type: String,
    /// 交易状态: SUCCESS (payment row), REFUND (refund row) or REVOKED.
    pub trade_state: String,
    /// 付款银行.
    pub bank_type: String,
    /// 货币种类.
    pub currency: String,
    /// 应结订单金额 (0 on refund rows).
    pub settlement_total_fen: i64,
    /// 代金券金额.
    pub coupon_fen: i64,
    /// 退款申请时间: only in REFUND bills.
    pub refund_apply_time: String,
    /// 退款成功时间: only in REFUND bills.
    pub refund_success_time: String,
    /// 微信退款单号 (`"0"` on payment rows).
    pub refund_id: String,
    /// 商户退款单号 (`"0"` on payment rows).
    pub out_refund_no: String,
    /// 退款金额.
    pub refund_fen: i64,
    /// 充值券退款金额.
    pub coupon_refund_fen: i64,
    /// 退款类型: ORIGINAL or BALANCE.
    pub refund_type: String,
    /// 退款状态: SUCCESS, PROCESSING, FAIL or CHANGE (the bill's own enum).
    pub refund_status: String,
    /// 商品名称.
    pub goods_name: String,
    /// 商户数据包.
    pub attach: String,
    /// 手续费 in 1/1000 fen (the bill shows 5 decimals of yuan); negative when refunded.
    pub fee_milli_fen: i64,
    /// 费率, e.g. `0.60%`.
    pub fee_rate: String,
    /// 订单金额.
    pub order_total_fen: i64,
    /// 申请退款金额.
    pub refund_request_fen: i64,
    /// 费率备注.
    pub fee_rate_remark: String,
}

bill_columns! { TradeBillRow;
    TradeTime "交易时间" trade_time text,
    Appid "公众账号ID" appid text,
    Mchid "商户号" mchid text,
    SubMchid "特约商户号" sub_mchid text,
    DeviceId "设备号" device_id text,
    TransactionId "微信订单号" transaction_id text,
    OutTradeNo "商户订单号" out_trade_no text,
    Openid "用户标识" openid text,
    TradeType "交易类型" trade_type text,
    TradeState "交易状态" trade_state text,
    BankType "付款银行" bank_type text,
    Currency "货币种类" currency text,
    SettlementTotal "应结订单金额" settlement_total_fen yuan,
    Coupon "代金券金额" coupon_fen yuan,
    RefundApplyTime "退款申请时间" refund_apply_time text,
    RefundSuccessTime "退款成功时间" refund_success_time text,
    RefundId "微信退款单号" refund_id text,
    OutRefundNo "商户退款单号" out_refund_no text,
    Refund "退款金额" refund_fen yuan,
    CouponRefund "充值券退款金额" coupon_refund_fen yuan,
    RefundType "退款类型" refund_type text,
    RefundStatus "退款状态" refund_status text,
    GoodsName "商品名称" goods_name text,
    Attach "商户数据包" attach text,
    Fee "手续费" fee_milli_fen fee,
    FeeRate "费率" fee_rate text,
    OrderTotal "订单金额" order_total_fen yuan,
    RefundRequest "申请退款金额" refund_request_fen yuan,
    FeeRateRemark "费率备注" fee_rate_remark text,
}

const ALL_COLUMNS: &[Col] = &[
    Col::TradeTime,
    Col::Appid,
    Col::Mchid,
    Col::SubMchid,
    Col::DeviceId,
    Col::TransactionId,
    Col::OutTradeNo,
    Col::Openid,
    Col::TradeType,
    Col::TradeState,
    Col::BankType,
    Col::Currency,
    Col::SettlementTotal,
    Col::Coupon,
    Col::RefundId,
    Col::OutRefundNo,
    Col::Refund,
    Col::CouponRefund,
    Col::RefundType,
    Col::RefundStatus,
    Col::GoodsName,
    Col::Attach,
    Col::Fee,
    Col::FeeRate,
    Col::OrderTotal,
    Col::RefundRequest,
    Col::FeeRateRemark,
];

const SUCCESS_COLUMNS: &[Col] = &[
    Col::TradeTime,
    Col::Appid,
    Col::Mchid,
    Col::SubMchid,
    Col::DeviceId,
    Col::TransactionId,
    Col::OutTradeNo,
    Col::Openid,
    Col::TradeType,
    Col::TradeState,
    Col::BankType,
    Col::Currency,
    Col::SettlementTotal,
    Col::Coupon,
    Col::GoodsName,
    Col::Attach,
    Col::Fee,
    Col::FeeRate,
    Col::OrderTotal,
    Col::FeeRateRemark,
];

const REFUND_COLUMNS: &[Col] = &[
    Col::TradeTime,
    Col::Appid,
    Col::Mchid,
    Col::SubMchid,
    Col::DeviceId,
    Col::TransactionId,
    Col::OutTradeNo,
    Col::Openid,
    Col::TradeType,
    Col::TradeState,
    Col::BankType,
    Col::Currency,
    Col::SettlementTotal,
    Col::Coupon,
    Col::RefundApplyTime,
    Col::RefundSuccessTime,
    Col::RefundId,
    Col::OutRefundNo,
    Col::Refund,
    Col::CouponRefund,
    Col::RefundType,
    Col::RefundStatus,
    Col::GoodsName,
    Col::Attach,
    Col::Fee,
    Col::FeeRate,
    Col::OrderTotal,
    Col::RefundRequest,
    Col::FeeRateRemark,
];

/// Columns without which a row cannot be matched or summed.
const REQUIRED: &[&str] = &[
    "交易时间",
    "微信订单号",
    "商户订单号",
    "交易状态",
    "应结订单金额",
];
const REQUIRED_REFUND: &[&str] = &["微信退款单号", "商户退款单号", "退款金额"];

const S_COUNT: &str = "总交易单数";
const S_SETTLEMENT: &str = "应结订单总金额";
const S_REFUND: &str = "退款总金额";
const S_COUPON_REFUND: &str = "充值券退款总金额";
const S_FEE: &str = "手续费总金额";
const S_ORDER_TOTAL: &str = "订单总金额";
const S_REFUND_REQUEST: &str = "申请退款总金额";
const SUMMARY_COLUMNS: [&str; 7] = [
    S_COUNT,
    S_SETTLEMENT,
    S_REFUND,
    S_COUPON_REFUND,
    S_FEE,
    S_ORDER_TOTAL,
    S_REFUND_REQUEST,
];

/// The summary row: counts and column totals of the detail rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TradeBillSummary {
    /// 总交易单数: the number of detail rows, payments and refunds alike.
    pub trade_count: u64,
    /// 应结订单总金额.
    pub settlement_total_fen: i64,
    /// 退款总金额.
    pub refund_fen: i64,
    /// 充值券退款总金额.
    pub coupon_refund_fen: i64,
    /// 手续费总金额, 1/1000 fen.
    pub fee_milli_fen: i64,
    /// 订单总金额.
    pub order_total_fen: i64,
    /// 申请退款总金额.
    pub refund_request_fen: i64,
}

impl TradeBillSummary {
    /// The exact totals of `rows`, or an error if one does not fit in an `i64`.
    pub fn of_rows<'a>(
        rows: impl IntoIterator<Item = &'a TradeBillRow>,
    ) -> Result<TradeBillSummary, BillError> {
        let mut totals = Totals::default();
        rows.into_iter().for_each(|r| totals.add(r));
        totals.checked()
    }

    fn from_values(v: &SummaryValues) -> Result<TradeBillSummary, BillError> {
        Ok(TradeBillSummary {
            trade_count: v.count(S_COUNT)?,
            settlement_total_fen: v.amount(S_SETTLEMENT, 2)?,
            refund_fen: v.amount(S_REFUND, 2)?,
            coupon_refund_fen: v.amount(S_COUPON_REFUND, 2)?,
            fee_milli_fen: v.amount(S_FEE, 5)?,
            order_total_fen: v.amount(S_ORDER_TOTAL, 2)?,
            refund_request_fen: v.amount(S_REFUND_REQUEST, 2)?,
        })
    }

    fn write(&self, out: &mut Vec<u8>, style: SummaryStyle) {
        write_header(out, SUMMARY_COLUMNS);
        let values = [
            style.count(self.trade_count),
            style.amount(self.settlement_total_fen, 2),
            style.amount(self.refund_fen, 2),
            style.amount(self.coupon_refund_fen, 2),
            style.amount(self.fee_milli_fen, 5),
            style.amount(self.order_total_fen, 2),
            style.amount(self.refund_request_fen, 2),
        ];
        let mut line = super::csv::RecordLine::new(out);
        values.iter().for_each(|v| line.value(v));
        line.end();
    }
}

/// Running totals, wide enough that no realistic number of rows can overflow them.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    count: u64,
    settlement: i128,
    refund: i128,
    coupon_refund: i128,
    fee: i128,
    order_total: i128,
    refund_request: i128,
}

impl Totals {
    fn add(&mut self, r: &TradeBillRow) {
        self.count = self.count.saturating_add(1);
        self.settlement += i128::from(r.settlement_total_fen);
        self.refund += i128::from(r.refund_fen);
        self.coupon_refund += i128::from(r.coupon_refund_fen);
        self.fee += i128::from(r.fee_milli_fen);
        self.order_total += i128::from(r.order_total_fen);
        self.refund_request += i128::from(r.refund_request_fen);
    }

    fn fields(&self) -> [(&'static str, i128); 6] {
        [
            (S_SETTLEMENT, self.settlement),
            (S_REFUND, self.refund),
            (S_COUPON_REFUND, self.coupon_refund),
            (S_FEE, self.fee),
            (S_ORDER_TOTAL, self.order_total),
            (S_REFUND_REQUEST, self.refund_request),
        ]
    }

    fn checked(&self) -> Result<TradeBillSummary, BillError> {
        let narrow = |field: &'static str, v: i128| {
            i64::try_from(v).map_err(|_| BillError::SummaryOverflow { field })
        };
        Ok(TradeBillSummary {
            trade_count: self.count,
            settlement_total_fen: narrow(S_SETTLEMENT, self.settlement)?,
            refund_fen: narrow(S_REFUND, self.refund)?,
            coupon_refund_fen: narrow(S_COUPON_REFUND, self.coupon_refund)?,
            fee_milli_fen: narrow(S_FEE, self.fee)?,
            order_total_fen: narrow(S_ORDER_TOTAL, self.order_total)?,
            refund_request_fen: narrow(S_REFUND_REQUEST, self.refund_request)?,
        })
    }

    fn saturated(&self) -> TradeBillSummary {
        let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        TradeBillSummary {
            trade_count: self.count,
            settlement_total_fen: clamp(self.settlement),
            refund_fen: clamp(self.refund),
            coupon_refund_fen: clamp(self.coupon_refund),
            fee_milli_fen: clamp(self.fee),
            order_total_fen: clamp(self.order_total),
            refund_request_fen: clamp(self.refund_request),
        }
    }
}

/// A whole trade bill in memory. For bills too large for memory use [`TradeBillWriter`]
/// and [`TradeBillReader`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeBill {
    pub bill_type: TradeBillType,
    pub rows: Vec<TradeBillRow>,
    pub summary: TradeBillSummary,
}

impl TradeBill {
    /// A bill of `rows` with its summary computed from them. The caller picks the rows
    /// that belong to the type (SUCCESS: payment rows; REFUND: refund rows). Totals beyond
    /// ±9.2e16 yuan would saturate; [`TradeBill::try_summarize`] reports that instead.
    pub fn summarize(bill_type: TradeBillType, rows: Vec<TradeBillRow>) -> TradeBill {
        let mut totals = Totals::default();
        rows.iter().for_each(|r| totals.add(r));
        TradeBill {
            bill_type,
            summary: totals.saturated(),
            rows,
        }
    }

    /// Like [`TradeBill::summarize`], but a total that does not fit in an `i64` is an error.
    pub fn try_summarize(
        bill_type: TradeBillType,
        rows: Vec<TradeBillRow>,
    ) -> Result<TradeBill, BillError> {
        let summary = TradeBillSummary::of_rows(&rows)?;
        Ok(TradeBill {
            bill_type,
            rows,
            summary,
        })
    }

    /// The file bytes, summary in the default [`SummaryStyle`].
    pub fn to_csv(&self) -> Vec<u8> {
        self.to_csv_with(SummaryStyle::default())
    }

    /// The file bytes with the stored summary (not recomputed) in `style`.
    pub fn to_csv_with(&self, style: SummaryStyle) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.rows.len() * 320);
        out.extend_from_slice(BOM);
        let columns = self.bill_type.columns();
        write_header(&mut out, columns.iter().map(|c| c.name()));
        for row in &self.rows {
            write_row(&mut out, columns, row, Col::get);
        }
        self.summary.write(&mut out, style);
        out
    }

    /// Parses a whole bill. The summary is taken as the file states it; see
    /// [`TradeBill::verify_summary`] to check it against the rows.
    pub fn parse(bytes: &[u8]) -> Result<TradeBill, BillError> {
        let mut reader = TradeBillReader::new(bytes)?;
        let rows = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        let summary = reader.summary().copied().ok_or(BillError::MissingSummary)?;
        Ok(TradeBill {
            bill_type: reader.bill_type(),
            rows,
            summary,
        })
    }

    /// Checks that the stated summary equals the totals of the rows.
    pub fn verify_summary(&self) -> Result<(), BillError> {
        let mut totals = Totals::default();
        self.rows.iter().for_each(|r| totals.add(r));
        verify(&self.summary, &totals)
    }
}

fn verify(stated: &TradeBillSummary, totals: &Totals) -> Result<(), BillError> {
    if stated.trade_count != totals.count {
        return Err(BillError::SummaryMismatch {
            field: S_COUNT,
            stated: i128::from(stated.trade_count),
            computed: i128::from(totals.count),
        });
    }
    let stated_fields = [
        stated.settlement_total_fen,
        stated.refund_fen,
        stated.coupon_refund_fen,
        stated.fee_milli_fen,
        stated.order_total_fen,
        stated.refund_request_fen,
    ];
    for ((field, computed), stated) in totals.fields().into_iter().zip(stated_fields) {
        if i128::from(stated) != computed {
            return Err(BillError::SummaryMismatch {
                field,
                stated: i128::from(stated),
                computed,
            });
        }
    }
    Ok(())
}

/// Bytes buffered before a write to the underlying sink: batches many rows per syscall.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Writes a trade bill row by row to any sink and computes the summary on the way, so a
/// bill of millions of rows never sits in memory.
pub struct TradeBillWriter<W: Write> {
    out: W,
    bill_type: TradeBillType,
    style: SummaryStyle,
    totals: Totals,
    pending: Vec<u8>,
}

impl<W: Write> TradeBillWriter<W> {
    /// Starts the file: BOM and header.
    pub fn new(
        out: W,
        bill_type: TradeBillType,
        style: SummaryStyle,
    ) -> Result<TradeBillWriter<W>, BillError> {
        let mut pending = Vec::with_capacity(WRITE_BATCH_BYTES + 1024);
        pending.extend_from_slice(BOM);
        write_header(&mut pending, bill_type.columns().iter().map(|c| c.name()));
        Ok(TradeBillWriter {
            out,
            bill_type,
            style,
            totals: Totals::default(),
            pending,
        })
    }

    pub fn write_row(&mut self, row: &TradeBillRow) -> Result<(), BillError> {
        write_row(&mut self.pending, self.bill_type.columns(), row, Col::get);
        self.totals.add(row);
        if self.pending.len() >= WRITE_BATCH_BYTES {
            self.out.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes the summary lines, flushes, and returns the sink and the summary written.
    pub fn finish(mut self) -> Result<(W, TradeBillSummary), BillError> {
        let summary = self.totals.checked()?;
        summary.write(&mut self.pending, self.style);
        self.out.write_all(&self.pending)?;
        self.out.flush()?;
        Ok((self.out, summary))
    }
}

/// Streams the rows of a trade bill; once the iterator ends without error, the summary is
/// available from [`TradeBillReader::summary`]. Memory stays bounded by one line.
pub struct TradeBillReader<R: BufRead> {
    raw: RawReader<R>,
    index: ColumnIndex,
    bill_type: TradeBillType,
    summary: Option<TradeBillSummary>,
    done: bool,
}

impl<R: BufRead> TradeBillReader<R> {
    /// Reads the header and works out the bill type from its columns.
    pub fn new(src: R) -> Result<TradeBillReader<R>, BillError> {
        let raw = RawReader::open(src)?;
        let header = raw.header();
        require_columns(header, REQUIRED, raw.header_line())?;
        let bill_type = TradeBillType::of_header(header);
        if bill_type != TradeBillType::Success {
            require_columns(header, REQUIRED_REFUND, raw.header_line())?;
        }
        let index = ColumnIndex::new(header, Col::NAMES);
        Ok(TradeBillReader {
            raw,
            index,
            bill_type,
            summary: None,
            done: false,
        })
    }

    pub fn bill_type(&self) -> TradeBillType {
        self.bill_type
    }

    /// The summary as the file states it, once every row has been read.
    pub fn summary(&self) -> Option<&TradeBillSummary> {
        self.summary.as_ref()
    }

    /// The source, e.g. a [`super::Sha1Reader`] whose digest now covers the whole file.
    pub fn into_inner(self) -> R {
        self.raw.into_inner()
    }

    fn step(&mut self) -> Result<Option<TradeBillRow>, BillError> {
        match self.raw.next_item()? {
            Some(RawItem::Row { line, values }) => {
                let mut row = TradeBillRow::default();
                fill_row(
                    &mut row,
                    &values,
                    &self.index,
                    Col::ALL,
                    line,
                    Col::name,
                    Col::get_mut,
                )?;
                Ok(Some(row))
            }
            Some(RawItem::Summary(values)) => {
                self.summary = Some(TradeBillSummary::from_values(&values)?);
                Ok(None)
            }
            None => Err(BillError::MissingSummary),
        }
    }
}

impl<R: BufRead> Iterator for TradeBillReader<R> {
    type Item = Result<TradeBillRow, BillError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(no: &str, fen: i64) -> TradeBillRow {
        TradeBillRow {
            trade_time: "2019-02-19 01:52:32".into(),
            appid: "wxab8acd895ab1638a".into(),
            mchid: "1921000401".into(),
            sub_mchid: "0".into(),
            transaction_id: format!("42000002632019021677{no}"),
            out_trade_no: format!("T{no}"),
            openid: "oHkLxtx0vUqe".into(),
            trade_type: "NATIVE".into(),
            trade_state: "SUCCESS".into(),
            bank_type: "OTHERS".into(),
            currency: "CNY".into(),
            settlement_total_fen: fen,
            refund_id: "0".into(),
            out_refund_no: "0".into(),
            goods_name: "autotest".into(),
            // 0.60% of the amount, in 1/1000 fen: fen * 1000 * 0.006.
            fee_milli_fen: fen.saturating_mul(6),
            fee_rate: "0.60%".into(),
            order_total_fen: fen,
            ..TradeBillRow::default()
        }
    }

    #[test]
    fn column_sets_have_the_documented_widths() {
        assert_eq!(ALL_COLUMNS.len(), 27);
        assert_eq!(SUCCESS_COLUMNS.len(), 20);
        assert_eq!(REFUND_COLUMNS.len(), 29);
        assert_eq!(Col::ALL.len(), 29);
        assert_eq!(Col::NAMES.len(), 29);
    }

    #[test]
    fn bill_type_is_read_back_from_the_header() {
        for t in [
            TradeBillType::All,
            TradeBillType::Success,
            TradeBillType::Refund,
        ] {
            let bill = TradeBill::summarize(t, vec![payment("1", 100)]);
            let parsed = TradeBill::parse(&bill.to_csv()).unwrap();
            assert_eq!(parsed.bill_type, t);
            assert_eq!(TradeBillType::parse(t.as_str()).unwrap(), t);
        }
        assert!(matches!(
            "all".parse::<TradeBillType>(),
            Err(BillError::UnknownBillType(_))
        ));
        assert_eq!(
            serde_json::to_string(&TradeBillType::Success).unwrap(),
            "\"SUCCESS\""
        );
    }

    #[test]
    fn summarize_matches_of_rows_and_saturates_only_past_i64() {
        let rows = vec![payment("1", 100), payment("2", 250)];
        let bill = TradeBill::summarize(TradeBillType::All, rows.clone());
        assert_eq!(bill.summary, TradeBillSummary::of_rows(&rows).unwrap());
        assert_eq!(bill.summary.trade_count, 2);
        assert_eq!(bill.summary.settlement_total_fen, 350);
        assert_eq!(bill.summary.fee_milli_fen, 2100);
        bill.verify_summary().unwrap();

        let huge = vec![payment("1", i64::MAX), payment("2", 1)];
        assert!(matches!(
            TradeBill::try_summarize(TradeBillType::All, huge.clone()),
            Err(BillError::SummaryOverflow {
                field: "应结订单总金额"
            })
        ));
        let saturated = TradeBill::summarize(TradeBillType::All, huge);
        assert_eq!(saturated.summary.settlement_total_fen, i64::MAX);
    }

    #[test]
    fn verify_summary_names_the_first_wrong_total() {
        let mut bill = TradeBill::summarize(TradeBillType::All, vec![payment("1", 100)]);
        bill.summary.refund_fen = 5;
        match bill.verify_summary() {
            Err(BillError::SummaryMismatch {
                field,
                stated,
                computed,
            }) => {
                assert_eq!((field, stated, computed), ("退款总金额", 5, 0));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        bill.summary.refund_fen = 0;
        bill.summary.trade_count = 2;
        assert!(matches!(
            bill.verify_summary(),
            Err(BillError::SummaryMismatch {
                field: "总交易单数",
                ..
            })
        ));
    }

    #[test]
    fn streaming_writer_produces_the_same_bytes_as_to_csv() {
        let rows: Vec<_> = (0..2000).map(|i| payment(&i.to_string(), i)).collect();
        let bill = TradeBill::summarize(TradeBillType::All, rows.clone());
        let mut w =
            TradeBillWriter::new(Vec::new(), TradeBillType::All, SummaryStyle::Fixed).unwrap();
        for r in &rows {
            w.write_row(r).unwrap();
        }
        let (bytes, summary) = w.finish().unwrap();
        assert_eq!(summary, bill.summary);
        assert_eq!(bytes, bill.to_csv());
    }

    #[test]
    fn reader_yields_rows_then_exposes_the_summary() {
        let bill = TradeBill::summarize(
            TradeBillType::All,
            vec![payment("1", 1), payment("2", 2), payment("3", 3)],
        );
        let csv = bill.to_csv();
        let mut reader = TradeBillReader::new(&csv[..]).unwrap();
        assert!(reader.summary().is_none());
        assert_eq!(reader.next().unwrap().unwrap(), bill.rows[0]);
        assert!(reader.summary().is_none());
        let rest: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(rest, bill.rows[1..]);
        assert_eq!(reader.summary(), Some(&bill.summary));
        assert!(reader.next().is_none());
    }

    #[test]
    fn truncated_and_malformed_bills_are_errors_with_lines() {
        let bill = TradeBill::summarize(TradeBillType::All, vec![payment("1", 1)]);
        let csv = bill.to_csv();
        let text = String::from_utf8(csv.clone()).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();

        let truncated = lines[..2].join("\r\n");
        assert!(matches!(
            TradeBill::parse(truncated.as_bytes()),
            Err(BillError::MissingSummary)
        ));
        let no_values = lines[..3].join("\r\n");
        assert!(matches!(
            TradeBill::parse(no_values.as_bytes()),
            Err(BillError::MissingSummary)
        ));
        let short_row = format!("{}\r\n`a,`b\r\n{}\r\n{}\r\n", lines[0], lines[2], lines[3]);
        assert!(matches!(
            TradeBill::parse(short_row.as_bytes()),
            Err(BillError::FieldCount {
                line: 2,
                expected: 27,
                found: 2
            })
        ));
        let trailing = format!("{text}`junk\r\n");
        assert!(matches!(
            TradeBill::parse(trailing.as_bytes()),
            Err(BillError::TrailingData { line: 5 })
        ));
        let bad_amount = text.replacen("`0.01,", "`0.011,", 1);
        assert!(matches!(
            TradeBill::parse(bad_amount.as_bytes()),
            Err(BillError::Amount { line: 2, ref column, .. }) if column == "应结订单金额"
        ));
        assert!(matches!(TradeBill::parse(b""), Err(BillError::Empty)));
        assert!(matches!(
            TradeBill::parse("`x\r\n".as_bytes()),
            Err(BillError::MissingHeader { line: 1 })
        ));
        assert!(matches!(
            TradeBill::parse("记账时间,收支类型\r\n".as_bytes()),
            Err(BillError::MissingColumn {
                column: "交易时间",
                ..
            })
        ));
        let no_summary_column = text.replace("申请退款总金额", "别的");
        assert!(matches!(
            TradeBill::parse(no_summary_column.as_bytes()),
            Err(BillError::MissingColumn {
                line: 4,
                column: "申请退款总金额"
            })
        ));
    }
}
