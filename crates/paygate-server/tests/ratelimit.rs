//! Issue 7 §3: per-merchant rate limits. A merchant past its bucket gets 429
//! `FREQUENCY_LIMITED` in the V3 error shape (signed like every answer); another merchant is
//! not affected; the bucket refills.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use paygate_server::{channel_mapping, merchants};
use paygate_wxpay::client::{ClientError, KeyMode, WxClient};
use serde_json::Value;

mod common;

use common::*;

async fn query(client: &WxClient, mchid: &str) -> Result<Value, ClientError> {
    client
        .get_json::<Value>(&format!(
            "/v3/pay/transactions/out-trade-no/none-such?mchid={mchid}"
        ))
        .await
}

fn limited(r: &Result<Value, ClientError>) -> bool {
    matches!(r, Err(ClientError::Api { status: 429, code, .. }) if code == "FREQUENCY_LIMITED")
}

#[tokio::test]
async fn a_merchant_over_its_rate_gets_429_frequency_limited_and_others_do_not() {
    let gw = start(None, |c| {
        c.security.rate_limit_per_s = 5;
        c.security.rate_limit_burst = 10;
    })
    .await;
    let mchid = gw.mchid().to_string();
    let mut outcomes = Vec::new();
    for _ in 0..30 {
        outcomes.push(query(&gw.client, &mchid).await);
    }
    let refused = outcomes.iter().filter(|r| limited(r)).count();
    // A burst of 10 (plus what refills while 30 requests run): the rest are refused.
    assert!((10..=20).contains(&refused), "{refused} refused");
    for r in &outcomes {
        assert!(
            limited(r) || matches!(r, Err(ClientError::Api { status: 404, .. })),
            "{r:?}"
        );
    }

    // Another merchant has a bucket of its own.
    let channel = gw.gw.state.channel(&gw.gw.state.default_channel).unwrap();
    let other = merchants::onboard(
        gw.gw.state.store.as_ref(),
        &gw.gw.state.keys,
        &gw.gw.base_url,
        merchants::NewMerchant {
            name: "other".into(),
            cert_pem: None,
            mapping: channel_mapping(channel.config(), None, None).unwrap(),
        },
    )
    .await
    .unwrap();
    let other_client = WxClient::from_kit(&other.kit, KeyMode::PublicKey, 10_000).unwrap();
    assert!(!limited(
        &query(&other_client, &other.kit.merchant.mchid).await
    ));

    // The bucket refills at 5 per second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!limited(&query(&gw.client, &mchid).await));
    gw.finish().await;
}
