//! Reconciliation's records (issue 9): runs, discrepancies with the evidence of both sides
//! and their resolution, the cross-day pool, the end-of-day balances, and the paged read of
//! one business day's payments and refunds per channel. Reached through
//! [`crate::Store::recon`] so the main trait stays small; both backends implement
//! [`ReconStore`] (`sqlite/recon.rs`, `postgres/recon.rs`), tables in migration 0009.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// Discrepancy states: found, repaired by the gateway, or closed by an operator.
pub const DISCREPANCY_OPEN: &str = "OPEN";
pub const DISCREPANCY_AUTO_RESOLVED: &str = "AUTO_RESOLVED";
pub const DISCREPANCY_RESOLVED: &str = "RESOLVED";

/// Pool item states.
pub const POOL_HELD: &str = "HELD";

/// Longest page of [`ReconStore::recon_platform_page`].
pub const RECON_PAGE_MAX: u32 = 10_000;

/// Payments (`"P"`: the paid attempt's id, its order's amount and state, dated by the
/// order's success time) or refunds (`"R"`: the gateway refund id, dated by creation, i.e.
/// when the channel was asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconPlatformRow {
    pub kind: String,
    /// The id at the channel: attempt id (payments) or gateway refund id (refunds).
    pub out_no: String,
    pub transaction_id: String,
    pub mchid: String,
    pub amount_fen: i64,
    /// The order's or the refund's state, as stored.
    pub state: String,
    pub at: OffsetDateTime,
}

/// Where the next page starts: after this (time, id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconCursor {
    pub at_ms: i64,
    pub out_no: String,
}

impl ReconPlatformRow {
    pub fn cursor(&self) -> ReconCursor {
        ReconCursor {
            at_ms: crate::unix_ms(self.at),
            out_no: self.out_no.clone(),
        }
    }
}

/// One run of one business day on one channel; a re-run replaces it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconRunRecord {
    pub run_id: String,
    /// `YYYY-MM-DD`, Beijing business day.
    pub bill_date: String,
    pub channel_id: String,
    /// `DONE` or `FAILED`.
    pub status: String,
    pub started_at: OffsetDateTime,
    pub finished_at: OffsetDateTime,
    pub bill_rows: i64,
    pub platform_rows: i64,
    pub matched: i64,
    pub discrepancies: i64,
    pub trade_bill_sha1: Option<String>,
    pub fundflow_bill_sha1: Option<String>,
    /// Counts per class, totals of both sides, pool movements: JSON.
    pub summary_json: String,
    pub error: Option<String>,
}

/// One discrepancy with both sides' evidence (JSON; `None` where a side has nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct DiscrepancyRecord {
    pub id: String,
    pub run_id: String,
    pub bill_date: String,
    pub channel_id: String,
    /// `CHANNEL_ONLY`, `PLATFORM_ONLY`, `AMOUNT_MISMATCH`, `STATUS_MISMATCH`, `FEE_MISMATCH`, `DUPLICATE`.
    pub class: String,
    /// `P` or `R`.
    pub kind: String,
    pub out_no: String,
    /// 0 for the first finding of (day, channel, class, key); duplicates count up.
    pub seq: i64,
    pub mchid: Option<String>,
    pub transaction_id: Option<String>,
    pub channel_json: Option<String>,
    pub platform_json: Option<String>,
    pub state: String,
    /// How it was resolved (e.g. `QUERY_AND_APPLY`, `OPERATOR`), and the detail.
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub resolved_at: Option<OffsetDateTime>,
}

/// One item of the cross-day pool.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconPoolRecord {
    pub id: String,
    pub channel_id: String,
    /// The day it was found on.
    pub bill_date: String,
    /// `CHANNEL_ONLY` or `PLATFORM_ONLY`.
    pub class: String,
    pub kind: String,
    pub out_no: String,
    /// The side's record (JSON) to pair with later.
    pub record_json: String,
    /// `HELD`, then `MATCHED`, `MISMATCHED` or `EXPIRED`.
    pub state: String,
    pub settled_date: Option<String>,
    pub created_at: OffsetDateTime,
}

/// The end-of-day balance of one scope: `CHANNEL` (the channel clearing totals) or
/// `MERCHANT:<mchid>`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconBalanceRecord {
    pub bill_date: String,
    pub channel_id: String,
    pub scope: String,
    pub platform_json: String,
    pub channel_json: String,
    pub balanced: bool,
    pub detail: String,
    pub at: OffsetDateTime,
}

/// Everything one run writes, in ONE transaction: the run (replacing an earlier run of the
/// same day and channel), its findings (an OPEN finding of an earlier run of the day is
/// replaced; a resolved one is kept and not found again), the pool's new and settled
/// items, and the balances.
#[derive(Clone, Debug)]
pub struct ReconSave {
    pub run: ReconRunRecord,
    pub discrepancies: Vec<DiscrepancyRecord>,
    pub hold: Vec<ReconPoolRecord>,
    /// (pool id, new state) for items settled by this run.
    pub settled: Vec<(String, String)>,
    pub balances: Vec<ReconBalanceRecord>,
}

/// An operator's or the gateway's resolution: compare-and-set from `expected_state`, with
/// an audit row in the same transaction.
#[derive(Clone, Debug)]
pub struct ResolveDiscrepancy {
    pub id: String,
    pub expected_state: String,
    pub new_state: String,
    pub resolution: String,
    pub actor: String,
    pub reason: String,
    pub at: OffsetDateTime,
}

/// One audit row of a discrepancy's resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconAuditRecord {
    pub discrepancy_id: String,
    pub actor: String,
    pub action: String,
    pub before_state: String,
    pub after_state: String,
    pub reason: String,
    pub at: OffsetDateTime,
}

#[async_trait]
pub trait ReconStore: Send + Sync {
    /// One page (at most `limit`, capped at [`RECON_PAGE_MAX`]) of the day's payments
    /// (`kind` `"P"`) or refunds (`"R"`) on `channel_id` with time in `[from, to)`, by
    /// (time, id), after `after`.
    async fn recon_platform_page(
        &self,
        kind: &str,
        channel_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&ReconCursor>,
        limit: u32,
    ) -> Result<Vec<ReconPlatformRow>, StoreError>;
    async fn save_recon_run(&self, save: &ReconSave) -> Result<(), StoreError>;
    /// The runs of a business day, by channel.
    async fn recon_runs(&self, bill_date: &str) -> Result<Vec<ReconRunRecord>, StoreError>;
    /// Discrepancies, newest day first, optionally of one day and/or in one state.
    async fn recon_discrepancies(
        &self,
        bill_date: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DiscrepancyRecord>, StoreError>;
    async fn get_recon_discrepancy(
        &self,
        id: &str,
    ) -> Result<Option<DiscrepancyRecord>, StoreError>;
    /// False (nothing written) if the discrepancy is not in `expected_state`.
    async fn resolve_recon_discrepancy(&self, r: &ResolveDiscrepancy) -> Result<bool, StoreError>;
    async fn recon_audit(&self, discrepancy_id: &str) -> Result<Vec<ReconAuditRecord>, StoreError>;
    /// HELD pool items of a channel, oldest first.
    async fn recon_pool_held(&self, channel_id: &str) -> Result<Vec<ReconPoolRecord>, StoreError>;
    /// Pool items of a channel the run of `bill_date` settled (MATCHED or MISMATCHED): a
    /// re-run of that day pairs its one-sided findings with them again instead of holding
    /// the other halves anew.
    async fn recon_pool_settled_on(
        &self,
        channel_id: &str,
        bill_date: &str,
    ) -> Result<Vec<ReconPoolRecord>, StoreError>;
    async fn recon_balances(&self, bill_date: &str) -> Result<Vec<ReconBalanceRecord>, StoreError>;
}

pub(crate) const RUN_COLS: &str = "run_id, bill_date, channel_id, status, started_at, finished_at, bill_rows, platform_rows, matched, discrepancies, trade_bill_sha1, fundflow_bill_sha1, summary_json, error";
pub(crate) const DISCREPANCY_COLS: &str = "id, run_id, bill_date, channel_id, class, kind, out_no, seq, mchid, transaction_id, channel_json, platform_json, state, resolution, resolved_by, reason, created_at, resolved_at";
pub(crate) const POOL_COLS: &str =
    "id, channel_id, bill_date, class, kind, out_no, record_json, state, settled_date, created_at";
pub(crate) const BALANCE_COLS: &str =
    "bill_date, channel_id, scope, platform_json, channel_json, balanced, detail, at";
pub(crate) const AUDIT_COLS: &str =
    "discrepancy_id, actor, action, before_state, after_state, reason, at";

/// Payments of the day on a channel: paid attempts by their order's success time.
/// `?`-style placeholders are numbered for SQLite; PostgreSQL rewrites `?N` to `$N`.
pub(crate) const PAYMENTS_PAGE: &str =
    "SELECT a.attempt_id, o.transaction_id, o.mchid, o.total_fen, o.state, o.success_time
     FROM attempts a JOIN orders o ON o.transaction_id = a.transaction_id
     WHERE a.channel_id = ?1 AND a.state = 'PAID' AND o.success_time >= ?2 AND o.success_time < ?3
       AND (o.success_time > ?4 OR (o.success_time = ?4 AND a.attempt_id > ?5))
     ORDER BY o.success_time, a.attempt_id LIMIT ?6";
pub(crate) const REFUNDS_PAGE: &str =
    "SELECT refund_id, transaction_id, mchid, amount_fen, state, created_at
     FROM refunds
     WHERE channel_id = ?1 AND created_at >= ?2 AND created_at < ?3
       AND (created_at > ?4 OR (created_at = ?4 AND refund_id > ?5))
     ORDER BY created_at, refund_id LIMIT ?6";
