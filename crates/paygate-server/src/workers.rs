//! Background workers: the poller (asks channels about pending attempts and unsettled
//! refunds, closes expired orders at the channel first) and the outbox (delivers merchant
//! notifications on WeChat's schedule). Both work from the store, so they resume after a
//! restart or a `kill -9`, and several nodes can run them at once (leases, compare-and-set).

use std::sync::Arc;
use std::time::Duration;

use paygate_core::timefmt::rfc3339_beijing;
use paygate_store::{
    AttemptChange, AttemptState, DeliveryOutcome, DeliveryRecord, NotificationRecord,
};
use paygate_wxpay::crypto::aead::AeadAlgorithm;
use paygate_wxpay::notify::Notification;
use paygate_wxpay::server::{answer_headers, request_id};
use time::OffsetDateTime;

use crate::flow::{RequestSnapshot, apply_channel_transaction, close};
use crate::http::AppState;

/// Intervals after the previous attempt (§3.4), before the sandbox time scale.
pub const RETRY_SCHEDULE_S: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];
/// §3.4: a merchant must answer within 5 s.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_BATCH_MAX: u32 = 200;
/// An attempt that never reached the channel is given up after this long.
const NEVER_ARRIVED_AFTER: time::Duration = time::Duration::minutes(2);

pub fn spawn(app: Arc<AppState>) {
    // Closes business days for merchant bills (bills.rs).
    crate::bills::spawn_closer(Arc::clone(&app));
    // Yesterday's reconciliation, once its bills exist (recon_admin.rs).
    crate::recon_admin::spawn_daily(Arc::clone(&app));
    // Daily settlement, T+N (settlement.rs).
    crate::settlement::spawn_daily(Arc::clone(&app));
    let poller = Arc::clone(&app);
    tokio::spawn(async move {
        let every = poller.scaled(Duration::from_millis(
            poller.config.workers.poll_interval_ms,
        ));
        loop {
            if let Err(e) = poll_once(&poller).await {
                tracing::warn!(error = %e, "poller round failed");
            }
            // Refunds whose outcome was never learnt, or whose callback was lost.
            if let Err(e) = crate::refunds::poll_once(&poller).await {
                tracing::warn!(error = %e, "refund poller round failed");
            }
            // Share orders and returns whose outcome was never learnt (sharing_flow.rs).
            if let Err(e) = crate::sharing_flow::poll_once(&poller).await {
                tracing::warn!(error = %e, "profit-sharing poller round failed");
            }
            tokio::time::sleep(every).await;
        }
    });
    let volumes = Arc::clone(&app);
    tokio::spawn(async move {
        let every = Duration::from_millis(volumes.config.routing.volume_refresh_ms);
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = volumes
                .routing
                .refresh_volumes(volumes.store.as_ref())
                .await
            {
                tracing::warn!(error = %e, "refreshing channel volumes failed");
            }
        }
    });
    tokio::spawn(run_outbox(app));
}

/// One poller round; returns how many attempts it looked at.
pub async fn poll_once(app: &AppState) -> Result<usize, paygate_store::StoreError> {
    let now = OffsetDateTime::now_utc();
    let min_age = app.scaled(Duration::from_millis(app.config.workers.poll_min_age_ms));
    let polled_before = now - time::Duration::try_from(min_age).unwrap_or(time::Duration::ZERO);
    let due = app
        .store
        .attempts_to_poll(polled_before, POLL_BATCH_MAX)
        .await?;
    let n = due.len();
    for (order, attempt) in due {
        // Most visits make no channel call (see `poll_due`): the cached merchant spares a read.
        let Some(merchant) = app.merchants.get(app.store.as_ref(), &order.mchid).await? else {
            continue;
        };
        let merchant = merchant.record;
        let Some(channel) = app.channels.get(&attempt.channel_id) else {
            continue;
        };
        if now >= order.time_expire {
            // Expired: closed at the channel first; a payment found there wins.
            if let Err(e) = close(app, &merchant, &order, "poller").await {
                tracing::info!(transaction_id = %order.transaction_id, error = %e.message, "expiry close deferred");
            }
            continue;
        }
        let since = |t: OffsetDateTime| Duration::try_from(t - attempt.created_at).ok();
        let due = poll_due(
            attempt.last_polled_at.and_then(since),
            since(now).unwrap_or(Duration::ZERO),
            min_age,
        );
        // Each attempt at its own channel, as the merchant's sub-merchant there.
        match app.routing.sub_for(&merchant, &attempt.channel_id) {
            Some(sub) if due => poll_attempt(app, channel, &sub, &attempt, now).await?,
            Some(_) => {}
            None => {
                tracing::warn!(attempt = %attempt.attempt_id, channel = %attempt.channel_id, "no sub-merchant mapping for a pending attempt")
            }
        }
        let mut touched =
            AttemptChange::to(&attempt.attempt_id, &[attempt.state], attempt.state, now);
        touched.last_polled_at = Some(now);
        app.store.update_attempt(&touched).await?;
    }
    Ok(n)
}

/// Ages (in `poll_min_age` units) at which a pending attempt is asked about; after the last,
/// every [`POLL_EVERY_AFTER`] units. With the defaults: 30 s, 1, 2, 5 and 10 min, then every
/// 10 min — an unpaid order waiting out its 7-day expiry costs ~1,000 channel queries, not the
/// ~20,000 of asking every 30 s. (A lost notification of a late payment is learnt within 10 min;
/// WeChat itself retries notifications for a day, and reconciliation catches the rest.)
const POLL_AT: [u64; 5] = [1, 2, 4, 10, 20];
const POLL_EVERY_AFTER: u64 = 20;

/// How many poll points an attempt of this age has passed.
fn poll_points_passed(age: Duration, min_age: Duration) -> u64 {
    let unit = min_age.as_millis().max(1);
    let units = (age.as_millis() / unit) as u64;
    let fixed = POLL_AT.iter().filter(|p| **p <= units).count() as u64;
    let last = POLL_AT[POLL_AT.len() - 1];
    fixed + units.saturating_sub(last) / POLL_EVERY_AFTER
}

/// Whether the attempt passed a poll point since it was last visited (`last_age`, `None` if
/// never): the poller visits every pending attempt each `poll_min_age`, but only these visits
/// cost a signed channel query.
fn poll_due(last_age: Option<Duration>, age: Duration, min_age: Duration) -> bool {
    match last_age {
        None => true,
        Some(last) => poll_points_passed(age, min_age) > poll_points_passed(last, min_age),
    }
}

/// Asks the attempt's channel about it and applies the answer.
async fn poll_attempt(
    app: &AppState,
    channel: &paygate_channel::WxChannel,
    sub: &paygate_channel::SubMerchant,
    attempt: &paygate_store::AttemptRecord,
    now: OffsetDateTime,
) -> Result<(), paygate_store::StoreError> {
    match channel.query(&attempt.attempt_id, sub).await {
        Ok(Some(tx)) => {
            if let Err(e) = apply_channel_transaction(app, &attempt.attempt_id, &tx, "poller").await
            {
                tracing::warn!(attempt = %attempt.attempt_id, error = %e.message, "poller could not apply");
            }
        }
        Ok(None) if now - attempt.created_at > NEVER_ARRIVED_AFTER => {
            let change = AttemptChange::to(
                &attempt.attempt_id,
                &[AttemptState::Created, AttemptState::Unknown],
                AttemptState::Failed,
                now,
            );
            app.store.update_attempt(&change).await?;
        }
        Ok(None) | Err(_) => {}
    }
    Ok(())
}

/// The outbox worker: keeps up to `deliveries_in_flight_max` deliveries going, claiming more
/// as soon as a quarter of the slots is free instead of after a whole round has finished, so
/// one slow merchant (up to the 5 s ack timeout) never holds back everyone's notifications.
async fn run_outbox(app: Arc<AppState>) {
    let every = Duration::from_millis(app.config.workers.outbox_interval_ms);
    let in_flight_max = app.config.workers.deliveries_in_flight_max.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight_max));
    // Claiming a handful at a time would cost a write per handful; wait for a quarter.
    let refill_at = (in_flight_max / 4).max(1) as u32;
    loop {
        if let Ok(enough) = Arc::clone(&slots).acquire_many_owned(refill_at).await {
            drop(enough);
        }
        let free = slots.available_permits();
        let want = free.min(app.config.workers.outbox_batch_max.max(1) as usize);
        match outbox_claim(&app, want as u32).await {
            Ok(claimed) => {
                let backlog = claimed.len() == want;
                for record in claimed {
                    let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                        return;
                    };
                    let app = Arc::clone(&app);
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Err(e) = deliver(&app, &record).await {
                            tracing::warn!(notification = %record.id, error = %e, "recording a delivery failed");
                        }
                    });
                }
                if backlog {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox claim failed"),
        }
        // Woken at once when a notification is written, else on the interval.
        let _ = tokio::time::timeout(every, app.outbox_wake.notified()).await;
    }
}

/// Claims up to `limit` due notifications for this node.
async fn outbox_claim(
    app: &AppState,
    limit: u32,
) -> Result<Vec<NotificationRecord>, paygate_store::StoreError> {
    let now = OffsetDateTime::now_utc();
    // The lease shrinks with the sandbox time scale (a killed node's claims free up sooner)
    // but always outlasts one delivery, so no two claims deliver the same row at once.
    let lease = app
        .scaled(Duration::from_millis(app.config.workers.outbox_lease_ms))
        .max(ACK_TIMEOUT + Duration::from_secs(1));
    let lease = time::Duration::try_from(lease).unwrap_or(time::Duration::seconds(30));
    let claimed = app
        .store
        .claim_notifications(now, now + lease, limit)
        .await?;
    let lag_ms = claimed
        .iter()
        .map(|r| (now - r.next_attempt_at).whole_milliseconds() as i64)
        .max()
        .unwrap_or(0);
    app.metrics.observe_outbox_claim(claimed.len(), lag_ms);
    Ok(claimed)
}

/// Seals, signs and POSTs one notification, then records the attempt and what follows.
pub async fn deliver(
    app: &AppState,
    record: &NotificationRecord,
) -> Result<(), paygate_store::StoreError> {
    let started = std::time::Instant::now();
    let attempt = record.attempts + 1;
    let (status, error) = match envelope(app, record).await {
        Ok((body, headers)) => {
            let mut req = app
                .http
                .post(&record.url)
                .timeout(ACK_TIMEOUT)
                .header("Content-Type", "application/json")
                .header("Request-ID", request_id())
                .body(body);
            for (name, value) in headers {
                req = req.header(name, value);
            }
            match req.send().await {
                Ok(resp) => (Some(i32::from(resp.status().as_u16())), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        Err(e) => (None, Some(e)),
    };
    let at = OffsetDateTime::now_utc();
    let acked = status.is_some_and(|s| (200..300).contains(&s));
    let outcome = if acked {
        DeliveryOutcome::Delivered
    } else {
        match RETRY_SCHEDULE_S.get(record.attempts.max(0) as usize) {
            Some(wait_s) => {
                let wait = app.scaled(Duration::from_secs(*wait_s));
                DeliveryOutcome::Retry {
                    next_attempt_at: at
                        + time::Duration::try_from(wait).unwrap_or(time::Duration::ZERO),
                }
            }
            None => DeliveryOutcome::GaveUp,
        }
    };
    let delivery = DeliveryRecord {
        notification_id: record.id.clone(),
        attempt,
        at,
        http_status: status,
        error,
        duration_ms: started.elapsed().as_millis() as i64,
    };
    app.metrics.observe_notification(match &outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::Retry { .. } => "retry",
        DeliveryOutcome::GaveUp => "gave_up",
    });
    app.store.finish_delivery(&delivery, &outcome).await
}

/// The envelope bytes and signature headers: sealed with the merchant's APIv3 key, signed by
/// the platform key the merchant asked for at prepay (public key or certificate).
async fn envelope(
    app: &AppState,
    record: &NotificationRecord,
) -> Result<(Vec<u8>, Vec<(&'static str, String)>), String> {
    // The request path's cache (2 s, dropped on an admin change) spares a read per delivery.
    let merchant = app
        .merchants
        .get(app.store.as_ref(), &record.mchid)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("merchant {} is gone", record.mchid))?
        .record;
    let requested = match app
        .store
        .get_order_by_transaction_id(&record.transaction_id)
        .await
    {
        Ok(Some(order)) => RequestSnapshot::of(&order)
            .ok()
            .and_then(|s| s.wechatpay_serial),
        _ => None,
    };
    let (original_type, summary) = match record.event_type.as_str() {
        "REFUND.SUCCESS" => ("refund", "退款成功"),
        "REFUND.ABNORMAL" => ("refund", "退款异常"),
        "REFUND.CLOSED" => ("refund", "退款关闭"),
        "PROFITSHARING.SUCCESS" => ("profitsharing", "分账成功"),
        "PROFITSHARING.CLOSED" => ("profitsharing", "分账关闭"),
        _ => ("transaction", "支付成功"),
    };
    let sealed = Notification::seal(
        AeadAlgorithm::Aes256Gcm,
        merchant.apiv3_key.as_bytes(),
        &record.event_type,
        summary,
        original_type,
        original_type,
        record.plaintext.as_bytes(),
        record.id.clone(),
        rfc3339_beijing(record.created_at),
    )
    .map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(&sealed).map_err(|e| e.to_string())?;
    let keys = app.keys.current();
    let (key, serial) = keys.answer_key(requested.as_deref());
    let headers = answer_headers(
        key,
        serial,
        &body,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .map_err(|e| e.to_string())?;
    Ok((body, headers.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_with_age_then_settle_at_every_twenty_units() {
        let unit = Duration::from_secs(30);
        let at = |s: u64| Duration::from_secs(s);
        // Never asked: asked now.
        assert!(poll_due(None, at(31), unit));
        // Visited at 31 s, again at 62 s: the 1-min point was passed.
        assert!(poll_due(Some(at(31)), at(62), unit));
        // 62 s → 93 s: no point in between (the next is 2 min).
        assert!(!poll_due(Some(at(62)), at(93), unit));
        assert!(poll_due(Some(at(93)), at(124), unit));
        // Between 5 and 10 min only the 10-min point counts.
        assert!(!poll_due(Some(at(301)), at(590), unit));
        assert!(poll_due(Some(at(590)), at(601), unit));
        // Then every 10 min, however often the attempt is visited.
        let visits: Vec<u64> = (0..200).map(|k| 601 + 31 * k).collect();
        let asked = visits
            .windows(2)
            .filter(|w| poll_due(Some(at(w[0])), at(w[1]), unit))
            .count();
        let span_min = (visits[199] - visits[0]) / 60;
        assert!(
            asked as u64 >= span_min / 10 - 1 && asked as u64 <= span_min / 10 + 1,
            "{asked} queries in {span_min} min"
        );
        // Over a 7-day expiry, visited every 30 s: about a thousand queries.
        let week = 7 * 24 * 3600 / 30;
        let total = (1..week)
            .filter(|k| poll_due(Some(at(30 * k)), at(30 * (k + 1)), unit))
            .count();
        assert!((1000..1020).contains(&total), "{total}");
    }
}
