//! The engine as the gateway uses it: decide, record, lists, thresholds, deny codes, bounded
//! memory, concurrent hot swaps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use paygate_core::error::ErrorCode;
use paygate_risk::{
    Action, Layer, ListEntity, ListEntry, ListKind, Lists, MemoryConfig, Model, RiskConfig,
    RiskEngine, RiskEvent, RuleSource, ScenarioThresholds, Scope, Thresholds, bundled_library_dir,
    compile_rules, load_library,
};
use time::macros::datetime;

fn rule(id: &str, expression: &str, score: i64) -> RuleSource {
    RuleSource {
        id: id.into(),
        layer: Layer::Rule,
        description: format!("test rule {id}"),
        scope: Scope::default(),
        trigger: String::new(),
        expression: expression.into(),
        score,
        tags: vec!["test".into()],
        example_fires: serde_json::Value::Null,
        example_passes: serde_json::Value::Null,
    }
}

fn event(payer: &str, amount_fen: i64, second: i64) -> RiskEvent {
    let mut e = RiskEvent::prepay(
        "1900000001",
        "JSAPI",
        amount_fen,
        datetime!(2026-11-10 14:00 +08:00) + time::Duration::seconds(second),
    );
    e.payer_key = Some(payer.into());
    e.device_id = Some(format!("{payer}-phone"));
    e.client_ip = Some("203.0.113.7".parse().unwrap());
    e
}

#[test]
fn velocity_builds_up_only_after_record_and_denies_with_rule_limit() {
    let rules = compile_rules(&[rule("burst", "payer_cnt_1m >= 3", 100)], 7).unwrap();
    let engine = RiskEngine::new(rules, None, RiskConfig::default());
    for i in 0..3 {
        let d = engine.decide(&event("p1", 100, i));
        assert_eq!(d.action, Action::Allow, "attempt {i}");
        assert!(d.error().is_none());
        engine.record(&event("p1", 100, i), &d);
    }
    // Deciding alone changes nothing.
    let d = engine.decide(&event("p1", 100, 10));
    assert_eq!(engine.decide(&event("p1", 100, 10)), d);
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.score, 100);
    assert_eq!(d.rules_version, 7);
    assert_eq!(d.fired[0].rule_id, "burst");
    let (code, message) = d.error().unwrap();
    assert_eq!(code, ErrorCode::RuleLimit);
    assert_eq!(code.http_status(), 403);
    assert_eq!(message, "交易存在风险");
    // Another payer is unaffected.
    assert_eq!(engine.decide(&event("p2", 100, 10)).action, Action::Allow);
}

#[test]
fn thresholds_map_scores_to_actions_per_scenario() {
    let t = Thresholds {
        review: 10,
        challenge: 50,
        deny: 90,
    };
    assert_eq!(t.action(-5), Action::Allow);
    assert_eq!(t.action(10), Action::Review);
    assert_eq!(t.action(89), Action::Challenge);
    assert_eq!(t.action(90), Action::Deny);
    let rules = compile_rules(&[rule("twenty", "true", 20)], 1).unwrap();
    let engine = RiskEngine::new(rules, None, RiskConfig::default());
    engine.set_thresholds(ScenarioThresholds {
        prepay: t,
        refund: Thresholds {
            review: 100,
            challenge: 200,
            deny: 300,
        },
    });
    assert_eq!(engine.decide(&event("p", 1, 0)).action, Action::Review);
    let refund = RiskEvent::refund(
        "1900000001",
        "JSAPI",
        1,
        1,
        datetime!(2026-11-09 14:00 +08:00),
        datetime!(2026-11-10 14:00 +08:00),
    );
    assert_eq!(engine.decide(&refund).action, Action::Allow);
}

#[test]
fn lists_block_until_they_expire() {
    let rules = compile_rules(
        &[rule("blocked", "payer_blocked || device_blocked", 1000)],
        1,
    )
    .unwrap();
    let engine = RiskEngine::new(rules, None, RiskConfig::default());
    let key = engine.payer_key("o-openid-1");
    assert_eq!(key.len(), 32);
    assert_eq!(key, engine.payer_key("o-openid-1"));
    assert_ne!(key, engine.payer_key("o-openid-2"));
    engine.set_lists(Lists::new(vec![ListEntry {
        kind: ListKind::Block,
        entity: ListEntity::Payer,
        value: key.clone(),
        expires_at: Some(datetime!(2026-11-10 15:00 +08:00)),
        reason: "case 42".into(),
    }]));
    let mut e = event("x", 100, 0);
    e.payer_key = Some(key);
    assert_eq!(engine.decide(&e).action, Action::Deny);
    e.at = datetime!(2026-11-10 15:00 +08:00);
    assert_eq!(engine.decide(&e).action, Action::Allow);
}

#[test]
fn memory_stays_within_the_caps() {
    let caps = MemoryConfig {
        payers_max: 640,
        devices_max: 640,
        ips_max: 640,
        subnets_max: 640,
        merchants_max: 64,
        payer_merchants_max: 640,
        payer_refunds_max: 64,
        merchant_refunds_max: 64,
    };
    let config = RiskConfig {
        memory: caps,
        ..RiskConfig::default()
    };
    let engine = RiskEngine::new(compile_rules(&[], 1).unwrap(), None, config);
    for i in 0..20_000 {
        let mut e = event(&format!("p{i}"), 100, i);
        e.client_ip = Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            0x0A00_0000u32 + i as u32 * 256,
        )));
        engine.decide_and_record(&e);
    }
    for (name, n) in engine.entity_counts() {
        assert!(n <= 640, "{name}: {n}");
    }
    assert!(engine.memory_bound_bytes() < 10 << 20);
}

#[test]
fn the_full_library_and_model_decide_and_hot_swap_under_concurrency() {
    let library = load_library(&bundled_library_dir()).unwrap();
    let engine = Arc::new(RiskEngine::new(
        compile_rules(&library, 1).unwrap(),
        Some(Model::bundled().unwrap()),
        RiskConfig::default(),
    ));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    let e = event(&format!("w{w}-p{}", i % 50), 1_000 + i, i);
                    let d = engine.decide_and_record(&e);
                    assert!((1..=21).contains(&d.rules_version));
                    assert!(d.errors.is_empty(), "{:?}", d.errors);
                    assert!(d.model_score.is_some_and(|s| (0.0..=1.0).contains(&s)));
                }
            })
        })
        .collect();
    for v in 2..=21 {
        engine.replace_rules(compile_rules(&library, v).unwrap());
    }
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(engine.rules_version(), 21);
}

#[test]
fn an_ordinary_payment_is_allowed_by_the_full_library() {
    let library = load_library(&bundled_library_dir()).unwrap();
    let engine = RiskEngine::new(
        compile_rules(&library, 1).unwrap(),
        Some(Model::bundled().unwrap()),
        RiskConfig::default(),
    );
    let mut e = event("regular", 2_500, 0);
    e.merchant_industry = Some("food".into());
    e.merchant_created_at = Some(datetime!(2024-01-01 00:00 +08:00));
    // A regular: a payment a day for two weeks from the same phone.
    for day in 0..14 {
        let mut past = e.clone();
        past.at = e.at - time::Duration::days(14 - day);
        engine.decide_and_record(&past);
    }
    let (d, features) = engine.explain(&e);
    assert_eq!(d.action, Action::Allow, "{d:?}");
    assert_eq!(features["payer_cnt_30d"], 14);
    assert!(d.model_score.unwrap() < 0.5);
}
