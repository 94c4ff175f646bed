//! The profit-sharing bill (分账账单) of `GET /v3/profitsharing/bills`.
//!
//! UNCONFIRMED layout: no official sample was found. The 13 columns below are those a
//! third-party merchant system maps from the real file (a RuoYi-based `AWechatShareBill`
//! entity reading columns 0–12 in this order); whether the real file ends with a summary
//! block is unknown, so we write none and the parser rejects one with a clear error rather
//! than guessing its meaning. Columns are still looked up by name, so a reordered real
//! file parses.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::BillError;
use super::csv::{
    BOM, ColumnIndex, RawItem, RawReader, bill_columns, fill_row, require_columns, write_header,
    write_row,
};

/// One split or return (回退) movement.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProfitSharingBillRow {
    /// 分账时间, `YYYY-MM-DD HH:MM:SS` Beijing time.
    pub time: String,
    /// 分账发起方: the merchant that asked for the split.
    pub initiator_mchid: String,
    /// 分账方: the merchant whose money is split.
    pub mchid: String,
    /// 微信订单号.
    pub transaction_id: String,
    /// 微信分账/回退单号.
    pub order_id: String,
    /// 分账明细单号.
    pub detail_id: String,
    /// 商户分账/回退单号.
    pub out_order_no: String,
    /// 订单金额.
    pub order_amount_fen: i64,
    /// 分账接收方 (a merchant id or an openid).
    pub receiver: String,
    /// 金额: the amount moved to (or back from) the receiver.
    pub amount_fen: i64,
    /// 业务类型, e.g. 分账 or 回退.
    pub biz_type: String,
    /// 处理状态.
    pub status: String,
    /// 备注 (the split's description).
    pub remark: String,
}

bill_columns! { ProfitSharingBillRow;
    Time "分账时间" time text,
    InitiatorMchid "分账发起方" initiator_mchid text,
    Mchid "分账方" mchid text,
    TransactionId "微信订单号" transaction_id text,
    OrderId "微信分账/回退单号" order_id text,
    DetailId "分账明细单号" detail_id text,
    OutOrderNo "商户分账/回退单号" out_order_no text,
    OrderAmount "订单金额" order_amount_fen yuan,
    Receiver "分账接收方" receiver text,
    Amount "金额" amount_fen yuan,
    BizType "业务类型" biz_type text,
    Status "处理状态" status text,
    Remark "备注" remark text,
}

const REQUIRED: &[&str] = &["分账时间", "微信订单号", "分账接收方", "金额"];

/// A whole profit-sharing bill in memory (rows only; see the module notes).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProfitSharingBill {
    pub rows: Vec<ProfitSharingBillRow>,
}

impl ProfitSharingBill {
    pub fn new(rows: Vec<ProfitSharingBillRow>) -> ProfitSharingBill {
        ProfitSharingBill { rows }
    }

    /// Sum of 金额 over all rows, or `None` past i64.
    pub fn total_amount_fen(&self) -> Option<i64> {
        self.rows
            .iter()
            .try_fold(0i64, |acc, r| acc.checked_add(r.amount_fen))
    }

    pub fn to_csv(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.rows.len() * 220);
        out.extend_from_slice(BOM);
        write_header(&mut out, Col::NAMES.iter().copied());
        for row in &self.rows {
            write_row(&mut out, Col::ALL, row, Col::get);
        }
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<ProfitSharingBill, BillError> {
        let rows = ProfitSharingBillReader::new(bytes)?.collect::<Result<Vec<_>, _>>()?;
        Ok(ProfitSharingBill { rows })
    }
}

/// Streams the rows of a profit-sharing bill.
pub struct ProfitSharingBillReader<R: BufRead> {
    raw: RawReader<R>,
    index: ColumnIndex,
    done: bool,
}

impl<R: BufRead> ProfitSharingBillReader<R> {
    pub fn new(src: R) -> Result<ProfitSharingBillReader<R>, BillError> {
        let raw = RawReader::open(src)?;
        require_columns(raw.header(), REQUIRED, raw.header_line())?;
        let index = ColumnIndex::new(raw.header(), Col::NAMES);
        Ok(ProfitSharingBillReader {
            raw,
            index,
            done: false,
        })
    }

    pub fn into_inner(self) -> R {
        self.raw.into_inner()
    }

    fn step(&mut self) -> Result<Option<ProfitSharingBillRow>, BillError> {
        match self.raw.next_item()? {
            Some(RawItem::Row { line, values }) => {
                let mut row = ProfitSharingBillRow::default();
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
            Some(RawItem::Summary(values)) => Err(BillError::UnexpectedSummary {
                line: values.header_line,
                value: values.header_text(),
            }),
            None => Ok(None),
        }
    }
}

impl<R: BufRead> Iterator for ProfitSharingBillReader<R> {
    type Item = Result<ProfitSharingBillRow, BillError>;

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

    fn row(detail: &str, amount_fen: i64) -> ProfitSharingBillRow {
        ProfitSharingBillRow {
            time: "2021-04-30 12:00:01".into(),
            initiator_mchid: "1900000100".into(),
            mchid: "1900000109".into(),
            transaction_id: "4208450740201411110007820472".into(),
            order_id: "3008450740201411110007820472".into(),
            detail_id: detail.into(),
            out_order_no: "P20150806125346".into(),
            order_amount_fen: 1000,
            receiver: "1900000110".into(),
            amount_fen,
            biz_type: "分账".into(),
            status: "成功".into(),
            remark: "分给商户,抽成".into(),
        }
    }

    #[test]
    fn round_trip_keeps_every_column_and_escapes_commas() {
        let bill = ProfitSharingBill::new(vec![row("D1", 100), row("D2", 25)]);
        let csv = bill.to_csv();
        let text = String::from_utf8(csv.clone()).unwrap();
        assert!(text.starts_with(
            "\u{feff}分账时间,分账发起方,分账方,微信订单号,微信分账/回退单号,分账明细单号,商户分账/回退单号,订单金额,分账接收方,金额,业务类型,处理状态,备注\r\n"
        ));
        assert!(text.contains("`10.00,`1900000110,`1.00,`分账,`成功,`分给商户\\ 抽成\r\n"));
        assert_eq!(ProfitSharingBill::parse(&csv).unwrap(), bill);
        assert_eq!(bill.total_amount_fen(), Some(125));
    }

    #[test]
    fn a_summary_block_is_reported_not_guessed() {
        let mut text =
            String::from_utf8(ProfitSharingBill::new(vec![row("D1", 1)]).to_csv()).unwrap();
        text.push_str("总笔数,总金额\r\n`1,`0.01\r\n");
        assert!(matches!(
            ProfitSharingBill::parse(text.as_bytes()),
            Err(BillError::UnexpectedSummary { line: 3, ref value }) if value == "总笔数,总金额"
        ));
    }

    #[test]
    fn empty_bill_is_a_header_only() {
        let bill = ProfitSharingBill::default();
        let csv = bill.to_csv();
        assert_eq!(csv.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(ProfitSharingBill::parse(&csv).unwrap(), bill);
        assert_eq!(bill.total_amount_fen(), Some(0));
    }
}
