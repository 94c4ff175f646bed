//! The line format every bill shares: BOM, CRLF, a plain header, backtick-prefixed values,
//! the comma escape, summary number rendering, and a bounded streaming record reader.

use std::io::BufRead;

use paygate_core::money::{MoneyError, format_decimal_minor, parse_decimal_minor};

use super::BillError;

pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";
const CRLF: &[u8] = b"\r\n";

/// Longest line the reader accepts. Real rows are well under 1 KiB; the bound stops a
/// corrupt or hostile file (no newline at all) from growing one line without limit.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// How the numbers of a summary row are written. See the module notes in [`super`] for the
/// evidence behind each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SummaryStyle {
    /// Integer counts, amounts at their column's scale: `` `3,`0.03,`0.00,`0.00,`0.00000 ``.
    #[default]
    Fixed,
    /// As WeChat's published sample file: counts as `45.0`, amounts with trailing zeros
    /// dropped but one decimal kept: `` `45.0,`0.47,`0.14,`0.0,`0.08 ``.
    Sample,
}

impl SummaryStyle {
    pub(crate) fn count(self, n: u64) -> String {
        match self {
            SummaryStyle::Fixed => n.to_string(),
            SummaryStyle::Sample => format!("{n}.0"),
        }
    }

    pub(crate) fn amount(self, v: i64, scale: u32) -> String {
        let fixed = format_decimal_minor(v, scale);
        match self {
            SummaryStyle::Fixed => fixed,
            SummaryStyle::Sample => shortest_decimal(fixed),
        }
    }
}

/// `"0.08000"` → `"0.08"`, `"0.00"` → `"0.0"`, `"12"` → `"12.0"`.
fn shortest_decimal(mut s: String) -> String {
    if !s.contains('.') {
        s.push_str(".0");
        return s;
    }
    while s.ends_with('0') && !s.ends_with(".0") {
        s.pop();
    }
    s
}

/// Appends `s` with the bill escape: `\` → `\\`, `,` → `\ `, CR → `\r`, LF → `\n`.
/// After this a value holds no comma and no line break, so `` ,` `` only ever separates.
fn escape_into(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| matches!(b, b'\\' | b',' | b'\r' | b'\n')) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b',' => out.extend_from_slice(b"\\ "),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\n' => out.extend_from_slice(b"\\n"),
            other => out.push(other),
        }
    }
}

/// Undoes [`escape_into`]. Any other backslash sequence is kept verbatim, so text from a
/// producer that does not escape backslashes survives unless it happens to contain one of
/// the four sequences.
pub(crate) fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some(' ') => out.push(','),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Writes one header line: plain names joined by commas, CRLF.
pub(crate) fn write_header<'a>(out: &mut Vec<u8>, names: impl IntoIterator<Item = &'a str>) {
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(CRLF);
}

/// Builds one data line value by value.
pub(crate) struct RecordLine<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> RecordLine<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        RecordLine { out, first: true }
    }

    pub(crate) fn value(&mut self, s: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'`');
        escape_into(self.out, s);
    }

    pub(crate) fn end(self) {
        self.out.extend_from_slice(CRLF);
    }
}

/// Header names are compared after mapping full-width parentheses to ASCII, so that both
/// `收支金额(元)` and `收支金额（元）` name the same column.
pub(crate) fn normalize_header_name(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_prefix('`').unwrap_or(name);
    name.replace('（', "(").replace('）', ")")
}

/// Where each known column sits in a file's header, by name.
pub(crate) struct ColumnIndex {
    positions: Vec<Option<usize>>,
}

impl ColumnIndex {
    /// `known` is the list of names the caller understands; unknown header columns are
    /// ignored, so a column WeChat adds later does not break parsing.
    pub(crate) fn new(header: &[String], known: &[&str]) -> ColumnIndex {
        let positions = known
            .iter()
            .map(|k| header.iter().position(|h| h == k))
            .collect();
        ColumnIndex { positions }
    }

    pub(crate) fn position(&self, known_index: usize) -> Option<usize> {
        self.positions.get(known_index).copied().flatten()
    }
}

/// One cell of a row as the writer sees it.
pub(crate) enum Field<'a> {
    Text(&'a str),
    Amount { value: i64, scale: u32 },
}

/// One cell of a row as the parser fills it.
pub(crate) enum FieldMut<'a> {
    Text(&'a mut String),
    Amount { value: &'a mut i64, scale: u32 },
}

/// Declares a bill's columns once: `Variant "header name" row_field kind`, where kind is
/// `text`, `yuan` (2 decimals) or `fee` (5 decimals). Generates the `Col` enum, its header
/// names, and typed access to the matching row field, so writer and parser cannot drift.
macro_rules! bill_columns {
    ($row:ty; $($col:ident $name:literal $field:ident $kind:ident,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Col { $($col,)* }

        impl Col {
            /// Every column this module understands, in declaration order.
            pub(crate) const ALL: &'static [Col] = &[$(Col::$col,)*];
            /// Header names in the order of [`Col::ALL`].
            pub(crate) const NAMES: &'static [&'static str] = &[$($name,)*];

            pub(crate) const fn name(self) -> &'static str {
                match self { $(Col::$col => $name,)* }
            }

            pub(crate) fn get(self, row: &$row) -> $crate::bill::csv::Field<'_> {
                match self { $(Col::$col => bill_columns!(@get $kind, row.$field),)* }
            }

            pub(crate) fn get_mut(self, row: &mut $row) -> $crate::bill::csv::FieldMut<'_> {
                match self { $(Col::$col => bill_columns!(@get_mut $kind, row.$field),)* }
            }
        }
    };
    (@get text, $e:expr) => { $crate::bill::csv::Field::Text(&$e) };
    (@get yuan, $e:expr) => { $crate::bill::csv::Field::Amount { value: $e, scale: 2 } };
    (@get fee, $e:expr) => { $crate::bill::csv::Field::Amount { value: $e, scale: 5 } };
    (@get_mut text, $e:expr) => { $crate::bill::csv::FieldMut::Text(&mut $e) };
    (@get_mut yuan, $e:expr) => {
        $crate::bill::csv::FieldMut::Amount { value: &mut $e, scale: 2 }
    };
    (@get_mut fee, $e:expr) => {
        $crate::bill::csv::FieldMut::Amount { value: &mut $e, scale: 5 }
    };
}
pub(crate) use bill_columns;

/// Writes one data row: the given columns of `row`, in order.
pub(crate) fn write_row<C: Copy, Row>(
    out: &mut Vec<u8>,
    columns: &[C],
    row: &Row,
    get: fn(C, &Row) -> Field<'_>,
) {
    let mut line = RecordLine::new(out);
    for &col in columns {
        match get(col, row) {
            Field::Text(s) => line.value(s),
            Field::Amount { value, scale } => line.value(&format_decimal_minor(value, scale)),
        }
    }
    line.end();
}

/// Fills a row from a line's values: every known column present in the header is parsed,
/// the others keep their default.
pub(crate) fn fill_row<C: Copy, Row>(
    row: &mut Row,
    values: &[String],
    index: &ColumnIndex,
    known: &[C],
    line: usize,
    name: fn(C) -> &'static str,
    get_mut: fn(C, &mut Row) -> FieldMut<'_>,
) -> Result<(), BillError> {
    for (k, &col) in known.iter().enumerate() {
        let Some(value) = index.position(k).and_then(|i| values.get(i)) else {
            continue;
        };
        match get_mut(col, row) {
            FieldMut::Text(slot) => slot.clone_from(value),
            FieldMut::Amount { value: slot, scale } => {
                *slot = parse_amount(value, scale, line, name(col))?;
            }
        }
    }
    Ok(())
}

/// Fails with the first of `required` that the header lacks.
pub(crate) fn require_columns(
    header: &[String],
    required: &[&'static str],
    line: usize,
) -> Result<(), BillError> {
    match required.iter().find(|r| !header.iter().any(|h| h == *r)) {
        Some(column) => Err(BillError::MissingColumn { line, column }),
        None => Ok(()),
    }
}

/// Parses a yuan/fee value with the line and column for the error.
pub(crate) fn parse_amount(
    value: &str,
    scale: u32,
    line: usize,
    column: &str,
) -> Result<i64, BillError> {
    parse_decimal_minor(value, scale).map_err(|source: MoneyError| BillError::Amount {
        line,
        column: column.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Parses a summary count: `45` or `45.0` (any number of zero decimals).
pub(crate) fn parse_count(value: &str, line: usize, column: &str) -> Result<u64, BillError> {
    parse_decimal_minor(value, 0)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| BillError::Count {
            line,
            column: column.to_owned(),
            value: value.to_owned(),
        })
}

/// Values of a summary row looked up by header name.
pub(crate) struct SummaryValues {
    pub(crate) header_line: usize,
    pub(crate) line: usize,
    header: Vec<String>,
    values: Vec<String>,
}

impl SummaryValues {
    /// The summary header as one comma-joined string, for error messages.
    pub(crate) fn header_text(&self) -> String {
        self.header.join(",")
    }

    pub(crate) fn get(&self, column: &'static str) -> Result<&str, BillError> {
        self.header
            .iter()
            .position(|h| h == column)
            .and_then(|i| self.values.get(i))
            .map(String::as_str)
            .ok_or(BillError::MissingColumn {
                line: self.line,
                column,
            })
    }

    pub(crate) fn count(&self, column: &'static str) -> Result<u64, BillError> {
        parse_count(self.get(column)?, self.line, column)
    }

    pub(crate) fn amount(&self, column: &'static str, scale: u32) -> Result<i64, BillError> {
        parse_amount(self.get(column)?, scale, self.line, column)
    }
}

/// One item of a bill after the header.
pub(crate) enum RawItem {
    Row { line: usize, values: Vec<String> },
    Summary(SummaryValues),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Rows,
    Done,
}

/// Reads a bill line by line with bounded memory: the header first, then rows, then the
/// optional summary, then checks that nothing but blank lines follows.
pub(crate) struct RawReader<R> {
    src: R,
    line_no: usize,
    buf: Vec<u8>,
    header: Vec<String>,
    header_line: usize,
    phase: Phase,
    line_bytes_max: usize,
}

impl<R: BufRead> RawReader<R> {
    pub(crate) fn open(src: R) -> Result<Self, BillError> {
        let mut reader = RawReader {
            src,
            line_no: 0,
            buf: Vec::new(),
            header: Vec::new(),
            header_line: 0,
            phase: Phase::Rows,
            line_bytes_max: LINE_BYTES_MAX,
        };
        let header = loop {
            match reader.next_line()? {
                None => return Err(BillError::Empty),
                Some(l) if l.trim().is_empty() => continue,
                Some(l) if l.starts_with('`') => {
                    return Err(BillError::MissingHeader {
                        line: reader.line_no,
                    });
                }
                Some(l) => break l.split(',').map(normalize_header_name).collect(),
            }
        };
        reader.header = header;
        reader.header_line = reader.line_no;
        Ok(reader)
    }

    pub(crate) fn header(&self) -> &[String] {
        &self.header
    }

    pub(crate) fn header_line(&self) -> usize {
        self.header_line
    }

    pub(crate) fn into_inner(self) -> R {
        self.src
    }

    /// The next row or the summary; `Ok(None)` at the end of a file without a summary.
    /// After an error or the summary, always `Ok(None)`.
    pub(crate) fn next_item(&mut self) -> Result<Option<RawItem>, BillError> {
        if self.phase == Phase::Done {
            return Ok(None);
        }
        let result = self.read_item();
        if !matches!(result, Ok(Some(RawItem::Row { .. }))) {
            self.phase = Phase::Done;
        }
        result
    }

    fn read_item(&mut self) -> Result<Option<RawItem>, BillError> {
        let line = loop {
            match self.next_line()? {
                None => return Ok(None),
                Some(l) if l.is_empty() => continue,
                Some(l) => break l,
            }
        };
        let line_no = self.line_no;
        if line.starts_with('`') {
            let values = split_values(&line);
            check_count(line_no, self.header.len(), values.len())?;
            return Ok(Some(RawItem::Row {
                line: line_no,
                values,
            }));
        }
        let summary_header: Vec<String> = line.split(',').map(normalize_header_name).collect();
        let summary_header_line = line_no;
        let values_line = loop {
            match self.next_line()? {
                None => return Err(BillError::MissingSummary),
                Some(l) if l.is_empty() => continue,
                Some(l) => break l,
            }
        };
        let values_line_no = self.line_no;
        if !values_line.starts_with('`') {
            return Err(BillError::MissingBacktick {
                line: values_line_no,
            });
        }
        let values = split_values(&values_line);
        check_count(values_line_no, summary_header.len(), values.len())?;
        while let Some(rest) = self.next_line()? {
            if !rest.trim().is_empty() {
                return Err(BillError::TrailingData { line: self.line_no });
            }
        }
        Ok(Some(RawItem::Summary(SummaryValues {
            header_line: summary_header_line,
            line: values_line_no,
            header: summary_header,
            values,
        })))
    }

    /// The next line without its line ending (and without the BOM on line 1).
    fn next_line(&mut self) -> Result<Option<String>, BillError> {
        if !self.read_line_bytes()? {
            return Ok(None);
        }
        self.line_no += 1;
        let mut bytes: &[u8] = &self.buf;
        if self.line_no == 1 {
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        std::str::from_utf8(bytes)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| BillError::Utf8 { line: self.line_no })
    }

    /// Fills `buf` with the next line including its `\n`; false at end of input.
    fn read_line_bytes(&mut self) -> Result<bool, BillError> {
        self.buf.clear();
        loop {
            let available = match self.src.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BillError::Io(e)),
            };
            if available.is_empty() {
                return Ok(!self.buf.is_empty());
            }
            let (take, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            // +2 leaves room for the CRLF, which is not part of the line's content.
            if self.buf.len() + take > self.line_bytes_max + 2 {
                return Err(BillError::LineTooLong {
                    line: self.line_no + 1,
                    max: self.line_bytes_max,
                });
            }
            self.buf.extend_from_slice(&available[..take]);
            self.src.consume(take);
            if complete {
                return Ok(true);
            }
        }
    }
}

/// Splits a data line on `` ,` `` after its leading backtick and unescapes each value.
fn split_values(line: &str) -> Vec<String> {
    let body = line.strip_prefix('`').unwrap_or(line);
    body.split(",`").map(unescape).collect()
}

fn check_count(line: usize, expected: usize, found: usize) -> Result<(), BillError> {
    if expected == found {
        Ok(())
    } else {
        Err(BillError::FieldCount {
            line,
            expected,
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escape_removes_commas_and_line_breaks() {
        assert_eq!(escaped("a,b"), "a\\ b");
        assert_eq!(escaped("C:\\x"), "C:\\\\x");
        assert_eq!(escaped("l1\r\nl2"), "l1\\r\\nl2");
        assert_eq!(escaped("普通商品`x"), "普通商品`x");
        assert_eq!(unescape("a\\ b"), "a,b");
        assert_eq!(unescape("C:\\\\x"), "C:\\x");
        assert_eq!(
            unescape("keep \\t and trailing \\"),
            "keep \\t and trailing \\"
        );
    }

    #[test]
    fn summary_styles_render_like_their_sources() {
        assert_eq!(SummaryStyle::Fixed.count(45), "45");
        assert_eq!(SummaryStyle::Sample.count(45), "45.0");
        assert_eq!(SummaryStyle::Fixed.amount(0, 2), "0.00");
        assert_eq!(SummaryStyle::Sample.amount(0, 2), "0.0");
        assert_eq!(SummaryStyle::Sample.amount(47, 2), "0.47");
        assert_eq!(SummaryStyle::Sample.amount(8000, 5), "0.08");
        assert_eq!(SummaryStyle::Sample.amount(-2000, 5), "-0.02");
        assert_eq!(SummaryStyle::Sample.amount(1000, 2), "10.0");
        assert_eq!(SummaryStyle::Fixed.amount(8000, 5), "0.08000");
    }

    #[test]
    fn counts_accept_integer_and_sample_forms_only() {
        assert_eq!(parse_count("45", 1, "n").unwrap(), 45);
        assert_eq!(parse_count("45.0", 1, "n").unwrap(), 45);
        assert_eq!(parse_count("45.00", 1, "n").unwrap(), 45);
        for bad in ["45.5", "-1", "", "4e1", "x"] {
            assert!(matches!(
                parse_count(bad, 7, "n"),
                Err(BillError::Count { line: 7, .. })
            ));
        }
    }

    #[test]
    fn header_names_accept_full_width_parentheses() {
        assert_eq!(normalize_header_name("收支金额（元）"), "收支金额(元)");
        assert_eq!(normalize_header_name(" 账户结余(元) "), "账户结余(元)");
    }

    #[test]
    fn reader_rejects_overlong_lines_without_buffering_them() {
        let mut data = b"a,b\r\n`".to_vec();
        data.extend(std::iter::repeat_n(b'x', LINE_BYTES_MAX + 10));
        let mut r = RawReader::open(&data[..]).unwrap();
        assert!(matches!(
            r.next_item(),
            Err(BillError::LineTooLong { line: 2, .. })
        ));
        assert!(matches!(r.next_item(), Ok(None)));
    }

    #[test]
    fn reader_reports_bad_utf8_with_its_line() {
        let data = b"a\r\n`ok\r\n`\xff\r\n";
        let mut r = RawReader::open(&data[..]).unwrap();
        assert!(matches!(
            r.next_item(),
            Ok(Some(RawItem::Row { line: 2, .. }))
        ));
        assert!(matches!(r.next_item(), Err(BillError::Utf8 { line: 3 })));
    }

    proptest! {
        #[test]
        fn unescape_inverts_escape(s in any::<String>()) {
            let e = escaped(&s);
            prop_assert!(!e.contains(',') && !e.contains('\n') && !e.contains('\r'));
            prop_assert_eq!(unescape(&e), s);
        }

        #[test]
        fn any_values_survive_a_record_line(values in proptest::collection::vec(any::<String>(), 1..8)) {
            let mut out = Vec::new();
            let mut line = RecordLine::new(&mut out);
            for v in &values {
                line.value(v);
            }
            line.end();
            let text = String::from_utf8(out).unwrap();
            let text = text.strip_suffix("\r\n").unwrap();
            prop_assert_eq!(split_values(text), values);
        }
    }
}
