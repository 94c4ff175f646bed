//! Money as integers: an `i64` amount in the currency's minor unit (fen for CNY) plus an
//! ISO 4217 currency, and exact conversions between decimal strings ("0.03" yuan) and
//! integer units. No floating point anywhere, not even while parsing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest scale whose power of ten still fits an `i64` (10^18 < 2^63).
pub const SCALE_MAX: u32 = 18;

/// Longest decimal string accepted by [`parse_decimal_minor`]. An i64 has at most 19 digits;
/// the rest of the allowance is for a sign, a point, zero padding and trailing zero
/// decimals, while keeping hostile inputs cheap to reject.
pub const DECIMAL_CHARS_MAX: usize = 64;

/// Why an amount or a currency could not be read or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("empty amount")]
    Empty,
    #[error("amount {0:?} is longer than {DECIMAL_CHARS_MAX} characters")]
    TooLong(String),
    #[error("amount {0:?} is not a plain decimal like 12.34")]
    Syntax(String),
    #[error("amount {value:?} has more than {scale} significant decimal places")]
    TooPrecise { value: String, scale: u32 },
    #[error("amount {0:?} does not fit in 64-bit minor units")]
    Overflow(String),
    #[error("scale {0} is larger than {SCALE_MAX}")]
    ScaleTooLarge(u32),
    #[error("unknown currency code {0:?}")]
    UnknownCurrency(String),
}

/// ISO 4217 currencies paygate handles. WeChat Pay writes the code in upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(clippy::upper_case_acronyms)] // the ISO codes are the names people search for
pub enum Currency {
    CNY,
    HKD,
    MOP,
    TWD,
    USD,
    EUR,
    GBP,
    JPY,
    KRW,
    AUD,
    CAD,
    CHF,
    NZD,
    SGD,
    THB,
    MYR,
}

impl Currency {
    /// Every supported currency, in declaration order.
    pub const ALL: [Currency; 16] = [
        Currency::CNY,
        Currency::HKD,
        Currency::MOP,
        Currency::TWD,
        Currency::USD,
        Currency::EUR,
        Currency::GBP,
        Currency::JPY,
        Currency::KRW,
        Currency::AUD,
        Currency::CAD,
        Currency::CHF,
        Currency::NZD,
        Currency::SGD,
        Currency::THB,
        Currency::MYR,
    ];

    /// Digits after the decimal point in the major unit (ISO 4217 "minor unit").
    pub const fn minor_units(self) -> u32 {
        match self {
            Currency::JPY | Currency::KRW => 0,
            _ => 2,
        }
    }

    /// The three-letter code, e.g. `"CNY"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Currency::CNY => "CNY",
            Currency::HKD => "HKD",
            Currency::MOP => "MOP",
            Currency::TWD => "TWD",
            Currency::USD => "USD",
            Currency::EUR => "EUR",
            Currency::GBP => "GBP",
            Currency::JPY => "JPY",
            Currency::KRW => "KRW",
            Currency::AUD => "AUD",
            Currency::CAD => "CAD",
            Currency::CHF => "CHF",
            Currency::NZD => "NZD",
            Currency::SGD => "SGD",
            Currency::THB => "THB",
            Currency::MYR => "MYR",
        }
    }

    /// Parses an upper-case ISO code exactly (WeChat never sends lower case, so neither
    /// do we accept it: a lower-case code is a sign of a bug upstream).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        Currency::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount in minor units of one currency. Arithmetic is checked: mixing currencies or
/// overflowing gives `None` rather than a wrong number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    pub const fn new(amount_minor: i64, currency: Currency) -> Money {
        Money {
            amount_minor,
            currency,
        }
    }

    /// CNY fen, the unit of every WeChat Pay amount field.
    pub const fn cny_fen(fen: i64) -> Money {
        Money::new(fen, Currency::CNY)
    }

    /// Parses a decimal major-unit string ("12.34") in `currency`'s own scale.
    pub fn from_decimal_str(s: &str, currency: Currency) -> Result<Money, MoneyError> {
        parse_decimal_minor(s, currency.minor_units()).map(|v| Money::new(v, currency))
    }

    pub const fn amount_minor(self) -> i64 {
        self.amount_minor
    }

    pub const fn currency(self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        let sum = self.amount_minor.checked_add(other.amount_minor)?;
        Some(Money::new(sum, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        let diff = self.amount_minor.checked_sub(other.amount_minor)?;
        Some(Money::new(diff, self.currency))
    }

    pub fn checked_neg(self) -> Option<Money> {
        Some(Money::new(self.amount_minor.checked_neg()?, self.currency))
    }

    pub const fn is_positive(self) -> bool {
        self.amount_minor > 0
    }

    pub const fn is_negative(self) -> bool {
        self.amount_minor < 0
    }

    pub const fn is_zero(self) -> bool {
        self.amount_minor == 0
    }

    /// The amount as a major-unit decimal string in the currency's scale ("12.34").
    pub fn to_decimal_string(self) -> String {
        format_decimal_minor(self.amount_minor, self.currency.minor_units())
    }
}

impl fmt::Display for Money {
    /// `12.34 CNY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

/// Parses an exact decimal string into integer units at `scale` decimal places:
/// `"0.03"` at 2 is 3, `"1"` is 100, `"-0.02"` is -2, `"45.0"` is 4500.
///
/// Accepted: an optional leading `-`, one or more ASCII digits, and optionally a `.`
/// followed by one or more digits. Decimal places beyond `scale` must all be zero
/// (`"0.010"` at 2 is fine, `"0.015"` is an error: we never round money).
/// Rejected: empty strings, `+`, spaces, exponents, `NaN`, thousands separators, and
/// anything outside the `i64` range.
pub fn parse_decimal_minor(s: &str, scale: u32) -> Result<i64, MoneyError> {
    if scale > SCALE_MAX {
        return Err(MoneyError::ScaleTooLarge(scale));
    }
    if s.is_empty() {
        return Err(MoneyError::Empty);
    }
    if s.len() > DECIMAL_CHARS_MAX {
        return Err(MoneyError::TooLong(truncate_for_error(s)));
    }
    let syntax = || MoneyError::Syntax(s.to_owned());
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_digits, frac_digits) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    if int_digits.is_empty() || !int_digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let frac_digits = frac_digits.unwrap_or("");
    if unsigned.contains('.') && frac_digits.is_empty() {
        return Err(syntax());
    }
    if !frac_digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let scale_len = scale as usize;
    let (kept, dropped) = frac_digits.split_at(frac_digits.len().min(scale_len));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(MoneyError::TooPrecise {
            value: s.to_owned(),
            scale,
        });
    }
    // Accumulate the magnitude in u128 so i64::MIN's magnitude is representable; the
    // length cap keeps every intermediate value far below u128::MAX.
    let overflow = || MoneyError::Overflow(s.to_owned());
    let mut magnitude: u128 = 0;
    let padding = scale_len - kept.len();
    let digits = int_digits
        .bytes()
        .chain(kept.bytes())
        .chain(std::iter::repeat_n(b'0', padding));
    for d in digits {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(d - b'0')))
            .ok_or_else(overflow)?;
    }
    let signed = if negative {
        0i128.checked_sub_unsigned(magnitude)
    } else {
        i128::try_from(magnitude).ok()
    };
    signed
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(overflow)
}

/// Formats integer units at `scale` decimal places: 3 at 2 is `"0.03"`, -2 is `"-0.02"`,
/// 1000 at 5 is `"0.01000"`. Works for every `i64`, including `i64::MIN`, and any scale.
pub fn format_decimal_minor(v: i64, scale: u32) -> String {
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if v < 0 {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
        return out;
    }
    if digits.len() <= scale {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    } else {
        let (int_part, frac_part) = digits.split_at(digits.len() - scale);
        out.push_str(int_part);
        out.push('.');
        out.push_str(frac_part);
    }
    out
}

/// Yuan string to fen, exactly: `"0.03"` is 3. Same rules as [`parse_decimal_minor`] at 2.
pub fn yuan_to_fen(s: &str) -> Result<i64, MoneyError> {
    parse_decimal_minor(s, 2)
}

/// Fen to a yuan string with two decimals: 3 is `"0.03"`.
pub fn fen_to_yuan(fen: i64) -> String {
    format_decimal_minor(fen, 2)
}

fn truncate_for_error(s: &str) -> String {
    let mut out: String = s.chars().take(DECIMAL_CHARS_MAX).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn yuan_strings_parse_exactly() {
        assert_eq!(yuan_to_fen("0.03"), Ok(3));
        assert_eq!(yuan_to_fen("1"), Ok(100));
        assert_eq!(yuan_to_fen("-0.02"), Ok(-2));
        assert_eq!(yuan_to_fen("45.0"), Ok(4500));
        assert_eq!(yuan_to_fen("0.10"), Ok(10));
        assert_eq!(yuan_to_fen("0.010"), Ok(1));
        assert_eq!(yuan_to_fen("007.5"), Ok(750));
        assert_eq!(yuan_to_fen("-0"), Ok(0));
        assert_eq!(yuan_to_fen("92233720368547758.07"), Ok(i64::MAX));
        assert_eq!(yuan_to_fen("-92233720368547758.08"), Ok(i64::MIN));
        assert_eq!(parse_decimal_minor("0.01000", 5), Ok(1000));
        assert_eq!(parse_decimal_minor("45.0", 0), Ok(45));
        assert_eq!(parse_decimal_minor("12", 0), Ok(12));
    }

    #[test]
    fn malformed_amounts_are_rejected_with_a_reason() {
        for bad in [
            "1e3", "NaN", "nan", "inf", "1,000", " 1", "1 ", "+1", "--1", "-", ".", ".5", "5.",
            "1.2.3", "0x10", "１", "1_000", "-.5", "1.-5",
        ] {
            assert!(
                matches!(yuan_to_fen(bad), Err(MoneyError::Syntax(_))),
                "{bad:?} should be a syntax error"
            );
        }
        assert_eq!(yuan_to_fen(""), Err(MoneyError::Empty));
        assert!(matches!(
            yuan_to_fen("0.015"),
            Err(MoneyError::TooPrecise { scale: 2, .. })
        ));
        assert!(matches!(
            yuan_to_fen("92233720368547758.08"),
            Err(MoneyError::Overflow(_))
        ));
        assert!(matches!(
            yuan_to_fen("-92233720368547758.09"),
            Err(MoneyError::Overflow(_))
        ));
        assert!(matches!(
            yuan_to_fen("99999999999999999999999999999999999999999"),
            Err(MoneyError::Overflow(_))
        ));
        assert!(matches!(
            yuan_to_fen(&"1".repeat(65)),
            Err(MoneyError::TooLong(_))
        ));
        assert_eq!(
            parse_decimal_minor("1", 19),
            Err(MoneyError::ScaleTooLarge(19))
        );
    }

    #[test]
    fn formatting_pads_and_signs() {
        assert_eq!(fen_to_yuan(3), "0.03");
        assert_eq!(fen_to_yuan(-2), "-0.02");
        assert_eq!(fen_to_yuan(0), "0.00");
        assert_eq!(fen_to_yuan(12345), "123.45");
        assert_eq!(format_decimal_minor(1000, 5), "0.01000");
        assert_eq!(format_decimal_minor(-8000, 5), "-0.08000");
        assert_eq!(format_decimal_minor(45, 0), "45");
        assert_eq!(format_decimal_minor(i64::MIN, 2), "-92233720368547758.08");
        assert_eq!(format_decimal_minor(i64::MAX, 2), "92233720368547758.07");
        assert_eq!(
            format_decimal_minor(i64::MIN, 25),
            "-0.0000009223372036854775808"
        );
    }

    #[test]
    fn currency_codes_and_minor_units() {
        assert_eq!(Currency::parse("CNY"), Ok(Currency::CNY));
        assert_eq!("JPY".parse::<Currency>(), Ok(Currency::JPY));
        assert!(matches!(
            Currency::parse("cny"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(Currency::parse("XXX").is_err());
        assert_eq!(Currency::JPY.minor_units(), 0);
        assert_eq!(Currency::KRW.minor_units(), 0);
        assert_eq!(Currency::CNY.minor_units(), 2);
        for c in Currency::ALL {
            assert_eq!(Currency::parse(c.as_str()), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
        }
    }

    #[test]
    fn currency_and_money_serde_use_the_code_string() {
        let json = serde_json::to_string(&Currency::HKD).unwrap();
        assert_eq!(json, "\"HKD\"");
        assert_eq!(
            serde_json::from_str::<Currency>("\"HKD\"").unwrap(),
            Currency::HKD
        );
        assert!(serde_json::from_str::<Currency>("\"hkd\"").is_err());
        let m = Money::new(-250, Currency::USD);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount_minor":-250,"currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }

    #[test]
    fn money_arithmetic_refuses_mixed_currencies_and_overflow() {
        let a = Money::cny_fen(150);
        let b = Money::cny_fen(-50);
        assert_eq!(a.checked_add(b), Some(Money::cny_fen(100)));
        assert_eq!(a.checked_sub(b), Some(Money::cny_fen(200)));
        assert_eq!(a.checked_add(Money::new(1, Currency::USD)), None);
        assert_eq!(a.checked_sub(Money::new(1, Currency::USD)), None);
        assert_eq!(
            Money::cny_fen(i64::MAX).checked_add(Money::cny_fen(1)),
            None
        );
        assert_eq!(
            Money::cny_fen(i64::MIN).checked_sub(Money::cny_fen(1)),
            None
        );
        assert_eq!(Money::cny_fen(i64::MIN).checked_neg(), None);
        assert!(a.is_positive() && !a.is_negative() && !a.is_zero());
        assert!(b.is_negative() && !b.is_positive());
        assert!(Money::cny_fen(0).is_zero() && !Money::cny_fen(0).is_positive());
    }

    #[test]
    fn money_displays_in_its_currency_scale() {
        assert_eq!(Money::cny_fen(1234).to_string(), "12.34 CNY");
        assert_eq!(Money::new(1234, Currency::JPY).to_string(), "1234 JPY");
        assert_eq!(
            Money::from_decimal_str("12.34", Currency::CNY),
            Ok(Money::cny_fen(1234))
        );
        assert!(Money::from_decimal_str("12.3", Currency::JPY).is_err());
        assert_eq!(
            Money::from_decimal_str("12", Currency::JPY),
            Ok(Money::new(12, Currency::JPY))
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity_at_scale_2_and_5(v in any::<i64>()) {
            prop_assert_eq!(parse_decimal_minor(&format_decimal_minor(v, 2), 2), Ok(v));
            prop_assert_eq!(parse_decimal_minor(&format_decimal_minor(v, 5), 5), Ok(v));
            prop_assert_eq!(parse_decimal_minor(&format_decimal_minor(v, 0), 0), Ok(v));
        }

        #[test]
        fn parse_never_panics(s in any::<String>(), scale in 0u32..30) {
            let _ = parse_decimal_minor(&s, scale);
        }

        #[test]
        fn parse_never_panics_on_numberish_strings(s in "[-+0-9.,eE ]{0,40}", scale in 0u32..20) {
            let _ = parse_decimal_minor(&s, scale);
        }

        #[test]
        fn trailing_zero_decimals_do_not_change_the_value(v in any::<i64>(), zeros in 1usize..6) {
            let s = format!("{}{}", format_decimal_minor(v, 2), "0".repeat(zeros));
            prop_assert_eq!(yuan_to_fen(&s), Ok(v));
        }

        #[test]
        fn checked_add_agrees_with_i128(a in any::<i64>(), b in any::<i64>()) {
            let exact = i128::from(a) + i128::from(b);
            let got = Money::cny_fen(a).checked_add(Money::cny_fen(b)).map(|m| i128::from(m.amount_minor()));
            prop_assert_eq!(got, i64::try_from(exact).ok().map(i128::from));
        }
    }
}
