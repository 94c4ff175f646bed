//! What a channel is to the router: its cost, what it accepts, when it is down for
//! maintenance, who may use it. Plain data, checked once when the router is built.

use std::collections::HashSet;

/// Beijing time (UTC+8): WeChat Pay's business day and the clock operators think in.
const BEIJING_OFFSET_MS: i64 = 8 * 3_600_000;
const DAY_MS: i64 = 86_400_000;
pub const MINUTES_PER_DAY: u16 = 1_440;

/// The four WeChat Pay trade types, as indexes into per-trade-type statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TradeKind {
    Jsapi = 0,
    App = 1,
    /// H5 (`MWEB` in WeChat's enum).
    H5 = 2,
    Native = 3,
}

impl TradeKind {
    pub const ALL: [TradeKind; 4] = [
        TradeKind::Jsapi,
        TradeKind::App,
        TradeKind::H5,
        TradeKind::Native,
    ];

    /// WeChat's names, plus `H5` for `MWEB`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "JSAPI" => TradeKind::Jsapi,
            "APP" => TradeKind::App,
            "MWEB" | "H5" => TradeKind::H5,
            "NATIVE" => TradeKind::Native,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TradeKind::Jsapi => "JSAPI",
            TradeKind::App => "APP",
            TradeKind::H5 => "MWEB",
            TradeKind::Native => "NATIVE",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A set of trade types as a bit set; [`TradeSet::ALL`] by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TradeSet(u8);

impl TradeSet {
    pub const ALL: TradeSet = TradeSet(0b1111);
    pub const NONE: TradeSet = TradeSet(0);

    pub fn of(kinds: &[TradeKind]) -> Self {
        TradeSet(kinds.iter().fold(0, |m, k| m | (1 << k.index())))
    }

    pub fn contains(self, kind: TradeKind) -> bool {
        self.0 & (1 << kind.index()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Default for TradeSet {
    fn default() -> Self {
        TradeSet::ALL
    }
}

/// A daily window in Beijing time, `[from, to)` in minutes of the day; `to < from` wraps
/// past midnight ("23:30-00:30").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyWindow {
    pub from_min: u16,
    pub to_min: u16,
}

impl DailyWindow {
    /// `"HH:MM-HH:MM"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?}: want HH:MM-HH:MM"))?;
        let w = DailyWindow {
            from_min: minute_of_day(a.trim())?,
            to_min: minute_of_day(b.trim())?,
        };
        if w.from_min == w.to_min {
            return Err(format!("{s:?}: an empty window"));
        }
        Ok(w)
    }

    pub fn contains(self, minute: u16) -> bool {
        if self.from_min < self.to_min {
            (self.from_min..self.to_min).contains(&minute)
        } else {
            minute >= self.from_min || minute < self.to_min
        }
    }
}

fn minute_of_day(hhmm: &str) -> Result<u16, String> {
    let bad = || format!("{hhmm:?}: want HH:MM (24:00 allowed as the end of a day)");
    let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok((h * 60 + m) % MINUTES_PER_DAY)
}

/// A maintenance window: every day, or once between two instants (Unix ms, `[from, to)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maintenance {
    Daily(DailyWindow),
    Once { from_ms: i64, to_ms: i64 },
}

impl Maintenance {
    pub fn contains(self, now_ms: i64) -> bool {
        match self {
            Maintenance::Daily(w) => w.contains(beijing_minute(now_ms)),
            Maintenance::Once { from_ms, to_ms } => (from_ms..to_ms).contains(&now_ms),
        }
    }
}

/// Minute of the day in Beijing time.
pub fn beijing_minute(now_ms: i64) -> u16 {
    ((now_ms + BEIJING_OFFSET_MS).rem_euclid(DAY_MS) / 60_000) as u16
}

/// The Beijing-time day number (days since 1970-01-01 in UTC+8), the daily cap's period.
pub fn beijing_day(now_ms: i64) -> i64 {
    (now_ms + BEIJING_OFFSET_MS).div_euclid(DAY_MS)
}

/// The Unix ms at which Beijing day `day` starts.
pub fn beijing_day_start_ms(day: i64) -> i64 {
    day * DAY_MS - BEIJING_OFFSET_MS
}

/// Which merchants may use a channel. The merchant's own channel (from its record) is always
/// allowed besides these.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum MerchantAccess {
    /// Every merchant (a sandbox provider allocates sub-merchants; a direct channel needs none).
    All,
    /// Only these mchids.
    #[default]
    Listed,
}

/// A channel as the router sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelProfile {
    pub id: String,
    /// Fee rate in basis points of the amount (60 = 0.6%): the channel's cost.
    pub fee_rate_bp: u32,
    pub trade_types: TradeSet,
    /// Per-order bounds, inclusive.
    pub amount_fen_min: i64,
    pub amount_fen_max: i64,
    /// Volume handed out per Beijing day; `None`: no cap.
    pub daily_volume_fen_max: Option<i64>,
    pub maintenance: Vec<Maintenance>,
    /// Share in weighted splits (0: only when nothing with a weight is eligible).
    pub weight: u32,
    pub enabled: bool,
    pub access: MerchantAccess,
    /// The merchants listed for this channel (with `MerchantAccess::Listed`).
    pub merchants: HashSet<String>,
}

impl ChannelProfile {
    /// A channel open to every merchant, every trade type and every amount, at 0.6%.
    pub fn new(id: &str) -> Self {
        ChannelProfile {
            id: id.to_string(),
            fee_rate_bp: 60,
            trade_types: TradeSet::ALL,
            amount_fen_min: 1,
            amount_fen_max: i64::MAX,
            daily_volume_fen_max: None,
            maintenance: Vec::new(),
            weight: 100,
            enabled: true,
            access: MerchantAccess::All,
            merchants: HashSet::new(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        let id = &self.id;
        if id.is_empty() || id.len() > crate::CHANNEL_ID_CHARS_MAX {
            return Err(format!(
                "channel id {id:?}: 1 to {} characters",
                crate::CHANNEL_ID_CHARS_MAX
            ));
        }
        if self.fee_rate_bp > 10_000 {
            return Err(format!("channel {id}: fee_rate_bp above 10000 (100%)"));
        }
        if self.amount_fen_min < 1 || self.amount_fen_max < self.amount_fen_min {
            return Err(format!(
                "channel {id}: want 1 <= amount_fen_min <= amount_fen_max"
            ));
        }
        if self.daily_volume_fen_max.is_some_and(|c| c < 1) {
            return Err(format!(
                "channel {id}: daily_volume_fen_max must be positive"
            ));
        }
        if self.trade_types.is_empty() {
            return Err(format!("channel {id}: no trade type"));
        }
        Ok(())
    }

    pub(crate) fn allows_merchant(&self, mchid: &str) -> bool {
        self.access == MerchantAccess::All || self.merchants.contains(mchid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_windows_wrap_past_midnight() {
        let w = DailyWindow::parse("23:30-00:30").unwrap();
        assert!(w.contains(23 * 60 + 45));
        assert!(w.contains(10));
        assert!(!w.contains(30));
        assert!(!w.contains(12 * 60));
        let d = DailyWindow::parse("09:00-24:00").unwrap();
        assert!(d.contains(23 * 60 + 59) && !d.contains(8 * 60));
        for bad in ["9-10", "25:00-01:00", "10:00-10:00", "10:60-11:00", "x"] {
            assert!(DailyWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn beijing_time_is_utc_plus_8() {
        // 2026-11-11T16:30:00Z is 00:30 on the 12th in Beijing.
        let ms = 1_794_414_600_000;
        assert_eq!(beijing_minute(ms), 30);
        let day = beijing_day(ms);
        assert_eq!(beijing_day_start_ms(day), ms - 30 * 60_000);
        assert_eq!(beijing_day(ms - 31 * 60_000), day - 1);
    }

    #[test]
    fn trade_sets_and_names() {
        let s = TradeSet::of(&[TradeKind::Native, TradeKind::H5]);
        assert!(s.contains(TradeKind::Native) && s.contains(TradeKind::H5));
        assert!(!s.contains(TradeKind::Jsapi));
        assert_eq!(TradeKind::parse("mweb"), Some(TradeKind::H5));
        assert_eq!(TradeKind::parse("H5"), Some(TradeKind::H5));
        assert_eq!(TradeKind::parse("MICROPAY"), None);
    }
}
