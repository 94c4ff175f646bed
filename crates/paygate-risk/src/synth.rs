//! A labelled, seeded, reproducible synthetic transaction stream: honest traffic (with the
//! honest oddities that make false positives: new phones, travel, shared family phones, carrier
//! NAT, big purchases, regulars, offline stores, refunds) and five kinds of fraud: card-testing
//! bursts, account takeover with a device change, velocity abuse, amount anomalies and merchant
//! collusion.
//!
//! It is generated in Rust so that the training export ([`training_rows`]) runs the engine's own
//! feature code: the model is trained on exactly what it is served. The random generator is
//! SplitMix64, written here, so a seed gives the same stream on every platform and version.

use std::net::{IpAddr, Ipv4Addr};

use time::{Duration, OffsetDateTime};

use crate::counters::splitmix64;
use crate::event::{EventKind, RiskEvent};
use crate::features::{FeatureStore, Keyer, MemoryConfig};
use crate::lists::Lists;

/// Why an event is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    Honest,
    CardTesting,
    AccountTakeover,
    VelocityAbuse,
    AmountAnomaly,
    MerchantCollusion,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Honest,
        Scenario::CardTesting,
        Scenario::AccountTakeover,
        Scenario::VelocityAbuse,
        Scenario::AmountAnomaly,
        Scenario::MerchantCollusion,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Scenario::Honest => "honest",
            Scenario::CardTesting => "card_testing",
            Scenario::AccountTakeover => "account_takeover",
            Scenario::VelocityAbuse => "velocity_abuse",
            Scenario::AmountAnomaly => "amount_anomaly",
            Scenario::MerchantCollusion => "merchant_collusion",
        }
    }

    pub fn is_fraud(&self) -> bool {
        *self != Scenario::Honest
    }
}

/// One event and its truth.
#[derive(Clone, Debug)]
pub struct Labelled {
    pub event: RiskEvent,
    pub scenario: Scenario,
}

/// The size and seed of a stream.
#[derive(Clone, Copy, Debug)]
pub struct StreamConfig {
    pub seed: u64,
    pub days: u32,
    pub payers: usize,
    pub merchants: usize,
}

impl StreamConfig {
    /// The stream the model is trained on.
    pub const TRAIN: StreamConfig = StreamConfig {
        seed: 1,
        days: 14,
        payers: 20_000,
        merchants: 400,
    };
    /// The stream thresholds are tuned on.
    pub const VALIDATE: StreamConfig = StreamConfig {
        seed: 2,
        days: 14,
        payers: 30_000,
        merchants: 400,
    };
    /// The stream figures are reported on (never used for training or tuning).
    pub const TEST: StreamConfig = StreamConfig {
        seed: 3,
        days: 14,
        payers: 50_000,
        merchants: 500,
    };
    /// A small stream for the golden parity test (quick even in a debug build).
    pub const GOLDEN: StreamConfig = StreamConfig {
        seed: 4,
        days: 3,
        payers: 1_500,
        merchants: 60,
    };
}

/// A deterministic random source.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(splitmix64(seed ^ 0xD1B5_4A32_D192_ED03))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as u64) as i64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    pub fn poisson(&mut self, lambda: f64) -> u32 {
        // Knuth's method; lambda stays small here.
        let l = (-lambda).exp();
        let mut k = 0u32;
        let mut p = 1.0;
        loop {
            p *= self.unit();
            if p <= l || k > 200 {
                return k;
            }
            k += 1;
        }
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> Option<&'a T> {
        xs.get(self.below(xs.len() as u64) as usize)
    }
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let weight_sum: f64 = weights.iter().sum();
        let mut x = self.unit() * weight_sum;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

const INDUSTRIES: [(&str, f64, i64); 8] = [
    // industry, share of merchants, median ticket (fen)
    ("retail", 0.30, 6_000),
    ("food", 0.25, 3_500),
    ("games", 0.08, 3_000),
    ("digital_goods", 0.08, 5_000),
    ("travel", 0.06, 80_000),
    ("electronics", 0.07, 150_000),
    ("utilities", 0.08, 12_000),
    ("education", 0.08, 40_000),
];

/// Hourly weights of honest activity, 00h..23h.
const DIURNAL: [f64; 24] = [
    0.30, 0.15, 0.10, 0.08, 0.08, 0.15, 0.50, 1.20, 2.00, 2.00, 2.20, 3.00, 3.50, 2.80, 2.20, 2.00,
    2.20, 2.80, 3.50, 3.80, 3.20, 2.40, 1.50, 0.80,
];

const UAS: [&str; 6] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.47",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.50",
    "Mozilla/5.0 (Linux; Android 14; 23127PN0CC) AppleWebKit/537.36 MicroMessenger/8.0.49",
    "Mozilla/5.0 (Linux; Android 13; V2219A) AppleWebKit/537.36 MicroMessenger/8.0.44",
    "Mozilla/5.0 (Linux; Android 14; PHB110) AppleWebKit/537.36 MicroMessenger/8.0.47",
    "Mozilla/5.0 (Linux; Android 12; ALN-AL00) AppleWebKit/537.36 MicroMessenger/8.0.42",
];

struct Merchant {
    mchid: String,
    industry: &'static str,
    created_at: OffsetDateTime,
    trade_type: &'static str,
    ticket_fen: i64,
    sends_device_id: bool,
    stores: u32,
}

struct Payer {
    key: String,
    devices: Vec<String>,
    new_phone_day: Option<u32>,
    ua: &'static str,
    home_ip: Ipv4Addr,
    mobile: bool,
    median_fen: i64,
    favorites: Vec<usize>,
    rate_per_day: f64,
}

struct Gen {
    rng: Rng,
    start: OffsetDateTime,
    days: u32,
    merchants: Vec<Merchant>,
    popularity: Vec<f64>,
    carrier_subnets: Vec<[u8; 3]>,
    out: Vec<(i64, u64, Labelled)>,
    seq: u64,
}

fn ip(prefix: [u8; 3], last: u8) -> Ipv4Addr {
    Ipv4Addr::new(prefix[0], prefix[1], prefix[2], last)
}

impl Gen {
    fn random_prefix(&mut self) -> [u8; 3] {
        loop {
            let p = [
                self.rng.range(36, 223) as u8,
                self.rng.range(0, 255) as u8,
                self.rng.range(0, 255) as u8,
            ];
            // Public addresses only: loopback and private ranges are not what payers have.
            let private = p[0] == 127
                || (p[0] == 192 && p[1] == 168)
                || (p[0] == 172 && (16..32).contains(&p[1]))
                || (p[0] == 100 && (64..128).contains(&p[1]));
            if !private {
                return p;
            }
        }
    }

    fn push(&mut self, event: RiskEvent, scenario: Scenario) {
        let t = event.at.unix_timestamp();
        self.seq += 1;
        self.out.push((t, self.seq, Labelled { event, scenario }));
    }

    fn at(&self, day: u32, second_of_day: i64) -> OffsetDateTime {
        self.start + Duration::days(i64::from(day)) + Duration::seconds(second_of_day)
    }

    fn diurnal_second(&mut self) -> i64 {
        let h = self.rng.weighted(&DIURNAL) as i64;
        h * 3_600 + self.rng.range(0, 3_599)
    }

    fn merchants_of(&mut self, industries: &[&str]) -> Vec<usize> {
        (0..self.merchants.len())
            .filter(|i| industries.contains(&self.merchants[*i].industry))
            .collect()
    }

    fn base_event(&self, m: usize, amount_fen: i64, at: OffsetDateTime) -> RiskEvent {
        let mer = &self.merchants[m];
        let mut e = RiskEvent::prepay(mer.mchid.clone(), mer.trade_type, amount_fen, at);
        e.merchant_industry = Some(mer.industry.to_owned());
        e.merchant_created_at = Some(mer.created_at);
        e
    }

    /// Fills the device fields the way this merchant's integration would.
    fn device_fields(&mut self, e: &mut RiskEvent, m: usize, device: &str, ua: &str) {
        let mer = &self.merchants[m];
        match mer.trade_type {
            "NATIVE" if mer.stores > 0 => {
                let store = self.rng.below(u64::from(mer.stores));
                e.store_id = Some(format!("{}-s{store}", mer.mchid));
            }
            "H5" => {
                e.user_agent = Some(ua.to_owned());
                e.h5_type = Some(
                    if ua.contains("iPhone") {
                        "iOS"
                    } else {
                        "Android"
                    }
                    .into(),
                );
            }
            _ if mer.sends_device_id => e.device_id = Some(device.to_owned()),
            _ => e.user_agent = Some(ua.to_owned()),
        }
    }
}

/// Generates the stream, in time order.
pub fn generate(cfg: &StreamConfig) -> Vec<Labelled> {
    let mut g = Gen {
        rng: Rng::new(cfg.seed),
        start: time::macros::datetime!(2026-11-02 00:00 +08:00),
        days: cfg.days,
        merchants: Vec::new(),
        popularity: Vec::new(),
        carrier_subnets: Vec::new(),
        out: Vec::new(),
        seq: 0,
    };
    make_merchants(&mut g, cfg.merchants);
    g.carrier_subnets = (0..60).map(|_| g.random_prefix()).collect();
    let payers = make_payers(&mut g, cfg.payers);
    for p in &payers {
        honest_payer(&mut g, p);
    }
    let scale = cfg.payers as f64 / 1_000.0;
    let per_day = |x: f64| ((x * scale * f64::from(cfg.days)).round() as usize).max(1);
    for b in 0..per_day(0.25) {
        card_testing(&mut g, b);
    }
    for i in 0..per_day(0.5) {
        if let Some(p) = g.rng.pick(&payers) {
            account_takeover(&mut g, p, i);
        }
    }
    for i in 0..per_day(0.2) {
        velocity_abuse(&mut g, i);
    }
    for i in 0..per_day(0.35) {
        if let Some(p) = g.rng.pick(&payers) {
            amount_anomaly(&mut g, p, i);
        }
    }
    for c in 0..(cfg.merchants / 100).max(1) {
        merchant_collusion(&mut g, c);
    }
    let mut out = std::mem::take(&mut g.out);
    out.sort_by_key(|(t, seq, _)| (*t, *seq));
    out.into_iter().map(|(_, _, l)| l).collect()
}

fn make_merchants(g: &mut Gen, n: usize) {
    let shares: Vec<f64> = INDUSTRIES.iter().map(|i| i.1).collect();
    for i in 0..n {
        let (industry, _, ticket) = INDUSTRIES[g.rng.weighted(&shares)];
        let trade_type = match g.rng.weighted(&[0.55, 0.2, 0.1, 0.15]) {
            0 => "JSAPI",
            1 => "APP",
            2 => "H5",
            _ => "NATIVE",
        };
        // A few honest merchants are new too: youth alone must not look like collusion.
        let age_days = if g.rng.chance(0.05) {
            g.rng.range(2, 30)
        } else {
            g.rng.range(60, 1_800)
        };
        let ticket_fen = (ticket as f64 * (0.6 * g.rng.normal()).exp()).max(100.0) as i64;
        g.merchants.push(Merchant {
            mchid: format!("19{:08}", 10_000 + i),
            industry,
            created_at: g.start - Duration::days(age_days),
            trade_type,
            ticket_fen,
            sends_device_id: g.rng.chance(0.7),
            stores: if trade_type == "NATIVE" {
                g.rng.range(1, 5) as u32
            } else {
                0
            },
        });
        // Zipf-like popularity.
        g.popularity.push(1.0 / (1.0 + i as f64).powf(0.9));
    }
}

fn make_payers(g: &mut Gen, n: usize) -> Vec<Payer> {
    let mut payers = Vec::with_capacity(n);
    let mut shared_device: Option<String> = None;
    for i in 0..n {
        let key = format!("h{i}");
        let mut devices = vec![format!("hd{i}")];
        if g.rng.chance(0.12) {
            devices.push(format!("hd{i}b")); // a tablet too
        }
        // Family phones: the next payer may share this payer's phone.
        if let Some(d) = shared_device.take() {
            devices[0] = d;
        } else if g.rng.chance(0.04) {
            shared_device = Some(devices[0].clone());
        }
        let favorites = (0..g.rng.range(3, 8))
            .map(|_| {
                let w = g.popularity.clone();
                g.rng.weighted(&w)
            })
            .collect();
        let rate_per_day = if g.rng.chance(0.05) {
            g.rng.range(2, 5) as f64 // regulars: the canteen every day
        } else {
            (0.45 * g.rng.normal() - 1.0).exp() // median ~0.37 a day
        };
        let prefix = g.random_prefix();
        payers.push(Payer {
            key,
            devices,
            new_phone_day: if g.rng.chance(0.03) {
                Some(g.rng.range(1, i64::from(g.days.max(2)) - 1) as u32)
            } else {
                None
            },
            ua: UAS[g.rng.below(UAS.len() as u64) as usize],
            home_ip: ip(prefix, g.rng.range(2, 254) as u8),
            mobile: g.rng.chance(0.5),
            median_fen: (g.rng.range(1_500, 20_000) as f64 * (0.5 * g.rng.normal()).exp()) as i64,
            favorites,
            rate_per_day,
        });
    }
    payers
}

fn honest_payer(g: &mut Gen, p: &Payer) {
    for day in 0..g.days {
        let n = g.rng.poisson(p.rate_per_day);
        for _ in 0..n {
            let sec = g.diurnal_second();
            let at = g.at(day, sec);
            let m = if g.rng.chance(0.85) {
                *g.rng.pick(&p.favorites).unwrap_or(&0)
            } else {
                let w = g.popularity.clone();
                g.rng.weighted(&w)
            };
            let mer_ticket = g.merchants[m].ticket_fen;
            let typical = ((p.median_fen + mer_ticket) / 2).max(100);
            let mut amount = (typical as f64 * (0.55 * g.rng.normal()).exp()) as i64;
            if g.rng.chance(0.006) {
                amount *= g.rng.range(5, 20); // the yearly big purchase
            }
            let amount = amount.clamp(1, 5_000_000);
            let mut e = g.base_event(m, amount, at);
            e.payer_key = Some(p.key.clone());
            let mut device = p.devices[g.rng.below(p.devices.len() as u64) as usize].clone();
            if p.new_phone_day.is_some_and(|d| day >= d) {
                device.push_str("-new");
            }
            g.device_fields(&mut e, m, &device, p.ua);
            e.client_ip = Some(IpAddr::V4(honest_ip(g, p)));
            let is_refund = g.rng.chance(0.02);
            g.push(e.clone(), Scenario::Honest);
            if is_refund {
                let later = at + Duration::seconds(g.rng.range(3_600, 5 * 86_400));
                let part = if g.rng.chance(0.8) {
                    amount
                } else {
                    (amount / 2).max(1)
                };
                let mut r = e;
                r.kind = EventKind::Refund;
                r.original_amount_fen = Some(amount);
                r.original_paid_at = Some(at);
                r.amount_fen = part;
                r.at = later;
                g.push(r, Scenario::Honest);
            }
        }
    }
}

fn honest_ip(g: &mut Gen, p: &Payer) -> Ipv4Addr {
    if g.rng.chance(0.01) {
        // Travelling: a hotel's network.
        let prefix = g.random_prefix();
        return ip(prefix, g.rng.range(2, 254) as u8);
    }
    if p.mobile && g.rng.chance(0.7) {
        let c = g.carrier_subnets[g.rng.below(g.carrier_subnets.len() as u64) as usize];
        return ip(c, g.rng.range(1, 254) as u8);
    }
    p.home_ip
}

fn card_testing(g: &mut Gen, burst: usize) {
    let targets = g.merchants_of(&["digital_goods", "games"]);
    let Some(&m) = g.rng.pick(&targets) else {
        return;
    };
    let day = g.rng.below(u64::from(g.days)) as u32;
    let sec = g.rng.range(0, 86_399);
    let mut at = g.at(day, sec);
    let prefix = g.random_prefix();
    let fixed_ip = ip(prefix, g.rng.range(2, 254) as u8);
    let rotate_device = g.rng.chance(0.4);
    let rotate_ip = g.rng.chance(0.3);
    let attempts = g.rng.range(12, 60);
    let per_card = g.rng.range(1, 3);
    for k in 0..attempts {
        let amount = if g.rng.chance(0.3) {
            [1, 10, 100][g.rng.below(3) as usize]
        } else {
            g.rng.range(1, 300)
        };
        let mut e = g.base_event(m, amount, at);
        e.payer_key = Some(format!("ct{burst}-{}", k / per_card));
        let device = if rotate_device {
            format!("ct{burst}-d{k}")
        } else {
            format!("ct{burst}-d")
        };
        let ua = format!(
            "Mozilla/5.0 (Linux; Android 10; K) HeadlessChrome/{}",
            burst % 7 + 100
        );
        g.device_fields(&mut e, m, &device, &ua);
        e.client_ip = Some(IpAddr::V4(if rotate_ip {
            ip(prefix, g.rng.range(2, 254) as u8)
        } else {
            fixed_ip
        }));
        g.push(e, Scenario::CardTesting);
        at += Duration::seconds(g.rng.range(2, 20));
    }
}

fn account_takeover(g: &mut Gen, victim: &Payer, i: usize) {
    let targets = g.merchants_of(&["digital_goods", "electronics", "games"]);
    let day = g.rng.below(u64::from(g.days)) as u32;
    let sec = if g.rng.chance(0.5) {
        g.rng.range(3_600, 5 * 3_600)
    } else {
        g.diurnal_second()
    };
    let mut at = g.at(day, sec);
    let prefix = g.random_prefix();
    let addr = ip(prefix, g.rng.range(2, 254) as u8);
    let device = format!("ato{i}-d");
    let ua = UAS[g.rng.below(UAS.len() as u64) as usize];
    for _ in 0..g.rng.range(1, 4) {
        let Some(&m) = g.rng.pick(&targets) else {
            return;
        };
        let factor = g.rng.range(6, 30);
        let amount = (victim.median_fen * factor / 100 * 100).clamp(10_000, 5_000_000);
        let mut e = g.base_event(m, amount, at);
        e.payer_key = Some(victim.key.clone());
        g.device_fields(&mut e, m, &device, ua);
        e.client_ip = Some(IpAddr::V4(addr));
        g.push(e, Scenario::AccountTakeover);
        at += Duration::seconds(g.rng.range(60, 900));
    }
}

fn velocity_abuse(g: &mut Gen, i: usize) {
    let targets = g.merchants_of(&["retail", "food", "games"]);
    let Some(&m) = g.rng.pick(&targets) else {
        return;
    };
    let day = g.rng.below(u64::from(g.days)) as u32;
    let sec = g.diurnal_second();
    let mut at = g.at(day, sec);
    let accounts = g.rng.range(1, 3);
    let prefix = g.random_prefix();
    let addr = ip(prefix, g.rng.range(2, 254) as u8);
    let device = format!("va{i}-d");
    let ua = UAS[g.rng.below(UAS.len() as u64) as usize];
    let ticket = g.merchants[m].ticket_fen;
    for k in 0..g.rng.range(12, 40) {
        let amount = (ticket as f64 * (0.5 + g.rng.unit())) as i64;
        let mut e = g.base_event(m, amount.max(100), at);
        e.payer_key = Some(format!("va{i}-{}", k % accounts));
        g.device_fields(&mut e, m, &device, ua);
        e.client_ip = Some(IpAddr::V4(addr));
        g.push(e, Scenario::VelocityAbuse);
        at += Duration::seconds(g.rng.range(30, 240));
    }
}

fn amount_anomaly(g: &mut Gen, victim: &Payer, _i: usize) {
    let targets = g.merchants_of(&["electronics", "digital_goods", "travel"]);
    let Some(&m) = g.rng.pick(&targets) else {
        return;
    };
    let day = g.rng.range(2, i64::from(g.days.max(3)) - 1) as u32;
    let sec = g.diurnal_second();
    let at = g.at(day, sec);
    let factor = g.rng.range(25, 120);
    let mut amount = (victim.median_fen * factor).clamp(50_000, 5_000_000);
    if g.rng.chance(0.5) {
        amount = amount / 10_000 * 10_000;
    }
    let mut e = g.base_event(m, amount.max(10_000), at);
    e.payer_key = Some(victim.key.clone());
    let device = victim.devices[0].clone();
    g.device_fields(&mut e, m, &device, victim.ua);
    e.client_ip = Some(IpAddr::V4(victim.home_ip));
    g.push(e, Scenario::AmountAnomaly);
}

fn merchant_collusion(g: &mut Gen, c: usize) {
    let industry = if g.rng.chance(0.5) {
        "retail"
    } else {
        "digital_goods"
    };
    let mchid = format!("1977{:06}", c);
    let created_at = g.start - Duration::days(g.rng.range(3, 20));
    let m = g.merchants.len();
    g.merchants.push(Merchant {
        mchid,
        industry,
        created_at,
        trade_type: if g.rng.chance(0.5) { "NATIVE" } else { "JSAPI" },
        ticket_fen: 300_000,
        sends_device_id: true,
        stores: 0,
    });
    g.popularity.push(0.0);
    let ring = g.rng.range(3, 7);
    for j in 0..ring {
        let key = format!("cl{c}-{j}");
        let device = format!("cl{c}-{j}-d");
        let prefix = g.random_prefix();
        let addr = ip(prefix, g.rng.range(2, 254) as u8);
        for day in 0..g.days {
            for _ in 0..g.rng.range(0, 3) {
                let sec = if g.rng.chance(0.6) {
                    g.rng.range(20 * 3_600, 86_399)
                } else {
                    g.rng.range(0, 86_399)
                };
                let at = g.at(day, sec);
                let amount = g.rng.range(5, 50) * 10_000;
                let mut e = g.base_event(m, amount, at);
                e.payer_key = Some(key.clone());
                e.device_id = Some(device.clone());
                e.client_ip = Some(IpAddr::V4(addr));
                g.push(e.clone(), Scenario::MerchantCollusion);
                if g.rng.chance(0.25) {
                    let mut r = e;
                    r.kind = EventKind::Refund;
                    r.original_amount_fen = Some(amount);
                    r.original_paid_at = Some(at);
                    r.at = at + Duration::seconds(g.rng.range(120, 3_600));
                    g.push(r, Scenario::MerchantCollusion);
                }
            }
        }
    }
}

/// One training row: the model input the engine computes for the event, and its truth.
#[derive(Clone, Debug)]
pub struct Row {
    pub x: Vec<f64>,
    pub scenario: Scenario,
    pub kind: EventKind,
}

/// The fixed key the training export hashes entities with (only distinct-set collisions
/// could depend on it; fixing it makes the export bit-for-bit reproducible).
pub const TRAINING_HASH_KEY: [u8; 16] = *b"paygate-training";

/// Runs the engine's feature code over `stream` exactly as serving does (features as of before
/// each event, then the event counted in) and returns the model inputs. No decision is in the
/// loop, so every event counts as not denied.
pub fn training_rows(stream: &[Labelled]) -> Vec<Row> {
    let store = FeatureStore::new(
        Keyer::new(TRAINING_HASH_KEY),
        time::macros::offset!(+8),
        &MemoryConfig::default(),
    );
    let lists = Lists::default();
    let mut rows = Vec::with_capacity(stream.len());
    for l in stream {
        let f = store.compute(&l.event, &lists);
        let mut x = Vec::new();
        f.model_input(&mut x);
        rows.push(Row {
            x,
            scenario: l.scenario,
            kind: l.event.kind,
        });
        store.record(&l.event, false);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_reproducible_and_ordered() {
        let cfg = StreamConfig {
            seed: 9,
            days: 2,
            payers: 300,
            merchants: 30,
        };
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.event == y.event));
        assert!(a.windows(2).all(|w| w[0].event.at <= w[1].event.at));
        for s in Scenario::ALL {
            assert!(a.iter().any(|l| l.scenario == s), "{s:?} missing");
        }
    }
}
