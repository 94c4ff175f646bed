//! `paygate bench load`: a load generator that speaks WeChat Pay v3 like a merchant (any V3
//! server: the gateway or the simulator), closed loop (a fixed number of callers) or open
//! loop (a fixed rate, latency measured from each call's intended start, so a stall is not
//! hidden), reporting throughput, latency percentiles, errors by code and the server
//! process's CPU seconds per operation read from /proc.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use paygate_wxpay::client::{ClientError, KeyMode, WxClient};
use paygate_wxpay::kit::MerchantKit;
use serde::Serialize;
use serde_json::{Value, json};

use super::procstat;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Native prepay (one order per call).
    Native,
    Jsapi,
    App,
    H5,
    /// Query by out_trade_no of orders created beforehand.
    Query,
    /// Close (each call creates an order first; only the close is timed).
    Close,
    /// Refund of a paid order (each call creates and pays an order first; only the refund is timed).
    Refund,
    /// Native prepay + sandbox payment + query; notifications counted at a local notify_url.
    Mix,
    /// Merchant notification delivery: orders are paid beforehand (untimed) and their
    /// notifications collected; each call re-sends a chunk of them in one bulk admin call
    /// (needs `--operator-token`) whenever fewer than a backlog's worth are on their way, so
    /// the outbox never runs dry, and the figures that count are notifications received per
    /// second and the server's CPU per notification (the bulk calls cost ~nothing per id).
    Notify,
}

/// Paid orders whose notifications the `notify` scenario re-sends, round robin. Four
/// backlogs' worth: an id is re-sent only once its previous re-send was delivered.
const NOTIFY_POOL: usize = 4 * NOTIFY_BACKLOG;
/// Re-sent notifications kept on their way (queued in the outbox or in flight).
const NOTIFY_BACKLOG: usize = 256;
/// Ids per bulk re-send.
const NOTIFY_CHUNK: usize = 64;

pub struct LoadArgs {
    pub scenario: Scenario,
    pub concurrency: usize,
    /// Calls per second (open loop); None = closed loop.
    pub rate: Option<u64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub pid: Option<u32>,
    pub key_mode: KeyMode,
    /// The gateway's operator token (admin API), for the `notify` scenario.
    pub operator_token: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub scenario: Scenario,
    pub mode: String,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub throughput_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub server_pid: Option<u32>,
    pub server_cpu_s_per_op: Option<f64>,
    pub server_cpu_us_per_op: Option<f64>,
    /// The same CPU split by the server's threads, grouped by name without a trailing number
    /// (`tokio-rt-worker`, `sqlite-writer`, `sqlite-reader`…): where an operation's CPU goes.
    pub server_cpu_us_per_op_by_thread: BTreeMap<String, f64>,
    pub notifications_received: u64,
    pub notifications_per_s: f64,
    /// Server CPU divided by the notifications received in the window.
    pub server_cpu_us_per_notification: Option<f64>,
    /// From the server's `/metrics` (a paygate gateway): signatures made and verified per
    /// successful operation, the CPU they took, and the server's whole CPU divided by it —
    /// the issue-8 ratio measured inside the one process, under the load itself.
    pub server_signs_per_op: Option<f64>,
    pub server_verifies_per_op: Option<f64>,
    pub server_signature_cpu_us_per_op: Option<f64>,
    pub server_cpu_over_signatures: Option<f64>,
    /// From the gateway's `paygate_http_added_duration_seconds` histogram over the window: the
    /// bucket bounds holding the median and the 99th percentile of the latency it adds
    /// (its answer minus its waits on channels), in ms; "≤ this".
    pub server_added_ms_p50_at_most: Option<f64>,
    pub server_added_ms_p99_at_most: Option<f64>,
}

/// The server's `/metrics` text; `None` when it has none (the simulator).
async fn scrape_metrics(http: &reqwest::Client, base_url: &str) -> Option<String> {
    http.get(format!("{base_url}metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// `paygate_http_added_duration_seconds` buckets summed over endpoints: (bound s, count).
fn added_histogram(text: &str) -> Option<Vec<(f64, f64)>> {
    let mut buckets: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("paygate_http_added_duration_seconds_bucket{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ")?;
        let le = labels
            .rsplit_once("le=\"")?
            .1
            .trim_end_matches('"')
            .to_string();
        *buckets.entry(le).or_default() += value.trim().parse::<f64>().ok()?;
    }
    let mut out: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(le, n)| (le.parse().unwrap_or(f64::INFINITY), n))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    (!out.is_empty()).then_some(out)
}

/// The smallest bucket bound (ms) under which `q` of the window's answers fall.
fn added_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let window: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = window.last()?.1;
    if total <= 0.0 {
        return None;
    }
    window
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| le * 1000.0)
}

/// The gateway's signature counters from its `/metrics`: (signs, verifies, CPU seconds).
fn signature_counters(text: &str) -> Option<(f64, f64, f64)> {
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((
        value("paygate_signatures_total{op=\"sign\"}")?,
        value("paygate_signatures_total{op=\"verify\"}")?,
        value("paygate_signature_cpu_seconds_total{op=\"sign\"}")?
            + value("paygate_signature_cpu_seconds_total{op=\"verify\"}")?,
    ))
}

struct Shared {
    client: WxClient,
    kit: MerchantKit,
    http: reqwest::Client,
    notify_url: String,
    seq: AtomicU64,
    prefix: String,
    query_pool: Vec<String>,
    /// Notification ids seen by the receiver (the envelope's `id`).
    notification_ids: Arc<Mutex<Vec<String>>>,
    notify_pool: Vec<String>,
    operator_token: Option<String>,
    /// Notifications received at `notify_url`, and re-sends asked for: their difference is
    /// the notify scenario's backlog.
    notified: Arc<AtomicU64>,
    resent: AtomicU64,
    /// One bulk re-send at a time, so the backlog bound holds.
    resend_turn: tokio::sync::Mutex<()>,
}

impl Shared {
    fn next_no(&self) -> String {
        format!(
            "{}{:010}",
            self.prefix,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn body(&self, no: &str, trade: Scenario) -> Value {
        let m = &self.kit.merchant;
        let mut body = json!({"appid": m.appid, "mchid": m.mchid, "description": "paygate bench",
            "out_trade_no": no, "notify_url": self.notify_url, "amount": {"total": 1, "currency": "CNY"}});
        match trade {
            Scenario::Jsapi => body["payer"] = json!({"openid": "oBenchOpenid0000000000000000"}),
            Scenario::H5 => {
                body["scene_info"] =
                    json!({"payer_client_ip": "127.0.0.1", "h5_info": {"type": "Wap"}})
            }
            _ => {}
        }
        body
    }

    async fn prepay(&self, trade: Scenario, no: &str) -> Result<(), String> {
        let path = match trade {
            Scenario::Jsapi => "jsapi",
            Scenario::App => "app",
            Scenario::H5 => "h5",
            _ => "native",
        };
        let r: Result<Value, ClientError> = self
            .client
            .post_json(
                &format!("/v3/pay/transactions/{path}"),
                &self.body(no, trade),
            )
            .await;
        r.map(|_| ()).map_err(code)
    }

    async fn pay(&self, no: &str) -> Result<(), String> {
        let resp = self
            .http
            .post(format!("{}sandbox/v1/pay", self.client.base_url()))
            .json(
                &json!({"mchid": self.kit.merchant.mchid, "out_trade_no": no, "result": "SUCCESS"}),
            )
            .send()
            .await
            .map_err(|e| format!("sandbox: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("sandbox HTTP {}", resp.status().as_u16()))
        }
    }

    async fn resend(&self, ids: &[&String]) -> Result<(), String> {
        let token = self.operator_token.as_deref().unwrap_or_default();
        let resp = self
            .http
            .post(format!(
                "{}admin/v1/notifications/resend",
                self.client.base_url()
            ))
            .bearer_auth(token)
            .json(&json!({ "ids": ids }))
            .send()
            .await
            .map_err(|e| format!("admin: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("admin HTTP {}", resp.status().as_u16()))
        }
    }

    /// Until the gateway has learned of the payment: the channel's callback reaches it after
    /// the sandbox answered, and a refund of an order not yet SUCCESS is rightly refused
    /// (404 RESOURCE_NOT_EXISTS), which would count the harness's race as the gateway's error.
    async fn await_paid(&self, no: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.order(no).await?["trade_state"] == "SUCCESS" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "order {no} not SUCCESS 10 s after the sandbox paid it"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn query(&self, no: &str) -> Result<(), String> {
        self.order(no).await.map(|_| ())
    }

    /// The order by out_trade_no, as the merchant API answers it.
    async fn order(&self, no: &str) -> Result<Value, String> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={}",
            self.kit.merchant.mchid
        );
        self.client.get_json::<Value>(&path).await.map_err(code)
    }
}

fn code(e: ClientError) -> String {
    match e {
        ClientError::Api { status, code, .. } => format!("{status} {code}"),
        ClientError::Timeout => "timeout".into(),
        ClientError::Transport(_) => "transport".into(),
        ClientError::BadSignature(_) => "bad signature".into(),
        ClientError::Decode(_) => "decode".into(),
        ClientError::Config(m) => format!("config: {m}"),
    }
}

/// One timed call; returns its own latency (setup excluded).
async fn call(shared: &Shared, scenario: Scenario, i: u64) -> (Duration, Result<(), String>) {
    match scenario {
        Scenario::Query => {
            let no = &shared.query_pool[(i as usize) % shared.query_pool.len().max(1)];
            let t = Instant::now();
            let r = shared.query(no).await;
            (t.elapsed(), r)
        }
        Scenario::Close => {
            let no = shared.next_no();
            if let Err(e) = shared.prepay(Scenario::Native, &no).await {
                return (Duration::ZERO, Err(format!("setup: {e}")));
            }
            let t = Instant::now();
            let path = format!("/v3/pay/transactions/out-trade-no/{no}/close");
            let r = shared
                .client
                .post_no_content(&path, &json!({"mchid": shared.kit.merchant.mchid}))
                .await;
            (t.elapsed(), r.map(|_| ()).map_err(code))
        }
        Scenario::Refund => {
            let no = shared.next_no();
            if let Err(e) = async {
                shared.prepay(Scenario::Native, &no).await?;
                shared.pay(&no).await?;
                shared.await_paid(&no).await
            }
            .await
            {
                return (Duration::ZERO, Err(format!("setup: {e}")));
            }
            let t = Instant::now();
            let body = json!({"out_trade_no": no, "out_refund_no": format!("R{no}"),
                              "amount": {"refund": 1, "total": 1, "currency": "CNY"}});
            let r: Result<Value, ClientError> = shared
                .client
                .post_json("/v3/refund/domestic/refunds", &body)
                .await;
            (t.elapsed(), r.map(|_| ()).map_err(code))
        }
        Scenario::Notify => {
            let _turn = shared.resend_turn.lock().await;
            // Wait until the backlog has room (a lost delivery must not stall the run: after
            // a second the count is taken as it is).
            let waited = Instant::now();
            while shared.resent.load(Ordering::Relaxed)
                >= shared.notified.load(Ordering::Relaxed) + NOTIFY_BACKLOG as u64
            {
                if waited.elapsed() > Duration::from_secs(1) {
                    shared
                        .resent
                        .store(shared.notified.load(Ordering::Relaxed), Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let pool = &shared.notify_pool;
            let first = (i as usize * NOTIFY_CHUNK) % pool.len().max(1);
            let ids: Vec<&String> = (0..NOTIFY_CHUNK.min(pool.len()))
                .map(|k| &pool[(first + k) % pool.len()])
                .collect();
            let t = Instant::now();
            let r = shared.resend(&ids).await;
            shared.resent.fetch_add(ids.len() as u64, Ordering::Relaxed);
            (t.elapsed(), r)
        }
        Scenario::Mix => {
            let no = shared.next_no();
            let t = Instant::now();
            let r = async {
                shared.prepay(Scenario::Native, &no).await?;
                shared.pay(&no).await?;
                shared.query(&no).await
            }
            .await;
            (t.elapsed(), r)
        }
        trade => {
            let no = shared.next_no();
            let t = Instant::now();
            let r = shared.prepay(trade, &no).await;
            (t.elapsed(), r)
        }
    }
}

struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Result<Self, String> {
        // Microseconds from 1 µs to 2 minutes, 3 significant figures.
        let hist = Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())?;
        Ok(Self {
            hist,
            ops: 0,
            errors: BTreeMap::new(),
        })
    }

    fn record(&mut self, latency: Duration, result: Result<(), String>) {
        self.ops += 1;
        // Beyond the bounds the value is clamped rather than lost.
        self.hist
            .saturating_record((latency.as_micros() as u64).max(1));
        if let Err(e) = result {
            *self.errors.entry(e).or_default() += 1;
        }
    }
}

async fn notify_receiver(
    counter: Arc<AtomicU64>,
    ids: Arc<Mutex<Vec<String>>>,
) -> Result<String, String> {
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counter = Arc::clone(&counter);
            let ids = Arc::clone(&ids);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                let mut ids = ids.lock().unwrap_or_else(|p| p.into_inner());
                // Only the first few hundred are kept: the notify scenario's pool.
                if ids.len() < NOTIFY_POOL {
                    if let Some(id) = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                    {
                        ids.push(id);
                    }
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/notify"))
}

pub async fn run(kit_dir: &Path, args: LoadArgs) -> Result<LoadReport, String> {
    let kit = MerchantKit::read_from_dir(kit_dir).map_err(|e| e.to_string())?;
    let client = WxClient::from_kit(&kit, args.key_mode, 30_000).map_err(|e| e.to_string())?;
    let notified = Arc::new(AtomicU64::new(0));
    let notification_ids = Arc::new(Mutex::new(Vec::new()));
    let notify_url = notify_receiver(Arc::clone(&notified), Arc::clone(&notification_ids)).await?;
    let port = reqwest::Url::parse(&kit.merchant.base_url)
        .ok()
        .and_then(|u| u.port_or_known_default());
    let pid = args
        .pid
        .or_else(|| port.and_then(procstat::pid_listening_on));
    let mut shared = Shared {
        client,
        kit,
        http: reqwest::Client::new(),
        notify_url,
        seq: AtomicU64::new(0),
        prefix: format!(
            "B{}",
            time::OffsetDateTime::now_utc().unix_timestamp() % 100_000_000
        ),
        query_pool: Vec::new(),
        notification_ids,
        notify_pool: Vec::new(),
        operator_token: args.operator_token.clone(),
        notified: Arc::clone(&notified),
        resent: AtomicU64::new(0),
        resend_turn: tokio::sync::Mutex::new(()),
    };
    if args.scenario == Scenario::Query {
        for _ in 0..256 {
            let no = shared.next_no();
            shared
                .prepay(Scenario::Native, &no)
                .await
                .map_err(|e| format!("creating orders to query: {e}"))?;
            shared.query_pool.push(no);
        }
    }
    if args.scenario == Scenario::Notify {
        shared.notify_pool = notify_pool(&shared).await?;
        shared
            .resent
            .store(notified.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    let shared = Arc::new(shared);
    // Warm-up: connections, caches, the server's JIT-free but cold paths.
    let warm_until = Instant::now() + args.warmup;
    let mut i = 0;
    while Instant::now() < warm_until {
        let _ = call(&shared, args.scenario, i).await;
        i += 1;
    }
    let tally = Arc::new(Mutex::new(Tally::new()?));
    let base_url = shared.client.base_url().to_string();
    let metrics_before = scrape_metrics(&shared.http, &base_url).await;
    let signatures_before = metrics_before.as_deref().and_then(signature_counters);
    let added_before = metrics_before.as_deref().and_then(added_histogram);
    let cpu_before = pid.and_then(procstat::cpu_seconds);
    let threads_before = pid.and_then(procstat::cpu_seconds_by_thread);
    let notified_before = notified.load(Ordering::Relaxed);
    let started = Instant::now();
    let stop = started + args.duration;
    let counter = Arc::new(AtomicU64::new(1_000_000));
    let mode = match args.rate {
        None => {
            let mut workers = Vec::new();
            for _ in 0..args.concurrency.max(1) {
                let (shared, tally, counter) = (
                    Arc::clone(&shared),
                    Arc::clone(&tally),
                    Arc::clone(&counter),
                );
                let scenario = args.scenario;
                workers.push(tokio::spawn(async move {
                    while Instant::now() < stop {
                        let i = counter.fetch_add(1, Ordering::Relaxed);
                        let (latency, result) = call(&shared, scenario, i).await;
                        tally
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record(latency, result);
                    }
                }));
            }
            for w in workers {
                let _ = w.await;
            }
            format!("closed loop, {} callers", args.concurrency.max(1))
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1) * 16));
            let mut next = Instant::now();
            let mut handles = Vec::new();
            while next < stop {
                tokio::time::sleep_until(next.into()).await;
                let intended = next;
                next += interval;
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    break;
                };
                let (shared, tally, counter) = (
                    Arc::clone(&shared),
                    Arc::clone(&tally),
                    Arc::clone(&counter),
                );
                let scenario = args.scenario;
                handles.push(tokio::spawn(async move {
                    let _permit = permit;
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let (own, result) = call(&shared, scenario, i).await;
                    // From the intended start: queueing behind a slow server counts.
                    let latency = intended.elapsed().max(own);
                    tally
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(latency, result);
                }));
            }
            for h in handles {
                let _ = h.await;
            }
            format!("open loop, {rate}/s")
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    // Let in-flight notifications land before counting them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_after = pid.and_then(procstat::cpu_seconds);
    let threads_after = pid.and_then(procstat::cpu_seconds_by_thread);
    let metrics_after = scrape_metrics(&shared.http, &base_url).await;
    let signatures_after = metrics_after.as_deref().and_then(signature_counters);
    let added_after = metrics_after.as_deref().and_then(added_histogram);
    let added = |q: f64| match (&added_before, &added_after) {
        (Some(b), Some(a)) => added_quantile(b, a, q),
        _ => None,
    };
    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    let q = |p: f64| tally.hist.value_at_quantile(p) as f64 / 1000.0;
    let errors: u64 = tally.errors.values().sum();
    let ok_ops = tally.ops.saturating_sub(errors).max(1);
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some((b - a) / ok_ops as f64),
        _ => None,
    };
    let by_thread = match (&threads_before, &threads_after) {
        (Some(b), Some(a)) => procstat::cpu_seconds_by_group(b, a)
            .into_iter()
            .map(|(group, s)| (group, s * 1e6 / ok_ops as f64))
            .collect(),
        _ => BTreeMap::new(),
    };
    let notifications = notified.load(Ordering::Relaxed) - notified_before;
    let signatures = match (signatures_before, signatures_after) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1, b.2 - a.2)),
        _ => None,
    };
    let cpu_per_notification = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if notifications > 0 => Some((b - a) * 1e6 / notifications as f64),
        _ => None,
    };
    Ok(LoadReport {
        scenario: args.scenario,
        mode,
        ops: tally.ops,
        errors,
        seconds,
        throughput_per_s: tally.ops as f64 / seconds,
        latency_ms_p50: q(0.50),
        latency_ms_p95: q(0.95),
        latency_ms_p99: q(0.99),
        latency_ms_max: tally.hist.max() as f64 / 1000.0,
        errors_by_code: tally.errors.clone(),
        server_pid: pid,
        server_cpu_s_per_op: cpu,
        server_cpu_us_per_op: cpu.map(|c| c * 1e6),
        server_cpu_us_per_op_by_thread: by_thread,
        notifications_received: notifications,
        notifications_per_s: notifications as f64 / seconds,
        server_cpu_us_per_notification: cpu_per_notification,
        server_signs_per_op: signatures.map(|(signs, _, _)| signs / ok_ops as f64),
        server_verifies_per_op: signatures.map(|(_, verifies, _)| verifies / ok_ops as f64),
        server_signature_cpu_us_per_op: signatures.map(|(_, _, s)| s * 1e6 / ok_ops as f64),
        server_cpu_over_signatures: match (cpu_before, cpu_after, signatures) {
            (Some(a), Some(b), Some((_, _, s))) if s > 0.0 => Some((b - a) / s),
            _ => None,
        },
        server_added_ms_p50_at_most: added(0.50),
        server_added_ms_p99_at_most: added(0.99),
    })
}

/// Pays [`NOTIFY_POOL`] orders and waits for their notifications: the ids to re-send.
async fn notify_pool(shared: &Shared) -> Result<Vec<String>, String> {
    if shared.operator_token.is_none() {
        return Err(
            "the notify scenario re-sends through the admin API: pass --operator-token".into(),
        );
    }
    // Sequential: a few seconds of setup, and no ordering surprises in the pool.
    for _ in 0..NOTIFY_POOL {
        let no = shared.next_no();
        async {
            shared.prepay(Scenario::Native, &no).await?;
            shared.pay(&no).await
        }
        .await
        .map_err(|e| format!("paying orders to notify about: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = shared
            .notification_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if ids.len() >= NOTIFY_POOL {
            return Ok(ids);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} notifications arrived within 60 s",
                ids.len(),
                NOTIFY_POOL
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn print(r: &LoadReport) {
    println!("scenario {:?} ({}), {:.1} s", r.scenario, r.mode, r.seconds);
    println!("  operations      {} ({} errors)", r.ops, r.errors);
    println!("  throughput      {:.0} /s", r.throughput_per_s);
    println!(
        "  latency ms      p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        r.latency_ms_p50, r.latency_ms_p95, r.latency_ms_p99, r.latency_ms_max
    );
    for (code, n) in &r.errors_by_code {
        println!("  error {code:<28} {n}");
    }
    match (r.server_pid, r.server_cpu_us_per_op) {
        (Some(pid), Some(us)) => {
            println!("  server CPU      {us:.0} µs per successful operation (pid {pid})")
        }
        _ => println!("  server CPU      unknown (server process not visible; pass --pid)"),
    }
    if !r.server_cpu_us_per_op_by_thread.is_empty() {
        let mut threads: Vec<_> = r.server_cpu_us_per_op_by_thread.iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let split: Vec<String> = threads
            .iter()
            .filter(|(_, us)| **us >= 0.5)
            .map(|(group, us)| format!("{group} {us:.0}"))
            .collect();
        println!("  by thread       {} µs", split.join(", "));
    }
    if r.notifications_received > 0 {
        println!(
            "  notifications   {} received ({:.0} /s)",
            r.notifications_received, r.notifications_per_s
        );
    }
    if let Some(us) = r.server_cpu_us_per_notification {
        println!("  server CPU      {us:.0} µs per notification received");
    }
    if let (Some(signs), Some(verifies), Some(us), Some(ratio)) = (
        r.server_signs_per_op,
        r.server_verifies_per_op,
        r.server_signature_cpu_us_per_op,
        r.server_cpu_over_signatures,
    ) {
        println!(
            "  signatures      {signs:.2} signed + {verifies:.2} verified per operation, {us:.0} µs CPU; server CPU ÷ that = {ratio:.2}×"
        );
    }
    if let (Some(p50), Some(p99)) = (r.server_added_ms_p50_at_most, r.server_added_ms_p99_at_most) {
        println!(
            "  gateway adds    p50 ≤ {p50} ms, p99 ≤ {p99} ms (its answer minus its channel waits)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_quantiles_come_from_the_window_only() {
        let before = [(0.001, 10.0), (0.005, 10.0), (f64::INFINITY, 10.0)];
        // 100 answers in the window: 90 within 1 ms, 9 more within 5 ms, one slower.
        let after = [(0.001, 100.0), (0.005, 109.0), (f64::INFINITY, 110.0)];
        assert_eq!(added_quantile(&before, &after, 0.5), Some(1.0));
        assert_eq!(added_quantile(&before, &after, 0.99), Some(5.0));
        assert_eq!(added_quantile(&after, &after, 0.99), None);
    }
}
