//! The risk engine on the payment path: a decision on every new prepay, before routing.
//! DENY (and CHALLENGE, which a server-to-server API cannot put to the payer) answers
//! `403 RULE_LIMIT` and nothing is created at the channel; REVIEW lets the order through,
//! flagged. Unless `risk.model_may_deny` is set, a refusal stands only if the rule and device
//! layers' score alone reaches a refusing threshold; otherwise it becomes a REVIEW: the bundled
//! model was trained on a synthetic stream in which every young merchant at night looks like
//! collusion, so its score alone flags and never refuses. Decisions that fired a rule or did not allow are stored with the rules that
//! fired and can be queried (admin API); every decision is counted in the metrics.

use std::sync::Arc;

use paygate_core::error::{ApiError, ErrorCode};
use paygate_risk::{
    Action, CompiledRuleSet, Decision, Layer, Model, RiskConfig, RiskEngine, RiskEvent, RuleSource,
    Secret, bundled_library_dir, load_library,
};
use paygate_store::{MerchantRecord, RiskDecisionRecord};
use paygate_wxpay::models::payments::{PrepayRequest, TradeType};

use crate::config::RiskSettings;
use crate::http::AppState;

#[derive(Debug, thiserror::Error)]
#[error("risk engine: {0}")]
pub struct RiskSetupError(pub String);

/// The bundled (or configured) rule library: what an empty store is seeded with.
pub fn library(settings: &RiskSettings) -> Result<Vec<RuleSource>, RiskSetupError> {
    let dir = settings
        .rules_dir
        .clone()
        .unwrap_or_else(bundled_library_dir);
    load_library(&dir).map_err(|e| RiskSetupError(e.to_string()))
}

/// The engine's configuration from the settings.
pub fn config(settings: &RiskSettings) -> RiskConfig {
    let mut config = RiskConfig::default();
    if let Some(secret) = &settings.payer_key_secret {
        config.payer_key_secret = Secret(secret.as_bytes().to_vec());
    }
    config.hash_key = Secret(paygate_core::ids::token(32).into_bytes());
    config
}

/// Builds the engine on `rules` (the newest stored version, see `risk_rules`) and the
/// bundled model.
pub fn engine(
    settings: &RiskSettings,
    rules: CompiledRuleSet,
) -> Result<Arc<RiskEngine>, RiskSetupError> {
    let model = Model::bundled().map_err(|e| RiskSetupError(e.to_string()))?;
    Ok(Arc::new(RiskEngine::new(
        rules,
        Some(model),
        config(settings),
    )))
}

fn action_str(action: Action) -> &'static str {
    match action {
        Action::Allow => "ALLOW",
        Action::Review => "REVIEW",
        Action::Challenge => "CHALLENGE",
        Action::Deny => "DENY",
    }
}

/// The event the engine sees for a prepay: the payer only as a keyed hash.
pub fn prepay_event(
    engine: &RiskEngine,
    merchant: &MerchantRecord,
    trade: TradeType,
    request: &PrepayRequest,
) -> RiskEvent {
    let trade_type = if trade == TradeType::Mweb {
        "H5"
    } else {
        trade.as_str()
    };
    let mut event = RiskEvent::prepay(
        &merchant.mchid,
        trade_type,
        request.amount.total,
        time::OffsetDateTime::now_utc(),
    );
    event.currency = request.amount.currency_or_cny().to_string();
    event.merchant_created_at = Some(merchant.created_at);
    event.payer_key = request.payer.as_ref().map(|p| engine.payer_key(&p.openid));
    if let Some(scene) = &request.scene_info {
        event.client_ip = scene.payer_client_ip.parse().ok();
        event.device_id = scene.device_id.clone();
        event.store_id = scene.store_info.as_ref().map(|s| s.id.clone());
        if let Some(h5) = &scene.h5_info {
            event.h5_type = serde_json::to_value(h5.r#type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            event.app_name = h5.app_name.clone();
        }
    }
    event
}

/// Decides on a new prepay. `Err` is the answer to a blocked payment; `Ok` carries the
/// decision to keep once the order exists.
pub async fn assess_prepay(
    app: &AppState,
    merchant: &MerchantRecord,
    trade: TradeType,
    request: &PrepayRequest,
) -> Result<Option<Decision>, ApiError> {
    let Some(engine) = &app.risk else {
        return Ok(None);
    };
    let event = prepay_event(engine, merchant, trade, request);
    let mut decision = engine.decide(&event);
    engine.record(&event, &decision);
    if decision.action.blocks() && !app.config.risk.model_may_deny {
        // The learned score flags an order for review; refusing takes the rule and device
        // layers' own score reaching a refusing threshold.
        let without_model: i64 = decision
            .fired
            .iter()
            .filter(|f| f.layer != Layer::Model)
            .map(|f| f.score)
            .sum();
        if !engine.thresholds().prepay.action(without_model).blocks() {
            decision.action = Action::Review;
        }
    }
    if decision.action.blocks() && !refusal_stands(app, &decision) {
        decision.action = Action::Review;
    }
    app.metrics.observe_risk(action_str(decision.action));
    if let Some((code, message)) = decision.error() {
        keep(app, merchant, &request.out_trade_no, None, &decision).await;
        tracing::info!(mchid = %merchant.mchid, out_trade_no = %request.out_trade_no, score = decision.score, "prepay refused by risk control");
        return Err(ApiError::new(code, message));
    }
    Ok(Some(decision))
}

/// Whether a refusal stands under `risk.enforce`: in `lists` mode only an operator's block
/// list refuses (its rules carry the `block` tag).
pub(crate) fn refusal_stands(app: &AppState, decision: &Decision) -> bool {
    match app.config.risk_enforcement() {
        crate::config::Enforce::All => true,
        crate::config::Enforce::Lists => decision
            .fired
            .iter()
            .any(|f| f.tags.iter().any(|t| t == "block")),
        crate::config::Enforce::Never => false,
    }
}

/// Stores a decision worth keeping (see [`record`]); a failure to store is logged, not turned
/// into a payment failure. An admitted prepay's decision is stored with its order instead.
pub async fn keep(
    app: &AppState,
    merchant: &MerchantRecord,
    reference: &str,
    transaction_id: Option<String>,
    decision: &Decision,
) {
    let Some(record) = record(merchant, reference, transaction_id, decision) else {
        return;
    };
    if let Err(e) = app.store.insert_risk_decision(&record).await {
        tracing::error!(error = %e, "a risk decision could not be stored");
    }
}

/// The stored form of a decision worth keeping: not allowed, or a rule fired.
pub fn record(
    merchant: &MerchantRecord,
    reference: &str,
    transaction_id: Option<String>,
    decision: &Decision,
) -> Option<RiskDecisionRecord> {
    if decision.action == Action::Allow && decision.fired.is_empty() {
        return None;
    }
    Some(RiskDecisionRecord {
        id: paygate_core::ids::row_id(),
        mchid: merchant.mchid.clone(),
        kind: "PREPAY".into(),
        reference: reference.to_string(),
        transaction_id,
        action: action_str(decision.action).into(),
        score: decision.score,
        fired_json: serde_json::to_string(&decision.fired).unwrap_or_else(|_| "[]".into()),
        rules_version: decision.rules_version as i64,
        at: time::OffsetDateTime::now_utc(),
    })
}

/// The V3 error of a blocked prepay, for documentation and tests.
pub fn blocked() -> ApiError {
    ApiError::new(ErrorCode::RuleLimit, paygate_risk::DENY_MESSAGE)
}
