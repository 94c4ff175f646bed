//! A business day's ledger movements through one channel clearing account, per transfer code
//! and merchant (the end-of-day balance of reconciliation, issue 9 §4). Money enters clearing
//! with a payment's legs (101 net, 103 net frozen, 102 fee: debit clearing) and leaves it with
//! a refund's `RefundPaid` (207: credit clearing). The merchant of a leg is the owner of the
//! merchant account it touches; a fee leg and a refund-paid leg touch platform accounts, so
//! their merchant comes from the sibling leg sharing the business reference (`user_data`):
//! the payment's net leg, the refund's merchant reservation (201). A duplicate payment (104 in,
//! 208 out with its refund) touches no merchant account: its merchant is its refund's.

use async_trait::async_trait;
use paygate_core::money::Currency;
use paygate_ledger::chart::{self, AccountKind, TransferCode};
use serde::Serialize;
use time::OffsetDateTime;

use crate::StoreError;

/// The sum of one transfer code's legs of the day for one merchant (`mchid` is empty when no
/// sibling leg names one, e.g. a refund wholly borne by the fee).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerDayRow {
    pub code: u16,
    pub mchid: String,
    pub count: i64,
    pub amount_fen: i64,
}

/// The codes read: what moves a channel clearing account.
pub const CLEARING_CODES: [TransferCode; 6] = [
    TransferCode::PaymentNet,
    TransferCode::PaymentFee,
    TransferCode::PaymentNetFrozen,
    TransferCode::DuplicatePayment,
    TransferCode::RefundPaid,
    TransferCode::DuplicateRefunded,
];

/// Shared SQL (`?N`; PostgreSQL swaps in `$N`): ?1 clearing account id, ?2 from ms (incl.),
/// ?3 to ms (excl.). The two halves use the (account, timestamp) indexes of migration 0011.
pub(crate) const DAY_SQL: &str = "SELECT code, mchid, COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT)
     FROM (
       SELECT t.code, t.amount, COALESCE(CASE
           WHEN t.code IN (101, 103) THEN
             (SELECT a.owner FROM ledger_accounts a WHERE a.id = t.credit_account_id)
           WHEN t.code = 104 THEN
             (SELECT r.mchid FROM refunds r WHERE r.refund_id = t.user_data)
           ELSE
             (SELECT a.owner FROM ledger_transfers n JOIN ledger_accounts a ON a.id = n.credit_account_id
              WHERE n.user_data = t.user_data AND n.code IN (101, 103) LIMIT 1)
         END, '') AS mchid
       FROM ledger_transfers t
       WHERE t.debit_account_id = ?1 AND t.code IN (101, 102, 103, 104)
         AND t.timestamp_ms >= ?2 AND t.timestamp_ms < ?3
       UNION ALL
       SELECT t.code, t.amount, COALESCE(CASE
           WHEN t.code = 208 THEN
             (SELECT r.mchid FROM refunds r WHERE r.refund_id = t.user_data)
           ELSE
             (SELECT a.owner FROM ledger_transfers r JOIN ledger_accounts a ON a.id = r.debit_account_id
              WHERE r.user_data = t.user_data AND r.code = 201 LIMIT 1)
         END, '') AS mchid
       FROM ledger_transfers t
       WHERE t.credit_account_id = ?1 AND t.code IN (207, 208)
         AND t.timestamp_ms >= ?2 AND t.timestamp_ms < ?3
     ) d
     GROUP BY code, mchid ORDER BY code, mchid";

/// The (hex) id of `channel_id`'s CNY clearing account.
pub(crate) fn clearing_id(channel_id: &str) -> String {
    chart::account_id(AccountKind::ChannelClearing, channel_id, Currency::CNY).to_hex()
}

#[async_trait]
pub trait LedgerDayStore: Send + Sync {
    /// The clearing movements of `channel_id` (CNY) with a timestamp in `[from, to)`, summed
    /// per code and merchant ([`CLEARING_CODES`]).
    async fn ledger_clearing_day(
        &self,
        channel_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<LedgerDayRow>, StoreError>;
}
