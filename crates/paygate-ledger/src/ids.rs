//! Account and transfer ids: 128-bit, never 0 and never `u128::MAX` (reserved, as in
//! TigerBeetle). paygate derives them from business references with SHA-256, so the same
//! fact always yields the same ids and a replay is idempotent by construction.
//!
//! Outside the process an id is 32 lowercase hex digits (serde, [`fmt::Display`]): a `u128`
//! fits neither a JSON number that JavaScript reads exactly nor a 64-bit SQL integer. The
//! store may keep the 16 big-endian bytes ([`AccountId::to_bytes`]) in a BLOB/bytea instead.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why an id could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id {0:?} is not 32 lowercase hex digits")]
    Syntax(String),
    #[error("id must not be zero or u128::MAX")]
    Reserved,
    #[error("id has {0} bytes, want 16")]
    Length(usize),
}

/// 128 bits of SHA-256 over a domain tag and length-prefixed parts, mapped away from the two
/// reserved values. Length prefixes keep `("ab","c")` and `("a","bc")` apart.
pub(crate) fn derive_u128(domain: &str, parts: &[&[u8]]) -> u128 {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    // 2^-127 odds; mapping keeps the function total without a panic path.
    match u128::from_be_bytes(first) {
        0 => 1,
        u128::MAX => u128::MAX - 1,
        v => v,
    }
}

fn parse_hex_u128(s: &str) -> Result<u128, IdError> {
    let ok = s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(IdError::Syntax(s.chars().take(40).collect()));
    }
    u128::from_str_radix(s, 16).map_err(|_| IdError::Syntax(s.to_owned()))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            /// Wraps a raw value; fails on the reserved 0 and `u128::MAX`.
            pub const fn new(raw: u128) -> Result<$name, IdError> {
                if raw == 0 || raw == u128::MAX {
                    Err(IdError::Reserved)
                } else {
                    Ok($name(raw))
                }
            }

            pub const fn get(self) -> u128 {
                self.0
            }

            pub const fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }

            pub fn from_bytes(bytes: &[u8]) -> Result<$name, IdError> {
                let arr: [u8; 16] = bytes.try_into().map_err(|_| IdError::Length(bytes.len()))?;
                $name::new(u128::from_be_bytes(arr))
            }

            /// 32 lowercase hex digits.
            pub fn to_hex(self) -> String {
                format!("{:032x}", self.0)
            }

            pub fn from_hex(s: &str) -> Result<$name, IdError> {
                $name::new(parse_hex_u128(s)?)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:032x})"), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::from_hex(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// An account id.
    AccountId
);
id_type!(
    /// A transfer id; also the idempotency key of the transfer.
    TransferId
);

impl AccountId {
    /// A deterministic id from a domain tag and parts (see [`crate::chart`] for paygate's).
    pub fn derive(domain: &str, parts: &[&[u8]]) -> AccountId {
        AccountId(derive_u128(domain, parts))
    }
}

impl TransferId {
    /// A deterministic id from a domain tag and parts (see [`crate::recipes`] for paygate's).
    pub fn derive(domain: &str, parts: &[&[u8]]) -> TransferId {
        TransferId(derive_u128(domain, parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_reserved_values_and_round_trip_as_hex_and_bytes() {
        assert_eq!(AccountId::new(0), Err(IdError::Reserved));
        assert_eq!(TransferId::new(u128::MAX), Err(IdError::Reserved));
        let id = TransferId::new(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10).unwrap();
        assert_eq!(id.to_hex(), "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(TransferId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(TransferId::from_bytes(&id.to_bytes()).unwrap(), id);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"0102030405060708090a0b0c0d0e0f10\""
        );
        assert!(TransferId::from_hex("0102030405060708090A0B0C0D0E0F10").is_err());
        assert!(TransferId::from_hex("+102030405060708090a0b0c0d0e0f10").is_err());
        assert!(TransferId::from_hex("00000000000000000000000000000000").is_err());
        assert_eq!(TransferId::from_bytes(&[1; 15]), Err(IdError::Length(15)));
    }

    #[test]
    fn derived_ids_separate_parts_by_length() {
        let a = TransferId::derive("t", &[b"ab", b"c"]);
        let b = TransferId::derive("t", &[b"a", b"bc"]);
        assert_ne!(a, b);
        assert_eq!(a, TransferId::derive("t", &[b"ab", b"c"]));
        assert_ne!(a, TransferId::derive("u", &[b"ab", b"c"]));
    }
}
