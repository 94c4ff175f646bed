//! Test support: an in-process simulator on a free port, clients for its kits, and a
//! notify_url receiver that records what WeChat Pay (the simulator) sends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use paygate_sim::{RunningSim, SimConfig};
use paygate_wxpay::client::{KeyMode, WxClient};
use paygate_wxpay::kit::MerchantKit;

pub struct Sim {
    pub sim: RunningSim,
    pub dir: std::path::PathBuf,
    pub http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.sim.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn start_sim() -> Sim {
    let dir = std::env::temp_dir().join(format!("paygate-sim-test-{}", uuid::Uuid::new_v4()));
    let sim = paygate_sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        kit_dir: dir.clone(),
        time_scale: 1000,
        public_base_url: None,
        auto_onboard_sub_merchants: false,
    })
    .await
    .expect("simulator starts");
    Sim {
        sim,
        dir,
        http: reqwest::Client::new(),
    }
}

impl Sim {
    pub fn client(&self, kit: &MerchantKit, mode: KeyMode) -> WxClient {
        WxClient::from_kit(kit, mode, 10_000).expect("client from kit")
    }

    pub fn direct(&self) -> WxClient {
        self.client(&self.sim.direct, KeyMode::PublicKey)
    }

    pub fn partner(&self) -> WxClient {
        self.client(&self.sim.partner, KeyMode::PublicKey)
    }

    pub async fn sandbox(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(format!("{}sandbox/v1/{path}", self.sim.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn sandbox_put(&self, path: &str, body: serde_json::Value) -> u16 {
        let resp = self
            .http
            .put(format!("{}sandbox/v1/{path}", self.sim.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    }

    pub async fn sandbox_get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}sandbox/v1/{path}", self.sim.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn pay_direct(&self, out_trade_no: &str) -> serde_json::Value {
        let (status, body) = self
            .sandbox(
                "pay",
                serde_json::json!({"mchid": self.sim.direct.merchant.mchid, "out_trade_no": out_trade_no, "result": "SUCCESS"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn pay_partner(&self, out_trade_no: &str) -> serde_json::Value {
        let m = &self.sim.partner.merchant;
        let (status, body) = self
            .sandbox(
                "pay",
                serde_json::json!({"sp_mchid": m.mchid, "sub_mchid": m.sub_mchid, "out_trade_no": out_trade_no, "result": "SUCCESS"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// What reached the notify_url.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    /// HTTP status to answer with; the receiver fails the first `fail_first` deliveries.
    pub fail_first: Arc<Mutex<u32>>,
}

pub async fn start_receiver() -> Receiver {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let fail_first: Arc<Mutex<u32>> = Arc::default();
    let (g, f) = (Arc::clone(&got), Arc::clone(&fail_first));
    let app = axum::Router::new().route(
        "/notify",
        post(move |headers: HeaderMap, body: Bytes| {
            let (g, f) = (Arc::clone(&g), Arc::clone(&f));
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            v.to_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                g.lock().unwrap().push(Received {
                    headers,
                    body: body.to_vec(),
                });
                let mut fail = f.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/notify"),
        got,
        fail_first,
    }
}

impl Receiver {
    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits (polling, with a deadline) until `n` deliveries arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} notifications, got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Polls `f` until it returns Some, or panics after 10 s.
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn out_no(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..20]
    )
}
