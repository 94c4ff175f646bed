//! Time as WeChat Pay writes it: RFC 3339 in Beijing time (`+08:00`), bill times
//! `YYYY-MM-DD HH:MM:SS`, and business dates cut at 00:00 Beijing time.

use time::{
    Date, OffsetDateTime, UtcOffset, format_description::FormatItem, macros::format_description,
};

/// Beijing time, the offset every WeChat Pay timestamp and business day uses.
pub const BEIJING: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

const RFC3339_SECONDS: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
);
const BILL_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// `2015-05-20T13:29:35+08:00`: second precision, Beijing offset, as WeChat emits.
pub fn rfc3339_beijing(t: OffsetDateTime) -> String {
    t.to_offset(BEIJING)
        .format(RFC3339_SECONDS)
        .unwrap_or_default()
}

/// `2019-02-19 01:52:32` in Beijing time, as bill rows carry it.
pub fn bill_time_beijing(t: OffsetDateTime) -> String {
    t.to_offset(BEIJING).format(BILL_TIME).unwrap_or_default()
}

/// The business date (Beijing time, cut at 00:00) an instant belongs to.
pub fn beijing_date(t: OffsetDateTime) -> Date {
    t.to_offset(BEIJING).date()
}

/// `YYYY-MM-DD`.
pub fn format_date(d: Date) -> String {
    d.format(DATE).unwrap_or_default()
}

/// Parses `YYYY-MM-DD` strictly.
pub fn parse_date(s: &str) -> Option<Date> {
    if s.len() != 10 {
        return None;
    }
    Date::parse(s, DATE).ok()
}

/// Parses an RFC 3339 timestamp with any offset, `Z` included, and optional fractions.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_in_beijing_time() {
        let t = datetime!(2015-05-20 05:29:35 UTC);
        assert_eq!(rfc3339_beijing(t), "2015-05-20T13:29:35+08:00");
        assert_eq!(bill_time_beijing(t), "2015-05-20 13:29:35");
    }

    #[test]
    fn business_day_cuts_at_beijing_midnight() {
        let before = datetime!(2026-11-28 15:59:59 UTC);
        let after = datetime!(2026-11-28 16:00:00 UTC);
        assert_eq!(format_date(beijing_date(before)), "2026-11-28");
        assert_eq!(format_date(beijing_date(after)), "2026-11-29");
    }

    #[test]
    fn parses_any_offset_and_round_trips() {
        let z = parse_rfc3339("2018-06-08T10:34:56Z").unwrap();
        let cst = parse_rfc3339("2018-06-08T18:34:56+08:00").unwrap();
        assert_eq!(z, cst);
        assert!(parse_rfc3339("2018-06-08T18:34:56.123+08:00").is_some());
        assert!(parse_rfc3339("2018-06-08 18:34:56").is_none());
        assert_eq!(parse_rfc3339(&rfc3339_beijing(z)).unwrap(), z);
    }

    #[test]
    fn dates_parse_strictly() {
        assert!(parse_date("2026-02-29").is_none());
        assert!(parse_date("2026-2-1").is_none());
        assert_eq!(format_date(parse_date("2024-02-29").unwrap()), "2024-02-29");
    }
}
