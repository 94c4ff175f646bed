//! Daily settlement (issue 4 §5): a merchant's pending balance moves to available, one row per
//! `(mchid, business_date)`, T+N, with a per-merchant risk hold.
//!
//! [`SettlementStore::settle_day`] is one transaction: it takes the merchant's lock (PostgreSQL:
//! an advisory transaction lock and the pending account row; SQLite: the single writer), reads
//! the hold and the ledger, and writes the settlement row together with the `settle` posting.
//! The settlement id is derived from mchid and date, so running a day twice settles it once.
//!
//! The amount for day D (cut `to` = D's end): what pending holds free now, minus what was
//! credited to pending since the cut (later days' takings), plus what refunds reserved from
//! pending since the cut and have not voided (they spent money earned up to D), capped at the
//! free balance and clamped at 0.

use async_trait::async_trait;
use paygate_core::money::{Currency, Money};
use paygate_ledger::chart::{self, AccountKind};
use paygate_ledger::{Posting, RecipeError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::StoreError;

/// Settlement row states. SETTLED and NOTHING are final; HELD may become either.
pub const SETTLED: &str = "SETTLED";
pub const HELD: &str = "HELD";
pub const NOTHING: &str = "NOTHING";

/// Most rows one settlements listing returns.
pub const SETTLEMENTS_PAGE_MAX: u32 = 1000;

pub(crate) const SETTLEMENT_COLS: &str = "mchid, business_date, settlement_id, status, amount_fen, \
     payments, refunds, fee_fen, transfer_id, created_at, updated_at";

/// One merchant's settlement of one Beijing business day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementRecord {
    pub mchid: String,
    /// `YYYY-MM-DD` (Beijing).
    pub business_date: String,
    pub settlement_id: String,
    /// `SETTLED`, `HELD` or `NOTHING`.
    pub status: String,
    /// What moved from pending to available (0 unless SETTLED).
    pub amount_fen: i64,
    /// Payments credited in the day (count).
    pub payments: i64,
    /// Refunds reserved in the day (count).
    pub refunds: i64,
    /// paygate's fee on the day's payments.
    pub fee_fen: i64,
    /// Hex id of the `settle` ledger transfer (SETTLED only).
    pub transfer_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What to settle: merchant `mchid`'s business day `business_date`, spanning `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleDay {
    pub mchid: String,
    pub business_date: String,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// When the run happens (row times and the transfer's timestamp).
    pub at: OffsetDateTime,
}

/// A merchant under a risk hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementHold {
    pub mchid: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub held_at: OffsetDateTime,
}

/// The settlement id of `mchid`'s day `business_date` (`YYYY-MM-DD`): stable, so the
/// transfer id derived from it is too.
pub fn settlement_id(mchid: &str, business_date: &str) -> String {
    format!("stl-{}-{mchid}", business_date.replace('-', ""))
}

/// The day's figures read from the ledger inside the settling transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DayFigures {
    /// credits_posted - debits_posted - debits_pending of the pending account now.
    pub free: i64,
    /// Single credits to pending at or after the cut.
    pub credited_after: i64,
    /// Pending debits (refund reservations) from pending at or after the cut, not voided/expired.
    pub reserved_after: i64,
    pub payments: i64,
    pub refunds: i64,
    pub fee: i64,
}

impl DayFigures {
    /// The amount rule (module doc).
    pub fn amount(&self) -> i64 {
        let uncapped = self
            .free
            .saturating_sub(self.credited_after)
            .saturating_add(self.reserved_after);
        uncapped.min(self.free).max(0)
    }
}

/// The ledger account ids (hex) the queries need: pending, available, share frozen.
pub(crate) struct MerchantIds {
    pub pending: String,
    pub available: String,
    pub frozen: String,
}

pub(crate) fn merchant_ids(mchid: &str) -> MerchantIds {
    let id = |k| chart::account_id(k, mchid, Currency::CNY).to_hex();
    MerchantIds {
        pending: id(AccountKind::MerchantPending),
        available: id(AccountKind::MerchantAvailable),
        frozen: id(AccountKind::MerchantShareFrozen),
    }
}

/// Shared SQL (`?N` placeholders; PostgreSQL swaps them for `$N`). Parameters: ?1 pending id,
/// ?2 cut (ms); for the day counts ?1 pending, ?2 frozen, ?3 available, ?4 from, ?5 to.
pub(crate) const FREE_SQL: &str =
    "SELECT credits_posted - debits_posted - debits_pending FROM ledger_accounts WHERE id = ?1";
pub(crate) const CREDITED_AFTER_SQL: &str =
    "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_transfers
     WHERE credit_account_id = ?1 AND timestamp_ms >= ?2 AND kind = 'single'";
pub(crate) const RESERVED_AFTER_SQL: &str =
    "SELECT CAST(COALESCE(SUM(t.amount), 0) AS BIGINT) FROM ledger_transfers t
     LEFT JOIN ledger_pending p ON p.transfer_id = t.id
     WHERE t.debit_account_id = ?1 AND t.timestamp_ms >= ?2 AND t.kind = 'pending'
       AND COALESCE(p.status, 'pending') IN ('pending', 'posted')";
pub(crate) const DAY_COUNTS_SQL: &str = "SELECT
     (SELECT COUNT(*) FROM ledger_transfers WHERE code IN (101, 103)
         AND credit_account_id IN (?1, ?2) AND timestamp_ms >= ?4 AND timestamp_ms < ?5),
     (SELECT COUNT(*) FROM ledger_transfers WHERE code = 201
         AND debit_account_id IN (?1, ?3) AND timestamp_ms >= ?4 AND timestamp_ms < ?5),
     (SELECT CAST(COALESCE(SUM(f.amount), 0) AS BIGINT) FROM ledger_transfers f WHERE f.code = 102
         AND f.user_data IN (SELECT n.user_data FROM ledger_transfers n WHERE n.code IN (101, 103)
             AND n.credit_account_id IN (?1, ?2) AND n.timestamp_ms >= ?4 AND n.timestamp_ms < ?5))";

/// The `settle` posting of `amount_fen` (> 0).
pub(crate) fn settle_posting(
    mchid: &str,
    settlement_id: &str,
    amount_fen: i64,
) -> Result<Posting, StoreError> {
    paygate_ledger::recipes::settle(mchid, settlement_id, Money::new(amount_fen, Currency::CNY))
        .map_err(|e: RecipeError| StoreError::Database(format!("settlement posting: {e}")))
}

/// Validates a `SettleDay` before any SQL runs.
pub(crate) fn check_day(d: &SettleDay) -> Result<(), StoreError> {
    let ok_date = d.business_date.len() == 10
        && d.business_date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !ok_date || d.mchid.is_empty() || d.from >= d.to {
        return Err(StoreError::Database(format!(
            "bad settlement day: mchid {:?}, date {:?}",
            d.mchid, d.business_date
        )));
    }
    Ok(())
}

#[async_trait]
pub trait SettlementStore: Send + Sync {
    /// Settles (or records as HELD / NOTHING) merchant `d.mchid`'s day, in one transaction.
    /// A SETTLED or NOTHING row is returned as it is (idempotent); a HELD row is re-run.
    async fn settle_day(&self, d: &SettleDay) -> Result<SettlementRecord, StoreError>;
    /// Settlement rows, optionally of one merchant and/or one date, by date then mchid.
    async fn settlements(
        &self,
        mchid: Option<&str>,
        business_date: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SettlementRecord>, StoreError>;
    /// Merchants that have a pending ledger account (the ones a run looks at).
    async fn settlement_merchants(&self) -> Result<Vec<String>, StoreError>;
    /// HELD rows of merchants no longer held, oldest day first: the next run settles them.
    async fn released_held_settlements(
        &self,
        limit: u32,
    ) -> Result<Vec<SettlementRecord>, StoreError>;
    /// Puts `mchid` under a hold; false if it was held already (the first reason stays).
    async fn hold_settlement(
        &self,
        mchid: &str,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Lifts the hold; false if there was none.
    async fn release_settlement(&self, mchid: &str) -> Result<bool, StoreError>;
    async fn settlement_holds(&self) -> Result<Vec<SettlementHold>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(free: i64, credited_after: i64, reserved_after: i64) -> DayFigures {
        DayFigures {
            free,
            credited_after,
            reserved_after,
            ..DayFigures::default()
        }
    }

    #[test]
    fn amount_rule() {
        // Nothing after the cut: all that is free.
        assert_eq!(f(1000, 0, 0).amount(), 1000);
        // Later takings stay for their own day.
        assert_eq!(f(1500, 500, 0).amount(), 1000);
        // A later refund spent D's money: D still settles what it earned, capped by what is free.
        assert_eq!(f(700, 0, 300).amount(), 700);
        assert_eq!(f(700, 500, 300).amount(), 500);
        // Later takings exceed what is free: nothing.
        assert_eq!(f(100, 500, 0).amount(), 0);
        assert_eq!(f(0, 0, 0).amount(), 0);
    }

    #[test]
    fn ids_and_day_check() {
        assert_eq!(
            settlement_id("1900000109", "2026-11-29"),
            "stl-20261129-1900000109"
        );
        let at = OffsetDateTime::UNIX_EPOCH;
        let mut d = SettleDay {
            mchid: "m".into(),
            business_date: "2026-11-29".into(),
            from: at,
            to: at + time::Duration::days(1),
            at,
        };
        assert!(check_day(&d).is_ok());
        d.business_date = "2026/11/29".into();
        assert!(check_day(&d).is_err());
    }
}
