//! The test harness the gateway's HTTP tests share: a gateway on SQLite or PostgreSQL with
//! one onboarded merchant and its signing client, and the sandbox/admin calls around it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use paygate_server::config::Config;
use paygate_server::{RunningGateway, channel_mapping, merchants};
use paygate_wxpay::client::{KeyMode, WxClient};
use paygate_wxpay::kit::MerchantKit;
use paygate_wxpay::models::payments::Transaction;
use serde_json::{Value, json};

pub struct Gw {
    pub gw: RunningGateway,
    pub kit: MerchantKit,
    pub client: WxClient,
    pub dir: std::path::PathBuf,
    pub pg_schema: Option<(String, String)>,
    pub http: reqwest::Client,
    /// What it was started with (a test that stops it can reopen its store).
    pub config: Config,
}

impl Gw {
    /// Stops the gateway, closes its store and drops its PostgreSQL schema. Async, inside the
    /// test's runtime: a blocking clean-up in Drop would starve the pool's own rollbacks.
    pub async fn finish(self) {
        self.gw.task.abort();
        self.gw.state.store.close().await;
        remove_data(&self.dir, self.pg_schema).await;
    }
}

/// Removes a gateway's data directory and drops its PostgreSQL schema.
pub async fn remove_data(dir: &std::path::Path, pg_schema: Option<(String, String)>) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some((url, schema)) = pg_schema {
        if let Err(e) = paygate_store::drop_postgres_schema(&url, &schema).await {
            eprintln!("leaving schema {schema}: {e}");
        }
    }
}

pub fn backends() -> Vec<Option<String>> {
    let mut b = vec![None];
    match std::env::var("PAYGATE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => b.push(Some(url)),
        _ => eprintln!("PAYGATE_TEST_DATABASE_URL not set: PostgreSQL runs of this test skipped"),
    }
    b
}

pub async fn start(pg: Option<&str>, tweak: impl FnOnce(&mut Config)) -> Gw {
    let dir = std::env::temp_dir().join(format!("paygate-gw-{}", uuid::Uuid::new_v4()));
    let mut config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.sandbox.time_scale = 1000;
    config.workers.poll_interval_ms = 100_000; // 100 ms after scaling
    config.workers.poll_min_age_ms = 100_000;
    config.workers.outbox_interval_ms = 50;
    config.operator_token = Some("operator-secret".into());
    let mut pg_schema = None;
    if let Some(url) = pg {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let sep = if url.contains('?') { '&' } else { '?' };
        config.database_url = Some(format!("{url}{sep}schema={schema}"));
        pg_schema = Some((url.to_string(), schema));
    }
    tweak(&mut config);
    let gw = paygate_server::start(config.clone())
        .await
        .expect("gateway starts");
    let channel = gw.state.channel(&gw.state.default_channel).unwrap();
    let mapping = channel_mapping(channel.config(), None, None).unwrap();
    let onboarded = merchants::onboard(
        gw.state.store.as_ref(),
        &gw.state.keys,
        &gw.base_url,
        merchants::NewMerchant {
            name: "test shop".into(),
            cert_pem: None,
            mapping,
        },
    )
    .await
    .unwrap();
    let client = WxClient::from_kit(&onboarded.kit, KeyMode::PublicKey, 10_000).unwrap();
    Gw {
        gw,
        kit: onboarded.kit,
        client,
        dir,
        pg_schema,
        http: reqwest::Client::new(),
        config,
    }
}

impl Gw {
    pub fn mchid(&self) -> &str {
        &self.kit.merchant.mchid
    }

    pub async fn pay(&self, no: &str) {
        let resp = self
            .http
            .post(format!("{}sandbox/v1/pay", self.gw.base_url))
            .json(&json!({"mchid": self.mchid(), "out_trade_no": no, "result": "SUCCESS"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    pub async fn query(&self, no: &str) -> Transaction {
        self.client
            .get_json(&format!(
                "/v3/pay/transactions/out-trade-no/{no}?mchid={}",
                self.mchid()
            ))
            .await
            .unwrap()
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}admin/v1/{path}", self.gw.base_url))
            .bearer_auth("operator-secret")
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// An admin call with a JSON body.
    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}admin/v1/{path}", self.gw.base_url))
            .bearer_auth("operator-secret")
            .json(body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// The embedded simulator's sandbox API (fault injection on the channel account).
    pub async fn channel_faults(&self, faults: Value) {
        let sim = self.gw.sandbox.as_ref().unwrap();
        let sp = &sim.partner.merchant.mchid;
        let resp = self
            .http
            .put(format!("{}sandbox/v1/faults/{sp}", sim.base_url))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    pub async fn wait_state(&self, no: &str, state: &str) -> Transaction {
        eventually(|| async {
            let t = self.query(no).await;
            (t.trade_state.as_str() == state).then_some(t)
        })
        .await
    }
}

pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn out_no(p: &str) -> String {
    format!("{p}{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}
