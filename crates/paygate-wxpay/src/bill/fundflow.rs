//! The fund-flow bill (资金账单) of `GET /v3/bill/fundflowbill`: one row per movement of the
//! merchant account's balance, with income and expense totals (reference §7).
//!
//! We write the amount headers with ASCII parentheses, `收支金额(元)`, as V3 SDK test data
//! shows; older copies use full-width `（元）` and the parser accepts both.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::BillError;
use super::csv::{
    BOM, ColumnIndex, RawItem, RawReader, RecordLine, SummaryStyle, SummaryValues, bill_columns,
    fill_row, require_columns, write_header, write_row,
};

/// 收支类型 of money coming in.
pub const INCOME: &str = "收入";
/// 收支类型 of money going out.
pub const EXPENSE: &str = "支出";

/// One balance movement.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FundFlowRow {
    /// 记账时间, `YYYY-MM-DD HH:MM:SS` Beijing time.
    pub time: String,
    /// 微信支付业务单号.
    pub transaction_id: String,
    /// 资金流水单号.
    pub flow_id: String,
    /// 业务名称, e.g. 交易, 退款.
    pub biz_name: String,
    /// 业务类型.
    pub biz_type: String,
    /// 收支类型: [`INCOME`] or [`EXPENSE`].
    pub direction: String,
    /// 收支金额(元), as written (a magnitude: the direction says which way).
    pub amount_fen: i64,
    /// 账户结余(元) after this movement.
    pub balance_fen: i64,
    /// 资金变更提交申请人.
    pub applicant: String,
    /// 备注.
    pub remark: String,
    /// 业务凭证号.
    pub voucher_no: String,
}

bill_columns! { FundFlowRow;
    Time "记账时间" time text,
    TransactionId "微信支付业务单号" transaction_id text,
    FlowId "资金流水单号" flow_id text,
    BizName "业务名称" biz_name text,
    BizType "业务类型" biz_type text,
    Direction "收支类型" direction text,
    Amount "收支金额(元)" amount_fen yuan,
    Balance "账户结余(元)" balance_fen yuan,
    Applicant "资金变更提交申请人" applicant text,
    Remark "备注" remark text,
    VoucherNo "业务凭证号" voucher_no text,
}

const REQUIRED: &[&str] = &["记账时间", "收支类型", "收支金额(元)"];

const S_TOTAL: &str = "资金流水总笔数";
const S_INCOME_COUNT: &str = "收入笔数";
const S_INCOME: &str = "收入金额";
const S_EXPENSE_COUNT: &str = "支出笔数";
const S_EXPENSE: &str = "支出金额";

/// The summary row of a fund-flow bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FundFlowSummary {
    /// 资金流水总笔数: every row, whatever its direction.
    pub total_count: u64,
    /// 收入笔数.
    pub income_count: u64,
    /// 收入金额: the sum of income rows' amounts.
    pub income_fen: i64,
    /// 支出笔数.
    pub expense_count: u64,
    /// 支出金额: the sum of expense rows' amounts.
    pub expense_fen: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    total: u64,
    income_count: u64,
    income: i128,
    expense_count: u64,
    expense: i128,
}

impl Totals {
    fn of(rows: &[FundFlowRow]) -> Totals {
        let mut t = Totals::default();
        for r in rows {
            t.total = t.total.saturating_add(1);
            // A direction other than the two is counted in the total only: the bill has no
            // column for it, and guessing its sign would invent money.
            if r.direction == INCOME {
                t.income_count = t.income_count.saturating_add(1);
                t.income += i128::from(r.amount_fen);
            } else if r.direction == EXPENSE {
                t.expense_count = t.expense_count.saturating_add(1);
                t.expense += i128::from(r.amount_fen);
            }
        }
        t
    }

    fn checked(&self) -> Result<FundFlowSummary, BillError> {
        let narrow = |field: &'static str, v: i128| {
            i64::try_from(v).map_err(|_| BillError::SummaryOverflow { field })
        };
        Ok(FundFlowSummary {
            total_count: self.total,
            income_count: self.income_count,
            income_fen: narrow(S_INCOME, self.income)?,
            expense_count: self.expense_count,
            expense_fen: narrow(S_EXPENSE, self.expense)?,
        })
    }

    fn saturated(&self) -> FundFlowSummary {
        let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        FundFlowSummary {
            total_count: self.total,
            income_count: self.income_count,
            income_fen: clamp(self.income),
            expense_count: self.expense_count,
            expense_fen: clamp(self.expense),
        }
    }
}

impl FundFlowSummary {
    fn from_values(v: &SummaryValues) -> Result<FundFlowSummary, BillError> {
        Ok(FundFlowSummary {
            total_count: v.count(S_TOTAL)?,
            income_count: v.count(S_INCOME_COUNT)?,
            income_fen: v.amount(S_INCOME, 2)?,
            expense_count: v.count(S_EXPENSE_COUNT)?,
            expense_fen: v.amount(S_EXPENSE, 2)?,
        })
    }

    fn write(&self, out: &mut Vec<u8>, style: SummaryStyle) {
        write_header(
            out,
            [
                S_TOTAL,
                S_INCOME_COUNT,
                S_INCOME,
                S_EXPENSE_COUNT,
                S_EXPENSE,
            ],
        );
        let values = [
            style.count(self.total_count),
            style.count(self.income_count),
            style.amount(self.income_fen, 2),
            style.count(self.expense_count),
            style.amount(self.expense_fen, 2),
        ];
        let mut line = RecordLine::new(out);
        values.iter().for_each(|v| line.value(v));
        line.end();
    }
}

/// A whole fund-flow bill in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundFlowBill {
    pub rows: Vec<FundFlowRow>,
    pub summary: FundFlowSummary,
}

impl FundFlowBill {
    /// A bill of `rows` with its summary computed from them (totals saturate past i64;
    /// [`FundFlowBill::try_summarize`] reports that instead).
    pub fn summarize(rows: Vec<FundFlowRow>) -> FundFlowBill {
        let summary = Totals::of(&rows).saturated();
        FundFlowBill { rows, summary }
    }

    pub fn try_summarize(rows: Vec<FundFlowRow>) -> Result<FundFlowBill, BillError> {
        let summary = Totals::of(&rows).checked()?;
        Ok(FundFlowBill { rows, summary })
    }

    pub fn to_csv(&self) -> Vec<u8> {
        self.to_csv_with(SummaryStyle::default())
    }

    /// The file bytes with the stored summary in `style`.
    pub fn to_csv_with(&self, style: SummaryStyle) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.rows.len() * 200);
        out.extend_from_slice(BOM);
        write_header(&mut out, Col::NAMES.iter().copied());
        for row in &self.rows {
            write_row(&mut out, Col::ALL, row, Col::get);
        }
        self.summary.write(&mut out, style);
        out
    }

    /// Parses a whole bill; the summary is as stated (see [`FundFlowBill::verify_summary`]).
    pub fn parse(bytes: &[u8]) -> Result<FundFlowBill, BillError> {
        let mut reader = FundFlowBillReader::new(bytes)?;
        let rows = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        let summary = reader.summary().copied().ok_or(BillError::MissingSummary)?;
        Ok(FundFlowBill { rows, summary })
    }

    /// Checks the stated summary against the rows.
    pub fn verify_summary(&self) -> Result<(), BillError> {
        let t = Totals::of(&self.rows);
        let s = &self.summary;
        let checks = [
            (S_TOTAL, i128::from(s.total_count), i128::from(t.total)),
            (
                S_INCOME_COUNT,
                i128::from(s.income_count),
                i128::from(t.income_count),
            ),
            (S_INCOME, i128::from(s.income_fen), t.income),
            (
                S_EXPENSE_COUNT,
                i128::from(s.expense_count),
                i128::from(t.expense_count),
            ),
            (S_EXPENSE, i128::from(s.expense_fen), t.expense),
        ];
        match checks
            .into_iter()
            .find(|(_, stated, computed)| stated != computed)
        {
            Some((field, stated, computed)) => Err(BillError::SummaryMismatch {
                field,
                stated,
                computed,
            }),
            None => Ok(()),
        }
    }
}

/// Streams the rows of a fund-flow bill, then exposes its summary.
pub struct FundFlowBillReader<R: BufRead> {
    raw: RawReader<R>,
    index: ColumnIndex,
    summary: Option<FundFlowSummary>,
    done: bool,
}

impl<R: BufRead> FundFlowBillReader<R> {
    pub fn new(src: R) -> Result<FundFlowBillReader<R>, BillError> {
        let raw = RawReader::open(src)?;
        require_columns(raw.header(), REQUIRED, raw.header_line())?;
        let index = ColumnIndex::new(raw.header(), Col::NAMES);
        Ok(FundFlowBillReader {
            raw,
            index,
            summary: None,
            done: false,
        })
    }

    /// The summary as stated, once every row has been read.
    pub fn summary(&self) -> Option<&FundFlowSummary> {
        self.summary.as_ref()
    }

    pub fn into_inner(self) -> R {
        self.raw.into_inner()
    }

    fn step(&mut self) -> Result<Option<FundFlowRow>, BillError> {
        match self.raw.next_item()? {
            Some(RawItem::Row { line, values }) => {
                let mut row = FundFlowRow::default();
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
                self.summary = Some(FundFlowSummary::from_values(&values)?);
                Ok(None)
            }
            None => Err(BillError::MissingSummary),
        }
    }
}

impl<R: BufRead> Iterator for FundFlowBillReader<R> {
    type Item = Result<FundFlowRow, BillError>;

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

    /// The example rows of reference §7 (from third-party notes on the official page).
    const REFERENCE_EXAMPLE: &str = "\u{feff}记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额(元),账户结余(元),资金变更提交申请人,备注,业务凭证号\r\n\
        `2018-02-01 04:21:23,`50000305742018020103387128253,`1900009231201802015884652186,`退款,`退款,`支出,`0.02,`0.17,`system,`缺货,`REF4200000068201801293084726067\r\n\
        资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额\r\n\
        `20.0,`17.0,`0.35,`3.0,`0.18\r\n";

    fn row(direction: &str, fen: i64) -> FundFlowRow {
        FundFlowRow {
            time: "2021-02-01 13:54:01".into(),
            transaction_id: "50300806962021020105978994968".into(),
            flow_id: "4200000920202101197964319284".into(),
            biz_name: "退款".into(),
            biz_type: "退款".into(),
            direction: direction.into(),
            amount_fen: fen,
            balance_fen: 22,
            applicant: "1601959334API".into(),
            remark: "退款总金额0.01元;含手续费0.00元".into(),
            voucher_no: "S20210201135356381941".into(),
        }
    }

    #[test]
    fn reference_example_parses_with_sample_style_summary() {
        let bill = FundFlowBill::parse(REFERENCE_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(bill.rows.len(), 1);
        assert_eq!(bill.rows[0].direction, EXPENSE);
        assert_eq!(bill.rows[0].amount_fen, 2);
        assert_eq!(bill.rows[0].balance_fen, 17);
        assert_eq!(bill.rows[0].voucher_no, "REF4200000068201801293084726067");
        assert_eq!(
            bill.summary,
            FundFlowSummary {
                total_count: 20,
                income_count: 17,
                income_fen: 35,
                expense_count: 3,
                expense_fen: 18
            }
        );
        // The example shows one of twenty rows, so its summary cannot verify.
        assert!(matches!(
            bill.verify_summary(),
            Err(BillError::SummaryMismatch {
                field: "资金流水总笔数",
                ..
            })
        ));
        // Re-emitted in the sample style it is byte-identical.
        assert_eq!(
            bill.to_csv_with(SummaryStyle::Sample),
            REFERENCE_EXAMPLE.as_bytes()
        );
    }

    #[test]
    fn full_width_yuan_headers_are_accepted() {
        let old = REFERENCE_EXAMPLE.replace("(元)", "（元）");
        let bill = FundFlowBill::parse(old.as_bytes()).unwrap();
        assert_eq!(bill.rows[0].amount_fen, 2);
        assert_eq!(bill.rows[0].balance_fen, 17);
    }

    #[test]
    fn summary_counts_income_and_expense_apart() {
        let bill = FundFlowBill::summarize(vec![
            row(INCOME, 100),
            row(EXPENSE, 30),
            row(EXPENSE, 1),
            row("其他", 7),
        ]);
        assert_eq!(
            bill.summary,
            FundFlowSummary {
                total_count: 4,
                income_count: 1,
                income_fen: 100,
                expense_count: 2,
                expense_fen: 31
            }
        );
        bill.verify_summary().unwrap();
        let text = String::from_utf8(bill.to_csv()).unwrap();
        assert!(text.ends_with(
            "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额\r\n`4,`1,`1.00,`2,`0.31\r\n"
        ));
        assert_eq!(FundFlowBill::parse(text.as_bytes()).unwrap(), bill);
        assert!(matches!(
            FundFlowBill::try_summarize(vec![row(INCOME, i64::MAX), row(INCOME, 1)]),
            Err(BillError::SummaryOverflow {
                field: "收入金额"
            })
        ));
    }

    #[test]
    fn reader_streams_rows_and_requires_the_summary() {
        let bill = FundFlowBill::summarize(vec![row(INCOME, 1), row(EXPENSE, 2)]);
        let csv = bill.to_csv();
        let mut reader = FundFlowBillReader::new(&csv[..]).unwrap();
        let rows: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(rows, bill.rows);
        assert_eq!(reader.summary(), Some(&bill.summary));

        let cut = &csv[..csv.len() - 20];
        let mut reader = FundFlowBillReader::new(cut).unwrap();
        let results: Vec<_> = reader.by_ref().collect();
        assert!(matches!(results.last(), Some(Err(_))));
        assert!(reader.summary().is_none());
    }
}
