//! Channel routing, in process and in microseconds: which upstream channel takes a payment.
//!
//! A decision is, in order:
//! 1. **eligibility**: enabled, open to the merchant, the trade type, the amount within the
//!    channel's per-order bounds, no maintenance window now, the daily volume cap not reached,
//!    the circuit breaker not open, and not already tried for this payment;
//! 2. the first matching **operator rule** (merchant, amount range, trade type, time of day)
//!    may narrow the candidates and split the volume by fixed weights;
//! 3. a channel whose breaker is **half-open** gets one probe per interval;
//! 4. otherwise the **score**: Thompson sampling of each channel's success rate (a Beta
//!    posterior over a sliding, decaying window of outcomes per channel × trade type), minus
//!    its fee and its typical latency. Exploration comes from the sampling itself: a channel
//!    that failed loses its traffic within a second, and earns it back as its failures age
//!    out of the window and its occasional samples succeed.
//!
//! Every decision says why ([`Decision::reason`]), compactly enough to store on the attempt.
//! State is atomics only (no lock on the decision path); the random source is passed in so
//! tests can seed it.
//!
//! ```
//! use paygate_routing::{ChannelProfile, Outcome, RouteRequest, Router, RouterConfig, TradeKind};
//! let mut cheap = ChannelProfile::new("A");
//! cheap.fee_rate_bp = 20;
//! let mut costly = ChannelProfile::new("C");
//! costly.fee_rate_bp = 38;
//! let router = Router::new(RouterConfig::default(), vec![cheap, costly], &[]).unwrap();
//! let mut rng = rand::rng();
//! let req = RouteRequest {
//!     mchid: "1900000109",
//!     home: None,
//!     trade: TradeKind::Native,
//!     amount_fen: 100,
//!     now_ms: 1_794_414_600_000,
//!     tried: 0,
//! };
//! let decision = router.decide(&req, &mut rng).unwrap();
//! println!("{} because {}", router.channel_id(decision.channel), decision.reason);
//! router.record(decision.channel, TradeKind::Native, Outcome::Success { latency_ms: 12 }, req.now_ms);
//! ```

mod beta;
mod breaker;
mod profile;
mod router;
mod rules;
mod window;

pub use breaker::{BreakerConfig, BreakerState};
pub use profile::{
    ChannelProfile, DailyWindow, Maintenance, MerchantAccess, TradeKind, TradeSet, beijing_day,
    beijing_day_start_ms, beijing_minute,
};
pub use router::{
    ChannelHealth, Decision, NoRoute, Outcome, RouteRequest, Router, RouterConfig, ScoreConfig,
    Strategy,
};
pub use rules::Rule;
pub use window::{BUCKETS_MAX, WindowConfig};

/// Channels one router holds (candidate sets are 64-bit masks).
pub const CHANNELS_MAX: usize = 64;
pub const RULES_MAX: usize = 256;
pub const CHANNEL_ID_CHARS_MAX: usize = 32;
/// A decision's reason is cut to this many bytes (it is stored on every attempt).
pub const REASON_CHARS_MAX: usize = 480;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const T0: i64 = 1_794_414_600_000; // 00:30 Beijing time

    fn profile(id: &str, fee_rate_bp: u32) -> ChannelProfile {
        let mut p = ChannelProfile::new(id);
        p.fee_rate_bp = fee_rate_bp;
        p
    }

    fn req(now_ms: i64) -> RouteRequest<'static> {
        RouteRequest {
            mchid: "1900000109",
            home: None,
            trade: TradeKind::Native,
            amount_fen: 100,
            now_ms,
            tried: 0,
        }
    }

    fn three() -> Router {
        Router::new(
            RouterConfig::default(),
            vec![profile("A", 20), profile("B", 25), profile("C", 38)],
            &[],
        )
        .unwrap()
    }

    fn share_of(router: &Router, channel: usize, rng: &mut StdRng, now_ms: i64, n: u32) -> f64 {
        let picked = (0..n)
            .filter(|_| router.decide(&req(now_ms), rng).unwrap().channel == channel)
            .count();
        picked as f64 / f64::from(n)
    }

    #[test]
    fn eligibility_filters_and_explains() {
        let mut a = profile("A", 20);
        a.trade_types = TradeSet::of(&[TradeKind::Jsapi]);
        let mut b = profile("B", 25);
        b.amount_fen_max = 50;
        let mut c = profile("C", 38);
        c.access = MerchantAccess::Listed;
        let mut d = profile("D", 10);
        d.maintenance = vec![Maintenance::Daily(
            DailyWindow::parse("00:00-01:00").unwrap(),
        )];
        let mut e = profile("E", 5);
        e.enabled = false;
        let mut f = profile("F", 30);
        f.daily_volume_fen_max = Some(1_000);
        let router = Router::new(RouterConfig::default(), vec![a, b, c, d, e, f], &[]).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let d = router.decide(&req(T0), &mut rng).unwrap();
        assert_eq!(router.channel_id(d.channel), "F");
        for part in [
            "A=trade",
            "B=amount",
            "C=merchant",
            "D=maintenance",
            "E=disabled",
        ] {
            assert!(d.reason.contains(part), "{part} in {}", d.reason);
        }
        // The cap: 950 handed out today leaves no room for 100 more.
        router.add_volume(5, 950, T0);
        let none = router.decide(&req(T0), &mut rng).unwrap_err();
        assert!(none.reason.contains("F=cap"), "{}", none.reason);
        // The merchant's own channel is open to it even when not listed.
        let mut own = req(T0);
        own.home = Some(2);
        assert_eq!(router.decide(&own, &mut rng).unwrap().channel, 2);
        // The next Beijing day starts from zero.
        let tomorrow = T0 + 86_400_000;
        assert_eq!(router.volume_today(5, tomorrow), 0);
        assert_eq!(router.decide(&req(tomorrow), &mut rng).unwrap().channel, 5);
    }

    #[test]
    fn tried_channels_are_never_chosen_again() {
        let router = three();
        let mut rng = StdRng::seed_from_u64(2);
        let mut r = req(T0);
        r.tried = 0b011;
        for _ in 0..100 {
            let d = router.decide(&r, &mut rng).unwrap();
            assert_eq!(d.channel, 2);
            assert!(d.reason.contains("A=tried"), "{}", d.reason);
        }
        r.tried = 0b111;
        assert!(router.decide(&r, &mut rng).is_err());
    }

    #[test]
    fn the_score_prefers_cheap_and_moves_away_from_failures_then_back() {
        let router = three();
        let mut rng = StdRng::seed_from_u64(3);
        let (a, b, c) = (0, 1, 2);
        let mut now = T0;
        // Everyone healthy; B slow.
        for _ in 0..200 {
            router.record(
                a,
                TradeKind::Native,
                Outcome::Success { latency_ms: 5 },
                now,
            );
            router.record(
                b,
                TradeKind::Native,
                Outcome::Success { latency_ms: 300 },
                now,
            );
            router.record(
                c,
                TradeKind::Native,
                Outcome::Success { latency_ms: 5 },
                now,
            );
        }
        assert!(share_of(&router, a, &mut rng, now, 1_000) > 0.9);
        // A starts failing 30%: within half a second of outcomes its share collapses.
        for k in 0..150 {
            now += 2;
            let outcome = if k % 10 < 3 {
                Outcome::Failure { latency_ms: 5 }
            } else {
                Outcome::Success { latency_ms: 5 }
            };
            router.record(a, TradeKind::Native, outcome, now);
            router.record(
                c,
                TradeKind::Native,
                Outcome::Success { latency_ms: 5 },
                now,
            );
        }
        let during = share_of(&router, a, &mut rng, now, 1_000);
        assert!(during < 0.05, "A's share while failing: {during}");
        assert!(
            share_of(&router, b, &mut rng, now, 1_000) < 0.05,
            "slow B stays out"
        );
        // A recovers: 200 payments a second, every channel succeeding; A gets only what
        // exploration gives it until its failures age out.
        let mut recovered_at = None;
        for step in 0..300 {
            now += 100;
            for _ in 0..20 {
                let d = router.decide(&req(now), &mut rng).unwrap();
                let latency_ms = if d.channel == b { 300 } else { 5 };
                router.record(
                    d.channel,
                    TradeKind::Native,
                    Outcome::Success { latency_ms },
                    now,
                );
            }
            if step % 10 == 0 && share_of(&router, a, &mut rng, now, 200) > 0.5 {
                recovered_at = Some(step);
                break;
            }
        }
        let step = recovered_at.expect("A earns its traffic back");
        assert!(step <= 200, "recovered after {} s", step / 10);
    }

    #[test]
    fn the_breaker_opens_then_probes_and_closes() {
        let router = three();
        let mut rng = StdRng::seed_from_u64(4);
        let now = T0;
        for _ in 0..5 {
            router.record(
                0,
                TradeKind::Native,
                Outcome::Timeout { latency_ms: 1_000 },
                now,
            );
        }
        assert_eq!(router.health(now)[0].breaker, BreakerState::Open);
        for _ in 0..200 {
            let d = router.decide(&req(now + 10), &mut rng).unwrap();
            assert_ne!(d.channel, 0);
            assert!(d.reason.contains("A=breaker-open"), "{}", d.reason);
        }
        // After the cool-down: exactly one probe per interval goes to A.
        let later = now + 5_000;
        let d = router.decide(&req(later), &mut rng).unwrap();
        assert!(d.probe && d.channel == 0, "{}", d.reason);
        assert!(d.reason.starts_with("probe→A"), "{}", d.reason);
        assert!(
            !d.reason.contains("A="),
            "the probed channel is not listed as out: {}",
            d.reason
        );
        for _ in 0..50 {
            assert_ne!(
                router.decide(&req(later + 10), &mut rng).unwrap().channel,
                0
            );
        }
        router.record(
            0,
            TradeKind::Native,
            Outcome::Success { latency_ms: 5 },
            later + 20,
        );
        assert_eq!(router.health(later + 20)[0].breaker, BreakerState::Closed);
    }

    #[test]
    fn rules_narrow_split_and_fall_back() {
        let rules = vec![
            Rule {
                name: "big".into(),
                amount_fen_min: Some(10_000),
                only: vec!["C".into()],
                fallback: false,
                ..Rule::default()
            },
            Rule {
                name: "night-split".into(),
                hours: vec![DailyWindow::parse("00:00-06:00").unwrap()],
                split: vec![("A".into(), 70), ("B".into(), 30)],
                fallback: true,
                ..Rule::default()
            },
        ];
        let router = Router::new(
            RouterConfig::default(),
            vec![profile("A", 20), profile("B", 25), profile("C", 38)],
            &rules,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let mut big = req(T0);
        big.amount_fen = 20_000;
        let d = router.decide(&big, &mut rng).unwrap();
        assert_eq!(d.channel, 2);
        assert!(d.reason.starts_with("rule=big"), "{}", d.reason);
        router.set_enabled(2, false);
        assert!(router.decide(&big, &mut rng).is_err(), "no fallback");
        router.set_enabled(2, true);
        // 00:30 Beijing: the split, about 70/30.
        let n = 4_000;
        let a = (0..n)
            .filter(|_| router.decide(&req(T0), &mut rng).unwrap().channel == 0)
            .count();
        let share = a as f64 / f64::from(n);
        assert!((0.66..0.74).contains(&share), "split share {share}");
        // A tried: the split keeps its other member.
        let mut r = req(T0);
        r.tried = 0b001;
        assert_eq!(router.decide(&r, &mut rng).unwrap().channel, 1);
        // Both split members tried: the rule falls back to the others.
        r.tried = 0b011;
        let d = router.decide(&r, &mut rng).unwrap();
        assert_eq!(d.channel, 2);
        // Out of the rule's hours the score decides.
        let noon = T0 + 11 * 3_600_000;
        assert!(
            router
                .decide(&req(noon), &mut rng)
                .unwrap()
                .reason
                .starts_with("score→")
        );
    }

    #[test]
    fn weight_strategy_splits_by_weight_and_uses_standby_last() {
        let mut standby = profile("S", 10);
        standby.weight = 0;
        let mut heavy = profile("H", 60);
        heavy.weight = 300;
        let config = RouterConfig {
            strategy: Strategy::Weight,
            ..RouterConfig::default()
        };
        let router = Router::new(config, vec![standby, heavy, profile("L", 60)], &[]).unwrap();
        let mut rng = StdRng::seed_from_u64(6);
        let n = 4_000;
        let heavy_n = (0..n)
            .filter(|_| router.decide(&req(T0), &mut rng).unwrap().channel == 1)
            .count();
        let share = heavy_n as f64 / f64::from(n);
        assert!((0.72..0.78).contains(&share), "{share}");
        let mut r = req(T0);
        r.tried = 0b110;
        let d = router.decide(&r, &mut rng).unwrap();
        assert_eq!(d.channel, 0);
        assert!(d.reason.starts_with("standby→S"), "{}", d.reason);
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(Router::new(RouterConfig::default(), vec![], &[]).is_err());
        assert!(
            Router::new(
                RouterConfig::default(),
                vec![profile("A", 20), profile("A", 30)],
                &[]
            )
            .is_err()
        );
        let rule = Rule {
            name: "r".into(),
            only: vec!["Z".into()],
            ..Rule::default()
        };
        assert!(Router::new(RouterConfig::default(), vec![profile("A", 1)], &[rule]).is_err());
        let mut p = profile("A", 1);
        p.amount_fen_min = 0;
        assert!(Router::new(RouterConfig::default(), vec![p], &[]).is_err());
    }

    #[test]
    fn health_reports_share_rates_and_counters() {
        let router = three();
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..100 {
            router.record(
                0,
                TradeKind::Native,
                Outcome::Success { latency_ms: 10 },
                T0,
            );
        }
        router.record(0, TradeKind::Jsapi, Outcome::Failure { latency_ms: 10 }, T0);
        for _ in 0..100 {
            router.decide(&req(T0), &mut rng).unwrap();
        }
        let h = router.health(T0);
        assert_eq!((h[0].window_ok, h[0].window_fail), (100, 1));
        assert_eq!(h[0].failures_total, 1);
        assert!((h[0].latency_ms - 10.0).abs() < 1e-9);
        let shares: f64 = h.iter().map(|c| c.share).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        assert!(h[0].share > 0.8);
    }
}
