//! How profit sharing is made at the channel and kept safe (the refund design, reference §4.8):
//! - Shares and returns of one order serialize on the order's lock on this node, and across
//!   nodes on the store: a split exists only if the compare-and-set on its order succeeded in the
//!   transaction that inserted it ([`paygate_store::Store::create_share`]).
//! - The gateway's share order id is the out_order_no at the channel, its return id the
//!   out_return_no: re-sending is the same call there, so an unknown outcome (a timeout) is
//!   settled by asking the channel first and re-sending only what it never got.
//! - Every change goes through [`step`] (pure) and the store's compare-and-set, with the
//!   merchant's notifications and the ledger posting in the same transaction; a final state
//!   never moves. A share the channel refused ends CLOSED with its amount back.

use std::time::Duration;

use paygate_channel::{
    ChannelError, ChannelReceiver, ChannelShare, ChannelShareReturn, ErrorAction,
    ShareReceiverCall, SubMerchant, WxChannel,
};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::money::{Currency, Money};
use paygate_core::timefmt::rfc3339_beijing;
use paygate_ledger::{Posting, recipes};
use paygate_store::{
    CreateShare, CreateShareReturn, MerchantRecord, NotificationRecord, NotificationState,
    OrderRecord, OrderState, ReturnState, ShareChange, ShareKind, ShareLimits, ShareLine,
    ShareOrderRecord, ShareReceiverRecord, ShareReturnChange, ShareReturnRecord, ShareState,
    StoreError,
};
use paygate_wxpay::models::profitsharing::{
    AddReceiverRequest, DetailResult, OrderState as WireOrderState, OrdersEntity,
    ProfitSharingOrderRequest, ReceiverType, ReturnOrderRequest, ReturnOrdersEntity, ReturnResult,
    UnfreezeRequest,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::flow::{channel_error_to_api, sub_at};
use crate::http::{AppState, Caller};

/// A CAS that lost a race is re-read and re-decided this many times at most.
const CAS_RETRIES_MAX: u32 = 5;
/// Share orders and returns the poller looks at per round.
pub const POLL_BATCH_MAX: u32 = 200;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn store_err(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store error");
    ApiError::new(ErrorCode::SystemError, "系统错误，请使用相同参数重试")
}

fn order_not_found() -> ApiError {
    ApiError::new(ErrorCode::ResourceNotExists, "订单不存在")
}

fn share_not_found() -> ApiError {
    ApiError::new(ErrorCode::ResourceNotExists, "分账单不存在")
}

fn return_not_found() -> ApiError {
    ApiError::new(ErrorCode::ResourceNotExists, "回退单不存在")
}

fn wire<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn ms(t: OffsetDateTime) -> i64 {
    paygate_store::unix_ms(t)
}

// ---- receivers ----

/// Decrypts a sensitive field sent for the gateway's platform key (the one `Wechatpay-Serial`
/// named, else the certificate's, as SDKs in certificate mode encrypt for it).
fn open_sensitive(
    app: &AppState,
    caller: &Caller,
    field: &str,
    value: &str,
) -> Result<String, ApiError> {
    let keys = app.keys.current();
    let key = keys.decrypting_key(caller.wechatpay_serial.as_deref());
    paygate_wxpay::crypto::oaep::decrypt(key, value).map_err(|_| {
        ApiError::param(
            field,
            "解密失败：请用平台证书（Wechatpay-Serial 所指）的公钥以 RSA-OAEP 加密",
        )
    })
}

fn merchant_channel<'a>(
    app: &'a AppState,
    merchant: &MerchantRecord,
) -> Result<(&'a WxChannel, SubMerchant), ApiError> {
    let channel = app.channel(&merchant.channel_id)?;
    let sub = sub_at(app, merchant, &merchant.channel_id)?;
    Ok((channel.as_ref(), sub))
}

/// `receivers/add`: at the merchant's channel first (with the name sealed for it), then kept.
pub async fn add_receiver(
    app: &AppState,
    caller: &Caller,
    req: &AddReceiverRequest,
) -> Result<(), ApiError> {
    let merchant = &caller.merchant;
    let (channel, sub) = merchant_channel(app, merchant)?;
    let name = match &req.name {
        Some(n) => {
            let plain = open_sensitive(app, caller, "/name", n)?;
            Some(
                channel
                    .seal_name(&plain)
                    .map_err(|e| channel_error_to_api(&e))?,
            )
        }
        None => None,
    };
    channel
        .add_receiver(&ChannelReceiver {
            r#type: req.r#type,
            account: req.account.clone(),
            name,
            relation_type: req.relation_type,
            custom_relation: req.custom_relation.clone(),
            sub,
        })
        .await
        .map_err(|e| channel_error_to_api(&e))?;
    app.store
        .upsert_share_receiver(&ShareReceiverRecord {
            mchid: merchant.mchid.clone(),
            r#type: wire(&req.r#type),
            account: req.account.clone(),
            channel_id: merchant.channel_id.clone(),
            relation_type: wire(&req.relation_type),
            custom_relation: req.custom_relation.clone(),
            created_at: now(),
        })
        .await
        .map_err(store_err)
}

/// `receivers/delete`: forgotten here; at the channel only when no other merchant of that
/// channel still has it (a direct channel's receivers are shared by its merchants).
pub async fn delete_receiver(
    app: &AppState,
    merchant: &MerchantRecord,
    r#type: ReceiverType,
    account: &str,
) -> Result<(), ApiError> {
    let kind = wire(&r#type);
    let known = app
        .store
        .share_receivers(&merchant.mchid)
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|r| r.r#type == kind && r.account == account)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "分账接收方不存在"))?;
    app.store
        .delete_share_receiver(&merchant.mchid, &kind, account)
        .await
        .map_err(store_err)?;
    let users = app
        .store
        .share_receiver_users(&known.channel_id, &kind, account)
        .await
        .map_err(store_err)?;
    if users == 0 {
        let channel = app.channel(&known.channel_id)?;
        let sub = sub_at(app, merchant, &known.channel_id)?;
        if let Err(e) = channel.delete_receiver(r#type, account, &sub).await {
            // Not fatal for the merchant: it can no longer split to it through the gateway.
            tracing::warn!(mchid = %merchant.mchid, error = %e, "receiver not deleted at the channel");
        }
    }
    Ok(())
}

// ---- the order being shared ----

/// The merchant's paid order; another merchant's or an unpaid one does not exist here.
async fn paid_order(
    app: &AppState,
    merchant: &MerchantRecord,
    transaction_id: &str,
) -> Result<OrderRecord, ApiError> {
    let order = app
        .store
        .get_order_by_transaction_id(transaction_id)
        .await
        .map_err(store_err)?
        .filter(|o| o.mchid == merchant.mchid)
        .filter(|o| matches!(o.state, OrderState::Success | OrderState::Refund))
        .ok_or_else(order_not_found)?;
    if !order.profit_sharing {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "该笔订单不支持分账（下单时未设置 settle_info.profit_sharing）",
        ));
    }
    Ok(order)
}

/// The paid attempt: its id and the channel's transaction id (what the channel shares).
async fn paid_attempt(
    app: &AppState,
    order: &OrderRecord,
) -> Result<(String, String, String), ApiError> {
    crate::flow::order_paid_attempt(app, order)
        .await?
        .and_then(|a| Some((a.attempt_id, a.channel_id, a.channel_transaction_id?)))
        .ok_or_else(|| {
            tracing::error!(transaction_id = %order.transaction_id, "paid order without a paid attempt");
            ApiError::new(ErrorCode::SystemError, "系统错误，请使用相同参数重试")
        })
}

async fn limits(app: &AppState, order: &OrderRecord) -> Result<ShareLimits, ApiError> {
    let max_ratio_bp = app
        .store
        .share_max_ratio(&order.mchid)
        .await
        .map_err(store_err)?
        .unwrap_or(paygate_store::sharing::MAX_RATIO_BP_DEFAULT);
    Ok(ShareLimits {
        fee_fen: order.pricing.fee_fen,
        max_ratio_bp,
    })
}

fn not_enough(unsplit_fen: i64) -> ApiError {
    ApiError::new(
        ErrorCode::NotEnough,
        format!("分账金额超过订单剩余待分金额，当前可分 {unsplit_fen} 分"),
    )
}

fn refusal(outcome: CreateShare) -> ApiError {
    match outcome {
        CreateShare::NotEnough { unsplit_fen } => not_enough(unsplit_fen),
        CreateShare::RatioExceeded { max_ratio_bp } => ApiError::new(
            ErrorCode::InvalidRequest,
            format!("分账比例超过上限 {}%", max_ratio_bp / 100),
        ),
        CreateShare::Unfrozen => {
            ApiError::new(ErrorCode::InvalidRequest, "订单剩余资金已解冻，不能再分账")
        }
        CreateShare::OrderNotPaid => order_not_found(),
        CreateShare::Created | CreateShare::Exists(_) | CreateShare::Moved => {
            ApiError::new(ErrorCode::SystemError, "系统繁忙，请使用相同参数重试")
        }
    }
}

/// Refused by the channel before it ever had it: the merchant's retry meets the refusal.
fn never_accepted(s: &ShareOrderRecord) -> bool {
    s.state == ShareState::Closed && s.error_code.is_some()
}

fn stored_refusal(code: Option<&str>, message: Option<&str>) -> ApiError {
    ApiError::new(
        code.and_then(ErrorCode::parse)
            .unwrap_or(ErrorCode::InvalidRequest),
        message.unwrap_or("请求失败").to_string(),
    )
}

// ---- splits ----

/// What makes a repeated split "the same": the payment, the lines, the unfreeze flag (names
/// are left out: OAEP ciphertexts differ on every encryption of the same name).
fn split_fingerprint(req: &ProfitSharingOrderRequest) -> String {
    let lines: Vec<String> = req
        .receivers
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}",
                wire(&r.r#type),
                r.account,
                r.amount,
                r.description
            )
        })
        .collect();
    format!(
        "{}:{}:{}",
        req.transaction_id,
        req.unfreeze_unsplit,
        lines.join(";")
    )
}

/// `POST /v3/profitsharing/orders`: one round, idempotent by `(mchid, out_order_no)`.
pub async fn create_split(
    app: &AppState,
    caller: &Caller,
    req: &ProfitSharingOrderRequest,
) -> Result<ShareOrderRecord, ApiError> {
    let merchant = &caller.merchant;
    let order = paid_order(app, merchant, &req.transaction_id).await?;
    let _guard = app
        .order_lock(&order.mchid, &order.out_trade_no)
        .lock()
        .await;
    let fingerprint = split_fingerprint(req);
    if let Some(existing) = app
        .store
        .get_share(&merchant.mchid, &req.out_order_no)
        .await
        .map_err(store_err)?
    {
        return again(app, existing, &fingerprint).await;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in req.receivers.iter().enumerate() {
        if !seen.insert((r.r#type, r.account.as_str())) {
            return Err(ApiError::param(
                &format!("/receivers/{i}/account"),
                "同一分账单中接收方重复",
            ));
        }
    }
    let (attempt_id, channel_id, _) = paid_attempt(app, &order).await?;
    let record = new_split(
        app,
        caller,
        &order,
        req,
        attempt_id,
        channel_id,
        fingerprint.clone(),
    )
    .await?;
    match app
        .store
        .create_share(&record, limits(app, &order).await?)
        .await
        .map_err(store_err)?
    {
        CreateShare::Created => send_new(app, merchant, record).await,
        CreateShare::Exists(existing) => again(app, *existing, &fingerprint).await,
        other => Err(refusal(other)),
    }
}

async fn new_split(
    app: &AppState,
    caller: &Caller,
    order: &OrderRecord,
    req: &ProfitSharingOrderRequest,
    attempt_id: String,
    channel_id: String,
    fingerprint: String,
) -> Result<ShareOrderRecord, ApiError> {
    let t = now();
    let known = app
        .store
        .share_receivers(&order.mchid)
        .await
        .map_err(store_err)?;
    let channel = app.channel(&channel_id)?;
    let order_id = paygate_core::ids::profit_sharing_id("3008", t);
    let mut lines = Vec::with_capacity(req.receivers.len());
    for (i, r) in req.receivers.iter().enumerate() {
        let kind = wire(&r.r#type);
        // Only this merchant's receivers: a direct channel's list is shared by its merchants.
        let sent = known
            .iter()
            .any(|k| k.r#type == kind && k.account == r.account);
        let name = match (&r.name, sent) {
            (Some(n), true) => {
                let plain = open_sensitive(app, caller, &format!("/receivers/{i}/name"), n)?;
                Some(
                    channel
                        .seal_name(&plain)
                        .map_err(|e| channel_error_to_api(&e))?,
                )
            }
            _ => None,
        };
        lines.push(ShareLine {
            r#type: kind,
            account: r.account.clone(),
            name,
            amount_fen: r.amount,
            description: r.description.clone(),
            result: if sent { "PENDING" } else { "CLOSED" }.into(),
            fail_reason: (!sent).then(|| "NO_RELATION".into()),
            detail_id: format!("3601{}{i:02}", &order_id[4..]),
            create_time_ms: ms(t),
            finish_time_ms: (!sent).then(|| ms(t)),
            sent,
        });
    }
    Ok(ShareOrderRecord {
        amount_fen: lines.iter().filter(|l| l.sent).map(|l| l.amount_fen).sum(),
        order_id,
        mchid: order.mchid.clone(),
        out_order_no: req.out_order_no.clone(),
        transaction_id: order.transaction_id.clone(),
        attempt_id,
        channel_id,
        kind: ShareKind::Split,
        state: ShareState::Created,
        unfreeze_unsplit: req.unfreeze_unsplit,
        receivers: lines,
        description: None,
        fingerprint,
        channel_order_id: None,
        error_code: None,
        error_message: None,
        created_at: t,
        updated_at: t,
        finished_at: None,
        last_polled_at: None,
        version: 0,
    })
}

/// The same out_order_no again: the same order, or 400 if the parameters differ.
async fn again(
    app: &AppState,
    existing: ShareOrderRecord,
    fingerprint: &str,
) -> Result<ShareOrderRecord, ApiError> {
    if existing.fingerprint != fingerprint {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "商户分账单号重复，且与本次请求参数不一致",
        ));
    }
    if never_accepted(&existing) {
        return Err(stored_refusal(
            existing.error_code.as_deref(),
            existing.error_message.as_deref(),
        ));
    }
    if existing.state == ShareState::Created {
        let merchant = merchant_of(app, &existing.mchid).await?;
        return settle(app, &merchant, &existing).await;
    }
    Ok(existing)
}

async fn merchant_of(app: &AppState, mchid: &str) -> Result<MerchantRecord, ApiError> {
    app.store
        .get_merchant(mchid)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "merchant is gone"))
}

// ---- unfreeze ----

/// `POST /v3/profitsharing/orders/unfreeze`: what is left goes to the merchant; a new
/// out_order_no, idempotent by it.
pub async fn create_unfreeze(
    app: &AppState,
    merchant: &MerchantRecord,
    req: &UnfreezeRequest,
) -> Result<ShareOrderRecord, ApiError> {
    let order = paid_order(app, merchant, &req.transaction_id).await?;
    let _guard = app
        .order_lock(&order.mchid, &order.out_trade_no)
        .lock()
        .await;
    let fingerprint = format!("unfreeze:{}", req.transaction_id);
    if let Some(existing) = app
        .store
        .get_share(&merchant.mchid, &req.out_order_no)
        .await
        .map_err(store_err)?
    {
        if existing.fingerprint != fingerprint {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "商户分账单号重复"));
        }
        return again(app, existing, &fingerprint).await;
    }
    let (attempt_id, channel_id, _) = paid_attempt(app, &order).await?;
    let limits = limits(app, &order).await?;
    for _ in 0..CAS_RETRIES_MAX {
        let amounts = app
            .store
            .share_amounts(&order.transaction_id)
            .await
            .map_err(store_err)?
            .ok_or_else(order_not_found)?;
        let rest = amounts.unsplit_fen(limits.fee_fen);
        if amounts.unfrozen || rest == 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "订单无待分金额，无需解冻",
            ));
        }
        let t = now();
        let order_id = paygate_core::ids::profit_sharing_id("3008", t);
        let record = ShareOrderRecord {
            receivers: vec![ShareLine {
                r#type: "MERCHANT_ID".into(),
                account: merchant.mchid.clone(),
                name: None,
                amount_fen: rest,
                description: req.description.clone(),
                result: "PENDING".into(),
                fail_reason: None,
                detail_id: format!("3601{}00", &order_id[4..]),
                create_time_ms: ms(t),
                finish_time_ms: None,
                sent: true,
            }],
            order_id,
            mchid: merchant.mchid.clone(),
            out_order_no: req.out_order_no.clone(),
            transaction_id: order.transaction_id.clone(),
            attempt_id: attempt_id.clone(),
            channel_id: channel_id.clone(),
            kind: ShareKind::Unfreeze,
            state: ShareState::Created,
            amount_fen: rest,
            unfreeze_unsplit: true,
            description: Some(req.description.clone()),
            fingerprint: fingerprint.clone(),
            channel_order_id: None,
            error_code: None,
            error_message: None,
            created_at: t,
            updated_at: t,
            finished_at: None,
            last_polled_at: None,
            version: 0,
        };
        match app
            .store
            .create_share(&record, limits)
            .await
            .map_err(store_err)?
        {
            CreateShare::Created => return send_new(app, merchant, record).await,
            CreateShare::Exists(existing) => return again(app, *existing, &fingerprint).await,
            // A refund or a split elsewhere changed what is left: computed again.
            CreateShare::Moved => continue,
            other => return Err(refusal(other)),
        }
    }
    Err(ApiError::new(
        ErrorCode::SystemError,
        "订单变化频繁，请使用相同参数重试",
    ))
}

// ---- the channel ----

async fn channel_tx(app: &AppState, share: &ShareOrderRecord) -> Result<String, ApiError> {
    app.store
        .find_attempt(&share.attempt_id)
        .await
        .map_err(store_err)?
        .and_then(|(_, a)| a.channel_transaction_id)
        .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "paid attempt vanished"))
}

async fn send_new(
    app: &AppState,
    merchant: &MerchantRecord,
    share: ShareOrderRecord,
) -> Result<ShareOrderRecord, ApiError> {
    if share.kind == ShareKind::Split && share.amount_fen == 0 {
        // Every receiver was closed here (none was added): nothing goes to the channel.
        return finish_locally(app, share).await;
    }
    match send(app, merchant, &share).await? {
        Some(done) => Ok(done),
        None => settle(app, merchant, &share).await,
    }
}

async fn finish_locally(
    app: &AppState,
    share: ShareOrderRecord,
) -> Result<ShareOrderRecord, ApiError> {
    let t = now();
    let mut change = ShareChange::to(&share, ShareState::Finished, t);
    change.finished_at = Some(t);
    if share.unfreeze_unsplit {
        // The rest was unfrozen with it: nothing was sent, so nothing is unfrozen either.
        change.refreeze = true;
    }
    app.store
        .apply_share_change(&change)
        .await
        .map_err(store_err)?;
    reread(app, &share.order_id).await
}

/// One send. `Ok(None)` when the outcome is unknown; a refusal the same request would meet
/// again closes the order (amount back); other failures leave it CREATED for a retry.
async fn send(
    app: &AppState,
    merchant: &MerchantRecord,
    share: &ShareOrderRecord,
) -> Result<Option<ShareOrderRecord>, ApiError> {
    let channel = app.channel(&share.channel_id)?;
    let sub = sub_at(app, merchant, &share.channel_id)?;
    let tx = channel_tx(app, share).await?;
    let sent = match share.kind {
        ShareKind::Split => {
            let call = ChannelShare {
                out_order_no: share.order_id.clone(),
                transaction_id: tx,
                receivers: share
                    .receivers
                    .iter()
                    .filter(|l| l.sent)
                    .map(|l| ShareReceiverCall {
                        r#type: parse_type(&l.r#type),
                        account: l.account.clone(),
                        name: l.name.clone(),
                        amount_fen: l.amount_fen,
                        description: l.description.clone(),
                    })
                    .collect(),
                unfreeze_unsplit: share.unfreeze_unsplit,
                sub,
            };
            channel.share(&call).await
        }
        ShareKind::Unfreeze => {
            let description = share.description.clone().unwrap_or_default();
            channel
                .unfreeze(&share.order_id, &tx, &description, &sub)
                .await
        }
    };
    match sent {
        Ok(entity) => apply_channel_share(app, &share.order_id, &entity, "create")
            .await
            .map(Some),
        Err(e) if e.is_unknown() => {
            tracing::warn!(order_id = %share.order_id, error = %e, "share outcome unknown");
            Ok(None)
        }
        Err(e) if e.action() == ErrorAction::Stop => refused(app, share, &e).await.map(Some),
        Err(e) => Err(channel_error_to_api(&e)),
    }
}

fn parse_type(s: &str) -> ReceiverType {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .unwrap_or(ReceiverType::MerchantId)
}

/// An unknown outcome: ask the channel, re-send only what it never got.
async fn settle(
    app: &AppState,
    merchant: &MerchantRecord,
    share: &ShareOrderRecord,
) -> Result<ShareOrderRecord, ApiError> {
    match query_channel(app, merchant, share).await? {
        Some(entity) => apply_channel_share(app, &share.order_id, &entity, "query").await,
        None if share.state == ShareState::Created => match send(app, merchant, share).await? {
            Some(done) => Ok(done),
            None => Err(ApiError::new(
                ErrorCode::SystemError,
                "渠道处理超时，请使用相同参数重试",
            )),
        },
        None => {
            tracing::error!(order_id = %share.order_id, "the channel does not know a share it accepted");
            Ok(share.clone())
        }
    }
}

async fn query_channel(
    app: &AppState,
    merchant: &MerchantRecord,
    share: &ShareOrderRecord,
) -> Result<Option<OrdersEntity>, ApiError> {
    let channel = app.channel(&share.channel_id)?;
    let sub = sub_at(app, merchant, &share.channel_id)?;
    let tx = channel_tx(app, share).await?;
    channel
        .query_share(&share.order_id, &tx, &sub)
        .await
        .map_err(|e| channel_error_to_api(&e))
}

/// The channel refused a share it never had: CLOSED, everything given back.
async fn refused(
    app: &AppState,
    share: &ShareOrderRecord,
    e: &ChannelError,
) -> Result<ShareOrderRecord, ApiError> {
    let answer = channel_error_to_api(e);
    let t = now();
    let mut change = ShareChange::to(share, ShareState::Closed, t);
    change.released_fen = share.amount_fen * i64::from(share.kind == ShareKind::Split);
    change.refreeze = share.unfreezes();
    change.error_code = Some(answer.code.as_str().to_string());
    change.error_message = Some(answer.message.clone());
    change.finished_at = Some(t);
    if app
        .store
        .apply_share_change(&change)
        .await
        .map_err(store_err)?
    {
        tracing::info!(order_id = %share.order_id, code = ?e.code(), "share refused by the channel: closed");
        return Err(answer);
    }
    let current = reread(app, &share.order_id).await?;
    if never_accepted(&current) || current.state == ShareState::Created {
        return Err(answer);
    }
    Ok(current)
}

async fn reread(app: &AppState, order_id: &str) -> Result<ShareOrderRecord, ApiError> {
    app.store
        .get_share_by_id(order_id)
        .await
        .map_err(store_err)?
        .ok_or_else(share_not_found)
}

// ---- applying what the channel says ----

/// What the channel's word does to a share order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Stay,
    Move {
        state: ShareState,
        lines: Vec<ShareLine>,
        /// Lines that went from PENDING to CLOSED: their amount back.
        released_fen: i64,
    },
    Contradiction,
}

/// The share state machine, pure: the channel's order `entity` (its lines matched to ours by
/// type and account) against `share`. Lines move PENDING → SUCCESS | CLOSED only; a final
/// order never moves.
pub fn step(share: &ShareOrderRecord, entity: &OrdersEntity, at_ms: i64) -> Step {
    let reported = match entity.state {
        WireOrderState::Processing => ShareState::Processing,
        WireOrderState::Finished => ShareState::Finished,
    };
    if share.state.is_final() {
        return if share.state == reported {
            Step::Stay
        } else {
            Step::Contradiction
        };
    }
    let mut lines = share.receivers.clone();
    let mut released_fen = 0;
    let mut changed = false;
    for line in lines.iter_mut().filter(|l| l.sent) {
        // An unfreeze's one line is the channel's one line (its own account and amount).
        let theirs = if share.kind == ShareKind::Unfreeze {
            entity.receivers.first()
        } else {
            entity
                .receivers
                .iter()
                .find(|r| wire(&r.r#type) == line.r#type && r.account == line.account)
        };
        let Some(theirs) = theirs else { continue };
        let result = wire(&theirs.result);
        if line.result != "PENDING" || theirs.result == DetailResult::Pending {
            continue;
        }
        changed = true;
        if theirs.result == DetailResult::Closed {
            released_fen += line.amount_fen;
            line.fail_reason = theirs.fail_reason.as_ref().map(wire);
        }
        line.result = result;
        line.finish_time_ms = Some(at_ms);
    }
    if reported == ShareState::Finished {
        // A finished order has no pending line left, whatever the answer listed.
        for line in lines.iter_mut().filter(|l| l.result == "PENDING") {
            line.result = "SUCCESS".into();
            line.finish_time_ms = Some(at_ms);
            changed = true;
        }
    }
    if !changed && reported == share.state {
        return Step::Stay;
    }
    Step::Move {
        state: reported,
        lines,
        released_fen,
    }
}

/// Applies what the channel says through [`step`] and the store's compare-and-set.
pub async fn apply_channel_share(
    app: &AppState,
    order_id: &str,
    entity: &OrdersEntity,
    source: &str,
) -> Result<ShareOrderRecord, ApiError> {
    for _ in 0..CAS_RETRIES_MAX {
        let share = reread(app, order_id).await?;
        let t = now();
        let (state, lines, released_fen) = match step(&share, entity, ms(t)) {
            Step::Stay => return Ok(share),
            Step::Contradiction => {
                tracing::error!(
                    order_id,
                    state = share.state.as_str(),
                    source,
                    "the channel contradicts a final share state"
                );
                return Ok(share);
            }
            Step::Move {
                state,
                lines,
                released_fen,
            } => (state, lines, released_fen),
        };
        let change = change_to(app, &share, state, lines, released_fen, entity, t).await?;
        let notifies = !change.notifications.is_empty();
        if app
            .store
            .apply_share_change(&change)
            .await
            .map_err(store_err)?
        {
            tracing::info!(
                order_id,
                from = share.state.as_str(),
                to = state.as_str(),
                source,
                "share moved"
            );
            if notifies {
                app.outbox_wake.notify_one();
            }
            return reread(app, order_id).await;
        }
    }
    Err(ApiError::new(
        ErrorCode::SystemError,
        "share changed concurrently too often",
    ))
}

async fn change_to(
    app: &AppState,
    share: &ShareOrderRecord,
    state: ShareState,
    lines: Vec<ShareLine>,
    released_fen: i64,
    entity: &OrdersEntity,
    t: OffsetDateTime,
) -> Result<ShareChange, ApiError> {
    let mut change = ShareChange::to(share, state, t);
    change.channel_order_id = Some(entity.order_id.clone());
    change.released_fen = released_fen;
    if state == ShareState::Finished {
        change.finished_at = Some(t);
        change.ledger = posting(app, share, &lines, released_fen).await?;
    }
    let order = app
        .store
        .get_order_by_transaction_id(&share.transaction_id)
        .await
        .map_err(store_err)?;
    if let (Some(order), ShareKind::Split) = (&order, share.kind) {
        // The merchant hears of each line that ended (分账动账通知), once: with this change.
        change.notifications = lines
            .iter()
            .zip(&share.receivers)
            .filter(|(now, before)| now.sent && now.result != before.result)
            .map(|(line, _)| notification(share, order, line, t))
            .collect();
    }
    change.receivers = Some(lines);
    Ok(change)
}

/// The PROFITSHARING.* notification plaintext (the 分账动账通知 shape; the reference marks
/// these callbacks UNCONFIRMED).
#[derive(Serialize)]
struct ShareNotifyPayload<'a> {
    mchid: &'a str,
    transaction_id: &'a str,
    order_id: &'a str,
    out_order_no: &'a str,
    receiver: ShareNotifyReceiver<'a>,
    success_time: String,
}

#[derive(Serialize)]
struct ShareNotifyReceiver<'a> {
    r#type: &'a str,
    account: &'a str,
    amount: i64,
    description: &'a str,
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_reason: Option<&'a str>,
}

fn notification(
    share: &ShareOrderRecord,
    order: &OrderRecord,
    line: &ShareLine,
    t: OffsetDateTime,
) -> NotificationRecord {
    let payload = ShareNotifyPayload {
        mchid: &share.mchid,
        transaction_id: &share.transaction_id,
        order_id: &share.order_id,
        out_order_no: &share.out_order_no,
        receiver: ShareNotifyReceiver {
            r#type: &line.r#type,
            account: &line.account,
            amount: line.amount_fen,
            description: &line.description,
            result: &line.result,
            fail_reason: line.fail_reason.as_deref(),
        },
        success_time: rfc3339_beijing(t),
    };
    let event_type = if line.result == "SUCCESS" {
        "PROFITSHARING.SUCCESS"
    } else {
        "PROFITSHARING.CLOSED"
    };
    NotificationRecord {
        id: paygate_core::ids::row_id(),
        mchid: share.mchid.clone(),
        transaction_id: share.transaction_id.clone(),
        event_type: event_type.into(),
        url: order.notify_url.clone(),
        plaintext: serde_json::to_string(&payload).unwrap_or_default(),
        state: NotificationState::Pending,
        attempts: 0,
        next_attempt_at: t,
        lease_until: None,
        created_at: t,
        delivered_at: None,
        answer_serial: crate::flow::RequestSnapshot::answer_serial(order),
    }
}

/// A personal receiver's ledger key is a hash of the openid, never the openid (DESIGN rule 7).
fn receiver_key(r#type: &str, account: &str) -> String {
    if r#type == "MERCHANT_ID" {
        format!("mch:{account}")
    } else {
        format!(
            "oid:{}",
            paygate_wxpay::crypto::hash::sha256(account.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

fn ledger_err(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "a share posting could not be built");
    ApiError::new(ErrorCode::SystemError, "系统错误，请使用相同参数重试")
}

fn join(postings: Vec<Posting>) -> Option<Posting> {
    postings.into_iter().reduce(|mut a, b| {
        for account in b.accounts {
            if !a.accounts.iter().any(|x| x.id == account.id) {
                a.accounts.push(account);
            }
        }
        a.transfers.extend(b.transfers);
        a
    })
}

/// The ledger side of a finished share order: the lines that succeeded leave the merchant's
/// frozen funds for their receivers; an unfreeze (or a split with unfreeze_unsplit) moves what
/// is left frozen of this payment (its lines closed by this same change included) to the
/// merchant's pending balance. Only for payments the
/// ledger booked as frozen (paid with profit sharing after the ledger existed).
async fn posting(
    app: &AppState,
    share: &ShareOrderRecord,
    lines: &[ShareLine],
    released_fen: i64,
) -> Result<Option<Posting>, ApiError> {
    let Some(order) = app
        .store
        .get_order_by_transaction_id(&share.transaction_id)
        .await
        .map_err(store_err)?
    else {
        return Ok(None);
    };
    let booked = !app
        .store
        .ledger_transfers_by_reference(&share.transaction_id)
        .await
        .map_err(store_err)?
        .is_empty();
    if !booked {
        return Ok(None);
    }
    let currency = Currency::parse(&order.currency).map_err(ledger_err)?;
    let mut postings = Vec::new();
    if share.kind == ShareKind::Split {
        let keys: Vec<(String, Money)> = lines
            .iter()
            .filter(|l| l.sent && l.result == "SUCCESS")
            .map(|l| {
                (
                    receiver_key(&l.r#type, &l.account),
                    Money::new(l.amount_fen, currency),
                )
            })
            .collect();
        if !keys.is_empty() {
            let receivers: Vec<(&str, Money)> =
                keys.iter().map(|(k, m)| (k.as_str(), *m)).collect();
            postings.push(
                recipes::share_split(&recipes::ShareSplit {
                    mchid: &share.mchid,
                    out_order_no: &share.out_order_no,
                    receivers: &receivers,
                })
                .map_err(ledger_err)?,
            );
        }
    }
    if share.unfreezes() {
        let a = app
            .store
            .share_amounts(&share.transaction_id)
            .await
            .map_err(store_err)?
            .ok_or_else(order_not_found)?;
        // What is still frozen of this payment: its net less what receivers hold or returned
        // (refunds are taken from the merchant's balances, not from the frozen funds).
        let held = a.shared_fen - released_fen;
        let frozen = order.total_fen - order.pricing.fee_fen - held - a.released_fen;
        if frozen > 0 {
            postings.push(
                recipes::share_unfreeze(
                    &share.mchid,
                    &share.out_order_no,
                    Money::new(frozen, currency),
                )
                .map_err(ledger_err)?,
            );
        }
    }
    Ok(join(postings))
}

// ---- queries ----

/// `GET /v3/profitsharing/orders/{out_order_no}?transaction_id=`: an unfinished order is
/// settled with the channel first (best effort), so the answer is as fresh as WeChat's.
pub async fn query_share(
    app: &AppState,
    merchant: &MerchantRecord,
    out_order_no: &str,
    transaction_id: &str,
) -> Result<ShareOrderRecord, ApiError> {
    let share = app
        .store
        .get_share(&merchant.mchid, out_order_no)
        .await
        .map_err(store_err)?
        .filter(|s| s.transaction_id == transaction_id && !never_accepted(s))
        .ok_or_else(share_not_found)?;
    if share.state == ShareState::Processing {
        if let Ok(Some(entity)) = query_channel(app, merchant, &share).await {
            return apply_channel_share(app, &share.order_id, &entity, "query").await;
        }
    }
    Ok(share)
}

/// `GET …/transactions/{transaction_id}/amounts`: what is still to split (the fee never is).
pub async fn unsplit_amount(
    app: &AppState,
    merchant: &MerchantRecord,
    transaction_id: &str,
) -> Result<i64, ApiError> {
    let order = app
        .store
        .get_order_by_transaction_id(transaction_id)
        .await
        .map_err(store_err)?
        .filter(|o| o.mchid == merchant.mchid)
        .filter(|o| matches!(o.state, OrderState::Success | OrderState::Refund))
        .ok_or_else(order_not_found)?;
    if !order.profit_sharing {
        return Ok(0);
    }
    let a = app
        .store
        .share_amounts(transaction_id)
        .await
        .map_err(store_err)?
        .ok_or_else(order_not_found)?;
    Ok(a.unsplit_fen(order.pricing.fee_fen))
}

// ---- returns ----

/// `POST /v3/profitsharing/return-orders`: idempotent by `(mchid, out_return_no)`.
pub async fn create_return(
    app: &AppState,
    merchant: &MerchantRecord,
    req: &ReturnOrderRequest,
) -> Result<ShareReturnRecord, ApiError> {
    let share = match (&req.order_id, &req.out_order_no) {
        (Some(id), _) => app.store.get_share_by_id(id).await.map_err(store_err)?,
        (None, Some(no)) => app
            .store
            .get_share(&merchant.mchid, no)
            .await
            .map_err(store_err)?,
        (None, None) => None,
    }
    .filter(|s| s.mchid == merchant.mchid && s.kind == ShareKind::Split && !never_accepted(s))
    .ok_or_else(share_not_found)?;
    let order = app
        .store
        .get_order_by_transaction_id(&share.transaction_id)
        .await
        .map_err(store_err)?
        .ok_or_else(order_not_found)?;
    let _guard = app
        .order_lock(&order.mchid, &order.out_trade_no)
        .lock()
        .await;
    let fingerprint = format!("{}:{}:{}", share.order_id, req.return_mchid, req.amount);
    if let Some(existing) = app
        .store
        .get_share_return(&merchant.mchid, &req.out_return_no)
        .await
        .map_err(store_err)?
    {
        return return_again(app, merchant, existing, &fingerprint).await;
    }
    let t = now();
    let record = ShareReturnRecord {
        return_id: paygate_core::ids::profit_sharing_id("3008", t),
        mchid: merchant.mchid.clone(),
        out_return_no: req.out_return_no.clone(),
        share_order_id: share.order_id.clone(),
        out_order_no: share.out_order_no.clone(),
        transaction_id: share.transaction_id.clone(),
        channel_id: share.channel_id.clone(),
        return_mchid: req.return_mchid.clone(),
        amount_fen: req.amount,
        description: req.description.clone(),
        state: ReturnState::Created,
        fail_reason: None,
        channel_return_id: None,
        error_code: None,
        error_message: None,
        fingerprint: fingerprint.clone(),
        created_at: t,
        updated_at: t,
        finished_at: None,
        last_polled_at: None,
        version: 0,
    };
    match app
        .store
        .create_share_return(&record)
        .await
        .map_err(store_err)?
    {
        CreateShareReturn::Created => send_return_new(app, merchant, record).await,
        CreateShareReturn::Exists(existing) => {
            return_again(app, merchant, *existing, &fingerprint).await
        }
        CreateShareReturn::NotEnough { returnable_fen } => Err(ApiError::new(
            ErrorCode::NotEnough,
            format!("回退金额超过可回退金额，当前可回退 {returnable_fen} 分"),
        )),
        CreateShareReturn::NotReceiver => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "回退商户号不是该分账单的成功接收方",
        )),
    }
}

fn return_never_accepted(r: &ShareReturnRecord) -> bool {
    r.state == ReturnState::Failed && r.error_code.is_some()
}

async fn return_again(
    app: &AppState,
    merchant: &MerchantRecord,
    existing: ShareReturnRecord,
    fingerprint: &str,
) -> Result<ShareReturnRecord, ApiError> {
    if existing.fingerprint != fingerprint {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "商户回退单号重复，且与本次请求参数不一致",
        ));
    }
    if return_never_accepted(&existing) {
        return Err(stored_refusal(
            existing.error_code.as_deref(),
            existing.error_message.as_deref(),
        ));
    }
    if existing.state == ReturnState::Created {
        return settle_return(app, merchant, &existing).await;
    }
    Ok(existing)
}

fn return_call(r: &ShareReturnRecord, sub: SubMerchant) -> ChannelShareReturn {
    ChannelShareReturn {
        out_return_no: r.return_id.clone(),
        out_order_no: r.share_order_id.clone(),
        return_mchid: r.return_mchid.clone(),
        amount_fen: r.amount_fen,
        description: r.description.clone(),
        sub,
    }
}

async fn send_return_new(
    app: &AppState,
    merchant: &MerchantRecord,
    r: ShareReturnRecord,
) -> Result<ShareReturnRecord, ApiError> {
    match send_return(app, merchant, &r).await? {
        Some(done) => Ok(done),
        None => settle_return(app, merchant, &r).await,
    }
}

async fn send_return(
    app: &AppState,
    merchant: &MerchantRecord,
    r: &ShareReturnRecord,
) -> Result<Option<ShareReturnRecord>, ApiError> {
    let channel = app.channel(&r.channel_id)?;
    let sub = sub_at(app, merchant, &r.channel_id)?;
    match channel.share_return(&return_call(r, sub)).await {
        Ok(entity) => apply_channel_return(app, &r.return_id, &entity, "create")
            .await
            .map(Some),
        Err(e) if e.is_unknown() => {
            tracing::warn!(return_id = %r.return_id, error = %e, "return outcome unknown");
            Ok(None)
        }
        Err(e) if e.action() == ErrorAction::Stop => {
            let answer = channel_error_to_api(&e);
            let t = now();
            let mut change =
                ShareReturnChange::to(&r.return_id, ReturnState::Created, ReturnState::Failed, t);
            change.error_code = Some(answer.code.as_str().to_string());
            change.error_message = Some(answer.message.clone());
            change.finished_at = Some(t);
            if app
                .store
                .apply_share_return_change(&change)
                .await
                .map_err(store_err)?
            {
                return Err(answer);
            }
            let current = reread_return(app, &r.return_id).await?;
            if return_never_accepted(&current) || current.state == ReturnState::Created {
                return Err(answer);
            }
            Ok(Some(current))
        }
        Err(e) => Err(channel_error_to_api(&e)),
    }
}

async fn settle_return(
    app: &AppState,
    merchant: &MerchantRecord,
    r: &ShareReturnRecord,
) -> Result<ShareReturnRecord, ApiError> {
    let channel = app.channel(&r.channel_id)?;
    let sub = sub_at(app, merchant, &r.channel_id)?;
    match channel
        .query_share_return(&r.return_id, &r.share_order_id, &sub)
        .await
    {
        Ok(Some(entity)) => apply_channel_return(app, &r.return_id, &entity, "query").await,
        Ok(None) if r.state == ReturnState::Created => match send_return(app, merchant, r).await? {
            Some(done) => Ok(done),
            None => Err(ApiError::new(
                ErrorCode::SystemError,
                "渠道处理超时，请使用相同参数重试",
            )),
        },
        Ok(None) => Ok(r.clone()),
        Err(e) => Err(channel_error_to_api(&e)),
    }
}

async fn reread_return(app: &AppState, return_id: &str) -> Result<ShareReturnRecord, ApiError> {
    app.store
        .get_share_return_by_id(return_id)
        .await
        .map_err(store_err)?
        .ok_or_else(return_not_found)
}

/// The return state machine, pure: forward only, SUCCESS and FAILED final.
pub fn return_step(current: ReturnState, reported: ReturnResult) -> Option<ReturnState> {
    let next = match reported {
        ReturnResult::Processing => ReturnState::Processing,
        ReturnResult::Success => ReturnState::Success,
        ReturnResult::Failed => ReturnState::Failed,
    };
    current.may_become(next).then_some(next)
}

pub async fn apply_channel_return(
    app: &AppState,
    return_id: &str,
    entity: &ReturnOrdersEntity,
    source: &str,
) -> Result<ShareReturnRecord, ApiError> {
    for _ in 0..CAS_RETRIES_MAX {
        let r = reread_return(app, return_id).await?;
        let Some(next) = return_step(r.state, entity.result) else {
            if r.state.is_final() && wire(&entity.result) != r.state.as_str() {
                tracing::error!(
                    return_id,
                    source,
                    "the channel contradicts a final return state"
                );
            }
            return Ok(r);
        };
        let t = now();
        let mut change = ShareReturnChange::to(return_id, r.state, next, t);
        change.channel_return_id = Some(entity.return_id.clone());
        change.fail_reason = entity.fail_reason.as_ref().map(wire);
        if next.is_final() {
            change.finished_at = Some(t);
        }
        if next == ReturnState::Success {
            change.ledger = return_posting(app, &r).await?;
        }
        if app
            .store
            .apply_share_return_change(&change)
            .await
            .map_err(store_err)?
        {
            tracing::info!(
                return_id,
                from = r.state.as_str(),
                to = next.as_str(),
                source,
                "return moved"
            );
            return reread_return(app, return_id).await;
        }
    }
    Err(ApiError::new(
        ErrorCode::SystemError,
        "return changed concurrently too often",
    ))
}

async fn return_posting(
    app: &AppState,
    r: &ShareReturnRecord,
) -> Result<Option<Posting>, ApiError> {
    let booked = !app
        .store
        .ledger_transfers_by_reference(&r.transaction_id)
        .await
        .map_err(store_err)?
        .is_empty();
    let Some(order) = app
        .store
        .get_order_by_transaction_id(&r.transaction_id)
        .await
        .map_err(store_err)?
        .filter(|_| booked)
    else {
        return Ok(None);
    };
    let currency = Currency::parse(&order.currency).map_err(ledger_err)?;
    recipes::share_return(
        &r.mchid,
        &r.out_return_no,
        &receiver_key("MERCHANT_ID", &r.return_mchid),
        Money::new(r.amount_fen, currency),
    )
    .map(Some)
    .map_err(ledger_err)
}

/// `GET /v3/profitsharing/return-orders/{out_return_no}?out_order_no=`.
pub async fn query_return(
    app: &AppState,
    merchant: &MerchantRecord,
    out_return_no: &str,
    out_order_no: &str,
) -> Result<ShareReturnRecord, ApiError> {
    let r = app
        .store
        .get_share_return(&merchant.mchid, out_return_no)
        .await
        .map_err(store_err)?
        .filter(|r| r.out_order_no == out_order_no && !return_never_accepted(r))
        .ok_or_else(return_not_found)?;
    if r.state == ReturnState::Processing {
        if let Ok(done) = settle_return(app, merchant, &r).await {
            return Ok(done);
        }
    }
    Ok(r)
}

// ---- the poller ----

/// One round over unsettled share orders and returns; returns how many it looked at.
pub async fn poll_once(app: &AppState) -> Result<usize, StoreError> {
    let t = now();
    let min_age = app.scaled(Duration::from_millis(app.config.workers.poll_min_age_ms));
    let polled_before = t - time::Duration::try_from(min_age).unwrap_or(time::Duration::ZERO);
    let shares = app
        .store
        .shares_to_poll(polled_before, POLL_BATCH_MAX)
        .await?;
    for share in &shares {
        if let Err(e) = poll_share(app, share).await {
            tracing::info!(order_id = %share.order_id, error = %e.message, "share poll deferred");
        }
        app.store.mark_share_polled(&share.order_id, t).await?;
    }
    let returns = app
        .store
        .share_returns_to_poll(polled_before, POLL_BATCH_MAX)
        .await?;
    for r in &returns {
        let polled = async {
            let merchant = merchant_of(app, &r.mchid).await?;
            settle_return(app, &merchant, r).await
        };
        if let Err(e) = polled.await {
            tracing::info!(return_id = %r.return_id, error = %e.message, "return poll deferred");
        }
        app.store.mark_share_return_polled(&r.return_id, t).await?;
    }
    Ok(shares.len() + returns.len())
}

async fn poll_share(app: &AppState, share: &ShareOrderRecord) -> Result<(), ApiError> {
    let merchant = merchant_of(app, &share.mchid).await?;
    if share.state != ShareState::Created {
        if let Some(entity) = query_channel(app, &merchant, share).await? {
            apply_channel_share(app, &share.order_id, &entity, "poll").await?;
        }
        return Ok(());
    }
    // A CREATED order may be re-sent: under the order's lock, as a merchant's retry is.
    let order = app
        .store
        .get_order_by_transaction_id(&share.transaction_id)
        .await
        .map_err(store_err)?
        .ok_or_else(order_not_found)?;
    let _guard = app
        .order_lock(&order.mchid, &order.out_trade_no)
        .lock()
        .await;
    let current = reread(app, &share.order_id).await?;
    if current.state != ShareState::Created {
        return Ok(());
    }
    settle(app, &merchant, &current).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use paygate_wxpay::models::profitsharing::{DetailFailReason, OrderReceiverDetail};

    fn line(account: &str, amount_fen: i64, result: &str, sent: bool) -> ShareLine {
        ShareLine {
            r#type: "MERCHANT_ID".into(),
            account: account.into(),
            name: None,
            amount_fen,
            description: "d".into(),
            result: result.into(),
            fail_reason: None,
            detail_id: "3601".into(),
            create_time_ms: 1,
            finish_time_ms: None,
            sent,
        }
    }

    fn share(state: ShareState, lines: Vec<ShareLine>) -> ShareOrderRecord {
        ShareOrderRecord {
            order_id: "3008".into(),
            mchid: "1900000109".into(),
            out_order_no: "P1".into(),
            transaction_id: "42".into(),
            attempt_id: "att".into(),
            channel_id: "ch".into(),
            kind: ShareKind::Split,
            state,
            amount_fen: 30,
            unfreeze_unsplit: false,
            receivers: lines,
            description: None,
            fingerprint: "f".into(),
            channel_order_id: None,
            error_code: None,
            error_message: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            finished_at: None,
            last_polled_at: None,
            version: 0,
        }
    }

    fn entity(state: WireOrderState, results: &[(&str, DetailResult)]) -> OrdersEntity {
        OrdersEntity {
            sub_mchid: None,
            transaction_id: "4200".into(),
            out_order_no: "3008".into(),
            order_id: "3008ch".into(),
            state,
            receivers: results
                .iter()
                .map(|(account, result)| OrderReceiverDetail {
                    amount: 1,
                    description: "d".into(),
                    r#type: ReceiverType::MerchantId,
                    account: (*account).into(),
                    result: *result,
                    fail_reason: (*result == DetailResult::Closed)
                        .then_some(DetailFailReason::AccountAbnormal),
                    detail_id: "x".into(),
                    create_time: "2026-01-01T00:00:00+08:00".into(),
                    finish_time: None,
                })
                .collect(),
        }
    }

    #[test]
    fn lines_move_forward_and_closed_lines_give_their_amount_back() {
        let s = share(
            ShareState::Created,
            vec![
                line("A", 10, "PENDING", true),
                line("B", 20, "PENDING", true),
                line("C", 5, "CLOSED", false),
            ],
        );
        let e = entity(
            WireOrderState::Finished,
            &[("A", DetailResult::Success), ("B", DetailResult::Closed)],
        );
        let Step::Move {
            state,
            lines,
            released_fen,
        } = step(&s, &e, 99)
        else {
            panic!("moves");
        };
        assert_eq!(state, ShareState::Finished);
        assert_eq!(released_fen, 20);
        assert_eq!(lines[0].result, "SUCCESS");
        assert_eq!(lines[1].result, "CLOSED");
        assert_eq!(lines[1].fail_reason.as_deref(), Some("ACCOUNT_ABNORMAL"));
        assert_eq!(
            lines[2].result, "CLOSED",
            "a local line is the gateway's own"
        );
        // Once final, the same answer is nothing new and another is a contradiction.
        let done = share(ShareState::Finished, lines);
        assert_eq!(step(&done, &e, 100), Step::Stay);
        let back = entity(WireOrderState::Processing, &[("A", DetailResult::Pending)]);
        assert_eq!(step(&done, &back, 100), Step::Contradiction);
    }

    #[test]
    fn a_processing_answer_without_news_is_no_move() {
        let s = share(ShareState::Processing, vec![line("A", 10, "PENDING", true)]);
        let e = entity(WireOrderState::Processing, &[("A", DetailResult::Pending)]);
        assert_eq!(step(&s, &e, 1), Step::Stay);
        let created = share(ShareState::Created, vec![line("A", 10, "PENDING", true)]);
        assert!(matches!(
            step(&created, &e, 1),
            Step::Move {
                state: ShareState::Processing,
                released_fen: 0,
                ..
            }
        ));
    }

    #[test]
    fn returns_move_forward_only_and_personal_receivers_are_hashed() {
        use ReturnState as R;
        assert_eq!(
            return_step(R::Created, ReturnResult::Processing),
            Some(R::Processing)
        );
        assert_eq!(
            return_step(R::Processing, ReturnResult::Success),
            Some(R::Success)
        );
        assert_eq!(return_step(R::Success, ReturnResult::Failed), None);
        assert_eq!(return_step(R::Failed, ReturnResult::Success), None);
        assert_eq!(return_step(R::Processing, ReturnResult::Processing), None);
        assert_eq!(receiver_key("MERCHANT_ID", "1900000109"), "mch:1900000109");
        let k = receiver_key("PERSONAL_OPENID", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
        assert!(k.starts_with("oid:") && !k.contains("oUpF8"));
        assert_eq!(k.len(), 4 + 64);
    }
}
