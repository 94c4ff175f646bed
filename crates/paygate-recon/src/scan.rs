//! Parallel, bounded-memory scanning of line files (a trade bill, a platform export) into
//! sorted runs of [`Record`]s.
//!
//! A file's data range is cut into units of [`UNIT_BYTES_DEFAULT`]; worker threads take
//! units from a shared counter, read each with a positioned read (`pread`, so threads never
//! share a cursor), parse the lines that *start* inside the unit, and sort the unit's
//! records. Memory is the records plus one unit buffer per thread: the file itself is never
//! held whole. Runs come back in unit order; [`crate::matcher`] merges them.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::record::Record;

/// Bytes per unit of work: big enough to amortise a read, small enough that a unit's
/// records sort inside the cache and two threads balance well.
pub const UNIT_BYTES_DEFAULT: u64 = 16 << 20;
/// Longest line accepted (as the bill reader's bound).
pub const LINE_BYTES_MAX: usize = paygate_wxpay::bill::LINE_BYTES_MAX;

/// Something to read at an offset: a file, or bytes already in memory.
pub trait Source: Sync {
    fn len(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Source for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Bytes in memory as a [`Source`] (a downloaded bill, a test's text).
#[derive(Clone, Copy, Debug)]
pub struct Mem<'a>(pub &'a [u8]);

impl Source for Mem<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        Mem(self).len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Mem(self).read_at(buf, offset)
    }
}

/// Fills `buf` from `offset`; short only at the end of the source.
pub fn read_full_at(src: &dyn Source, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Why a file could not be scanned. Offsets are byte offsets of the line in the file.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    #[error("line at byte {offset}: longer than {max} bytes")]
    LineTooLong { offset: u64, max: usize },
    #[error("line at byte {offset}: {issue}")]
    Line { offset: u64, issue: String },
    #[error("bill: {0}")]
    Bill(#[from] paygate_wxpay::bill::BillError),
    #[error("{0}")]
    Summary(String),
}

/// Totals of the lines scanned, kept beside the records: they are what a bill's summary row
/// states, and what the end-of-day balance compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub rows: u64,
    pub payments: u64,
    /// Σ amount of payment records.
    pub payment_fen: i128,
    pub refunds: u64,
    /// Σ amount of refund records.
    pub refund_fen: i128,
    pub fee_milli_fen: i128,
    /// Bill only: Σ 应结订单金额, Σ 退款金额, Σ 充值券退款金额 (the summary's other columns).
    pub settlement_fen: i128,
    pub refund_paid_fen: i128,
    pub coupon_refund_fen: i128,
    /// Bill only: Σ 订单金额 and Σ 申请退款金额 over every row.
    pub order_total_fen: i128,
    pub refund_request_fen: i128,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.rows += other.rows;
        self.payments += other.payments;
        self.payment_fen += other.payment_fen;
        self.refunds += other.refunds;
        self.refund_fen += other.refund_fen;
        self.fee_milli_fen += other.fee_milli_fen;
        self.settlement_fen += other.settlement_fen;
        self.refund_paid_fen += other.refund_paid_fen;
        self.coupon_refund_fen += other.coupon_refund_fen;
        self.order_total_fen += other.order_total_fen;
        self.refund_request_fen += other.refund_request_fen;
    }
}

/// Turns one line (no line break) into at most one record.
pub trait LineParser: Sync {
    fn parse_line(
        &self,
        line: &[u8],
        offset: u64,
        out: &mut Vec<Record>,
        totals: &mut Totals,
    ) -> Result<(), ScanError>;
}

/// One file to scan: its lines in `start..end` (header and summary excluded).
pub struct Job<'a> {
    pub source: &'a dyn Source,
    pub start: u64,
    pub end: u64,
    pub parser: &'a dyn LineParser,
}

/// A scanned file: sorted runs (by key, then source) and the totals of its lines.
#[derive(Debug, Default)]
pub struct Scanned {
    pub runs: Vec<Vec<Record>>,
    pub totals: Totals,
}

impl Scanned {
    pub fn records(&self) -> usize {
        self.runs.iter().map(Vec::len).sum()
    }
}

struct Unit {
    job: usize,
    index: usize,
    start: u64,
    end: u64,
}

/// Scans every job with `threads` workers; one result per job, in job order.
pub fn scan(jobs: &[Job<'_>], threads: usize, unit_bytes: u64) -> Result<Vec<Scanned>, ScanError> {
    let unit_bytes = unit_bytes.max(1);
    let mut units = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let mut s = job.start;
        let mut index = 0;
        while s < job.end {
            let e = job.end.min(s.saturating_add(unit_bytes));
            units.push(Unit {
                job: j,
                index,
                start: s,
                end: e,
            });
            s = e;
            index += 1;
        }
    }
    let next = AtomicUsize::new(0);
    type Done = (usize, usize, Vec<Record>, Totals);
    let results: Mutex<Vec<Done>> = Mutex::new(Vec::with_capacity(units.len()));
    let failure: Mutex<Option<ScanError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(unit) = units.get(i) else { break };
                    let job = &jobs[unit.job];
                    match scan_unit(job, unit, &mut buf) {
                        Ok((records, totals)) => results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((unit.job, unit.index, records, totals)),
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            // Stop handing out work: the scan has failed.
                            next.store(units.len(), Ordering::Relaxed);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut done = results.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_unstable_by_key(|d| (d.0, d.1));
    let mut out: Vec<Scanned> = jobs.iter().map(|_| Scanned::default()).collect();
    for (j, _, records, totals) in done {
        out[j].totals.add(&totals);
        out[j].runs.push(records);
    }
    Ok(out)
}

fn scan_unit(
    job: &Job<'_>,
    unit: &Unit,
    buf: &mut Vec<u8>,
) -> Result<(Vec<Record>, Totals), ScanError> {
    // One byte before the unit tells whether a line starts exactly at its first byte.
    let read_from = if unit.start > job.start {
        unit.start - 1
    } else {
        unit.start
    };
    let read_to = job.end.min(unit.end + LINE_BYTES_MAX as u64 + 2);
    let want = usize::try_from(read_to - read_from)
        .map_err(|_| ScanError::Summary("unit too large".into()))?;
    buf.resize(want, 0);
    let got = read_full_at(job.source, buf, read_from)?;
    let bytes = &buf[..got];
    let reaches_end = read_from + got as u64 >= job.end;
    let mut pos = if unit.start > job.start {
        match bytes.first() {
            Some(b'\n') => 1,
            _ => match memchr::memchr(b'\n', bytes) {
                Some(nl) => nl + 1,
                None => bytes.len(),
            },
        }
    } else {
        0
    };
    let unit_len = (unit.end - read_from) as usize;
    let mut records = Vec::with_capacity(unit_len / 160 + 16);
    let mut totals = Totals::default();
    while pos < unit_len.min(bytes.len()) {
        let line_end = match memchr::memchr(b'\n', &bytes[pos..]) {
            Some(n) => pos + n,
            None if reaches_end => bytes.len(),
            None => {
                return Err(ScanError::LineTooLong {
                    offset: read_from + pos as u64,
                    max: LINE_BYTES_MAX,
                });
            }
        };
        let mut line = &bytes[pos..line_end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.len() > LINE_BYTES_MAX {
            return Err(ScanError::LineTooLong {
                offset: read_from + pos as u64,
                max: LINE_BYTES_MAX,
            });
        }
        if !line.is_empty() {
            job.parser
                .parse_line(line, read_from + pos as u64, &mut records, &mut totals)?;
        }
        pos = line_end + 1;
    }
    records.sort_unstable_by(|a, b| a.key.cmp(&b.key).then(a.source.cmp(&b.source)));
    Ok((records, totals))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time → Unix seconds.
pub fn parse_bill_time(b: &[u8]) -> Option<u32> {
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let t = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - 8 * 3600;
    u32::try_from(t).ok()
}

/// An exact decimal at `scale` places into integer units; the common shapes take a byte
/// loop, anything unusual goes through the strict general parser.
pub fn parse_amount(b: &[u8], scale: u32) -> Option<i64> {
    let mut v: i64 = 0;
    let mut frac: Option<u32> = None;
    if b.is_empty() || b.len() > 18 || b[0] == b'.' {
        return general_amount(b, scale);
    }
    for &c in b {
        match c {
            b'0'..=b'9' => {
                v = v * 10 + i64::from(c - b'0');
                if let Some(f) = frac.as_mut() {
                    *f += 1;
                    if *f > scale {
                        return general_amount(b, scale);
                    }
                }
            }
            b'.' if frac.is_none() => frac = Some(0),
            _ => return general_amount(b, scale),
        }
    }
    let f = frac.unwrap_or(0);
    if frac == Some(0) {
        return None;
    }
    v.checked_mul(10i64.checked_pow(scale - f)?)
}

fn general_amount(b: &[u8], scale: u32) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    paygate_core::money::parse_decimal_minor(s, scale).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bill_times_are_beijing() {
        // 2026-11-28 00:00:00 +08:00 = 2026-11-27T16:00:00Z.
        let t = parse_bill_time(b"2026-11-28 00:00:00").unwrap();
        let utc = time::OffsetDateTime::from_unix_timestamp(i64::from(t)).unwrap();
        assert_eq!(utc.to_string(), "2026-11-27 16:00:00.0 +00:00:00");
        assert_eq!(parse_bill_time(b"2026-11-28 23:59:59").unwrap() - t, 86_399);
        assert!(parse_bill_time(b"2026-13-28 00:00:00").is_none());
        assert!(parse_bill_time(b"2026-11-28T00:00:00").is_none());
    }

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_amount(b"0.03", 2), Some(3));
        assert_eq!(parse_amount(b"12", 2), Some(1200));
        assert_eq!(parse_amount(b"1.5", 2), Some(150));
        assert_eq!(parse_amount(b"0.01000", 5), Some(1000));
        assert_eq!(
            parse_amount(b"0.010", 2),
            Some(1),
            "trailing zeros are fine"
        );
        assert_eq!(parse_amount(b"0.015", 2), None, "never rounds");
        assert_eq!(parse_amount(b"-0.02", 2), Some(-2));
        assert_eq!(parse_amount(b"1.", 2), None);
        assert_eq!(parse_amount(b"", 2), None);
        assert_eq!(parse_amount(b"1e3", 2), None);
    }

    struct Lines;
    impl LineParser for Lines {
        fn parse_line(
            &self,
            line: &[u8],
            offset: u64,
            out: &mut Vec<Record>,
            t: &mut Totals,
        ) -> Result<(), ScanError> {
            out.push(Record {
                key: crate::key::Key::new(crate::key::Kind::Payment, line),
                amount_fen: line.len() as i64,
                fee_milli_fen: 0,
                source: offset,
                time_s: 0,
                state: crate::record::State::Paid,
            });
            t.rows += 1;
            Ok(())
        }
    }

    #[test]
    fn every_line_is_scanned_once_whatever_the_unit_size() {
        let mut text = Vec::new();
        for i in 0..1000 {
            text.extend_from_slice(format!("line{i}\r\n").as_bytes());
        }
        text.extend_from_slice(b"last-no-newline");
        for unit in [1, 3, 7, 64, 1 << 20] {
            for threads in [1, 2, 3] {
                let job = Job {
                    source: &text,
                    start: 0,
                    end: text.len() as u64,
                    parser: &Lines,
                };
                let out = scan(&[job], threads, unit).unwrap();
                assert_eq!(out[0].totals.rows, 1001, "unit {unit} threads {threads}");
                let mut keys: Vec<String> = out[0]
                    .runs
                    .iter()
                    .flatten()
                    .map(|r| r.key.text().unwrap())
                    .collect();
                keys.sort();
                keys.dedup();
                assert_eq!(keys.len(), 1001);
                for r in out[0].runs.iter().flatten() {
                    let at = r.source as usize;
                    assert!(text[at..].starts_with(r.key.text().unwrap().as_bytes()));
                }
            }
        }
    }
}
