//! The engine the gateway calls: features, model score and rules in one pure read
//! ([`RiskEngine::decide`]), then the counters updated once the outcome is known
//! ([`RiskEngine::record`]).

use std::cell::RefCell;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use hmac::{Hmac, KeyInit, Mac};
use paygate_core::error::ErrorCode;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::UtcOffset;

use crate::event::{EventKind, RiskEvent};
use crate::features::{FeatureStore, Features, Keyer, MemoryConfig};
use crate::lists::Lists;
use crate::model::Model;
use crate::rules::{CompiledRuleSet, Fired, RuleEvalError};

/// What the gateway does with the payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Go on.
    Allow,
    /// Go on, and flag the order for a person to look at.
    Review,
    /// The payer would have to prove it is them. WeChat Pay v3 offers merchants no step-up, so
    /// the gateway refuses like [`Action::Deny`] (the merchant may retry after the payer
    /// verified elsewhere); it is kept apart so that figures and a future step-up can tell.
    Challenge,
    /// Refuse: `403 RULE_LIMIT`, nothing is created at the channel.
    Deny,
}

impl Action {
    /// Whether the payment is stopped.
    pub fn blocks(&self) -> bool {
        matches!(self, Action::Challenge | Action::Deny)
    }
}

/// Score → action for one scenario: the highest threshold the score reaches wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    pub review: i64,
    pub challenge: i64,
    pub deny: i64,
}

impl Thresholds {
    pub fn action(&self, score: i64) -> Action {
        if score >= self.deny {
            Action::Deny
        } else if score >= self.challenge {
            Action::Challenge
        } else if score >= self.review {
            Action::Review
        } else {
            Action::Allow
        }
    }
}

/// Thresholds per scenario. The defaults are the ones tuned on the validation stream (see
/// `examples/evaluate.rs`), for the bundled library and model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioThresholds {
    pub prepay: Thresholds,
    pub refund: Thresholds,
}

impl Default for ScenarioThresholds {
    fn default() -> Self {
        Self {
            prepay: Thresholds {
                review: 40,
                challenge: 80,
                deny: 100,
            },
            refund: Thresholds {
                review: 40,
                challenge: 80,
                deny: 100,
            },
        }
    }
}

impl ScenarioThresholds {
    pub fn for_kind(&self, kind: EventKind) -> &Thresholds {
        match kind {
            EventKind::Prepay => &self.prepay,
            EventKind::Refund => &self.refund,
        }
    }
}

/// A secret whose `Debug` never prints it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Engine settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RiskConfig {
    pub thresholds: ScenarioThresholds,
    /// Keys [`RiskEngine::payer_key`] (HMAC-SHA256). Set it per deployment and keep it: payer
    /// keys stored with orders and on lists are only comparable under one secret.
    pub payer_key_secret: Secret,
    /// Keys the in-memory entity hashes (SipHash-1-3), so clients cannot pick colliding ids.
    /// Any random value; it may change at restart (memory is lost then anyway).
    pub hash_key: Secret,
    /// The zone `hour`, `weekday` and `is_night` are computed in, minutes east of UTC.
    pub utc_offset_minutes: i32,
    pub memory: MemoryConfig,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            thresholds: ScenarioThresholds::default(),
            payer_key_secret: Secret(b"paygate-dev-payer-key".to_vec()),
            hash_key: Secret(b"paygate-risk-dev".to_vec()),
            utc_offset_minutes: 8 * 60,
            memory: MemoryConfig::default(),
        }
    }
}

/// The outcome of one decision, ready to be stored with the order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    pub score: i64,
    pub fired: Vec<Fired>,
    pub model_score: Option<f64>,
    pub rules_version: u64,
    /// Rules whose expression failed at run time (counted as not fired).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RuleEvalError>,
}

impl Decision {
    /// The V3 error a blocked payment answers with: `403 RULE_LIMIT` "交易存在风险", or `None`
    /// when the payment goes on ([`Action::Allow`], [`Action::Review`]).
    pub fn error(&self) -> Option<(ErrorCode, &'static str)> {
        if self.action.blocks() {
            Some((ErrorCode::RuleLimit, DENY_MESSAGE))
        } else {
            None
        }
    }
}

/// The message of a refused payment; deliberately says nothing about which rule fired.
pub const DENY_MESSAGE: &str = "交易存在风险";

/// The risk engine: share it (`Arc`) between request handlers. Rules, lists and the model are
/// each swapped atomically; a decision in flight keeps the versions it started with.
pub struct RiskEngine {
    rules: ArcSwap<CompiledRuleSet>,
    lists: ArcSwap<Lists>,
    model: ArcSwapOption<Model>,
    thresholds: ArcSwap<ScenarioThresholds>,
    store: FeatureStore,
    payer_secret: Secret,
}

impl std::fmt::Debug for RiskEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiskEngine")
            .field("rules_version", &self.rules_version())
            .finish()
    }
}

thread_local! {
    // The model's input vector, reused: a decision allocates no buffer for it.
    static MODEL_INPUT: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl RiskEngine {
    pub fn new(rules: CompiledRuleSet, model: Option<Model>, config: RiskConfig) -> Self {
        let mut hash_key = [0u8; 16];
        // A short or long configured key is folded into 16 bytes; a SipHash key needs no more.
        for (i, b) in config.hash_key.0.iter().enumerate() {
            hash_key[i % 16] ^= *b;
        }
        let offset = UtcOffset::from_whole_seconds(config.utc_offset_minutes.saturating_mul(60))
            .unwrap_or(UtcOffset::UTC);
        Self {
            rules: ArcSwap::from_pointee(rules),
            lists: ArcSwap::from_pointee(Lists::default()),
            model: ArcSwapOption::from(model.map(Arc::new)),
            thresholds: ArcSwap::from_pointee(config.thresholds),
            store: FeatureStore::new(Keyer::new(hash_key), offset, &config.memory),
            payer_secret: config.payer_key_secret,
        }
    }

    /// The payer key for an openid: hex of HMAC-SHA256(secret, openid), first 128 bits.
    pub fn payer_key(&self, openid: &str) -> String {
        payer_key_with(&self.payer_secret.0, openid)
    }

    /// Decides on `event` without changing anything: the features as of before it, the model
    /// score, every applicable rule. Call [`RiskEngine::record`] afterwards.
    pub fn decide(&self, event: &RiskEvent) -> Decision {
        self.decide_inner(event, None, false).0
    }

    /// [`RiskEngine::decide`] and every feature it saw (as JSON), for explanations and debugging.
    pub fn explain(&self, event: &RiskEvent) -> (Decision, serde_json::Value) {
        let (d, f) = self.decide_inner(event, None, true);
        (d, f.unwrap_or(serde_json::Value::Null))
    }

    /// Decides with the model score given rather than computed (rule examples, what-if tools).
    pub fn decide_with_model_score(&self, event: &RiskEvent, model_score: f64) -> Decision {
        self.decide_inner(event, Some(model_score), false).0
    }

    fn decide_inner(
        &self,
        event: &RiskEvent,
        model_override: Option<f64>,
        explain: bool,
    ) -> (Decision, Option<serde_json::Value>) {
        let rules = self.rules.load();
        let lists = self.lists.load();
        let mut features = self.store.compute(event, &lists);
        let model_score = match model_override {
            Some(s) => Some(s),
            None => self.model_score(&features),
        };
        features.set_model_score(model_score);
        let eval = rules.evaluate(event, &features);
        let action = self
            .thresholds
            .load()
            .for_kind(event.kind)
            .action(eval.score);
        let decision = Decision {
            action,
            score: eval.score,
            fired: eval.fired,
            model_score,
            rules_version: rules.version(),
            errors: eval.errors,
        };
        // Only explanations pay for the JSON.
        let explained = explain.then(|| features.to_json());
        (decision, explained)
    }

    fn model_score(&self, features: &Features<'_>) -> Option<f64> {
        let model = self.model.load();
        let model = model.as_ref()?;
        Some(MODEL_INPUT.with(|buf| {
            let mut x = buf.borrow_mut();
            features.model_input(&mut x);
            model.score(&x)
        }))
    }

    /// Counts `event` into the velocity counters, distinct sets and device graph. Call it once
    /// per decided event, whatever the action: denied attempts are what card testing looks like.
    pub fn record(&self, event: &RiskEvent, decision: &Decision) {
        self.store.record(event, decision.action == Action::Deny);
    }

    /// [`RiskEngine::decide`] then [`RiskEngine::record`].
    pub fn decide_and_record(&self, event: &RiskEvent) -> Decision {
        let d = self.decide(event);
        self.record(event, &d);
        d
    }

    /// Hot reload: later decisions use `rules`; decisions in flight finish on the old set.
    pub fn replace_rules(&self, rules: CompiledRuleSet) {
        self.rules.store(Arc::new(rules));
    }

    pub fn rules_version(&self) -> u64 {
        self.rules.load().version()
    }

    /// The rule set in use.
    pub fn rules(&self) -> Arc<CompiledRuleSet> {
        self.rules.load_full()
    }

    pub fn set_lists(&self, lists: Lists) {
        self.lists.store(Arc::new(lists));
    }

    pub fn lists(&self) -> Arc<Lists> {
        self.lists.load_full()
    }

    pub fn set_model(&self, model: Option<Model>) {
        self.model.store(model.map(Arc::new));
    }

    pub fn set_thresholds(&self, thresholds: ScenarioThresholds) {
        self.thresholds.store(Arc::new(thresholds));
    }

    pub fn thresholds(&self) -> ScenarioThresholds {
        **self.thresholds.load()
    }

    /// The most memory the behaviour counters can ever take with this configuration.
    pub fn memory_bound_bytes(&self) -> usize {
        self.store.memory_bound_bytes()
    }

    /// Entities remembered now, per kind.
    pub fn entity_counts(&self) -> [(&'static str, usize); 8] {
        self.store.entity_counts()
    }
}

/// [`RiskEngine::payer_key`] with an explicit secret (for tools that have no engine).
pub fn payer_key_with(secret: &[u8], openid: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps it total.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(openid.as_bytes());
            let tag = mac.finalize().into_bytes();
            hex::encode(&tag[..16])
        }
        Err(_) => String::new(),
    }
}

// The gateway shares one engine between all request tasks.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RiskEngine>();
};
