//! What one routing decision costs in process: three channels with live statistics, the
//! Thompson samples, the explanation string. `cargo bench -p paygate-routing` — the median
//! of "decide/3 channels" is the figure the gateway adds to a prepay (target ≤ 5 µs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use paygate_routing::{
    ChannelProfile, Outcome, RouteRequest, Router, RouterConfig, Rule, TradeKind,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const NOW_MS: i64 = 1_794_414_600_000;

fn router(channels: usize, rules: &[Rule]) -> Router {
    let profiles = (0..channels)
        .map(|i| {
            let mut p = ChannelProfile::new(&format!("ch{i}"));
            p.fee_rate_bp = 20 + 5 * i as u32;
            p
        })
        .collect();
    let router = Router::new(RouterConfig::default(), profiles, rules).unwrap();
    // A full window: every bucket of every channel holds outcomes.
    for step in 0..200 {
        let now = NOW_MS - 10_000 + step * 50;
        for c in 0..channels {
            for k in 0..10 {
                let outcome = if k == 0 && c == 0 {
                    Outcome::Failure { latency_ms: 20 }
                } else {
                    Outcome::Success {
                        latency_ms: 10 + c as u32 * 100,
                    }
                };
                router.record(c, TradeKind::Native, outcome, now);
            }
        }
    }
    router
}

fn bench(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(42);
    let req = RouteRequest {
        mchid: "1900000109",
        home: None,
        trade: TradeKind::Native,
        amount_fen: 100,
        now_ms: NOW_MS,
        tried: 0,
    };
    let mut group = c.benchmark_group("decide");
    for channels in [3usize, 8] {
        let r = router(channels, &[]);
        group.bench_function(format!("{channels} channels"), |b| {
            b.iter(|| r.decide(std::hint::black_box(&req), &mut rng).unwrap())
        });
    }
    let rules: Vec<Rule> = (0..20)
        .map(|i| Rule {
            name: format!("r{i}"),
            mchids: vec![format!("18000001{i:02}")], // none is the request's merchant
            only: vec!["ch1".into()],
            ..Rule::default()
        })
        .collect();
    let r = router(3, &rules);
    group.bench_function("3 channels, 20 rules to skip", |b| {
        b.iter(|| r.decide(std::hint::black_box(&req), &mut rng).unwrap())
    });
    let r = router(3, &[]);
    group.bench_function("record an outcome", |b| {
        b.iter(|| {
            r.record(
                0,
                TradeKind::Native,
                Outcome::Success { latency_ms: 12 },
                NOW_MS,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
