//! Operator rules: the first rule whose conditions match a payment (merchant, amount range,
//! trade type, time of day) shapes its candidates (only these, never those) and may split
//! the volume between channels by fixed weights. Everything else is left to the score.

use crate::profile::{DailyWindow, TradeKind, TradeSet, beijing_minute};

/// A rule as configured, by channel ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Empty: any merchant.
    pub mchids: Vec<String>,
    pub trade_types: TradeSet,
    pub amount_fen_min: Option<i64>,
    pub amount_fen_max: Option<i64>,
    /// Beijing-time windows; empty: any time.
    pub hours: Vec<DailyWindow>,
    /// Only these channels (empty: all).
    pub only: Vec<String>,
    pub exclude: Vec<String>,
    /// Fixed volume split among these channels, by weight (empty: no split, the score decides).
    pub split: Vec<(String, u32)>,
    /// When the rule leaves no eligible channel, route as if it had not matched.
    pub fallback: bool,
}

/// A rule with channel ids resolved to the router's indexes.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    pub name: String,
    pub mchids: Vec<String>,
    pub trade_types: TradeSet,
    pub amount_fen_min: i64,
    pub amount_fen_max: i64,
    pub hours: Vec<DailyWindow>,
    /// Channels the rule allows, as a bit mask.
    pub allowed: u64,
    pub split: Vec<(usize, u32)>,
    pub fallback: bool,
}

impl CompiledRule {
    pub(crate) fn compile(
        rule: &Rule,
        index: &dyn Fn(&str) -> Option<usize>,
        all: u64,
    ) -> Result<Self, String> {
        let name = &rule.name;
        if name.is_empty() || name.len() > crate::CHANNEL_ID_CHARS_MAX {
            return Err(format!(
                "rule {name:?}: a name of 1 to {} characters",
                crate::CHANNEL_ID_CHARS_MAX
            ));
        }
        let bit = |id: &String| {
            index(id)
                .map(|i| 1u64 << i)
                .ok_or_else(|| format!("rule {name}: no channel {id}"))
        };
        let mut allowed = if rule.only.is_empty() { all } else { 0 };
        for id in &rule.only {
            allowed |= bit(id)?;
        }
        for id in &rule.exclude {
            allowed &= !bit(id)?;
        }
        let mut split = Vec::with_capacity(rule.split.len());
        for (id, weight) in &rule.split {
            let i = index(id).ok_or_else(|| format!("rule {name}: no channel {id}"))?;
            split.push((i, *weight));
        }
        if !split.is_empty() && split.iter().all(|(_, w)| *w == 0) {
            return Err(format!("rule {name}: a split needs a positive weight"));
        }
        let amount_fen_min = rule.amount_fen_min.unwrap_or(i64::MIN);
        let amount_fen_max = rule.amount_fen_max.unwrap_or(i64::MAX);
        if amount_fen_max < amount_fen_min {
            return Err(format!("rule {name}: amount_fen_max below amount_fen_min"));
        }
        Ok(CompiledRule {
            name: name.clone(),
            mchids: rule.mchids.clone(),
            trade_types: if rule.trade_types.is_empty() {
                TradeSet::ALL
            } else {
                rule.trade_types
            },
            amount_fen_min,
            amount_fen_max,
            hours: rule.hours.clone(),
            allowed,
            split,
            fallback: rule.fallback,
        })
    }

    pub(crate) fn matches(
        &self,
        mchid: &str,
        trade: TradeKind,
        amount_fen: i64,
        now_ms: i64,
    ) -> bool {
        (self.mchids.is_empty() || self.mchids.iter().any(|m| m == mchid))
            && self.trade_types.contains(trade)
            && (self.amount_fen_min..=self.amount_fen_max).contains(&amount_fen)
            && (self.hours.is_empty() || {
                let minute = beijing_minute(now_ms);
                self.hours.iter().any(|w| w.contains(minute))
            })
    }
}
