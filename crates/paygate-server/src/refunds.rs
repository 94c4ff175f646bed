//! Refunds (reference §4.7) for the gateway's direct merchants: create and query, made at the
//! channel on the attempt that was paid.
//!
//! How money stays safe:
//! - Refunds of one order serialize on the order's lock on this node, and across nodes on the
//!   store: a refund exists only if the compare-and-set `refunded_fen + amount <= total_fen`
//!   on its order succeeded in the transaction that inserted it ([`paygate_store::Store::create_refund`]).
//! - The gateway's refund id is the out_refund_no at the channel: re-sending a refund is the
//!   same refund there, so an unknown outcome (a timeout) is settled by asking the channel
//!   first and re-sending only what it never got.
//! - Every state change goes through [`step`] (pure) and the store's compare-and-set, with the
//!   merchant's REFUND.* notification in the same transaction; a final state never moves.
//!   A refund the channel refused ends CLOSED and gives its amount back.

use std::time::Duration;

use paygate_channel::{ChannelError, ChannelRefund, ErrorAction, SubMerchant, WxChannel};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::timefmt::{parse_rfc3339, rfc3339_beijing};
use paygate_risk::{Action, Decision, Layer, RiskEvent};
use paygate_store::{
    AttemptRecord, AttemptState, CreateRefund, DuplicatePayment, MerchantRecord,
    NotificationRecord, NotificationState, OrderRecord, OrderState, RefundChange, RefundKind,
    RefundRecord, RefundState, RepairRecord, RiskDecisionRecord,
};
use paygate_wxpay::models::refunds::{
    FundsAccount, Refund, RefundAmount, RefundChannel, RefundNotifyAmount, RefundNotifyPayload,
    RefundRequest, RefundStatus,
};
use time::OffsetDateTime;

use crate::flow::{channel_error_to_api, sub_at};
use crate::http::AppState;

/// A CAS that lost a race is re-read and re-decided this many times at most.
const CAS_RETRIES_MAX: u32 = 5;
/// §4.7: refunds are accepted within a year of the payment.
const REFUND_WINDOW: time::Duration = time::Duration::days(365);
/// Refunds the poller looks at per round.
pub const POLL_BATCH_MAX: u32 = 200;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn store_err(e: paygate_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store error");
    ApiError::new(ErrorCode::SystemError, "系统错误，请使用相同参数重试")
}

fn order_not_found() -> ApiError {
    ApiError::new(ErrorCode::ResourceNotExists, "订单号不存在")
}

fn refund_not_found() -> ApiError {
    ApiError::new(ErrorCode::ResourceNotExists, "退款单不存在")
}

fn not_enough(refundable_fen: i64) -> ApiError {
    ApiError::new(
        ErrorCode::NotEnough,
        format!("可退金额不足，当前可退 {refundable_fen} 分"),
    )
}

/// What a repeated request must match: the order and the amount (§4.7 "同一退款单号多次请求只退一笔").
fn fingerprint(order: &OrderRecord, request: &RefundRequest) -> String {
    format!("{}:{}", order.transaction_id, request.amount.refund)
}

// ---- the state machine ----

/// What a channel's word about a refund does to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing new (a duplicate, a reordered or a stale answer).
    Stay,
    Move(RefundState),
    /// The channel contradicts a final state: never applied, always logged.
    Contradiction,
}

/// The refund state machine: what the channel reporting `reported` does to a refund in
/// `current`. Forward only; SUCCESS and CLOSED are final; ABNORMAL moves only to a final state
/// (a PROCESSING answer then is either stale or a re-application, and the final answer that
/// follows moves it anyway).
pub fn step(current: RefundState, reported: RefundStatus) -> Step {
    use RefundState as S;
    let next = match reported {
        RefundStatus::Processing => S::Processing,
        RefundStatus::Success => S::Success,
        RefundStatus::Closed => S::Closed,
        RefundStatus::Abnormal => S::Abnormal,
    };
    if current == next {
        return Step::Stay;
    }
    if current.may_become(next) {
        return Step::Move(next);
    }
    if current.is_final() {
        Step::Contradiction
    } else {
        Step::Stay
    }
}

/// What the channel said about one refund, from an answer or a callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub status: RefundStatus,
    pub channel_refund_id: String,
    pub success_time: Option<OffsetDateTime>,
    pub user_received_account: Option<String>,
    pub funds_account: Option<String>,
}

impl Observed {
    pub fn of_answer(r: &Refund) -> Self {
        Self {
            status: r.status,
            channel_refund_id: r.refund_id.clone(),
            success_time: r.success_time.as_deref().and_then(parse_rfc3339),
            user_received_account: Some(r.user_received_account.clone()).filter(|a| !a.is_empty()),
            funds_account: r.funds_account.and_then(|f| {
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
            }),
        }
    }

    pub fn of_callback(p: &RefundNotifyPayload) -> Self {
        Self {
            status: p.refund_status,
            channel_refund_id: p.refund_id.clone(),
            success_time: p.success_time.as_deref().and_then(parse_rfc3339),
            user_received_account: p.user_received_account.clone(),
            funds_account: None,
        }
    }
}

// ---- what merchants see ----

/// The merchant's status: a refund the gateway has not heard back about is in progress.
fn merchant_status(state: RefundState) -> RefundStatus {
    match state {
        RefundState::Created | RefundState::Processing => RefundStatus::Processing,
        RefundState::Success => RefundStatus::Success,
        RefundState::Closed => RefundStatus::Closed,
        RefundState::Abnormal => RefundStatus::Abnormal,
    }
}

/// The refund as WeChat's Refund object, with the gateway's ids (§4.7).
pub fn view(r: &RefundRecord) -> Refund {
    let success_time = (r.state == RefundState::Success)
        .then(|| r.success_time.map(rfc3339_beijing))
        .flatten();
    Refund {
        refund_id: r.refund_id.clone(),
        out_refund_no: r.out_refund_no.clone(),
        transaction_id: r.transaction_id.clone(),
        out_trade_no: r.out_trade_no.clone(),
        channel: RefundChannel::Original,
        user_received_account: r.user_received_account.clone().unwrap_or_default(),
        success_time,
        create_time: rfc3339_beijing(r.created_at),
        status: merchant_status(r.state),
        funds_account: r.funds_account.as_deref().and_then(|f| {
            serde_json::from_value::<FundsAccount>(serde_json::Value::String(f.to_string())).ok()
        }),
        amount: RefundAmount {
            total: r.total_fen,
            refund: r.amount_fen,
            from: Some(Vec::new()),
            payer_total: r.total_fen,
            payer_refund: r.amount_fen,
            settlement_refund: r.amount_fen,
            settlement_total: r.total_fen,
            discount_refund: 0,
            currency: r.currency.clone(),
            refund_fee: None,
        },
        promotion_detail: Some(Vec::new()),
    }
}

/// The REFUND.* callback plaintext with the MERCHANT's ids (never the channel's).
pub fn notify_payload(r: &RefundRecord) -> RefundNotifyPayload {
    RefundNotifyPayload {
        mchid: Some(r.mchid.clone()),
        sp_mchid: None,
        sub_mchid: None,
        transaction_id: r.transaction_id.clone(),
        out_trade_no: r.out_trade_no.clone(),
        refund_id: r.refund_id.clone(),
        out_refund_no: r.out_refund_no.clone(),
        refund_status: merchant_status(r.state),
        success_time: (r.state == RefundState::Success)
            .then(|| r.success_time.map(rfc3339_beijing))
            .flatten(),
        user_received_account: r.user_received_account.clone(),
        amount: RefundNotifyAmount {
            total: r.total_fen,
            refund: r.amount_fen,
            payer_total: r.total_fen,
            payer_refund: r.amount_fen,
        },
    }
}

/// Refused by the channel before it ever had the refund: for the merchant it never existed
/// (§4.7 answers a query with "退款单不存在"); its out_refund_no answers with the refusal.
fn never_accepted(r: &RefundRecord) -> bool {
    r.state == RefundState::Closed && r.channel_refund_id.is_none() && r.error_code.is_some()
}

fn stored_refusal(r: &RefundRecord) -> ApiError {
    let code = r
        .error_code
        .as_deref()
        .and_then(ErrorCode::parse)
        .unwrap_or(ErrorCode::InvalidRequest);
    ApiError::new(
        code,
        r.error_message
            .clone()
            .unwrap_or_else(|| "退款请求失败".into()),
    )
}

// ---- create and query ----

/// `POST /v3/refund/domestic/refunds`: idempotent by `(mchid, out_refund_no)`.
pub async fn create(
    app: &AppState,
    merchant: &MerchantRecord,
    request: RefundRequest,
) -> Result<RefundRecord, ApiError> {
    if request.sub_mchid.is_some() {
        return Err(ApiError::new(
            ErrorCode::NoAuth,
            "普通商户无服务商权限，请勿传入 sub_mchid",
        ));
    }
    let order = paid_order(app, merchant, &request).await?;
    // Refunds of one order serialize on this node; across nodes the store's reservation does.
    let _guard = app
        .order_lock(&order.mchid, &order.out_trade_no)
        .lock()
        .await;
    let fingerprint = fingerprint(&order, &request);
    if let Some(existing) = app
        .store
        .get_refund(&merchant.mchid, &request.out_refund_no)
        .await
        .map_err(store_err)?
    {
        return again(app, merchant, existing, &fingerprint).await;
    }
    let t = now();
    check_against_order(&order, &request, t)?;
    let refunded_fen = app
        .store
        .refunded_fen(&order.transaction_id)
        .await
        .map_err(store_err)?
        .unwrap_or(0);
    // Cheap and exact under the lock on this node; the store's reservation decides anyway.
    if request.amount.refund > order.total_fen - refunded_fen {
        return Err(not_enough(order.total_fen - refunded_fen));
    }
    let attempt_id = paid_attempt(app, &order).await?;
    let risk = assess(app, merchant, &order, &request).await?;
    let record = new_record(app, &order, &request, attempt_id, fingerprint.clone(), t).await?;
    match app.store.create_refund(&record).await.map_err(store_err)? {
        CreateRefund::Created => {
            if let Some((event, decision)) = &risk {
                if let Some(engine) = &app.risk {
                    // Counted once it is a refund, so velocity rules see refunds, not refusals.
                    engine.record(event, decision);
                }
                keep(app, merchant, &record, decision).await;
            }
            send_new(app, merchant, record).await
        }
        CreateRefund::Exists(existing) => again(app, merchant, *existing, &fingerprint).await,
        CreateRefund::NotEnough { refundable_fen } => Err(not_enough(refundable_fen)),
        CreateRefund::OrderNotPaid => Err(order_not_found()),
        // The ledger: neither the merchant's pending takings nor its available balance cover it.
        CreateRefund::BalanceShort => Err(ApiError::new(
            ErrorCode::NotEnough,
            "商户余额不足，请充值后重试",
        )),
    }
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
pub async fn query(
    app: &AppState,
    merchant: &MerchantRecord,
    out_refund_no: &str,
) -> Result<RefundRecord, ApiError> {
    app.store
        .get_refund(&merchant.mchid, out_refund_no)
        .await
        .map_err(store_err)?
        .filter(|r| r.kind == RefundKind::Merchant && !never_accepted(r))
        .ok_or_else(refund_not_found)
}

/// The merchant's paid order the request names; another merchant's, or an unpaid one, does
/// not exist for a refund (§4.7: 404 RESOURCE_NOT_EXISTS).
async fn paid_order(
    app: &AppState,
    merchant: &MerchantRecord,
    request: &RefundRequest,
) -> Result<OrderRecord, ApiError> {
    let order = match (&request.transaction_id, &request.out_trade_no) {
        // transaction_id names the order when both come, and then both must agree.
        (Some(id), out_trade_no) => app
            .store
            .get_order_by_transaction_id(id)
            .await
            .map_err(store_err)?
            .filter(|o| {
                o.mchid == merchant.mchid
                    && out_trade_no.as_deref().is_none_or(|n| n == o.out_trade_no)
            }),
        (None, Some(no)) => app
            .store
            .get_order(&merchant.mchid, no)
            .await
            .map_err(store_err)?,
        (None, None) => {
            return Err(ApiError::param(
                "/transaction_id",
                "transaction_id or out_trade_no is required (二选一)",
            ));
        }
    };
    order
        .filter(|o| matches!(o.state, OrderState::Success | OrderState::Refund))
        .ok_or_else(order_not_found)
}

/// The rules that need the order: its total, its currency, the one-year window.
fn check_against_order(
    order: &OrderRecord,
    request: &RefundRequest,
    t: OffsetDateTime,
) -> Result<(), ApiError> {
    if request.amount.total != order.total_fen {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("订单金额与原订单金额不一致：原订单 {} 分", order.total_fen),
        ));
    }
    if request.amount.currency != order.currency {
        return Err(ApiError::param(
            "/amount/currency",
            "退款币种与原订单不一致",
        ));
    }
    let paid_at = order.success_time.unwrap_or(order.created_at);
    if t - paid_at > REFUND_WINDOW {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "订单已超过退款期限",
        ));
    }
    Ok(())
}

/// The attempt that was paid: the refund goes to its channel, for its channel order.
async fn paid_attempt(app: &AppState, order: &OrderRecord) -> Result<String, ApiError> {
    crate::flow::order_paid_attempt(app, order)
        .await?
        .map(|a| a.attempt_id)
        .ok_or_else(|| {
            tracing::error!(transaction_id = %order.transaction_id, "paid order without a paid attempt");
            ApiError::new(ErrorCode::SystemError, "系统错误，请使用相同参数重试")
        })
}

async fn new_record(
    app: &AppState,
    order: &OrderRecord,
    request: &RefundRequest,
    attempt_id: String,
    fingerprint: String,
    t: OffsetDateTime,
) -> Result<RefundRecord, ApiError> {
    let channel_id = app
        .store
        .find_attempt(&attempt_id)
        .await
        .map_err(store_err)?
        .map(|(_, a)| a.channel_id)
        .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "paid attempt vanished"))?;
    Ok(RefundRecord {
        refund_id: paygate_core::ids::refund_id(t),
        mchid: order.mchid.clone(),
        out_refund_no: request.out_refund_no.clone(),
        transaction_id: order.transaction_id.clone(),
        out_trade_no: order.out_trade_no.clone(),
        attempt_id,
        channel_id,
        state: RefundState::Created,
        amount_fen: request.amount.refund,
        total_fen: request.amount.total,
        currency: request.amount.currency.clone(),
        reason: request.reason.clone(),
        notify_url: request
            .notify_url
            .clone()
            .unwrap_or_else(|| order.notify_url.clone()),
        fingerprint,
        request_json: serde_json::to_string(request)
            .map_err(|e| ApiError::new(ErrorCode::SystemError, e.to_string()))?,
        channel_refund_id: None,
        user_received_account: None,
        funds_account: None,
        error_code: None,
        error_message: None,
        created_at: t,
        updated_at: t,
        success_time: None,
        last_polled_at: None,
        version: 0,
        kind: paygate_store::RefundKind::Merchant,
    })
}

/// The same out_refund_no again: the same refund, or 400 if the parameters differ.
async fn again(
    app: &AppState,
    merchant: &MerchantRecord,
    existing: RefundRecord,
    fingerprint: &str,
) -> Result<RefundRecord, ApiError> {
    if existing.fingerprint != fingerprint {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "退款单号已存在，且与本次请求参数不一致",
        ));
    }
    if never_accepted(&existing) {
        return Err(stored_refusal(&existing));
    }
    if existing.state == RefundState::Created {
        // Its outcome was never learnt: settle it now, as the merchant's retry asks.
        return settle(app, merchant, &existing).await;
    }
    Ok(existing)
}

// ---- duplicate payments ----

/// Records that `attempt` was paid although the order was paid by another attempt, with the
/// refund that gives this payment back whole ([`paygate_store::Store::record_duplicate_payment`]).
/// `None` when the attempt moved meanwhile (the caller re-reads it).
pub async fn record_duplicate(
    app: &AppState,
    order: &OrderRecord,
    attempt: &AttemptRecord,
    tx: &paygate_wxpay::models::payments::Transaction,
    source: &str,
) -> Result<Option<RefundRecord>, ApiError> {
    let t = now();
    // The channel order's total, which a refund there names and may not exceed; else the
    // order's (every attempt asks for the order's total).
    let amount_fen = tx
        .amount
        .as_ref()
        .map(|a| a.total)
        .filter(|&fen| fen > 0)
        .unwrap_or(order.total_fen);
    let mut change = paygate_store::AttemptChange::to(
        &attempt.attempt_id,
        &crate::flow::PAYABLE,
        AttemptState::Paid,
        t,
    );
    change.channel_transaction_id = tx.transaction_id.clone();
    let refund = RefundRecord {
        refund_id: paygate_core::ids::refund_id(t),
        mchid: order.mchid.clone(),
        out_refund_no: paygate_store::duplicate_out_refund_no(&attempt.attempt_id),
        transaction_id: order.transaction_id.clone(),
        out_trade_no: order.out_trade_no.clone(),
        attempt_id: attempt.attempt_id.clone(),
        channel_id: attempt.channel_id.clone(),
        state: RefundState::Created,
        amount_fen,
        total_fen: amount_fen,
        currency: order.currency.clone(),
        reason: Some("重复支付退款".into()),
        notify_url: order.notify_url.clone(),
        fingerprint: format!("{}:{amount_fen}", attempt.attempt_id),
        request_json: "{}".into(),
        channel_refund_id: None,
        user_received_account: None,
        funds_account: None,
        error_code: None,
        error_message: None,
        created_at: t,
        updated_at: t,
        success_time: None,
        last_polled_at: None,
        version: 0,
        kind: RefundKind::Duplicate,
    };
    let repair = RepairRecord {
        id: paygate_core::ids::row_id(),
        transaction_id: order.transaction_id.clone(),
        source: source.to_string(),
        way: "duplicate_payment_refunded".into(),
        before_state: order.state,
        after_state: order.state,
        detail: format!(
            "channel attempt {} was paid ({amount_fen} fen) after the order was paid by another attempt: refund {} gives it back",
            attempt.attempt_id, refund.refund_id
        ),
        at: t,
    };
    let d = DuplicatePayment {
        attempt: change,
        refund,
        repair,
    };
    if !app
        .store
        .record_duplicate_payment(&d)
        .await
        .map_err(store_err)?
    {
        return Ok(None);
    }
    app.metrics.observe_duplicate_payment();
    tracing::error!(
        transaction_id = %order.transaction_id,
        attempt_id = %attempt.attempt_id,
        refund_id = %d.refund.refund_id,
        amount_fen,
        source,
        "duplicate payment: a second attempt was paid; refunding it to the payer"
    );
    Ok(Some(d.refund))
}

/// Sends a duplicate payment's refund to the channel now. A failure is left to the refund
/// poller, which re-sends a CREATED refund (the channel's out_refund_no keeps it one refund).
pub async fn give_back_duplicate(app: &AppState, refund: RefundRecord) {
    let refund_id = refund.refund_id.clone();
    let sent = async {
        let merchant = app
            .store
            .get_merchant(&refund.mchid)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "merchant is gone"))?;
        send_new(app, &merchant, refund).await
    }
    .await;
    match sent {
        Ok(r) => tracing::info!(
            refund_id,
            state = r.state.as_str(),
            "duplicate payment's refund sent"
        ),
        Err(e) => {
            tracing::warn!(refund_id, error = %e.message, "duplicate payment's refund not settled by its first send (a CREATED one is the poller's)")
        }
    }
}

// ---- the channel ----

struct AtChannel<'a> {
    channel: &'a WxChannel,
    sub: SubMerchant,
    call: ChannelRefund,
}

async fn at_channel<'a>(
    app: &'a AppState,
    merchant: &MerchantRecord,
    refund: &RefundRecord,
) -> Result<AtChannel<'a>, ApiError> {
    let channel = app.channel(&refund.channel_id)?;
    let sub = sub_at(app, merchant, &refund.channel_id)?;
    let channel_transaction_id = app
        .store
        .find_attempt(&refund.attempt_id)
        .await
        .map_err(store_err)?
        .and_then(|(_, a)| a.channel_transaction_id);
    let funds_account = serde_json::from_str::<RefundRequest>(&refund.request_json)
        .ok()
        .and_then(|r| r.funds_account);
    let call = ChannelRefund {
        out_refund_no: refund.refund_id.clone(),
        out_trade_no: refund.attempt_id.clone(),
        transaction_id: channel_transaction_id,
        reason: refund.reason.clone(),
        amount_fen: refund.amount_fen,
        total_fen: refund.total_fen,
        currency: refund.currency.clone(),
        funds_account,
        sub: sub.clone(),
    };
    Ok(AtChannel { channel, sub, call })
}

/// A new refund: sent at once; an unknown outcome is settled by asking first.
async fn send_new(
    app: &AppState,
    merchant: &MerchantRecord,
    refund: RefundRecord,
) -> Result<RefundRecord, ApiError> {
    let at = at_channel(app, merchant, &refund).await?;
    match send(app, &at, &refund).await? {
        Some(done) => Ok(done),
        None => settle_with(app, &at, &refund).await,
    }
}

/// A refund whose outcome is unknown: asks the channel, and re-sends only what it never got.
async fn settle(
    app: &AppState,
    merchant: &MerchantRecord,
    refund: &RefundRecord,
) -> Result<RefundRecord, ApiError> {
    let at = at_channel(app, merchant, refund).await?;
    settle_with(app, &at, refund).await
}

async fn settle_with(
    app: &AppState,
    at: &AtChannel<'_>,
    refund: &RefundRecord,
) -> Result<RefundRecord, ApiError> {
    match at.channel.query_refund(&refund.refund_id, &at.sub).await {
        Ok(Some(found)) => {
            apply_channel_refund(
                app,
                &refund.refund_id,
                &Observed::of_answer(&found),
                "query",
            )
            .await
        }
        // Never arrived: the identical request is safe (one out_refund_no, one refund).
        Ok(None) => match send(app, at, refund).await? {
            Some(done) => Ok(done),
            None => Err(unknown_outcome()),
        },
        Err(e) => Err(channel_error_to_api(&e)),
    }
}

fn unknown_outcome() -> ApiError {
    ApiError::new(ErrorCode::SystemError, "渠道处理超时，请使用相同参数重试")
}

/// One send. `Ok(None)` when the outcome is unknown; a refusal that the same request would
/// meet again closes the refund (amount given back); other failures leave it CREATED for the
/// merchant's retry or the poller.
async fn send(
    app: &AppState,
    at: &AtChannel<'_>,
    refund: &RefundRecord,
) -> Result<Option<RefundRecord>, ApiError> {
    match at.channel.refund(&at.call).await {
        Ok(answer) => apply_channel_refund(
            app,
            &refund.refund_id,
            &Observed::of_answer(&answer),
            "create",
        )
        .await
        .map(Some),
        Err(e) if e.is_unknown() => {
            tracing::warn!(refund_id = %refund.refund_id, error = %e, "refund outcome unknown");
            Ok(None)
        }
        Err(e) if e.action() == ErrorAction::Stop => refused(app, refund, &e).await.map(Some),
        Err(e) => Err(channel_error_to_api(&e)),
    }
}

/// The channel refused a refund it never had: CLOSED with the refusal, its amount back.
async fn refused(
    app: &AppState,
    refund: &RefundRecord,
    e: &ChannelError,
) -> Result<RefundRecord, ApiError> {
    let answer = channel_error_to_api(e);
    let mut change = RefundChange::to(
        &refund.refund_id,
        RefundState::Created,
        RefundState::Closed,
        now(),
    );
    change.error_code = Some(answer.code.as_str().to_string());
    change.error_message = Some(answer.message.clone());
    if app
        .store
        .apply_refund_change(&change)
        .await
        .map_err(store_err)?
    {
        tracing::info!(refund_id = %refund.refund_id, code = ?e.code(), "refund refused by the channel: closed");
        warn_if_still_owed(refund, RefundState::Closed);
        return Err(answer);
    }
    // Moved meanwhile (a poller elsewhere learnt the channel's answer): that answer stands.
    let current = reread(app, &refund.refund_id).await?;
    if never_accepted(&current) || current.state == RefundState::Created {
        return Err(answer);
    }
    Ok(current)
}

async fn reread(app: &AppState, refund_id: &str) -> Result<RefundRecord, ApiError> {
    app.store
        .get_refund_by_id(refund_id)
        .await
        .map_err(store_err)?
        .ok_or_else(refund_not_found)
}

// ---- applying what the channel says ----

/// Applies what the channel says about one refund through [`step`] and the store's
/// compare-and-set; the notification of a final or abnormal state is written with it.
/// Duplicates and reordering are harmless.
pub async fn apply_channel_refund(
    app: &AppState,
    refund_id: &str,
    observed: &Observed,
    source: &str,
) -> Result<RefundRecord, ApiError> {
    for _ in 0..CAS_RETRIES_MAX {
        let refund = reread(app, refund_id).await?;
        let next = match step(refund.state, observed.status) {
            Step::Stay => return Ok(refund),
            Step::Contradiction => {
                tracing::error!(
                    refund_id,
                    state = refund.state.as_str(),
                    reported = observed.status.as_str(),
                    source,
                    "the channel contradicts a final refund state"
                );
                return Ok(refund);
            }
            Step::Move(next) => next,
        };
        let change = change_to(&refund, next, observed, now());
        let notifies = change.notification.is_some();
        if app
            .store
            .apply_refund_change(&change)
            .await
            .map_err(store_err)?
        {
            tracing::info!(
                refund_id,
                from = refund.state.as_str(),
                to = next.as_str(),
                source,
                "refund moved"
            );
            warn_if_still_owed(&refund, next);
            if notifies {
                app.outbox_wake.notify_one();
            }
            return reread(app, refund_id).await;
        }
    }
    Err(ApiError::new(
        ErrorCode::SystemError,
        "refund changed concurrently too often",
    ))
}

fn change_to(
    refund: &RefundRecord,
    next: RefundState,
    observed: &Observed,
    t: OffsetDateTime,
) -> RefundChange {
    let mut change = RefundChange::to(&refund.refund_id, refund.state, next, t);
    change.channel_refund_id = Some(observed.channel_refund_id.clone());
    change.user_received_account = observed.user_received_account.clone();
    change.funds_account = observed.funds_account.clone();
    change.success_time =
        (next == RefundState::Success).then(|| observed.success_time.unwrap_or(t));
    // The merchant hears of SUCCESS, CLOSED and ABNORMAL (§3.2), as the refund then reads.
    let mut after = refund.clone();
    after.state = next;
    after.channel_refund_id = change.channel_refund_id.clone();
    after.success_time = change.success_time.or(refund.success_time);
    if change.user_received_account.is_some() {
        after.user_received_account = change.user_received_account.clone();
    }
    // A duplicate payment's refund is paygate's own: the merchant is never told of it.
    change.notification = merchant_status(next)
        .event_type()
        .filter(|_| refund.kind == RefundKind::Merchant)
        .map(|event_type| notification(&after, event_type, t));
    change
}

/// A duplicate payment's refund that ended CLOSED: the money stays owed to the payer (refunds
/// payable), which only an operator can settle now.
fn warn_if_still_owed(refund: &RefundRecord, state: RefundState) {
    if refund.kind == RefundKind::Duplicate && state == RefundState::Closed {
        tracing::error!(
            refund_id = %refund.refund_id,
            attempt_id = %refund.attempt_id,
            amount_fen = refund.amount_fen,
            "the channel closed the refund of a duplicate payment: the money stays owed to the payer (refunds payable) for an operator"
        );
    }
}

fn notification(refund: &RefundRecord, event_type: &str, t: OffsetDateTime) -> NotificationRecord {
    NotificationRecord {
        id: paygate_core::ids::row_id(),
        mchid: refund.mchid.clone(),
        transaction_id: refund.transaction_id.clone(),
        event_type: event_type.to_string(),
        url: refund.notify_url.clone(),
        plaintext: serde_json::to_string(&notify_payload(refund)).unwrap_or_default(),
        state: NotificationState::Pending,
        attempts: 0,
        next_attempt_at: t,
        lease_until: None,
        created_at: t,
        delivered_at: None,
        answer_serial: None,
    }
}

/// A verified, decrypted REFUND.* callback. One that does not match the refund it names is
/// not trusted: the channel is asked instead.
pub async fn apply_callback(app: &AppState, payload: &RefundNotifyPayload) -> Result<(), ApiError> {
    let Some(refund) = app
        .store
        .get_refund_by_id(&payload.out_refund_no)
        .await
        .map_err(store_err)?
    else {
        tracing::warn!(out_refund_no = %payload.out_refund_no, "refund callback for an unknown refund");
        return Ok(());
    };
    if payload.out_trade_no != refund.attempt_id || payload.amount.refund != refund.amount_fen {
        tracing::error!(refund_id = %refund.refund_id, "refund callback does not match the refund: asking the channel");
        return settle_by_query(app, &refund).await;
    }
    apply_channel_refund(
        app,
        &refund.refund_id,
        &Observed::of_callback(payload),
        "callback",
    )
    .await
    .map(|_| ())
}

/// After a callback that did not verify, about attempt `attempt_id`: its unsettled refunds are
/// settled by asking the channel, never by trusting the callback.
pub async fn settle_unverified(app: &AppState, attempt_id: &str) {
    let Ok(Some((order, _))) = app.store.find_attempt(attempt_id).await else {
        return;
    };
    let Ok(refunds) = app.store.refunds_of(&order.transaction_id).await else {
        return;
    };
    for refund in refunds
        .iter()
        .filter(|r| r.attempt_id == attempt_id && !r.state.is_final())
    {
        if let Err(e) = settle_by_query(app, refund).await {
            tracing::warn!(refund_id = %refund.refund_id, error = %e.message, "refund query after an unverified callback failed");
        }
    }
}

/// Asks the channel about a refund and applies the answer; never sends anything.
pub(crate) async fn settle_by_query(app: &AppState, refund: &RefundRecord) -> Result<(), ApiError> {
    let merchant = app
        .store
        .get_merchant(&refund.mchid)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "merchant is gone"))?;
    let at = at_channel(app, &merchant, refund).await?;
    match at.channel.query_refund(&refund.refund_id, &at.sub).await {
        Ok(Some(found)) => apply_channel_refund(
            app,
            &refund.refund_id,
            &Observed::of_answer(&found),
            "query",
        )
        .await
        .map(|_| ()),
        Ok(None) if refund.state.is_accepted() => {
            tracing::error!(refund_id = %refund.refund_id, "the channel does not know a refund it accepted");
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(channel_error_to_api(&e)),
    }
}

// ---- the poller ----

/// One poller round over unsettled refunds (CREATED: its outcome never learnt; PROCESSING:
/// its callback may be lost); returns how many it looked at.
pub async fn poll_once(app: &AppState) -> Result<usize, paygate_store::StoreError> {
    let t = now();
    let min_age = app.scaled(Duration::from_millis(app.config.workers.poll_min_age_ms));
    let polled_before = t - time::Duration::try_from(min_age).unwrap_or(time::Duration::ZERO);
    let due = app
        .store
        .refunds_to_poll(polled_before, POLL_BATCH_MAX)
        .await?;
    for refund in &due {
        if let Err(e) = poll_refund(app, refund).await {
            tracing::info!(refund_id = %refund.refund_id, error = %e.message, "refund poll deferred");
        }
        app.store.mark_refund_polled(&refund.refund_id, t).await?;
    }
    Ok(due.len())
}

async fn poll_refund(app: &AppState, refund: &RefundRecord) -> Result<(), ApiError> {
    if refund.state != RefundState::Created {
        return settle_by_query(app, refund).await;
    }
    // A CREATED refund may be re-sent: under the order's lock, so a merchant's retry on this
    // node is not sending it at the same moment (elsewhere the channel's idempotency holds).
    let _guard = app
        .order_lock(&refund.mchid, &refund.out_trade_no)
        .lock()
        .await;
    let current = reread(app, &refund.refund_id).await?;
    if current.state != RefundState::Created {
        return Ok(());
    }
    let merchant = app
        .store
        .get_merchant(&current.mchid)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "merchant is gone"))?;
    settle(app, &merchant, &current).await.map(|_| ())
}

// ---- risk ----

fn action_str(action: Action) -> &'static str {
    match action {
        Action::Allow => "ALLOW",
        Action::Review => "REVIEW",
        Action::Challenge => "CHALLENGE",
        Action::Deny => "DENY",
    }
}

/// A risk decision on a new refund, as on a new prepay (`risk::assess_prepay`): DENY (and
/// CHALLENGE) answer 403 RULE_LIMIT before anything reaches the channel; the model's score
/// alone flags, never refuses, unless `risk.model_may_deny`; `risk.enforce` decides which
/// refusals stand.
async fn assess(
    app: &AppState,
    merchant: &MerchantRecord,
    order: &OrderRecord,
    request: &RefundRequest,
) -> Result<Option<(RiskEvent, Decision)>, ApiError> {
    let Some(engine) = &app.risk else {
        return Ok(None);
    };
    let trade_type = if order.trade_type == "MWEB" {
        "H5"
    } else {
        order.trade_type.as_str()
    };
    let mut event = RiskEvent::refund(
        &merchant.mchid,
        trade_type,
        request.amount.refund,
        order.total_fen,
        order.success_time.unwrap_or(order.created_at),
        now(),
    );
    event.currency = order.currency.clone();
    event.merchant_created_at = Some(merchant.created_at);
    event.payer_key = order.payer_openid.as_deref().map(|o| engine.payer_key(o));
    let mut decision = engine.decide(&event);
    if decision.action.blocks() && !app.config.risk.model_may_deny {
        let without_model: i64 = decision
            .fired
            .iter()
            .filter(|f| f.layer != Layer::Model)
            .map(|f| f.score)
            .sum();
        if !engine.thresholds().refund.action(without_model).blocks() {
            decision.action = Action::Review;
        }
    }
    // `risk.enforce` applies as to prepays (sandbox default: only a block list refuses).
    if decision.action.blocks() && !crate::risk::refusal_stands(app, &decision) {
        decision.action = Action::Review;
    }
    app.metrics.observe_risk(action_str(decision.action));
    if let Some((code, message)) = decision.error() {
        engine.record(&event, &decision);
        let record = RiskDecisionRecord {
            id: paygate_core::ids::row_id(),
            mchid: merchant.mchid.clone(),
            kind: "REFUND".into(),
            reference: request.out_refund_no.clone(),
            transaction_id: Some(order.transaction_id.clone()),
            action: action_str(decision.action).into(),
            score: decision.score,
            fired_json: serde_json::to_string(&decision.fired).unwrap_or_else(|_| "[]".into()),
            rules_version: decision.rules_version as i64,
            at: now(),
        };
        if let Err(e) = app.store.insert_risk_decision(&record).await {
            tracing::error!(error = %e, "a risk decision could not be stored");
        }
        tracing::info!(mchid = %merchant.mchid, out_refund_no = %request.out_refund_no, score = decision.score, "refund refused by risk control");
        return Err(ApiError::new(code, message));
    }
    Ok(Some((event, decision)))
}

/// Keeps a decision worth keeping (not allowed, or a rule fired) about a created refund.
async fn keep(
    app: &AppState,
    merchant: &MerchantRecord,
    refund: &RefundRecord,
    decision: &Decision,
) {
    if decision.action == Action::Allow && decision.fired.is_empty() {
        return;
    }
    let record = RiskDecisionRecord {
        id: paygate_core::ids::row_id(),
        mchid: merchant.mchid.clone(),
        kind: "REFUND".into(),
        reference: refund.out_refund_no.clone(),
        transaction_id: Some(refund.transaction_id.clone()),
        action: action_str(decision.action).into(),
        score: decision.score,
        fired_json: serde_json::to_string(&decision.fired).unwrap_or_else(|_| "[]".into()),
        rules_version: decision.rules_version as i64,
        at: now(),
    };
    if let Err(e) = app.store.insert_risk_decision(&record).await {
        tracing::error!(error = %e, "a risk decision could not be stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [RefundState; 5] = [
        RefundState::Created,
        RefundState::Processing,
        RefundState::Success,
        RefundState::Closed,
        RefundState::Abnormal,
    ];
    const REPORTS: [RefundStatus; 4] = [
        RefundStatus::Processing,
        RefundStatus::Success,
        RefundStatus::Closed,
        RefundStatus::Abnormal,
    ];

    #[test]
    fn the_state_machine_moves_forward_only() {
        use RefundState as S;
        assert_eq!(
            step(S::Created, RefundStatus::Processing),
            Step::Move(S::Processing)
        );
        assert_eq!(
            step(S::Created, RefundStatus::Success),
            Step::Move(S::Success)
        );
        assert_eq!(
            step(S::Processing, RefundStatus::Abnormal),
            Step::Move(S::Abnormal)
        );
        assert_eq!(
            step(S::Abnormal, RefundStatus::Success),
            Step::Move(S::Success)
        );
        assert_eq!(step(S::Abnormal, RefundStatus::Processing), Step::Stay);
        assert_eq!(step(S::Processing, RefundStatus::Processing), Step::Stay);
        assert_eq!(step(S::Success, RefundStatus::Closed), Step::Contradiction);
        assert_eq!(step(S::Closed, RefundStatus::Success), Step::Contradiction);
        for s in STATES {
            for r in REPORTS {
                match step(s, r) {
                    Step::Move(next) => assert!(s.may_become(next), "{s:?} + {r:?}"),
                    Step::Contradiction => assert!(s.is_final(), "{s:?} + {r:?}"),
                    Step::Stay => {}
                }
                if s.is_final() {
                    assert!(!matches!(step(s, r), Step::Move(_)), "{s:?} is final");
                }
            }
        }
    }

    #[test]
    fn any_order_of_reports_ends_where_the_last_final_word_puts_it() {
        // Every sequence of two or three reports: once final, the state never changes.
        for a in REPORTS {
            for b in REPORTS {
                for c in REPORTS {
                    let mut state = RefundState::Created;
                    let mut final_at: Option<RefundState> = None;
                    for r in [a, b, c] {
                        if let Step::Move(next) = step(state, r) {
                            state = next;
                        }
                        if let Some(f) = final_at {
                            assert_eq!(state, f, "{a:?} {b:?} {c:?}");
                        }
                        if state.is_final() {
                            final_at = Some(state);
                        }
                    }
                }
            }
        }
    }

    fn record(state: RefundState) -> RefundRecord {
        let t = OffsetDateTime::from_unix_timestamp(1_780_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        RefundRecord {
            refund_id: "50000020260101000000000000001".into(),
            mchid: "1900000109".into(),
            out_refund_no: "rf-1".into(),
            transaction_id: "4200000000202601010000000001".into(),
            out_trade_no: "order-1".into(),
            attempt_id: "420000000020260101000000000101".into(),
            channel_id: "sandbox".into(),
            state,
            amount_fen: 30,
            total_fen: 100,
            currency: "CNY".into(),
            reason: None,
            notify_url: "https://m.example/n".into(),
            fingerprint: "x".into(),
            request_json: "{}".into(),
            channel_refund_id: Some("50300".into()),
            user_received_account: Some("支付用户零钱".into()),
            funds_account: Some("UNSETTLED".into()),
            error_code: None,
            error_message: None,
            created_at: t,
            updated_at: t,
            success_time: Some(t),
            last_polled_at: None,
            version: 1,
            kind: paygate_store::RefundKind::Merchant,
        }
    }

    #[test]
    fn merchants_see_their_own_ids_and_processing_until_the_channel_answers() {
        let v = view(&record(RefundState::Created));
        assert_eq!(v.status, RefundStatus::Processing);
        assert_eq!(v.success_time, None);
        assert_eq!(v.refund_id, "50000020260101000000000000001");
        assert_eq!(
            v.out_trade_no, "order-1",
            "the merchant's, not the attempt's"
        );
        assert_eq!(v.funds_account, Some(FundsAccount::Unsettled));
        let s = view(&record(RefundState::Success));
        assert!(s.success_time.is_some());
        let p = notify_payload(&record(RefundState::Success));
        assert_eq!(p.mchid.as_deref(), Some("1900000109"));
        assert_eq!(p.transaction_id, "4200000000202601010000000001");
        assert_eq!(p.refund_status.event_type(), Some("REFUND.SUCCESS"));
        assert_eq!((p.amount.refund, p.amount.total), (30, 100));
    }

    #[test]
    fn an_accepted_then_final_change_carries_its_notification() {
        let observed = Observed {
            status: RefundStatus::Success,
            channel_refund_id: "50300".into(),
            success_time: None,
            user_received_account: None,
            funds_account: None,
        };
        let now = OffsetDateTime::from_unix_timestamp(1_790_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let c = change_to(
            &record(RefundState::Processing),
            RefundState::Success,
            &observed,
            now,
        );
        assert_eq!(
            c.success_time,
            Some(now),
            "the time it was learnt when the channel gave none"
        );
        let n = c.notification.expect("SUCCESS notifies");
        assert_eq!(n.event_type, "REFUND.SUCCESS");
        let p: RefundNotifyPayload =
            serde_json::from_str(&n.plaintext).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.refund_status, RefundStatus::Success);
        let processing = Observed {
            status: RefundStatus::Processing,
            ..observed
        };
        let c = change_to(
            &record(RefundState::Created),
            RefundState::Processing,
            &processing,
            now,
        );
        assert!(c.notification.is_none(), "PROCESSING is not announced");
    }
}
