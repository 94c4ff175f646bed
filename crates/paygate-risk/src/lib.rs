//! Real-time risk decisions for paygate, in process and in microseconds.
//!
//! Three layers decide on every prepay and refund: CEL rules over the event and its behaviour
//! counters (the *rule* layer), device fingerprints and the device graph (the *device* layer),
//! and a gradient-boosted tree model whose score the *model* layer's rules read. Rule scores add
//! up; per-scenario [`Thresholds`] turn the sum into [`Action`]s.
//!
//! ```no_run
//! use paygate_risk::{compile_rules, load_library, bundled_library_dir, Model, RiskConfig,
//!                    RiskEngine, RiskEvent};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rules = compile_rules(&load_library(&bundled_library_dir())?, 1)?;
//! let engine = RiskEngine::new(rules, Some(Model::bundled()?), RiskConfig::default());
//!
//! let mut event = RiskEvent::prepay("1900000001", "JSAPI", 1_999, time::OffsetDateTime::now_utc());
//! event.payer_key = Some(engine.payer_key("o-openid"));
//! let decision = engine.decide(&event);      // pure read: features + model + rules
//! engine.record(&event, &decision);          // then count the event in
//! if let Some((code, message)) = decision.error() {
//!     // 403 RULE_LIMIT "交易存在风险": nothing is created at the channel.
//! #   let _ = (code, message);
//! }
//! # Ok(()) }
//! ```
//!
//! Hot reload: a [`RuleRepository`] stores versioned rule sets and lists with an audit trail;
//! [`spawn_reloader`] applies a new version within its polling period, at once when notified.
//! A set that does not compile is refused when saved and never replaces a working one.

pub mod counters;
pub mod engine;
pub mod event;
mod fast;
pub mod features;
pub mod lists;
pub mod model;
pub mod reload;
pub mod rule_examples;
pub mod rules;
pub mod synth;

pub use engine::{
    Action, DENY_MESSAGE, Decision, RiskConfig, RiskEngine, ScenarioThresholds, Secret, Thresholds,
    payer_key_with,
};
pub use event::{EventKind, RiskEvent};
pub use features::{FEATURES, MemoryConfig, feature_index, model_feature_names};
pub use lists::{ListEntity, ListEntry, ListKind, Lists};
pub use model::{Model, ModelError};
pub use reload::{
    AuditRecord, InMemoryRuleRepository, ReloaderHandle, RepoError, RuleChange, RuleRepository,
    RuleSetVersion, reload_once, spawn_reloader,
};
pub use rules::{
    CompiledRuleSet, Fired, Layer, RuleError, RuleEvalError, RuleSource, Scope,
    bundled_library_dir, compile_rules, load_library,
};
