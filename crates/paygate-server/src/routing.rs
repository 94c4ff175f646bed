//! The gateway's side of routing: channel profiles from the configuration, the in-process
//! router over them, and which sub-merchant a merchant is at each channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use paygate_channel::{ChannelKind, SubMerchant, WxChannel};
use paygate_routing::{
    BreakerConfig, ChannelProfile, DailyWindow, Decision, Maintenance, MerchantAccess, NoRoute,
    Outcome, RouteRequest, Router, RouterConfig, Rule, ScoreConfig, Strategy, TradeKind, TradeSet,
    WindowConfig,
};
use paygate_store::MerchantRecord;
use paygate_wxpay::models::payments::TradeType;

use crate::config::{ChannelEntry, Config, RoutingConfig, RuleConfig};

/// How one channel maps merchants onto sub-merchants.
struct ChannelRoute {
    kind: ChannelKind,
    sandbox: bool,
    all_merchants: bool,
    subs: HashMap<String, SubMerchant>,
}

/// Bounds of one prepay's retries and failovers.
#[derive(Clone, Debug)]
pub struct RetryBounds {
    pub deadline: Duration,
    pub channels_max: u32,
    pub settle_calls_max: u32,
}

pub struct Routing {
    pub router: Router,
    routes: Vec<ChannelRoute>,
    pub bounds: RetryBounds,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The router's trade kind; `None` for kinds the gateway does not prepay (付款码, 刷脸).
pub fn trade_kind(trade: TradeType) -> Option<TradeKind> {
    TradeKind::parse(trade.as_str())
}

impl Routing {
    /// Profiles from `[[channels]]`, or one default profile for the embedded sandbox channel.
    pub fn build(
        config: &Config,
        channels: &HashMap<String, Arc<WxChannel>>,
    ) -> Result<Self, String> {
        let entries: Vec<ChannelEntry> = if config.channels.is_empty() {
            vec![ChannelEntry {
                id: crate::SANDBOX_CHANNEL.to_string(),
                sandbox: true,
                ..ChannelEntry::default()
            }]
        } else {
            config.channels.clone()
        };
        let mut profiles = Vec::with_capacity(entries.len());
        let mut routes = Vec::with_capacity(entries.len());
        for entry in &entries {
            let channel = channels
                .get(&entry.id)
                .ok_or_else(|| format!("channel {} is not running", entry.id))?;
            let (profile, route) = profile_of(entry, channel.kind())?;
            profiles.push(profile);
            routes.push(route);
        }
        let rules = config
            .routing
            .rules
            .iter()
            .map(rule_of)
            .collect::<Result<Vec<_>, _>>()?;
        let router = Router::new(router_config(&config.routing)?, profiles, &rules)?;
        let r = &config.routing;
        if r.channels_per_prepay_max == 0 || r.settle_calls_max == 0 || r.prepay_deadline_ms == 0 {
            return Err(
                "routing: channels_per_prepay_max, settle_calls_max, prepay_deadline_ms and volume_refresh_ms must be positive"
                    .into(),
            );
        }
        Ok(Routing {
            router,
            routes,
            bounds: RetryBounds {
                deadline: Duration::from_millis(r.prepay_deadline_ms),
                channels_max: r.channels_per_prepay_max,
                settle_calls_max: r.settle_calls_max,
            },
        })
    }

    /// The merchant's sub-merchant at `channel_id`: its configured mapping, its own record
    /// for its own channel, none at a direct channel, or (sandbox provider open to all) a
    /// number derived from the pair, which the simulator onboards on first use. `None`: the
    /// merchant cannot be collected through this channel.
    pub fn sub_for(&self, merchant: &MerchantRecord, channel_id: &str) -> Option<SubMerchant> {
        let route = self
            .router
            .index_of(channel_id)
            .and_then(|i| self.routes.get(i));
        if let Some(sub) = route.and_then(|r| r.subs.get(&merchant.mchid)) {
            return Some(sub.clone());
        }
        if merchant.channel_id == channel_id {
            return Some(crate::flow::sub_of(merchant));
        }
        let route = route?;
        match route.kind {
            ChannelKind::WxDirect if route.all_merchants => Some(SubMerchant::default()),
            ChannelKind::WxPartner if route.all_merchants && route.sandbox => Some(SubMerchant {
                sub_mchid: Some(derived_sub_mchid(channel_id, &merchant.mchid)),
                sub_appid: None,
            }),
            _ => None,
        }
    }

    /// Picks the channel for one prepay; `tried` holds the channels this request tried.
    pub fn decide(
        &self,
        merchant: &MerchantRecord,
        trade: TradeType,
        amount_fen: i64,
        tried: u64,
    ) -> Result<Decision, NoRoute> {
        let trade = trade_kind(trade).ok_or_else(|| NoRoute {
            reason: format!("trade type {} is not routed", trade.as_str()),
        })?;
        let req = RouteRequest {
            mchid: &merchant.mchid,
            home: self.router.index_of(&merchant.channel_id),
            trade,
            amount_fen,
            now_ms: now_ms(),
            tried,
        };
        let decision = self.router.decide(&req, &mut rand::rng())?;
        tracing::debug!(
            mchid = %merchant.mchid,
            channel = self.router.channel_id(decision.channel),
            reason = %decision.reason,
            "routed"
        );
        Ok(decision)
    }

    /// The bit of `channel_id` in a `tried` mask (0 for a channel the router does not know).
    pub fn bit(&self, channel_id: &str) -> u64 {
        self.router.index_of(channel_id).map_or(0, |i| 1u64 << i)
    }

    pub fn record(&self, channel_id: &str, trade: TradeType, outcome: Outcome) {
        if let (Some(i), Some(kind)) = (self.router.index_of(channel_id), trade_kind(trade)) {
            self.router.record(i, kind, outcome, now_ms());
        }
    }

    pub fn add_volume(&self, channel_id: &str, amount_fen: i64) {
        if let Some(i) = self.router.index_of(channel_id) {
            self.router.add_volume(i, amount_fen, now_ms());
        }
    }

    /// Sets every capped channel's volume of the (Beijing) day from the store, where every
    /// node's prepays are. A prepay of this node between the read and the set is counted at
    /// the next refresh.
    pub async fn refresh_volumes(
        &self,
        store: &dyn paygate_store::Store,
    ) -> Result<(), paygate_store::StoreError> {
        let capped: Vec<usize> = (0..self.router.len())
            .filter(|i| {
                self.router
                    .profile(*i)
                    .is_some_and(|p| p.daily_volume_fen_max.is_some())
            })
            .collect();
        if capped.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let day_start_ms = paygate_routing::beijing_day_start_ms(paygate_routing::beijing_day(now));
        let since =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(day_start_ms) * 1_000_000)
                .map_err(|e| paygate_store::StoreError::Database(e.to_string()))?;
        let volumes = store.channel_volumes(since).await?;
        for i in capped {
            let id = self.router.channel_id(i);
            let fen = volumes
                .iter()
                .find(|v| v.channel_id == id)
                .map_or(0, |v| v.amount_fen);
            self.router.set_volume(i, fen, now);
        }
        Ok(())
    }

    /// Health, share and profile of every channel, for the admin API.
    pub fn health_json(&self) -> serde_json::Value {
        let now = now_ms();
        let channels: Vec<serde_json::Value> = self
            .router
            .health(now)
            .into_iter()
            .zip(&self.routes)
            .enumerate()
            .map(|(i, (h, route))| {
                let p = self.router.profile(i);
                serde_json::json!({
                    "id": h.id,
                    "kind": match route.kind { ChannelKind::WxDirect => "wx_direct", ChannelKind::WxPartner => "wx_partner" },
                    "sandbox": route.sandbox,
                    "enabled": h.enabled,
                    "weight": h.weight,
                    "fee_rate_bp": h.fee_rate_bp,
                    "trade_types": TradeKind::ALL.iter().filter(|k| p.is_some_and(|p| p.trade_types.contains(**k))).map(|k| k.as_str()).collect::<Vec<_>>(),
                    "amount_fen_min": p.map(|p| p.amount_fen_min),
                    "amount_fen_max": p.map(|p| p.amount_fen_max).filter(|m| *m != i64::MAX),
                    "all_merchants": route.all_merchants,
                    "merchants_listed": route.subs.len(),
                    "breaker": h.breaker.as_str(),
                    "consecutive_failures": h.consecutive_failures,
                    "window": {"ok": h.window_ok, "fail": h.window_fail, "success_rate": h.success_rate, "latency_ms": h.latency_ms},
                    "share": h.share,
                    "totals": {"routed": h.routed_total, "successes": h.successes_total, "failures": h.failures_total, "timeouts": h.timeouts_total},
                    "volume_today_fen": h.volume_today_fen,
                    "daily_volume_fen_max": h.daily_volume_fen_max,
                })
            })
            .collect();
        let config = self.router.config();
        serde_json::json!({
            "strategy": match config.strategy { Strategy::Score => "score", Strategy::Weight => "weight" },
            "window_ms": config.window.window_ms(),
            "channels": channels,
        })
    }

    /// The same figures as Prometheus text.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for h in self.router.health(now_ms()) {
            let id = &h.id;
            let breaker = match h.breaker {
                paygate_routing::BreakerState::Closed => 0,
                paygate_routing::BreakerState::HalfOpen => 1,
                paygate_routing::BreakerState::Open => 2,
            };
            let _ = writeln!(out, "paygate_channel_share{{channel=\"{id}\"}} {}", h.share);
            let _ = writeln!(
                out,
                "paygate_channel_success_rate{{channel=\"{id}\"}} {}",
                h.success_rate.unwrap_or(f64::NAN)
            );
            let _ = writeln!(
                out,
                "paygate_channel_latency_ms{{channel=\"{id}\"}} {}",
                h.latency_ms
            );
            let _ = writeln!(out, "paygate_channel_breaker{{channel=\"{id}\"}} {breaker}");
            let _ = writeln!(
                out,
                "paygate_channel_routed_total{{channel=\"{id}\"}} {}",
                h.routed_total
            );
            let _ = writeln!(
                out,
                "paygate_channel_successes_total{{channel=\"{id}\"}} {}",
                h.successes_total
            );
            let _ = writeln!(
                out,
                "paygate_channel_failures_total{{channel=\"{id}\"}} {}",
                h.failures_total
            );
            let _ = writeln!(
                out,
                "paygate_channel_timeouts_total{{channel=\"{id}\"}} {}",
                h.timeouts_total
            );
            let _ = writeln!(
                out,
                "paygate_channel_volume_today_fen{{channel=\"{id}\"}} {}",
                h.volume_today_fen
            );
        }
        out
    }
}

fn router_config(r: &RoutingConfig) -> Result<RouterConfig, String> {
    let strategy = match r.strategy.as_str() {
        "score" => Strategy::Score,
        "weight" => Strategy::Weight,
        other => return Err(format!("routing.strategy {other:?}: want score or weight")),
    };
    Ok(RouterConfig {
        strategy,
        score: ScoreConfig {
            success_points: r.success_points,
            cost_points_per_bp: r.cost_points_per_bp,
            latency_points_per_ms: r.latency_points_per_ms,
            ..ScoreConfig::default()
        },
        window: WindowConfig {
            bucket_ms: r.window_bucket_ms,
            buckets: r.window_buckets,
            half_life_ms: r.window_half_life_ms,
        },
        breaker: BreakerConfig {
            failures_max: r.breaker_failures_max,
            cool_down_ms: r.breaker_cool_down_ms,
            probe_interval_ms: r.breaker_probe_interval_ms,
        },
    })
}

fn trade_set(id: &str, names: &[String]) -> Result<TradeSet, String> {
    if names.is_empty() {
        return Ok(TradeSet::ALL);
    }
    let kinds = names
        .iter()
        .map(|n| TradeKind::parse(n).ok_or_else(|| format!("{id}: trade type {n:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TradeSet::of(&kinds))
}

fn maintenance_of(id: &str, s: &str) -> Result<Maintenance, String> {
    if let Some((from, to)) = s.split_once('/') {
        let at = |t: &str| {
            time::OffsetDateTime::parse(t.trim(), &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|e| format!("channel {id}: maintenance {s:?}: {e}"))
        };
        let (from_ms, to_ms) = (at(from)?, at(to)?);
        if to_ms <= from_ms {
            return Err(format!(
                "channel {id}: maintenance {s:?} ends before it starts"
            ));
        }
        return Ok(Maintenance::Once { from_ms, to_ms });
    }
    DailyWindow::parse(s)
        .map(Maintenance::Daily)
        .map_err(|e| format!("channel {id}: maintenance {e}"))
}

fn profile_of(
    entry: &ChannelEntry,
    kind: ChannelKind,
) -> Result<(ChannelProfile, ChannelRoute), String> {
    let id = &entry.id;
    let kind_name = match kind {
        ChannelKind::WxDirect => "wx_direct",
        ChannelKind::WxPartner => "wx_partner",
    };
    if let Some(k) = &entry.kind {
        if k != kind_name {
            return Err(format!("channel {id}: kind {k} but its kit is {kind_name}"));
        }
    }
    if entry.all_merchants && kind == ChannelKind::WxPartner && !entry.sandbox {
        return Err(format!(
            "channel {id}: a real provider channel needs each merchant's sub_mchid (list them in merchants)"
        ));
    }
    let mut subs = HashMap::new();
    for m in &entry.merchants {
        let sub = SubMerchant {
            sub_mchid: m.sub_mchid.clone(),
            sub_appid: m.sub_appid.clone(),
        };
        if kind == ChannelKind::WxPartner && sub.sub_mchid.is_none() {
            return Err(format!(
                "channel {id}: merchant {} needs a sub_mchid",
                m.mchid
            ));
        }
        subs.insert(m.mchid.clone(), sub);
    }
    let profile = ChannelProfile {
        id: id.clone(),
        fee_rate_bp: entry.fee_rate_bp,
        trade_types: trade_set(id, &entry.trade_types)?,
        amount_fen_min: entry.amount_fen_min,
        amount_fen_max: entry.amount_fen_max.unwrap_or(i64::MAX),
        daily_volume_fen_max: entry.daily_volume_fen_max,
        maintenance: entry
            .maintenance
            .iter()
            .map(|m| maintenance_of(id, m))
            .collect::<Result<_, _>>()?,
        weight: entry.weight,
        enabled: entry.enabled,
        access: if entry.all_merchants {
            MerchantAccess::All
        } else {
            MerchantAccess::Listed
        },
        merchants: subs.keys().cloned().collect(),
    };
    Ok((
        profile,
        ChannelRoute {
            kind,
            sandbox: entry.sandbox,
            all_merchants: entry.all_merchants,
            subs,
        },
    ))
}

fn rule_of(r: &RuleConfig) -> Result<Rule, String> {
    Ok(Rule {
        name: r.name.clone(),
        mchids: r.mchids.clone(),
        trade_types: if r.trade_types.is_empty() {
            TradeSet::NONE
        } else {
            trade_set(&r.name, &r.trade_types)?
        },
        amount_fen_min: r.amount_fen_min,
        amount_fen_max: r.amount_fen_max,
        hours: r
            .hours
            .iter()
            .map(|h| DailyWindow::parse(h).map_err(|e| format!("rule {}: {e}", r.name)))
            .collect::<Result<_, _>>()?,
        only: r.only.clone(),
        exclude: r.exclude.clone(),
        split: r.split.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        fallback: r.fallback,
    })
}

/// A sandbox sub-merchant number for (channel, merchant), stable across restarts and nodes
/// (FNV-1a: std's hasher is not promised to stay the same between Rust releases).
fn derived_sub_mchid(channel_id: &str, mchid: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel_id.bytes().chain([0u8]).chain(mchid.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("17{:08}", h % 100_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_sub_merchants_are_stable_and_differ_by_channel() {
        let a = derived_sub_mchid("A", "1812345678");
        assert_eq!(a, derived_sub_mchid("A", "1812345678"));
        assert_ne!(a, derived_sub_mchid("B", "1812345678"));
        assert_eq!(a.len(), 10);
        assert!(a.starts_with("17"));
    }

    #[test]
    fn maintenance_takes_daily_and_one_off_windows() {
        assert!(matches!(
            maintenance_of("a", "23:00-01:00").unwrap(),
            Maintenance::Daily(_)
        ));
        let once =
            maintenance_of("a", "2026-11-11T00:00:00+08:00/2026-11-11T02:00:00+08:00").unwrap();
        assert!(
            matches!(once, Maintenance::Once { to_ms, from_ms } if to_ms - from_ms == 7_200_000)
        );
        assert!(
            maintenance_of("a", "2026-11-11T02:00:00+08:00/2026-11-11T00:00:00+08:00").is_err()
        );
    }
}
