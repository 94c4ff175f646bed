//! The router: eligibility, then a rule, a probe, a split or the score picks one channel, and
//! the reason is written down. Outcomes come back through [`Router::record`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

use rand::Rng;

use crate::beta::beta;
use crate::breaker::{Admission, Breaker, BreakerConfig, BreakerState};
use crate::profile::{ChannelProfile, TradeKind, beijing_day};
use crate::rules::{CompiledRule, Rule};
use crate::window::{Tally, Window, WindowConfig};
use crate::{CHANNELS_MAX, REASON_CHARS_MAX, RULES_MAX};

/// How the score weighs success, cost and latency. The score is in "points": a certain
/// success is worth `success_points`; each basis point of fee costs `cost_points_per_bp`;
/// each millisecond of typical latency costs `latency_points_per_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreConfig {
    pub success_points: f64,
    pub cost_points_per_bp: f64,
    pub latency_points_per_ms: f64,
    /// Beta prior: pseudo-successes and pseudo-failures every channel starts with.
    pub prior_ok: f64,
    pub prior_fail: f64,
}

impl Default for ScoreConfig {
    /// With these, a channel 20 bp cheaper wins while its success rate is within 2 points of
    /// the other's, and 100 ms of latency weighs as much as 10 bp.
    fn default() -> Self {
        ScoreConfig {
            success_points: 1_000.0,
            cost_points_per_bp: 1.0,
            latency_points_per_ms: 0.1,
            prior_ok: 1.0,
            prior_fail: 1.0,
        }
    }
}

/// How a channel is picked among the eligible ones when no rule splits the volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Thompson sampling on the live success rate, minus cost and latency.
    #[default]
    Score,
    /// Weighted random by the channels' `weight` (the classic static split).
    Weight,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouterConfig {
    pub strategy: Strategy,
    pub score: ScoreConfig,
    pub window: WindowConfig,
    pub breaker: BreakerConfig,
}

/// One payment to route.
#[derive(Clone, Copy, Debug)]
pub struct RouteRequest<'a> {
    pub mchid: &'a str,
    /// The merchant's own channel (from its record): always open to it.
    pub home: Option<usize>,
    pub trade: TradeKind,
    pub amount_fen: i64,
    /// Wall clock, Unix ms (windows, maintenance, time of day, the daily cap).
    pub now_ms: i64,
    /// Channels this payment already tried (bit `i` = channel `i`): never chosen again.
    pub tried: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub channel: usize,
    /// Why, compactly (at most [`REASON_CHARS_MAX`] bytes).
    pub reason: String,
    pub probe: bool,
}

/// No channel can take the payment; `reason` says why each was out.
#[derive(Clone, Debug, PartialEq)]
pub struct NoRoute {
    pub reason: String,
}

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no eligible channel: {}", self.reason)
    }
}

impl std::error::Error for NoRoute {}

/// How a channel call ended, for the channel's health. Definite refusals of the request itself
/// (bad parameters, a paid order) say nothing about the channel and are not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success {
        latency_ms: u32,
    },
    /// A retryable refusal or an account problem (5xx, 429, SYSTEM_ERROR, NO_AUTH, ...).
    Failure {
        latency_ms: u32,
    },
    /// No answer in time: unknown to the order, a failure to the channel's health.
    Timeout {
        latency_ms: u32,
    },
}

struct ChannelState {
    profile: ChannelProfile,
    enabled: AtomicBool,
    weight: AtomicU32,
    breaker: Breaker,
    /// Outcomes by trade type.
    outcomes: [Window; 4],
    /// Decisions, for the routing share.
    routed: Window,
    routed_total: AtomicU64,
    successes_total: AtomicU64,
    failures_total: AtomicU64,
    timeouts_total: AtomicU64,
    volume_day: AtomicI64,
    volume_fen: AtomicI64,
}

/// Why a channel was not eligible, in the explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ineligible {
    Tried,
    Rule,
    Disabled,
    Merchant,
    Trade,
    Amount,
    Maintenance,
    Cap,
    BreakerOpen,
    ProbeTaken,
}

impl Ineligible {
    fn code(self) -> &'static str {
        match self {
            Ineligible::Tried => "tried",
            Ineligible::Rule => "rule",
            Ineligible::Disabled => "disabled",
            Ineligible::Merchant => "merchant",
            Ineligible::Trade => "trade",
            Ineligible::Amount => "amount",
            Ineligible::Maintenance => "maintenance",
            Ineligible::Cap => "cap",
            Ineligible::BreakerOpen => "breaker-open",
            Ineligible::ProbeTaken => "probe-taken",
        }
    }
}

/// A channel's health and share, for the admin API and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelHealth {
    pub id: String,
    pub enabled: bool,
    pub weight: u32,
    pub fee_rate_bp: u32,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    /// Outcomes inside the window, all trade types.
    pub window_ok: u64,
    pub window_fail: u64,
    /// Decay-weighted success rate inside the window (`None` without outcomes).
    pub success_rate: Option<f64>,
    pub latency_ms: f64,
    /// This channel's part of the decisions inside the window (0..=1).
    pub share: f64,
    pub routed_total: u64,
    pub successes_total: u64,
    pub failures_total: u64,
    pub timeouts_total: u64,
    pub volume_today_fen: i64,
    pub daily_volume_fen_max: Option<i64>,
}

/// The in-process router. Share it (`Arc`); every method takes `&self`.
pub struct Router {
    config: RouterConfig,
    decay: Vec<f64>,
    channels: Vec<ChannelState>,
    index: HashMap<String, usize>,
    rules: Vec<CompiledRule>,
    all: u64,
}

impl Router {
    pub fn new(
        config: RouterConfig,
        profiles: Vec<ChannelProfile>,
        rules: &[Rule],
    ) -> Result<Self, String> {
        config.window.check()?;
        config.breaker.check()?;
        let s = &config.score;
        if !(s.prior_ok > 0.0 && s.prior_fail > 0.0 && s.success_points > 0.0) {
            return Err("score: priors and success_points must be positive".into());
        }
        if profiles.is_empty() || profiles.len() > CHANNELS_MAX {
            return Err(format!("want 1 to {CHANNELS_MAX} channels"));
        }
        if rules.len() > RULES_MAX {
            return Err(format!("at most {RULES_MAX} rules"));
        }
        let mut index = HashMap::new();
        for (i, p) in profiles.iter().enumerate() {
            p.check()?;
            if index.insert(p.id.clone(), i).is_some() {
                return Err(format!("channel {} is listed twice", p.id));
            }
        }
        let all = if profiles.len() == 64 {
            u64::MAX
        } else {
            (1u64 << profiles.len()) - 1
        };
        let lookup = |id: &str| index.get(id).copied();
        let rules = rules
            .iter()
            .map(|r| CompiledRule::compile(r, &lookup, all))
            .collect::<Result<Vec<_>, _>>()?;
        let channels = profiles
            .into_iter()
            .map(|profile| ChannelState {
                enabled: AtomicBool::new(profile.enabled),
                weight: AtomicU32::new(profile.weight),
                breaker: Breaker::default(),
                outcomes: std::array::from_fn(|_| Window::new(&config.window)),
                routed: Window::new(&config.window),
                routed_total: AtomicU64::new(0),
                successes_total: AtomicU64::new(0),
                failures_total: AtomicU64::new(0),
                timeouts_total: AtomicU64::new(0),
                volume_day: AtomicI64::new(i64::MIN),
                volume_fen: AtomicI64::new(0),
                profile,
            })
            .collect();
        Ok(Router {
            decay: config.window.decay_table(),
            config,
            channels,
            index,
            rules,
            all,
        })
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn channel_id(&self, channel: usize) -> &str {
        self.channels
            .get(channel)
            .map_or("", |c| c.profile.id.as_str())
    }

    pub fn profile(&self, channel: usize) -> Option<&ChannelProfile> {
        self.channels.get(channel).map(|c| &c.profile)
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Picks a channel for `req`, or says why none can take it.
    pub fn decide<R: Rng + ?Sized>(
        &self,
        req: &RouteRequest<'_>,
        rng: &mut R,
    ) -> Result<Decision, NoRoute> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches(req.mchid, req.trade, req.amount_fen, req.now_ms));
        let mut reason = String::with_capacity(160);
        // Each channel is judged once; the rule's mask and the explanation reuse the verdicts.
        let verdicts = self.verdicts(req);
        let mut mask = rule.map_or(self.all, |r| r.allowed);
        let (mut eligible, mut probes) = masks(&verdicts, mask);
        let mut split = rule.map(|r| r.split.as_slice()).unwrap_or_default();
        if let Some(rule) = rule {
            let _ = write!(reason, "rule={} ", rule.name);
            if eligible | probes == 0 && rule.fallback {
                reason.push_str("(none eligible: fallback) ");
                mask = self.all;
                (eligible, probes) = masks(&verdicts, mask);
                split = &[];
            }
        }
        // A half-open breaker gets its probe first: that is how a channel comes back.
        let mut probed = None;
        for i in bits(probes) {
            if self.channels[i]
                .breaker
                .claim_probe(&self.config.breaker, req.now_ms)
            {
                probed = Some(i);
                break;
            }
        }
        let chosen = if let Some(i) = probed {
            let _ = write!(reason, "probe→{} (breaker half-open)", self.channel_id(i));
            Some(i)
        } else if eligible == 0 {
            None
        } else if split
            .iter()
            .any(|(i, w)| *w > 0 && eligible & (1 << i) != 0)
        {
            self.pick_split(split, eligible, rng, &mut reason)
        } else if self.config.strategy == Strategy::Weight {
            self.pick_weighted(eligible, rng, &mut reason)
        } else {
            Some(self.pick_score(req, eligible, rng, &mut reason))
        };
        self.explain_ineligible(&verdicts, mask, &mut reason);
        truncate(&mut reason);
        let Some(channel) = chosen else {
            return Err(NoRoute { reason });
        };
        let c = &self.channels[channel];
        c.routed.count(req.now_ms);
        c.routed_total.fetch_add(1, Relaxed);
        Ok(Decision {
            channel,
            reason,
            probe: probed.is_some(),
        })
    }

    /// What each channel may do for `req` (pass, or probe a half-open breaker), or why it is
    /// out. Entries past the router's channels stay `Disabled` and are never read.
    fn verdicts(&self, req: &RouteRequest<'_>) -> [Verdict; CHANNELS_MAX] {
        let mut verdicts = [Err(Ineligible::Disabled); CHANNELS_MAX];
        for (i, v) in verdicts.iter_mut().enumerate().take(self.channels.len()) {
            *v = if req.tried & (1 << i) != 0 {
                Err(Ineligible::Tried)
            } else {
                self.check(i, req)
            };
        }
        verdicts
    }

    fn check(&self, i: usize, req: &RouteRequest<'_>) -> Result<Admission, Ineligible> {
        let c = &self.channels[i];
        let p = &c.profile;
        if !c.enabled.load(Relaxed) {
            return Err(Ineligible::Disabled);
        }
        if req.home != Some(i) && !p.allows_merchant(req.mchid) {
            return Err(Ineligible::Merchant);
        }
        if !p.trade_types.contains(req.trade) {
            return Err(Ineligible::Trade);
        }
        if !(p.amount_fen_min..=p.amount_fen_max).contains(&req.amount_fen) {
            return Err(Ineligible::Amount);
        }
        if p.maintenance.iter().any(|m| m.contains(req.now_ms)) {
            return Err(Ineligible::Maintenance);
        }
        if let Some(cap) = p.daily_volume_fen_max {
            if self
                .volume_today(i, req.now_ms)
                .saturating_add(req.amount_fen)
                > cap
            {
                return Err(Ineligible::Cap);
            }
        }
        match c.breaker.admission(&self.config.breaker, req.now_ms) {
            Admission::Refuse => Err(Ineligible::BreakerOpen),
            Admission::ProbeTaken => Err(Ineligible::ProbeTaken),
            a => Ok(a),
        }
    }

    fn pick_score<R: Rng + ?Sized>(
        &self,
        req: &RouteRequest<'_>,
        eligible: u64,
        rng: &mut R,
        reason: &mut String,
    ) -> usize {
        let s = &self.config.score;
        let mut best = (usize::MAX, f64::NEG_INFINITY);
        let mut parts = String::with_capacity(120);
        for i in bits(eligible) {
            let c = &self.channels[i];
            let t: Tally = c.outcomes[req.trade.index()].tally(req.now_ms, &self.decay);
            let theta = beta(rng, s.prior_ok + t.ok, s.prior_fail + t.fail);
            let score = s.success_points * theta
                - s.cost_points_per_bp * f64::from(c.profile.fee_rate_bp)
                - s.latency_points_per_ms * t.latency_ms;
            let _ = write!(
                parts,
                " | {} {:.0} p{:.3} n{}/{} {}bp {:.0}ms",
                c.profile.id, score, theta, t.ok_n, t.fail_n, c.profile.fee_rate_bp, t.latency_ms
            );
            if score > best.1 || best.0 == usize::MAX {
                best = (i, score);
            }
        }
        let _ = write!(reason, "score→{}", self.channel_id(best.0));
        reason.push_str(&parts);
        best.0
    }

    fn pick_split<R: Rng + ?Sized>(
        &self,
        split: &[(usize, u32)],
        eligible: u64,
        rng: &mut R,
        reason: &mut String,
    ) -> Option<usize> {
        let live = || split.iter().filter(|(i, _)| eligible & (1 << i) != 0);
        let total: u64 = live().map(|(_, w)| u64::from(*w)).sum();
        let mut roll = rng.random_range(0..total.max(1));
        let mut chosen = None;
        for (i, w) in live() {
            if roll < u64::from(*w) {
                chosen = Some(*i);
                break;
            }
            roll -= u64::from(*w);
        }
        let chosen = chosen?;
        let _ = write!(reason, "split→{} |", self.channel_id(chosen));
        for (i, w) in live() {
            let _ = write!(reason, " {}:{w}", self.channel_id(*i));
        }
        Some(chosen)
    }

    fn pick_weighted<R: Rng + ?Sized>(
        &self,
        eligible: u64,
        rng: &mut R,
        reason: &mut String,
    ) -> Option<usize> {
        let split: Vec<(usize, u32)> = bits(eligible)
            .map(|i| (i, self.channels[i].weight.load(Relaxed)))
            .collect();
        if split.iter().all(|(_, w)| *w == 0) {
            // Only standby channels (weight 0) are left: the first of them.
            let i = split.first()?.0;
            let _ = write!(reason, "standby→{}", self.channel_id(i));
            return Some(i);
        }
        reason.push_str("weight ");
        self.pick_split(&split, eligible, rng, reason)
    }

    fn explain_ineligible(&self, verdicts: &[Verdict], mask: u64, reason: &mut String) {
        let mut first = true;
        for (i, verdict) in verdicts.iter().enumerate().take(self.channels.len()) {
            let why = match verdict {
                Err(Ineligible::Tried) => Some(Ineligible::Tried),
                _ if mask & (1 << i) == 0 => Some(Ineligible::Rule),
                Err(e) => Some(*e),
                Ok(_) => None,
            };
            if let Some(why) = why {
                reason.push_str(if first { " | out:" } else { "," });
                first = false;
                let _ = write!(reason, " {}={}", self.channel_id(i), why.code());
            }
        }
    }

    /// Feeds a channel call's outcome back.
    pub fn record(&self, channel: usize, trade: TradeKind, outcome: Outcome, now_ms: i64) {
        let Some(c) = self.channels.get(channel) else {
            return;
        };
        let window = &c.outcomes[trade.index()];
        match outcome {
            Outcome::Success { latency_ms } => {
                window.record(now_ms, true, latency_ms.max(1));
                c.successes_total.fetch_add(1, Relaxed);
                c.breaker.success();
            }
            Outcome::Failure { latency_ms } | Outcome::Timeout { latency_ms } => {
                window.record(now_ms, false, latency_ms.max(1));
                if matches!(outcome, Outcome::Timeout { .. }) {
                    c.timeouts_total.fetch_add(1, Relaxed);
                } else {
                    c.failures_total.fetch_add(1, Relaxed);
                }
                c.breaker.failure(&self.config.breaker, now_ms);
            }
        }
    }

    /// Adds a handed-out amount to the channel's volume of the (Beijing) day.
    pub fn add_volume(&self, channel: usize, amount_fen: i64, now_ms: i64) {
        let Some(c) = self.channels.get(channel) else {
            return;
        };
        let day = beijing_day(now_ms);
        let held = c.volume_day.load(Relaxed);
        if held < day
            && c.volume_day
                .compare_exchange(held, day, Relaxed, Relaxed)
                .is_ok()
        {
            c.volume_fen.store(0, Relaxed);
        }
        if c.volume_day.load(Relaxed) == day {
            c.volume_fen.fetch_add(amount_fen, Relaxed);
        }
    }

    /// Sets the day's volume from an authoritative count (the store, across nodes).
    pub fn set_volume(&self, channel: usize, amount_fen: i64, now_ms: i64) {
        if let Some(c) = self.channels.get(channel) {
            c.volume_day.store(beijing_day(now_ms), Relaxed);
            c.volume_fen.store(amount_fen, Relaxed);
        }
    }

    pub fn volume_today(&self, channel: usize, now_ms: i64) -> i64 {
        let Some(c) = self.channels.get(channel) else {
            return 0;
        };
        if c.volume_day.load(Relaxed) == beijing_day(now_ms) {
            c.volume_fen.load(Relaxed)
        } else {
            0
        }
    }

    /// An operator switches a channel on or off (this node, until restart).
    pub fn set_enabled(&self, channel: usize, enabled: bool) {
        if let Some(c) = self.channels.get(channel) {
            c.enabled.store(enabled, Relaxed);
        }
    }

    pub fn set_weight(&self, channel: usize, weight: u32) {
        if let Some(c) = self.channels.get(channel) {
            c.weight.store(weight, Relaxed);
        }
    }

    pub fn reset_breaker(&self, channel: usize) {
        if let Some(c) = self.channels.get(channel) {
            c.breaker.reset();
        }
    }

    pub fn health(&self, now_ms: i64) -> Vec<ChannelHealth> {
        let routed: Vec<u64> = self
            .channels
            .iter()
            .map(|c| c.routed.tally(now_ms, &self.decay).ok_n)
            .collect();
        let routed_all: u64 = routed.iter().sum();
        self.channels
            .iter()
            .zip(routed)
            .enumerate()
            .map(|(i, (c, routed))| {
                let mut all = Tally::default();
                let mut latency_weight = 0.0;
                for w in &c.outcomes {
                    let t = w.tally(now_ms, &self.decay);
                    all.ok += t.ok;
                    all.fail += t.fail;
                    all.ok_n += t.ok_n;
                    all.fail_n += t.fail_n;
                    all.latency_ms += t.latency_ms * (t.ok + t.fail);
                    latency_weight += t.ok + t.fail;
                }
                ChannelHealth {
                    id: c.profile.id.clone(),
                    enabled: c.enabled.load(Relaxed),
                    weight: c.weight.load(Relaxed),
                    fee_rate_bp: c.profile.fee_rate_bp,
                    breaker: c.breaker.state(),
                    consecutive_failures: c.breaker.consecutive_failures(),
                    window_ok: all.ok_n,
                    window_fail: all.fail_n,
                    success_rate: (all.ok + all.fail > 0.0).then(|| all.ok / (all.ok + all.fail)),
                    latency_ms: if latency_weight > 0.0 {
                        all.latency_ms / latency_weight
                    } else {
                        0.0
                    },
                    share: if routed_all > 0 {
                        routed as f64 / routed_all as f64
                    } else {
                        0.0
                    },
                    routed_total: c.routed_total.load(Relaxed),
                    successes_total: c.successes_total.load(Relaxed),
                    failures_total: c.failures_total.load(Relaxed),
                    timeouts_total: c.timeouts_total.load(Relaxed),
                    volume_today_fen: self.volume_today(i, now_ms),
                    daily_volume_fen_max: c.profile.daily_volume_fen_max,
                }
            })
            .collect()
    }
}

/// A channel's admission for one request, or why it is out.
type Verdict = Result<Admission, Ineligible>;

/// Eligible channels within `mask`, and those whose half-open breaker wants a probe.
fn masks(verdicts: &[Verdict], mask: u64) -> (u64, u64) {
    let (mut eligible, mut probes) = (0u64, 0u64);
    for i in bits(mask) {
        match verdicts.get(i) {
            Some(Ok(Admission::Pass)) => eligible |= 1 << i,
            Some(Ok(Admission::Probe)) => probes |= 1 << i,
            _ => {}
        }
    }
    (eligible, probes)
}

/// The set bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(i)
    })
}

fn truncate(reason: &mut String) {
    if reason.len() > REASON_CHARS_MAX {
        let mut end = REASON_CHARS_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
}
