//! 100,000 generated malformed or hostile merchant requests against the gateway's router
//! (in process, no sockets): bad JSON, wrong types, huge fields, 4-byte characters, bad
//! signatures, replays, stale clocks, path tricks, odd methods. No panic, never a 5xx, and
//! every refusal in the V3 error shape `{code, message}`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request};
use paygate_server::config::Config;
use paygate_server::{channel_mapping, merchants};
use paygate_wxpay::crypto::SigningKey;
use paygate_wxpay::kit::MerchantKit;
use paygate_wxpay::sign::{new_nonce, sign_request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tower::ServiceExt;

const REQUESTS: usize = 100_000;

struct Fixture {
    kit: MerchantKit,
    key: SigningKey,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Fixture {
    fn auth(&self, method: &str, target: &str, body: &[u8], ts: i64, nonce: &str) -> String {
        let m = &self.kit.merchant;
        sign_request(
            &self.key,
            &m.mchid,
            &m.serial_no,
            method,
            target,
            body,
            ts,
            nonce,
        )
        .unwrap()
        .to_header_value()
    }
}

/// A hostile body: valid JSON with bad values, or not JSON at all.
fn hostile_body(rng: &mut StdRng, f: &Fixture) -> Vec<u8> {
    let m = &f.kit.merchant;
    let good = || {
        serde_json::json!({"appid": m.appid, "mchid": m.mchid, "description": "d", "out_trade_no": "HOSTILE01",
            "notify_url": "https://e.com/n", "amount": {"total": 1}})
    };
    match rng.random_range(0..16) {
        0 => {
            // Truncated JSON.
            let s = good().to_string();
            let cut = rng.random_range(0..s.len());
            s.as_bytes()[..cut].to_vec()
        }
        1 => (0..rng.random_range(0..512))
            .map(|_| rng.random::<u8>())
            .collect(),
        2 => {
            let mut v = good();
            v["amount"]["total"] = serde_json::json!("100");
            v.to_string().into_bytes()
        }
        3 => {
            let mut v = good();
            v["description"] = serde_json::json!("x".repeat(rng.random_range(128..200_000)));
            v.to_string().into_bytes()
        }
        4 => {
            let mut v = good();
            v["description"] = serde_json::json!("红包🧧😀");
            v.to_string().into_bytes()
        }
        5 => {
            let mut v = good();
            v["amount"]["total"] = serde_json::json!(rng.random_range(-5..=0));
            v.to_string().into_bytes()
        }
        6 => b"{\"amount\":{\"total\":1e400}}".to_vec(),
        7 => format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        8 => {
            let mut v = good();
            v["out_trade_no"] = serde_json::json!(["a", "b"]);
            v.to_string().into_bytes()
        }
        9 => {
            let mut v = good();
            v["notify_url"] = serde_json::json!("javascript:alert(1)");
            v.to_string().into_bytes()
        }
        10 => {
            let mut v = good();
            v["out_trade_no"] = serde_json::json!("../../etc/passwd");
            v.to_string().into_bytes()
        }
        11 => b"null".to_vec(),
        12 => b"\"\\ud800\"".to_vec(),
        13 => {
            let mut v = good();
            v["mchid"] = serde_json::json!("1900000000");
            v.to_string().into_bytes()
        }
        14 => {
            let mut v = good();
            v["amount"]["total"] = serde_json::json!(i64::MAX);
            v["time_expire"] = serde_json::json!("yesterday");
            v.to_string().into_bytes()
        }
        _ => format!("{{\"a\":{}}}", "1".repeat(rng.random_range(1..400))).into_bytes(),
    }
}

fn hostile_target(rng: &mut StdRng, mchid: &str) -> (Method, String) {
    let targets = [
        (Method::POST, "/v3/pay/transactions/native".to_string()),
        (Method::POST, "/v3/pay/transactions/jsapi".to_string()),
        (Method::POST, "/v3/pay/transactions/h5".to_string()),
        (Method::POST, "/v3/pay/transactions/micropay".to_string()),
        (
            Method::GET,
            format!("/v3/pay/transactions/out-trade-no/..%2F..%2Fadmin?mchid={mchid}"),
        ),
        (
            Method::GET,
            format!("/v3/pay/transactions/id/%00%FF?mchid={mchid}"),
        ),
        (
            Method::GET,
            format!("/v3/pay/transactions/out-trade-no/X?mchid={mchid}&mchid={mchid}"),
        ),
        (
            Method::GET,
            "/v3/pay/transactions/out-trade-no/X?mchid=%ZZ".to_string(),
        ),
        (
            Method::GET,
            format!(
                "/v3/pay/transactions/out-trade-no/{}?mchid={mchid}",
                "A".repeat(3000)
            ),
        ),
        (
            Method::POST,
            "/v3/pay/transactions/out-trade-no/NOPE/close".to_string(),
        ),
        (Method::DELETE, "/v3/pay/transactions/native".to_string()),
        (Method::PUT, "/v3/certificates".to_string()),
        (
            Method::GET,
            "/v3/certificates?algorithm_type=DSA".to_string(),
        ),
        (Method::POST, "/paygate/v1/pay-params".to_string()),
        (Method::GET, "//v3//pay/transactions//native".to_string()),
        (Method::PATCH, "/v3/refund/domestic/refunds".to_string()),
    ];
    targets[rng.random_range(0..targets.len())].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_never_panic_never_5xx_and_always_answer_in_the_v3_shape() {
    let dir = std::env::temp_dir().join(format!("paygate-hostile-{}", uuid::Uuid::new_v4()));
    let mut config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.sandbox.time_scale = 1000;
    let gw = paygate_server::start(config).await.unwrap();
    let state = &gw.state;
    let channel = state.channel(&state.default_channel).unwrap();
    let onboarded = merchants::onboard(
        state.store.as_ref(),
        &state.keys,
        &gw.base_url,
        merchants::NewMerchant {
            name: "hostile".into(),
            cert_pem: None,
            mapping: channel_mapping(channel.config(), None, None).unwrap(),
        },
    )
    .await
    .unwrap();
    let f = Fixture {
        key: SigningKey::from_pkcs8_pem(&onboarded.kit.apiclient_key_pem).unwrap(),
        kit: onboarded.kit,
    };
    let router = paygate_server::router(std::sync::Arc::clone(&gw.state));
    let mut rng = StdRng::seed_from_u64(0x5eed_2026);
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut replayable: Option<(String, String, Vec<u8>)> = None;
    for i in 0..REQUESTS {
        let (method, target) = hostile_target(&mut rng, &f.kit.merchant.mchid);
        let body = if method == Method::GET {
            Vec::new()
        } else {
            hostile_body(&mut rng, &f)
        };
        let kind = rng.random_range(0..10);
        // Signatures: mostly valid (so bodies and paths are what gets tested), some broken.
        let auth = match kind {
            0 => None,
            1 => Some("WECHATPAY2-SHA256-RSA2048 garbage".to_string()),
            2 => Some(f.auth(
                method.as_str(),
                &target,
                b"something else",
                now(),
                &new_nonce(),
            )),
            3 => Some(f.auth(method.as_str(), &target, &body, now() - 3600, &new_nonce())),
            4 => Some(f.auth(method.as_str(), &target, &body, now() * 1000, &new_nonce())),
            5 => match &replayable {
                Some((t, a, b)) if *t == target && *b == body => Some(a.clone()),
                _ => Some(f.auth(method.as_str(), &target, &body, now(), "replayed-nonce")),
            },
            6 => Some(format!(
                "WECHATPAY2-SM2-WITH-SM3 {}",
                "x".repeat(rng.random_range(0..20_000))
            )),
            _ => Some(f.auth(method.as_str(), &target, &body, now(), &new_nonce())),
        };
        if kind == 5 {
            replayable = auth.clone().map(|a| (target.clone(), a, body.clone()));
        }
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&target)
            .header("Content-Type", "application/json");
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let req = req.body(Body::from(body.clone())).unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        *by_status.entry(status).or_default() += 1;
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            status < 500,
            "request {i}: {method} {target} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if !(200..300).contains(&status) {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "request {i}: {status} body is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert!(
                v["code"].is_string() && v["message"].is_string(),
                "request {i}: not the V3 error shape: {v}"
            );
        }
    }
    eprintln!("{REQUESTS} hostile requests, answers by status: {by_status:?}");
    assert_eq!(by_status.values().sum::<usize>(), REQUESTS);
    assert!(by_status.keys().all(|s| *s < 500));
    gw.task.abort();
    let _ = std::fs::remove_dir_all(dir);
}
