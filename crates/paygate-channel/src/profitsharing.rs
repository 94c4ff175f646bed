//! Profit sharing (分账, reference §4.8) at the channel: receivers, split orders, unfreeze,
//! returns, the unsplit amount and a partner's max ratio.
//!
//! As with refunds, the gateway's own ids are the channel's idempotency keys (its share order id
//! is the `out_order_no` there, its return id the `out_return_no`), so re-sending a call after
//! an unknown outcome is the same call at the channel. Names travel encrypted (RSA-OAEP) for the
//! channel's platform key ([`WxChannel::seal_name`]); the caller seals once and keeps the
//! ciphertext, so a re-send carries the same bytes (OAEP is randomized, and the channel compares
//! a repeated out_order_no's parameters).

use paygate_core::error::ApiError;
use paygate_wxpay::client::escape_path_segment;
use paygate_wxpay::crypto::oaep;
use paygate_wxpay::models::profitsharing::{
    AddReceiverRequest, AddReceiverResponse, DeleteReceiverRequest, MerchantConfigResponse,
    OrderReceiverRequest, OrdersEntity, ProfitSharingOrderRequest, ReceiverType, RelationType,
    ReturnOrderRequest, ReturnOrdersEntity, UnfreezeRequest, UnsplitAmountResponse,
};
use paygate_wxpay::rules::Validate;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel::WxChannel;
use crate::config::ChannelKind;
use crate::error::ChannelError;
use crate::transform::{SubMerchant, WireRequest};

/// One receiver of a split at the channel; `name` sealed for this channel ([`WxChannel::seal_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareReceiverCall {
    pub r#type: ReceiverType,
    pub account: String,
    pub name: Option<String>,
    pub amount_fen: i64,
    pub description: String,
}

/// A split order at the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelShare {
    /// The gateway's share order id: the out_order_no at the channel.
    pub out_order_no: String,
    /// The channel's transaction id of the paid attempt.
    pub transaction_id: String,
    pub receivers: Vec<ShareReceiverCall>,
    pub unfreeze_unsplit: bool,
    pub sub: SubMerchant,
}

/// A receiver to add at the channel; `name` sealed for this channel ([`WxChannel::seal_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelReceiver {
    pub r#type: ReceiverType,
    pub account: String,
    pub name: Option<String>,
    pub relation_type: RelationType,
    pub custom_relation: Option<String>,
    pub sub: SubMerchant,
}

/// A return at the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelShareReturn {
    /// The gateway's return id: the out_return_no at the channel.
    pub out_return_no: String,
    /// The gateway's share order id (its out_order_no at the channel).
    pub out_order_no: String,
    pub return_mchid: String,
    pub amount_fen: i64,
    pub description: String,
    pub sub: SubMerchant,
}

fn serialize<T: Serialize>(value: &T) -> Result<Vec<u8>, ChannelError> {
    serde_json::to_vec(value).map_err(|e| ChannelError::config(format!("serializing: {e}")))
}

fn read<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ChannelError> {
    serde_json::from_slice(body)
        .map_err(|e| ChannelError::unknown(format!("{what} answer unreadable: {e}")))
}

fn not_found(e: &ChannelError) -> bool {
    matches!(
        e.code(),
        Some("RESOURCE_NOT_EXISTS" | "NOT_FOUND" | "ORDER_NOT_EXIST")
    )
}

impl WxChannel {
    /// `(sub_mchid, sub_appid)` of a call: none at a direct channel, the sub-merchant's at a
    /// partner channel. The appid is always the channel account's.
    fn share_sub(
        &self,
        sub: &SubMerchant,
    ) -> Result<(Option<String>, Option<String>), ChannelError> {
        match self.kind() {
            ChannelKind::WxDirect => {
                if sub.sub_mchid.is_some() || sub.sub_appid.is_some() {
                    return Err(ChannelError::local(ApiError::param(
                        "/sub_mchid",
                        "a direct channel takes no sub-merchant",
                    )));
                }
                Ok((None, None))
            }
            ChannelKind::WxPartner => {
                let sub_mchid = sub.sub_mchid.clone().ok_or_else(|| {
                    ChannelError::local(ApiError::param(
                        "/sub_mchid",
                        "is required for a partner channel",
                    ))
                })?;
                Ok((Some(sub_mchid), sub.sub_appid.clone()))
            }
        }
    }

    fn sub_query(&self, sub: &SubMerchant) -> Result<String, ChannelError> {
        Ok(match self.share_sub(sub)?.0 {
            Some(s) => format!("&sub_mchid={}", escape_path_segment(&s)),
            None => String::new(),
        })
    }

    /// Encrypts a plaintext name (or account) for the channel's platform key: the one
    /// `Wechatpay-Serial` names, else the first configured.
    pub fn seal_name(&self, name: &str) -> Result<String, ChannelError> {
        let keys = self
            .config()
            .check()
            .map_err(|e| ChannelError::config(e.to_string()))?;
        let key = keys
            .wechatpay_serial
            .as_ref()
            .and_then(|s| keys.platform_keys.iter().find(|(id, _)| id == s))
            .or_else(|| keys.platform_keys.first())
            .map(|(_, k)| k)
            .ok_or_else(|| ChannelError::config("no platform key to encrypt a name with"))?;
        oaep::encrypt(key, name)
            .map_err(|e| ChannelError::config(format!("encrypting a name: {e}")))
    }

    async fn post_json<B: Serialize + Validate, T: DeserializeOwned>(
        &self,
        target: &str,
        body: &B,
        what: &str,
    ) -> Result<T, ChannelError> {
        body.validate().map_err(ChannelError::local)?;
        let request = WireRequest {
            method: "POST",
            target: target.to_string(),
            body: serialize(body)?,
        };
        let response = self.send(&request).await?;
        read(what, &response.body)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        target: String,
        what: &str,
    ) -> Result<T, ChannelError> {
        let request = WireRequest {
            method: "GET",
            target,
            body: Vec::new(),
        };
        let response = self.send(&request).await?;
        read(what, &response.body)
    }

    /// Adds (or re-adds: the channel keeps one per type and account) a receiver.
    pub async fn add_receiver(
        &self,
        r: &ChannelReceiver,
    ) -> Result<AddReceiverResponse, ChannelError> {
        let (sub_mchid, sub_appid) = self.share_sub(&r.sub)?;
        let body = AddReceiverRequest {
            sub_mchid,
            appid: self.config().appid.clone(),
            sub_appid,
            r#type: r.r#type,
            account: r.account.clone(),
            name: r.name.clone(),
            relation_type: r.relation_type,
            custom_relation: r.custom_relation.clone(),
        };
        self.post_json("/v3/profitsharing/receivers/add", &body, "receiver")
            .await
    }

    /// Deletes a receiver; one the channel does not know counts as deleted.
    pub async fn delete_receiver(
        &self,
        r#type: ReceiverType,
        account: &str,
        sub: &SubMerchant,
    ) -> Result<(), ChannelError> {
        let (sub_mchid, sub_appid) = self.share_sub(sub)?;
        let body = DeleteReceiverRequest {
            sub_mchid,
            appid: self.config().appid.clone(),
            sub_appid,
            r#type,
            account: account.to_string(),
        };
        let sent: Result<serde_json::Value, _> = self
            .post_json("/v3/profitsharing/receivers/delete", &body, "receiver")
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(ChannelError::Rejected { message, .. }) if message.contains("不存在") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a split order. Re-sending the same `s` is the same order at the channel.
    pub async fn share(&self, s: &ChannelShare) -> Result<OrdersEntity, ChannelError> {
        let (sub_mchid, sub_appid) = self.share_sub(&s.sub)?;
        let mut receivers = Vec::with_capacity(s.receivers.len());
        for r in &s.receivers {
            receivers.push(OrderReceiverRequest {
                r#type: r.r#type,
                account: r.account.clone(),
                name: r.name.clone(),
                amount: r.amount_fen,
                description: r.description.clone(),
            });
        }
        let body = ProfitSharingOrderRequest {
            sub_mchid,
            appid: self.config().appid.clone(),
            sub_appid,
            transaction_id: s.transaction_id.clone(),
            out_order_no: s.out_order_no.clone(),
            receivers,
            unfreeze_unsplit: s.unfreeze_unsplit,
        };
        let e: OrdersEntity = self
            .post_json("/v3/profitsharing/orders", &body, "share order")
            .await?;
        same_order(&s.out_order_no, e)
    }

    /// The split (or unfreeze) order; `None` when the channel does not know it.
    pub async fn query_share(
        &self,
        out_order_no: &str,
        transaction_id: &str,
        sub: &SubMerchant,
    ) -> Result<Option<OrdersEntity>, ChannelError> {
        paygate_wxpay::rules::check_out_request_no("/out_order_no", out_order_no)
            .map_err(ChannelError::local)?;
        let target = format!(
            "/v3/profitsharing/orders/{}?transaction_id={}{}",
            escape_path_segment(out_order_no),
            escape_path_segment(transaction_id),
            self.sub_query(sub)?
        );
        match self.get_json(target, "share order").await {
            Ok(e) => same_order(out_order_no, e).map(Some),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Unfreezes what is left of a payment to the merchant, under a new `out_order_no`.
    pub async fn unfreeze(
        &self,
        out_order_no: &str,
        transaction_id: &str,
        description: &str,
        sub: &SubMerchant,
    ) -> Result<OrdersEntity, ChannelError> {
        let (sub_mchid, _) = self.share_sub(sub)?;
        let body = UnfreezeRequest {
            sub_mchid,
            transaction_id: transaction_id.to_string(),
            out_order_no: out_order_no.to_string(),
            description: description.to_string(),
        };
        let e: OrdersEntity = self
            .post_json("/v3/profitsharing/orders/unfreeze", &body, "unfreeze")
            .await?;
        same_order(out_order_no, e)
    }

    /// Asks a receiver (a merchant) to give part of a split back.
    pub async fn share_return(
        &self,
        r: &ChannelShareReturn,
    ) -> Result<ReturnOrdersEntity, ChannelError> {
        let (sub_mchid, _) = self.share_sub(&r.sub)?;
        let body = ReturnOrderRequest {
            sub_mchid,
            order_id: None,
            out_order_no: Some(r.out_order_no.clone()),
            out_return_no: r.out_return_no.clone(),
            return_mchid: r.return_mchid.clone(),
            amount: r.amount_fen,
            description: r.description.clone(),
        };
        let e: ReturnOrdersEntity = self
            .post_json("/v3/profitsharing/return-orders", &body, "return")
            .await?;
        same_return(&r.out_return_no, e)
    }

    /// The return; `None` when the channel does not know it.
    pub async fn query_share_return(
        &self,
        out_return_no: &str,
        out_order_no: &str,
        sub: &SubMerchant,
    ) -> Result<Option<ReturnOrdersEntity>, ChannelError> {
        paygate_wxpay::rules::check_out_request_no("/out_return_no", out_return_no)
            .map_err(ChannelError::local)?;
        let target = format!(
            "/v3/profitsharing/return-orders/{}?out_order_no={}{}",
            escape_path_segment(out_return_no),
            escape_path_segment(out_order_no),
            self.sub_query(sub)?
        );
        match self.get_json(target, "return").await {
            Ok(e) => same_return(out_return_no, e).map(Some),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What of a payment is still to split (the channel's view).
    pub async fn unsplit_amount(&self, transaction_id: &str) -> Result<i64, ChannelError> {
        paygate_wxpay::rules::check_id("/transaction_id", transaction_id, 32)
            .map_err(ChannelError::local)?;
        let target = format!(
            "/v3/profitsharing/transactions/{}/amounts",
            escape_path_segment(transaction_id)
        );
        let a: UnsplitAmountResponse = self.get_json(target, "amounts").await?;
        if a.transaction_id != transaction_id {
            return Err(ChannelError::unknown(format!(
                "amounts of {transaction_id} answered about {}",
                a.transaction_id
            )));
        }
        Ok(a.unsplit_amount)
    }

    /// A sub-merchant's maximum ratio (万分比), partner channels only.
    pub async fn share_max_ratio(&self, sub: &SubMerchant) -> Result<i64, ChannelError> {
        let (Some(sub_mchid), _) = self.share_sub(sub)? else {
            return Err(ChannelError::local(ApiError::param(
                "/sub_mchid",
                "only a partner channel has sub-merchant ratios",
            )));
        };
        let target = format!(
            "/v3/profitsharing/merchant-configs/{}",
            escape_path_segment(&sub_mchid)
        );
        let c: MerchantConfigResponse = self.get_json(target, "merchant config").await?;
        Ok(c.max_ratio)
    }
}

/// An answer about another order would settle the wrong one: unknown instead.
fn same_order(out_order_no: &str, e: OrdersEntity) -> Result<OrdersEntity, ChannelError> {
    if e.out_order_no != out_order_no {
        return Err(ChannelError::unknown(format!(
            "share order {out_order_no} answered about {}",
            e.out_order_no
        )));
    }
    Ok(e)
}

fn same_return(
    out_return_no: &str,
    e: ReturnOrdersEntity,
) -> Result<ReturnOrdersEntity, ChannelError> {
    if e.out_return_no != out_return_no {
        return Err(ChannelError::unknown(format!(
            "return {out_return_no} answered about {}",
            e.out_return_no
        )));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paygate_wxpay::models::profitsharing::{OrderState, ReturnResult};

    fn entity(no: &str) -> OrdersEntity {
        OrdersEntity {
            sub_mchid: None,
            transaction_id: "4200".into(),
            out_order_no: no.into(),
            order_id: "3008".into(),
            state: OrderState::Processing,
            receivers: Vec::new(),
        }
    }

    #[test]
    fn answers_about_another_order_or_return_are_unknown() {
        assert!(same_order("A", entity("A")).is_ok());
        assert!(same_order("A", entity("B")).is_err_and(|e| e.is_unknown()));
        let r = ReturnOrdersEntity {
            sub_mchid: None,
            order_id: "3008".into(),
            out_order_no: "A".into(),
            out_return_no: "R2".into(),
            return_id: "3008".into(),
            return_mchid: "1900000109".into(),
            amount: 1,
            description: "d".into(),
            result: ReturnResult::Processing,
            fail_reason: None,
            create_time: "2026-01-01T00:00:00+08:00".into(),
            finish_time: None,
        };
        assert!(same_return("R1", r).is_err_and(|e| e.is_unknown()));
    }
}
