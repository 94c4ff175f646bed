//! The issue's §7 figures on the labelled synthetic stream: false-positive rate, catch rate per
//! fraud kind, decision latency, memory bound. The full rule library and the bundled model run
//! through `RiskEngine::decide` then `record`, one event after the other, as the gateway would.
//!
//! ```sh
//! cargo run --release -p paygate-risk --example evaluate              # the test stream
//! cargo run --release -p paygate-risk --example evaluate -- validate --tune
//! ```
//!
//! Thresholds are tuned on the *validation* stream (`--tune` prints the candidates) and the
//! figures reported on the *test* stream, which neither training nor tuning saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use paygate_risk::synth::{Scenario, StreamConfig, generate};
use paygate_risk::{
    Action, EventKind, Model, RiskConfig, RiskEngine, bundled_library_dir, compile_rules,
    load_library,
};

struct Outcome {
    scenario: Scenario,
    kind: EventKind,
    score: i64,
    action: Action,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, cfg) = if args.iter().any(|a| a == "validate") {
        ("validate", StreamConfig::VALIDATE)
    } else {
        ("test", StreamConfig::TEST)
    };
    let tune = args.iter().any(|a| a == "--tune");
    let per_rule = args.iter().any(|a| a == "--rules");

    let rules = load_library(&bundled_library_dir())?;
    let n_rules = rules.len();
    let engine = RiskEngine::new(
        compile_rules(&rules, 1)?,
        Some(Model::bundled()?),
        RiskConfig::default(),
    );
    let t0 = Instant::now();
    let stream = generate(&cfg);
    println!(
        "stream {name}: seed {}, {} days, {} payers, {} merchants -> {} events (generated in {:.1?})",
        cfg.seed,
        cfg.days,
        cfg.payers,
        cfg.merchants,
        stream.len(),
        t0.elapsed()
    );

    let mut outcomes = Vec::with_capacity(stream.len());
    let mut latency_ns = Vec::with_capacity(stream.len());
    let mut errors = 0usize;
    // rule id -> (honest events it fired on, fraud events it fired on)
    let mut fired: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for l in &stream {
        let t = Instant::now();
        let d = engine.decide(&l.event);
        latency_ns.push(t.elapsed().as_nanos() as u64);
        engine.record(&l.event, &d);
        errors += d.errors.len();
        for f in &d.fired {
            let e = fired.entry(f.rule_id.clone()).or_default();
            if l.scenario.is_fraud() {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        outcomes.push(Outcome {
            scenario: l.scenario,
            kind: l.event.kind,
            score: d.score,
            action: d.action,
        });
    }
    latency_ns.sort_unstable();

    report(&outcomes);
    println!(
        "decide latency on the stream (one thread, warm counters, {n_rules} rules + {} trees): p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        Model::bundled()?.tree_count(),
        percentile(&latency_ns, 0.5) as f64 / 1e3,
        percentile(&latency_ns, 0.99) as f64 / 1e3,
        percentile(&latency_ns, 0.999) as f64 / 1e3,
        percentile(&latency_ns, 1.0) as f64 / 1e3,
    );
    println!("rule evaluation errors: {errors}");
    let counts = engine.entity_counts();
    println!(
        "entities held: {}",
        counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "memory bound of the counters (default caps): {:.2} GiB",
        engine.memory_bound_bytes() as f64 / (1u64 << 30) as f64
    );
    if tune {
        tune_thresholds(&outcomes);
    }
    if per_rule {
        let mut v: Vec<_> = fired.into_iter().collect();
        v.sort_by_key(|(_, (h, _))| std::cmp::Reverse(*h));
        println!("rules by honest events fired on (honest / fraud):");
        for (id, (h, f)) in v {
            println!("  {id:<40} {h:>7} {f:>7}");
        }
    }
    Ok(())
}

fn report(outcomes: &[Outcome]) {
    let honest: Vec<&Outcome> = outcomes.iter().filter(|o| !o.scenario.is_fraud()).collect();
    let fraud: Vec<&Outcome> = outcomes.iter().filter(|o| o.scenario.is_fraud()).collect();
    let blocked = |xs: &[&Outcome]| xs.iter().filter(|o| o.action.blocks()).count();
    let reviewed = |xs: &[&Outcome]| xs.iter().filter(|o| o.action == Action::Review).count();
    let hb = blocked(&honest);
    let fb = blocked(&fraud);
    println!(
        "honest events: {}; blocked (challenge or deny): {hb} -> false-positive rate {:.4}% (required <= 0.03%); sent to review: {} ({:.2}%)",
        honest.len(),
        100.0 * hb as f64 / honest.len().max(1) as f64,
        reviewed(&honest),
        100.0 * reviewed(&honest) as f64 / honest.len().max(1) as f64
    );
    println!(
        "fraud events: {}; blocked: {fb} -> catch rate {:.2}%; blocked or reviewed: {:.2}%",
        fraud.len(),
        100.0 * fb as f64 / fraud.len().max(1) as f64,
        100.0 * (fb + reviewed(&fraud)) as f64 / fraud.len().max(1) as f64
    );
    let mut by: BTreeMap<(Scenario, &str), (usize, usize, usize)> = BTreeMap::new();
    for o in outcomes {
        let e = by.entry((o.scenario, o.kind.as_str())).or_default();
        e.0 += 1;
        if o.action.blocks() {
            e.1 += 1;
        }
        if o.action == Action::Review {
            e.2 += 1;
        }
    }
    for ((s, k), (n, b, r)) in by {
        println!(
            "  {:<20} {:<7} events {:>8}  blocked {:>6} ({:>6.2}%)  review {:>6} ({:>5.2}%)",
            s.as_str(),
            k,
            n,
            b,
            100.0 * b as f64 / n.max(1) as f64,
            r,
            100.0 * r as f64 / n.max(1) as f64
        );
    }
}

/// Prints, per candidate threshold, the honest share at or above it and the fraud caught:
/// the thresholds in `ScenarioThresholds::default` were read off this table on the
/// validation stream.
fn tune_thresholds(outcomes: &[Outcome]) {
    for kind in [EventKind::Prepay, EventKind::Refund] {
        let mut h: Vec<i64> = Vec::new();
        let mut f: Vec<i64> = Vec::new();
        for o in outcomes.iter().filter(|o| o.kind == kind) {
            if o.scenario.is_fraud() {
                f.push(o.score);
            } else {
                h.push(o.score);
            }
        }
        println!(
            "tuning {}: {} honest, {} fraud",
            kind.as_str(),
            h.len(),
            f.len()
        );
        for t in [20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 140, 160, 200] {
            let hf = h.iter().filter(|s| **s >= t).count();
            let ff = f.iter().filter(|s| **s >= t).count();
            println!(
                "  score >= {t:>4}: honest {:>6} ({:.4}%)  fraud {:>6} ({:.2}%)",
                hf,
                100.0 * hf as f64 / h.len().max(1) as f64,
                ff,
                100.0 * ff as f64 / f.len().max(1) as f64
            );
        }
    }
}
