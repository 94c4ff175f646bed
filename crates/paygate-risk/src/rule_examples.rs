//! Every rule carries an example that fires it and one that does not; this module runs them.
//!
//! An example is a JSON (or TOML) table:
//!
//! ```toml
//! [rule.example_fires]
//! event = { amount_fen = 600000, at = "2026-11-10T03:10:00+08:00" }   # over BASE_EVENT
//! history = [                                                         # recorded first
//!   { offset_s = -50, repeat = 5, every_s = 10, amount_fen = 100, vary = ["payer_key"] },
//! ]
//! lists = [{ kind = "block", entity = "payer", value = "payer-example" }]
//! model_score = 0.97                                                  # instead of a model
//! unset = ["client_ip"]                                               # fields to remove
//! ```
//!
//! `event` patches [`BASE_EVENT`]. Each `history` entry patches the example's event (so prior
//! events are "like this one, except…") and is recorded `repeat` times (default 1), the first at
//! `offset_s` seconds from the example's `at` (negative: before), then every `every_s` seconds
//! (default 1). `vary` lists fields made distinct per repetition: `payer_key`, `device_id`,
//! `mchid`, `user_agent` (a suffix), `client_ip` (the last octet), `client_subnet` (the third
//! octet), `amount_fen` (+ repetition). `denied = true` records those events as denied.
//! Each example runs on a fresh engine holding only its own rule and no model.

use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::engine::{Action, Decision, RiskConfig, RiskEngine};
use crate::event::RiskEvent;
use crate::features::MemoryConfig;
use crate::lists::{ListEntry, Lists};
use crate::rules::{RuleSource, compile_rules};

/// The event every example starts from.
pub const BASE_EVENT: &str = r#"{
    "kind": "prepay",
    "at": "2026-11-10T14:00:00+08:00",
    "mchid": "1900000001",
    "merchant_industry": "retail",
    "merchant_created_at": "2025-01-01T00:00:00+08:00",
    "trade_type": "JSAPI",
    "amount_fen": 2500,
    "currency": "CNY",
    "payer_key": "payer-example",
    "client_ip": "203.0.113.7",
    "device_id": "device-example"
}"#;

/// Why an example could not be run, or did not do what it says.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    #[error("rule {rule}: {which} is missing")]
    Missing { rule: String, which: &'static str },
    #[error("rule {rule}: {which} is not a valid example: {message}")]
    Invalid {
        rule: String,
        which: &'static str,
        message: String,
    },
    #[error("rule {rule}: does not compile: {message}")]
    Compile { rule: String, message: String },
    #[error("rule {rule}: {which} {outcome} (score {score}, errors {errors:?})")]
    Wrong {
        rule: String,
        which: &'static str,
        outcome: &'static str,
        score: i64,
        errors: Vec<String>,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Example {
    #[serde(default)]
    event: Map<String, Value>,
    #[serde(default)]
    history: Vec<History>,
    #[serde(default)]
    lists: Vec<ListEntry>,
    #[serde(default)]
    model_score: Option<f64>,
    #[serde(default)]
    unset: Vec<String>,
}

#[derive(Deserialize)]
struct History {
    #[serde(default)]
    offset_s: i64,
    #[serde(default = "one")]
    repeat: u32,
    #[serde(default = "one_i64")]
    every_s: i64,
    #[serde(default)]
    vary: Vec<String>,
    #[serde(default)]
    denied: bool,
    #[serde(flatten)]
    patch: Map<String, Value>,
}

fn one() -> u32 {
    1
}
fn one_i64() -> i64 {
    1
}

/// Checks that `rule` fires on its `example_fires` and not on its `example_passes`.
pub fn check_rule_examples(rule: &RuleSource) -> Result<(), ExampleError> {
    for (which, example, want) in [
        ("example_fires", &rule.example_fires, true),
        ("example_passes", &rule.example_passes, false),
    ] {
        if example.is_null() {
            return Err(ExampleError::Missing {
                rule: rule.id.clone(),
                which,
            });
        }
        let d = run_example(rule, which, example)?;
        let fired = d.fired.iter().any(|f| f.rule_id == rule.id);
        if fired != want {
            return Err(ExampleError::Wrong {
                rule: rule.id.clone(),
                which,
                outcome: if fired { "fired" } else { "did not fire" },
                score: d.score,
                errors: d.errors.iter().map(|e| e.message.clone()).collect(),
            });
        }
    }
    Ok(())
}

/// Runs one example of `rule` and returns the decision on its event.
pub fn run_example(
    rule: &RuleSource,
    which: &'static str,
    example: &Value,
) -> Result<Decision, ExampleError> {
    let invalid = |message: String| ExampleError::Invalid {
        rule: rule.id.clone(),
        which,
        message,
    };
    let ex: Example =
        serde_json::from_value(example.clone()).map_err(|e| invalid(e.to_string()))?;
    let set = compile_rules(std::slice::from_ref(rule), 1).map_err(|e| ExampleError::Compile {
        rule: rule.id.clone(),
        message: e.to_string(),
    })?;
    let config = RiskConfig {
        memory: MemoryConfig {
            payers_max: 4_096,
            devices_max: 4_096,
            ips_max: 4_096,
            subnets_max: 4_096,
            merchants_max: 4_096,
            payer_merchants_max: 4_096,
            payer_refunds_max: 4_096,
            merchant_refunds_max: 4_096,
        },
        ..RiskConfig::default()
    };
    let engine = RiskEngine::new(set, None, config);
    engine.set_lists(Lists::new(ex.lists.clone()));
    let base: Map<String, Value> =
        serde_json::from_str(BASE_EVENT).map_err(|e| invalid(e.to_string()))?;
    let mut event_json = merge(&base, &ex.event);
    for field in &ex.unset {
        event_json.remove(field);
    }
    let event: RiskEvent = serde_json::from_value(Value::Object(event_json.clone()))
        .map_err(|e| invalid(format!("event: {e}")))?;
    for h in &ex.history {
        for i in 0..h.repeat {
            let mut json = merge(&event_json, &h.patch);
            vary(&mut json, &h.vary, i).map_err(&invalid)?;
            let at = event.at + time::Duration::seconds(h.offset_s + h.every_s * i64::from(i));
            json.insert("at".into(), Value::String(rfc3339(at).map_err(&invalid)?));
            let past: RiskEvent = serde_json::from_value(Value::Object(json))
                .map_err(|e| invalid(format!("history: {e}")))?;
            let action = if h.denied {
                Action::Deny
            } else {
                Action::Allow
            };
            engine.record(&past, &recorded(action));
        }
    }
    Ok(match ex.model_score {
        Some(s) => engine.decide_with_model_score(&event, s),
        None => engine.decide(&event),
    })
}

fn recorded(action: Action) -> Decision {
    Decision {
        action,
        score: 0,
        fired: Vec::new(),
        model_score: None,
        rules_version: 0,
        errors: Vec::new(),
    }
}

fn rfc3339(at: OffsetDateTime) -> Result<String, String> {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}

fn merge(base: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    let mut out = base.clone();
    for (k, v) in patch {
        out.insert(k.clone(), v.clone());
    }
    out
}

fn vary(json: &mut Map<String, Value>, fields: &[String], i: u32) -> Result<(), String> {
    for field in fields {
        match field.as_str() {
            "payer_key" | "device_id" | "mchid" | "user_agent" => {
                let v = json.get(field).and_then(Value::as_str).unwrap_or("x");
                let nv = format!("{v}-{i}");
                json.insert(field.clone(), Value::String(nv));
            }
            "amount_fen" => {
                let v = json.get(field).and_then(Value::as_i64).unwrap_or(0);
                json.insert(field.clone(), Value::from(v + i64::from(i)));
            }
            "client_ip" | "client_subnet" => {
                let ip = json
                    .get("client_ip")
                    .and_then(Value::as_str)
                    .unwrap_or("203.0.113.7");
                let mut o: Vec<u32> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
                if o.len() != 4 {
                    return Err(format!("vary {field} needs an IPv4 client_ip, not {ip}"));
                }
                let at = if field == "client_ip" { 3 } else { 2 };
                o[at] = (o[at] + i) % 256;
                let nv = format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]);
                json.insert("client_ip".into(), Value::String(nv));
            }
            other => return Err(format!("cannot vary {other:?}")),
        }
    }
    Ok(())
}
