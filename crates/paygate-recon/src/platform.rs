//! The platform side as a file: one line per payment or refund paygate booked for the day,
//! `kind,out_no,transaction_id,mchid,amount_fen,fee_milli_fen,state,time`, e.g.
//! `P,420000000020261128000000000101,4200000000202611280000000001,1900000109,100,600,PAID,2026-11-28 10:00:00`.
//! The store's day export writes it (`paygate recon export`), the benchmark generates it, and
//! [`PlatformParser`] reads it into the same compact [`Record`]s as the bill. An empty fee
//! means "not known" ([`FEE_UNKNOWN`]).

use std::io::Write;

use crate::key::{Key, Kind};
use crate::record::{FEE_UNKNOWN, Record, State};
use crate::scan::{LineParser, ScanError, Totals, parse_bill_time};

pub const HEADER: &str = "kind,out_no,transaction_id,mchid,amount_fen,fee_milli_fen,state,time";

/// One platform line, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformLine<'a> {
    pub kind: Kind,
    pub out_no: &'a str,
    pub transaction_id: &'a str,
    pub mchid: &'a str,
    pub amount_fen: i64,
    pub fee_milli_fen: i64,
    pub state: State,
    /// `YYYY-MM-DD HH:MM:SS`, Beijing time.
    pub time: &'a str,
}

impl PlatformLine<'_> {
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let kind = match self.kind {
            Kind::Payment => 'P',
            Kind::Refund => 'R',
        };
        write!(
            out,
            "{kind},{},{},{},{},",
            self.out_no, self.transaction_id, self.mchid, self.amount_fen
        )?;
        if self.fee_milli_fen != FEE_UNKNOWN {
            write!(out, "{}", self.fee_milli_fen)?;
        }
        writeln!(out, ",{},{}", self.state.as_str(), self.time)
    }
}

/// Reads platform lines; the header line is skipped.
pub struct PlatformParser;

fn int(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v = 0i64;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(if neg { -v } else { v })
}

impl LineParser for PlatformParser {
    fn parse_line(
        &self,
        line: &[u8],
        offset: u64,
        out: &mut Vec<Record>,
        t: &mut Totals,
    ) -> Result<(), ScanError> {
        if line.starts_with(b"kind,") {
            return Ok(());
        }
        let bad = |issue: &str| ScanError::Line {
            offset,
            issue: issue.to_string(),
        };
        let mut f = line.split(|&b| b == b',');
        let mut next = || f.next().ok_or_else(|| bad("too few fields"));
        let kind = match next()? {
            b"P" => Kind::Payment,
            b"R" => Kind::Refund,
            _ => return Err(bad("kind must be P or R")),
        };
        let key = Key::new(kind, next()?);
        let _transaction_id = next()?;
        let _mchid = next()?;
        let amount_fen = int(next()?).ok_or_else(|| bad("bad amount_fen"))?;
        let fee = next()?;
        let fee_milli_fen = if fee.is_empty() {
            FEE_UNKNOWN
        } else {
            int(fee).ok_or_else(|| bad("bad fee_milli_fen"))?
        };
        let state = std::str::from_utf8(next()?)
            .ok()
            .and_then(State::parse)
            .ok_or_else(|| bad("bad state"))?;
        let time_s = parse_bill_time(next()?).ok_or_else(|| bad("bad time"))?;
        t.rows += 1;
        match kind {
            Kind::Payment => {
                t.payments += 1;
                t.payment_fen += i128::from(amount_fen);
            }
            Kind::Refund => {
                t.refunds += 1;
                t.refund_fen += i128::from(amount_fen);
            }
        }
        if fee_milli_fen != FEE_UNKNOWN {
            t.fee_milli_fen += i128::from(fee_milli_fen);
        }
        out.push(Record {
            key,
            amount_fen,
            fee_milli_fen,
            source: offset,
            time_s,
            state,
        });
        Ok(())
    }
}
