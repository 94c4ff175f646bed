//! Bare gateway pipeline: verify -> commit1 -> signed call to channel -> verify -> commit2 -> signed answer.
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use floor::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Instant;

const PATH: &str = "/v3/pay/transactions/native";

#[derive(Deserialize)]
struct PrepayReq {
    appid: String,
    mchid: String,
    description: String,
    out_trade_no: String,
    notify_url: String,
    amount: Amount,
}
#[derive(Deserialize, Serialize)]
struct Amount {
    total: i64,
    currency: String,
}
#[derive(Serialize)]
struct UpReq<'a> {
    appid: &'a str,
    mchid: &'a str,
    description: &'a str,
    out_trade_no: &'a str,
    notify_url: &'a str,
    amount: &'a Amount,
}
#[derive(Deserialize)]
struct UpResp {
    code_url: String,
}
#[derive(Serialize)]
struct Answer<'a> {
    code_url: &'a str,
}

// ---------------- SQLite group-commit writer ----------------

enum Job {
    Insert {
        txid: String,
        mchid: String,
        out_trade_no: String,
        description: String,
        notify_url: String,
        total: i64,
        created_at: i64,
    },
    Prepaid {
        txid: String,
        code_url: String,
    },
}
struct Req {
    job: Job,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

static COMMITS: AtomicU64 = AtomicU64::new(0);
static JOBS: AtomicU64 = AtomicU64::new(0);

fn spawn_writer(path: &str, sync: &str) -> mpsc::Sender<Req> {
    let (tx, rx) = mpsc::channel::<Req>();
    let path = path.to_string();
    let sync = sync.to_string();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            let mut c = rusqlite::Connection::open(&path).expect("open db");
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            c.pragma_update(None, "synchronous", &sync).unwrap();
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS orders(
                    transaction_id TEXT PRIMARY KEY,
                    mchid TEXT NOT NULL,
                    out_trade_no TEXT NOT NULL,
                    description TEXT NOT NULL,
                    notify_url TEXT NOT NULL,
                    total INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    code_url TEXT NULL,
                    created_at INTEGER NOT NULL,
                    UNIQUE(mchid, out_trade_no));",
            )
            .unwrap();
            let mut batch: Vec<Req> = Vec::with_capacity(256);
            let mut results: Vec<Result<(), String>> = Vec::with_capacity(256);
            while let Ok(first) = rx.recv() {
                batch.push(first);
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                results.clear();
                let t = c.transaction().expect("begin");
                for r in &batch {
                    let res = match &r.job {
                        Job::Insert { txid, mchid, out_trade_no, description, notify_url, total, created_at } => t
                            .prepare_cached(
                                "INSERT INTO orders(transaction_id,mchid,out_trade_no,description,notify_url,total,state,code_url,created_at)
                                 VALUES(?1,?2,?3,?4,?5,?6,'CREATED',NULL,?7)",
                            )
                            .and_then(|mut s| s.execute(rusqlite::params![txid, mchid, out_trade_no, description, notify_url, total, created_at]))
                            .map(|_| ()),
                        Job::Prepaid { txid, code_url } => t
                            .prepare_cached("UPDATE orders SET state='PREPAID', code_url=?2 WHERE transaction_id=?1")
                            .and_then(|mut s| s.execute(rusqlite::params![txid, code_url]))
                            .map(|_| ()),
                    };
                    results.push(res.map_err(|e| e.to_string()));
                }
                let commit = t.commit().map_err(|e| e.to_string());
                COMMITS.fetch_add(1, Relaxed);
                JOBS.fetch_add(batch.len() as u64, Relaxed);
                for (r, res) in batch.drain(..).zip(results.drain(..)) {
                    let out = match (&commit, res) {
                        (Err(e), _) => Err(e.clone()),
                        (Ok(()), x) => x,
                    };
                    let _ = r.reply.send(out);
                }
            }
        })
        .unwrap();
    tx
}

async fn db(tx: &mpsc::Sender<Req>, job: Job) -> Result<(), String> {
    let (rt, rr) = tokio::sync::oneshot::channel();
    tx.send(Req { job, reply: rt })
        .map_err(|_| "writer gone".to_string())?;
    rr.await.map_err(|_| "writer dropped".to_string())?
}

// ---------------- gateway ----------------

#[derive(Clone, Copy, PartialEq)]
enum DbMode {
    None,
    One,
    Two,
}

enum Upstream {
    Reqwest(reqwest::Client),
    Hyper(hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>),
}

struct Gw {
    merchant_pub: aws_lc_rs::signature::ParsedPublicKey,
    platform_pub: aws_lc_rs::signature::ParsedPublicKey,
    chan_signer: Signer,   // gateway's key towards the channel
    answer_signer: Signer, // gateway's key towards merchants
    upstream_url: String,
    client: Upstream,
    db: Option<mpsc::Sender<Req>>,
    mode: DbMode,
    seq: AtomicU64,
    prefix: u64,
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

/// returns (status, timestamp, nonce, signature, body)
async fn call_upstream(
    gw: &Gw,
    auth: String,
    body: Vec<u8>,
) -> Result<(u16, String, String, String, Bytes), String> {
    match &gw.client {
        Upstream::Reqwest(c) => {
            let r = c
                .post(&gw.upstream_url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let st = r.status().as_u16();
            let (ts, n, s) = answer_signature(r.headers());
            let b = r.bytes().await.map_err(|e| e.to_string())?;
            Ok((st, ts, n, s, b))
        }
        Upstream::Hyper(c) => {
            let req = hyper::Request::post(&gw.upstream_url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let r = c.request(req).await.map_err(|e| e.to_string())?;
            let st = r.status().as_u16();
            let (ts, n, s) = answer_signature(r.headers());
            let b = r
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((st, ts, n, s, b))
        }
    }
}

async fn native(State(gw): State<Arc<Gw>>, headers: HeaderMap, body: Bytes) -> Response {
    // 1. verify merchant signature
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(a) = parse_auth(auth) else {
        return err(StatusCode::UNAUTHORIZED, "no auth");
    };
    let m = req_message("POST", PATH, a.timestamp, a.nonce, &body);
    if !timed(&VERIFY_NS, &VERIFY_N, || {
        verify_b64(&gw.merchant_pub, &m, a.signature)
    }) {
        return err(StatusCode::UNAUTHORIZED, "bad signature");
    }
    // 2. parse
    let req: PrepayReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if req.mchid != a.mchid {
        return err(StatusCode::BAD_REQUEST, "mchid mismatch");
    }
    let txid = format!("42{:08}{:012}", gw.prefix, gw.seq.fetch_add(1, Relaxed));
    // 3. commit 1
    if gw.mode != DbMode::None {
        let job = Job::Insert {
            txid: txid.clone(),
            mchid: req.mchid.clone(),
            out_trade_no: req.out_trade_no.clone(),
            description: req.description.clone(),
            notify_url: req.notify_url.clone(),
            total: req.amount.total,
            created_at: now_secs() as i64,
        };
        if let Err(e) = db(gw.db.as_ref().unwrap(), job).await {
            return err(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    }
    // 4. signed call to channel
    let up = UpReq {
        appid: &req.appid,
        mchid: "1230000109",
        description: &req.description,
        out_trade_no: &txid,
        notify_url: &req.notify_url,
        amount: &req.amount,
    };
    let up_body = serde_json::to_vec(&up).unwrap();
    let up_auth = timed(&SIGN_NS, &SIGN_N, || {
        auth_header(
            &gw.chan_signer,
            "1230000109",
            "GW_SERIAL_1",
            "POST",
            PATH,
            &up_body,
        )
    });
    let (st, ts, n, s, rb) = match call_upstream(&gw, up_auth, up_body).await {
        Ok(x) => x,
        Err(e) => return err(StatusCode::BAD_GATEWAY, e),
    };
    if st != 200 {
        return err(StatusCode::BAD_GATEWAY, format!("upstream {st}"));
    }
    // 5. verify channel response
    let m = resp_message(&ts, &n, &rb);
    if !timed(&VERIFY_NS, &VERIFY_N, || {
        verify_b64(&gw.platform_pub, &m, &s)
    }) {
        return err(StatusCode::BAD_GATEWAY, "bad upstream signature");
    }
    let ur: UpResp = match serde_json::from_slice(&rb) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    // 6. commit 2
    if gw.mode == DbMode::Two {
        if let Err(e) = db(
            gw.db.as_ref().unwrap(),
            Job::Prepaid {
                txid,
                code_url: ur.code_url.clone(),
            },
        )
        .await
        {
            return err(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    }
    // 7. signed answer
    let out = serde_json::to_vec(&Answer {
        code_url: &ur.code_url,
    })
    .unwrap();
    let ts = now_secs().to_string();
    let n = nonce();
    let m = resp_message(&ts, &n, &out);
    let sig = timed(&SIGN_NS, &SIGN_N, || gw.answer_signer.sign_b64(&m));
    signed_answer(out, &ts, &n, &sig, "GW_PLATFORM_SERIAL_1")
}

async fn stats() -> String {
    format!(
        "{} {} {} {} {} {}",
        COMMITS.load(Relaxed),
        JOBS.load(Relaxed),
        SIGN_NS.load(Relaxed),
        SIGN_N.load(Relaxed),
        VERIFY_NS.load(Relaxed),
        VERIFY_N.load(Relaxed)
    )
}

fn thread_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn crypto() {
    let s = Signer::load("merchant");
    let pk = s.public();
    let body = br#"{"appid":"wxd678efh567hg6787","mchid":"1900000001","description":"Image","out_trade_no":"LOAD0000000000001234","notify_url":"https://example.com/n","amount":{"total":100,"currency":"CNY"}}"#;
    let msg = req_message(
        "POST",
        PATH,
        "1700000000",
        "0123456789ABCDEF0123456789ABCDEF",
        body,
    );
    for _ in 0..100 {
        std::hint::black_box(s.sign_raw(&msg));
    }
    let n_sign = 2000;
    let c0 = thread_ns();
    let t = Instant::now();
    let mut sig = Vec::new();
    for _ in 0..n_sign {
        sig = std::hint::black_box(s.sign_raw(&msg));
    }
    let sign_us = t.elapsed().as_secs_f64() * 1e6 / n_sign as f64;
    let sign_cpu = (thread_ns() - c0) as f64 / 1e3 / n_sign as f64;
    let n_ver = 20000;
    let c0 = thread_ns();
    let t = Instant::now();
    for _ in 0..n_ver {
        assert!(pk.verify_sig(std::hint::black_box(&msg), &sig).is_ok());
    }
    let ver_us = t.elapsed().as_secs_f64() * 1e6 / n_ver as f64;
    let ver_cpu = (thread_ns() - c0) as f64 / 1e3 / n_ver as f64;
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..100_000 {
        acc = acc.wrapping_add(thread_cpu_ns());
    }
    std::hint::black_box(acc);
    eprintln!(
        "clock_gettime(THREAD_CPUTIME) ns/call = {:.0}",
        t.elapsed().as_nanos() as f64 / 100_000.0
    );
    println!(
        "crypto(thread-cpu): sign_us={:.1} verify_us={:.2} unavoidable_us(2S+2V)={:.1} | wall: sign_us={:.1} verify_us={:.2} 2S+2V={:.1}",
        sign_cpu,
        ver_cpu,
        2.0 * sign_cpu + 2.0 * ver_cpu,
        sign_us,
        ver_us,
        2.0 * sign_us + 2.0 * ver_us
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(|s| s.as_str()) == Some("crypto") {
        crypto();
        return;
    }
    let mut listen = "127.0.0.1:18080".to_string();
    let mut upstream = "http://127.0.0.1:18081".to_string();
    let mut mode = DbMode::Two;
    let mut sync = "full".to_string();
    let mut dbpath = "gw.db".to_string();
    let mut client = "reqwest".to_string();
    let mut workers: usize = 0;
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--listen" => listen = v,
            "--upstream" => upstream = v,
            "--db" => {
                mode = match v.as_str() {
                    "none" => DbMode::None,
                    "one" => DbMode::One,
                    "two" => DbMode::Two,
                    _ => panic!("--db none|one|two"),
                }
            }
            "--sync" => sync = v,
            "--dbpath" => dbpath = v,
            "--client" => client = v,
            "--workers" => workers = v.parse().unwrap(),
            x => panic!("unknown arg {x}"),
        }
        i += 2;
    }
    let db = if mode == DbMode::None {
        None
    } else {
        Some(spawn_writer(&dbpath, &sync))
    };
    let client = match client.as_str() {
        "reqwest" => Upstream::Reqwest(
            reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap(),
        ),
        "hyper" => Upstream::Hyper(
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(256)
                .build_http(),
        ),
        _ => panic!("--client reqwest|hyper"),
    };
    let merchant = Signer::load("merchant");
    let platform = Signer::load("platform");
    let gw = Arc::new(Gw {
        merchant_pub: merchant.public(),
        platform_pub: platform.public(),
        chan_signer: merchant,
        answer_signer: platform,
        upstream_url: format!("{upstream}{PATH}"),
        client,
        db,
        mode,
        seq: AtomicU64::new(0),
        prefix: now_secs() % 100_000_000,
    });
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if workers > 0 {
        b.worker_threads(workers);
    }
    let rt = b.build().unwrap();
    rt.block_on(async move {
        let app = Router::new()
            .route(PATH, post(native))
            .route("/stats", get(stats))
            .with_state(gw);
        let l = tokio::net::TcpListener::bind(&listen).await.unwrap();
        eprintln!("gw listening on {listen}");
        axum::serve(l, app).await.unwrap();
    });
}
