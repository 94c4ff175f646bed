//! Rules: their source form (TOML files in `rules/`, or rows in a repository), compilation into
//! a [`CompiledRuleSet`], and evaluation against one event's features.
//!
//! A rule applies when its [`Scope`] matches the event (kind, merchant, industry, trade type) and
//! its CEL `trigger` is true; it fires when its CEL `expression` is true, adding `score`.
//! Compilation refuses anything that could fail at run time in a way a test would miss: syntax
//! errors, names outside the feature catalogue, a result that is not a bool, and an error on a
//! probe event with no history. An expression that still errors at run time (an overflow, say)
//! counts as not fired and is reported in [`crate::Decision::errors`]; evaluation goes on.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::common::types::CelBool;
use cel::common::value::CowVal;
use cel::context::VariableResolver;
use cel::{Context, Program, Value};
use serde::{Deserialize, Serialize};

use crate::event::{EventKind, RiskEvent};
use crate::fast::{self, Fast};
use crate::features::{Features, feature_index};

/// The three layers of the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Plain business and velocity rules: obvious risk.
    Rule,
    /// Device fingerprints, the device graph and network signals: abnormal behaviour.
    Device,
    /// Rules over the model score: what the other two miss.
    Model,
}

impl Layer {
    pub fn as_str(&self) -> &'static str {
        match self {
            Layer::Rule => "rule",
            Layer::Device => "device",
            Layer::Model => "model",
        }
    }
}

/// Where a rule applies. An empty list means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scope {
    pub kinds: Vec<EventKind>,
    pub merchants: Vec<String>,
    pub industries: Vec<String>,
    pub trade_types: Vec<String>,
}

/// A rule as written and stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSource {
    pub id: String,
    pub layer: Layer,
    pub description: String,
    #[serde(default)]
    pub scope: Scope,
    /// CEL; empty or `true` means always.
    #[serde(default)]
    pub trigger: String,
    /// CEL, a bool.
    pub expression: String,
    /// Added to the decision's score when the rule fires; negative for low-risk signals.
    pub score: i64,
    #[serde(default)]
    pub tags: Vec<String>,
    /// An example that fires the rule; see [`crate::rule_examples`] for the format.
    #[serde(default)]
    pub example_fires: serde_json::Value,
    /// An example that does not.
    #[serde(default)]
    pub example_passes: serde_json::Value,
}

/// Why rules were refused. Every variant names the rule (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("rule id {0:?} is used more than once")]
    DuplicateId(String),
    #[error("rule id {0:?} is not valid (1-64 characters of A-Z a-z 0-9 - _ .)")]
    InvalidId(String),
    #[error("rule {rule}: {part} does not compile: {message}")]
    Compile {
        rule: String,
        part: &'static str,
        message: String,
    },
    #[error("rule {rule}: {part} names {name:?}, which is not a feature (see FEATURES)")]
    UnknownVariable {
        rule: String,
        part: &'static str,
        name: String,
    },
    #[error("rule {rule}: {part} gives {got}, not a bool")]
    NotBoolean {
        rule: String,
        part: &'static str,
        got: String,
    },
    #[error("rule {rule}: {part} fails on an event without history: {message}")]
    Probe {
        rule: String,
        part: &'static str,
        message: String,
    },
}

/// One rule that fired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    pub rule_id: String,
    pub layer: Layer,
    pub score: i64,
    pub tags: Vec<String>,
}

/// A rule whose expression errored at run time (counted as not fired).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEvalError {
    pub rule_id: String,
    pub message: String,
}

struct CompiledRule {
    id: String,
    layer: Layer,
    score: i64,
    tags: Vec<String>,
    trigger: Option<usize>,
    program: Program,
    fast: Option<Fast>,
    trade_types: Vec<String>,
    industries: Vec<String>,
}

/// Rules of one event kind, indexed so that an event only looks at the rules that can apply.
#[derive(Default)]
struct KindIndex {
    general: Vec<usize>,
    by_merchant: HashMap<String, Vec<usize>>,
    by_industry: HashMap<String, Vec<usize>>,
}

/// A compiled, immutable rule set. Evaluation shares one root CEL context (the standard
/// library, built once here) and gives each event one child scope whose variables resolve
/// straight into the event's [`Features`]: no context is built and nothing is copied per rule.
pub struct CompiledRuleSet {
    version: u64,
    rules: Vec<CompiledRule>,
    triggers: Vec<(Program, Option<Fast>)>,
    index: [KindIndex; 2],
    root: Context<'static, 'static>,
    sources: Vec<RuleSource>,
}

impl std::fmt::Debug for CompiledRuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledRuleSet")
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .field("triggers", &self.triggers.len())
            .finish()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_always(trigger: &str) -> bool {
    let t = trigger.trim();
    t.is_empty() || t == "true"
}

/// Compiles `sources` as rule set `version`. The first rule that does not compile is refused
/// with an error naming it; nothing of a refused set is used.
pub fn compile_rules(sources: &[RuleSource], version: u64) -> Result<CompiledRuleSet, RuleError> {
    let root = Context::default();
    let mut seen = HashSet::new();
    let mut rules = Vec::with_capacity(sources.len());
    let mut triggers: Vec<(Program, Option<Fast>)> = Vec::new();
    let mut trigger_ids: HashMap<String, usize> = HashMap::new();
    let probe_event = probe_event();
    let probe = Features::probe(&probe_event);
    for s in sources {
        if !valid_id(&s.id) {
            return Err(RuleError::InvalidId(s.id.clone()));
        }
        if !seen.insert(s.id.as_str()) {
            return Err(RuleError::DuplicateId(s.id.clone()));
        }
        let trigger = if is_always(&s.trigger) {
            None
        } else {
            let key = s.trigger.trim().to_owned();
            match trigger_ids.get(&key) {
                Some(i) => Some(*i),
                None => {
                    let p = compile_part(&s.id, "trigger", &key, &root, &probe)?;
                    let f = fast::compile(p.expression());
                    triggers.push((p, f));
                    trigger_ids.insert(key, triggers.len() - 1);
                    Some(triggers.len() - 1)
                }
            }
        };
        let program = compile_part(&s.id, "expression", &s.expression, &root, &probe)?;
        let fast = fast::compile(program.expression());
        rules.push(CompiledRule {
            id: s.id.clone(),
            layer: s.layer,
            score: s.score,
            tags: s.tags.clone(),
            trigger,
            program,
            fast,
            trade_types: s.scope.trade_types.clone(),
            industries: s.scope.industries.clone(),
        });
    }
    let index = build_index(sources);
    Ok(CompiledRuleSet {
        version,
        rules,
        triggers,
        index,
        root,
        sources: sources.to_vec(),
    })
}

fn build_index(sources: &[RuleSource]) -> [KindIndex; 2] {
    let mut index = [KindIndex::default(), KindIndex::default()];
    for (i, s) in sources.iter().enumerate() {
        for kind in EventKind::ALL {
            if !s.scope.kinds.is_empty() && !s.scope.kinds.contains(&kind) {
                continue;
            }
            let k = &mut index[kind.index()];
            if !s.scope.merchants.is_empty() {
                // Industries and trade types of a merchant-scoped rule are checked at evaluation.
                for m in &s.scope.merchants {
                    k.by_merchant.entry(m.clone()).or_default().push(i);
                }
            } else if !s.scope.industries.is_empty() {
                for ind in &s.scope.industries {
                    k.by_industry.entry(ind.clone()).or_default().push(i);
                }
            } else {
                k.general.push(i);
            }
        }
    }
    index
}

fn compile_part(
    rule: &str,
    part: &'static str,
    source: &str,
    root: &Context<'static, 'static>,
    probe: &Features<'_>,
) -> Result<Program, RuleError> {
    let program = Program::compile(source).map_err(|e| RuleError::Compile {
        rule: rule.to_owned(),
        part,
        message: e.to_string(),
    })?;
    let references = program.references();
    let mut unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|v| feature_index(v).is_none())
        .collect();
    unknown.sort_unstable();
    if let Some(name) = unknown.first() {
        return Err(RuleError::UnknownVariable {
            rule: rule.to_owned(),
            part,
            name: (*name).to_owned(),
        });
    }
    match eval_bool(&program, root, probe) {
        Ok(_) => Ok(program),
        Err(EvalFailure::NotBool(got)) => Err(RuleError::NotBoolean {
            rule: rule.to_owned(),
            part,
            got,
        }),
        Err(EvalFailure::Error(message)) => Err(RuleError::Probe {
            rule: rule.to_owned(),
            part,
            message,
        }),
    }
}

/// The event compilation probes every rule with: fields present, no history.
fn probe_event() -> RiskEvent {
    let mut e = RiskEvent::prepay("probe", "JSAPI", 1, time::OffsetDateTime::UNIX_EPOCH);
    e.payer_key = Some("probe".into());
    e
}

enum EvalFailure {
    NotBool(String),
    Error(String),
}

/// Resolves CEL variables straight into one event's features (no copying).
struct FeatureResolver<'a, 'e> {
    features: &'a Features<'e>,
}

impl VariableResolver for FeatureResolver<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let i = feature_index(variable)?;
        self.features.val(i).map(CowVal::Borrowed)
    }
}

/// Narrows the root context's lifetimes to an event's (the context is covariant in both).
fn narrow<'a, 'v>(root: &'a Context<'static, 'static>) -> &'a Context<'a, 'v> {
    root
}

fn eval_bool(
    program: &Program,
    root: &Context<'static, 'static>,
    features: &Features<'_>,
) -> Result<bool, EvalFailure> {
    let resolver = FeatureResolver { features };
    let mut scope = narrow(root).new_inner_scope();
    scope.set_variable_resolver(&resolver);
    eval_in(program, &scope)
}

/// The native form when it can decide, CEL otherwise.
fn eval_rule(
    program: &Program,
    fast: Option<&Fast>,
    features: &Features<'_>,
    scope: &Context<'_, '_>,
) -> Result<bool, EvalFailure> {
    match fast.and_then(|f| f.eval(features)) {
        Some(b) => Ok(b),
        None => eval_in(program, scope),
    }
}

fn eval_in(program: &Program, scope: &Context<'_, '_>) -> Result<bool, EvalFailure> {
    match Value::resolve_val(program.expression(), scope) {
        Ok(v) => match v.downcast_ref::<CelBool>() {
            Some(b) => Ok(*b.inner()),
            None => Err(EvalFailure::NotBool(v.get_type().name().to_owned())),
        },
        Err(e) => Err(EvalFailure::Error(e.to_string())),
    }
}

/// The outcome of evaluating a rule set on one event.
#[derive(Debug, Default)]
pub(crate) struct Evaluation {
    pub score: i64,
    pub fired: Vec<Fired>,
    pub errors: Vec<RuleEvalError>,
    /// Rules whose scope matched (their trigger was looked at), for metrics and tests.
    pub considered: usize,
}

impl CompiledRuleSet {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The sources it was compiled from.
    pub fn sources(&self) -> &[RuleSource] {
        &self.sources
    }

    /// Evaluates every applicable rule on `features` (which include the model score).
    pub(crate) fn evaluate(&self, e: &RiskEvent, features: &Features<'_>) -> Evaluation {
        let resolver = FeatureResolver { features };
        let mut scope = narrow(&self.root).new_inner_scope();
        scope.set_variable_resolver(&resolver);
        // Each distinct trigger runs at most once per event: many rules share one.
        let mut trigger_cache: Vec<Option<bool>> = vec![None; self.triggers.len()];
        let mut out = Evaluation::default();
        let k = &self.index[e.kind.index()];
        let industry = e.merchant_industry.as_deref().unwrap_or("");
        let by_merchant = k.by_merchant.get(&e.mchid).map(Vec::as_slice);
        let by_industry = k.by_industry.get(industry).map(Vec::as_slice);
        let lists = [
            k.general.as_slice(),
            by_merchant.unwrap_or(&[]),
            by_industry.unwrap_or(&[]),
        ];
        for i in lists.into_iter().flatten() {
            let Some(rule) = self.rules.get(*i) else {
                continue;
            };
            if !rule.trade_types.is_empty() && !rule.trade_types.contains(&e.trade_type) {
                continue;
            }
            if !rule.industries.is_empty() && !rule.industries.iter().any(|x| x == industry) {
                continue;
            }
            out.considered += 1;
            if let Some(t) = rule.trigger {
                let hit = match trigger_cache.get(t).copied().flatten() {
                    Some(hit) => hit,
                    None => {
                        let hit = self.triggers.get(t).is_some_and(|(p, f)| {
                            eval_rule(p, f.as_ref(), features, &scope).unwrap_or(false)
                        });
                        if let Some(slot) = trigger_cache.get_mut(t) {
                            *slot = Some(hit);
                        }
                        hit
                    }
                };
                if !hit {
                    continue;
                }
            }
            match eval_rule(&rule.program, rule.fast.as_ref(), features, &scope) {
                Ok(true) => {
                    out.score = out.score.saturating_add(rule.score);
                    out.fired.push(Fired {
                        rule_id: rule.id.clone(),
                        layer: rule.layer,
                        score: rule.score,
                        tags: rule.tags.clone(),
                    });
                }
                Ok(false) => {}
                Err(EvalFailure::NotBool(got)) => out.errors.push(RuleEvalError {
                    rule_id: rule.id.clone(),
                    message: format!("gave {got}, not a bool"),
                }),
                Err(EvalFailure::Error(message)) => out.errors.push(RuleEvalError {
                    rule_id: rule.id.clone(),
                    message,
                }),
            }
        }
        out
    }
}

impl CompiledRuleSet {
    /// How many rule expressions and triggers run natively rather than through CEL.
    pub fn native_counts(&self) -> (usize, usize) {
        (
            self.rules.iter().filter(|r| r.fast.is_some()).count(),
            self.triggers.iter().filter(|(_, f)| f.is_some()).count(),
        )
    }

    /// Evaluates every native form on `features` both ways; panics on a disagreement.
    /// Returns the number of comparisons. Tests only.
    #[cfg(test)]
    pub(crate) fn compare_fast_with_cel(&self, features: &Features<'_>) -> usize {
        let resolver = FeatureResolver { features };
        let mut scope = narrow(&self.root).new_inner_scope();
        scope.set_variable_resolver(&resolver);
        let mut n = 0;
        let forms = self
            .rules
            .iter()
            .map(|r| (r.id.as_str(), &r.program, r.fast.as_ref()))
            .chain(
                self.triggers
                    .iter()
                    .map(|(p, f)| ("trigger", p, f.as_ref())),
            );
        for (id, program, fast) in forms {
            let Some(fast) = fast else { continue };
            let Some(native) = fast.eval(features) else {
                continue;
            };
            let cel = eval_in(program, &scope).ok();
            assert_eq!(Some(native), cel, "{id}: native and CEL disagree");
            n += 1;
        }
        n
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LibraryFile {
    layer: Layer,
    #[serde(default)]
    rule: Vec<LibraryRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LibraryRule {
    id: String,
    description: String,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    trigger: String,
    expression: String,
    score: i64,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    example_fires: Option<toml::Value>,
    #[serde(default)]
    example_passes: Option<toml::Value>,
}

/// Reads every `*.toml` file under `dir` (recursively, in path order). Each file names its
/// `layer` once and lists `[[rule]]` tables; ids must be unique across the library.
pub fn load_library(dir: &Path) -> Result<Vec<RuleSource>, RuleError> {
    let mut files = Vec::new();
    collect_toml(dir, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for path in files {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| RuleError::Io {
            path: shown.clone(),
            source,
        })?;
        let file: LibraryFile = toml::from_str(&text).map_err(|e| RuleError::File {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        for r in file.rule {
            if !seen.insert(r.id.clone()) {
                return Err(RuleError::DuplicateId(r.id));
            }
            let to_json = |v: Option<toml::Value>| -> Result<serde_json::Value, RuleError> {
                match v {
                    None => Ok(serde_json::Value::Null),
                    Some(v) => serde_json::to_value(v).map_err(|e| RuleError::File {
                        path: shown.clone(),
                        message: format!("rule {}: example: {e}", r.id),
                    }),
                }
            };
            let example_fires = to_json(r.example_fires)?;
            let example_passes = to_json(r.example_passes)?;
            out.push(RuleSource {
                id: r.id,
                layer: file.layer,
                description: r.description,
                scope: r.scope,
                trigger: r.trigger,
                expression: r.expression,
                score: r.score,
                tags: r.tags,
                example_fires,
                example_passes,
            });
        }
    }
    Ok(out)
}

fn collect_toml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RuleError> {
    let rd = std::fs::read_dir(dir).map_err(|source| RuleError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| RuleError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_toml(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The library shipped in `crates/paygate-risk/rules/`.
pub fn bundled_library_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

// CompiledRuleSet is swapped between threads behind an ArcSwap.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledRuleSet>();
    assert_send_sync::<Arc<CompiledRuleSet>>();
};

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, trigger: &str, expr: &str) -> RuleSource {
        RuleSource {
            id: id.into(),
            layer: Layer::Rule,
            description: String::new(),
            scope: Scope::default(),
            trigger: trigger.into(),
            expression: expr.into(),
            score: 10,
            tags: vec![],
            example_fires: serde_json::Value::Null,
            example_passes: serde_json::Value::Null,
        }
    }

    #[test]
    fn refuses_bad_rules_naming_them() {
        let cases = [
            (rule("bad-syntax", "", "amount_fen >"), "bad-syntax"),
            (rule("unknown", "", "amount > 5"), "amount"),
            (rule("not-bool", "", "amount_fen + 1"), "not a bool"),
            (
                rule("div0", "", "payer_sum_1h / payer_cnt_1h > 10"),
                "without history",
            ),
            (rule("bad-trigger", "kind == ", "true"), "trigger"),
        ];
        for (r, needle) in cases {
            let err = compile_rules(std::slice::from_ref(&r), 1).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&r.id), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
        let dup = [rule("a", "", "true"), rule("a", "", "true")];
        assert!(matches!(
            compile_rules(&dup, 1),
            Err(RuleError::DuplicateId(_))
        ));
    }

    #[test]
    fn only_rules_in_scope_are_looked_at() {
        let scoped = |id: &str, scope: Scope| RuleSource {
            scope,
            ..rule(id, "", "true")
        };
        let set = compile_rules(
            &[
                scoped("any", Scope::default()),
                scoped(
                    "other-merchant",
                    Scope {
                        merchants: vec!["1900000002".into()],
                        ..Scope::default()
                    },
                ),
                scoped(
                    "this-merchant-games",
                    Scope {
                        merchants: vec!["1900000001".into()],
                        industries: vec!["games".into()],
                        ..Scope::default()
                    },
                ),
                scoped(
                    "retail",
                    Scope {
                        industries: vec!["retail".into()],
                        ..Scope::default()
                    },
                ),
                scoped(
                    "refunds",
                    Scope {
                        kinds: vec![EventKind::Refund],
                        ..Scope::default()
                    },
                ),
                scoped(
                    "native",
                    Scope {
                        trade_types: vec!["NATIVE".into()],
                        ..Scope::default()
                    },
                ),
            ],
            1,
        )
        .unwrap();
        let mut e = probe_event();
        e.mchid = "1900000001".into();
        e.merchant_industry = Some("retail".into());
        let f = Features::probe(&e);
        let out = set.evaluate(&e, &f);
        let ids: Vec<&str> = out.fired.iter().map(|f| f.rule_id.as_str()).collect();
        assert_eq!(ids, ["any", "retail"]);
        // The other merchant's and the refund rules were never looked at (index), the games
        // and NATIVE ones were looked at and skipped before any CEL ran.
        assert_eq!(out.considered, 2);
        assert_eq!(set.index[0].general.len(), 2);
    }

    #[test]
    fn a_runtime_error_counts_as_not_fired_and_evaluation_goes_on() {
        let set = compile_rules(
            &[
                rule("overflow", "", "amount_fen * 9223372036854775807 > 0"),
                rule("after", "", "true"),
            ],
            1,
        )
        .unwrap();
        let mut e = probe_event();
        e.amount_fen = 2;
        let f = Features::probe(&e);
        let out = set.evaluate(&e, &f);
        assert_eq!(out.fired.len(), 1);
        assert_eq!(out.fired[0].rule_id, "after");
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].rule_id, "overflow");
    }

    #[test]
    fn shares_identical_triggers() {
        let set = compile_rules(
            &[
                rule("a", "amount_fen > 10", "true"),
                rule("b", " amount_fen > 10 ", "false"),
                rule("c", "", "true"),
            ],
            3,
        )
        .unwrap();
        assert_eq!(set.triggers.len(), 1);
        assert_eq!(set.version(), 3);
    }
}
