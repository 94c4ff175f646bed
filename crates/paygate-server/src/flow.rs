//! The order flow: prepay (order and first attempt persisted before the channel is called,
//! the outcome persisted after), unknown outcomes resolved by asking the channel, channel
//! transactions applied through the state machine with the merchant's notification in the
//! same transaction, and expiry (closed at the channel first).

use paygate_channel::{
    ChannelError, ChannelPrepay, CloseOutcome, ErrorAction, PrepayCredential, SubMerchant,
};
use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::timefmt::{parse_rfc3339, rfc3339_beijing};
use paygate_store::{
    AttemptChange, AttemptRecord, AttemptState, CreateOrder, MerchantRecord, NotificationRecord,
    NotificationState, OrderChange, OrderRecord, OrderState, RepairRecord,
};
use paygate_wxpay::models::payments::{
    CodeUrlResponse, H5UrlResponse, PrepayIdResponse, PrepayRequest, TradeState, TradeType,
    Transaction,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::http::AppState;

/// How many times one request re-tries the same attempt after an unknown outcome, when no
/// other channel can take the order.
const UNKNOWN_RETRIES_MAX: u32 = 1;
/// A CAS that lost a race is re-read and re-decided this many times at most.
const CAS_RETRIES_MAX: u32 = 5;

/// What the merchant asked for, kept with the order (a request snapshot).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestSnapshot {
    pub body: PrepayRequest,
    /// The platform key the merchant asked for, which its notifications are signed with.
    pub wechatpay_serial: Option<String>,
}

impl RequestSnapshot {
    pub fn of(order: &OrderRecord) -> Result<Self, ApiError> {
        serde_json::from_str(&order.request_json).map_err(|e| {
            ApiError::new(
                ErrorCode::SystemError,
                format!("order snapshot unreadable: {e}"),
            )
        })
    }

    /// The order's notifications are signed with the platform key its prepay asked for: kept
    /// on each notification row (`""`: none asked), so the outbox need not read the order.
    /// `None` if the snapshot cannot be read; the outbox then reads the order itself.
    pub fn answer_serial(order: &OrderRecord) -> Option<String> {
        Self::of(order)
            .ok()
            .map(|s| s.wechatpay_serial.unwrap_or_default())
    }
}

fn store_err(e: paygate_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store error");
    ApiError::new(ErrorCode::SystemError, "系统错误，请使用相同参数重试")
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn sub_of(merchant: &MerchantRecord) -> SubMerchant {
    SubMerchant {
        sub_mchid: merchant.channel_sub_mchid.clone(),
        sub_appid: merchant.channel_sub_appid.clone(),
    }
}

/// How long the handed-out credential works (§4.1).
fn credential_ttl(trade: TradeType) -> Duration {
    if trade == TradeType::Mweb {
        Duration::minutes(5)
    } else {
        Duration::hours(2)
    }
}

/// The merchant's answer to a channel failure: never a 200.
pub fn channel_error_to_api(e: &ChannelError) -> ApiError {
    match e {
        ChannelError::Unknown { reason } => {
            tracing::warn!(%reason, "channel outcome unknown");
            ApiError::new(ErrorCode::SystemError, "渠道处理超时，请使用相同参数重试")
        }
        ChannelError::Rejected {
            status,
            code,
            message,
        } => match ErrorCode::parse(code) {
            Some(ErrorCode::FrequencyLimited) => ApiError::new(
                ErrorCode::FrequencyLimited,
                "渠道繁忙，请稍后使用相同参数重试",
            ),
            // The gateway's own channel configuration is at fault, not the merchant.
            Some(
                ErrorCode::SignError | ErrorCode::MchNotExists | ErrorCode::AppidMchidNotMatch,
            )
            | None => {
                tracing::error!(%status, %code, %message, "channel refused the gateway's request");
                ApiError::new(ErrorCode::SystemError, "渠道配置错误，请联系服务商")
            }
            Some(code) if *status >= 500 => ApiError::new(code, format!("渠道错误：{message}")),
            Some(code) => ApiError::new(code, format!("渠道拒绝：{message}")).with_status(*status),
        },
    }
}

fn channel_prepay(
    order: &OrderRecord,
    attempt: &AttemptRecord,
    sub: SubMerchant,
    trade: TradeType,
) -> Result<ChannelPrepay, ApiError> {
    let body = RequestSnapshot::of(order)?.body;
    Ok(ChannelPrepay {
        trade_type: trade,
        out_trade_no: attempt.attempt_id.clone(),
        description: body.description,
        attach: body.attach,
        total_fen: order.total_fen,
        currency: order.currency.clone(),
        // The stored expiry, so a re-prepay sends identical parameters (§4.6).
        time_expire: Some(rfc3339_beijing(order.time_expire)),
        payer_openid: body.payer.map(|p| p.openid),
        scene_info: body.scene_info,
        goods_tag: body.goods_tag,
        detail: body.detail,
        profit_sharing: body
            .settle_info
            .and_then(|s| s.profit_sharing)
            .unwrap_or(false),
        sub,
    })
}

/// The answer a merchant gets for a live attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    PrepayId(String),
    CodeUrl(String),
    H5Url(String),
}

impl Credential {
    /// The V3 answer's body: `{"prepay_id"}`, `{"code_url"}` or `{"h5_url"}`.
    pub fn answer_body(&self) -> Result<Vec<u8>, ApiError> {
        let body = match self {
            Credential::PrepayId(p) => serde_json::to_vec(&PrepayIdResponse {
                prepay_id: p.clone(),
            }),
            Credential::CodeUrl(c) => serde_json::to_vec(&CodeUrlResponse {
                code_url: c.clone(),
            }),
            Credential::H5Url(h) => serde_json::to_vec(&H5UrlResponse { h5_url: h.clone() }),
        };
        body.map_err(|e| ApiError::new(ErrorCode::SystemError, e.to_string()))
    }
}

/// A prepay's answer, and its signed headers when they were made while the PREPAID commit
/// waited for its fsync (see `presign`).
pub struct Prepaid {
    pub credential: Credential,
    pub presigned: Option<paygate_http::PreSigned>,
}

impl From<Credential> for Prepaid {
    fn from(credential: Credential) -> Self {
        Self {
            credential,
            presigned: None,
        }
    }
}

/// The merchant's answer signed ahead, with the key the HTTP layer will pick for this
/// request: the signature then overlaps the PREPAID commit instead of following it. `None`
/// if it cannot be made; the layer signs as usual then (and also whenever its key or the
/// bytes it sends differ).
fn presign(
    app: &AppState,
    answer_serial: Option<&str>,
    credential: &Credential,
) -> Option<paygate_http::PreSigned> {
    let body = credential.answer_body().ok()?;
    let keys = app.keys.current();
    let (key, serial) = keys.answer_key(answer_serial);
    paygate_http::PreSigned::new(key, serial, body.into()).ok()
}

fn credential_of(attempt: &AttemptRecord) -> Option<Credential> {
    if let Some(p) = &attempt.prepay_id {
        return Some(Credential::PrepayId(p.clone()));
    }
    if let Some(c) = &attempt.code_url {
        return Some(Credential::CodeUrl(c.clone()));
    }
    attempt.h5_url.clone().map(Credential::H5Url)
}

pub struct PrepayCall {
    pub merchant: MerchantRecord,
    pub trade: TradeType,
    pub request: PrepayRequest,
    pub wechatpay_serial: Option<String>,
}

fn fingerprint(trade: TradeType, request: &PrepayRequest) -> String {
    // serde_json's map is ordered: equal parameters, equal strings, whatever the key order.
    let value = serde_json::to_value(request).unwrap_or_default();
    format!("{}:{value}", trade.as_str())
}

fn attempt_id(transaction_id: &str, seq: i32) -> String {
    // 28 + 2 digits: unique per attempt, within WeChat's 6–32 character out_trade_no.
    format!("{transaction_id}{seq:02}")
}

fn new_attempt(
    app: &AppState,
    order: &OrderRecord,
    seq: i32,
    channel_id: &str,
    decision: String,
    t: OffsetDateTime,
) -> AttemptRecord {
    AttemptRecord {
        attempt_id: attempt_id(&order.transaction_id, seq),
        transaction_id: order.transaction_id.clone(),
        seq,
        channel_id: channel_id.to_string(),
        state: AttemptState::Created,
        prepay_id: None,
        code_url: None,
        h5_url: None,
        prepay_expires_at: None,
        channel_transaction_id: None,
        error_code: None,
        error_message: None,
        decision: Some(decision),
        created_at: t,
        updated_at: t,
        last_polled_at: None,
        next_poll_at: Some(crate::workers::first_poll_at(app, t)),
    }
}

/// The merchant's sub-merchant at the attempt's channel.
pub fn sub_at(
    app: &AppState,
    merchant: &MerchantRecord,
    channel_id: &str,
) -> Result<SubMerchant, ApiError> {
    app.routing.sub_for(merchant, channel_id).ok_or_else(|| {
        tracing::error!(mchid = %merchant.mchid, channel = channel_id, "merchant has no mapping at the channel");
        ApiError::new(ErrorCode::SystemError, "渠道配置错误，请联系服务商")
    })
}

fn no_route(mchid: &str, e: &paygate_routing::NoRoute) -> ApiError {
    tracing::warn!(mchid, reason = %e.reason, "no channel can take the prepay");
    ApiError::new(
        ErrorCode::SystemError,
        "暂无可用的支付渠道，请稍后使用相同参数重试",
    )
}

/// A new attempt on the channel the router picks.
fn routed_attempt(
    app: &AppState,
    merchant: &MerchantRecord,
    order: &OrderRecord,
    seq: i32,
    tried: u64,
    why_prefix: &str,
) -> Result<AttemptRecord, ApiError> {
    let trade = trade_of(order)?;
    let decision = app
        .routing
        .decide(merchant, trade, order.total_fen, tried)
        .map_err(|e| no_route(&merchant.mchid, &e))?;
    let channel_id = app.routing.router.channel_id(decision.channel);
    Ok(new_attempt(
        app,
        order,
        seq,
        channel_id,
        format!("{why_prefix}{}", decision.reason),
        now(),
    ))
}

fn trade_of(order: &OrderRecord) -> Result<TradeType, ApiError> {
    crate::views::trade_type(&order.trade_type)
        .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "order has an unknown trade type"))
}

/// §4.1/§4.6: prepay, idempotent by `(mchid, out_trade_no)`.
pub async fn prepay(app: &AppState, call: PrepayCall) -> Result<Prepaid, ApiError> {
    let started = std::time::Instant::now();
    let mchid = call.merchant.mchid.clone();
    let out_trade_no = call.request.out_trade_no.clone();
    // Concurrent calls on one order serialize (on this node; across nodes the store's
    // unique key and compare-and-set keep them safe).
    let _guard = app.order_lock(&mchid, &out_trade_no).lock().await;
    let fingerprint = fingerprint(call.trade, &call.request);
    if let Some(existing) = app
        .store
        .get_order(&mchid, &out_trade_no)
        .await
        .map_err(store_err)?
    {
        return prepay_existing(app, &call, existing, &fingerprint, started).await;
    }
    // Risk control decides on a new order, before anything reaches a channel (a blocked
    // payment answers 403 RULE_LIMIT here); re-submissions were decided when created.
    let decision =
        crate::risk::assess_prepay(app, &call.merchant, call.trade, &call.request).await?;
    let t = now();
    let time_expire = match call.request.time_expire_at()? {
        // §8: less than a minute away is moved to now + 1 min; default validity 7 days.
        Some(at) if at < t + Duration::minutes(1) => t + Duration::minutes(1),
        Some(at) => at,
        None => t + Duration::days(7),
    };
    let snapshot = RequestSnapshot {
        body: call.request.clone(),
        wechatpay_serial: call.wechatpay_serial.clone(),
    };
    let mut order = OrderRecord {
        transaction_id: paygate_core::ids::transaction_id(t),
        mchid: mchid.clone(),
        out_trade_no: out_trade_no.clone(),
        appid: call.request.appid.clone(),
        trade_type: call.trade.as_str().to_string(),
        state: OrderState::Notpay,
        description: call.request.description.clone(),
        attach: call.request.attach.clone(),
        notify_url: call.request.notify_url.clone(),
        total_fen: call.request.amount.total,
        currency: call.request.amount.currency_or_cny().to_string(),
        payer_openid: call.request.payer.as_ref().map(|p| p.openid.clone()),
        time_expire,
        fingerprint,
        request_json: serde_json::to_string(&snapshot)
            .map_err(|e| ApiError::new(ErrorCode::SystemError, e.to_string()))?,
        created_at: t,
        updated_at: t,
        success_time: None,
        bank_type: None,
        version: 0,
        pricing: Default::default(),
        profit_sharing: call
            .request
            .settle_info
            .as_ref()
            .and_then(|s| s.profit_sharing)
            .unwrap_or(false),
    };
    let attempt = routed_attempt(app, &call.merchant, &order, 1, 0, "")?;
    // The fee terms are fixed now, on the channel first chosen (issue 4 §5).
    order.pricing =
        crate::fees::pricing(&app.config, &mchid, &attempt.channel_id, order.total_fen)?;
    // The decision that admitted the order is kept in the order's own transaction.
    let risk_record = decision.as_ref().and_then(|d| {
        crate::risk::record(
            &call.merchant,
            &out_trade_no,
            Some(order.transaction_id.clone()),
            d,
        )
    });
    // The channel request is signed while the order's commit waits for its fsync (the
    // signature is the costly part of the call); it is sent only once the order is durable.
    // A signing failure is met again, and recorded, when the call is made the usual way.
    let (created, signed) = tokio::join!(
        app.store
            .create_order_with_risk(&order, &attempt, risk_record.as_ref()),
        async {
            sign_prepay(app, &call.merchant, &order, &attempt, call.trade)
                .ok()
                .and_then(Result::ok)
        }
    );
    match created.map_err(store_err)? {
        CreateOrder::Created => {
            let serial = call.wechatpay_serial.as_deref();
            drive(
                app,
                &call.merchant,
                &order,
                attempt,
                signed,
                serial,
                started,
            )
            .await
        }
        CreateOrder::Exists(existing) => {
            prepay_existing(app, &call, existing, &order.fingerprint, started).await
        }
    }
}

async fn prepay_existing(
    app: &AppState,
    call: &PrepayCall,
    order: OrderRecord,
    fingerprint: &str,
    started: std::time::Instant,
) -> Result<Prepaid, ApiError> {
    let merchant = &call.merchant;
    let serial = call.wechatpay_serial.as_deref();
    if order.fingerprint != fingerprint {
        return Err(ApiError::new(
            ErrorCode::OutTradeNoUsed,
            "201 商户订单号重复",
        ));
    }
    match order.state {
        OrderState::Success | OrderState::Refund => {
            return Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付"));
        }
        OrderState::Closed => return Err(ApiError::new(ErrorCode::OrderClosed, "该订单已失效")),
        OrderState::Notpay | OrderState::Payerror => {}
    }
    if now() >= order.time_expire {
        return Err(ApiError::new(ErrorCode::OrderClosed, "该订单已失效"));
    }
    let attempts = app
        .store
        .attempts(&order.transaction_id)
        .await
        .map_err(store_err)?;
    let Some(latest) = attempts.last().cloned() else {
        return Err(ApiError::new(
            ErrorCode::SystemError,
            "order without attempts",
        ));
    };
    match latest.state {
        AttemptState::Prepaid if latest.prepay_expires_at.is_some_and(|exp| now() < exp) => {
            credential_of(&latest).map(Prepaid::from).ok_or_else(|| {
                ApiError::new(ErrorCode::SystemError, "prepaid attempt without credential")
            })
        }
        // Expired credential, or an outcome never learnt: the same attempt again, with the
        // same parameters, which the channel answers idempotently (§4.6).
        AttemptState::Prepaid | AttemptState::Created | AttemptState::Unknown => {
            drive(app, merchant, &order, latest, None, serial, started).await
        }
        // Every earlier attempt is FAILED (nothing at its channel) or CLOSED there: a new
        // attempt cannot make a second collectable order.
        AttemptState::Failed | AttemptState::Closed => {
            let attempt = routed_attempt(app, merchant, &order, latest.seq + 1, 0, "retry: ")?;
            app.store
                .insert_attempt(&attempt)
                .await
                .map_err(store_err)?;
            drive(app, merchant, &order, attempt, None, serial, started).await
        }
        AttemptState::Paid => Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付")),
    }
}

/// Runs `attempt`, and on a retryable failure fails over to the next channel the router
/// picks, as a NEW attempt, within the request's deadline and channel budget.
///
/// The invariant that keeps a payer from paying twice: a new attempt is created only once the
/// previous one is recorded FAILED (a definite refusal: no order at its channel) or CLOSED at
/// its channel. Anything else, an unknown outcome above all, is settled first (query, then
/// close if unpaid); if it cannot be settled, there is no failover: SYSTEM_ERROR, and the
/// poller or the merchant's retry resolves it.
async fn drive(
    app: &AppState,
    merchant: &MerchantRecord,
    order: &OrderRecord,
    first: AttemptRecord,
    mut signed: Option<paygate_channel::SignedPrepay>,
    answer_serial: Option<&str>,
    started: std::time::Instant,
) -> Result<Prepaid, ApiError> {
    let bounds = app.routing.bounds.clone();
    let deadline = started + bounds.deadline;
    let trade = trade_of(order)?;
    let mut attempt = first;
    let mut tried = app.routing.bit(&attempt.channel_id);
    let mut channels_used = 1;
    let mut same_attempt_retries = 0;
    loop {
        let call = call_channel(
            app,
            merchant,
            order,
            &attempt,
            trade,
            signed.take(),
            Answering {
                deadline,
                answer_serial,
            },
        );
        let error = match call.await? {
            Ok(prepaid) => return Ok(prepaid),
            Err(e) => e,
        };
        let closed_there = closed_at_channel(&error);
        // The request itself was refused: another channel would refuse it too.
        if error.action() == ErrorAction::Stop && !closed_there {
            return Err(channel_error_to_api(&error));
        }
        let in_time = std::time::Instant::now() < deadline;
        let may_retry = channels_used < bounds.channels_max && in_time;
        let mut next = if may_retry {
            app.routing
                .decide(merchant, trade, order.total_fen, tried)
                .ok()
        } else {
            None
        };
        if next.is_none() && closed_there && may_retry {
            // Its channel order is closed, so even the same channel is safe for a new one.
            next = app.routing.decide(merchant, trade, order.total_fen, 0).ok();
        }
        let Some(next) = next else {
            // Nowhere else to go. An unknown outcome may still be settled here: the same
            // attempt again is safe, WeChat answers identical parameters with the same order.
            if error.is_unknown() && in_time && same_attempt_retries < UNKNOWN_RETRIES_MAX {
                same_attempt_retries += 1;
                if let Some(answer) = learn_final_state(app, merchant, &attempt, deadline).await? {
                    return Err(answer);
                }
                continue;
            }
            return Err(channel_error_to_api(&error));
        };
        // Only a recorded FAILED or CLOSED lets the order move on; anything else (an unknown
        // outcome, or a refused refresh of an attempt the channel still holds) is settled first.
        if recorded(app, &attempt).await? != Settled::Gone {
            match settle(app, merchant, &attempt, deadline, bounds.settle_calls_max).await? {
                Settled::Gone => {}
                Settled::Paid => return Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付")),
                Settled::Open => {
                    tracing::warn!(attempt = %attempt.attempt_id, channel = %attempt.channel_id, "abandoned attempt could not be closed: no failover");
                    return Err(channel_error_to_api(&error));
                }
            }
        }
        let channel_id = app.routing.router.channel_id(next.channel).to_string();
        let why = format!(
            "failover from {} ({}): {}",
            attempt.channel_id,
            error.code().unwrap_or("UNKNOWN"),
            next.reason
        );
        let fresh = new_attempt(app, order, attempt.seq + 1, &channel_id, why, now());
        app.store.insert_attempt(&fresh).await.map_err(store_err)?;
        tracing::info!(transaction_id = %order.transaction_id, from = %attempt.channel_id, to = %channel_id, seq = fresh.seq, "failover");
        tried |= 1u64 << next.channel;
        channels_used += 1;
        attempt = fresh;
    }
}

/// The merchant call a channel call answers: when it must be done by, and the platform key
/// (by serial) its answer is signed with.
#[derive(Clone, Copy)]
struct Answering<'a> {
    deadline: std::time::Instant,
    answer_serial: Option<&'a str>,
}

/// One prepay call for `attempt`: the outcome is persisted on the attempt and fed to the
/// router. `Err` only for the gateway's own failures (store, configuration).
async fn call_channel(
    app: &AppState,
    merchant: &MerchantRecord,
    order: &OrderRecord,
    attempt: &AttemptRecord,
    trade: TradeType,
    signed: Option<paygate_channel::SignedPrepay>,
    answering: Answering<'_>,
) -> Result<Result<Prepaid, ChannelError>, ApiError> {
    let Answering {
        deadline,
        answer_serial,
    } = answering;
    let channel = app.channel(&attempt.channel_id)?;
    let signed = match signed {
        Some(signed) => Ok(signed),
        None => sign_prepay(app, merchant, order, attempt, trade)?,
    };
    let called = std::time::Instant::now();
    let result = match signed {
        Ok(signed) => within(deadline, channel.send_prepay(signed)).await,
        Err(e) => Err(e),
    };
    let latency_ms = u32::try_from(called.elapsed().as_millis()).unwrap_or(u32::MAX);
    if let Some(outcome) = outcome_of(&result, latency_ms) {
        app.routing.record(&attempt.channel_id, trade, outcome);
    }
    let t = now();
    match result {
        Ok(credential) => {
            let open = [
                AttemptState::Created,
                AttemptState::Unknown,
                AttemptState::Prepaid,
            ];
            let mut change =
                AttemptChange::to(&attempt.attempt_id, &open, AttemptState::Prepaid, t);
            change.prepay_expires_at = Some((t + credential_ttl(trade)).min(order.time_expire));
            let answer = match credential {
                PrepayCredential::PrepayId(p) => {
                    change.prepay_id = Some(p.clone());
                    Credential::PrepayId(p)
                }
                PrepayCredential::CodeUrl(c) => {
                    change.code_url = Some(c.clone());
                    Credential::CodeUrl(c)
                }
                PrepayCredential::H5Url(h) => {
                    change.h5_url = Some(h.clone());
                    Credential::H5Url(h)
                }
            };
            // The answer is signed while the credential is written; it is handed out once
            // the write committed, without waiting for the disk: a credential lost to a power
            // cut leaves the attempt open, and the merchant's retry asks the channel again
            // for the same order (Store::update_attempt_unsynced). The order itself was
            // durable before the channel heard of it.
            let (updated, presigned) =
                tokio::join!(app.store.update_attempt_unsynced(&change), async {
                    presign(app, answer_serial, &answer)
                });
            if !updated.map_err(store_err)? {
                // Settled or paid meanwhile (a poller elsewhere): never hand out its credential.
                return Err(ApiError::new(
                    ErrorCode::SystemError,
                    "系统错误，请使用相同参数重试",
                ));
            }
            app.routing.add_volume(&attempt.channel_id, order.total_fen);
            Ok(Ok(Prepaid {
                credential: answer,
                presigned,
            }))
        }
        Err(e) => {
            let state = match &e {
                ChannelError::Unknown { .. } => AttemptState::Unknown,
                // A close whose answer was lost did close it: the channel says so now.
                _ if closed_at_channel(&e) => AttemptState::Closed,
                ChannelError::Rejected { .. } => AttemptState::Failed,
            };
            let mut change = AttemptChange::to(
                &attempt.attempt_id,
                &[AttemptState::Created, AttemptState::Unknown],
                state,
                t,
            );
            change.error_code = e
                .code()
                .map(str::to_string)
                .or_else(|| Some("UNKNOWN".into()));
            change.error_message = Some(e.to_string());
            app.store.update_attempt(&change).await.map_err(store_err)?;
            Ok(Err(e))
        }
    }
}

/// The attempt's prepay request to its channel, signed (not sent). `Err` for the gateway's
/// own failures (configuration); a request the channel cannot build or sign is a channel
/// error, recorded on the attempt like any other.
fn sign_prepay(
    app: &AppState,
    merchant: &MerchantRecord,
    order: &OrderRecord,
    attempt: &AttemptRecord,
    trade: TradeType,
) -> Result<Result<paygate_channel::SignedPrepay, ChannelError>, ApiError> {
    let channel = app.channel(&attempt.channel_id)?;
    let sub = sub_at(app, merchant, &attempt.channel_id)?;
    let request = channel_prepay(order, attempt, sub, trade)?;
    Ok(channel.sign_prepay(&request))
}

/// Why a channel call was cut off: the request's deadline, not the channel's timeout.
const DEADLINE_REASON: &str = "the prepay's deadline passed during the call";

/// A channel call cut off at the request's deadline; its outcome is then unknown.
async fn within<T>(
    deadline: std::time::Instant,
    call: impl std::future::Future<Output = Result<T, ChannelError>>,
) -> Result<T, ChannelError> {
    match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(result) => result,
        Err(_) => Err(ChannelError::Unknown {
            reason: DEADLINE_REASON.into(),
        }),
    }
}

/// The channel closed this attempt's order before (an earlier close whose answer was lost):
/// nothing collectable is left there.
fn closed_at_channel(e: &ChannelError) -> bool {
    matches!(e.code(), Some("ORDER_CLOSED"))
}

/// What a prepay's outcome says about the channel's health; `None` when it says nothing (the
/// request itself was refused).
fn outcome_of(
    result: &Result<PrepayCredential, ChannelError>,
    latency_ms: u32,
) -> Option<paygate_routing::Outcome> {
    use paygate_routing::Outcome;
    match result {
        Ok(_) => Some(Outcome::Success { latency_ms }),
        Err(e) if e.action() == ErrorAction::Stop => None,
        // Cut off by the request's own deadline: says nothing about the channel.
        Err(ChannelError::Unknown { reason }) if reason == DEADLINE_REASON => None,
        Err(ChannelError::Unknown { reason }) if reason.contains("timed out") => {
            Some(Outcome::Timeout { latency_ms })
        }
        Err(_) => Some(Outcome::Failure { latency_ms }),
    }
}

/// With nowhere to fail over to: asks the channel about an unknown attempt. `Some(answer)`
/// when the order reached a state that ends the prepay (paid, closed, or no answer at all).
async fn learn_final_state(
    app: &AppState,
    merchant: &MerchantRecord,
    attempt: &AttemptRecord,
    deadline: std::time::Instant,
) -> Result<Option<ApiError>, ApiError> {
    let channel = app.channel(&attempt.channel_id)?;
    let sub = sub_at(app, merchant, &attempt.channel_id)?;
    match within(deadline, channel.query(&attempt.attempt_id, &sub)).await {
        Ok(Some(tx))
            if tx.trade_state != TradeState::Notpay && tx.trade_state != TradeState::Payerror =>
        {
            let applied =
                apply_channel_transaction(app, &attempt.attempt_id, &tx, "prepay").await?;
            Ok(Some(match applied {
                Applied::Paid | Applied::PaidAfterClose | Applied::AlreadyFinal => {
                    ApiError::new(ErrorCode::OrderPaid, "订单已支付")
                }
                _ => ApiError::new(ErrorCode::SystemError, "渠道处理超时，请使用相同参数重试"),
            }))
        }
        // Unpaid or never arrived: the identical prepay again is safe.
        Ok(_) => Ok(None),
        Err(e) => Ok(Some(channel_error_to_api(&e))),
    }
}

/// How settling an abandoned attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// Recorded CLOSED (closed at the channel) or FAILED (the channel never had it).
    Gone,
    /// The payer paid it: the order is paid through this attempt.
    Paid,
    /// Could not be settled in time: still possibly collectable.
    Open,
}

/// Settles an attempt whose outcome is unknown, before any other channel is tried: asks
/// the channel, books a payment found there, closes it there if unpaid.
async fn settle(
    app: &AppState,
    merchant: &MerchantRecord,
    attempt: &AttemptRecord,
    deadline: std::time::Instant,
    calls_max: u32,
) -> Result<Settled, ApiError> {
    let channel = app.channel(&attempt.channel_id)?;
    let sub = sub_at(app, merchant, &attempt.channel_id)?;
    let mut ask = true;
    for _ in 0..calls_max {
        if std::time::Instant::now() >= deadline {
            break;
        }
        if ask {
            ask = false;
            if let Ok(Some(tx)) = within(deadline, channel.query(&attempt.attempt_id, &sub)).await {
                match tx.trade_state {
                    TradeState::Success | TradeState::Refund => {
                        apply_channel_transaction(app, &attempt.attempt_id, &tx, "failover")
                            .await?;
                        return Ok(Settled::Paid);
                    }
                    TradeState::Closed | TradeState::Revoked => {
                        apply_channel_transaction(app, &attempt.attempt_id, &tx, "failover")
                            .await?;
                        return recorded(app, attempt).await;
                    }
                    // Unpaid: closed next.
                    _ => {}
                }
            }
            // Not found, unpaid, or no answer: close it; the close's answer says which.
            continue;
        }
        match within(deadline, channel.close(&attempt.attempt_id, &sub)).await {
            Ok(CloseOutcome::Closed) => {
                mark(
                    app,
                    attempt,
                    &[
                        AttemptState::Created,
                        AttemptState::Unknown,
                        AttemptState::Prepaid,
                    ],
                    AttemptState::Closed,
                )
                .await?;
                return recorded(app, attempt).await;
            }
            Ok(CloseOutcome::AlreadyPaid) => ask = true,
            Err(ChannelError::Rejected { code, .. })
                if code == "ORDER_NOT_EXIST" || code == "RESOURCE_NOT_EXISTS" =>
            {
                mark(
                    app,
                    attempt,
                    &[AttemptState::Created, AttemptState::Unknown],
                    AttemptState::Failed,
                )
                .await?;
                return recorded(app, attempt).await;
            }
            Err(ChannelError::Rejected { code, .. }) if code == "ORDER_CLOSED" => {
                mark(
                    app,
                    attempt,
                    &[
                        AttemptState::Created,
                        AttemptState::Unknown,
                        AttemptState::Prepaid,
                    ],
                    AttemptState::Closed,
                )
                .await?;
                return recorded(app, attempt).await;
            }
            Err(_) => {}
        }
    }
    Ok(Settled::Open)
}

async fn mark(
    app: &AppState,
    attempt: &AttemptRecord,
    from: &[AttemptState],
    to: AttemptState,
) -> Result<bool, ApiError> {
    let change = AttemptChange::to(&attempt.attempt_id, from, to, now());
    app.store.update_attempt(&change).await.map_err(store_err)
}

/// What the store now holds for the attempt, read back: only a recorded CLOSED or FAILED
/// lets the order move on.
async fn recorded(app: &AppState, attempt: &AttemptRecord) -> Result<Settled, ApiError> {
    let state = app
        .store
        .find_attempt(&attempt.attempt_id)
        .await
        .map_err(store_err)?
        .map(|(_, a)| a.state);
    Ok(match state {
        Some(AttemptState::Closed | AttemptState::Failed) => Settled::Gone,
        Some(AttemptState::Paid) => Settled::Paid,
        _ => Settled::Open,
    })
}

/// What applying a channel transaction did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Paid,
    PaidAfterClose,
    /// Another attempt had paid the order already: this payment is being refunded whole.
    DuplicateRefunded,
    AlreadyFinal,
    AttemptClosed,
    Unchanged,
    UnknownAttempt,
}

/// Applies what the channel says about one attempt, through the order state machine.
/// Duplicates and reordering are harmless: a final state never moves back.
pub async fn apply_channel_transaction(
    app: &AppState,
    attempt_id: &str,
    tx: &Transaction,
    source: &str,
) -> Result<Applied, ApiError> {
    for _ in 0..CAS_RETRIES_MAX {
        let Some((order, attempt)) = app
            .store
            .find_attempt(attempt_id)
            .await
            .map_err(store_err)?
        else {
            tracing::warn!(
                attempt_id,
                source,
                "channel transaction for an unknown attempt"
            );
            return Ok(Applied::UnknownAttempt);
        };
        let t = now();
        let applied = match tx.trade_state {
            TradeState::Success | TradeState::Refund => {
                if matches!(order.state, OrderState::Success | OrderState::Refund) {
                    if attempt.state == AttemptState::Paid {
                        return Ok(Applied::AlreadyFinal);
                    }
                    // A second attempt paid (重复支付): the payer paid twice, and the second
                    // payment goes back to them whole. Recorded, then sent; a send that fails
                    // is the refund poller's.
                    let Some(refund) =
                        crate::refunds::record_duplicate(app, &order, &attempt, tx, source).await?
                    else {
                        continue;
                    };
                    crate::refunds::give_back_duplicate(app, refund).await;
                    return Ok(Applied::DuplicateRefunded);
                }
                // Every path to SUCCESS (callback, query, poller, late payment) comes here:
                // the payment's ledger posting rides in the same transaction.
                let change = paid_change(&order, &attempt, tx, source, t)?;
                let late = order.state == OrderState::Closed;
                if app
                    .store
                    .apply_order_change(&change)
                    .await
                    .map_err(store_err)?
                {
                    app.outbox_wake.notify_one();
                    return Ok(if late {
                        Applied::PaidAfterClose
                    } else {
                        Applied::Paid
                    });
                }
                continue;
            }
            TradeState::Closed | TradeState::Revoked => {
                let change = AttemptChange::to(
                    attempt_id,
                    &[
                        AttemptState::Created,
                        AttemptState::Prepaid,
                        AttemptState::Unknown,
                    ],
                    AttemptState::Closed,
                    t,
                );
                app.store.update_attempt(&change).await.map_err(store_err)?;
                Applied::AttemptClosed
            }
            TradeState::Payerror if order.state == OrderState::Notpay => {
                let change = OrderChange {
                    transaction_id: order.transaction_id.clone(),
                    expected_state: OrderState::Notpay,
                    new_state: OrderState::Payerror,
                    success_time: None,
                    bank_type: None,
                    payer_openid: None,
                    updated_at: t,
                    attempt: None,
                    notification: None,
                    repair: None,
                    ledger: None,
                };
                if !app
                    .store
                    .apply_order_change(&change)
                    .await
                    .map_err(store_err)?
                {
                    continue;
                }
                Applied::Unchanged
            }
            _ => Applied::Unchanged,
        };
        return Ok(applied);
    }
    Err(ApiError::new(
        ErrorCode::SystemError,
        "order changed concurrently too often",
    ))
}

/// Every state a channel's payment may find an attempt in: whatever paygate believed, the
/// channel's SUCCESS is the truth (a close that raced the payment, a refusal that was not).
pub(crate) const PAYABLE: [AttemptState; 5] = [
    AttemptState::Created,
    AttemptState::Prepaid,
    AttemptState::Unknown,
    AttemptState::Closed,
    AttemptState::Failed,
];

/// The attempt that paid `order`: its PAID attempt, leaving out any duplicate payment (a
/// second paid attempt, refunded whole by paygate and never the merchant's to refund or share).
pub(crate) async fn order_paid_attempt(
    app: &AppState,
    order: &OrderRecord,
) -> Result<Option<AttemptRecord>, ApiError> {
    let mut paid: Vec<AttemptRecord> = app
        .store
        .attempts(&order.transaction_id)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|a| a.state == AttemptState::Paid)
        .collect();
    if paid.len() <= 1 {
        return Ok(paid.pop());
    }
    let duplicates: Vec<String> = app
        .store
        .refunds_of(&order.transaction_id)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|r| r.kind == paygate_store::RefundKind::Duplicate)
        .map(|r| r.attempt_id)
        .collect();
    Ok(paid
        .into_iter()
        .find(|a| !duplicates.contains(&a.attempt_id)))
}

fn paid_change(
    order: &OrderRecord,
    attempt: &AttemptRecord,
    tx: &Transaction,
    source: &str,
    t: OffsetDateTime,
) -> Result<OrderChange, ApiError> {
    let success_time = tx
        .success_time
        .as_deref()
        .and_then(parse_rfc3339)
        .unwrap_or(t);
    let payer_openid = tx
        .payer
        .as_ref()
        .and_then(|p| {
            p.openid
                .clone()
                .or_else(|| p.sub_openid.clone())
                .or_else(|| p.sp_openid.clone())
        })
        .or_else(|| order.payer_openid.clone());
    let mut paid = order.clone();
    paid.state = OrderState::Success;
    paid.success_time = Some(success_time);
    paid.bank_type = tx.bank_type.clone();
    paid.payer_openid = payer_openid.clone();
    let plaintext = serde_json::to_string(&crate::views::transaction(&paid)).unwrap_or_default();
    let mut attempt_change =
        AttemptChange::to(&attempt.attempt_id, &PAYABLE, AttemptState::Paid, t);
    attempt_change.channel_transaction_id = tx.transaction_id.clone();
    // Reconciliation's repairs are recorded too, whatever the state they fix (recon.rs).
    let by_recon = source == crate::recon::REPAIR_SOURCE;
    let repair = (order.state == OrderState::Closed || by_recon).then(|| RepairRecord {
        id: paygate_core::ids::row_id(),
        transaction_id: order.transaction_id.clone(),
        source: source.to_string(),
        way: if by_recon {
            "query_and_apply"
        } else {
            "late_payment_after_close"
        }
        .into(),
        before_state: order.state,
        after_state: OrderState::Success,
        detail: format!(
            "channel attempt {} reported SUCCESS while the order was {}",
            attempt.attempt_id,
            order.state.as_str()
        ),
        at: t,
    });
    Ok(OrderChange {
        transaction_id: order.transaction_id.clone(),
        expected_state: order.state,
        new_state: OrderState::Success,
        success_time: Some(success_time),
        bank_type: tx.bank_type.clone(),
        payer_openid,
        updated_at: t,
        attempt: Some(attempt_change),
        notification: Some(NotificationRecord {
            id: paygate_core::ids::row_id(),
            mchid: order.mchid.clone(),
            transaction_id: order.transaction_id.clone(),
            event_type: "TRANSACTION.SUCCESS".into(),
            url: order.notify_url.clone(),
            plaintext,
            state: NotificationState::Pending,
            attempts: 0,
            next_attempt_at: t,
            lease_until: None,
            created_at: t,
            delivered_at: None,
            answer_serial: RequestSnapshot::answer_serial(order),
        }),
        repair,
        ledger: Some(crate::fees::payment_posting(order, &attempt.channel_id)?),
    })
}

/// Closes an order: every open attempt is closed at its channel first, so no payment can
/// arrive for an order the merchant was told is closed; a payment found there wins.
pub async fn close(
    app: &AppState,
    merchant: &MerchantRecord,
    order: &OrderRecord,
    source: &str,
) -> Result<OrderState, ApiError> {
    let _guard = app
        .order_lock(&order.mchid, &order.out_trade_no)
        .lock()
        .await;
    let attempts = app
        .store
        .attempts(&order.transaction_id)
        .await
        .map_err(store_err)?;
    for attempt in attempts.iter().filter(|a| {
        matches!(
            a.state,
            AttemptState::Created | AttemptState::Prepaid | AttemptState::Unknown
        )
    }) {
        let channel = app.channel(&attempt.channel_id)?;
        let sub = sub_at(app, merchant, &attempt.channel_id)?;
        match channel.close(&attempt.attempt_id, &sub).await {
            Ok(CloseOutcome::Closed) => {
                let change = AttemptChange::to(
                    &attempt.attempt_id,
                    &[
                        AttemptState::Created,
                        AttemptState::Prepaid,
                        AttemptState::Unknown,
                    ],
                    AttemptState::Closed,
                    now(),
                );
                app.store.update_attempt(&change).await.map_err(store_err)?;
            }
            Ok(CloseOutcome::AlreadyPaid) => {
                let tx = channel
                    .query(&attempt.attempt_id, &sub)
                    .await
                    .map_err(|e| channel_error_to_api(&e))?
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::SystemError, "channel says paid but has no order")
                    })?;
                apply_channel_transaction(app, &attempt.attempt_id, &tx, source).await?;
                return Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付"));
            }
            // Never reached the channel: nothing to close there.
            Err(ChannelError::Rejected { code, .. })
                if code == "ORDER_NOT_EXIST" || code == "RESOURCE_NOT_EXISTS" =>
            {
                let change = AttemptChange::to(
                    &attempt.attempt_id,
                    &[AttemptState::Created, AttemptState::Unknown],
                    AttemptState::Failed,
                    now(),
                );
                app.store.update_attempt(&change).await.map_err(store_err)?;
            }
            Err(e) => return Err(channel_error_to_api(&e)),
        }
    }
    for _ in 0..CAS_RETRIES_MAX {
        let Some(current) = app
            .store
            .get_order_by_transaction_id(&order.transaction_id)
            .await
            .map_err(store_err)?
        else {
            return Err(ApiError::new(ErrorCode::OrderNotExist, "订单不存在"));
        };
        match current.state {
            OrderState::Success | OrderState::Refund => {
                return Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付"));
            }
            OrderState::Closed => return Ok(OrderState::Closed),
            OrderState::Notpay | OrderState::Payerror => {}
        }
        let change = OrderChange {
            transaction_id: current.transaction_id.clone(),
            expected_state: current.state,
            new_state: OrderState::Closed,
            success_time: None,
            bank_type: None,
            payer_openid: None,
            updated_at: now(),
            attempt: None,
            notification: None,
            repair: None,
            ledger: None,
        };
        if app
            .store
            .apply_order_change(&change)
            .await
            .map_err(store_err)?
        {
            return Ok(OrderState::Closed);
        }
    }
    Err(ApiError::new(
        ErrorCode::SystemError,
        "order changed concurrently too often",
    ))
}
