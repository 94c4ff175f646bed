//! Test support: an in-process simulator, channels for its direct and partner kits, and a tiny
//! notify_url server that hands every callback (headers and raw body) to the test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use paygate_channel::{ChannelConfig, ChannelPrepay, SubMerchant, WxChannel};
use paygate_sim::{RunningSim, SimConfig};
use paygate_wxpay::models::payments::{H5Info, H5Type, SceneInfo, TradeType};
use tokio::sync::mpsc;

/// One callback as it reached the notify_url.
#[derive(Clone, Debug)]
pub struct Callback {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Callback {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn with_header(&self, name: &str, value: &str) -> Callback {
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case(name) {
                    value.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect();
        Callback {
            headers,
            body: self.body.clone(),
        }
    }
}

pub struct Harness {
    pub sim: RunningSim,
    pub dir: std::path::PathBuf,
    pub notify_url: String,
    pub callbacks: mpsc::UnboundedReceiver<Callback>,
    notify_task: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.sim.task.abort();
        self.notify_task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn start() -> Harness {
    let dir = std::env::temp_dir().join(format!("paygate-channel-test-{}", uuid::Uuid::new_v4()));
    let sim = paygate_sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        kit_dir: dir.clone(),
        time_scale: 1000,
        public_base_url: None,
        auto_onboard_sub_merchants: false,
    })
    .await
    .expect("simulator starts");
    let (tx, callbacks) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/callbacks/wxpay/{channel}",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let _ = tx.send(Callback {
                    headers,
                    body: body.to_vec(),
                });
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let notify_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Harness {
        sim,
        dir,
        notify_url: format!("http://{addr}/callbacks/wxpay/test"),
        callbacks,
        notify_task,
        http: reqwest::Client::new(),
    }
}

impl Harness {
    pub fn direct_config(&self) -> ChannelConfig {
        ChannelConfig::from_kit("direct", &self.sim.direct, &self.notify_url, true)
    }

    pub fn partner_config(&self) -> ChannelConfig {
        ChannelConfig::from_kit("partner", &self.sim.partner, &self.notify_url, true)
    }

    pub fn direct(&self) -> WxChannel {
        WxChannel::new(self.direct_config()).unwrap()
    }

    /// The partner channel and a sub-merchant onboarded through the sandbox.
    pub async fn partner(&self) -> (WxChannel, SubMerchant) {
        let channel = WxChannel::new(self.partner_config()).unwrap();
        let sub = channel.sandbox_add_sub_merchant().await.unwrap();
        (channel, sub)
    }

    pub async fn set_faults(&self, mchid: &str, faults: serde_json::Value) {
        let resp = self
            .http
            .put(format!("{}sandbox/v1/faults/{mchid}", self.sim.base_url))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{}",
            resp.text().await.unwrap()
        );
    }

    pub async fn clear_faults(&self, mchid: &str) {
        let resp = self
            .http
            .delete(format!("{}sandbox/v1/faults/{mchid}", self.sim.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }

    /// The next callback, or a panic after `deadline`.
    pub async fn next_callback(&mut self, deadline: Duration) -> Callback {
        tokio::time::timeout(deadline, self.callbacks.recv())
            .await
            .expect("a callback arrives in time")
            .expect("notify server alive")
    }
}

/// A fresh attempt id: 31 characters of `[0-9a-z_]`.
pub fn attempt_id() -> String {
    format!("att{}", &uuid::Uuid::new_v4().simple().to_string()[..28])
}

/// A prepay that satisfies each product's rules (JSAPI: openid; H5: scene_info.h5_info).
pub fn prepay(trade_type: TradeType, sub: &SubMerchant) -> ChannelPrepay {
    let scene_info = (trade_type == TradeType::Mweb).then(|| SceneInfo {
        payer_client_ip: "14.23.150.211".into(),
        device_id: None,
        store_info: None,
        h5_info: Some(H5Info {
            r#type: H5Type::Wap,
            app_name: None,
            app_url: None,
            bundle_id: None,
            package_name: None,
        }),
    });
    ChannelPrepay {
        trade_type,
        out_trade_no: attempt_id(),
        description: "QQ公仔-paygate".into(),
        attach: Some("order=42".into()),
        total_fen: 1234,
        currency: "CNY".into(),
        time_expire: None,
        payer_openid: (trade_type == TradeType::Jsapi)
            .then(|| "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_string()),
        scene_info,
        goods_tag: None,
        detail: None,
        profit_sharing: false,
        sub: sub.clone(),
    }
}
