//! Merchant bills (§4.10, §7): the closed business days, the generated bill files, their
//! short-lived download tokens, and the row sources the gateway builds bills from.
//!
//! A bill is generated once per `(mchid, bill_date, kind)` and kept
//! ([`crate::Store::keep_bill_file`]: the first writer wins and every caller gets the winner's
//! bytes back), so repeated downloads are byte-identical on every node.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::StoreError;
use crate::codec::Cols;

/// Which refunds appear in a merchant's bills: the merchant's own (never paygate's refund of
/// a duplicate payment, which is not the merchant's money), except one the channel refused
/// outright (CLOSED without ever getting a channel refund id: it never existed at WeChat
/// either). Spelled once, used by both backends' bill queries.
pub(crate) const BILLED_REFUND: &str =
    "kind = 'MERCHANT' AND NOT (state = 'CLOSED' AND channel_refund_id IS NULL)";

/// [`BILLED_REFUND`] on a record.
pub fn is_billed_refund(r: &crate::RefundRecord) -> bool {
    r.kind == crate::RefundKind::Merchant
        && !(r.state == crate::RefundState::Closed && r.channel_refund_id.is_none())
}

/// Rows deleted at most per call when expired download tokens are pruned.
pub const EXPIRED_DOWNLOADS_PRUNE_MAX: u32 = 256;

/// A closed business day: its bills may be generated and downloaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillDayRecord {
    /// `YYYY-MM-DD`, the Beijing business day.
    pub bill_date: String,
    #[serde(with = "time::serde::rfc3339")]
    pub closed_at: OffsetDateTime,
    /// `schedule` (the daily job) or `sandbox`.
    pub closed_by: String,
}

/// One generated bill: the exact bytes every download of it serves.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillFileRecord {
    pub mchid: String,
    pub bill_date: String,
    /// `TRADE_ALL`, `TRADE_SUCCESS`, `TRADE_REFUND`, `FUNDFLOW_BASIC`.
    pub kind: String,
    /// Lowercase hex SHA1 of `bytes`: the answer's `hash_value`.
    pub sha1: String,
    /// The uncompressed CSV, BOM included.
    pub bytes: Vec<u8>,
    pub row_count: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for BillFileRecord {
    /// The bytes are summarized: a bill can be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillFileRecord")
            .field("mchid", &self.mchid)
            .field("bill_date", &self.bill_date)
            .field("kind", &self.kind)
            .field("sha1", &self.sha1)
            .field("bytes_len", &self.bytes.len())
            .field("row_count", &self.row_count)
            .finish_non_exhaustive()
    }
}

/// A download URL's token: which merchant may fetch which bill, compressed or not, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillDownloadRecord {
    pub token: String,
    pub mchid: String,
    pub bill_date: String,
    pub kind: String,
    pub gzip: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Where a page of bill rows ends: the last row's time and id (keyset paging).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillCursor {
    pub at: OffsetDateTime,
    pub id: String,
}

/// A merchant's money movements before some instant, as bills count them: the opening
/// balance of a fund-flow bill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantFlowTotals {
    pub paid_count: i64,
    pub paid_fen: i64,
    /// The fees snapshotted on those payments.
    pub fee_fen: i64,
    pub refund_count: i64,
    pub refund_fen: i64,
    /// The fee given back with those refunds: per order `floor(fee × refunded / total)`, the
    /// ledger's rule (`ledger::refund_fee_share`) summed over the order's refunds.
    pub fee_refund_fen: i64,
}

pub(crate) const BILL_DAY_COLS: &str = "bill_date, closed_at, closed_by";
pub(crate) const BILL_DOWNLOAD_COLS: &str = "token, mchid, bill_date, kind, gzip, expires_at";

pub(crate) fn bill_day(r: &impl Cols) -> Result<BillDayRecord, StoreError> {
    Ok(BillDayRecord {
        bill_date: r.text(0)?,
        closed_at: r.time(1)?,
        closed_by: r.text(2)?,
    })
}

/// Refuses a record whose hash does not describe its bytes: a caller with such a record has
/// a bug, and a stored mismatch would make every download fail its client's check.
pub(crate) fn check_file(f: &BillFileRecord) -> Result<(), StoreError> {
    let hash_ok = f.sha1.len() == 40
        && f.sha1
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hash_ok && f.row_count >= 0 && !f.bytes.is_empty() {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "bill file {}/{}/{}: sha1 must be 40 lowercase hex digits, bytes non-empty, rows >= 0",
        f.mchid, f.bill_date, f.kind
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sha1: &str, bytes: &[u8]) -> BillFileRecord {
        BillFileRecord {
            mchid: "1900000109".into(),
            bill_date: "2026-01-02".into(),
            kind: "TRADE_ALL".into(),
            sha1: sha1.into(),
            bytes: bytes.to_vec(),
            row_count: 1,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_file_needs_a_lowercase_sha1_and_bytes() {
        let good = "a9993e364706816aba3e25717850c26c9cd0d89d";
        assert!(check_file(&file(good, b"abc")).is_ok());
        assert!(check_file(&file(&good.to_uppercase(), b"abc")).is_err());
        assert!(check_file(&file(&good[1..], b"abc")).is_err());
        assert!(check_file(&file(good, b"")).is_err());
        let debug = format!("{:?}", file(good, &[7u8; 4096]));
        assert!(debug.contains("bytes_len: 4096") && !debug.contains("7, 7"));
    }
}
