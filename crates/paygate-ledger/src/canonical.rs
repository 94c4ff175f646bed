//! The canonical bytes of a stored transfer: the journal's leaf data. Stable: an entry hashed
//! today must hash the same in ten years, so a change means a new version byte, never an edit.
//!
//! Version 1, integers big-endian, 94 + n bytes:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | record type `0x54` (`T`, a transfer) |
//! | 1 | 1 | encoding version `0x01` |
//! | 2 | 16 | id |
//! | 18 | 16 | debit_account_id |
//! | 34 | 16 | credit_account_id |
//! | 50 | 8 | amount |
//! | 58 | 16 | pending_id, all zero when none (0 is never an id) |
//! | 74 | 4 | timeout_s |
//! | 78 | 3 | ledger: the ISO 4217 code in ASCII (`CNY`), not an enum index that could be reordered |
//! | 81 | 2 | code |
//! | 83 | 1 | kind: 0 single, 1 pending, 2 post_pending, 3 void_pending, 4 expire_pending |
//! | 84 | 1 | flags: bit 0 linked, other bits zero |
//! | 85 | 8 | timestamp_ms |
//! | 93 | 1 | n = user_data length, at most 128 |
//! | 94 | n | user_data, printable ASCII |
//!
//! The journal leaf is RFC 6962's: `SHA-256(0x00 ‖ these bytes)`.

use paygate_core::money::Currency;

use crate::ids::{AccountId, TransferId};
use crate::merkle::{Hash, leaf_hash};
use crate::model::{Transfer, TransferKind, TransferRecord, USER_DATA_BYTES_MAX};

pub const RECORD_TYPE_TRANSFER: u8 = b'T';
pub const ENCODING_VERSION: u8 = 1;
/// Length without user_data.
pub const FIXED_BYTES: usize = 94;

/// Why bytes are not a canonical transfer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes: too short or too long for a version-1 transfer")]
    Length(usize),
    #[error("record type {0:#04x} is not a transfer")]
    RecordType(u8),
    #[error("encoding version {0} is unknown")]
    Version(u8),
    #[error("the {0} field is not a valid id")]
    Id(&'static str),
    #[error("ledger {0:?} is not a known currency")]
    Ledger(String),
    #[error("kind byte {0} is unknown")]
    Kind(u8),
    #[error("flags byte {0:#04x} has unknown bits")]
    Flags(u8),
    #[error("user_data is not printable ASCII")]
    UserData,
}

impl DecodeError {
    pub const fn code(&self) -> &'static str {
        match self {
            DecodeError::Length(_) => "length",
            DecodeError::RecordType(_) => "record_type",
            DecodeError::Version(_) => "version",
            DecodeError::Id(_) => "id",
            DecodeError::Ledger(_) => "ledger",
            DecodeError::Kind(_) => "kind",
            DecodeError::Flags(_) => "flags",
            DecodeError::UserData => "user_data",
        }
    }
}

/// The canonical bytes of `r` (see the module doc).
pub fn encode(r: &TransferRecord) -> Vec<u8> {
    let t = &r.transfer;
    // A longer user_data cannot pass `apply`; truncating keeps this total for any value.
    let user_data = &t.user_data.as_bytes()[..t.user_data.len().min(USER_DATA_BYTES_MAX)];
    let mut out = Vec::with_capacity(FIXED_BYTES + user_data.len());
    out.push(RECORD_TYPE_TRANSFER);
    out.push(ENCODING_VERSION);
    out.extend_from_slice(&t.id.to_bytes());
    out.extend_from_slice(&t.debit_account_id.to_bytes());
    out.extend_from_slice(&t.credit_account_id.to_bytes());
    out.extend_from_slice(&t.amount.to_be_bytes());
    out.extend_from_slice(&t.pending_id.map_or(0u128, TransferId::get).to_be_bytes());
    out.extend_from_slice(&t.timeout_s.to_be_bytes());
    out.extend_from_slice(t.ledger.as_str().as_bytes());
    out.extend_from_slice(&t.code.to_be_bytes());
    out.push(t.kind.to_byte());
    out.push(u8::from(t.linked));
    out.extend_from_slice(&r.timestamp_ms.to_be_bytes());
    out.push(user_data.len() as u8);
    out.extend_from_slice(user_data);
    out
}

/// The journal leaf hash of `r`.
pub fn leaf_hash_of(r: &TransferRecord) -> Hash {
    leaf_hash(&encode(r))
}

fn take<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// Reads canonical bytes back; refuses anything [`encode`] would not have written.
pub fn decode(b: &[u8]) -> Result<TransferRecord, DecodeError> {
    if b.len() < FIXED_BYTES {
        return Err(DecodeError::Length(b.len()));
    }
    if b[0] != RECORD_TYPE_TRANSFER {
        return Err(DecodeError::RecordType(b[0]));
    }
    if b[1] != ENCODING_VERSION {
        return Err(DecodeError::Version(b[1]));
    }
    let n = usize::from(b[93]);
    if n > USER_DATA_BYTES_MAX || b.len() != FIXED_BYTES + n {
        return Err(DecodeError::Length(b.len()));
    }
    let id = TransferId::from_bytes(&b[2..18]).map_err(|_| DecodeError::Id("id"))?;
    let debit_account_id =
        AccountId::from_bytes(&b[18..34]).map_err(|_| DecodeError::Id("debit_account_id"))?;
    let credit_account_id =
        AccountId::from_bytes(&b[34..50]).map_err(|_| DecodeError::Id("credit_account_id"))?;
    let pending_raw = u128::from_be_bytes(take::<16>(b, 58));
    let pending_id = match pending_raw {
        0 => None,
        raw => Some(TransferId::new(raw).map_err(|_| DecodeError::Id("pending_id"))?),
    };
    let ledger_text = String::from_utf8_lossy(&b[78..81]).into_owned();
    let ledger = Currency::parse(&ledger_text).map_err(|_| DecodeError::Ledger(ledger_text))?;
    let kind = TransferKind::from_byte(b[83]).ok_or(DecodeError::Kind(b[83]))?;
    if b[84] & !1 != 0 {
        return Err(DecodeError::Flags(b[84]));
    }
    let user_data = &b[94..];
    if !user_data.iter().all(|c| (0x20..=0x7e).contains(c)) {
        return Err(DecodeError::UserData);
    }
    Ok(TransferRecord {
        transfer: Transfer {
            id,
            debit_account_id,
            credit_account_id,
            amount: u64::from_be_bytes(take::<8>(b, 50)),
            pending_id,
            timeout_s: u32::from_be_bytes(take::<4>(b, 74)),
            ledger,
            code: u16::from_be_bytes(take::<2>(b, 81)),
            kind,
            linked: b[84] & 1 == 1,
            user_data: String::from_utf8_lossy(user_data).into_owned(),
        },
        timestamp_ms: u64::from_be_bytes(take::<8>(b, 85)),
    })
}
