//! Closed-loop load generator + gw CPU accounting from /proc.
use floor::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATH: &str = "/v3/pay/transactions/native";

static OK: AtomicU64 = AtomicU64::new(0);
static ERR: AtomicU64 = AtomicU64::new(0);
static SEQ: AtomicU64 = AtomicU64::new(0);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut url = "http://127.0.0.1:18080".to_string();
    let mut conc = 32usize;
    let mut dur = 10u64;
    let mut warm = 3u64;
    let mut pid: u32 = 0;
    let mut label = String::new();
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--url" => url = v,
            "--concurrency" => conc = v.parse().unwrap(),
            "--duration" => dur = v.parse().unwrap(),
            "--warmup" => warm = v.parse().unwrap(),
            "--pid" => pid = v.parse().unwrap(),
            "--label" => label = v,
            x => panic!("unknown arg {x}"),
        }
        i += 2;
    }
    let signer = Arc::new(Signer::load("merchant"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conc * 2)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tag = rand_u64() as u32;
    let full_url = format!("{url}{PATH}");
    let mut handles = Vec::new();
    for _ in 0..conc {
        let (signer, client, stop, full_url) = (
            signer.clone(),
            client.clone(),
            stop.clone(),
            full_url.clone(),
        );
        handles.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let otn = format!("L{:08x}{:012}", tag, SEQ.fetch_add(1, Relaxed));
                let body = format!(
                    r#"{{"appid":"wxd678efh567hg6787","mchid":"1900000001","description":"Image","out_trade_no":"{otn}","notify_url":"https://example.com/n","amount":{{"total":100,"currency":"CNY"}}}}"#
                );
                let auth = auth_header(&signer, "1900000001", "MERCHANT_SERIAL_1", "POST", PATH, body.as_bytes());
                let r = client
                    .post(&full_url)
                    .header("authorization", auth)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().as_u16() == 200 => {
                        let _ = resp.bytes().await;
                        OK.fetch_add(1, Relaxed);
                    }
                    Ok(resp) => {
                        let st = resp.status();
                        let b = resp.text().await.unwrap_or_default();
                        if ERR.fetch_add(1, Relaxed) < 3 {
                            eprintln!("error {st}: {b}");
                        }
                    }
                    Err(e) => {
                        if ERR.fetch_add(1, Relaxed) < 3 {
                            eprintln!("error: {e}");
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(warm)).await;
    let stats = |c: reqwest::Client, u: String| async move {
        let s = c
            .get(format!("{u}/stats"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let v: Vec<u64> = s
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0))
            .collect();
        if v.len() < 6 {
            return None;
        }
        Some(v)
    };
    let s0 = stats(client.clone(), url.clone()).await;
    let t0 = Instant::now();
    let ok0 = OK.load(Relaxed);
    let err0 = ERR.load(Relaxed);
    let th0 = thread_cpu(pid);
    let tk0 = proc_ticks(pid);
    tokio::time::sleep(Duration::from_secs(dur)).await;
    let th1 = thread_cpu(pid);
    let tk1 = proc_ticks(pid);
    let ok1 = OK.load(Relaxed);
    let err1 = ERR.load(Relaxed);
    let el = t0.elapsed().as_secs_f64();
    let s1 = stats(client.clone(), url.clone()).await;
    stop.store(true, Relaxed);
    for h in handles {
        let _ = h.await;
    }
    let ops = ok1 - ok0;
    let errs = err1 - err0;
    // per-thread diff, grouped by comm
    let m0: BTreeMap<u32, u64> = th0.iter().map(|(_, t, ns)| (*t, *ns)).collect();
    let mut by_comm: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    let mut total_ns = 0u64;
    for (comm, tid, ns) in &th1 {
        let d = ns - m0.get(tid).copied().unwrap_or(0);
        total_ns += d;
        let e = by_comm.entry(comm.clone()).or_insert((0, 0));
        e.0 += d;
        e.1 += 1;
    }
    let opsf = ops.max(1) as f64;
    let us_per_op = total_ns as f64 / 1000.0 / opsf;
    let ticks_us_per_op = (tk1 - tk0) as f64 * 10_000.0 / opsf;
    println!(
        "RESULT {label} ops={ops} elapsed={el:.2}s ops_per_s={:.1} errors={errs} gw_cpu_us_per_op(schedstat)={us_per_op:.1} gw_cpu_us_per_op(ticks)={ticks_us_per_op:.1} gw_cores={:.2}",
        ops as f64 / el,
        total_ns as f64 / 1e9 / el
    );
    let parts: Vec<String> = by_comm
        .iter()
        .filter(|(_, (ns, _))| *ns > 0)
        .map(|(c, (ns, n))| format!("{c}[x{n}]={:.1}", *ns as f64 / 1000.0 / opsf))
        .collect();
    println!("THREADS {label} us/op: {}", parts.join(" "));
    if let (Some(a), Some(b)) = (s0, s1) {
        let commits = b[0] - a[0];
        let jobs = b[1] - a[1];
        let sign_us = (b[2] - a[2]) as f64 / 1e3 / (b[3] - a[3]).max(1) as f64;
        let ver_us = (b[4] - a[4]) as f64 / 1e3 / (b[5] - a[5]).max(1) as f64;
        let crypto_per_op = ((b[2] - a[2]) + (b[4] - a[4])) as f64 / 1e3 / opsf;
        let unavoid = 2.0 * sign_us + 2.0 * ver_us;
        println!(
            "INSITU {label} sign_us={sign_us:.1} verify_us={ver_us:.2} 2S+2V={unavoid:.1} crypto_us_per_op={crypto_per_op:.1} non_crypto_us_per_op={:.1} RATIO_insitu={:.3}",
            us_per_op - crypto_per_op,
            us_per_op / unavoid
        );
        println!(
            "DB {label} commits={commits} jobs={jobs} jobs_per_commit={:.2} commits_per_s={:.1}",
            jobs as f64 / commits.max(1) as f64,
            commits as f64 / el
        );
    }
}
