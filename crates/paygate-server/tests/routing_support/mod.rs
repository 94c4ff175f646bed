//! Three channels on one simulator: its default provider account is channel A, two more
//! provider accounts are B and C. The gateway routes a merchant whose own channel is A over
//! all three (sandbox provider channels allocate its sub-merchants at B and C).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use paygate_server::RunningGateway;
use paygate_server::config::{ChannelEntry, Config};
use paygate_sim::RunningSim;
use paygate_sim::accounts::{AccountKind, AccountScheme};
use paygate_sim::faults::Faults;
use paygate_store::AttemptRecord;
use paygate_wxpay::client::{KeyMode, WxClient};
use paygate_wxpay::kit::MerchantKit;
use paygate_wxpay::models::payments::TradeState;
use serde_json::{Value, json};

pub const CHANNELS: [&str; 3] = ["A", "B", "C"];

pub struct Three {
    pub sim: RunningSim,
    pub gw: RunningGateway,
    pub kit: MerchantKit,
    pub client: WxClient,
    /// Channel id → the provider's sp_mchid at the simulator.
    pub sp_mchid: HashMap<String, String>,
    pub dir: PathBuf,
    pub pg_schema: Option<(String, String)>,
    pub http: reqwest::Client,
}

pub fn backends() -> Vec<Option<String>> {
    let mut b = vec![None];
    match std::env::var("PAYGATE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => b.push(Some(url)),
        _ => eprintln!("PAYGATE_TEST_DATABASE_URL not set: PostgreSQL runs of this test skipped"),
    }
    b
}

/// Starts the simulator (three provider accounts) and the gateway with channels A, B, C:
/// fees 20, 25 and 38 bp, A's calls time out after `a_timeout_ms`.
pub async fn start(pg: Option<&str>, a_timeout_ms: u64, tweak: impl FnOnce(&mut Config)) -> Three {
    let dir = std::env::temp_dir().join(format!("paygate-routing-{}", uuid::Uuid::new_v4()));
    let sim_dir = dir.join("sim");
    let sim = paygate_sim::start(paygate_sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        kit_dir: sim_dir.clone(),
        time_scale: 1,
        public_base_url: None,
        auto_onboard_sub_merchants: true,
    })
    .await
    .unwrap();
    let mut sp_mchid = HashMap::new();
    sp_mchid.insert("A".to_string(), sim.partner.merchant.mchid.clone());
    let mut kit_dirs = vec![sim_dir.join("partner")];
    for id in ["B", "C"] {
        let kit = paygate_sim::create_account(
            &sim.state,
            AccountKind::ServiceProvider,
            AccountScheme::Rsa,
            1,
        )
        .unwrap();
        kit_dirs.push(sim_dir.join(&kit.merchant.mchid));
        sp_mchid.insert(id.to_string(), kit.merchant.mchid);
    }
    let mut config = Config {
        data_dir: dir.join("gw"),
        ..Config::default()
    };
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.operator_token = Some("operator-secret".into());
    config.workers.outbox_interval_ms = 50;
    for ((id, kit_dir), (fee_rate_bp, timeout_ms)) in
        CHANNELS
            .iter()
            .zip(kit_dirs)
            .zip([(20, a_timeout_ms), (25, 5_000), (38, 5_000)])
    {
        config.channels.push(ChannelEntry {
            id: id.to_string(),
            kit_dir,
            sandbox: true,
            timeout_ms,
            kind: Some("wx_partner".into()),
            fee_rate_bp,
            all_merchants: true,
            ..ChannelEntry::default()
        });
    }
    let mut pg_schema = None;
    if let Some(url) = pg {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let sep = if url.contains('?') { '&' } else { '?' };
        config.database_url = Some(format!("{url}{sep}schema={schema}"));
        pg_schema = Some((url.to_string(), schema));
    }
    tweak(&mut config);
    let gw = paygate_server::start(config).await.expect("gateway starts");
    let a = gw.state.channel("A").unwrap();
    let mapping = paygate_server::channel_mapping(a.config(), None, None).unwrap();
    let onboarded = paygate_server::merchants::onboard(
        gw.state.store.as_ref(),
        &gw.state.keys,
        &gw.base_url,
        paygate_server::merchants::NewMerchant {
            name: "routing shop".into(),
            cert_pem: None,
            mapping,
        },
    )
    .await
    .unwrap();
    let client = WxClient::from_kit(&onboarded.kit, KeyMode::PublicKey, 60_000).unwrap();
    Three {
        sim,
        gw,
        kit: onboarded.kit,
        client,
        sp_mchid,
        dir,
        pg_schema,
        http: reqwest::Client::new(),
    }
}

impl Three {
    pub async fn finish(mut self) {
        self.gw.task.abort();
        self.gw.state.store.close().await;
        self.sim.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((url, schema)) = self.pg_schema.take() {
            if let Err(e) = paygate_store::drop_postgres_schema(&url, &schema).await {
                eprintln!("leaving schema {schema}: {e}");
            }
        }
    }

    pub fn mchid(&self) -> &str {
        &self.kit.merchant.mchid
    }

    pub fn native(&self, no: &str, total: i64) -> Value {
        json!({"appid": self.kit.merchant.appid, "mchid": self.mchid(), "description": "路由测试",
               "out_trade_no": no, "notify_url": "https://merchant.example/notify",
               "amount": {"total": total, "currency": "CNY"}})
    }

    /// Faults of one channel's provider account at the simulator (empty: none).
    pub fn faults(&self, channel: &str, faults: Value) {
        let faults: Faults = serde_json::from_value(faults).unwrap();
        self.sim
            .state
            .faults
            .write()
            .unwrap()
            .insert(self.sp_mchid[channel].clone(), faults);
    }

    pub async fn attempts(&self, out_trade_no: &str) -> Vec<AttemptRecord> {
        let store = &self.gw.state.store;
        let order = store
            .get_order(self.mchid(), out_trade_no)
            .await
            .unwrap()
            .unwrap();
        store.attempts(&order.transaction_id).await.unwrap()
    }

    /// The attempt's order as the simulator (the channel) holds it; `None`: never created.
    pub fn at_channel(&self, attempt: &AttemptRecord) -> Option<TradeState> {
        let key = (
            self.sp_mchid[&attempt.channel_id].clone(),
            attempt.attempt_id.clone(),
        );
        self.sim.state.store().orders.get(&key).map(|o| o.state)
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}admin/v1/{path}", self.gw.base_url))
            .bearer_auth("operator-secret");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// A collectable channel order: a payer holding its credential could still pay it.
pub fn collectable(state: Option<TradeState>) -> bool {
    matches!(
        state,
        Some(TradeState::Notpay | TradeState::Payerror | TradeState::Userpaying)
    )
}

pub fn out_no(tag: &str) -> String {
    format!("{tag}{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}
