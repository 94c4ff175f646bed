//! paygate's persistence: the records the gateway keeps and the [`Store`] trait over them,
//! with two implementations: SQLite (embedded default, one file under the data directory)
//! and PostgreSQL (scale-out, several nodes sharing one database).
//!
//! Every change of an order is one [`OrderChange`]: the compare-and-set of the order's state,
//! the attempt's update, the merchant notification (transactional outbox) and the repair
//! record are written in ONE database transaction, or not at all (DESIGN.md rule 1).
//!
//! - [`sqlite`]: one writer thread group-commits every queued write in one transaction, each
//!   command in its own savepoint; reads run on read-only connections (WAL). `synchronous=FULL`.
//! - [`postgres`]: an sqlx pool; compare-and-set under row locks, `ON CONFLICT DO NOTHING` for
//!   the idempotency key, `FOR UPDATE SKIP LOCKED` plus a lease for the outbox.
//! - Migrations (`migrations/{sqlite,postgres}/`) are applied by [`open`], recorded in
//!   `schema_version`. Times are stored as Unix milliseconds: read back, they are cut to the
//!   millisecond ([`truncate_to_ms`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), paygate_store::StoreError> {
//! let store = paygate_store::open("sqlite://./paygate-data/paygate.db").await?;
//! let merchant = store.get_merchant("1900000109").await?;
//! # let _ = merchant; Ok(()) }
//! ```

pub mod bills;
mod codec;
pub mod ledger;
// A day's clearing movements for reconciliation (helper LEDGER-RECON).
pub mod ledger_day;
mod migrate;
pub mod postgres;
pub mod recon;
pub mod records;
mod refunds;
pub mod settlement;
pub mod sharing;
pub mod sqlite;
pub mod vault;
// Profit-sharing receivers' personal accounts (openids) as vault tokens at rest.
mod receiver_seal;

pub use codec::{from_unix_ms, truncate_to_ms, unix_ms};
pub use postgres::{PgOptions, PgStore};
pub use records::*;
pub use refunds::{
    CreateRefund, DuplicatePayment, RefundChange, RefundKind, RefundRecord, RefundState,
    duplicate_out_refund_no,
};
pub use sharing::{
    CreateShare, CreateShareReturn, ReturnState, ShareAmounts, ShareChange, ShareKind, ShareLimits,
    ShareLine, ShareOrderRecord, ShareReceiverRecord, ShareReturnChange, ShareReturnRecord,
    ShareState,
};
pub use sqlite::{SqliteOptions, SqliteStore, SqliteSync};

use async_trait::async_trait;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// A unique key already exists (merchant id, certificate serial, ...).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database holds something the code cannot read (a bad enum string, say).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("bad database URL: {0}")]
    BadUrl(String),
    /// The ledger refused a posting (`exceeds_credits`, a replay with other fields, ...):
    /// the business fact it belonged to was not written. See [`ledger`].
    #[error("ledger: {0}")]
    Ledger(paygate_ledger::LedgerError),
}

/// What [`Store::create_order`] found.
// Built once per create_order call; boxing `Exists` would change a type others code against.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum CreateOrder {
    Created,
    /// `(mchid, out_trade_no)` was taken: the existing order, for the idempotency decision.
    Exists(OrderRecord),
}

/// A snapshot of the store's connections and queues, for the `/metrics` gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (PostgreSQL pool size; SQLite: the writer plus the readers).
    pub connections: u32,
    /// Of those, idle (PostgreSQL only; SQLite threads wait on their queue).
    pub idle: u32,
    /// Writes waiting for the SQLite writer thread (0 on PostgreSQL).
    pub writes_queued: u32,
    /// Reads waiting for a SQLite reader thread (0 on PostgreSQL).
    pub reads_queued: u32,
}

/// How a delivery attempt of a notification ended.
#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryOutcome {
    Delivered,
    Retry {
        next_attempt_at: OffsetDateTime,
    },
    /// The schedule is exhausted: kept for an operator's re-send.
    GaveUp,
}

/// One delivery attempt as the outbox hands it to the store: the attempt, how it ended, and
/// the claim it answers.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedDelivery {
    pub delivery: DeliveryRecord,
    pub outcome: DeliveryOutcome,
    /// The notification's `next_attempt_at` when it was claimed. An operator's re-send moves
    /// it, so an outcome whose claim no longer matches is recorded as an attempt but leaves
    /// the re-send due (a delivery in flight must not overwrite it).
    pub claimed_due: OffsetDateTime,
}

#[async_trait]
/// Reconciliation's tables are reached through the supertrait [`recon::ReconStore`], daily
/// settlement's through [`settlement::SettlementStore`].
pub trait Store:
    recon::ReconStore + settlement::SettlementStore + ledger_day::LedgerDayStore + Send + Sync + 'static
{
    /// Which backend: `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    // ---- merchants ----
    /// Inserts the merchant with its first API certificate, in one transaction.
    async fn insert_merchant(
        &self,
        merchant: &MerchantRecord,
        cert: &MerchantCertRecord,
    ) -> Result<(), StoreError>;
    async fn get_merchant(&self, mchid: &str) -> Result<Option<MerchantRecord>, StoreError>;
    async fn list_merchants(&self) -> Result<Vec<MerchantRecord>, StoreError>;
    /// False if no such merchant.
    async fn set_merchant_status(
        &self,
        mchid: &str,
        status: MerchantStatus,
    ) -> Result<bool, StoreError>;
    /// Registers another certificate (a merchant's own, or a rotation). Conflict if the serial exists.
    async fn add_merchant_cert(&self, cert: &MerchantCertRecord) -> Result<(), StoreError>;
    async fn merchant_certs(&self, mchid: &str) -> Result<Vec<MerchantCertRecord>, StoreError>;

    // ---- the gateway's platform signing keys ----
    /// Conflict if `key_id` exists (two nodes racing to create the first key: the loser re-reads).
    async fn insert_platform_key(&self, key: &PlatformKeyRecord) -> Result<(), StoreError>;
    async fn platform_keys(&self) -> Result<Vec<PlatformKeyRecord>, StoreError>;
    /// A new generation of `key.kind` (platform key rotation). Conflict if another node's
    /// rotation took that generation at the same moment, or if `key_id` exists.
    async fn rotate_platform_key(&self, key: &PlatformKeyRecord) -> Result<(), StoreError>;

    // ---- orders and attempts ----
    /// Inserts the order and its first attempt in one transaction, unless
    /// `(mchid, out_trade_no)` exists, in which case nothing is written.
    async fn create_order(
        &self,
        order: &OrderRecord,
        first_attempt: &AttemptRecord,
    ) -> Result<CreateOrder, StoreError> {
        self.create_order_with_risk(order, first_attempt, None)
            .await
    }
    /// Creates the order with its first attempt and, in the same transaction, the risk
    /// decision that admitted it (one fact, one commit); nothing is written on `Exists`.
    async fn create_order_with_risk(
        &self,
        order: &OrderRecord,
        first_attempt: &AttemptRecord,
        risk: Option<&RiskDecisionRecord>,
    ) -> Result<CreateOrder, StoreError>;
    async fn get_order(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> Result<Option<OrderRecord>, StoreError>;
    async fn get_order_by_transaction_id(
        &self,
        transaction_id: &str,
    ) -> Result<Option<OrderRecord>, StoreError>;
    /// The order as the query API shows it: [`Store::get_order`] (or by transaction id) with
    /// the request snapshot and its fingerprint left empty (`""`). A merchant's query shows
    /// neither, and opening them is an SM4 decryption of the whole request on the read
    /// merchants make most. Never pass such a record to a flow that reads the request.
    async fn get_order_view(&self, key: OrderKey<'_>) -> Result<Option<OrderRecord>, StoreError>;
    /// Attempts of an order, by `seq`.
    async fn attempts(&self, transaction_id: &str) -> Result<Vec<AttemptRecord>, StoreError>;
    /// The attempt whose channel out_trade_no is `attempt_id`, with its order.
    async fn find_attempt(
        &self,
        attempt_id: &str,
    ) -> Result<Option<(OrderRecord, AttemptRecord)>, StoreError>;
    /// A further attempt (retry or failover) on an existing order.
    async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError>;
    /// Compare-and-set on the attempt's state; false (nothing written) if the attempt is not in
    /// one of `change.expected_states`.
    async fn update_attempt(&self, change: &AttemptChange) -> Result<bool, StoreError>;
    /// [`Self::update_attempt`], answered before the write is on disk: for a change whose loss
    /// to a power cut (or a PostgreSQL crash) the flow recovers from, i.e. an attempt's fresh
    /// credential. Lost, the attempt is back in its earlier open state, and the merchant's
    /// retry calls its channel again with the same parameters, which the channel answers with
    /// a credential for the same order (§4.6): the path an expired credential or a crash
    /// during the channel call already takes. A later synced write makes it durable with
    /// itself (both backends sync their log in order), so a power cut loses only a suffix of
    /// such changes, never one without the other. A killed gateway process loses nothing.
    async fn update_attempt_unsynced(&self, change: &AttemptChange) -> Result<bool, StoreError>;
    /// The one write path for an order's state: all or nothing, false if the order's state is
    /// no longer `change.expected_state` (someone else moved it first).
    async fn apply_order_change(&self, change: &OrderChange) -> Result<bool, StoreError>;
    /// Work for the poller: attempts in CREATED, PREPAID or UNKNOWN whose order is still open
    /// (NOTPAY/PAYERROR) and whose `next_poll_at` is at or before `due_by`, earliest due first.
    async fn attempts_to_poll(
        &self,
        due_by: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(OrderRecord, AttemptRecord)>, StoreError>;
    async fn repairs(&self, transaction_id: &str) -> Result<Vec<RepairRecord>, StoreError>;

    // ---- refunds (§4.7; see `refunds.rs` for the money rule) ----
    /// Creates `refund` and reserves its amount on its order in ONE transaction: the order's
    /// `refunded_fen` (the sum of its refunds that are not CLOSED) grows by `amount_fen` only
    /// if the order is SUCCESS or REFUND and the sum stays within `total_fen`, a
    /// compare-and-set under the order's row lock, so no two nodes can over-refund.
    /// `(mchid, out_refund_no)` is the idempotency key: when it is taken nothing is written
    /// and the existing refund comes back, whatever the order has left. Merchant refunds
    /// only: a duplicate payment's refund is made by `record_duplicate_payment`.
    async fn create_refund(&self, refund: &RefundRecord) -> Result<CreateRefund, StoreError>;
    async fn get_refund(
        &self,
        mchid: &str,
        out_refund_no: &str,
    ) -> Result<Option<RefundRecord>, StoreError>;
    async fn get_refund_by_id(&self, refund_id: &str) -> Result<Option<RefundRecord>, StoreError>;
    /// Refunds of an order, oldest first.
    async fn refunds_of(&self, transaction_id: &str) -> Result<Vec<RefundRecord>, StoreError>;
    /// Duplicate payments not given back yet (their DUPLICATE refund is not SUCCESS: in
    /// flight, or CLOSED with the money still owed to the payer), oldest first, at most `limit`.
    async fn duplicate_refunds_open(&self, limit: u32) -> Result<Vec<RefundRecord>, StoreError>;
    /// The order's `refunded_fen`; `None` if there is no such order.
    async fn refunded_fen(&self, transaction_id: &str) -> Result<Option<i64>, StoreError>;
    /// The one write path for a refund's state, all or nothing: the compare-and-set from
    /// `change.expected_state` (false, nothing written, if the refund is elsewhere), the
    /// amount given back to the order on CLOSED, a SUCCESS order moved to REFUND when the
    /// channel accepted the refund (PROCESSING, SUCCESS, ABNORMAL), and the notification.
    /// A move [`RefundState::may_become`] forbids is refused with an error. A
    /// [`RefundKind::Duplicate`] refund leaves its order alone; its SUCCESS pays the payer
    /// back out of the clearing account (`DuplicateRefunded`), and its CLOSED leaves the
    /// money owed (an operator's case).
    async fn apply_refund_change(&self, change: &RefundChange) -> Result<bool, StoreError>;
    /// Records a duplicate payment in ONE transaction ([`DuplicatePayment`]). False, nothing
    /// written, when the attempt's compare-and-set does not match (it moved: already PAID by
    /// an earlier call, say). The refund must be [`RefundKind::Duplicate`] and CREATED.
    async fn record_duplicate_payment(&self, d: &DuplicatePayment) -> Result<bool, StoreError>;
    /// Work for the poller: CREATED and PROCESSING refunds created before `polled_before`
    /// and not polled since (or never), never polled first, then oldest.
    async fn refunds_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<RefundRecord>, StoreError>;
    /// False if no such refund.
    async fn mark_refund_polled(
        &self,
        refund_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    // ---- profit sharing (§4.8; see `sharing.rs` for the money rule; helper SHARING) ----
    /// Adds a merchant's receiver, or updates it when `(mchid, type, account)` exists.
    async fn upsert_share_receiver(&self, receiver: &ShareReceiverRecord)
    -> Result<(), StoreError>;
    /// False if there was no such receiver.
    async fn delete_share_receiver(
        &self,
        mchid: &str,
        r#type: &str,
        account: &str,
    ) -> Result<bool, StoreError>;
    async fn share_receivers(&self, mchid: &str) -> Result<Vec<ShareReceiverRecord>, StoreError>;
    /// How many merchants have this receiver at `channel_id`.
    async fn share_receiver_users(
        &self,
        channel_id: &str,
        r#type: &str,
        account: &str,
    ) -> Result<i64, StoreError>;
    /// The merchant's configured maximum ratio (万分比), if any.
    async fn share_max_ratio(&self, mchid: &str) -> Result<Option<u32>, StoreError>;
    async fn set_share_max_ratio(
        &self,
        mchid: &str,
        max_ratio_bp: u32,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Creates a share order and, in ONE transaction, reserves a split's amount on its order
    /// (or unfreezes the order) by compare-and-set under the order's row lock (see
    /// `sharing.rs`). `(mchid, out_order_no)` is the idempotency key: when taken nothing is
    /// written and the existing order comes back.
    async fn create_share(
        &self,
        order: &ShareOrderRecord,
        limits: ShareLimits,
    ) -> Result<CreateShare, StoreError>;
    async fn get_share(
        &self,
        mchid: &str,
        out_order_no: &str,
    ) -> Result<Option<ShareOrderRecord>, StoreError>;
    async fn get_share_by_id(&self, order_id: &str)
    -> Result<Option<ShareOrderRecord>, StoreError>;
    /// Share orders of a payment, oldest first.
    async fn shares_of(&self, transaction_id: &str) -> Result<Vec<ShareOrderRecord>, StoreError>;
    /// The sharing side of an order; `None` if there is no such order.
    async fn share_amounts(&self, transaction_id: &str)
    -> Result<Option<ShareAmounts>, StoreError>;
    /// The one write path of a share order, all or nothing: compare-and-set on its version and
    /// state (false, nothing written, if it moved), amounts given back, notifications.
    async fn apply_share_change(&self, change: &ShareChange) -> Result<bool, StoreError>;
    /// CREATED and PROCESSING share orders created before `polled_before` and not polled since.
    async fn shares_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ShareOrderRecord>, StoreError>;
    async fn mark_share_polled(
        &self,
        order_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Creates a return if its receiver line (SUCCESS, MERCHANT_ID `return_mchid`) still has
    /// the amount after the line's other returns that are not FAILED; serialized per share
    /// order. `(mchid, out_return_no)` is the idempotency key.
    async fn create_share_return(
        &self,
        ret: &ShareReturnRecord,
    ) -> Result<CreateShareReturn, StoreError>;
    async fn get_share_return(
        &self,
        mchid: &str,
        out_return_no: &str,
    ) -> Result<Option<ShareReturnRecord>, StoreError>;
    async fn get_share_return_by_id(
        &self,
        return_id: &str,
    ) -> Result<Option<ShareReturnRecord>, StoreError>;
    /// Compare-and-set on the return's state; SUCCESS moves its amount on the order.
    async fn apply_share_return_change(
        &self,
        change: &ShareReturnChange,
    ) -> Result<bool, StoreError>;
    async fn share_returns_to_poll(
        &self,
        polled_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ShareReturnRecord>, StoreError>;
    async fn mark_share_return_polled(
        &self,
        return_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    // ---- risk decisions ----
    /// Keeps one decision (conflict if the id exists).
    async fn insert_risk_decision(&self, decision: &RiskDecisionRecord) -> Result<(), StoreError>;
    /// Decisions about one order or refund of a merchant, oldest first.
    async fn risk_decisions(
        &self,
        mchid: &str,
        reference: &str,
    ) -> Result<Vec<RiskDecisionRecord>, StoreError>;
    /// The newest decisions with `action` (the review queue), newest first, at most `limit`.
    async fn risk_decisions_by_action(
        &self,
        action: &str,
        limit: u32,
    ) -> Result<Vec<RiskDecisionRecord>, StoreError>;

    /// Per channel, the total of the orders whose attempt on that channel was created at or
    /// after `since` and is PREPAID or PAID, by channel id: the channel's volume for a daily
    /// cap, counted across every node. (Added for routing.)
    async fn channel_volumes(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<ChannelVolume>, StoreError>;

    // ---- risk rule sets (hot reload; added for the risk engine) ----
    /// Saves `set` as a new version and its audit row (`changes_json`; author, time and
    /// comment taken from `set`) in ONE transaction. Conflict, with nothing written, unless
    /// `set.version` is exactly the newest stored version + 1 (1 on an empty store): of two
    /// operators saving on the same version at once, one wins and the other must reload.
    async fn insert_risk_rule_set(
        &self,
        set: &RiskRuleSetRecord,
        changes_json: &str,
    ) -> Result<(), StoreError>;
    /// The newest version; 0 when none was ever saved.
    async fn risk_rule_set_version(&self) -> Result<i64, StoreError>;
    async fn risk_rule_set(&self, version: i64) -> Result<Option<RiskRuleSetRecord>, StoreError>;
    /// The newest audit rows, newest first, at most `limit`.
    async fn risk_rule_audit(&self, limit: u32) -> Result<Vec<RiskRuleAuditRecord>, StoreError>;

    // ---- merchant notifications (the outbox) ----
    /// Claims up to `limit` PENDING notifications due at `now` whose lease is free, leasing them
    /// until `lease_until` (so a second node, or a restarted one, does not send them twice at once).
    async fn claim_notifications(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>, StoreError>;
    /// Records one attempt and its outcome, releasing the lease; attempts += 1. A conflict if
    /// the attempt number is already recorded or there is no such notification. The outcome
    /// moves the notification only if it is still due when it was claimed (no re-send since).
    async fn finish_delivery(&self, done: &FinishedDelivery) -> Result<(), StoreError> {
        match self.finish_deliveries(std::slice::from_ref(done)).await? {
            0 => Err(StoreError::Conflict(format!(
                "attempt {} of notification {:?} is already recorded, or there is no such notification",
                done.delivery.attempt, done.delivery.notification_id
            ))),
            _ => Ok(()),
        }
    }
    /// `finish_delivery` for many attempts in one transaction (the outbox records outcomes in
    /// batches). An attempt whose notification is gone, or whose number is already recorded
    /// (another node delivered it too), is skipped without failing the others. Returns how
    /// many were recorded.
    async fn finish_deliveries(&self, done: &[FinishedDelivery]) -> Result<usize, StoreError>;
    /// Operator re-send: back to PENDING, due at `now` (1 ms later if it was due at exactly
    /// `now`, so a delivery in flight always sees that its claim is stale). False if no such
    /// notification.
    async fn resend_notification(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        Ok(self.resend_notifications(&[id.to_string()], now).await? > 0)
    }
    /// Operator re-send of many (e.g. after a merchant's outage), in one transaction; how
    /// many of `ids` exist.
    async fn resend_notifications(
        &self,
        ids: &[String],
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;
    async fn get_notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError>;
    async fn notifications_of(
        &self,
        transaction_id: &str,
    ) -> Result<Vec<NotificationRecord>, StoreError>;
    async fn deliveries(&self, notification_id: &str) -> Result<Vec<DeliveryRecord>, StoreError>;

    // ---- merchant bills (§4.10, §7; see `bills.rs`; added by BILLS) ----
    /// Closes a business day for bills; false, nothing written, if it was closed already.
    async fn close_bill_day(&self, day: &bills::BillDayRecord) -> Result<bool, StoreError>;
    async fn bill_day(&self, bill_date: &str) -> Result<Option<bills::BillDayRecord>, StoreError>;
    /// A merchant's paid orders (SUCCESS or REFUND) with `success_time` in `[from, to)`, after
    /// `after`, by `(success_time, transaction_id)`, at most `limit`: a page of bill rows.
    async fn paid_orders_between(
        &self,
        mchid: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&bills::BillCursor>,
        limit: u32,
    ) -> Result<Vec<OrderRecord>, StoreError>;
    /// A merchant's refunds created in `[from, to)` that bills list (all but those the channel
    /// refused outright), after `after`, by `(created_at, refund_id)`, at most `limit`.
    async fn billed_refunds_between(
        &self,
        mchid: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after: Option<&bills::BillCursor>,
        limit: u32,
    ) -> Result<Vec<RefundRecord>, StoreError>;
    /// Counts and sums of the payments and billed refunds before `before`.
    async fn merchant_flow_before(
        &self,
        mchid: &str,
        before: OffsetDateTime,
    ) -> Result<bills::MerchantFlowTotals, StoreError>;
    /// Keeps `file` unless a bill with its `(mchid, bill_date, kind)` exists (the day must be
    /// closed); returns the stored bill, so racing generators all serve the first one's bytes.
    async fn keep_bill_file(
        &self,
        file: &bills::BillFileRecord,
    ) -> Result<bills::BillFileRecord, StoreError>;
    async fn bill_file(
        &self,
        mchid: &str,
        bill_date: &str,
        kind: &str,
    ) -> Result<Option<bills::BillFileRecord>, StoreError>;
    /// Registers a download token (its bill must be kept) and prunes a bounded number of
    /// expired ones.
    async fn insert_bill_download(
        &self,
        download: &bills::BillDownloadRecord,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    async fn bill_download(
        &self,
        token: &str,
    ) -> Result<Option<bills::BillDownloadRecord>, StoreError>;

    // ---- the ledger and its journal (see `ledger.rs`; helper LEDGER) ----
    /// Applies one posting in a transaction of its own (a fact with no other row: tests, an
    /// operator's adjustment). Business facts put theirs in their own change instead
    /// (`OrderChange::ledger`; refunds reserve, post and void inside the store).
    async fn post_ledger(
        &self,
        posting: &paygate_ledger::Posting,
        at: OffsetDateTime,
    ) -> Result<paygate_ledger::Applied, StoreError>;
    /// Accounts of one owner (an mchid, a channel id, `platform`, a receiver key), or all.
    async fn ledger_accounts(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<paygate_ledger::Account>, StoreError>;
    async fn ledger_account(
        &self,
        id: paygate_ledger::AccountId,
    ) -> Result<Option<paygate_ledger::Account>, StoreError>;
    async fn ledger_transfer(
        &self,
        id: paygate_ledger::TransferId,
    ) -> Result<Option<ledger::LedgerTransferRow>, StoreError>;
    /// Transfers whose business reference (`user_data`) is `reference`, in insert order.
    async fn ledger_transfers_by_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<ledger::LedgerTransferRow>, StoreError>;
    /// Sequenced transfers from leaf `from_index` on, in leaf order, at most `limit`
    /// (capped at [`ledger::JOURNAL_PAGE_MAX`]).
    async fn journal_entries(
        &self,
        from_index: u64,
        limit: u32,
    ) -> Result<Vec<ledger::LedgerTransferRow>, StoreError>;
    /// Transfers not sequenced yet with `seq > after_seq`, in seq order, at most `limit`.
    async fn unsequenced_transfers(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ledger::LedgerTransferRow>, StoreError>;
    /// The newest signed checkpoints, newest first.
    async fn ledger_checkpoints(
        &self,
        limit: u32,
    ) -> Result<Vec<ledger::CheckpointRecord>, StoreError>;
    /// The journal integrator: gives up to `batch_max` unsequenced transfers their leaves in
    /// `seq` order and stores a checkpoint of the new size signed by `signer` (whose key the
    /// database never holds). One integrator at a time, across nodes.
    async fn integrate_journal(
        &self,
        signer: std::sync::Arc<paygate_ledger::NoteSigner>,
        origin: &str,
        batch_max: u32,
        now: OffsetDateTime,
    ) -> Result<ledger::Integrated, StoreError>;

    // ---- data protection (issue 7; see `vault`) ----
    /// Attaches the vault of `master` (once, right after open): loads the stored keys,
    /// creating the index key and the first data key on a fresh database. From then on the
    /// store seals sensitive fields on write and opens them on read. Fails on a wrong
    /// master key. Without it the store reads and writes plaintext.
    async fn attach_vault(
        &self,
        master: std::sync::Arc<dyn vault::MasterKey>,
    ) -> Result<(), StoreError>;
    /// Reloads the stored keys (another node rotated or retired one).
    async fn refresh_vault_keys(&self) -> Result<(), StoreError>;
    /// Stores a new data key, sealing after [`vault::KEY_ACTIVATION_DELAY_S`].
    async fn rotate_data_key(&self) -> Result<vault::WrappedKey, StoreError>;
    /// Destroys a data key that seals nothing any more (Conflict otherwise, or if active).
    async fn retire_data_key(&self, key_id: &str) -> Result<(), StoreError>;
    /// One batch of the background re-seal (plaintext rows and older keys → the active key).
    async fn reseal_batch(&self) -> Result<vault::ResealReport, StoreError>;
    async fn vault_status(&self) -> Result<vault::VaultStatus, StoreError>;
    /// Records a request nonce until `expires_at`; false if `(mchid, nonce)` is already
    /// recorded and not expired at `now` (a replay), on any node.
    async fn remember_nonce(
        &self,
        mchid: &str,
        nonce: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Deletes nonces expired by `before`; how many.
    async fn purge_nonces(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
    /// Appends an operator action to the chained audit trail (needs the vault's key).
    async fn append_audit(
        &self,
        entry: &vault::NewAuditEntry,
    ) -> Result<vault::AuditRecord, StoreError>;
    /// Audit entries with `seq > after_seq`, oldest first, at most `limit`.
    async fn audit_entries(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<vault::AuditRecord>, StoreError>;
    /// Recomputes the audit chain and names the first entry that does not hold.
    async fn verify_audit(&self) -> Result<vault::AuditVerdict, StoreError>;

    /// The connection pool (PostgreSQL) or the worker queues (SQLite) right now, for
    /// `/metrics`. (Added for observability; the default knows nothing.)
    fn pool_stats(&self) -> PoolStats {
        PoolStats::default()
    }

    /// Closes the store's database connections and waits until they are closed: PostgreSQL
    /// closes its pool (calls made afterwards fail); SQLite has nothing to wait for (dropping
    /// the store closes the file). For an orderly shutdown, and for a test that drops its
    /// database (schema) afterwards. (Added by the store; the default does nothing.)
    async fn close(&self) {}
}

/// Opens a store by URL: `sqlite://PATH` (created with its directory if missing) or
/// `postgres://…` / `postgresql://…`. Migrations are applied before it returns.
///
/// Optional query parameters:
/// - SQLite: `synchronous=full|normal` (default full, see [`sqlite`]), `readers=N` (read
///   connections, default [`sqlite::READERS_DEFAULT`]).
/// - PostgreSQL: `max_connections=N` (pool size, default [`postgres::MAX_CONNECTIONS_DEFAULT`])
///   and `schema=NAME`: the store's tables live in that schema, created if missing (the
///   connections' `search_path` is set to it). Tests use it to get a database of their own
///   inside a shared server; see [`open_postgres_in_schema`]. Other parameters go to sqlx.
///
/// Times are kept as whole Unix milliseconds: a record read back carries its times cut to the
/// millisecond ([`truncate_to_ms`]), in UTC.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if let Some(tail) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let (path, options) = SqliteOptions::from_url_tail(tail)?;
        return Ok(std::sync::Arc::new(SqliteStore::open(path, options).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(PgStore::connect_url(url).await?));
    }
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    Err(StoreError::BadUrl(format!(
        "unknown store scheme {scheme:?}: want sqlite:// or postgres://"
    )))
}

/// Opens a PostgreSQL store whose tables live in `schema` (created if missing), for a test
/// that wants a fresh database inside the shared server. `url` is a plain `postgres://` URL.
/// Clean up with [`drop_postgres_schema`].
///
/// ```no_run
/// # async fn demo() -> Result<(), paygate_store::StoreError> {
/// let url = "postgres://postgres@127.0.0.1:5432/test";
/// let schema = "t_0f3a9c";
/// let store = paygate_store::open_postgres_in_schema(url, schema).await?;
/// // ... the test ...
/// store.close().await;
/// paygate_store::drop_postgres_schema(url, schema).await?;
/// # Ok(()) }
/// ```
pub async fn open_postgres_in_schema(
    url: &str,
    schema: &str,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let (url, mut options) = PgOptions::from_url(url)?;
    options.schema = Some(postgres::check_schema_name(schema)?.to_string());
    Ok(std::sync::Arc::new(PgStore::connect(&url, &options).await?))
}

/// Drops `schema` and all it holds (the clean-up of [`open_postgres_in_schema`]). Close the
/// stores using it first ([`Store::close`]): a connection still inside a transaction there
/// would block the drop, which gives up after [`postgres::DROP_LOCK_TIMEOUT_MS`].
pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    postgres::drop_schema(url, schema).await
}

/// `a=1&b=2` as key/value pairs (no percent-decoding: every value the store takes is plain).
pub(crate) fn url_params(query: &str) -> Result<Vec<(&str, &str)>, StoreError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .ok_or_else(|| StoreError::BadUrl(format!("URL parameter {p:?} has no value")))
        })
        .collect()
}

/// A count from a URL: 1..=max.
pub(crate) fn parse_count(name: &str, value: &str, max: usize) -> Result<usize, StoreError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(StoreError::BadUrl(format!(
            "{name}={value}: want a number from 1 to {max}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_rejects_unknown_schemes_and_bad_parameters() {
        for url in [
            "mysql://root@localhost/test",
            "nothing",
            "sqlite://",
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite:///tmp/x.db?synchronous=off",
            "sqlite:///tmp/x.db?readers=0",
            "sqlite:///tmp/x.db?journal=wal",
            "postgres://postgres@127.0.0.1/test?schema=Bad-Name",
            "postgres://postgres@127.0.0.1/test?max_connections=many",
        ] {
            assert!(
                matches!(open(url).await, Err(StoreError::BadUrl(_))),
                "{url}"
            );
        }
    }

    /// Compiles only if the futures are `Send` for every lifetime: a server spawns them.
    #[test]
    fn open_futures_are_send_so_they_can_be_spawned() {
        fn assert_send<T: Send>(_: T) {}
        let url = String::from("postgres://nowhere/db");
        assert_send(open(&url));
        assert_send(open_postgres_in_schema(&url, "t_x"));
        assert_send(drop_postgres_schema(&url, "t_x"));
        assert_send(SqliteStore::open("x.db", SqliteOptions::default()));
    }

    #[test]
    fn postgres_url_keeps_foreign_parameters_for_sqlx() {
        let (url, options) = PgOptions::from_url(
            "postgres://u@h/db?sslmode=disable&schema=t_1&max_connections=4&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=disable&application_name=x");
        assert_eq!(options.schema.as_deref(), Some("t_1"));
        assert_eq!(options.max_connections, 4);
        let (url, options) = PgOptions::from_url("postgresql://u@h/db").unwrap();
        assert_eq!(url, "postgresql://u@h/db");
        assert_eq!(options.max_connections, postgres::MAX_CONNECTIONS_DEFAULT);
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["t_abc", "_x", "a1"] {
            assert!(postgres::check_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "A", "a-b", "a\"b", "a;drop", &"a".repeat(64)] {
            assert!(postgres::check_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sqlite_url_tail_gives_path_and_options() {
        let (path, options) =
            SqliteOptions::from_url_tail("./data/p.db?synchronous=normal&readers=2").unwrap();
        assert_eq!(path, std::path::PathBuf::from("./data/p.db"));
        assert_eq!(options.synchronous, SqliteSync::Normal);
        assert_eq!(options.readers, 2);
        let (path, options) = SqliteOptions::from_url_tail("/abs/p.db").unwrap();
        assert_eq!(path, std::path::PathBuf::from("/abs/p.db"));
        assert_eq!(options.synchronous, SqliteSync::Full);
    }
}
