//! The reconciliation benchmark's two halves (tools/recon/bench.sh drives them):
//!
//! - `recon_bench gen DIR ORDERS FAULTS_EACH [SEED]`: writes `DIR/bill.csv` (a WeChat trade
//!   bill), `DIR/platform.csv` and `DIR/truth.json` (each injected fault's class and key);
//! - `recon_bench match DIR [THREADS]`: reconciles the two files and prints one JSON line:
//!   seconds, peak RSS, counts per class, and whether they equal the truth exactly.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use paygate_recon::synth::{DaySpec, Faults, generate};
use paygate_recon::{Class, reconcile};

fn main() {
    if let Err(e) = run() {
        eprintln!("recon_bench: {e}");
        std::process::exit(2);
    }
}

fn arg(args: &[String], i: usize, name: &str) -> Result<String, String> {
    args.get(i)
        .cloned()
        .ok_or_else(|| format!("missing {name}"))
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let e = |e: std::io::Error| e.to_string();
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let dir = arg(&args, 2, "DIR")?;
            let orders: u64 = arg(&args, 3, "ORDERS")?.parse().map_err(|_| "ORDERS")?;
            let each: u64 = arg(&args, 4, "FAULTS_EACH")?
                .parse()
                .map_err(|_| "FAULTS_EACH")?;
            let seed: u64 = args
                .get(5)
                .map_or(Ok(1), |s| s.parse())
                .map_err(|_| "SEED")?;
            std::fs::create_dir_all(&dir).map_err(e)?;
            let dir = Path::new(&dir);
            let mut bill = BufWriter::with_capacity(
                1 << 22,
                std::fs::File::create(dir.join("bill.csv")).map_err(e)?,
            );
            let mut platform = BufWriter::with_capacity(
                1 << 22,
                std::fs::File::create(dir.join("platform.csv")).map_err(e)?,
            );
            let spec = DaySpec {
                date: time::macros::date!(2026 - 11 - 28),
                orders,
                refund_every: 10,
                unpaid_every: 20,
                faults: Faults::each(each),
                fee_rate_bp: 60,
                seed,
            };
            let truth = generate(&spec, &mut bill, &mut platform).map_err(e)?;
            bill.flush().map_err(e)?;
            platform.flush().map_err(e)?;
            let expected: Vec<(String, String)> = truth
                .expected
                .iter()
                .map(|(c, k)| (c.as_str().to_string(), k.to_string()))
                .collect();
            let json = serde_json::json!({
                "bill_rows": truth.bill_rows,
                "platform_rows": truth.platform_rows,
                "counts": counts(truth.expected.iter().map(|(c, _)| *c)),
                "expected": expected,
            });
            std::fs::write(dir.join("truth.json"), json.to_string()).map_err(e)?;
            println!(
                "{}",
                serde_json::json!({"bill_rows": truth.bill_rows, "platform_rows": truth.platform_rows, "injected": truth.expected.len()})
            );
            Ok(())
        }
        Some("match") => {
            let dir = Path::new(&arg(&args, 2, "DIR")?).to_path_buf();
            let threads: usize = args
                .get(3)
                .map_or(Ok(2), |s| s.parse())
                .map_err(|_| "THREADS")?;
            let start = Instant::now();
            let bill = std::fs::File::open(dir.join("bill.csv")).map_err(e)?;
            let platform = std::fs::File::open(dir.join("platform.csv")).map_err(e)?;
            let outcome = reconcile(&bill, &platform, threads).map_err(|e| e.to_string())?;
            let seconds = start.elapsed().as_secs_f64();
            let found = counts(outcome.discrepancies.iter().map(|d| d.class));
            let exact = match std::fs::read(dir.join("truth.json")) {
                Ok(bytes) => {
                    let truth: serde_json::Value =
                        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    let mut want: Vec<(String, String)> =
                        serde_json::from_value(truth["expected"].clone())
                            .map_err(|e| e.to_string())?;
                    let mut got: Vec<(String, String)> = outcome
                        .discrepancies
                        .iter()
                        .map(|d| (d.class.as_str().to_string(), d.key.to_string()))
                        .collect();
                    want.sort();
                    got.sort();
                    Some(want == got)
                }
                Err(_) => None,
            };
            println!(
                "{}",
                serde_json::json!({
                    "seconds": (seconds * 1000.0).round() / 1000.0,
                    "peak_rss_mib": peak_rss_kib() / 1024,
                    "threads": threads,
                    "bill_rows": outcome.channel.rows,
                    "platform_rows": outcome.platform.rows,
                    "matched": outcome.matched,
                    "absent_as_expected": outcome.absent_as_expected,
                    "counts": found,
                    "equals_truth": exact,
                })
            );
            Ok(())
        }
        _ => {
            Err("usage: recon_bench gen DIR ORDERS FAULTS_EACH [SEED] | match DIR [THREADS]".into())
        }
    }
}

fn counts(classes: impl Iterator<Item = Class>) -> BTreeMap<&'static str, u64> {
    let mut m: BTreeMap<&'static str, u64> = Class::ALL.iter().map(|c| (c.as_str(), 0)).collect();
    for c in classes {
        *m.entry(c.as_str()).or_default() += 1;
    }
    m
}

/// VmHWM from /proc/self/status: the peak resident set, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
