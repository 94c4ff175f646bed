//! [`Key`]: a bill or platform identifier packed losslessly into 128 bits, so matching
//! compares and sorts two machine words instead of strings.
//!
//! Layout (bit 127 first):
//! - bit 127: 0 = numeric, 1 = text;
//! - bit 126: the kind, 0 = payment (out_trade_no), 1 = refund (out_refund_no);
//! - numeric (paygate's own ids: 30-digit attempt ids, 29-digit refund ids): bits 120..126
//!   hold the digit count (1..=36), bits 0..120 the value (10^36 < 2^120), so `"007"` and
//!   `"7"` stay different keys;
//! - text of at most 18 printable ASCII characters: 7 bits each (`byte - 0x20`, never 0),
//!   left-aligned in bits 0..126, zero-padded: exact and reversible;
//! - anything else (longer, or other bytes): a marker `0x7F` in the first 7-bit slot and
//!   119 bits of SHA-256. Not reversible; a collision needs ~2^59 keys, far beyond any day.

use sha2::{Digest, Sha256};

/// Payment row (keyed by the channel out_trade_no) or refund row (channel out_refund_no).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Kind {
    Payment,
    Refund,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Payment => "PAYMENT",
            Kind::Refund => "REFUND",
        }
    }
}

/// A packed identifier; ordering is a total order used only for sort-merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key {
    hi: u64,
    lo: u64,
}

const TEXT: u128 = 1 << 127;
const REFUND: u128 = 1 << 126;
const NUMERIC_DIGITS_MAX: usize = 36;
const TEXT_CHARS_MAX: usize = 18;
const HASH_MARKER: u128 = 0x7F;

impl Key {
    /// Packs `id` (bytes as they appear in the bill) for `kind`.
    pub fn new(kind: Kind, id: &[u8]) -> Key {
        let tag = match kind {
            Kind::Payment => 0,
            Kind::Refund => REFUND,
        };
        let v = numeric(id)
            .or_else(|| text(id))
            .unwrap_or_else(|| hashed(id));
        Key::from_u128(v | tag)
    }

    const fn from_u128(v: u128) -> Key {
        Key {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    const fn as_u128(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }

    pub fn kind(self) -> Kind {
        if self.as_u128() & REFUND != 0 {
            Kind::Refund
        } else {
            Kind::Payment
        }
    }

    /// The identifier's text, or `None` for a hashed (long) identifier.
    pub fn text(self) -> Option<String> {
        let v = self.as_u128() & !REFUND;
        if v & TEXT == 0 {
            let digits = ((v >> 120) & 0x3F) as usize;
            let value = v & ((1u128 << 120) - 1);
            return Some(format!("{value:0digits$}"));
        }
        let mut out = String::with_capacity(TEXT_CHARS_MAX);
        for i in 0..TEXT_CHARS_MAX {
            let code = (v >> (119 - 7 * i)) & 0x7F;
            if i == 0 && code == HASH_MARKER {
                return None;
            }
            if code == 0 {
                break;
            }
            out.push(char::from(code as u8 + 0x20));
        }
        Some(out)
    }
}

fn numeric(id: &[u8]) -> Option<u128> {
    if id.is_empty() || id.len() > NUMERIC_DIGITS_MAX {
        return None;
    }
    let mut value: u128 = 0;
    for &b in id {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u128::from(b - b'0');
    }
    Some(((id.len() as u128) << 120) | value)
}

fn text(id: &[u8]) -> Option<u128> {
    if id.is_empty() || id.len() > TEXT_CHARS_MAX {
        return None;
    }
    let mut v = TEXT;
    for (i, &b) in id.iter().enumerate() {
        if !(0x21..=0x7E).contains(&b) {
            return None;
        }
        v |= u128::from(b - 0x20) << (119 - 7 * i);
    }
    Some(v)
}

fn hashed(id: &[u8]) -> u128 {
    let digest = Sha256::digest(id);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let h = u128::from_be_bytes(bytes) & ((1u128 << 119) - 1);
    TEXT | (HASH_MARKER << 119) | h
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.text() {
            Some(t) => f.write_str(&t),
            None => write!(f, "#{:032x}", self.as_u128()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paygate_ids_are_numeric_and_round_trip() {
        let attempt = b"420000000020261128123456789001";
        let k = Key::new(Kind::Payment, attempt);
        assert_eq!(k.text().unwrap().as_bytes(), attempt);
        assert_eq!(k.kind(), Kind::Payment);
        let r = Key::new(Kind::Refund, b"50000000020261128123456789012");
        assert_eq!(r.kind(), Kind::Refund);
        assert_ne!(
            Key::new(Kind::Refund, attempt),
            k,
            "kind is part of the key"
        );
        assert_ne!(
            Key::new(Kind::Payment, b"007"),
            Key::new(Kind::Payment, b"7")
        );
        assert_eq!(Key::new(Kind::Payment, b"007").text().unwrap(), "007");
    }

    #[test]
    fn long_ids_hash_and_short_text_round_trips() {
        let t = Key::new(Kind::Payment, b"order_2024-01*x");
        assert_eq!(t.text().unwrap(), "order_2024-01*x");
        let long = Key::new(Kind::Payment, b"this_out_trade_no_is_32_chars_xx");
        assert!(long.text().is_none());
        assert_eq!(
            long,
            Key::new(Kind::Payment, b"this_out_trade_no_is_32_chars_xx")
        );
        assert_ne!(
            long,
            Key::new(Kind::Payment, b"this_out_trade_no_is_32_chars_xy")
        );
        assert_eq!(long.kind(), Kind::Payment);
    }

    proptest! {
        #[test]
        fn equal_keys_iff_equal_ids(a in "[0-9A-Za-z_*|-]{1,40}", b in "[0-9A-Za-z_*|-]{1,40}") {
            let (ka, kb) = (Key::new(Kind::Payment, a.as_bytes()), Key::new(Kind::Payment, b.as_bytes()));
            prop_assert_eq!(ka == kb, a == b);
            if let Some(t) = ka.text() { prop_assert_eq!(t, a); }
        }

        #[test]
        fn digit_strings_round_trip(a in "[0-9]{1,36}") {
            prop_assert_eq!(Key::new(Kind::Refund, a.as_bytes()).text().unwrap(), a);
        }
    }
}
