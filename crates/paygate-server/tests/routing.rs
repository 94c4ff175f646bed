//! Retry and failover across channels, over HTTP as a merchant sees it, checked against
//! what each channel (the simulator) holds: a timeout is settled at its channel (closed
//! there) before the next channel gets a new attempt; a refusal fails over without one; an
//! abandoned order that cannot be closed stops the failover; decisions are explained on the
//! attempts; the admin API shows health and share and can switch a channel off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod routing_support;

use paygate_server::config::RuleConfig;
use paygate_store::AttemptState;
use paygate_wxpay::models::payments::TradeState;
use routing_support::{Three, backends, collectable, out_no, start};
use serde_json::{Value, json};

/// A rule that sends first attempts to A while A can take them (then the score decides).
fn a_first(c: &mut paygate_server::config::Config) {
    c.routing.rules.push(RuleConfig {
        name: "a-first".into(),
        split: [("A".to_string(), 1)].into_iter().collect(),
        fallback: true,
        ..RuleConfig::default()
    });
}

async fn prepay(t: &Three, no: &str) -> Result<Value, paygate_wxpay::client::ClientError> {
    t.client
        .post_json("/v3/pay/transactions/native", &t.native(no, 88))
        .await
}

#[tokio::test]
async fn a_timeout_is_closed_at_its_channel_before_the_next_channel_gets_a_new_attempt() {
    for pg in backends() {
        let t = start(pg.as_deref(), 400, a_first).await;
        t.faults(
            "A",
            json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 2_000, "operations": ["prepay"]}),
        );
        let no = out_no("TO");
        let answer = prepay(&t, &no).await.unwrap();
        assert!(answer["code_url"].is_string(), "{answer}");
        let attempts = t.attempts(&no).await;
        assert_eq!(attempts.len(), 2, "{attempts:#?}");
        let (first, second) = (&attempts[0], &attempts[1]);
        assert_eq!(first.channel_id, "A");
        assert_eq!(first.state, AttemptState::Closed);
        assert_eq!(
            t.at_channel(first),
            Some(TradeState::Closed),
            "closed AT the channel"
        );
        assert_ne!(second.channel_id, "A");
        assert_eq!(second.state, AttemptState::Prepaid);
        assert_eq!(second.seq, 2);
        assert_ne!(second.attempt_id, first.attempt_id);
        assert_eq!(t.at_channel(second), Some(TradeState::Notpay));
        let why = second.decision.as_deref().unwrap();
        assert!(why.starts_with("failover from A (UNKNOWN)"), "{why}");
        assert!(why.contains("A=tried"), "{why}");
        assert!(
            first
                .decision
                .as_deref()
                .unwrap()
                .starts_with("rule=a-first split→A"),
            "{first:?}"
        );
        // The same request again: the live credential, no third attempt.
        let again = prepay(&t, &no).await.unwrap();
        assert_eq!(again["code_url"], answer["code_url"]);
        assert_eq!(t.attempts(&no).await.len(), 2);
        // The payer pays the failover attempt, at its own channel and sub-merchant.
        let resp = t
            .http
            .post(format!("{}sandbox/v1/pay", t.gw.base_url))
            .json(&json!({"mchid": t.mchid(), "out_trade_no": no, "result": "SUCCESS"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        let paid = wait_order_state(&t, &no, "SUCCESS").await;
        assert_eq!(paid["trade_state"], "SUCCESS");
        let attempts = t.attempts(&no).await;
        assert_eq!(attempts[0].state, AttemptState::Closed);
        assert_eq!(attempts[1].state, AttemptState::Paid);
        t.finish().await;
    }
}

#[tokio::test]
async fn a_retryable_refusal_fails_over_without_anything_to_close() {
    for pg in backends() {
        let t = start(pg.as_deref(), 2_000, a_first).await;
        t.faults(
            "A",
            json!({"errors": [{"code": "FREQUENCY_LIMITED", "rate_ppm": 1_000_000}], "operations": ["prepay"]}),
        );
        let no = out_no("RL");
        prepay(&t, &no).await.unwrap();
        let attempts = t.attempts(&no).await;
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].state, AttemptState::Failed);
        assert_eq!(attempts[0].error_code.as_deref(), Some("FREQUENCY_LIMITED"));
        assert_eq!(t.at_channel(&attempts[0]), None, "A never had the order");
        assert_eq!(attempts[1].state, AttemptState::Prepaid);
        assert!(
            attempts[1]
                .decision
                .as_deref()
                .unwrap()
                .starts_with("failover from A (FREQUENCY_LIMITED)")
        );
        // A request the channel refuses as such is not failed over: every channel would.
        t.faults(
            "A",
            json!({"errors": [{"code": "PARAM_ERROR", "rate_ppm": 1_000_000}], "operations": ["prepay"]}),
        );
        let no = out_no("PE");
        let err = prepay(&t, &no).await.unwrap_err();
        assert_eq!(err.api_code(), Some("PARAM_ERROR"));
        assert_eq!(t.attempts(&no).await.len(), 1);
        t.finish().await;
    }
}

#[tokio::test]
async fn an_abandoned_order_that_cannot_be_closed_stops_the_failover() {
    for pg in backends() {
        let t = start(pg.as_deref(), 300, |c| {
            a_first(c);
            c.routing.settle_calls_max = 3;
        })
        .await;
        // Everything at A times out: the prepay, the query and the close.
        t.faults(
            "A",
            json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 2_000}),
        );
        let no = out_no("NC");
        let err = prepay(&t, &no).await.unwrap_err();
        assert_eq!(err.api_code(), Some("SYSTEM_ERROR"));
        let attempts = t.attempts(&no).await;
        assert_eq!(attempts.len(), 1, "no second channel order: {attempts:#?}");
        assert_eq!(attempts[0].state, AttemptState::Unknown);
        // The simulator processed the close whose answer never came: closed there, which the
        // gateway cannot know yet.
        assert_eq!(t.at_channel(&attempts[0]), Some(TradeState::Closed));
        // A answers again; the merchant retries: A says the attempt's order is closed, so it
        // is recorded CLOSED and a new attempt goes to another channel.
        t.faults("A", json!({}));
        let answer = prepay(&t, &no).await.unwrap();
        assert!(answer["code_url"].is_string());
        let attempts = t.attempts(&no).await;
        assert_eq!(attempts.len(), 2, "{attempts:#?}");
        assert_eq!(attempts[0].state, AttemptState::Closed);
        assert_eq!(attempts[1].state, AttemptState::Prepaid);
        let open = attempts
            .iter()
            .filter(|a| collectable(t.at_channel(a)))
            .count();
        assert_eq!(open, 1);
        t.finish().await;
    }
}

#[tokio::test]
async fn closing_an_order_closes_every_open_attempt_at_its_own_channel() {
    let t = start(None, 400, a_first).await;
    t.faults(
        "A",
        json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 2_000, "operations": ["prepay"]}),
    );
    let no = out_no("CL");
    prepay(&t, &no).await.unwrap();
    let close = format!("/v3/pay/transactions/out-trade-no/{no}/close");
    let status = t
        .client
        .post_no_content(&close, &json!({"mchid": t.mchid()}))
        .await
        .unwrap();
    assert_eq!(status, 204);
    for a in t.attempts(&no).await {
        assert_eq!(a.state, AttemptState::Closed, "{a:?}");
        assert_eq!(t.at_channel(&a), Some(TradeState::Closed), "{a:?}");
    }
    t.finish().await;
}

#[tokio::test]
async fn the_admin_api_shows_health_and_share_and_switches_a_channel_off() {
    let t = start(None, 2_000, |_| {}).await;
    for _ in 0..30 {
        prepay(&t, &out_no("AD")).await.unwrap();
    }
    let (status, view) = t.admin(reqwest::Method::GET, "channels", None).await;
    assert_eq!(status, 200, "{view}");
    let channels = view["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 3);
    let routed: u64 = channels
        .iter()
        .map(|c| c["totals"]["routed"].as_u64().unwrap())
        .sum();
    assert_eq!(routed, 30);
    let share: f64 = channels.iter().map(|c| c["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "{view}");
    assert_eq!(channels[0]["breaker"], "closed");
    assert_eq!(channels[0]["fee_rate_bp"], 20);
    let (status, a) = t
        .admin(
            reqwest::Method::PATCH,
            "channels/A",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!((status, &a["enabled"]), (200, &json!(false)), "{a}");
    for _ in 0..20 {
        let no = out_no("OFF");
        prepay(&t, &no).await.unwrap();
        let attempts = t.attempts(&no).await;
        assert_ne!(attempts[0].channel_id, "A");
        assert!(
            attempts[0]
                .decision
                .as_deref()
                .unwrap()
                .contains("A=disabled"),
            "{:?}",
            attempts[0].decision
        );
    }
    let metrics = t
        .http
        .get(format!("{}admin/v1/channels/metrics", t.gw.base_url))
        .bearer_auth("operator-secret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("paygate_channel_routed_total{channel=\"A\"}"),
        "{metrics}"
    );
    let (status, _) = t.admin(reqwest::Method::GET, "channels/Z", None).await;
    assert_eq!(status, 404);
    t.finish().await;
}

async fn wait_order_state(t: &Three, no: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let tx: Value = t
            .client
            .get_json(&format!(
                "/v3/pay/transactions/out-trade-no/{no}?mchid={}",
                t.mchid()
            ))
            .await
            .unwrap();
        if tx["trade_state"] == state {
            return tx;
        }
        assert!(std::time::Instant::now() < deadline, "{tx}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_daily_cap_moves_traffic_elsewhere_and_survives_a_restart_through_the_store() {
    for pg in backends() {
        let t = start(pg.as_deref(), 2_000, |c| {
            a_first(c);
            c.channels[0].daily_volume_fen_max = Some(200);
        })
        .await;
        let first = out_no("CAP");
        t.client
            .post_json::<_, Value>("/v3/pay/transactions/native", &t.native(&first, 150))
            .await
            .unwrap();
        assert_eq!(t.attempts(&first).await[0].channel_id, "A");
        // 150 + 100 would pass A's 200: elsewhere, and the decision says why.
        let second = out_no("CAP");
        t.client
            .post_json::<_, Value>("/v3/pay/transactions/native", &t.native(&second, 100))
            .await
            .unwrap();
        let a = &t.attempts(&second).await[0];
        assert_ne!(a.channel_id, "A");
        assert!(a.decision.as_deref().unwrap().contains("A=cap"), "{a:?}");
        // A node that starts afresh reads the day's volume back from the store.
        let routing = &t.gw.state.routing;
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        routing.router.set_volume(0, 0, now_ms);
        routing
            .refresh_volumes(t.gw.state.store.as_ref())
            .await
            .unwrap();
        assert_eq!(routing.router.volume_today(0, now_ms), 150);
        t.finish().await;
    }
}

#[tokio::test]
async fn the_prepay_deadline_bounds_a_request_whatever_the_channel_timeouts() {
    let t = start(None, 5_000, |c| {
        a_first(c);
        c.routing.prepay_deadline_ms = 800;
    })
    .await;
    t.faults(
        "A",
        json!({"timeout_rate_ppm": 1_000_000, "timeout_ms": 3_000}),
    );
    let no = out_no("DL");
    let began = std::time::Instant::now();
    let err = prepay(&t, &no).await.unwrap_err();
    let took = began.elapsed();
    assert_eq!(err.api_code(), Some("SYSTEM_ERROR"));
    assert!(took < std::time::Duration::from_millis(2_000), "{took:?}");
    let attempts = t.attempts(&no).await;
    assert_eq!(attempts.len(), 1, "no failover past the deadline");
    assert_eq!(attempts[0].state, AttemptState::Unknown);
    t.finish().await;
}

#[tokio::test]
async fn a_refused_refresh_of_an_expired_credential_closes_the_old_channel_order_before_failing_over()
 {
    let t = start(None, 2_000, a_first).await;
    let no = out_no("EX");
    prepay(&t, &no).await.unwrap();
    let first = t.attempts(&no).await.remove(0);
    assert_eq!(
        (first.channel_id.as_str(), first.state),
        ("A", AttemptState::Prepaid)
    );
    // The credential has expired; A now refuses the refresh (429): the channel order A holds
    // must be closed there before another channel hands out a credential.
    let mut expired = paygate_store::AttemptChange::to(
        &first.attempt_id,
        &[AttemptState::Prepaid],
        AttemptState::Prepaid,
        time::OffsetDateTime::now_utc(),
    );
    expired.prepay_expires_at = Some(time::OffsetDateTime::now_utc() - time::Duration::minutes(1));
    assert!(t.gw.state.store.update_attempt(&expired).await.unwrap());
    t.faults(
        "A",
        json!({"errors": [{"code": "FREQUENCY_LIMITED", "rate_ppm": 1_000_000}], "operations": ["prepay"]}),
    );
    prepay(&t, &no).await.unwrap();
    let attempts = t.attempts(&no).await;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0].state, AttemptState::Closed);
    assert_eq!(t.at_channel(&attempts[0]), Some(TradeState::Closed));
    assert_eq!(attempts[1].state, AttemptState::Prepaid);
    assert_ne!(attempts[1].channel_id, "A");
    t.finish().await;
}
