//! `paygate bench load` end to end, with the real binary: the simulator and the gateway as
//! separate processes (as `tools/bench/gateway.sh` runs them), a merchant onboarded by
//! `paygate merchant create`, then every scenario for a second, closed loop and open loop.
//! Each report must count operations and no errors: an error here is either the gateway's or
//! the harness's own (a refund sent before the payment's callback reached the gateway was one),
//! and either makes the benchmark's figures wrong. The server's CPU must have been found from
//! the port, since the ratios of issue 8 are built on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{BIN, Proc, TempDir, free_port};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const OPERATOR_TOKEN: &str = "bench-cli-operator";

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "paygate {args:?} failed:\n{text}");
    text
}

fn wait_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `bench load` run; its JSON report.
fn load(dir: &Path, name: &str, extra: &[&str]) -> Value {
    let kit = dir.join("mkit");
    let json = dir.join(format!("{name}.json"));
    let (kit, json) = (kit.to_str().unwrap(), json.to_str().unwrap());
    let mut args = vec![
        "bench",
        "load",
        "--kit",
        kit,
        "--duration-s",
        "1",
        "--warmup-s",
        "0",
        "--json",
        json,
        "--operator-token",
        OPERATOR_TOKEN,
    ];
    args.extend_from_slice(extra);
    let table = run(&args);
    let report: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let ops = report["ops"].as_u64().unwrap_or(0);
    assert!(ops > 0, "{name}: no operation completed:\n{table}");
    assert_eq!(
        report["errors"], 0,
        "{name}: errors {}:\n{table}",
        report["errors_by_code"]
    );
    assert!(
        report["server_cpu_us_per_op"].as_f64().unwrap_or(0.0) > 0.0,
        "{name}: the gateway's CPU was not read:\n{table}"
    );
    for q in ["latency_ms_p50", "latency_ms_p99", "latency_ms_max"] {
        assert!(report[q].as_f64().is_some(), "{name}: no {q}:\n{table}");
    }
    report
}

#[test]
fn every_scenario_runs_against_the_gateway_without_errors() {
    let dir = TempDir::new("bench-cli");
    let d = &dir.0;
    let (sim_port, gw_port) = (free_port(), free_port());
    let sim_listen = format!("127.0.0.1:{sim_port}");
    let sim_kits = d.join("sim-kits");
    let mut sim = Proc::spawn(
        &[
            "sim",
            "--listen",
            &sim_listen,
            "--kit-dir",
            sim_kits.to_str().unwrap(),
            "--auto-onboard",
        ],
        &[],
        d.join("sim.log"),
    );
    sim.wait_port(sim_port);
    let partner = sim_kits.join("partner");
    wait_file(&partner.join("merchant.json"));

    let (gw_data, mkit) = (d.join("gw"), d.join("mkit"));
    let gw_listen = format!("127.0.0.1:{gw_port}");
    let mut gateway = Proc::spawn(
        &[
            "serve",
            "--data-dir",
            gw_data.to_str().unwrap(),
            "--listen",
            &gw_listen,
            "--channel-kit-dir",
            partner.to_str().unwrap(),
        ],
        &[("PAYGATE_OPERATOR_TOKEN", OPERATOR_TOKEN)],
        d.join("gw.log"),
    );
    gateway.wait_port(gw_port);
    run(&[
        "merchant",
        "create",
        "--name",
        "bench",
        "--out",
        mkit.to_str().unwrap(),
        "--data-dir",
        gw_data.to_str().unwrap(),
        "--public-base-url",
        &format!("http://{gw_listen}/"),
        "--channel-kit-dir",
        partner.to_str().unwrap(),
    ]);

    for scenario in [
        "native", "jsapi", "app", "h5", "query", "close", "refund", "mix", "notify",
    ] {
        let report = load(d, scenario, &["--scenario", scenario, "--concurrency", "4"]);
        let signs = report["server_signs_per_op"].as_f64().unwrap_or(0.0);
        if scenario != "notify" {
            // Every V3 call is verified and its answer signed by the gateway.
            assert!(signs >= 1.0, "{scenario}: {signs} signatures per call");
        }
        if scenario == "native" {
            // Where a prepay's CPU goes: the async workers, and the SQLite writer its two
            // commits go through, each read from /proc by thread name.
            let by_thread = report["server_cpu_us_per_op_by_thread"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let us = |group: &str| by_thread.get(group).and_then(Value::as_f64);
            assert!(us("tokio-rt-worker").unwrap_or(0.0) > 0.0, "{by_thread:?}");
            assert!(us("sqlite-writer").is_some(), "{by_thread:?}");
            let whole = report["server_cpu_us_per_op"].as_f64().unwrap_or(0.0);
            let split: f64 = by_thread.values().filter_map(Value::as_f64).sum();
            assert!(
                split > 0.5 * whole && split < 1.5 * whole,
                "threads {split} µs against the process's {whole} µs: {by_thread:?}"
            );
        }
        if matches!(scenario, "mix" | "notify") {
            assert!(
                report["notifications_received"].as_u64().unwrap_or(0) > 0,
                "{scenario}: no notification reached the bench's notify_url"
            );
        }
    }
    // Open loop: a fixed rate, and the gateway's added latency read from its histogram.
    let open = load(d, "native-open", &["--scenario", "native", "--rate", "40"]);
    assert!(
        open["mode"]
            .as_str()
            .unwrap_or_default()
            .starts_with("open loop"),
        "{}",
        open["mode"]
    );
    assert!(open["server_added_ms_p99_at_most"].as_f64().is_some());
    drop(gateway);
    drop(sim);
}
