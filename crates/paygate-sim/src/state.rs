//! The simulator's business state and every transition of it: orders (§4.5 state
//! machine), refunds (§4.7), profit sharing (§4.8). Pure logic over in-memory maps, so
//! the rules are unit-testable without HTTP. Each operation that WeChat Pay would notify
//! about returns the [`Outgoing`] notifications for the caller to dispatch.

use std::collections::HashMap;

use paygate_core::error::{ApiError, ErrorCode};
use time::{Duration, OffsetDateTime};

use paygate_wxpay::models::payments::{TradeState, TradeType};
use paygate_wxpay::models::profitsharing::{
    DetailFailReason, DetailResult, ReceiverType, RelationType, ReturnResult,
};
use paygate_wxpay::models::refunds::{FundsAccount, RefundStatus};

use crate::ids;

/// How long the handed-out prepay credential works (§4.1: prepay_id and code_url 2 h,
/// h5_url 5 min).
fn credential_ttl(trade: TradeType) -> Duration {
    match trade {
        TradeType::Mweb => Duration::minutes(5),
        _ => Duration::hours(2),
    }
}

/// Paid orders and closed ones take no more payment attempts (§4.6).
fn check_payable(state: TradeState) -> Result<(), ApiError> {
    if state.is_paid() {
        return Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付"));
    }
    if !is_open(state) {
        return Err(ApiError::new(ErrorCode::OrderClosed, "该订单已失效"));
    }
    Ok(())
}

/// Still payable: not paid, not closed (a failed attempt leaves the order payable).
fn is_open(state: TradeState) -> bool {
    matches!(state, TradeState::Notpay | TradeState::Payerror)
}

/// Who an order, refund or share belongs to: the signing account (direct mchid or
/// sp_mchid) and, in partner mode, the sub-merchant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub mchid: String,
    pub sub_mchid: Option<String>,
}

/// A prepay, normalized from the direct and partner request shapes.
#[derive(Clone, Debug)]
pub struct PrepayInput {
    pub owner: Owner,
    pub appid: String,
    pub sub_appid: Option<String>,
    pub trade: TradeType,
    pub out_trade_no: String,
    pub description: String,
    pub attach: Option<String>,
    pub notify_url: String,
    pub total_fen: i64,
    pub currency: String,
    pub time_expire: Option<OffsetDateTime>,
    pub openid: Option<String>,
    pub sp_openid: Option<String>,
    pub sub_openid: Option<String>,
    pub profit_sharing: bool,
    pub device_id: Option<String>,
    /// Canonical form of every request parameter: a re-submission must match it exactly.
    pub fingerprint: String,
}

#[derive(Clone, Debug)]
pub struct Order {
    pub input: PrepayInput,
    pub transaction_id: String,
    pub state: TradeState,
    pub created_at: OffsetDateTime,
    pub time_expire: OffsetDateTime,
    pub prepay_id: String,
    pub prepay_expires_at: OffsetDateTime,
    pub code_url: String,
    pub success_time: Option<OffsetDateTime>,
    pub bank_type: Option<String>,
    pub payer_openid: Option<String>,
    /// Refunds accepted so far (processing or successful); closed/abnormal ones are given back.
    pub refunded_fen: i64,
    /// Amount sent to receivers and not returned.
    pub split_fen: i64,
    /// Amount unfrozen to the merchant: no longer splittable.
    pub unfrozen_fen: i64,
}

impl Order {
    pub fn unsplit_fen(&self) -> i64 {
        if !self.input.profit_sharing || !self.state.is_paid() {
            return 0;
        }
        (self.input.total_fen - self.refunded_fen - self.split_fen - self.unfrozen_fen).max(0)
    }
}

#[derive(Clone, Debug)]
pub struct RefundInput {
    pub owner: Owner,
    pub transaction_id: Option<String>,
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
    pub refund_fen: i64,
    pub total_fen: i64,
    pub currency: String,
    pub funds_account: Option<FundsAccount>,
}

#[derive(Clone, Debug)]
pub struct Refund {
    pub owner: Owner,
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub reason: Option<String>,
    pub notify_url: String,
    pub refund_fen: i64,
    pub total_fen: i64,
    pub currency: String,
    pub funds_account: FundsAccount,
    pub state: RefundStatus,
    pub created_at: OffsetDateTime,
    pub success_time: Option<OffsetDateTime>,
    pub due_at: OffsetDateTime,
    /// Set by fault injection: this refund ends ABNORMAL instead of SUCCESS.
    pub fail_abnormal: bool,
    pub user_received_account: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiver {
    pub kind: ReceiverType,
    pub account: String,
    pub name: Option<String>,
    pub relation_type: RelationType,
    pub custom_relation: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ShareReceiver {
    pub kind: ReceiverType,
    pub account: String,
    pub amount_fen: i64,
    pub description: String,
    pub result: DetailResult,
    pub fail_reason: Option<DetailFailReason>,
    pub detail_id: String,
    pub create_time: OffsetDateTime,
    pub finish_time: Option<OffsetDateTime>,
    pub returned_fen: i64,
}

#[derive(Clone, Debug)]
pub struct ShareOrder {
    pub owner: Owner,
    pub transaction_id: String,
    pub out_order_no: String,
    pub order_id: String,
    pub finished: bool,
    pub receivers: Vec<ShareReceiver>,
    pub unfreeze_unsplit: bool,
    pub due_at: OffsetDateTime,
    /// The parameters, for idempotent re-submission.
    pub fingerprint: String,
}

#[derive(Clone, Debug)]
pub struct ReturnOrder {
    pub owner: Owner,
    pub order_id: String,
    pub out_order_no: String,
    pub out_return_no: String,
    pub return_id: String,
    pub return_mchid: String,
    pub amount_fen: i64,
    pub description: String,
    pub result: ReturnResult,
    pub create_time: OffsetDateTime,
    pub finish_time: Option<OffsetDateTime>,
    pub due_at: OffsetDateTime,
}

/// A notification to deliver: the plaintext the envelope will carry, and to where.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub mchid: String,
    pub url: String,
    pub event_type: &'static str,
    pub summary: &'static str,
    pub original_type: &'static str,
    pub associated_data: &'static str,
    pub kind: OutgoingKind,
}

#[derive(Clone, Debug)]
pub enum OutgoingKind {
    Transaction { key: (String, String) },
    Refund { key: (String, String) },
}

/// Delays with which processing things settle, before `--time-scale`.
#[derive(Clone, Copy, Debug)]
pub struct Delays {
    pub refund: std::time::Duration,
    pub share: std::time::Duration,
    pub share_return: std::time::Duration,
}

impl Default for Delays {
    fn default() -> Self {
        Self {
            refund: std::time::Duration::from_secs(10),
            share: std::time::Duration::from_secs(10),
            share_return: std::time::Duration::from_secs(5),
        }
    }
}

#[derive(Default)]
pub struct Store {
    /// By (signing mchid, out_trade_no): unique across a provider and all its sub-merchants.
    pub orders: HashMap<(String, String), Order>,
    pub by_transaction_id: HashMap<String, (String, String)>,
    pub refunds: HashMap<(String, String), Refund>,
    pub receivers: HashMap<(Owner, ReceiverType, String), Receiver>,
    pub shares: HashMap<(String, String), ShareOrder>,
    pub share_by_order_id: HashMap<String, (String, String)>,
    pub returns: HashMap<(String, String), ReturnOrder>,
}

fn not_exist() -> ApiError {
    ApiError::new(ErrorCode::OrderNotExist, "订单不存在")
}

fn owner_matches(order_owner: &Owner, owner: &Owner) -> bool {
    order_owner == owner
}

impl Store {
    /// Lazily applies time: an unpaid order past its `time_expire` is closed.
    fn expire(order: &mut Order, now: OffsetDateTime) {
        if is_open(order.state) && now >= order.time_expire {
            order.state = TradeState::Closed;
        }
    }

    pub fn prepay(&mut self, input: PrepayInput, now: OffsetDateTime) -> Result<Order, ApiError> {
        let key = (input.owner.mchid.clone(), input.out_trade_no.clone());
        if let Some(order) = self.orders.get_mut(&key) {
            Self::expire(order, now);
            // §4.6: the same parameters again refresh the credential; anything else is refused.
            if order.input.fingerprint != input.fingerprint || order.input.owner != input.owner {
                return Err(ApiError::new(
                    ErrorCode::OutTradeNoUsed,
                    "201 商户订单号重复",
                ));
            }
            check_payable(order.state)?;
            if now >= order.prepay_expires_at {
                order.prepay_id = ids::prepay_id(now);
                order.code_url = code_url();
                order.prepay_expires_at =
                    (now + credential_ttl(order.input.trade)).min(order.time_expire);
            }
            return Ok(order.clone());
        }
        // §8: a time_expire less than a minute away is moved to now + 1 min; the default
        // validity is 7 days.
        let time_expire = match input.time_expire {
            Some(t) if t < now + Duration::minutes(1) => now + Duration::minutes(1),
            Some(t) => t,
            None => now + Duration::days(7),
        };
        let order = Order {
            transaction_id: ids::transaction_id(now),
            state: TradeState::Notpay,
            created_at: now,
            time_expire,
            prepay_id: ids::prepay_id(now),
            prepay_expires_at: (now + credential_ttl(input.trade)).min(time_expire),
            code_url: code_url(),
            success_time: None,
            bank_type: None,
            payer_openid: None,
            refunded_fen: 0,
            split_fen: 0,
            unfrozen_fen: 0,
            input,
        };
        self.by_transaction_id
            .insert(order.transaction_id.clone(), key.clone());
        self.orders.insert(key, order.clone());
        Ok(order)
    }

    fn order_mut(
        &mut self,
        owner: &Owner,
        out_trade_no: &str,
        now: OffsetDateTime,
    ) -> Result<&mut Order, ApiError> {
        let order = self
            .orders
            .get_mut(&(owner.mchid.clone(), out_trade_no.to_string()))
            .filter(|o| owner_matches(&o.input.owner, owner))
            .ok_or_else(not_exist)?;
        Self::expire(order, now);
        Ok(order)
    }

    pub fn query_by_out_trade_no(
        &mut self,
        owner: &Owner,
        out_trade_no: &str,
        now: OffsetDateTime,
    ) -> Result<Order, ApiError> {
        self.order_mut(owner, out_trade_no, now).map(|o| o.clone())
    }

    /// §4.3: an unpaid order can only be found by out_trade_no.
    pub fn query_by_transaction_id(
        &mut self,
        owner: &Owner,
        transaction_id: &str,
        now: OffsetDateTime,
    ) -> Result<Order, ApiError> {
        let key = self
            .by_transaction_id
            .get(transaction_id)
            .cloned()
            .ok_or_else(not_exist)?;
        let order = self.order_mut(owner, &key.1, now)?;
        if !order.state.is_paid() {
            return Err(not_exist());
        }
        Ok(order.clone())
    }

    /// Close is re-entrant; a paid order cannot be closed.
    pub fn close(
        &mut self,
        owner: &Owner,
        out_trade_no: &str,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let order = self.order_mut(owner, out_trade_no, now)?;
        if order.state.is_paid() {
            return Err(ApiError::new(ErrorCode::OrderPaid, "订单已支付"));
        }
        order.state = TradeState::Closed;
        Ok(())
    }

    /// The sandbox payer. SUCCESS pays the order and yields its notification; PAYERROR
    /// records a failed attempt (the order stays payable).
    pub fn pay(
        &mut self,
        owner: &Owner,
        out_trade_no: &str,
        success: bool,
        openid: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<Outgoing>, ApiError> {
        let order = self.order_mut(owner, out_trade_no, now)?;
        check_payable(order.state)?;
        if now >= order.prepay_expires_at {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "prepay credential expired: request prepay again with the same parameters",
            ));
        }
        if !success {
            order.state = TradeState::Payerror;
            return Ok(None);
        }
        order.state = TradeState::Success;
        order.success_time = Some(now);
        order.bank_type = Some("OTHERS".to_string());
        order.payer_openid = openid
            .or_else(|| order.input.openid.clone())
            .or_else(|| order.input.sub_openid.clone())
            .or_else(|| order.input.sp_openid.clone())
            .or_else(|| Some(format!("o{}", ids::token(27))));
        Ok(Some(Outgoing {
            mchid: order.input.owner.mchid.clone(),
            url: order.input.notify_url.clone(),
            event_type: "TRANSACTION.SUCCESS",
            summary: "支付成功",
            original_type: "transaction",
            associated_data: "transaction",
            kind: OutgoingKind::Transaction {
                key: (order.input.owner.mchid.clone(), out_trade_no.to_string()),
            },
        }))
    }

    fn find_paid_order(
        &mut self,
        owner: &Owner,
        transaction_id: Option<&str>,
        out_trade_no: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(String, String), ApiError> {
        let missing = || ApiError::new(ErrorCode::ResourceNotExists, "订单号不存在");
        let key = match (transaction_id, out_trade_no) {
            (Some(id), _) => self
                .by_transaction_id
                .get(id)
                .cloned()
                .ok_or_else(missing)?,
            (None, Some(no)) => (owner.mchid.clone(), no.to_string()),
            (None, None) => {
                return Err(ApiError::param(
                    "/out_trade_no",
                    "transaction_id 与 out_trade_no 必填其一",
                ));
            }
        };
        let order = self
            .orders
            .get_mut(&key)
            .filter(|o| o.input.owner == *owner)
            .ok_or_else(missing)?;
        Self::expire(order, now);
        if !order.state.is_paid() {
            return Err(missing());
        }
        Ok(key)
    }

    /// §4.7: partial and multiple refunds up to the paid amount, within a year, idempotent
    /// by out_refund_no.
    pub fn create_refund(
        &mut self,
        input: RefundInput,
        fail_abnormal: bool,
        delay: Duration,
        now: OffsetDateTime,
    ) -> Result<Refund, ApiError> {
        let refund_key = (input.owner.mchid.clone(), input.out_refund_no.clone());
        if let Some(existing) = self.refunds.get(&refund_key) {
            let same_order = input
                .transaction_id
                .as_deref()
                .is_none_or(|t| t == existing.transaction_id)
                && input
                    .out_trade_no
                    .as_deref()
                    .is_none_or(|t| t == existing.out_trade_no);
            if existing.owner != input.owner
                || !same_order
                || existing.refund_fen != input.refund_fen
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "退款单号已存在，且与本次请求参数不一致",
                ));
            }
            return Ok(existing.clone());
        }
        let order_key = self.find_paid_order(
            &input.owner,
            input.transaction_id.as_deref(),
            input.out_trade_no.as_deref(),
            now,
        )?;
        let Some(order) = self.orders.get_mut(&order_key) else {
            return Err(ApiError::new(ErrorCode::ResourceNotExists, "订单号不存在"));
        };
        if input.total_fen != order.input.total_fen {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "订单金额与原订单金额不一致",
            ));
        }
        if input.currency != order.input.currency {
            return Err(ApiError::param(
                "/amount/currency",
                "退款币种与原订单不一致",
            ));
        }
        if order
            .success_time
            .is_some_and(|paid| now - paid > Duration::days(365))
        {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "订单已超过退款期限",
            ));
        }
        // Split-out funds are with the receivers until returned.
        let refundable = order.input.total_fen - order.refunded_fen - order.split_fen;
        if input.refund_fen > refundable {
            return Err(ApiError::new(
                ErrorCode::NotEnough,
                format!("可退金额不足，当前可退 {refundable} 分"),
            ));
        }
        order.refunded_fen += input.refund_fen;
        order.state = TradeState::Refund;
        let refund = Refund {
            owner: input.owner.clone(),
            refund_id: ids::refund_id(now),
            out_refund_no: input.out_refund_no.clone(),
            transaction_id: order.transaction_id.clone(),
            out_trade_no: order.input.out_trade_no.clone(),
            reason: input.reason,
            notify_url: input
                .notify_url
                .unwrap_or_else(|| order.input.notify_url.clone()),
            refund_fen: input.refund_fen,
            total_fen: input.total_fen,
            currency: input.currency,
            funds_account: input.funds_account.unwrap_or(FundsAccount::Unsettled),
            state: RefundStatus::Processing,
            created_at: now,
            success_time: None,
            due_at: now + delay,
            fail_abnormal,
            user_received_account: "支付用户零钱".to_string(),
        };
        self.refunds.insert(refund_key, refund.clone());
        Ok(refund)
    }

    /// Callers settle due refunds first (`api::settle_due`), so the answer and the
    /// notifications agree.
    pub fn query_refund(&self, owner: &Owner, out_refund_no: &str) -> Result<Refund, ApiError> {
        self.refunds
            .get(&(owner.mchid.clone(), out_refund_no.to_string()))
            .filter(|r| r.owner == *owner)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "退款单不存在"))
    }

    /// Re-applies an ABNORMAL refund to another account (§4.7): it goes back to PROCESSING.
    pub fn apply_abnormal_refund(
        &mut self,
        owner: &Owner,
        refund_id: &str,
        out_refund_no: &str,
        delay: Duration,
        now: OffsetDateTime,
    ) -> Result<Refund, ApiError> {
        let refund = self
            .refunds
            .get_mut(&(owner.mchid.clone(), out_refund_no.to_string()))
            .filter(|r| r.owner == *owner && r.refund_id == refund_id)
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "退款单不存在"))?;
        if refund.state != RefundStatus::Abnormal {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "退款单状态不是异常，无需发起异常退款",
            ));
        }
        refund.state = RefundStatus::Processing;
        refund.fail_abnormal = false;
        refund.due_at = now + delay;
        refund.user_received_account = "银行卡".to_string();
        Ok(refund.clone())
    }

    /// Moves due refunds to their final state, collecting their notifications.
    pub fn settle_refunds(&mut self, now: OffsetDateTime, out: &mut Vec<Outgoing>) {
        for (key, refund) in self.refunds.iter_mut() {
            if refund.state != RefundStatus::Processing || now < refund.due_at {
                continue;
            }
            let (state, event, summary) = if refund.fail_abnormal {
                (RefundStatus::Abnormal, "REFUND.ABNORMAL", "退款异常")
            } else {
                (RefundStatus::Success, "REFUND.SUCCESS", "退款成功")
            };
            refund.state = state;
            // An ABNORMAL refund keeps its amount reserved: the merchant re-applies it to
            // another account rather than refunding again.
            if state == RefundStatus::Success {
                refund.success_time = Some(now);
            }
            out.push(Outgoing {
                mchid: refund.owner.mchid.clone(),
                url: refund.notify_url.clone(),
                event_type: event,
                summary,
                original_type: "refund",
                associated_data: "refund",
                kind: OutgoingKind::Refund { key: key.clone() },
            });
        }
    }

    // ---- profit sharing (§4.8) ----

    pub fn add_receiver(&mut self, owner: &Owner, receiver: Receiver) -> Receiver {
        let key = (owner.clone(), receiver.kind, receiver.account.clone());
        self.receivers.insert(key, receiver.clone());
        receiver
    }

    pub fn delete_receiver(
        &mut self,
        owner: &Owner,
        kind: ReceiverType,
        account: &str,
    ) -> Result<(), ApiError> {
        self.receivers
            .remove(&(owner.clone(), kind, account.to_string()))
            .map(|_| ())
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "分账接收方不存在"))
    }

    fn paid_sharing_order(
        &mut self,
        owner: &Owner,
        transaction_id: &str,
        now: OffsetDateTime,
    ) -> Result<&mut Order, ApiError> {
        let key = self
            .by_transaction_id
            .get(transaction_id)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "订单不存在"))?;
        let order = self
            .orders
            .get_mut(&key)
            .filter(|o| o.input.owner == *owner && o.state.is_paid())
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "订单不存在"))?;
        Self::expire(order, now);
        if !order.input.profit_sharing {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "该笔订单不支持分账（下单时未设置 settle_info.profit_sharing）",
            ));
        }
        Ok(order)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_share(
        &mut self,
        owner: &Owner,
        transaction_id: &str,
        out_order_no: &str,
        receivers: Vec<(ReceiverType, String, i64, String)>,
        unfreeze_unsplit: bool,
        max_ratio: u32,
        fingerprint: String,
        delay: Duration,
        now: OffsetDateTime,
    ) -> Result<ShareOrder, ApiError> {
        let share_key = (owner.mchid.clone(), out_order_no.to_string());
        if let Some(existing) = self.shares.get(&share_key) {
            // "同一分账单号多次请求等同一次"
            if existing.fingerprint != fingerprint {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "商户分账单号重复，且与本次请求参数不一致",
                ));
            }
            return Ok(existing.clone());
        }
        let known: Vec<bool> = receivers
            .iter()
            .map(|(kind, account, _, _)| {
                self.receivers
                    .contains_key(&(owner.clone(), *kind, account.clone()))
            })
            .collect();
        let order = self.paid_sharing_order(owner, transaction_id, now)?;
        let total: i64 = receivers.iter().map(|r| r.2).sum();
        if total > order.unsplit_fen() {
            return Err(ApiError::new(
                ErrorCode::NotEnough,
                "分账金额超过订单剩余待分金额",
            ));
        }
        let already = order.split_fen;
        if (already + total) * 10_000 > order.input.total_fen * i64::from(max_ratio) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("分账比例超过上限 {}%", max_ratio / 100),
            ));
        }
        let mut share_receivers = Vec::with_capacity(receivers.len());
        let mut split = 0;
        for ((kind, account, amount_fen, description), known) in receivers.into_iter().zip(known) {
            // A receiver that was never added fails with NO_RELATION; its amount stays frozen.
            let (result, fail_reason) = if known {
                (DetailResult::Pending, None)
            } else {
                (DetailResult::Closed, Some(DetailFailReason::NoRelation))
            };
            if known {
                split += amount_fen;
            }
            share_receivers.push(ShareReceiver {
                kind,
                account,
                amount_fen,
                description,
                result,
                fail_reason,
                detail_id: ids::profit_sharing_id("3601", now),
                create_time: now,
                finish_time: (!known).then_some(now),
                returned_fen: 0,
            });
        }
        order.split_fen += split;
        let share = ShareOrder {
            owner: owner.clone(),
            transaction_id: transaction_id.to_string(),
            out_order_no: out_order_no.to_string(),
            order_id: ids::profit_sharing_id("3008", now),
            finished: false,
            receivers: share_receivers,
            unfreeze_unsplit,
            due_at: now + delay,
            fingerprint,
        };
        self.share_by_order_id
            .insert(share.order_id.clone(), share_key.clone());
        self.shares.insert(share_key, share.clone());
        Ok(share)
    }

    /// Finishes due shares (receivers PENDING → SUCCESS; unfreeze the rest if asked) and
    /// due returns (PROCESSING → SUCCESS).
    pub fn settle_shares(&mut self, now: OffsetDateTime) {
        for share in self.shares.values_mut() {
            if share.finished || now < share.due_at {
                continue;
            }
            share.finished = true;
            for r in share
                .receivers
                .iter_mut()
                .filter(|r| r.result == DetailResult::Pending)
            {
                r.result = DetailResult::Success;
                r.finish_time = Some(now);
            }
            if share.unfreeze_unsplit {
                if let Some(order) = self
                    .by_transaction_id
                    .get(&share.transaction_id)
                    .and_then(|k| self.orders.get_mut(k))
                {
                    order.unfrozen_fen += order.unsplit_fen();
                }
            }
        }
        for ret in self.returns.values_mut() {
            if ret.result == ReturnResult::Processing && now >= ret.due_at {
                ret.result = ReturnResult::Success;
                ret.finish_time = Some(now);
            }
        }
    }

    pub fn query_share(
        &mut self,
        owner: &Owner,
        out_order_no: &str,
        transaction_id: &str,
        now: OffsetDateTime,
    ) -> Result<ShareOrder, ApiError> {
        self.settle_shares(now);
        self.shares
            .get(&(owner.mchid.clone(), out_order_no.to_string()))
            .filter(|s| s.owner == *owner && s.transaction_id == transaction_id)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "分账单不存在"))
    }

    /// Unfreezes what is left to the merchant itself, under a new out_order_no.
    pub fn unfreeze(
        &mut self,
        owner: &Owner,
        transaction_id: &str,
        out_order_no: &str,
        description: &str,
        now: OffsetDateTime,
    ) -> Result<ShareOrder, ApiError> {
        let share_key = (owner.mchid.clone(), out_order_no.to_string());
        if let Some(existing) = self.shares.get(&share_key) {
            if existing.transaction_id != transaction_id {
                return Err(ApiError::new(ErrorCode::InvalidRequest, "商户分账单号重复"));
            }
            return Ok(existing.clone());
        }
        self.settle_shares(now);
        let order = self.paid_sharing_order(owner, transaction_id, now)?;
        let rest = order.unsplit_fen();
        if rest == 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "订单无待分金额，无需解冻",
            ));
        }
        order.unfrozen_fen += rest;
        let account = owner
            .sub_mchid
            .clone()
            .unwrap_or_else(|| owner.mchid.clone());
        let share = ShareOrder {
            owner: owner.clone(),
            transaction_id: transaction_id.to_string(),
            out_order_no: out_order_no.to_string(),
            order_id: ids::profit_sharing_id("3008", now),
            finished: true,
            receivers: vec![ShareReceiver {
                kind: ReceiverType::MerchantId,
                account,
                amount_fen: rest,
                description: description.to_string(),
                result: DetailResult::Success,
                fail_reason: None,
                detail_id: ids::profit_sharing_id("3601", now),
                create_time: now,
                finish_time: Some(now),
                returned_fen: 0,
            }],
            unfreeze_unsplit: true,
            due_at: now,
            fingerprint: format!("unfreeze:{transaction_id}"),
        };
        self.share_by_order_id
            .insert(share.order_id.clone(), share_key.clone());
        self.shares.insert(share_key, share.clone());
        Ok(share)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_return(
        &mut self,
        owner: &Owner,
        order_id: Option<&str>,
        out_order_no: Option<&str>,
        out_return_no: &str,
        return_mchid: &str,
        amount_fen: i64,
        description: &str,
        delay: Duration,
        now: OffsetDateTime,
    ) -> Result<ReturnOrder, ApiError> {
        let return_key = (owner.mchid.clone(), out_return_no.to_string());
        if let Some(existing) = self.returns.get(&return_key) {
            if existing.amount_fen != amount_fen || existing.return_mchid != return_mchid {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "商户回退单号重复，且与本次请求参数不一致",
                ));
            }
            return Ok(existing.clone());
        }
        self.settle_shares(now);
        let share_key = match (order_id, out_order_no) {
            (Some(id), _) => self.share_by_order_id.get(id).cloned(),
            (None, Some(no)) => Some((owner.mchid.clone(), no.to_string())),
            (None, None) => {
                return Err(ApiError::param(
                    "/out_order_no",
                    "order_id 与 out_order_no 必填其一",
                ));
            }
        }
        .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "分账单不存在"))?;
        let share = self
            .shares
            .get_mut(&share_key)
            .filter(|s| s.owner == *owner)
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "分账单不存在"))?;
        let receiver = share
            .receivers
            .iter_mut()
            .find(|r| {
                r.kind == ReceiverType::MerchantId
                    && r.account == return_mchid
                    && r.result == DetailResult::Success
            })
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "回退商户号不是该分账单的成功接收方",
                )
            })?;
        if amount_fen > receiver.amount_fen - receiver.returned_fen {
            return Err(ApiError::new(
                ErrorCode::NotEnough,
                "回退金额超过可回退金额",
            ));
        }
        receiver.returned_fen += amount_fen;
        let transaction_id = share.transaction_id.clone();
        let ret = ReturnOrder {
            owner: owner.clone(),
            order_id: share.order_id.clone(),
            out_order_no: share.out_order_no.clone(),
            out_return_no: out_return_no.to_string(),
            return_id: ids::profit_sharing_id("3008", now),
            return_mchid: return_mchid.to_string(),
            amount_fen,
            description: description.to_string(),
            result: ReturnResult::Processing,
            create_time: now,
            finish_time: None,
            due_at: now + delay,
        };
        // Returned funds go back to the merchant's frozen balance: refundable again.
        if let Some(order) = self
            .by_transaction_id
            .get(&transaction_id)
            .and_then(|k| self.orders.get_mut(k))
        {
            order.split_fen -= amount_fen;
            order.unfrozen_fen += amount_fen;
        }
        self.returns.insert(return_key, ret.clone());
        Ok(ret)
    }

    pub fn query_return(
        &mut self,
        owner: &Owner,
        out_return_no: &str,
        out_order_no: &str,
        now: OffsetDateTime,
    ) -> Result<ReturnOrder, ApiError> {
        self.settle_shares(now);
        self.returns
            .get(&(owner.mchid.clone(), out_return_no.to_string()))
            .filter(|r| r.owner == *owner && r.out_order_no == out_order_no)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "回退单不存在"))
    }

    pub fn unsplit_amount(
        &mut self,
        owner_mchid: &str,
        transaction_id: &str,
        now: OffsetDateTime,
    ) -> Result<i64, ApiError> {
        self.settle_shares(now);
        let key = self
            .by_transaction_id
            .get(transaction_id)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "订单不存在"))?;
        let order = self
            .orders
            .get(&key)
            .filter(|o| o.input.owner.mchid == owner_mchid && o.state.is_paid())
            .ok_or_else(|| ApiError::new(ErrorCode::ResourceNotExists, "订单不存在"))?;
        Ok(order.unsplit_fen())
    }
}

fn code_url() -> String {
    format!("weixin://wxpay/bizpayurl?pr={}", ids::token(9))
}
