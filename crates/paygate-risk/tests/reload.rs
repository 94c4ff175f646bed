//! Hot reload: versions, refusal of broken rules at save time, audit records, and a node
//! applying a saved change at once when notified and within its polling period otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use paygate_risk::{
    InMemoryRuleRepository, Layer, ListEntity, ListEntry, ListKind, RepoError, RiskConfig,
    RiskEngine, RiskEvent, RuleChange, RuleRepository, RuleSource, Scope, compile_rules,
    reload_once, spawn_reloader,
};

fn rule(id: &str, expression: &str, score: i64) -> RuleSource {
    RuleSource {
        id: id.into(),
        layer: Layer::Rule,
        description: "test".into(),
        scope: Scope::default(),
        trigger: String::new(),
        expression: expression.into(),
        score,
        tags: vec![],
        example_fires: serde_json::Value::Null,
        example_passes: serde_json::Value::Null,
    }
}

fn change(author: &str, rules: Vec<RuleSource>, base: Option<u64>) -> RuleChange {
    RuleChange {
        author: author.into(),
        comment: format!("{author} edits"),
        rules,
        lists: vec![],
        base_version: base,
    }
}

fn big_payment() -> RiskEvent {
    RiskEvent::prepay(
        "1900000001",
        "JSAPI",
        900_000,
        time::OffsetDateTime::now_utc(),
    )
}

async fn wait_for_version(engine: &RiskEngine, v: u64, within: Duration) -> Duration {
    let start = Instant::now();
    while engine.rules_version() != v {
        assert!(
            start.elapsed() < within,
            "version {v} not applied within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_broken_rule_is_refused_at_save_naming_it() {
    let repo = InMemoryRuleRepository::new();
    let err = repo
        .save(change(
            "alice",
            vec![rule("ok", "true", 1), rule("broken", "amount_fen >", 1)],
            None,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Invalid(_)));
    assert!(err.to_string().contains("broken"), "{err}");
    assert_eq!(repo.current_version().await.unwrap(), 0);
    // A rule whose example says it fires but it does not is refused too.
    let mut lying = rule("lying", "amount_fen > 100", 1);
    lying.example_fires = serde_json::json!({"event": {"amount_fen": 50}});
    lying.example_passes = serde_json::json!({"event": {"amount_fen": 50}});
    let err = repo
        .save(change("bob", vec![lying], None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lying"), "{err}");
}

#[tokio::test]
async fn saves_are_versioned_audited_and_conflicts_detected() {
    let repo = InMemoryRuleRepository::new();
    let v1 = repo
        .save(change("alice", vec![rule("a", "true", 1)], Some(0)))
        .await
        .unwrap();
    let mut c2 = change(
        "bob",
        vec![rule("a", "true", 2), rule("b", "true", 1)],
        Some(v1),
    );
    c2.lists.push(ListEntry {
        kind: ListKind::Block,
        entity: ListEntity::Ip,
        value: "198.51.100.1".into(),
        expires_at: None,
        reason: "botnet".into(),
    });
    let v2 = repo.save(c2).await.unwrap();
    assert_eq!((v1, v2), (1, 2));
    let stale = repo
        .save(change("carol", vec![], Some(v1)))
        .await
        .unwrap_err();
    assert!(matches!(
        stale,
        RepoError::Conflict {
            base: 1,
            current: 2
        }
    ));
    let audit = repo.audit(10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].version, 2);
    assert_eq!(audit[0].author, "bob");
    assert_eq!(audit[0].rules_added, ["b"]);
    assert_eq!(audit[0].rules_changed, ["a"]);
    assert_eq!(audit[0].list_entries_added, 1);
    assert_eq!(audit[1].rules_added, ["a"]);
    assert_eq!(repo.load(1).await.unwrap().rules.len(), 1);
}

#[tokio::test]
async fn a_node_applies_a_saved_change_at_once_when_the_repository_pushes() {
    let repo = Arc::new(InMemoryRuleRepository::new());
    let engine = Arc::new(RiskEngine::new(
        compile_rules(&[], 0).unwrap(),
        None,
        RiskConfig::default(),
    ));
    // A long polling period: only the push can make this fast.
    let handle = spawn_reloader(engine.clone(), repo.clone(), Duration::from_secs(60));
    assert_eq!(engine.decide(&big_payment()).score, 0);
    let v = repo
        .save(change(
            "alice",
            vec![rule("big", "amount_fen > 500000", 100)],
            None,
        ))
        .await
        .unwrap();
    let took = wait_for_version(&engine, v, Duration::from_secs(5)).await;
    println!("applied after {took:?}");
    assert_eq!(engine.decide(&big_payment()).score, 100);
    assert!(handle.last_error().is_none());
    handle.stop();
}

/// A repository that cannot push: the reloader polls, or is woken by its handle.
struct PollOnly(InMemoryRuleRepository);

#[async_trait::async_trait]
impl RuleRepository for PollOnly {
    async fn current_version(&self) -> Result<u64, RepoError> {
        self.0.current_version().await
    }
    async fn load(&self, version: u64) -> Result<paygate_risk::RuleSetVersion, RepoError> {
        self.0.load(version).await
    }
    async fn save(&self, change: RuleChange) -> Result<u64, RepoError> {
        self.0.save(change).await
    }
    async fn audit(&self, limit: usize) -> Result<Vec<paygate_risk::AuditRecord>, RepoError> {
        self.0.audit(limit).await
    }
}

#[tokio::test]
async fn a_node_polls_and_can_be_woken() {
    let repo = Arc::new(PollOnly(InMemoryRuleRepository::new()));
    let engine = Arc::new(RiskEngine::new(
        compile_rules(&[], 0).unwrap(),
        None,
        RiskConfig::default(),
    ));
    let handle = spawn_reloader(engine.clone(), repo.clone(), Duration::from_millis(200));
    let v1 = repo
        .save(change("a", vec![rule("r", "true", 1)], None))
        .await
        .unwrap();
    wait_for_version(&engine, v1, Duration::from_secs(5)).await;
    handle.stop();

    let handle = spawn_reloader(engine.clone(), repo.clone(), Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v2 = repo
        .save(change("b", vec![rule("r", "true", 2)], None))
        .await
        .unwrap();
    handle.notify();
    wait_for_version(&engine, v2, Duration::from_secs(5)).await;
    handle.stop();
}

/// A stored version that no longer compiles here (say, written by a newer node) is skipped;
/// the engine keeps deciding on the set it has.
struct Tampered;

#[async_trait::async_trait]
impl RuleRepository for Tampered {
    async fn current_version(&self) -> Result<u64, RepoError> {
        Ok(5)
    }
    async fn load(&self, version: u64) -> Result<paygate_risk::RuleSetVersion, RepoError> {
        Ok(paygate_risk::RuleSetVersion {
            version,
            author: "newer-node".into(),
            created_at: time::OffsetDateTime::now_utc(),
            comment: String::new(),
            rules: vec![rule("future", "feature_from_the_future > 1", 10)],
            lists: vec![],
        })
    }
    async fn save(&self, _: RuleChange) -> Result<u64, RepoError> {
        Err(RepoError::Storage("read only".into()))
    }
    async fn audit(&self, _: usize) -> Result<Vec<paygate_risk::AuditRecord>, RepoError> {
        Ok(vec![])
    }
}

#[tokio::test]
async fn a_version_that_does_not_compile_never_replaces_the_working_set() {
    let engine = RiskEngine::new(
        compile_rules(&[rule("keep", "true", 3)], 4).unwrap(),
        None,
        RiskConfig::default(),
    );
    let err = reload_once(&engine, &Tampered).await.unwrap_err();
    assert!(err.to_string().contains("future"), "{err}");
    assert_eq!(engine.rules_version(), 4);
    assert_eq!(engine.decide(&big_payment()).score, 3);

    let engine = Arc::new(engine);
    let handle = spawn_reloader(
        engine.clone(),
        Arc::new(Tampered),
        Duration::from_millis(20),
    );
    let start = Instant::now();
    while handle.last_error().is_none() {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(engine.rules_version(), 4);
    handle.stop();
}
