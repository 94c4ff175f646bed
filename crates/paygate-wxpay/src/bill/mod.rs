//! WeChat Pay bill files: the trade bill (交易账单), the fund-flow bill (资金账单) and the
//! profit-sharing bill (分账账单), written byte-exactly and parsed tolerantly, plus the
//! SHA1 and gzip steps of the download protocol (reference §4.10 and §7).
//!
//! The file shape shared by all of them:
//! - UTF-8 with a BOM, CRLF line endings including after the last line;
//! - a header row of plain column names, then detail rows in which every value is prefixed
//!   by a backtick (an empty value is a bare backtick), then a summary header and a
//!   summary row (the profit-sharing bill has no summary, see [`profitsharing`]);
//! - amounts in yuan with 2 decimals, fees with 5, parsed exactly into integers.
//!
//! Decisions where the sources disagree or are silent, kept in one place each:
//! - **Summary numbers** ([`SummaryStyle`]): real downloads seen in SDK tests write counts
//!   as integers and amounts at their column's scale (`3`, `0.03`, `0.00000`); WeChat's
//!   published sample (the axios-plugin fixture) writes `45.0`, `0.47`, `0.0`. We write the
//!   former by default, because an SDK that parses counts as integers rejects `45.0` while
//!   every parser that accepts `45.0` also accepts `45`. Both are read.
//! - **Commas in text** (goods names, attach): the reference says WeChat escapes `,` as
//!   `\ `. We write `,` as `\ `, and to keep the mapping reversible also `\` as `\\`, CR
//!   as `\r` and LF as `\n`. The parser undoes exactly those four and leaves any other
//!   backslash as it is; it also splits only on `` ,` `` so a raw comma survives.
//! - **Columns** are found by header name, never by position: the column order of the
//!   SUCCESS and REFUND trade bills is known only from SDK test data.
//!
//! ```
//! use paygate_wxpay::bill::{TradeBill, TradeBillRow, TradeBillType, sha1_hex, gzip, gunzip};
//!
//! let row = TradeBillRow {
//!     trade_time: "2019-02-19 01:52:32".into(),
//!     transaction_id: "4200000263201902167700134902".into(),
//!     out_trade_no: "T1".into(),
//!     trade_state: "SUCCESS".into(),
//!     settlement_total_fen: 3,
//!     order_total_fen: 3,
//!     fee_milli_fen: 180,
//!     ..TradeBillRow::default()
//! };
//! let bill = TradeBill::summarize(TradeBillType::All, vec![row]);
//! let csv = bill.to_csv();
//! let hash_value = sha1_hex(&csv); // of the uncompressed bytes, BOM included
//! let body = gzip(&csv);
//! assert_eq!(gunzip(&body, 1 << 20).unwrap(), csv);
//! assert_eq!(TradeBill::parse(&csv).unwrap(), bill);
//! # let _ = hash_value;
//! ```

mod archive;
mod csv;
pub mod fundflow;
pub mod profitsharing;
pub mod trade;

pub use archive::{Sha1Reader, gunzip, gzip, sha1_hex};
pub use csv::{LINE_BYTES_MAX, SummaryStyle};
pub use fundflow::{FundFlowBill, FundFlowBillReader, FundFlowRow, FundFlowSummary};
pub use profitsharing::{ProfitSharingBill, ProfitSharingBillReader, ProfitSharingBillRow};
pub use trade::{
    TradeBill, TradeBillReader, TradeBillRow, TradeBillSummary, TradeBillType, TradeBillWriter,
};

use paygate_core::money::MoneyError;

/// Why a bill could not be read, written or unpacked. Line numbers count from 1.
#[derive(Debug, thiserror::Error)]
pub enum BillError {
    #[error("bill is empty: no header line")]
    Empty,
    #[error("line {line}: expected a header of column names, found a data row")]
    MissingHeader { line: usize },
    #[error("line {line}: required column {column:?} is missing")]
    MissingColumn { line: usize, column: &'static str },
    #[error("unknown trade bill type {0:?} (expected ALL, SUCCESS or REFUND)")]
    UnknownBillType(String),
    #[error("line {line}: {found} values but the header has {expected} columns")]
    FieldCount {
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("line {line}: data values must start with a backtick")]
    MissingBacktick { line: usize },
    #[error("line {line}: not valid UTF-8")]
    Utf8 { line: usize },
    #[error("line {line}: longer than {max} bytes")]
    LineTooLong { line: usize, max: usize },
    #[error("line {line}: column {column:?} has a bad amount {value:?}: {source}")]
    Amount {
        line: usize,
        column: String,
        value: String,
        #[source]
        source: MoneyError,
    },
    #[error("line {line}: column {column:?} has a bad count {value:?}")]
    Count {
        line: usize,
        column: String,
        value: String,
    },
    #[error("bill ends without its summary lines (truncated file?)")]
    MissingSummary,
    #[error("line {line}: this bill has no summary, found {value:?}")]
    UnexpectedSummary { line: usize, value: String },
    #[error("line {line}: data after the summary row")]
    TrailingData { line: usize },
    #[error("summary {field}: file says {stated}, rows add up to {computed}")]
    SummaryMismatch {
        field: &'static str,
        stated: i128,
        computed: i128,
    },
    #[error("summary {field} does not fit in 64 bits")]
    SummaryOverflow { field: &'static str },
    #[error("uncompressed bill is larger than {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    #[error("bad gzip data: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("reading bill: {0}")]
    Io(#[from] std::io::Error),
}
