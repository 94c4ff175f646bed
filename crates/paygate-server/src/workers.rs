//! Background workers: the poller (asks channels about pending attempts and unsettled
//! refunds, closes expired orders at the channel first) and the outbox (delivers merchant
//! notifications on WeChat's schedule). Both work from the store, so they resume after a
//! restart or a `kill -9`, and several nodes can run them at once (leases, compare-and-set).

use std::sync::Arc;
use std::time::Duration;

use paygate_core::timefmt::rfc3339_beijing;
use paygate_store::{
    AttemptChange, AttemptState, DeliveryOutcome, DeliveryRecord, FinishedDelivery,
    NotificationRecord,
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
/// A delivery's outcome waits this long for others to share its write: one statement for a
/// burst of deliveries instead of one each (on PostgreSQL a round trip and a commit each).
/// 5 ms measured worse than 2 at the notification peak.
const RECORD_LINGER: Duration = Duration::from_millis(2);
/// Outcomes one write records at most, and outcomes waiting for the recorder at most (a full
/// queue holds deliveries, and with them the claiming of more).
const RECORD_BATCH_MAX: usize = 256;
const RECORD_QUEUE_MAX: usize = 4096;
/// An attempt that never reached the channel is given up after this long.
const NEVER_ARRIVED_AFTER: time::Duration = time::Duration::minutes(2);

/// Starts the background workers; the outbox's handle is returned, for an orderly stop.
pub fn spawn(app: Arc<AppState>) -> tokio::task::JoinHandle<()> {
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
    tokio::spawn(run_outbox(app))
}

/// One poller round; returns how many attempts it looked at. It reads only the attempts
/// whose `next_poll_at` has come, asks the channel about each, and moves each to its next
/// poll point (see [`next_poll_at`]): nothing is written for an attempt that is not due.
pub async fn poll_once(app: &AppState) -> Result<usize, paygate_store::StoreError> {
    let now = OffsetDateTime::now_utc();
    let unit = poll_unit(app);
    let due = app.store.attempts_to_poll(now, POLL_BATCH_MAX).await?;
    let n = due.len();
    for (order, attempt) in due {
        // The cached merchant spares a read per attempt.
        match app.merchants.get(app.store.as_ref(), &order.mchid).await? {
            None => {
                tracing::warn!(attempt = %attempt.attempt_id, mchid = %order.mchid, "pending attempt of an unknown merchant")
            }
            Some(merchant) if now >= order.time_expire => {
                // Expired: closed at the channel first; a payment found there wins. A close
                // that could not be done is tried again at the next point.
                if let Err(e) = close(app, &merchant.record, &order, "poller").await {
                    tracing::info!(transaction_id = %order.transaction_id, error = %e.message, "expiry close deferred");
                }
            }
            Some(merchant) => ask(app, &merchant.record, &attempt, now).await?,
        }
        let mut next = AttemptChange::to(&attempt.attempt_id, &[attempt.state], attempt.state, now);
        next.last_polled_at = Some(now);
        next.next_poll_at = Some(next_poll_at(
            attempt.created_at,
            order.time_expire,
            now,
            unit,
        ));
        // False if the attempt moved meanwhile (paid, failed, prepaid): a pending one is read
        // again next round with its new state.
        app.store.update_attempt(&next).await?;
    }
    Ok(n)
}

/// The poller's unit of age, `[workers] poll_min_age_ms` (sandbox-scaled).
fn poll_unit(app: &AppState) -> Duration {
    app.scaled(Duration::from_millis(app.config.workers.poll_min_age_ms))
}

/// When a new attempt created at `created_at` is first asked about.
pub fn first_poll_at(app: &AppState, created_at: OffsetDateTime) -> OffsetDateTime {
    created_at + poll_unit(app)
}

/// Asks the channel about one due attempt, as the merchant's sub-merchant there.
async fn ask(
    app: &AppState,
    merchant: &paygate_store::MerchantRecord,
    attempt: &paygate_store::AttemptRecord,
    now: OffsetDateTime,
) -> Result<(), paygate_store::StoreError> {
    let Some(channel) = app.channels.get(&attempt.channel_id) else {
        tracing::warn!(attempt = %attempt.attempt_id, channel = %attempt.channel_id, "pending attempt at an unknown channel");
        return Ok(());
    };
    match app.routing.sub_for(merchant, &attempt.channel_id) {
        Some(sub) => poll_attempt(app, channel, &sub, attempt, now).await,
        None => {
            tracing::warn!(attempt = %attempt.attempt_id, channel = %attempt.channel_id, "no sub-merchant mapping for a pending attempt");
            Ok(())
        }
    }
}

/// Ages (in poller units) at which a pending attempt is asked about; after the last, every
/// [`POLL_EVERY_AFTER`] units. With the defaults: 30 s, 1, 2, 5 and 10 min, then every
/// 10 min — an unpaid order waiting out its 7-day expiry costs ~1,000 channel queries, not the
/// ~20,000 of asking every 30 s. (A lost notification of a late payment is learnt within 10 min;
/// WeChat itself retries notifications for a day, and reconciliation catches the rest.)
const POLL_AT: [u64; 5] = [1, 2, 4, 10, 20];
const POLL_EVERY_AFTER: u64 = 20;

/// The first poll point after `age`, as an age (whole units of `unit`).
fn next_poll_age(age: Duration, unit: Duration) -> Duration {
    let unit_ms = unit.as_millis().max(1);
    let passed = u64::try_from(age.as_millis() / unit_ms).unwrap_or(u64::MAX);
    let last = POLL_AT[POLL_AT.len() - 1];
    let units = match POLL_AT.iter().find(|p| **p > passed) {
        Some(p) => *p,
        None => ((passed - last) / POLL_EVERY_AFTER + 1)
            .saturating_mul(POLL_EVERY_AFTER)
            .saturating_add(last),
    };
    Duration::from_millis(
        u64::try_from(unit_ms)
            .unwrap_or(u64::MAX)
            .saturating_mul(units),
    )
}

/// When an attempt asked about `now` is next asked: its next poll point, or its order's
/// expiry if that comes first (the order is then closed at the channel).
fn next_poll_at(
    created_at: OffsetDateTime,
    time_expire: OffsetDateTime,
    now: OffsetDateTime,
    unit: Duration,
) -> OffsetDateTime {
    let age = Duration::try_from(now - created_at).unwrap_or(Duration::ZERO);
    let next = time::Duration::try_from(next_poll_age(age, unit))
        .ok()
        .and_then(|d| created_at.checked_add(d))
        .unwrap_or(time_expire.max(now));
    if time_expire > now {
        next.min(time_expire)
    } else {
        next
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
/// Once a stop begins it claims nothing more, lets the deliveries in flight finish and ends
/// when their outcomes are recorded.
async fn run_outbox(app: Arc<AppState>) {
    let every = Duration::from_millis(app.config.workers.outbox_interval_ms);
    let in_flight_max = app.config.workers.deliveries_in_flight_max.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight_max));
    let (recorder, outcomes) = tokio::sync::mpsc::channel(RECORD_QUEUE_MAX);
    let recording = tokio::spawn(record_outcomes(Arc::clone(&app), outcomes));
    // Claiming a handful at a time would cost a write per handful; wait for a quarter.
    let refill_at = (in_flight_max / 4).max(1) as u32;
    while !app.shutdown.is_begun() {
        tokio::select! {
            enough = Arc::clone(&slots).acquire_many_owned(refill_at) => drop(enough),
            () = app.shutdown.begun() => break,
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
                    let (app, recorder) = (Arc::clone(&app), recorder.clone());
                    tokio::spawn(async move {
                        // The slot is held until the outcome is queued: a recorder that falls
                        // behind slows the deliveries, not memory.
                        let _permit = permit;
                        if recorder.send(deliver(&app, &record).await).await.is_err() {
                            tracing::warn!(notification = %record.id, "the delivery recorder has stopped");
                        }
                    });
                }
                if backlog {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox claim failed"),
        }
        // Woken at once when a notification is written or a stop begins, else on the interval.
        tokio::select! {
            _ = tokio::time::timeout(every, app.outbox_wake.notified()) => {}
            () = app.shutdown.begun() => {}
        }
    }
    // Every slot free means every delivery's outcome is queued; with the last sender gone
    // the recorder writes what it holds and ends.
    let all = u32::try_from(in_flight_max).unwrap_or(u32::MAX);
    drop(slots.acquire_many(all).await);
    drop(recorder);
    if let Err(e) = recording.await {
        tracing::warn!(error = %e, "the delivery recorder failed");
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

/// Writes delivery outcomes in batches: the first waits `RECORD_LINGER` for others. An outcome
/// that could not be written leaves its notification leased; when the lease runs out it is
/// delivered again, as after a crash (notifications are at-least-once, and merchants
/// de-duplicate by id).
async fn record_outcomes(
    app: Arc<AppState>,
    mut outcomes: tokio::sync::mpsc::Receiver<FinishedDelivery>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH_MAX);
    while let Some(first) = outcomes.recv().await {
        batch.push(first);
        tokio::time::sleep(RECORD_LINGER).await;
        while batch.len() < RECORD_BATCH_MAX {
            match outcomes.try_recv() {
                Ok(outcome) => batch.push(outcome),
                Err(_) => break,
            }
        }
        match app.store.finish_deliveries(&batch).await {
            Ok(recorded) if recorded < batch.len() => tracing::warn!(
                skipped = batch.len() - recorded,
                "delivery outcomes skipped: notification gone, or its attempt already recorded by another node"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, outcomes = batch.len(), "recording deliveries failed");
            }
        }
        batch.clear();
    }
}

/// Seals, signs and POSTs one notification: the attempt, its outcome and the claim it answers,
/// for the recorder.
pub async fn deliver(app: &AppState, record: &NotificationRecord) -> FinishedDelivery {
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
    FinishedDelivery {
        delivery,
        outcome,
        claimed_due: record.next_attempt_at,
    }
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
    let requested = match &record.answer_serial {
        // Recorded with the notification: no read of the order per delivery.
        Some(serial) => Some(serial.clone()).filter(|s| !s.is_empty()),
        None => match app
            .store
            .get_order_by_transaction_id(&record.transaction_id)
            .await
        {
            Ok(Some(order)) => RequestSnapshot::of(&order)
                .ok()
                .and_then(|s| s.wechatpay_serial),
            _ => None,
        },
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
        let next = |age_s: u64| next_poll_age(Duration::from_secs(age_s), unit).as_secs();
        // 30 s, 1, 2, 5 and 10 min of age; a late round skips to the point after it.
        assert_eq!(next(0), 30);
        assert_eq!(next(31), 60);
        assert_eq!(next(60), 120);
        assert_eq!(next(100), 120);
        assert_eq!(next(130), 300);
        assert_eq!(next(301), 600);
        // Then every 10 min.
        assert_eq!(next(600), 1200);
        assert_eq!(next(1199), 1200);
        assert_eq!(next(1200), 1800);
        // Over a 7-day expiry, asked at each point: about a thousand queries.
        let week = 7 * 24 * 3600;
        let (mut age, mut asked) = (next(0), 0);
        while age < week {
            asked += 1;
            age = next(age);
        }
        assert!((1000..1020).contains(&asked), "{asked}");
    }

    #[test]
    fn the_next_poll_never_passes_the_orders_expiry() {
        let unit = Duration::from_secs(30);
        let created = OffsetDateTime::UNIX_EPOCH;
        let at = |s: i64| created + time::Duration::seconds(s);
        assert_eq!(next_poll_at(created, at(3600), at(700), unit), at(1200));
        assert_eq!(next_poll_at(created, at(900), at(700), unit), at(900));
        // Already expired (its close was deferred): the schedule goes on.
        assert_eq!(next_poll_at(created, at(600), at(700), unit), at(1200));
    }
}
