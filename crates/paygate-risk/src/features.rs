//! The feature catalogue: every value a rule can name and the model reads, computed in one
//! place ([`FeatureStore::compute`]) for serving, training export and rule examples alike, so
//! the model is trained on exactly what it is served.
//!
//! All figures are as of *before* the event (point-in-time): the event itself is counted only
//! when [`FeatureStore::record`] runs after the decision.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::LazyLock;

use cel::common::types::{CelBool, CelDouble, CelInt, CelString};
use cel::common::value::Val;
use siphasher::sip::SipHasher13;
use time::{OffsetDateTime, UtcOffset};

use crate::counters::{AmountMoments, Distinct, Shards, Touched, Velocity, WindowFigures};
use crate::event::{EventKind, RiskEvent};
use crate::lists::{ListEntity, ListKind, Lists};

/// The type a feature has in CEL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Bool,
    Str,
}

/// One catalogue entry.
#[derive(Clone, Copy, Debug)]
pub struct FeatureDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Whether the model reads it (numbers and flags; never identifiers, lists or the score).
    pub model: bool,
    pub doc: &'static str,
}

macro_rules! catalogue {
    ($( $variant:ident = $name:literal : $kind:ident $(, $model:ident)? ; $doc:literal )*) => {
        /// A feature's index in the catalogue ([`FEATURES`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum F { $($variant),* }

        /// Every feature, in [`F`] order.
        pub const FEATURES: &[FeatureDef] = &[
            $( FeatureDef { name: $name, kind: Kind::$kind, model: catalogue!(@m $($model)?), doc: $doc } ),*
        ];
    };
    (@m model) => { true };
    (@m) => { false };
}

catalogue! {
    Kind = "kind": Str; "PREPAY or REFUND"
    IsRefund = "is_refund": Bool, model; "the event is a refund"
    AmountFen = "amount_fen": Int, model; "amount of the prepay or refund, fen"
    Currency = "currency": Str; "ISO 4217 code"
    TradeType = "trade_type": Str; "JSAPI, APP, H5, NATIVE (a refund: the order's)"
    TradeCode = "trade_code": Int, model; "trade type as a number: JSAPI 1, APP 2, H5 3, NATIVE 4, other 0"
    Mchid = "mchid": Str; "the merchant"
    Industry = "industry": Str; "merchant industry from its profile, empty if unknown"
    MerchantAgeDays = "merchant_age_days": Int, model; "days since the merchant was onboarded, -1 unknown"
    StoreId = "store_id": Str; "scene_info.store_info.id, empty if none"
    H5Type = "h5_type": Str; "scene_info.h5_info.type, empty if none"
    AppName = "app_name": Str; "scene_info.h5_info.app_name, empty if none"
    UserAgent = "user_agent": Str; "User-Agent the merchant reported, empty if none"
    Hour = "hour": Int, model; "hour of day 0-23 in the configured zone (default UTC+8)"
    Weekday = "weekday": Int, model; "1 Monday … 7 Sunday"
    IsNight = "is_night": Bool, model; "00:00-05:59"
    IsWeekend = "is_weekend": Bool, model; "Saturday or Sunday"
    AmountRound = "amount_round": Bool, model; "a whole number of 100 yuan"
    RefundRatio = "refund_ratio": Float, model; "refund amount / original order amount; 0 for a prepay"
    OrderAgeS = "order_age_s": Int, model; "refund: seconds since the order was paid; -1 otherwise"

    HasPayer = "has_payer": Bool, model; "a payer key came with the event"
    Payer = "payer": Str; "payer key (keyed hash of the openid), empty if none"
    PayerNew = "payer_new": Bool, model; "payer never seen (or evicted)"
    PayerAgeS = "payer_age_s": Int, model; "seconds since the payer was first seen, -1 new"
    PayerSinceLastS = "payer_since_last_s": Int, model; "seconds since the payer's previous prepay, -1 none"
    PayerLastDenyS = "payer_last_deny_s": Int; "seconds since the payer was last denied, -1 never (not a model input: training runs without decisions)"
    PayerCnt1m = "payer_cnt_1m": Int, model; "payer prepays, last minute"
    PayerCnt1h = "payer_cnt_1h": Int, model; "payer prepays, last hour"
    PayerCnt24h = "payer_cnt_24h": Int, model; "payer prepays, last 24 h"
    PayerCnt7d = "payer_cnt_7d": Int, model; "payer prepays, last 7 d"
    PayerCnt30d = "payer_cnt_30d": Int, model; "payer prepays, last 30 d"
    PayerSum1m = "payer_sum_1m": Int, model; "payer prepay amounts, last minute, fen"
    PayerSum1h = "payer_sum_1h": Int, model; "payer prepay amounts, last hour, fen"
    PayerSum24h = "payer_sum_24h": Int, model; "payer prepay amounts, last 24 h, fen"
    PayerSum7d = "payer_sum_7d": Int, model; "payer prepay amounts, last 7 d, fen"
    PayerSum30d = "payer_sum_30d": Int, model; "payer prepay amounts, last 30 d, fen"
    PayerDevices24h = "payer_devices_24h": Int, model; "distinct device_ids of the payer, 24 h (saturates at 8)"
    PayerDevices30d = "payer_devices_30d": Int, model; "distinct device_ids of the payer, 30 d (saturates at 8)"
    PayerIps1h = "payer_ips_1h": Int, model; "distinct IPs of the payer, 1 h (saturates at 8)"
    PayerIps24h = "payer_ips_24h": Int, model; "distinct IPs of the payer, 24 h (saturates at 8)"
    PayerMerchants1h = "payer_merchants_1h": Int, model; "distinct merchants of the payer, 1 h (saturates at 8)"
    PayerMerchants24h = "payer_merchants_24h": Int, model; "distinct merchants of the payer, 24 h (saturates at 8)"
    PayerDeviceNew = "payer_device_new": Bool, model; "a payer with device_id history on a device_id it has not used"
    PayerIpNew = "payer_ip_new": Bool, model; "a known payer from an IP it has not used"
    PayerAmountN = "payer_amount_n": Int, model; "amounts in the payer's running mean"
    PayerAmountMeanFen = "payer_amount_mean_fen": Int, model; "payer's mean prepay amount, fen"
    PayerAmountZ = "payer_amount_z": Float, model; "(amount - mean) / (sd + 100 fen) over the payer's prepays; 0 under 2"
    PayerRefundCnt24h = "payer_refund_cnt_24h": Int, model; "refunds to the payer, 24 h"
    PayerRefundCnt30d = "payer_refund_cnt_30d": Int, model; "refunds to the payer, 30 d"
    PayerRefundSum30d = "payer_refund_sum_30d": Int, model; "refunded to the payer, 30 d, fen"

    HasDevice = "has_device": Bool, model; "a device fingerprint could be formed"
    DeviceFp = "device_fp": Str; "device fingerprint, 16 hex digits, empty if none"
    FpSource = "fp_source": Str; "device_id, headers, store or none"
    DeviceNew = "device_new": Bool, model; "fingerprint never seen"
    DeviceAgeS = "device_age_s": Int, model; "seconds since the device was first seen, -1 new"
    DeviceCnt1m = "device_cnt_1m": Int, model; "prepays from the device, last minute"
    DeviceCnt1h = "device_cnt_1h": Int, model; "prepays from the device, last hour"
    DeviceCnt24h = "device_cnt_24h": Int, model; "prepays from the device, 24 h"
    DeviceCnt7d = "device_cnt_7d": Int, model; "prepays from the device, 7 d"
    DeviceCnt30d = "device_cnt_30d": Int, model; "prepays from the device, 30 d"
    DeviceSum1m = "device_sum_1m": Int, model; "amounts from the device, last minute, fen"
    DeviceSum1h = "device_sum_1h": Int, model; "amounts from the device, last hour, fen"
    DeviceSum24h = "device_sum_24h": Int, model; "amounts from the device, 24 h, fen"
    DeviceSum7d = "device_sum_7d": Int, model; "amounts from the device, 7 d, fen"
    DeviceSum30d = "device_sum_30d": Int, model; "amounts from the device, 30 d, fen"
    DevicePayers1h = "device_payers_1h": Int, model; "distinct payers on the device, 1 h (saturates at 8)"
    DevicePayers24h = "device_payers_24h": Int, model; "distinct payers on the device, 24 h (saturates at 8)"
    DevicePayers30d = "device_payers_30d": Int, model; "distinct payers on the device, 30 d (saturates at 8)"
    DeviceIps24h = "device_ips_24h": Int, model; "distinct IPs of the device, 24 h (saturates at 8)"

    HasIp = "has_ip": Bool, model; "a client IP came with the event"
    Ip = "ip": Str; "client IP as text, empty if none"
    IpPrefix = "ip_prefix": Str; "its /24 (IPv4) or /64 (IPv6) as text"
    IpNew = "ip_new": Bool, model; "IP never seen"
    IpCnt1m = "ip_cnt_1m": Int, model; "prepays from the IP, last minute"
    IpCnt1h = "ip_cnt_1h": Int, model; "prepays from the IP, last hour"
    IpCnt24h = "ip_cnt_24h": Int, model; "prepays from the IP, 24 h"
    IpCnt7d = "ip_cnt_7d": Int, model; "prepays from the IP, 7 d"
    IpCnt30d = "ip_cnt_30d": Int, model; "prepays from the IP, 30 d"
    IpSum1m = "ip_sum_1m": Int, model; "amounts from the IP, last minute, fen"
    IpSum1h = "ip_sum_1h": Int, model; "amounts from the IP, last hour, fen"
    IpSum24h = "ip_sum_24h": Int, model; "amounts from the IP, 24 h, fen"
    IpSum7d = "ip_sum_7d": Int, model; "amounts from the IP, 7 d, fen"
    IpSum30d = "ip_sum_30d": Int, model; "amounts from the IP, 30 d, fen"
    IpPayers1h = "ip_payers_1h": Int, model; "distinct payers from the IP, 1 h (saturates at 8)"
    IpPayers24h = "ip_payers_24h": Int, model; "distinct payers from the IP, 24 h (saturates at 8)"
    IpDevices24h = "ip_devices_24h": Int, model; "distinct devices from the IP, 24 h (saturates at 8)"
    SubnetCnt1h = "subnet_cnt_1h": Int, model; "prepays from the /24, last hour"
    SubnetCnt24h = "subnet_cnt_24h": Int, model; "prepays from the /24, 24 h"
    SubnetPayers24h = "subnet_payers_24h": Int, model; "distinct payers from the /24, 24 h (saturates at 16)"

    MchCnt1m = "mch_cnt_1m": Int, model; "merchant prepays, last minute"
    MchCnt1h = "mch_cnt_1h": Int, model; "merchant prepays, last hour"
    MchCnt24h = "mch_cnt_24h": Int, model; "merchant prepays, 24 h"
    MchCnt7d = "mch_cnt_7d": Int, model; "merchant prepays, 7 d"
    MchCnt30d = "mch_cnt_30d": Int, model; "merchant prepays, 30 d"
    MchSum1m = "mch_sum_1m": Int, model; "merchant prepay amounts, last minute, fen"
    MchSum1h = "mch_sum_1h": Int, model; "merchant prepay amounts, last hour, fen"
    MchSum24h = "mch_sum_24h": Int, model; "merchant prepay amounts, 24 h, fen"
    MchSum7d = "mch_sum_7d": Int, model; "merchant prepay amounts, 7 d, fen"
    MchSum30d = "mch_sum_30d": Int, model; "merchant prepay amounts, 30 d, fen"
    MchPayers1h = "mch_payers_1h": Int, model; "distinct payers of the merchant, 1 h (saturates at 16)"
    MchPayers24h = "mch_payers_24h": Int, model; "distinct payers of the merchant, 24 h (saturates at 16)"
    MchDevices24h = "mch_devices_24h": Int, model; "distinct devices at the merchant, 24 h (saturates at 16)"
    MchAmountMeanFen = "mch_amount_mean_fen": Int, model; "merchant's mean prepay amount, fen"
    AmountVsMchMean = "amount_vs_mch_mean": Float, model; "amount / merchant mean (1 without history)"
    MchRefundCnt24h = "mch_refund_cnt_24h": Int, model; "merchant refunds, 24 h"
    MchRefundSum24h = "mch_refund_sum_24h": Int, model; "merchant refund amounts, 24 h, fen"
    MchRefundPayers24h = "mch_refund_payers_24h": Int, model; "distinct payers refunded by the merchant, 24 h (saturates at 16)"
    MchRefundRatio24h = "mch_refund_ratio_24h": Float, model; "merchant refund sum / prepay sum, 24 h (0 without prepays)"

    PmNew = "pm_new": Bool, model; "first prepay of this payer at this merchant"
    PmCnt1m = "pm_cnt_1m": Int, model; "payer's prepays at this merchant, last minute"
    PmCnt1h = "pm_cnt_1h": Int, model; "payer's prepays at this merchant, last hour"
    PmCnt24h = "pm_cnt_24h": Int, model; "payer's prepays at this merchant, 24 h"
    PmCnt7d = "pm_cnt_7d": Int, model; "payer's prepays at this merchant, 7 d"
    PmCnt30d = "pm_cnt_30d": Int, model; "payer's prepays at this merchant, 30 d"
    PmSum1m = "pm_sum_1m": Int, model; "payer's amounts at this merchant, last minute, fen"
    PmSum1h = "pm_sum_1h": Int, model; "payer's amounts at this merchant, last hour, fen"
    PmSum24h = "pm_sum_24h": Int, model; "payer's amounts at this merchant, 24 h, fen"
    PmSum7d = "pm_sum_7d": Int, model; "payer's amounts at this merchant, 7 d, fen"
    PmSum30d = "pm_sum_30d": Int, model; "payer's amounts at this merchant, 30 d, fen"

    PayerBlocked = "payer_blocked": Bool; "payer on the block list"
    DeviceBlocked = "device_blocked": Bool; "device_id or fingerprint on the block list"
    IpBlocked = "ip_blocked": Bool; "IP on the block list"
    SubnetBlocked = "subnet_blocked": Bool; "the IP's /24 on the block list"
    MerchantBlocked = "merchant_blocked": Bool; "merchant on the block list"
    PayerAllowed = "payer_allowed": Bool; "payer on the allow list"
    DeviceAllowed = "device_allowed": Bool; "device on the allow list"
    IpAllowed = "ip_allowed": Bool; "IP or its /24 on the allow list"
    MerchantAllowed = "merchant_allowed": Bool; "merchant on the allow list"
    AnyListed = "any_listed": Bool; "any of the above"

    ModelScore = "model_score": Float; "fraud probability from the tree model, 0-1; 0 without a model"
    HasModel = "has_model": Bool; "a model is loaded"
}

/// Number of features.
pub const FEATURE_COUNT: usize = FEATURES.len();

static BY_NAME: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    FEATURES
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name, i))
        .collect()
});

/// The catalogue index of a feature name.
pub fn feature_index(name: &str) -> Option<usize> {
    BY_NAME.get(name).copied()
}

/// The names the model reads, in the order of its input vector.
pub fn model_feature_names() -> Vec<&'static str> {
    FEATURES
        .iter()
        .filter(|f| f.model)
        .map(|f| f.name)
        .collect()
}

/// One feature's value, stored as the CEL value rules read (so evaluation borrows it).
#[derive(Clone, Debug)]
enum Slot<'e> {
    Int(CelInt),
    Float(CelDouble),
    Bool(CelBool),
    Str(CelString<'e>),
}

/// Every feature of one event. Strings borrow the event where they can.
#[derive(Clone, Debug)]
pub struct Features<'e> {
    slots: Vec<Slot<'e>>,
}

impl<'e> Features<'e> {
    fn new() -> Self {
        let slots = FEATURES
            .iter()
            .map(|f| match f.kind {
                Kind::Int => Slot::Int(CelInt::from(0)),
                Kind::Float => Slot::Float(CelDouble::from(0.0)),
                Kind::Bool => Slot::Bool(CelBool::from(false)),
                Kind::Str => Slot::Str(CelString::from("")),
            })
            .collect();
        Self { slots }
    }

    /// The features of `e` against an empty memory: what a rule sees on a first event.
    pub(crate) fn probe(e: &'e RiskEvent) -> Self {
        let tiny = MemoryConfig {
            payers_max: 1,
            devices_max: 1,
            ips_max: 1,
            subnets_max: 1,
            merchants_max: 1,
            payer_merchants_max: 1,
            payer_refunds_max: 1,
            merchant_refunds_max: 1,
        };
        FeatureStore::new(Keyer::new([0; 16]), UtcOffset::UTC, &tiny).compute(e, &Lists::default())
    }

    fn set_int(&mut self, f: F, v: i64) {
        self.slots[f as usize] = Slot::Int(CelInt::from(v));
    }
    fn set_float(&mut self, f: F, v: f64) {
        self.slots[f as usize] = Slot::Float(CelDouble::from(v));
    }
    fn set_bool(&mut self, f: F, v: bool) {
        self.slots[f as usize] = Slot::Bool(CelBool::from(v));
    }
    fn set_str(&mut self, f: F, v: CelString<'e>) {
        self.slots[f as usize] = Slot::Str(v);
    }

    pub(crate) fn set_model_score(&mut self, score: Option<f64>) {
        self.set_float(F::ModelScore, score.unwrap_or(0.0));
        self.set_bool(F::HasModel, score.is_some());
    }

    /// The value as CEL sees it.
    pub(crate) fn val(&self, index: usize) -> Option<&dyn Val> {
        self.slots.get(index).map(|s| match s {
            Slot::Int(v) => v as &dyn Val,
            Slot::Float(v) => v as &dyn Val,
            Slot::Bool(v) => v as &dyn Val,
            Slot::Str(v) => v as &dyn Val,
        })
    }

    pub(crate) fn int_at(&self, i: usize) -> Option<i64> {
        match self.slots.get(i) {
            Some(Slot::Int(v)) => Some(*v.inner()),
            _ => None,
        }
    }

    pub(crate) fn float_at(&self, i: usize) -> Option<f64> {
        match self.slots.get(i) {
            Some(Slot::Float(v)) => Some(*v.inner()),
            _ => None,
        }
    }

    pub(crate) fn flag_at(&self, i: usize) -> Option<bool> {
        match self.slots.get(i) {
            Some(Slot::Bool(v)) => Some(*v.inner()),
            _ => None,
        }
    }

    pub(crate) fn str_at(&self, i: usize) -> Option<&str> {
        match self.slots.get(i) {
            Some(Slot::Str(v)) => Some(v.inner()),
            _ => None,
        }
    }

    /// A feature as a number: ints and floats as they are, flags as 0/1, strings as NaN.
    pub fn number(&self, f: F) -> f64 {
        self.number_at(f as usize)
    }

    fn number_at(&self, i: usize) -> f64 {
        match self.slots.get(i) {
            Some(Slot::Int(v)) => *v.inner() as f64,
            Some(Slot::Float(v)) => *v.inner(),
            Some(Slot::Bool(v)) => {
                if *v.inner() {
                    1.0
                } else {
                    0.0
                }
            }
            Some(Slot::Str(_)) | None => f64::NAN,
        }
    }

    /// A string feature's text (empty for other kinds).
    pub fn text(&self, f: F) -> &str {
        match self.slots.get(f as usize) {
            Some(Slot::Str(s)) => s.inner(),
            _ => "",
        }
    }

    /// The model's input vector, in [`model_feature_names`] order, into `out` (cleared first).
    pub fn model_input(&self, out: &mut Vec<f64>) {
        out.clear();
        out.extend(
            FEATURES
                .iter()
                .enumerate()
                .filter(|(_, f)| f.model)
                .map(|(i, _)| self.number_at(i)),
        );
    }

    /// Every feature as JSON, for explanations and rule debugging.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (def, slot) in FEATURES.iter().zip(&self.slots) {
            let v = match slot {
                Slot::Int(v) => serde_json::Value::from(*v.inner()),
                Slot::Float(v) => serde_json::Value::from(*v.inner()),
                Slot::Bool(v) => serde_json::Value::from(*v.inner()),
                Slot::Str(v) => serde_json::Value::from(v.inner()),
            };
            m.insert(def.name.to_owned(), v);
        }
        serde_json::Value::Object(m)
    }
}

/// Caps on the entities the engine remembers; see [`FeatureStore::memory_bound_bytes`]. The
/// defaults bound the counters to about 1.3 GB; a full entity map evicts its least recently
/// seen entries (sampled), which then start again from zero if they come back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    pub payers_max: usize,
    pub devices_max: usize,
    pub ips_max: usize,
    pub subnets_max: usize,
    pub merchants_max: usize,
    pub payer_merchants_max: usize,
    pub payer_refunds_max: usize,
    pub merchant_refunds_max: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            payers_max: 600_000,
            devices_max: 600_000,
            ips_max: 300_000,
            subnets_max: 100_000,
            merchants_max: 50_000,
            payer_merchants_max: 600_000,
            payer_refunds_max: 100_000,
            merchant_refunds_max: 20_000,
        }
    }
}

/// What is kept per entity: counters over the five windows, `D` last-seen sets of `K` values
/// for distinct counts, integer amount moments, and first/last-seen times.
#[derive(Clone, Copy, Debug)]
pub struct Entity<const D: usize, const K: usize> {
    vel: Velocity,
    distinct: [Distinct<K>; D],
    amounts: AmountMoments,
    first_seen_s: u32,
    last_seen_s: u32,
    last_deny_s: u32,
}

impl<const D: usize, const K: usize> Default for Entity<D, K> {
    fn default() -> Self {
        Self {
            vel: Velocity::default(),
            distinct: [Distinct::default(); D],
            amounts: AmountMoments::default(),
            first_seen_s: 0,
            last_seen_s: 0,
            last_deny_s: 0,
        }
    }
}

impl<const D: usize, const K: usize> Touched for Entity<D, K> {
    fn last_seen_s(&self) -> u32 {
        self.last_seen_s
    }
}

impl<const D: usize, const K: usize> Entity<D, K> {
    fn touch(&mut self, at_s: u32, amount_fen: i64, others: [Option<u32>; D], denied: bool) {
        self.vel.add(at_s, amount_fen);
        for (set, other) in self.distinct.iter_mut().zip(others) {
            if let Some(v) = other {
                set.insert(v, at_s);
            }
        }
        if !denied {
            // A denied attempt's amount would drag the payer's normal amount towards the fraud.
            self.amounts.add(amount_fen);
        }
        if self.first_seen_s == 0 {
            self.first_seen_s = at_s;
        }
        self.last_seen_s = self.last_seen_s.max(at_s);
        if denied {
            self.last_deny_s = at_s;
        }
    }
}

type PayerEntity = Entity<3, 8>; // devices, IPs, merchants
type DeviceEntity = Entity<2, 8>; // payers, IPs
type IpEntity = Entity<2, 8>; // payers, devices
type SubnetEntity = Entity<1, 16>; // payers
type MerchantEntity = Entity<2, 16>; // payers, devices
type PairEntity = Entity<0, 1>; // payer × merchant, payer refunds
type MerchantRefundEntity = Entity<1, 16>; // refunded payers

/// Keys of one event's entities (keyed SipHash; `None` when the event lacks the field).
struct Keys {
    payer: Option<u64>,
    device: Option<u64>,
    ip: Option<u64>,
    subnet: Option<u64>,
    merchant: u64,
    pair: Option<u64>,
}

/// Where the device fingerprint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FingerprintSource {
    DeviceId,
    Headers,
    Store,
    None,
}

impl FingerprintSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            FingerprintSource::DeviceId => "device_id",
            FingerprintSource::Headers => "headers",
            FingerprintSource::Store => "store",
            FingerprintSource::None => "none",
        }
    }
}

/// The keyed hash every entity key and fingerprint goes through.
#[derive(Clone)]
pub struct Keyer {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyer(***)")
    }
}

impl Keyer {
    pub fn new(key: [u8; 16]) -> Self {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&key[..8]);
        b.copy_from_slice(&key[8..]);
        Self {
            k0: u64::from_le_bytes(a),
            k1: u64::from_le_bytes(b),
        }
    }

    /// Hash of a tag and length-prefixed parts (so `("ab","c")` ≠ `("a","bc")`).
    pub fn hash(&self, tag: u8, parts: &[&[u8]]) -> u64 {
        use std::hash::Hasher;
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_u8(tag);
        for p in parts {
            h.write_u64(p.len() as u64);
            h.write(p);
        }
        h.finish()
    }

    /// The device fingerprint: stable for one device across its requests. `device_id` when the
    /// merchant sends one; else the headers that identify a browser or app install (User-Agent,
    /// Accept-Language, H5 type and app name) within the client's /24, so a phone moving between
    /// networks reads as another device only when it also leaves its subnet; else, for an offline
    /// store terminal, the store within the merchant.
    pub fn fingerprint(&self, e: &RiskEvent) -> (Option<u64>, FingerprintSource) {
        if let Some(d) = e.device_id.as_deref().filter(|d| !d.is_empty()) {
            return (
                Some(self.hash(b'D', &[d.as_bytes()])),
                FingerprintSource::DeviceId,
            );
        }
        if let Some(ua) = e.user_agent.as_deref().filter(|u| !u.is_empty()) {
            let subnet = e.client_ip.map(subnet_of).unwrap_or_default();
            let parts: [&[u8]; 5] = [
                ua.as_bytes(),
                e.accept_language.as_deref().unwrap_or("").as_bytes(),
                e.h5_type.as_deref().unwrap_or("").as_bytes(),
                e.app_name.as_deref().unwrap_or("").as_bytes(),
                subnet.as_bytes(),
            ];
            return (Some(self.hash(b'H', &parts)), FingerprintSource::Headers);
        }
        if let Some(store) = e.store_id.as_deref().filter(|s| !s.is_empty()) {
            let ip = e.client_ip.map(|i| i.to_string()).unwrap_or_default();
            let parts: [&[u8]; 3] = [e.mchid.as_bytes(), store.as_bytes(), ip.as_bytes()];
            return (Some(self.hash(b'S', &parts)), FingerprintSource::Store);
        }
        (None, FingerprintSource::None)
    }

    fn keys(&self, e: &RiskEvent, device: Option<u64>) -> Keys {
        let payer = e
            .payer_key
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| self.hash(b'P', &[p.as_bytes()]));
        let (ip, subnet) = match e.client_ip {
            Some(addr) => {
                let text = addr.to_string();
                let sub = subnet_of(addr);
                (
                    Some(self.hash(b'I', &[text.as_bytes()])),
                    Some(self.hash(b'N', &[sub.as_bytes()])),
                )
            }
            None => (None, None),
        };
        let merchant = self.hash(b'M', &[e.mchid.as_bytes()]);
        let pair = e
            .payer_key
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| self.hash(b'X', &[p.as_bytes(), e.mchid.as_bytes()]));
        Keys {
            payer,
            device,
            ip,
            subnet,
            merchant,
            pair,
        }
    }
}

/// The /24 of an IPv4 address, the /64 of an IPv6 one, as text (`203.0.113.0/24`).
pub fn subnet_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The behaviour memory: one sharded, capped map per entity kind.
pub struct FeatureStore {
    keyer: Keyer,
    utc_offset: UtcOffset,
    payers: Shards<PayerEntity>,
    devices: Shards<DeviceEntity>,
    ips: Shards<IpEntity>,
    subnets: Shards<SubnetEntity>,
    merchants: Shards<MerchantEntity>,
    pairs: Shards<PairEntity>,
    payer_refunds: Shards<PairEntity>,
    merchant_refunds: Shards<MerchantRefundEntity>,
}

fn unix_s(at: OffsetDateTime) -> u32 {
    at.unix_timestamp().clamp(1, i64::from(u32::MAX)) as u32
}

fn short(h: u64) -> u32 {
    (h >> 32) as u32 ^ h as u32
}

fn age_s(now_s: u32, then_s: u32) -> i64 {
    if then_s == 0 {
        -1
    } else {
        i64::from(now_s.saturating_sub(then_s))
    }
}

const W1H: usize = 1;
const W24H: usize = 2;
const W30D: usize = 4;

impl FeatureStore {
    pub fn new(keyer: Keyer, utc_offset: UtcOffset, memory: &MemoryConfig) -> Self {
        Self {
            keyer,
            utc_offset,
            payers: Shards::new(memory.payers_max),
            devices: Shards::new(memory.devices_max),
            ips: Shards::new(memory.ips_max),
            subnets: Shards::new(memory.subnets_max),
            merchants: Shards::new(memory.merchants_max),
            pairs: Shards::new(memory.payer_merchants_max),
            payer_refunds: Shards::new(memory.payer_refunds_max),
            merchant_refunds: Shards::new(memory.merchant_refunds_max),
        }
    }

    pub fn keyer(&self) -> &Keyer {
        &self.keyer
    }

    /// The most memory the counters can take, all maps full (see [`Shards::memory_bound_bytes`]).
    pub fn memory_bound_bytes(&self) -> usize {
        self.payers.memory_bound_bytes()
            + self.devices.memory_bound_bytes()
            + self.ips.memory_bound_bytes()
            + self.subnets.memory_bound_bytes()
            + self.merchants.memory_bound_bytes()
            + self.pairs.memory_bound_bytes()
            + self.payer_refunds.memory_bound_bytes()
            + self.merchant_refunds.memory_bound_bytes()
    }

    /// Entities held now, per map, for metrics.
    pub fn entity_counts(&self) -> [(&'static str, usize); 8] {
        [
            ("payers", self.payers.len()),
            ("devices", self.devices.len()),
            ("ips", self.ips.len()),
            ("subnets", self.subnets.len()),
            ("merchants", self.merchants.len()),
            ("payer_merchants", self.pairs.len()),
            ("payer_refunds", self.payer_refunds.len()),
            ("merchant_refunds", self.merchant_refunds.len()),
        ]
    }

    /// Every feature of `e` except the model score, as of before `e`.
    pub fn compute<'e>(&self, e: &'e RiskEvent, lists: &Lists) -> Features<'e> {
        let mut f = Features::new();
        let now = unix_s(e.at);
        let (device, fp_source) = self.keyer.fingerprint(e);
        let keys = self.keyer.keys(e, device);
        self.order_features(&mut f, e, now);
        self.payer_features(&mut f, e, &keys, now, fp_source);
        self.device_features(&mut f, &keys, now, device, fp_source);
        self.ip_features(&mut f, e, &keys, now);
        self.merchant_features(&mut f, e, &keys, now);
        self.pair_features(&mut f, &keys, now);
        list_features(&mut f, e, lists);
        f.set_model_score(None);
        f
    }

    fn order_features<'e>(&self, f: &mut Features<'e>, e: &'e RiskEvent, now: u32) {
        f.set_str(F::Kind, CelString::from(e.kind.as_str()));
        f.set_bool(F::IsRefund, e.kind == EventKind::Refund);
        f.set_int(F::AmountFen, e.amount_fen);
        f.set_str(F::Currency, CelString::from(e.currency.as_str()));
        f.set_str(F::TradeType, CelString::from(e.trade_type.as_str()));
        let code = match e.trade_type.as_str() {
            "JSAPI" => 1,
            "APP" => 2,
            "H5" => 3,
            "NATIVE" => 4,
            _ => 0,
        };
        f.set_int(F::TradeCode, code);
        f.set_str(F::Mchid, CelString::from(e.mchid.as_str()));
        f.set_str(F::Industry, opt_str(&e.merchant_industry));
        let mch_age = e
            .merchant_created_at
            .map(|c| (e.at - c).whole_days().max(0))
            .unwrap_or(-1);
        f.set_int(F::MerchantAgeDays, mch_age);
        f.set_str(F::StoreId, opt_str(&e.store_id));
        f.set_str(F::H5Type, opt_str(&e.h5_type));
        f.set_str(F::AppName, opt_str(&e.app_name));
        f.set_str(F::UserAgent, opt_str(&e.user_agent));
        let local = e.at.to_offset(self.utc_offset);
        let hour = i64::from(local.hour());
        let weekday = i64::from(local.weekday().number_from_monday());
        f.set_int(F::Hour, hour);
        f.set_int(F::Weekday, weekday);
        f.set_bool(F::IsNight, hour < 6);
        f.set_bool(F::IsWeekend, weekday >= 6);
        f.set_bool(
            F::AmountRound,
            e.amount_fen >= 10_000 && e.amount_fen % 10_000 == 0,
        );
        let ratio = match (e.kind, e.original_amount_fen) {
            (EventKind::Refund, Some(orig)) if orig > 0 => e.amount_fen as f64 / orig as f64,
            _ => 0.0,
        };
        f.set_float(F::RefundRatio, ratio);
        let order_age = match (e.kind, e.original_paid_at) {
            (EventKind::Refund, Some(paid)) => i64::from(now.saturating_sub(unix_s(paid))),
            _ => -1,
        };
        f.set_int(F::OrderAgeS, order_age);
    }

    fn payer_features<'e>(
        &self,
        f: &mut Features<'e>,
        e: &'e RiskEvent,
        k: &Keys,
        now: u32,
        source: FingerprintSource,
    ) {
        f.set_bool(F::HasPayer, k.payer.is_some());
        f.set_str(F::Payer, opt_str(&e.payer_key));
        let ip = k.ip.map(short);
        // Only merchant-sent device ids are stable enough for the payer → device graph: a
        // header fingerprint changes whenever a phone changes networks.
        let device = k
            .device
            .filter(|_| source == FingerprintSource::DeviceId)
            .map(short);
        let known = k.payer.and_then(|key| {
            self.payers.read(key, |p| {
                let w = p.vel.read(now);
                set_windows(
                    f,
                    &w,
                    [
                        F::PayerCnt1m,
                        F::PayerCnt1h,
                        F::PayerCnt24h,
                        F::PayerCnt7d,
                        F::PayerCnt30d,
                    ],
                    [
                        F::PayerSum1m,
                        F::PayerSum1h,
                        F::PayerSum24h,
                        F::PayerSum7d,
                        F::PayerSum30d,
                    ],
                );
                let [devices, ips, merchants] = &p.distinct;
                f.set_int(F::PayerDevices24h, devices.count_since(since(now, W24H)));
                f.set_int(F::PayerDevices30d, devices.count_since(since(now, W30D)));
                f.set_int(F::PayerIps1h, ips.count_since(since(now, W1H)));
                f.set_int(F::PayerIps24h, ips.count_since(since(now, W24H)));
                f.set_int(F::PayerMerchants1h, merchants.count_since(since(now, W1H)));
                f.set_int(
                    F::PayerMerchants24h,
                    merchants.count_since(since(now, W24H)),
                );
                f.set_bool(
                    F::PayerDeviceNew,
                    device.is_some_and(|d| !devices.contains(d)) && !devices.is_empty(),
                );
                f.set_bool(
                    F::PayerIpNew,
                    ip.is_some_and(|i| !ips.contains(i)) && !ips.is_empty(),
                );
                f.set_int(F::PayerAmountN, p.amounts.count());
                f.set_int(F::PayerAmountMeanFen, p.amounts.mean_fen());
                f.set_float(F::PayerAmountZ, p.amounts.z_score(e.amount_fen));
                f.set_int(F::PayerAgeS, age_s(now, p.first_seen_s));
                f.set_int(F::PayerSinceLastS, age_s(now, p.last_seen_s));
                f.set_int(F::PayerLastDenyS, age_s(now, p.last_deny_s));
            })
        });
        if known.is_none() {
            f.set_bool(F::PayerNew, true);
            f.set_int(F::PayerAgeS, -1);
            f.set_int(F::PayerSinceLastS, -1);
            f.set_int(F::PayerLastDenyS, -1);
        }
        if let Some(key) = k.payer {
            self.payer_refunds.read(key, |r| {
                let w = r.vel.read(now);
                f.set_int(F::PayerRefundCnt24h, w[W24H].count);
                f.set_int(F::PayerRefundCnt30d, w[W30D].count);
                f.set_int(F::PayerRefundSum30d, w[W30D].sum_fen);
            });
        }
    }

    fn device_features(
        &self,
        f: &mut Features<'_>,
        k: &Keys,
        now: u32,
        device: Option<u64>,
        source: FingerprintSource,
    ) {
        f.set_bool(F::HasDevice, device.is_some());
        f.set_str(
            F::DeviceFp,
            CelString::from(device.map(|d| format!("{d:016x}")).unwrap_or_default()),
        );
        f.set_str(F::FpSource, CelString::from(source.as_str()));
        let known = k.device.and_then(|key| {
            self.devices.read(key, |d| {
                let w = d.vel.read(now);
                set_windows(
                    f,
                    &w,
                    [
                        F::DeviceCnt1m,
                        F::DeviceCnt1h,
                        F::DeviceCnt24h,
                        F::DeviceCnt7d,
                        F::DeviceCnt30d,
                    ],
                    [
                        F::DeviceSum1m,
                        F::DeviceSum1h,
                        F::DeviceSum24h,
                        F::DeviceSum7d,
                        F::DeviceSum30d,
                    ],
                );
                let [payers, ips] = &d.distinct;
                f.set_int(F::DevicePayers1h, payers.count_since(since(now, W1H)));
                f.set_int(F::DevicePayers24h, payers.count_since(since(now, W24H)));
                f.set_int(F::DevicePayers30d, payers.count_since(since(now, W30D)));
                f.set_int(F::DeviceIps24h, ips.count_since(since(now, W24H)));
                f.set_int(F::DeviceAgeS, age_s(now, d.first_seen_s));
            })
        });
        f.set_bool(F::DeviceNew, device.is_some() && known.is_none());
        if known.is_none() {
            f.set_int(F::DeviceAgeS, -1);
        }
    }

    fn ip_features<'e>(&self, f: &mut Features<'e>, e: &'e RiskEvent, k: &Keys, now: u32) {
        f.set_bool(F::HasIp, e.client_ip.is_some());
        if let Some(ip) = e.client_ip {
            f.set_str(F::Ip, CelString::from(ip.to_string()));
            f.set_str(F::IpPrefix, CelString::from(subnet_of(ip)));
        }
        let known = k.ip.and_then(|key| {
            self.ips.read(key, |i| {
                let w = i.vel.read(now);
                set_windows(
                    f,
                    &w,
                    [F::IpCnt1m, F::IpCnt1h, F::IpCnt24h, F::IpCnt7d, F::IpCnt30d],
                    [F::IpSum1m, F::IpSum1h, F::IpSum24h, F::IpSum7d, F::IpSum30d],
                );
                let [payers, devices] = &i.distinct;
                f.set_int(F::IpPayers1h, payers.count_since(since(now, W1H)));
                f.set_int(F::IpPayers24h, payers.count_since(since(now, W24H)));
                f.set_int(F::IpDevices24h, devices.count_since(since(now, W24H)));
            })
        });
        f.set_bool(F::IpNew, e.client_ip.is_some() && known.is_none());
        if let Some(key) = k.subnet {
            self.subnets.read(key, |s| {
                let w = s.vel.read(now);
                f.set_int(F::SubnetCnt1h, w[W1H].count);
                f.set_int(F::SubnetCnt24h, w[W24H].count);
                f.set_int(
                    F::SubnetPayers24h,
                    s.distinct[0].count_since(since(now, W24H)),
                );
            });
        }
    }

    fn merchant_features(&self, f: &mut Features<'_>, e: &RiskEvent, k: &Keys, now: u32) {
        let mut prepay_sum_24h = 0i64;
        let mut mean = 0i64;
        self.merchants.read(k.merchant, |m| {
            let w = m.vel.read(now);
            set_windows(
                f,
                &w,
                [
                    F::MchCnt1m,
                    F::MchCnt1h,
                    F::MchCnt24h,
                    F::MchCnt7d,
                    F::MchCnt30d,
                ],
                [
                    F::MchSum1m,
                    F::MchSum1h,
                    F::MchSum24h,
                    F::MchSum7d,
                    F::MchSum30d,
                ],
            );
            prepay_sum_24h = w[W24H].sum_fen;
            let [payers, devices] = &m.distinct;
            f.set_int(F::MchPayers1h, payers.count_since(since(now, W1H)));
            f.set_int(F::MchPayers24h, payers.count_since(since(now, W24H)));
            f.set_int(F::MchDevices24h, devices.count_since(since(now, W24H)));
            mean = m.amounts.mean_fen();
        });
        f.set_int(F::MchAmountMeanFen, mean);
        f.set_float(
            F::AmountVsMchMean,
            if mean > 0 {
                e.amount_fen as f64 / mean as f64
            } else {
                1.0
            },
        );
        self.merchant_refunds.read(k.merchant, |r| {
            let w = r.vel.read(now);
            f.set_int(F::MchRefundCnt24h, w[W24H].count);
            f.set_int(F::MchRefundSum24h, w[W24H].sum_fen);
            f.set_int(
                F::MchRefundPayers24h,
                r.distinct[0].count_since(since(now, W24H)),
            );
            if prepay_sum_24h > 0 {
                f.set_float(
                    F::MchRefundRatio24h,
                    w[W24H].sum_fen as f64 / prepay_sum_24h as f64,
                );
            }
        });
    }

    fn pair_features(&self, f: &mut Features<'_>, k: &Keys, now: u32) {
        let known = k.pair.and_then(|key| {
            self.pairs.read(key, |p| {
                let w = p.vel.read(now);
                set_windows(
                    f,
                    &w,
                    [F::PmCnt1m, F::PmCnt1h, F::PmCnt24h, F::PmCnt7d, F::PmCnt30d],
                    [F::PmSum1m, F::PmSum1h, F::PmSum24h, F::PmSum7d, F::PmSum30d],
                );
            })
        });
        f.set_bool(F::PmNew, k.pair.is_some() && known.is_none());
    }

    /// Counts `e` into every entity it touches. `denied` marks a denied attempt: it still counts
    /// towards velocity (attempts are what card testing produces) but not towards the payer's
    /// normal amounts.
    pub fn record(&self, e: &RiskEvent, denied: bool) {
        let now = unix_s(e.at);
        let (device, source) = self.keyer.fingerprint(e);
        let k = self.keyer.keys(e, device);
        let amount = e.amount_fen;
        let payer_s = k.payer.map(short);
        let device_s = k.device.map(short);
        let stable_device_s = device_s.filter(|_| source == FingerprintSource::DeviceId);
        let ip_s = k.ip.map(short);
        let mch_s = Some(short(k.merchant));
        if e.kind == EventKind::Refund {
            if let Some(key) = k.payer {
                self.payer_refunds
                    .update(key, |r| r.touch(now, amount, [], false));
            }
            self.merchant_refunds
                .update(k.merchant, |r| r.touch(now, amount, [payer_s], false));
            return;
        }
        if let Some(key) = k.payer {
            self.payers.update(key, |p| {
                p.touch(now, amount, [stable_device_s, ip_s, mch_s], denied);
            });
        }
        if let Some(key) = k.device {
            self.devices
                .update(key, |d| d.touch(now, amount, [payer_s, ip_s], denied));
        }
        if let Some(key) = k.ip {
            self.ips
                .update(key, |i| i.touch(now, amount, [payer_s, device_s], denied));
        }
        if let Some(key) = k.subnet {
            self.subnets
                .update(key, |s| s.touch(now, amount, [payer_s], denied));
        }
        self.merchants.update(k.merchant, |m| {
            m.touch(now, amount, [payer_s, device_s], denied);
        });
        if let Some(key) = k.pair {
            self.pairs.update(key, |p| p.touch(now, amount, [], denied));
        }
    }
}

fn since(now: u32, window: usize) -> u32 {
    now.saturating_sub(crate::counters::WINDOWS_S[window])
}

fn set_windows(f: &mut Features<'_>, w: &[WindowFigures; 5], counts: [F; 5], sums: [F; 5]) {
    for i in 0..5 {
        f.set_int(counts[i], w[i].count);
        f.set_int(sums[i], w[i].sum_fen);
    }
}

fn opt_str(s: &Option<String>) -> CelString<'_> {
    CelString::from(s.as_deref().unwrap_or(""))
}

fn list_features(f: &mut Features<'_>, e: &RiskEvent, lists: &Lists) {
    if lists.is_empty() {
        return;
    }
    let at = e.at;
    let on = |kind, entity, v: &str| !v.is_empty() && lists.contains(kind, entity, v, at);
    let payer = e.payer_key.as_deref().unwrap_or("");
    let device_id = e.device_id.as_deref().unwrap_or("");
    let fp = f.text(F::DeviceFp).to_owned();
    let ip = f.text(F::Ip).to_owned();
    let subnet = f.text(F::IpPrefix).to_owned();
    let mchid = e.mchid.as_str();
    use ListEntity as E;
    use ListKind::{Allow, Block};
    f.set_bool(F::PayerBlocked, on(Block, E::Payer, payer));
    f.set_bool(
        F::DeviceBlocked,
        on(Block, E::Device, device_id) || on(Block, E::Device, &fp),
    );
    f.set_bool(F::IpBlocked, on(Block, E::Ip, &ip));
    f.set_bool(F::SubnetBlocked, on(Block, E::Subnet, &subnet));
    f.set_bool(F::MerchantBlocked, on(Block, E::Merchant, mchid));
    f.set_bool(F::PayerAllowed, on(Allow, E::Payer, payer));
    f.set_bool(
        F::DeviceAllowed,
        on(Allow, E::Device, device_id) || on(Allow, E::Device, &fp),
    );
    f.set_bool(
        F::IpAllowed,
        on(Allow, E::Ip, &ip) || on(Allow, E::Subnet, &subnet),
    );
    f.set_bool(F::MerchantAllowed, on(Allow, E::Merchant, mchid));
    let any = [
        F::PayerBlocked,
        F::DeviceBlocked,
        F::IpBlocked,
        F::SubnetBlocked,
        F::MerchantBlocked,
        F::PayerAllowed,
        F::DeviceAllowed,
        F::IpAllowed,
        F::MerchantAllowed,
    ]
    .iter()
    .any(|x| f.number(*x) == 1.0);
    f.set_bool(F::AnyListed, any);
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn catalogue_indices_match_the_enum() {
        assert_eq!(FEATURES[F::AmountFen as usize].name, "amount_fen");
        assert_eq!(FEATURES[F::HasModel as usize].name, "has_model");
        assert_eq!(feature_index("payer_cnt_1h"), Some(F::PayerCnt1h as usize));
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FEATURE_COUNT);
    }

    fn store() -> FeatureStore {
        FeatureStore::new(
            Keyer::new([7; 16]),
            UtcOffset::from_hms(8, 0, 0).unwrap_or(UtcOffset::UTC),
            &MemoryConfig::default(),
        )
    }

    #[test]
    fn features_count_prior_events_only() {
        let s = store();
        let lists = Lists::default();
        let t = datetime!(2026-11-10 12:00 +08:00);
        let mut e = RiskEvent::prepay("1900000001", "JSAPI", 1_000, t);
        e.payer_key = Some("p1".into());
        e.device_id = Some("d1".into());
        e.client_ip = Some("203.0.113.7".parse().unwrap());
        let f0 = s.compute(&e, &lists);
        assert_eq!(f0.number(F::PayerCnt1m), 0.0);
        assert_eq!(f0.number(F::PayerNew), 1.0);
        s.record(&e, false);
        let mut e2 = e.clone();
        e2.at = t + time::Duration::seconds(10);
        e2.device_id = Some("d2".into());
        let f1 = s.compute(&e2, &lists);
        assert_eq!(f1.number(F::PayerCnt1m), 1.0);
        assert_eq!(f1.number(F::PayerSum1m), 1_000.0);
        assert_eq!(f1.number(F::PayerNew), 0.0);
        assert_eq!(f1.number(F::PayerDeviceNew), 1.0);
        assert_eq!(f1.number(F::DeviceNew), 1.0);
        assert_eq!(f1.number(F::IpCnt1h), 1.0);
        assert_eq!(f1.number(F::PayerSinceLastS), 10.0);
        assert_eq!(f1.text(F::IpPrefix), "203.0.113.0/24");
        assert_eq!(f1.number(F::Hour), 12.0);
    }

    #[test]
    fn fingerprint_is_stable_and_prefers_device_id() {
        let k = Keyer::new([1; 16]);
        let t = datetime!(2026-11-10 12:00 UTC);
        let mut e = RiskEvent::prepay("m", "H5", 1, t);
        e.user_agent = Some("Mozilla/5.0".into());
        e.client_ip = Some("198.51.100.20".parse().unwrap());
        let (a, src) = k.fingerprint(&e);
        assert_eq!(src, FingerprintSource::Headers);
        e.client_ip = Some("198.51.100.99".parse().unwrap());
        assert_eq!(k.fingerprint(&e).0, a, "same /24, same browser");
        e.device_id = Some("dev".into());
        assert_eq!(k.fingerprint(&e).1, FingerprintSource::DeviceId);
    }
}
